//! The command line: subcommands (`flowgatectl backend add ...`) and the
//! ipvsadm-style shorthand (`flowgatectl -a -t VIP:PORT -r RIP:PORT -w 3`),
//! both turned into one [`Invocation`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use flowgate_api::{
    BackendAdd, BackendCheck, BackendEdit, BackendKey, BackendSpec, Batch, CanaryShare, ClassKey,
    ClassSpec, Edit, FlowsQuery, PathKey, PathSpec, Request, ServiceEdit, ServiceName, ServiceSpec,
    DEFAULT_CONTROL_SOCKET,
};

use crate::endpoint::{parse_backend, parse_endpoint, Endpoint};

/// Environment variable naming the socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "FLOWGATE_SOCKET";

/// What to do, where, and how to print it.
#[derive(Debug, PartialEq)]
pub struct Invocation {
    /// The control socket.
    pub socket: PathBuf,
    /// The fleet's etcd, with `--etcd`: changes go there instead of to
    /// the socket.
    pub etcd: Option<crate::etcd::EtcdTarget>,
    /// Text or JSON.
    pub format: Format,
    /// The work.
    pub action: Action,
}

/// Output format.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: tables and one line per change.
    Text,
    /// For machines: one JSON document (the API's reply, or an error).
    Json,
}

/// One piece of work.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// `status`.
    Status,
    /// `fleet`: the gateways' status keys in etcd (with `--etcd`).
    Fleet,
    /// `fleet drain`: this gateway withdraws its VIPs' BGP announcements
    /// (through its control socket).
    FleetDrain,
    /// `fleet undrain`: it announces them again.
    FleetUndrain,
    /// `service list`.
    ServiceList,
    /// `backend list SERVICE`.
    BackendList(String),
    /// A request that changes the rules.
    Change(Request),
    /// `backend heartbeat SERVICE ADDR:PORT`.
    Heartbeat(BackendKey),
    /// `apply -f FILE`.
    Apply {
        /// The config file.
        file: PathBuf,
        /// Report only.
        dry_run: bool,
    },
    /// `stats`.
    Stats {
        /// Keep sampling and print rates.
        watch: bool,
        /// Time between samples.
        interval: Duration,
        /// Stop after this many samples of rates.
        count: Option<u64>,
    },
    /// `flows`.
    Flows(FlowsQuery),
    /// `explain`.
    Explain(flowgate_api::ExplainQuery),
    /// `path list SERVICE`.
    PathList(String),
    /// `capture`: what to record, and where (`-` for stdout) if to a file.
    Capture(flowgate_api::CaptureQuery, Option<PathBuf>),
    /// `class list`.
    ClassList,
    /// ipvsadm-style `-L`: services and backends, optionally one service.
    List(Option<Listener>),
    /// ipvsadm-style change to the service at a listener.
    AtListener(Listener, ListenerChange),
    /// `completions SHELL`: the shell's completion script.
    Completions(Shell),
    /// `man DIR`: the man pages, written into DIR.
    Man(PathBuf),
}

/// A shell `completions` writes a script for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// A service named by its protocol, VIP and port (ipvsadm's `-t`/`-u`).
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// VIP and port.
    pub endpoint: Endpoint,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.protocol, self.endpoint)
    }
}

/// What an ipvsadm-style command does to the service at its listener.
#[derive(Debug, PartialEq)]
pub enum ListenerChange {
    /// `-A`: add the service, named `name` or after its listener.
    AddService {
        /// Its name, if given.
        name: Option<String>,
        /// Its scheduler, if given.
        scheduler: Option<String>,
        /// Its backends (one at least).
        backends: Vec<BackendSpec>,
    },
    /// `-E`: change its scheduler.
    EditService {
        /// The new scheduler.
        scheduler: String,
    },
    /// `-D`.
    DeleteService,
    /// `-a`.
    AddBackend(BackendSpec),
    /// `-e`.
    EditBackend(Endpoint, u32),
    /// `-d`.
    DeleteBackend(Endpoint),
}

/// flowgatectl: change and inspect a running flowgate's rules.
#[derive(Parser, Debug)]
#[command(
    name = "flowgatectl",
    about = "Change and inspect the rules of a running flowgate",
    after_help = SHORT_HELP,
    after_long_help = LONG_HELP
)]
struct Cli {
    /// The control socket [default: $FLOWGATE_SOCKET, else /run/flowgate/control.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Change the fleet's rules in etcd instead of one gateway's (service,
    /// backend, apply; and `fleet`): its client URLs, comma-separated.
    #[arg(long, global = true, value_name = "ENDPOINTS", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The fleet's key prefix in etcd (the gateways' `[etcd] prefix`).
    #[arg(
        long,
        global = true,
        value_name = "PREFIX",
        default_value = "/flowgate"
    )]
    etcd_prefix: String,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

/// The shorthand's synopsis, which both helps end with (a macro, as
/// `concat!` takes literals only).
macro_rules! shorthand_synopsis {
    () => {
        "ipvsadm-style shorthand (see docs/operations.md):\n  \
         flowgatectl -A -t VIP:PORT [-s maglev|mh|wrr|sh] [--name NAME] -r RIP:PORT[@W] [-w W]...\n  \
         flowgatectl -E -t VIP:PORT -s SCHEDULER      flowgatectl -D -t VIP:PORT\n  \
         flowgatectl -a -t VIP:PORT -r RIP:PORT [-w W]\n  \
         flowgatectl -e -t VIP:PORT -r RIP:PORT -w W   flowgatectl -d -t VIP:PORT -r RIP:PORT\n  \
         flowgatectl -L -n [-t VIP:PORT]               (-u VIP:PORT for UDP)\n\n"
    };
}

/// The end of `-h`.
const SHORT_HELP: &str = concat!(
    shorthand_synopsis!(),
    "Exit status: 0 success, 1 refused (nothing changed), 2 bad usage, 3 no answer \
     (--help says more)."
);

