//! `weft-proxy`: the sidecar binary. Thin on purpose: everything, including
//! argument parsing, lives in the library (`weft_proxy::cli`).

fn main() -> anyhow::Result<()> {
    weft_proxy::cli::main(std::env::args_os())
}
