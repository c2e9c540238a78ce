//! The programs built into `weft`, so that a fresh clone runs the whole
//! mesh from one binary (`cargo run --release -p weft-cli -- demo`): the
//! local mesh starts `weft proxy …`, `weft control …` and `weft example …`
//! from its own executable. Each receives its arguments as if it were a
//! separate program (`weft proxy run --help` is `weft-proxy run --help`).

use std::ffi::OsString;

/// The hidden subcommands, by name.
pub const PROGRAMS: &[&str] = &["proxy", "control", "example"];

/// Runs built-in program `name` with `args` (after the name). Must be
/// called outside any async runtime: each program builds its own.
pub fn run(name: &str, args: Vec<OsString>) -> anyhow::Result<()> {
    let argv = |program: &str| std::iter::once(OsString::from(program)).chain(args.iter().cloned());
    match name {
        "proxy" => weft_proxy::cli::main(argv("weft-proxy")),
        "control" => weft_control::cli::main(argv("weft-control")),
        "example" => weft_examples::main(argv("weft example")),
        other => anyhow::bail!("{other} is not a built-in program"),
    }
}