/// The end of `--help` and of the man page.
const LONG_HELP: &str = concat!(
    shorthand_synopsis!(),
    "Output: text for people. With -o json, every command writes one JSON document to \
     stdout, failures included ({\"error\":{\"code\":...,\"message\":...}}); the schemas are \
     in docs/schemas/. stats --watch -o json writes one document per sample, one per line.\n\n",
    "Exit status: 0 success; 1 the request failed and nothing changed (the daemon refused it, \
     or the file to apply could not be read); 2 bad usage, nothing was sent; 3 no usable \
     answer (the daemon could not be reached, the connection broke, its answer could not be \
     read, or the output could not be written).\n\n",
    "Environment: FLOWGATE_SOCKET names the control socket when --socket is not given."
);

#[derive(Subcommand, Debug)]
enum Command {
    /// Version, snapshot generation, uptime, workers and interfaces.
    Status,
    /// The fleet's gateways, from their status keys in etcd (needs
    /// --etcd): revision, generation, health, held keys, and which lag;
    /// `fleet drain` and `fleet undrain` talk to this gateway's control
    /// socket instead.
    Fleet {
        #[command(subcommand)]
        command: Option<FleetCommand>,
    },
    /// List, add, change or remove services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// List, add, change, drain or remove a service's backends.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// List, add or remove a service's distribution paths: clients sent
    /// straight to a named backend.
    #[command(subcommand)]
    Path(PathCommand),
    /// Set the share of new flows a service's canary takes.
    #[command(subcommand)]
    Canary(CanaryCommand),
    /// List, add or remove client classes: client prefixes with the SET
    /// and zone their new flows are routed by.
    #[command(subcommand)]
    Class(ClassCommand),
    /// Replace the running rules with a config file, atomically; prints
    /// what changes.
    Apply {
        /// The config file (TOML).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Validate and print the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Packets, bytes, active and new flows per service, backend and
    /// worker; drops per reason.
    Stats {
        /// Sample again and again, printing rates between samples.
        #[arg(long)]
        watch: bool,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
        interval: f64,
        /// With --watch: stop after this many samples of rates.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Live connections and their backends.
    Flows {
        /// Only this service's.
        #[arg(long)]
        service: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Where a client's new flow to a service would go, and why: its
    /// class, SET, canary draw, zone steps and the scheduler's pick, from
    /// the rules that run now.
    Explain {
        /// The client: ADDR or ADDR:PORT ([ADDR]:PORT for IPv6).
        #[arg(long, value_name = "ADDR[:PORT]")]
        from: String,
        /// The service: VIP:PORT, or VIP:PORT/PROTO (tcp, udp).
        #[arg(long, value_name = "VIP:PORT[/PROTO]")]
        to: String,
    },
    /// Record frames as the workers decide them, with the verdict and the
    /// drop reason (tcpdump on the data path): into a pcapng file with -w
    /// (the verdict in each packet's comment), else one line each. Frames
    /// the kernel fast path forwards are not seen (docs/operations.md).
    Capture {
        /// Only dropped frames.
        #[arg(long)]
        drops: bool,
        /// Only this service's frames: to or from its VIP or its backends.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Only frames dropped for this reason, as `stats` names it
        /// (e.g. ttl_expired).
        #[arg(long, value_name = "REASON")]
        reason: Option<String>,
        /// Stop after N frames (1 to 1000000).
        #[arg(short = 'c', long = "count", value_name = "N")]
        count: u64,
        /// Write the frames to FILE as pcapng (`-`: to stdout, for
        /// `| tcpdump -r -`).
        #[arg(short = 'w', long = "write", value_name = "FILE")]
        write: Option<PathBuf>,
        /// Record one matching frame in N, per worker [default: 1, all].
        #[arg(long, value_name = "N")]
        sample: Option<u32>,
        /// Bytes kept of each frame (1 to 2048) [default: 2048].
        #[arg(short = 's', long = "snap", value_name = "BYTES")]
        snap: Option<u32>,
        /// Stop after SECONDS even if fewer than N frames came.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
    },
    /// Print a shell completion script:
    /// `flowgatectl completions bash > /etc/bash_completion.d/flowgatectl`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (flowgatectl.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `fleet drain` and `fleet undrain`: this gateway, through its control
/// socket (not etcd).
#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Drain this gateway, through its control socket (not etcd): withdraw
    /// the BGP announcement of every VIP it offers, so that the router
    /// sends new flows to the other gateways; it keeps forwarding what
    /// still reaches it. Lasts until `fleet undrain` or a restart (a
    /// reload keeps it).
    Drain,
    /// Undo `fleet drain`, through this gateway's control socket: announce
    /// the VIPs it offers by BGP again.
    Undrain,
}

#[derive(Subcommand, Debug)]
enum ServiceCommand {
    /// Every service with its backends.
    List,
    /// Add a service with its backends.
    #[command(group(ArgGroup::new("listener").required(true).args(["tcp", "udp"])))]
    Add {
        /// Its name: 1 to 64 of A-Z a-z 0-9 _ . -
        name: String,
        /// A TCP service at VIP:PORT.
        #[arg(long, value_name = "VIP:PORT")]
        tcp: Option<String>,
        /// A UDP service at VIP:PORT.
        #[arg(long, value_name = "VIP:PORT")]
        udp: Option<String>,
        /// maglev (default), wrr or sh.
        #[arg(short = 's', long)]
        scheduler: Option<String>,
        /// Maglev table size (prime) [default: the gateway's].
        #[arg(long, value_name = "N")]
        table_size: Option<u32>,
        /// A backend, ADDRESS:PORT[@WEIGHT]; repeat for more.
        #[arg(
            short = 'b',
            long = "backend",
            required = true,
            value_name = "ADDRESS:PORT[@WEIGHT]"
        )]
        backends: Vec<String>,
    },
    /// Change a service's scheduler or table size.
    #[command(group(ArgGroup::new("what").required(true).multiple(true).args(["scheduler", "table_size"])))]
    Edit {
        /// The service.
        name: String,
        /// maglev, wrr or sh.
        #[arg(short = 's', long)]
        scheduler: Option<String>,
        /// Maglev table size (prime).
        #[arg(long, value_name = "N")]
        table_size: Option<u32>,
    },
    /// Remove a service (its connections end).
    Del {
        /// The service.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum BackendCommand {
    /// A service's backends.
    List {
        /// The service.
        service: String,
    },
    /// Add a backend to a service.
    Add {
        /// The service.
        service: String,
        /// ADDRESS:PORT (IPv6 in brackets).
        backend: String,
        /// Weight 0..=10000 [default: 1].
        #[arg(short = 'w', long)]
        weight: Option<u32>,
        /// Zone label.
        #[arg(long)]
        zone: Option<String>,
        /// SET label.
        #[arg(long)]
        set: Option<String>,
        /// Group label.
        #[arg(long)]
        group: Option<String>,
        /// Heartbeat TTL ("5s"): alive only while heartbeats arrive.
        #[arg(long)]
        heartbeat_ttl: Option<String>,
        /// Its own check kind: tcp, http, udp or none.
        #[arg(long)]
        check: Option<String>,
        /// Probe this port instead of its own.
        #[arg(long)]
        check_port: Option<u16>,
    },
    /// Change a backend's weight, labels, heartbeat TTL or check ("" removes a label, a TTL or its own check kind; --check-port 0 probes its own port again).
    Edit {
        /// The service.
        service: String,
        /// ADDRESS:PORT.
        backend: String,
        /// New weight (0 drains).
        #[arg(short = 'w', long)]
        weight: Option<u32>,
        /// New zone label.
        #[arg(long)]
        zone: Option<String>,
        /// New SET label.
        #[arg(long)]
        set: Option<String>,
        /// New group label.
        #[arg(long)]
        group: Option<String>,
        /// New heartbeat TTL ("5s"; "": none).
        #[arg(long)]
        heartbeat_ttl: Option<String>,
        /// Its own check kind (tcp, http, udp, none; "": its service's).
        #[arg(long)]
        check: Option<String>,
        /// Probe this port instead of its own (0: its own again).
        #[arg(long)]
        check_port: Option<u16>,
    },
    /// Tell the gateway a backend registered with a heartbeat_ttl is alive
    /// for one more TTL.
    Heartbeat {
        /// The service.
        service: String,
        /// ADDRESS:PORT.
        backend: String,
    },
    /// Set a backend's weight to 0: its connections finish, no new ones come.
    Drain {
        /// The service.
        service: String,
        /// ADDRESS:PORT.
        backend: String,
    },
    /// Remove a backend (its TCP connections end).
    Del {
        /// The service.
        service: String,
        /// ADDRESS:PORT.
        backend: String,
    },
}

#[derive(Subcommand, Debug)]
enum PathCommand {
    /// The service's paths, from the rules that run.
    List {
        /// The service.
        service: String,
    },
    /// Send the service's clients under CLIENT_PREFIX straight to a
    /// backend (one of several, by flow hash); replaces the path at that
    /// prefix if there is one.
    Add {
        /// The service.
        service: String,
        /// The clients: ADDR or ADDR/LEN.
        client: String,
        /// Backends by name (a backend's `name`, or ADDRESS:PORT), 1 to 16.
        #[arg(required = true, value_name = "BACKEND_NAME")]
        backends: Vec<String>,
        /// Validate and print the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the service's path at CLIENT_PREFIX.
    Del {
        /// The service.
        service: String,
        /// The clients, as the path has them: ADDR or ADDR/LEN.
        client: String,
        /// Validate and print the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ClassCommand {
    /// The client classes, from the rules that run.
    List,
    /// Give the clients under PREFIX a SET and a zone (the longest prefix
    /// holding a client is its class). New flows only.
    Add {
        /// The clients: ADDR or ADDR/LEN, IPv4 or IPv6.
        prefix: String,
        /// Their SET: name.area.group (group may be `*`).
        #[arg(long)]
        set: Option<String>,
        /// Their zone: one a backend, a class or a zone_priority names.
        #[arg(long)]
        zone: Option<String>,
        /// Replace the class at PREFIX if there is one.
        #[arg(long)]
        replace: bool,
        /// Validate and print the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the class at PREFIX: its clients fall to a shorter prefix's
    /// class, or to none.
    Del {
        /// The clients, as the class has them: ADDR or ADDR/LEN.
        prefix: String,
        /// Validate and print the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CanaryCommand {
    /// Send SHARE of the service's new flows to its canary group: basis
    /// points (`500`) or a percentage (`5%`, `0.5%`). New flows only;
    /// raising it moves only the flows between the old share and the new.
    Set {
        /// The service (it has a `[services.canary]`).
        service: String,
        /// Basis points 0..=10000, or a percentage 0%..=100%.
        share: String,
        /// Validate and print the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The ipvsadm-style command line.
#[derive(Parser, Debug)]
#[command(name = "flowgatectl", disable_version_flag = true)]
#[command(group(ArgGroup::new("command").required(true).args([
    "add_service", "edit_service", "delete_service",
    "add_server", "edit_server", "delete_server", "list",
])))]
struct Shorthand {
    /// Add a virtual service (with its first backends: -r).
    #[arg(short = 'A', long = "add-service")]
    add_service: bool,
    /// Edit a virtual service (its scheduler: -s).
    #[arg(short = 'E', long = "edit-service")]
    edit_service: bool,
    /// Delete a virtual service.
    #[arg(short = 'D', long = "delete-service")]
    delete_service: bool,
    /// Add a real server.
    #[arg(short = 'a', long = "add-server")]
    add_server: bool,
    /// Edit a real server (its weight: -w).
    #[arg(short = 'e', long = "edit-server")]
    edit_server: bool,
    /// Delete a real server.
    #[arg(short = 'd', long = "delete-server")]
    delete_server: bool,
    /// List the services (all, or the one given).
    #[arg(short = 'L', short_alias = 'l', long = "list")]
    list: bool,
    /// TCP service VIP:PORT.
    #[arg(
        short = 't',
        long = "tcp-service",
        value_name = "VIP:PORT",
        conflicts_with = "udp"
    )]
    tcp: Option<String>,
    /// UDP service VIP:PORT.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT")]
    udp: Option<String>,
    /// Scheduler: maglev (mh), wrr or sh.
    #[arg(short = 's', long = "scheduler")]
    scheduler: Option<String>,
    /// Real server RIP:PORT[@W]; -A takes several.
    #[arg(short = 'r', long = "real-server", value_name = "RIP:PORT")]
    real: Vec<String>,
    /// Weight.
    #[arg(short = 'w', long = "weight")]
    weight: Option<u32>,
    /// Numeric output (flowgate never resolves names: accepted, no effect).
    #[arg(short = 'n', long = "numeric")]
    numeric: bool,
    /// Masquerading (NAT): what flowgate does; accepted, no effect.
    #[arg(short = 'm', long = "masquerading")]
    masquerading: bool,
    /// Direct routing: not supported.
    #[arg(short = 'g', long = "gatewaying")]
    gatewaying: bool,
    /// IP-in-IP tunnelling: not supported.
    #[arg(short = 'i', long = "ipip")]
    ipip: bool,
    /// Persistence: not supported (use -s sh for client affinity).
    #[arg(short = 'p', long = "persistent", num_args = 0..=1, value_name = "TIMEOUT")]
    persistent: Option<Option<String>>,
    /// Name of a service added with -A [default: PROTO-VIP-PORT].
    #[arg(long)]
    name: Option<String>,
    /// The control socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// Whether `arg` is an ipvsadm-style command (`-A`, `-Ln`, `--list`, ...).
fn is_shorthand_command(arg: &str) -> bool {
    const LONG: [&str; 7] = [
        "--add-service",
        "--edit-service",
        "--delete-service",
        "--add-server",
        "--edit-server",
        "--delete-server",
        "--list",
    ];
    if LONG.contains(&arg) {
        return true;
    }
    arg.strip_prefix('-')
        .filter(|flags| !flags.starts_with('-'))
        .and_then(|flags| flags.chars().next())
        .is_some_and(|c| "AEDaedLl".contains(c))
}

/// Whether `args` (without the program name) use the ipvsadm-style
/// shorthand: its first argument that is not `--socket`/`-o` and their
/// values is one of its commands.
pub fn is_shorthand(args: &[OsString]) -> bool {
    let mut i = 0;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        match arg {
            "--socket" | "-o" | "--output" => i += 2,
            _ if arg.starts_with("--socket=") || arg.starts_with("--output=") => i += 1,
            _ if arg.starts_with("-o") && arg.len() > 2 => i += 1,
            _ => return is_shorthand_command(arg),
        }
    }
    false
}

/// The command line's definition, with `version` for `--version`.
pub fn command(version: &'static str) -> clap::Command {
    Cli::command().version(version)
}

/// The shorthand's definition.
pub fn shorthand_command() -> clap::Command {
    Shorthand::command()
}

/// A command line that cannot be run.
#[derive(Debug)]
pub enum UsageError {
    /// What clap found (or `--help`, `--version`: not errors, but not a
    /// run either).
    Clap(clap::Error),
    /// A mistake found in a value clap accepted (an endpoint, a flag
    /// flowgate does not support).
    Message(String),
}

impl UsageError {
    /// The mistake, one line.
    pub fn message(&self) -> String {
        match self {
            UsageError::Clap(e) => {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                first.strip_prefix("error: ").unwrap_or(first).to_owned()
            }
            UsageError::Message(m) => m.clone(),
        }
    }
}

impl From<String> for UsageError {
    fn from(message: String) -> UsageError {
        UsageError::Message(message)
    }
}

/// Whether `args` ask for JSON output (`-o json`, `-ojson`, `-o=json`,
/// `--output json`, `--output=json`), read without parsing them: so that a
/// command line clap refuses is still answered in JSON.
pub fn wants_json(args: &[OsString]) -> bool {
    let args: Vec<&str> = args.iter().skip(1).filter_map(|a| a.to_str()).collect();
    let mut json = false;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let value = match *arg {
            "--" => break,
            "-o" | "--output" => {
                i += 1;
                args.get(i).copied()
            }
            _ => arg
                .strip_prefix("--output=")
                .or_else(|| arg.strip_prefix("-o=")),
        }
        .or_else(|| arg.strip_prefix("-o").filter(|v| !v.is_empty()));
        if let Some(value) = value {
            json = value == "json";
        }
        i += 1;
    }
    json
}

