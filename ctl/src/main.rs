//! `flowgatectl`: the operator's client of a running flowgate.
//!
//! It speaks the control API (docs/api.md) over the daemon's Unix socket:
//! subcommands (`flowgatectl backend drain web 198.18.1.11:8080`) or the
//! ipvsadm-style shorthand (`flowgatectl -e -t VIP:PORT -r RIP:PORT -w 0`).
//! docs/operations.md is the reference.
//!
//! Exit status: 0 success; 1 the daemon refused the request, could not be
//! reached, or the output could not be written, with a one-line reason on
//! stderr; 2 bad usage.

mod cli;
mod endpoint;
mod run;
mod show;

use std::process::ExitCode;

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os().collect()) {
        Ok(invocation) => invocation,
        Err(reason) => {
            eprintln!("flowgatectl: {reason}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run::run(invocation, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("flowgatectl: {}", failure.reason);
            for detail in &failure.details {
                eprintln!("  {detail}");
            }
            ExitCode::from(1)
        }
    }
}
