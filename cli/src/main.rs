//! `weft`: thin on purpose; everything lives in the library (`weft_cli`).

fn main() -> std::process::ExitCode {
    weft_cli::main(std::env::args_os())
}