/// Parses the command line (with the program name first).
pub fn parse(args: Vec<OsString>, version: &'static str) -> Result<Invocation, UsageError> {
    let rest = args.get(1..).unwrap_or_default();
    if is_shorthand(rest) {
        let s = Shorthand::try_parse_from(args).map_err(UsageError::Clap)?;
        let socket = socket_path(s.socket.clone());
        let format = s.output;
        let action = shorthand_action(s)?;
        return Ok(Invocation {
            socket,
            etcd: None,
            format,
            action,
        });
    }
    let matches = command(version)
        .try_get_matches_from(args)
        .map_err(UsageError::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(UsageError::Clap)?;
    let etcd = (!cli.etcd.is_empty()).then(|| crate::etcd::EtcdTarget {
        endpoints: cli.etcd.clone(),
        prefix: cli.etcd_prefix.clone(),
    });
    if etcd.is_some() && matches!(cli.command, Command::Fleet { command: Some(_) }) {
        return Err(UsageError::Message(
            "fleet drain and fleet undrain talk to this gateway's control socket (--socket), \
             not to etcd: leave out --etcd"
                .into(),
        ));
    }
    if etcd.is_none() && matches!(cli.command, Command::Fleet { command: None }) {
        return Err(UsageError::Message(
            "fleet lists the gateways from etcd: give --etcd ENDPOINTS (and --etcd-prefix)".into(),
        ));
    }
    Ok(Invocation {
        socket: socket_path(cli.socket),
        etcd,
        format: cli.output,
        action: action(cli.command)?,
    })
}

/// `--socket`, else `$FLOWGATE_SOCKET`, else the default path.
fn socket_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            std::env::var_os(SOCKET_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
}

/// What a subcommand asks for.
fn action(command: Command) -> Result<Action, String> {
    match command {
        Command::Status => Ok(Action::Status),
        Command::Fleet { command: None } => Ok(Action::Fleet),
        Command::Fleet {
            command: Some(FleetCommand::Drain),
        } => Ok(Action::FleetDrain),
        Command::Fleet {
            command: Some(FleetCommand::Undrain),
        } => Ok(Action::FleetUndrain),
        Command::Service(command) => service_action(command),
        Command::Backend(command) => backend_action(command),
        Command::Path(command) => Ok(path_action(command)),
        Command::Class(command) => Ok(class_action(command)),
        Command::Canary(CanaryCommand::Set {
            service,
            share,
            dry_run,
        }) => Ok(one_edit(
            Edit::CanarySet(CanaryShare {
                service,
                share: canary_share(&share)?,
            }),
            dry_run,
        )),
        Command::Apply { file, dry_run } => Ok(Action::Apply { file, dry_run }),
        Command::Stats {
            watch,
            interval,
            count,
        } => stats_action(watch, interval, count),
        Command::Flows { service, limit } => Ok(Action::Flows(FlowsQuery {
            service,
            limit: Some(limit),
        })),
        Command::Explain { from, to } => Ok(Action::Explain(explain_query(from, &to))),
        Command::Capture {
            drops,
            service,
            reason,
            count,
            write,
            sample,
            snap,
            duration,
        } => capture_action(
            flowgate_api::CaptureQuery {
                drops,
                service,
                reason,
                count,
                sample,
                snap,
                duration_ms: None,
            },
            duration,
            write,
        ),
        Command::Completions { shell } => Ok(Action::Completions(shell)),
        Command::Man { dir } => Ok(Action::Man(dir)),
    }
}

/// `--to VIP:PORT[/PROTO]` and `--from` as an `explain` request.
fn explain_query(from: String, to: &str) -> flowgate_api::ExplainQuery {
    let (to, protocol) = match to.rsplit_once('/') {
        Some((to, protocol)) => (to.to_owned(), Some(protocol.to_owned())),
        None => (to.to_owned(), None),
    };
    flowgate_api::ExplainQuery { from, to, protocol }
}

/// `service list|add|edit|del`.
fn service_action(command: ServiceCommand) -> Result<Action, String> {
    Ok(match command {
        ServiceCommand::List => Action::ServiceList,
        ServiceCommand::Add {
            name,
            tcp,
            udp,
            scheduler,
            table_size,
            backends,
        } => {
            let (protocol, listener) = match (tcp, udp) {
                (Some(t), _) => ("tcp", t),
                (None, Some(u)) => ("udp", u),
                (None, None) => return Err("give --tcp VIP:PORT or --udp VIP:PORT".into()),
            };
            let listener = parse_endpoint(&listener)?;
            Action::Change(Request::ServiceAdd(ServiceSpec {
                name,
                protocol: protocol.into(),
                vip: listener.address,
                port: listener.port,
                scheduler,
                maglev_table_size: table_size,
                backends: backends
                    .iter()
                    .map(|b| backend_spec(b, None))
                    .collect::<Result<_, _>>()?,
            }))
        }
        ServiceCommand::Edit {
            name,
            scheduler,
            table_size,
        } => Action::Change(Request::ServiceEdit(ServiceEdit {
            service: name,
            scheduler,
            maglev_table_size: table_size,
        })),
        ServiceCommand::Del { name } => {
            Action::Change(Request::ServiceDel(ServiceName { service: name }))
        }
    })
}

/// One edit as a change: a batch of one, so that `--dry-run` reports
/// without changing anything.
fn one_edit(edit: Edit, dry_run: bool) -> Action {
    Action::Change(Request::Batch(Batch {
        edits: vec![edit],
        dry_run,
    }))
}

/// `path list|add|del`.
fn path_action(command: PathCommand) -> Action {
    match command {
        PathCommand::List { service } => Action::PathList(service),
        PathCommand::Add {
            service,
            client,
            backends,
            dry_run,
        } => one_edit(
            Edit::PathAdd(PathSpec {
                service,
                client,
                backends,
            }),
            dry_run,
        ),
        PathCommand::Del {
            service,
            client,
            dry_run,
        } => one_edit(Edit::PathDel(PathKey { service, client }), dry_run),
    }
}

/// `class list|add|del`.
fn class_action(command: ClassCommand) -> Action {
    match command {
        ClassCommand::List => Action::ClassList,
        ClassCommand::Add {
            prefix,
            set,
            zone,
            replace,
            dry_run,
        } => one_edit(
            Edit::ClassAdd(ClassSpec {
                prefix,
                set,
                zone,
                replace,
            }),
            dry_run,
        ),
        ClassCommand::Del { prefix, dry_run } => {
            one_edit(Edit::ClassDel(ClassKey { prefix }), dry_run)
        }
    }
}

/// A canary share: basis points (`500`) or a percentage with at most two
/// decimals (`5%`, `0.25%`).
fn canary_share(text: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "bad share {text:?}: expected basis points 0..=10000 (500) or a percentage \
             0%..=100% (5%, 0.25%)"
        )
    };
    let bp = match text.strip_suffix('%') {
        None => text.parse::<u32>().map_err(|_| bad())?,
        Some(percent) => {
            let (whole, fraction) = percent.split_once('.').unwrap_or((percent, ""));
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(whole) || (!fraction.is_empty() && !digits(fraction)) || fraction.len() > 2 {
                return Err(bad());
            }
            let whole: u32 = whole.parse().map_err(|_| bad())?;
            let hundredths: u32 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
            whole
                .checked_mul(100)
                .and_then(|w| w.checked_add(hundredths))
                .ok_or_else(bad)?
        }
    };
    if bp > 10_000 {
        return Err(bad());
    }
    Ok(bp)
}

