//! The `flowgate` command: the gateway daemon and its offline tools. The
//! workspace's `flowgate` binary is [`main`]; [`command`] is its
//! definition (for man pages and completions).
//!
//! Exit codes: 0 success (for `run`: stopped by SIGINT/SIGTERM); 1 the work
//! failed at run time (I/O, capture errors); 2 bad usage or an invalid
//! config (nothing was done); 3 (`run`) the machine is not ready — a missing
//! interface, missing privileges, a kernel without AF_XDP or XDP.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::daemon;
use crate::replay::output::{self, Named, Output, OutputError};
use crate::replay::{self, ReplayOptions, ReplayReport};
use crate::rules::{self, Config};

/// flowgate: a userspace AF_XDP gateway for microservice traffic.
#[derive(Parser, Debug)]
#[command(
    name = "flowgate",
    about = "A userspace AF_XDP gateway for microservice traffic: the daemon and its offline tools",
    after_long_help = "Exit status: 0 success (for run: stopped by SIGINT or SIGTERM); 1 a \
        run-time failure; 2 an invalid config or command line, nothing was done; 3 (run) the \
        machine is not ready: an interface, privileges, the kernel.\n\n\
        Signals (run): SIGHUP reloads the rules from the config file, all or nothing; SIGINT \
        and SIGTERM stop. Under systemd (Type=notify) it reports READY=1 once it forwards, \
        RELOADING=1 during a reload and STOPPING=1 at shutdown."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway on the config's interfaces until SIGINT or SIGTERM
    /// (SIGHUP reloads the rules).
    Run {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Worker cores, e.g. `2,3` (overrides daemon.cores).
        #[arg(long, value_delimiter = ',', value_name = "CORES")]
        cores: Option<Vec<usize>>,
        /// Forward every frame to the other interface untouched: no rules,
        /// no NAT. Measures the I/O floor of the machine.
        #[arg(long)]
        forward_only: bool,
        /// Take over from the flowgate running with this config's
        /// control_socket: its connections, then its interfaces, without
        /// losing a connection; it exits once this one forwards (if this
        /// one fails to start, it carries on).
        #[arg(long)]
        takeover: bool,
    },
    /// Validate a config as `run` would at start, without touching the
    /// machine, and print what it defines.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Where a client's new flow to a service would go under a config, and
    /// why, stage by stage (every backend taken as up): what `flowgatectl
    /// explain` says of the running rules.
    Explain {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The client: ADDR or ADDR:PORT ([ADDR]:PORT for IPv6).
        #[arg(long, value_name = "ADDR[:PORT]")]
        from: String,
        /// The service: VIP:PORT, or VIP:PORT/PROTO (tcp, udp).
        #[arg(long, value_name = "VIP:PORT[/PROTO]")]
        to: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Run a pcap capture through the pipeline and write what it would send.
    ///
    /// Outputs appear only when the run succeeds (written beside, then
    /// renamed over), and may not name the capture, the config or each
    /// other.
    Replay {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Input capture (pcap, Ethernet).
        #[arg(long = "in", value_name = "IN.pcap")]
        input: PathBuf,
        /// Where to write every frame the gateway would transmit.
        #[arg(long = "out", value_name = "OUT.pcap")]
        output_pcap: PathBuf,
        /// Also write frames that would be passed to the kernel here.
        #[arg(long, value_name = "PASSED.pcap")]
        passed: Option<PathBuf>,
        /// Interface every captured frame arrives on (default: the one whose
        /// MAC the frame is addressed to, else the first).
        #[arg(long)]
        ingress: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// List the fleet's gateways from etcd (the config's `[etcd]`): each
    /// one's revision, generation, health and held keys, and whether it
    /// lags behind the last change to the rules.
    Fleet {
        /// The config file (TOML) whose `[etcd]` names the cluster.
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Print a shell completion script:
    /// `flowgate completions bash > /etc/bash_completion.d/flowgate`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (flowgate.8 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// A shell `completions` writes a script for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// The command line's definition, with `version` for `--version`.
pub fn command(version: &'static str) -> clap::Command {
    Cli::command().version(version)
}

/// Runs `flowgate` on the process's arguments and says how it ended.
/// `version` is what `--version` prints (the binary's, with its git
/// revision).
pub fn main(version: &'static str) -> ExitCode {
    let matches = command(version).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Run {
            config,
            cores,
            forward_only,
            takeover,
        } => run_daemon(daemon::RunOptions {
            config,
            cores,
            forward_only,
            takeover,
        }),
        Command::Check { config, output } => check(&config, output),
        Command::Explain {
            config,
            from,
            to,
            output,
        } => explain(&config, from, &to, output),
        Command::Replay {
            config,
            input,
            output_pcap,
            passed,
            ingress,
            output,
        } => run_replay(&config, &input, &output_pcap, passed, ingress, output),
        Command::Fleet { config, output } => fleet(&config, output),
        Command::Completions { shell } => completions(version, shell),
        Command::Man { dir } => man_pages(version, &dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "flowgate: {}", f.message.trim_end());
            ExitCode::from(f.code)
        }
    }
}

/// Writes the completion script of `shell` to stdout.
fn completions(version: &'static str, shell: Shell) -> Result<(), Failure> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command(version), "flowgate", &mut out);
    out.flush()
        .map_err(|e| Failure::runtime(format!("cannot write the output: {e}")))
}

/// Writes one man page per command and visible subcommand into `dir`, in
/// section 8 (system administration: a daemon), named as man looks them
/// up: `flowgate.8`, `flowgate-run.8`.
fn man_pages(version: &'static str, dir: &Path) -> Result<(), Failure> {
    fn write(cmd: clap::Command, dir: &Path, written: &mut usize) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub.clone(), dir, written)?;
        }
        clap_mangen::Man::new(cmd)
            .section("8")
            .manual("flowgate")
            .generate_to(dir)?;
        *written += 1;
        Ok(())
    }
    let failed = |e: std::io::Error| {
        Failure::runtime(format!("cannot write man pages to {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut cmd = command(version).disable_help_subcommand(true);
    cmd.build();
    let mut written = 0;
    write(cmd, dir, &mut written).map_err(failed)?;
    println!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

fn run_daemon(options: daemon::RunOptions) -> Result<(), Failure> {
    daemon::run(&options).map_err(daemon_failure)
}

/// A refusal of `run` (or of `check`, which refuses the same way) as the
/// line it prints and its exit code.
fn daemon_failure(e: daemon::DaemonError) -> Failure {
    Failure {
        code: e.exit_code(),
        message: match e {
            daemon::DaemonError::Config(e) => format!("invalid config:\n{e}"),
            other => other.to_string(),
        },
    }
}

fn load(path: &Path) -> Result<Config, Failure> {
    rules::load_file(path).map_err(|e| Failure::usage(format!("invalid config:\n{e}")))
}

/// `flowgate fleet`: the gateways' status keys, with their lag.
fn fleet(path: &Path, format: Format) -> Result<(), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("{}: cannot read config: {e}", path.display())))?;
    let settings = crate::fleet::settings::from_config_text(&text, &path.display().to_string())
        .map_err(|problems| Failure::usage(problems.join("\n")))?
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: no [etcd] section: no fleet to list",
                path.display()
            ))
        })?;
    let rows = crate::fleet::store::FleetStore::connect_with(&settings)
        .and_then(|mut store| store.fleet())
        .map_err(|e| Failure::runtime(e.to_string()))?;
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::json!({ "status": r.status, "lag": r.lag, "lags": r.lags() }))
                .collect();
            println!("{}", serde_json::Value::Array(rows));
        }
        Format::Text => {
            println!(
                "{:<20} {:>10} {:>10} {:>10} {:<12} {:>5} {:>8}  LAG",
                "GATEWAY", "REVISION", "SEEN", "GENERATION", "HEALTH", "HELD", "SERVICES"
            );
            for row in &rows {
                let s = &row.status;
                let lag = if row.lags() {
                    format!("lags ({} behind)", row.lag)
                } else {
                    "-".to_owned()
                };
                println!(
                    "{:<20} {:>10} {:>10} {:>10} {:<12} {:>5} {:>8}  {lag}",
                    s.id,
                    s.revision,
                    s.seen_revision,
                    s.generation,
                    s.health.name(),
                    s.held.len(),
                    s.services
                );
                for held in &s.held {
                    println!(
                        "  held {} (revision {}): {}",
                        held.key,
                        held.revision,
                        held.problems.join("; ")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Refuses what `run` would refuse at start without the kernel, through
/// the very checks `run` makes ([`daemon::load_checked`]).
/// `explain --config`: the decision of a snapshot built from the file.
fn explain(path: &Path, from: String, to: &str, format: Format) -> Result<(), Failure> {
    let config = rules::load_file(path).map_err(|e| Failure::usage(e.to_string()))?;
    let mut snapshot = crate::table::Snapshot::build(&config, None);
    let mut paths = crate::table::PathRouting::new(usize::MAX, &snapshot);
    let paths_loaded = paths
        .load(&config, &snapshot)
        .map_err(|e| Failure::usage(e.to_string()))?;
    if paths_loaded {
        // The paths named backends the first build could not resolve.
        snapshot = crate::table::Snapshot::build(&config, Some(&snapshot));
    }
    let (to, protocol) = match to.rsplit_once('/') {
        Some((to, protocol)) => (to.to_owned(), Some(protocol.to_owned())),
        None => (to.to_owned(), None),
    };
    let query = flowgate_api::ExplainQuery { from, to, protocol };
    let mut reply = crate::control::explain::explain(&snapshot, Some(paths.table().view()), &query)
        .map_err(|e| Failure::usage(e.message))?;
    reply.generation = 0;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string(&flowgate_api::Reply::Explain(reply))
                .map_err(|e| Failure::runtime(e.to_string()))?
        ),
        Format::Text => print!("{reply}"),
    }
    Ok(())
}

fn check(path: &Path, format: Format) -> Result<(), Failure> {
    let config = daemon::load_checked(path, None)
        .map_err(daemon_failure)?
        .file;
    let backends: usize = config.services.iter().map(|s| s.backends.len()).sum();
    // Not problems: the config is valid, but clients may not reach a VIP.
    for warning in daemon::segment_warnings(&config) {
        eprintln!("warning: {}: {warning}", path.display());
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "config": path.display().to_string(),
                "valid": true,
                "services": config.services.len(),
                "backends": backends,
                "interfaces": config.interfaces.len(),
                "neighbours": config.neighbours.len(),
            })
        ),
        Format::Text => {
            println!("{}: valid", path.display());
            for s in &config.services {
                println!(
                    "  {} {} {} {} ({} backends)",
                    s.name,
                    s.protocol.name(),
                    std::net::SocketAddr::new(s.vip, s.port),
                    s.scheduler.name(),
                    s.backends.len()
                );
            }
        }
    }
    Ok(())
}

