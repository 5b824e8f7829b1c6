//! The `flowgate` binary: the gateway daemon and its offline tools. The
//! command lives in `flowgate_dataplane::cli`; this adds the version with
//! the git revision it was built from (build.rs).

fn main() -> std::process::ExitCode {
    flowgate_dataplane::cli::main(env!("FLOWGATE_VERSION"))
}