/// `backend list|add|edit|drain|del`.
fn backend_action(command: BackendCommand) -> Result<Action, String> {
    Ok(match command {
        BackendCommand::List { service } => Action::BackendList(service),
        BackendCommand::Add {
            service,
            backend,
            weight,
            zone,
            set,
            group,
            heartbeat_ttl,
            check,
            check_port,
        } => {
            let endpoint = parse_endpoint(&backend)?;
            Action::Change(Request::BackendAdd(BackendAdd {
                service,
                backend: BackendSpec {
                    address: endpoint.address,
                    port: endpoint.port,
                    weight,
                    zone,
                    set,
                    group,
                    health: backend_check(check, check_port),
                    heartbeat_ttl,
                },
            }))
        }
        BackendCommand::Edit {
            service,
            backend,
            weight,
            zone,
            set,
            group,
            heartbeat_ttl,
            check,
            check_port,
        } => {
            if weight.is_none()
                && zone.is_none()
                && set.is_none()
                && group.is_none()
                && heartbeat_ttl.is_none()
                && check.is_none()
                && check_port.is_none()
            {
                return Err(
                    "backend edit: nothing to change: give --weight, --zone, --set, \
                            --group, --heartbeat-ttl, --check or --check-port"
                        .into(),
                );
            }
            let endpoint = parse_endpoint(&backend)?;
            Action::Change(Request::BackendEdit(BackendEdit {
                service,
                address: endpoint.address,
                port: endpoint.port,
                weight,
                zone,
                set,
                group,
                health: backend_check(check, check_port),
                heartbeat_ttl,
            }))
        }
        BackendCommand::Heartbeat { service, backend } => {
            Action::Heartbeat(backend_key(service, &backend)?)
        }
        BackendCommand::Drain { service, backend } => {
            Action::Change(Request::BackendDrain(backend_key(service, &backend)?))
        }
        BackendCommand::Del { service, backend } => {
            Action::Change(Request::BackendDel(backend_key(service, &backend)?))
        }
    })
}

