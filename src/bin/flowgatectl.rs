//! The `flowgatectl` binary: the operator's client of a running flowgate.
//! The command lives in the `flowgatectl` crate (ctl/); this adds the
//! version with the git revision it was built from (build.rs).

fn main() -> std::process::ExitCode {
    flowgatectl::main(env!("FLOWGATE_VERSION"))
}
