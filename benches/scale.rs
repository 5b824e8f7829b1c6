//! How the control plane's work grows with the rules: `flowgate check`, a
//! reload and an `apply` of a generated config, from 1 000 to 100 000
//! services (one backend each, `maglev_table_size = 1021`) and from 1 000
//! to 100 000 backends in one service (a table of the next prime above 100
//! slots per backend: 10 000 019 for 100 000), Maglev builds included.
//!
//! - `check`: [`daemon::load_checked`] on the file, as `flowgate check`
//!   does (read, parse, validate, the XDP maps' capacity, cores, log
//!   filter).
//! - `reload`: a control state running no services re-reads the file
//!   ([`ControlState::reload`]: read, parse, validate, diff, capacity
//!   check, compile and publish the snapshot on an in-memory data plane).
//! - `apply`: the same through the control API's `apply` request, the
//!   config's text in the request.
//! - `again`: a second reload of the same file by the control state that
//!   runs it: every service unchanged, so every table is carried over
//!   (the common reload). The other two start from rules without
//!   services, the worst case: every table is built.
//!
//! Each case runs in a child process of its own, so its peak resident
//! memory (`VmHWM`) is its own; the child prints one line per case, the
//! best of `ROUNDS` (3) runs, each time as `wall/cpu` milliseconds (the
//! CPU time of all the process's threads: on a loaded machine, what the
//! work costs without the wait for a core).
//!
//! Run: `flock /tmp/flowgate-bench.lock cargo bench --bench scale`
//! (about a minute); `cargo bench --bench scale -- services` or
//! `-- backends` for one shape. docs/benchmarks.md keeps the results.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_api::{ApplyConfig, Request};
use flowgate_dataplane::control::{ControlState, Dataplane, MemoryDataplane};
use flowgate_dataplane::daemon;
use flowgate_dataplane::rules::{load_str, next_prime, Config};

/// Maglev table size of every service of the `services` shape.
const SERVICE_TABLE: u32 = 1021;
/// Sizes of the curve.
const SIZES: [usize; 6] = [1_000, 3_000, 10_000, 30_000, 60_000, 100_000];
/// Runs of each case; the fastest is reported.
const ROUNDS: usize = 3;

/// Which dimension grows.
#[derive(Clone, Copy)]
enum Shape {
    /// `n` services of one backend, tables of 1021 slots.
    Services,
    /// One service of `n` backends, a table of about 100 slots each.
    Backends,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Services => "services",
            Shape::Backends => "backends",
        }
    }

    fn parse(text: &str) -> Option<Shape> {
        match text {
            "services" => Some(Shape::Services),
            "backends" => Some(Shape::Backends),
            _ => None,
        }
    }

    /// The config file's text for size `n`.
    fn config_text(self, n: usize) -> String {
        match self {
            Shape::Services => services_text(n),
            Shape::Backends => backends_text(n),
        }
    }

    /// The same config without its services: what runs before a reload
    /// or an apply (the same restart-only sections).
    fn base(self, n: usize) -> Config {
        let text = match self {
            Shape::Services => head(SERVICE_TABLE),
            Shape::Backends => head(backend_table(n)),
        };
        load_str(&text, "base").unwrap_or_else(|e| panic!("base config: {e}"))
    }
}

/// The head every generated config shares: one interface, one core.
fn head(table_size: u32) -> String {
    format!(
        "[gateway]\nmaglev_table_size = {table_size}\n\n[daemon]\ncores = [0]\n\n\
         [[interfaces]]\nname = \"fg-client\"\nmac = \"02:66:67:00:00:01\"\n\n"
    )
}

/// Address `i` of 198.18.0.0/15, past its first 256 addresses.
fn address(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0xc612_0000u32 + 256 + i as u32)
}

/// `n` services of one backend each: VIPs and backends on distinct
/// addresses, 60 000 of each, then the same addresses on the next port.
fn services_text(n: usize) -> String {
    let mut text = head(SERVICE_TABLE);
    for i in 0..n {
        let (index, round) = (i % 60_000, i / 60_000);
        let _ = write!(
            text,
            "[[services]]\nname = \"svc-{i}\"\nprotocol = \"tcp\"\nvip = \"{}\"\nport = {}\n\
             scheduler = \"maglev\"\n\n[[services.backends]]\naddress = \"{}\"\nport = {}\n\n",
            address(index),
            80 + round,
            address(60_000 + index),
            8080 + round,
        );
    }
    text
}

/// One service of `n` backends (distinct addresses and ports) and a table
/// of the next prime above 100 slots per backend.
fn backends_text(n: usize) -> String {
    let mut text = head(backend_table(n));
    text.push_str(
        "[[services]]\nname = \"big\"\nprotocol = \"tcp\"\nvip = \"198.19.0.10\"\nport = 80\n\
         scheduler = \"maglev\"\n\n",
    );
    for i in 0..n {
        let _ = write!(
            text,
            "[[services.backends]]\naddress = \"{}\"\nport = {}\n\n",
            address(i % 60_000),
            8080 + i / 60_000,
        );
    }
    text
}