/// A backend's own check, when either flag is given.
fn backend_check(kind: Option<String>, port: Option<u16>) -> Option<BackendCheck> {
    (kind.is_some() || port.is_some()).then_some(BackendCheck { kind, port })
}

/// `stats [--watch] [--interval SECONDS] [--count N]`.
fn stats_action(watch: bool, interval: f64, count: Option<u64>) -> Result<Action, String> {
    if !(interval.is_finite() && interval > 0.0 && interval <= 3600.0) {
        return Err(format!(
            "bad --interval {interval}: expected seconds above 0, at most 3600"
        ));
    }
    Ok(Action::Stats {
        watch,
        interval: Duration::from_secs_f64(interval),
        count,
    })
}

/// `capture`, its numbers checked here so that a bad one is a usage error
/// (the daemon checks the service and the reason against what runs).
fn capture_action(
    mut query: flowgate_api::CaptureQuery,
    duration: Option<f64>,
    write: Option<PathBuf>,
) -> Result<Action, String> {
    use flowgate_api::{MAX_CAPTURE_COUNT, MAX_CAPTURE_SAMPLE, MAX_CAPTURE_SNAP};
    if !(1..=MAX_CAPTURE_COUNT).contains(&query.count) {
        return Err(format!(
            "bad -c {}: a capture takes 1 to {MAX_CAPTURE_COUNT} frames",
            query.count
        ));
    }
    if let Some(n) = query
        .sample
        .filter(|n| !(1..=MAX_CAPTURE_SAMPLE).contains(n))
    {
        return Err(format!(
            "bad --sample {n}: expected 1 (every frame) to {MAX_CAPTURE_SAMPLE}"
        ));
    }
    if let Some(n) = query.snap.filter(|n| !(1..=MAX_CAPTURE_SNAP).contains(n)) {
        return Err(format!(
            "bad --snap {n}: expected 1 to {MAX_CAPTURE_SNAP} bytes"
        ));
    }
    if let Some(seconds) = duration {
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
            return Err(format!(
                "bad --duration {seconds}: expected seconds above 0, at most 86400"
            ));
        }
        query.duration_ms = Some((seconds * 1000.0).ceil() as u64);
    }
    if write.as_ref().is_some_and(|w| w.as_os_str().is_empty()) {
        return Err("bad -w: expected a file name, or - for stdout".into());
    }
    Ok(Action::Capture(query, write))
}