fn run_replay(
    config_path: &Path,
    input: &Path,
    output_pcap: &Path,
    passed: Option<PathBuf>,
    ingress: Option<String>,
    format: Format,
) -> Result<(), Failure> {
    let config = load(config_path)?;
    let ingress = match ingress {
        None => None,
        Some(name) => config
            .interfaces
            .iter()
            .position(|i| i.name == name)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "--ingress {name}: no such interface in {}",
                    config_path.display()
                ))
            })
            .map(Some)?,
    };
    // Outputs never write over what replay reads: the capture or the
    // rules.
    let out_named = Named::new("--out", output_pcap);
    let passed_named = passed.as_deref().map(|p| Named::new("--passed", p));
    let outputs: Vec<Named<'_>> = [Some(out_named), passed_named]
        .into_iter()
        .flatten()
        .collect();
    let inputs = [
        Named::new("--in", input),
        Named::new("--config", config_path),
    ];
    output::refuse_overlaps(&inputs, &outputs).map_err(output_failure)?;
    let open_in = File::open(input)
        .map_err(|e| Failure::runtime(format!("cannot open {}: {e}", input.display())))?;
    // Each output is a temporary file until the replay has succeeded; a
    // failure drops them, which removes them.
    let mut out = Output::create(out_named).map_err(output_failure)?;
    let mut passed_out = passed_named
        .map(Output::create)
        .transpose()
        .map_err(output_failure)?;
    let report = replay::replay(
        &config,
        BufReader::new(open_in),
        &mut out,
        passed_out.as_mut().map(|w| w as &mut dyn Write),
        &ReplayOptions { ingress },
    )
    .map_err(|e| Failure::runtime(format!("{}: {e}", input.display())))?;
    out.commit().map_err(output_failure)?;
    if let Some(passed_out) = passed_out {
        passed_out.commit().map_err(output_failure)?;
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text => print_report(&report, input, output_pcap),
    }
    Ok(())
}

