//! `flowgatectl`: the operator's client of a running flowgate.
//!
//! It speaks the control API (docs/api.md) over the daemon's Unix socket:
//! subcommands (`flowgatectl backend drain web 198.18.1.11:8080`) or the
//! ipvsadm-style shorthand (`flowgatectl -e -t VIP:PORT -r RIP:PORT -w 0`).
//! docs/operations.md is the reference.
//!
//! With `--etcd ENDPOINTS` it changes a fleet's rules in etcd instead, with
//! the same validation, diff and errors, in one compare-and-swap
//! transaction ([`etcd`](crate::etcd)), and `fleet` lists the gateways.
//!
//! This crate is the command: its definition ([`command`]) and its entry
//! point ([`main`]), which the workspace's `flowgatectl` binary calls.
//!
//! Exit status ([`failure`]): 0 success; 1 the request failed and nothing
//! changed (the daemon refused it, or the file to apply could not be read);
//! 2 bad usage; 3 the daemon could not be reached, the connection broke,
//! its answer could not be read, or the output could not be written.
//! With `-o json` every run writes one JSON document to stdout, a failure
//! as `{"error":{"code":...,"message":...}}` (docs/schemas/).

mod capture;
mod cli;
mod endpoint;
mod etcd;
pub mod failure;
mod generate;
pub mod pcapng;
mod run;
mod show;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use failure::Failure;

/// The command line's definition (subcommands, options, help), with
/// `version` as `--version` prints it. The ipvsadm-style shorthand is
/// described in its help.
pub fn command(version: &'static str) -> clap::Command {
    cli::command(version)
}

/// The ipvsadm-style shorthand's definition: its commands are the flags
/// of its argument group `command` (`-A`, `-E`, `-D`, `-a`, `-e`, `-d`,
/// `-L`).
pub fn shorthand_command() -> clap::Command {
    cli::shorthand_command()
}

/// Runs `flowgatectl` on the process's arguments and says how it ended.
/// `version` is what `--version` prints (the binary's, with its git
/// revision).
pub fn main(version: &'static str) -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    ExitCode::from(run_command(args, version, &mut out, &mut err))
}

/// Runs the command line `args` (the program name first), writing output
/// to `out` and, in text mode, reasons to `err`; returns the exit status.
fn run_command(
    args: Vec<OsString>,
    version: &'static str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let json = cli::wants_json(&args);
    let invocation = match cli::parse(args, version) {
        Ok(invocation) => invocation,
        Err(cli::UsageError::Clap(e)) if !e.use_stderr() => {
            // --help and --version: clap's own output, status 0.
            let _ = write!(out, "{}", e.render());
            return 0;
        }
        Err(cli::UsageError::Clap(e)) if !json => {
            let _ = write!(err, "{}", e.render());
            return failure::EXIT_USAGE;
        }
        Err(e) => return failure::report(&Failure::usage(e.message()), json, out, err),
    };
    match run::run(invocation, version, out) {
        Ok(()) => 0,
        Err(failure) => failure::report(&failure, json, out, err),
    }
}