fn backend_key(service: String, text: &str) -> Result<BackendKey, String> {
    let endpoint = parse_endpoint(text)?;
    Ok(BackendKey {
        service,
        address: endpoint.address,
        port: endpoint.port,
    })
}

/// A backend `ADDRESS:PORT[@WEIGHT]`; `weight` applies when it has none.
fn backend_spec(text: &str, weight: Option<u32>) -> Result<BackendSpec, String> {
    let (endpoint, own) = parse_backend(text)?;
    Ok(BackendSpec {
        weight: own.or(weight),
        ..BackendSpec::new(endpoint.address, endpoint.port)
    })
}

/// Reads an ipvsadm-style command line.
fn shorthand_action(s: Shorthand) -> Result<Action, String> {
    if s.gatewaying || s.ipip {
        return Err(
            "flowgate forwards by NAT only (-m, the default); direct routing (-g) and tunnelling (-i) are not supported"
                .into(),
        );
    }
    if s.persistent.is_some() {
        return Err(
            "persistence (-p) is not supported: use -s sh to keep each client on one backend"
                .into(),
        );
    }
    let listener = match (&s.tcp, &s.udp) {
        (Some(t), _) => Some(Listener {
            protocol: "tcp",
            endpoint: parse_endpoint(t)?,
        }),
        (None, Some(u)) => Some(Listener {
            protocol: "udp",
            endpoint: parse_endpoint(u)?,
        }),
        (None, None) => None,
    };
    if s.list {
        return Ok(Action::List(listener));
    }
    let listener = listener.ok_or("give the service: -t VIP:PORT (TCP) or -u VIP:PORT (UDP)")?;
    let scheduler = s.scheduler.as_deref().map(ipvs_scheduler).transpose()?;
    let one_real = |what: &str| -> Result<Endpoint, String> {
        match s.real.as_slice() {
            [one] => parse_endpoint(one),
            [] => Err(format!("{what} needs the real server: -r RIP:PORT")),
            _ => Err(format!("{what} takes one real server (-r)")),
        }
    };
    let change = if s.add_service {
        if s.real.is_empty() {
            return Err(
                "a flowgate service needs at least one backend: give it with -r RIP:PORT[@W] \
                 (a VIP with no backend would only drop its traffic)"
                    .into(),
            );
        }
        ListenerChange::AddService {
            name: s.name,
            scheduler,
            backends: s
                .real
                .iter()
                .map(|r| backend_spec(r, s.weight))
                .collect::<Result<_, _>>()?,
        }
    } else if s.edit_service {
        ListenerChange::EditService {
            scheduler: scheduler.ok_or("-E changes the scheduler: give -s SCHEDULER")?,
        }
    } else if s.delete_service {
        ListenerChange::DeleteService
    } else if s.add_server {
        let real = one_real("-a")?;
        ListenerChange::AddBackend(BackendSpec {
            weight: s.weight,
            ..BackendSpec::new(real.address, real.port)
        })
    } else if s.edit_server {
        let real = one_real("-e")?;
        ListenerChange::EditBackend(
            real,
            s.weight.ok_or("-e changes the weight: give -w WEIGHT")?,
        )
    } else {
        ListenerChange::DeleteBackend(one_real("-d")?)
    };
    Ok(Action::AtListener(listener, change))
}