/// A refusal of replay's files (exit 2: nothing was done) or a failure to
/// write them (exit 1).
fn output_failure(e: OutputError) -> Failure {
    if e.is_usage() {
        Failure::usage(e.to_string())
    } else {
        Failure::runtime(e.to_string())
    }
}

fn print_report(r: &ReplayReport, input: &Path, output: &Path) {
    let c = &r.counters;
    println!(
        "replayed {} frames from {} (rules generation {}, {} services)",
        r.frames_in,
        input.display(),
        r.generation,
        r.services
    );
    let ports: Vec<String> = r
        .transmitted_by_port
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    println!("  transmitted {:>8}   {}", c.tx_packets, ports.join(", "));
    println!("  passed      {:>8}   (to the kernel)", c.passed);
    let drops: Vec<String> = c.drops.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("  dropped     {:>8}   {}", c.dropped(), drops.join(", "));
    if c.tx_packets > 0 {
        println!("where transmitted frames went:");
        for (to, n) in &r.transmitted_by_backend {
            println!("  {to:<40} {n:>8}");
        }
        println!(
            "  {:<40} {:>8}",
            "(replies to clients)", r.transmitted_to_clients
        );
    }
    if r.skipped_oversize > 0 {
        println!(
            "  skipped     {:>8}   (larger than a frame)",
            r.skipped_oversize
        );
    }
    println!(
        "connections: {} new, {} packets on existing ones, {} active at the end, {} evicted",
        c.new_flows, c.flow_hits, r.active_connections, r.evicted_connections
    );
    println!("wrote {} frames to {}", c.tx_packets, output.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_definition_is_consistent_and_carries_the_version() {
        command("test").debug_assert();
        assert_eq!(
            command("1.2.3 (git abc)").get_version(),
            Some("1.2.3 (git abc)")
        );
    }
}
