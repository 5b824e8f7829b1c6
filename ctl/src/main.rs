//! `flowgatectl`: the operator's client of a running flowgate.
//!
//! The control API it speaks is not served by the daemon yet; until it is,
//! every command says so and exits with status 2, rather than pretending.

use std::process::ExitCode;

use clap::Parser;

/// flowgatectl: change and inspect a running flowgate's rules.
#[derive(Parser, Debug)]
#[command(name = "flowgatectl", version, about)]
struct Cli {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let what = cli.command.first().map_or("anything", String::as_str);
    eprintln!(
        "flowgatectl: cannot do {what}: the gateway's control API is not available in this \
         version; test rules offline with `flowgate check` and `flowgate replay`"
    );
    ExitCode::from(2)
}
