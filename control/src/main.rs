//! `weft-control`: the control plane binary. Thin on purpose: everything,
//! including argument parsing, lives in the library (`weft_control::cli`).

fn main() -> anyhow::Result<()> {
    weft_control::cli::main(std::env::args_os())
}
