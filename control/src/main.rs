//! `weft-control`: the control plane binary. Thin on purpose: everything,
//! including argument parsing, lives in the library (`weft_control::cli`).

// jemalloc, as in weft-proxy: glibc's malloc was ~10 % of the control
// plane's CPU while pushing a policy change to 1,000 streams (perf).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    weft_control::cli::main(std::env::args_os())
}