/// An ipvsadm scheduler name as flowgate's.
fn ipvs_scheduler(name: &str) -> Result<String, String> {
    match name {
        "maglev" | "mh" => Ok("maglev".into()),
        "wrr" | "sh" => Ok(name.into()),
        "rr" => Err(
            "scheduler rr is not supported: use wrr (with equal weights it is round-robin)".into(),
        ),
        other => Err(format!(
            "scheduler {other} is not supported: use maglev (or mh), wrr or sh"
        )),
    }
}

/// The name `-A` gives a service without `--name`: `tcp-198.18.100.10-80`,
/// with an IPv6 VIP's colons as dashes.
pub fn listener_name(listener: &Listener) -> String {
    format!(
        "{}-{}-{}",
        listener.protocol,
        listener.endpoint.address.replace(':', "-"),
        listener.endpoint.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        std::iter::once("flowgatectl")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect()
    }

    fn parsed(line: &str) -> Invocation {
        parse(args(line), "test").unwrap_or_else(|e| panic!("{line}: {}", e.message()))
    }

    #[test]
    fn path_and_canary_verbs_are_one_edit_batches_with_dry_run() {
        let edit = |line: &str| match parsed(line).action {
            Action::Change(Request::Batch(batch)) => (batch.edits, batch.dry_run),
            other => panic!("{line}: {other:?}"),
        };
        let (edits, dry) = edit("path add web 198.18.0.2 b-1 198.18.1.12:8080 --dry-run");
        assert!(dry);
        assert!(matches!(&edits[..], [Edit::PathAdd(p)]
            if p.client == "198.18.0.2" && p.backends == ["b-1", "198.18.1.12:8080"]));
        let (edits, dry) = edit("path del web 198.18.0.0/24");
        assert!(!dry);
        assert!(matches!(&edits[..], [Edit::PathDel(k)] if k.client == "198.18.0.0/24"));
        let (edits, _) = edit("canary set web 2.5%");
        assert!(matches!(&edits[..], [Edit::CanarySet(c)] if c.share == 250));
        assert_eq!(canary_share("500"), Ok(500));
        assert_eq!(canary_share("100%"), Ok(10_000));
        assert_eq!(canary_share("0.05%"), Ok(5));
        for bad in ["10001", "100.01%", "1.234%", "%", "-1", "5 %", "x%", ".5%"] {
            assert!(canary_share(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn class_verbs_are_one_edit_batches_with_dry_run() {
        let edit = |line: &str| match parsed(line).action {
            Action::Change(Request::Batch(batch)) => (batch.edits, batch.dry_run),
            other => panic!("{line}: {other:?}"),
        };
        let (edits, dry) = edit("class add 198.18.10.0/24 --set shop.sh.g1 --zone dc1 --dry-run");
        assert!(dry);
        assert!(matches!(&edits[..], [Edit::ClassAdd(c)]
            if c.prefix == "198.18.10.0/24" && c.set.as_deref() == Some("shop.sh.g1")
                && c.zone.as_deref() == Some("dc1") && !c.replace));
        let (edits, _) = edit("class add 2001:2::/32 --zone dc2 --replace");
        assert!(matches!(&edits[..], [Edit::ClassAdd(c)] if c.set.is_none() && c.replace));
        let (edits, dry) = edit("class del 198.18.10.0/24");
        assert!(!dry);
        assert!(matches!(&edits[..], [Edit::ClassDel(k)] if k.prefix == "198.18.10.0/24"));
        assert_eq!(parsed("class list").action, Action::ClassList);
    }

    fn try_shorthand(line: &str) -> Result<Action, String> {
        let s = Shorthand::try_parse_from(args(line)).map_err(|e| e.to_string())?;
        shorthand_action(s)
    }

    #[test]
    fn subcommands_become_requests() {
        let i = parsed("--socket /tmp/x.sock backend add web 198.18.1.14:8080 -w 3 --zone a");
        assert_eq!(i.socket, PathBuf::from("/tmp/x.sock"));
        let Action::Change(Request::BackendAdd(add)) = i.action else {
            panic!("{i:?}")
        };
        assert_eq!(
            (add.service.as_str(), add.backend.address.as_str()),
            ("web", "198.18.1.14")
        );
        assert_eq!((add.backend.port, add.backend.weight), (8080, Some(3)));
        assert_eq!(add.backend.zone.as_deref(), Some("a"));

        let i = parsed("service add dns --udp [2001:2::53]:53 -s sh -b [2001:2::11]:5353@2 -b [2001:2::12]:5353 -o json");
        assert_eq!(i.format, Format::Json);
        let Action::Change(Request::ServiceAdd(spec)) = i.action else {
            panic!()
        };
        assert_eq!(
            (spec.protocol.as_str(), spec.vip.as_str(), spec.port),
            ("udp", "2001:2::53", 53)
        );
        assert_eq!(spec.backends.len(), 2);
        assert_eq!(spec.backends[0].weight, Some(2));
        assert_eq!(spec.backends[1].weight, None);

        assert_eq!(
            parsed("stats --watch --interval 0.5 --count 3").action,
            Action::Stats {
                watch: true,
                interval: Duration::from_millis(500),
                count: Some(3),
            }
        );
        assert_eq!(
            parsed("flows --service web --limit 5").action,
            Action::Flows(FlowsQuery {
                service: Some("web".into()),
                limit: Some(5)
            })
        );
        assert!(
            matches!(parsed("backend drain web [2001:2::1]:80").action, Action::Change(Request::BackendDrain(k)) if k.address == "2001:2::1")
        );
        assert!(matches!(
            parsed("apply -f gw.toml --dry-run").action,
            Action::Apply { dry_run: true, .. }
        ));
    }

    #[test]
    fn bad_endpoints_and_intervals_are_usage_errors() {
        let refused = |line| parse(args(line), "test").unwrap_err().message();
        assert!(refused("backend add web 198.18.1.14").starts_with("bad endpoint"));
        assert!(refused("stats --interval 0").starts_with("bad --interval"));
        assert_eq!(
            refused("frobnicate"),
            "unrecognized subcommand 'frobnicate'"
        );
    }

    #[test]
    fn the_socket_comes_from_the_flag_the_environment_or_the_default() {
        assert_eq!(socket_path(Some("/a".into())), PathBuf::from("/a"));
        // The environment is the process's: only read here, not set, so
        // that tests running beside this one are not disturbed.
        let expected = std::env::var_os(SOCKET_ENV)
            .filter(|v| !v.is_empty())
            .map_or(PathBuf::from(DEFAULT_CONTROL_SOCKET), PathBuf::from);
        assert_eq!(socket_path(None), expected);
    }

    #[test]
    fn shorthand_is_chosen_by_its_first_command() {
        let s = |line: &str| is_shorthand(&args(line)[1..]);
        assert!(s("-A -t 198.18.100.10:80 -r 198.18.1.11:8080"));
        assert!(s("--socket /x -L -n"));
        assert!(s("-o json -Ln"));
        assert!(s("-ojson -l"));
        assert!(!s("status"));
        assert!(!s("--socket /x backend list web"));
        assert!(!s("-o json service list"));
    }

    #[test]
    fn shorthand_reads_like_ipvsadm() {
        let vip = Listener {
            protocol: "tcp",
            endpoint: parse_endpoint("198.18.100.10:80").unwrap(),
        };
        assert_eq!(
            try_shorthand(
                "-A -t 198.18.100.10:80 -s mh -r 198.18.1.11:8080 -r 198.18.1.12:8080@3 -w 2"
            ),
            Ok(Action::AtListener(
                vip.clone(),
                ListenerChange::AddService {
                    name: None,
                    scheduler: Some("maglev".into()),
                    backends: vec![
                        BackendSpec {
                            weight: Some(2),
                            ..BackendSpec::new("198.18.1.11", 8080)
                        },
                        BackendSpec {
                            weight: Some(3),
                            ..BackendSpec::new("198.18.1.12", 8080)
                        },
                    ],
                }
            ))
        );
        assert_eq!(
            try_shorthand("-a -t 198.18.100.10:80 -r 198.18.1.13:8080 -m -w 3"),
            Ok(Action::AtListener(
                vip.clone(),
                ListenerChange::AddBackend(BackendSpec {
                    weight: Some(3),
                    ..BackendSpec::new("198.18.1.13", 8080)
                })
            ))
        );
        assert_eq!(
            try_shorthand("-e -t 198.18.100.10:80 -r 198.18.1.13:8080 -w 0"),
            Ok(Action::AtListener(
                vip.clone(),
                ListenerChange::EditBackend(parse_endpoint("198.18.1.13:8080").unwrap(), 0)
            ))
        );
        assert_eq!(
            try_shorthand("-d -t 198.18.100.10:80 -r 198.18.1.13:8080"),
            Ok(Action::AtListener(
                vip.clone(),
                ListenerChange::DeleteBackend(parse_endpoint("198.18.1.13:8080").unwrap())
            ))
        );
        assert_eq!(
            try_shorthand("-E -t 198.18.100.10:80 -s wrr"),
            Ok(Action::AtListener(
                vip.clone(),
                ListenerChange::EditService {
                    scheduler: "wrr".into()
                }
            ))
        );
        assert_eq!(
            try_shorthand("-D -u [2001:2::53]:53"),
            Ok(Action::AtListener(
                Listener {
                    protocol: "udp",
                    endpoint: parse_endpoint("[2001:2::53]:53").unwrap()
                },
                ListenerChange::DeleteService
            ))
        );
        assert_eq!(try_shorthand("-L -n"), Ok(Action::List(None)));
        assert_eq!(
            try_shorthand("-Ln -t 198.18.100.10:80"),
            Ok(Action::List(Some(vip)))
        );
    }

    #[test]
    fn shorthand_refuses_what_flowgate_does_not_do() {
        for (line, words) in [
            ("-A -t 198.18.100.10:80 -s rr -r 198.18.1.11:80", "use wrr"),
            (
                "-A -t 198.18.100.10:80 -s wlc -r 198.18.1.11:80",
                "scheduler wlc is not supported",
            ),
            ("-A -t 198.18.100.10:80", "needs at least one backend"),
            ("-a -t 198.18.100.10:80 -r 198.18.1.11:80 -g", "NAT only"),
            (
                "-A -t 198.18.100.10:80 -p 300 -r 198.18.1.11:80",
                "use -s sh",
            ),
            ("-e -t 198.18.100.10:80 -r 198.18.1.11:80", "give -w WEIGHT"),
            ("-a -t 198.18.100.10:80", "needs the real server"),
            ("-E -t 198.18.100.10:80", "give -s SCHEDULER"),
            ("-D", "give the service"),
        ] {
            let e = try_shorthand(line).unwrap_err();
            assert!(e.contains(words), "{line}: {e}");
        }
        // Two commands at once, or a TCP and a UDP service: usage errors.
        assert!(try_shorthand("-A -D -t 198.18.100.10:80").is_err());
        assert!(try_shorthand("-D -t 198.18.100.10:80 -u 198.18.100.10:53").is_err());
    }

    #[test]
    fn services_added_without_a_name_are_named_after_their_listener() {
        let l = |p, e: &str| Listener {
            protocol: p,
            endpoint: parse_endpoint(e).unwrap(),
        };
        assert_eq!(
            listener_name(&l("tcp", "198.18.100.10:80")),
            "tcp-198.18.100.10-80"
        );
        assert_eq!(
            listener_name(&l("udp", "[2001:2::53]:53")),
            "udp-2001-2--53-53"
        );
    }

    #[test]
    fn json_output_is_seen_before_parsing() {
        for line in [
            "-o json status",
            "status -ojson",
            "--output=json x y",
            "-o=json",
            "--output json -L -n",
            "-o text -o json",
        ] {
            assert!(wants_json(&args(line)), "{line}");
        }
        for line in ["status", "-o text", "-o json -o text", "-- -o json", "-o"] {
            assert!(!wants_json(&args(line)), "{line}");
        }
    }

    #[test]
    fn the_clap_definitions_are_consistent() {
        command("test").debug_assert();
        Shorthand::command().debug_assert();
        assert_eq!(
            command("1.2.3 (git abc)").get_version(),
            Some("1.2.3 (git abc)")
        );
    }
}