/// The table of the `backends` shape: the next prime above 100 slots per
/// backend (10 000 019 for 100 000).
fn backend_table(n: usize) -> u32 {
    next_prime(100 * n as u32).expect("a prime below 2^32")
}

/// What an operation took: wall time, and CPU time of the whole process
/// (all its threads). On a loaded machine the wall time includes waiting
/// for a core; the CPU time does not.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

impl Cost {
    /// The least of each, over two runs.
    fn min(self, other: Cost) -> Cost {
        Cost {
            wall: self.wall.min(other.wall),
            cpu: self.cpu.min(other.cpu),
        }
    }
}

/// The start of an operation.
struct Mark {
    wall: Instant,
    cpu: Duration,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            wall: Instant::now(),
            cpu: process_cpu(),
        }
    }

    fn cost(&self) -> Cost {
        Cost {
            wall: self.wall.elapsed(),
            cpu: process_cpu().saturating_sub(self.cpu),
        }
    }
}

/// CPU time this process has used, all threads.
fn process_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// The costs of one run of each operation.
struct Times {
    check: Cost,
    reload: Cost,
    again: Cost,
    apply: Cost,
}

/// Runs check, reload and apply once on the config at `path`.
fn run_once(path: &Path, text: &str, base: &Config) -> Times {
    let t = Mark::now();
    let checked = daemon::load_checked(path, None).unwrap_or_else(|e| panic!("check: {e}"));
    let check = t.cost();
    drop(checked);

    let dataplane: Arc<dyn Dataplane> = Arc::new(MemoryDataplane::new());
    let mut state = ControlState::new(base.clone(), "bench", dataplane);
    let t = Mark::now();
    state
        .reload(path)
        .unwrap_or_else(|e| panic!("reload: {}", e.message));
    let reload = t.cost();
    let t = Mark::now();
    state
        .reload(path)
        .unwrap_or_else(|e| panic!("reload again: {}", e.message));
    let again = t.cost();
    drop(state);

    let dataplane: Arc<dyn Dataplane> = Arc::new(MemoryDataplane::new());
    let mut state = ControlState::new(base.clone(), "bench", dataplane);
    let request = Request::Apply(ApplyConfig {
        config: text.to_owned(),
        origin: None,
        dry_run: false,
    });
    let t = Mark::now();
    state
        .handle(request)
        .unwrap_or_else(|e| panic!("apply: {}", e.message));
    let apply = t.cost();
    drop(state);
    Times {
        check,
        reload,
        again,
        apply,
    }
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `wall/cpu`, in milliseconds.
fn ms(cost: Cost) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("{:.0}/{:.0}", ms(cost.wall), ms(cost.cpu))
}

/// The child: one case, one line.
fn case(shape: Shape, n: usize) -> ExitCode {
    let text = shape.config_text(n);
    let dir = std::env::temp_dir().join(format!("flowgate-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path: PathBuf = dir.join("flowgate.toml");
    std::fs::write(&path, &text).expect("write config");
    let base = shape.base(n);
    let mut best: Option<Times> = None;
    for _ in 0..ROUNDS {
        let times = run_once(&path, &text, &base);
        best = Some(match best {
            None => times,
            Some(b) => Times {
                check: b.check.min(times.check),
                reload: b.reload.min(times.reload),
                again: b.again.min(times.again),
                apply: b.apply.min(times.apply),
            },
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    let best = best.expect("at least one round");
    println!(
        "{:<9} {:>8} {:>8.1} {:>11} {:>11} {:>11} {:>11} {:>9.0}",
        shape.name(),
        n,
        text.len() as f64 / (1 << 20) as f64,
        ms(best.check),
        ms(best.reload),
        ms(best.again),
        ms(best.apply),
        peak_rss_mib(),
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let (Some("case"), Some(shape), Some(n)) = (
        args.first().map(String::as_str),
        args.get(1).and_then(|s| Shape::parse(s)),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) {
        return case(shape, n);
    }
    // `cargo bench` passes `--bench`; a filter may follow.
    let filter: Option<&String> = args.iter().find(|a| !a.starts_with("--"));
    let exe = std::env::current_exe().expect("own path");
    println!(
        "{:<9} {:>8} {:>8} {:>11} {:>11} {:>11} {:>11} {:>9}",
        "shape", "n", "MiB", "check ms", "reload ms", "again ms", "apply ms", "peak MiB"
    );
    for shape in [Shape::Services, Shape::Backends] {
        if filter.is_some_and(|f| !shape.name().contains(f.as_str())) {
            continue;
        }
        for n in SIZES {
            let status = Command::new(&exe)
                .args(["case", shape.name(), &n.to_string()])
                .status()
                .expect("run a case");
            if !status.success() {
                eprintln!("{} {n}: failed ({status})", shape.name());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
