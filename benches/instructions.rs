//! The instruction-count driver: sets up the same state as the criterion
//! flow benches, then runs a number of batches through the pipeline inside
//! one function, `measured_batches`, that callgrind collects alone
//! (`--collect-atstart=no --toggle-collect='*measured_batches*'`), so the
//! setup's billions of instructions do not count.
//!
//! ```text
//! instructions <established|new-full|new-half|new-dead> <services> [batches] [connections]
//! ```
//!
//! `new-dead` is `new-full` with the first backend of every service down
//! and no rebuild since, so that about a quarter of the new flows take the
//! skip rule.
//!
//! A mode prefixed `routed-` (`routed-established`, `routed-new-full`,
//! `routed-new-half`; services must be 1) runs against the gateway of
//! every routing policy on (`Gateway::routed`: 10 000 client classes,
//! SETs, zones, a canary, 1 000 000 distribution paths).
//!
//! `connections` (default 1 000 000) sizes the table: with a few thousand
//! it stays in cache, which shows what the full-size table's cache misses
//! cost.
//!
//! ```text
//! instructions maglev <table size> [builds]
//! ```
//!
//! builds a Maglev table of that size for 100 backends (`builds` times,
//! default 10) inside `measured_maglev_builds`, for the same treatment.
//!
//! ```text
//! instructions workers <count> <established|new> <services> [steps] [connections]
//! ```
//!
//! runs whole workers (`Worker::poll` over in-memory ports, with the
//! hand-over between them when `count` is 2 or more): each step puts a
//! batch on every worker's client port, untimed, then polls every worker
//! once inside `measured_polls`. With two workers about half of each
//! worker's frames belong to the other. Each worker's table holds
//! `2 × connections`, so new flows do not evict.
//!
//! With `CAPTURE` set in the environment, the worker cases run with a
//! capture armed: `drops` (forwarded frames never match), or `N` (every
//! frame matches, one in N is copied into its worker's ring; the rings
//! are emptied between steps, untimed).
//!
//! It also prints the wall time per packet (or build) it saw (meaningful only when
//! not under valgrind). `scripts/instructions.sh` runs every case under
//! callgrind and prints instructions per packet; `cargo bench` runs this
//! binary with no case and it only says so.

mod support;

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowgate_dataplane::table::{MaglevBackend, MaglevTable};

use support::workers::Workers;
use support::{Gateway, World, BATCH, CONNECTIONS};

/// Batches per `measured_batches` call (frame memory holds this many).
const CHUNK: usize = 256;
/// Batches run before measuring, so that caches hold what they would
/// (a full table's modes run more: [`Mode::warm_up_batches`]).
const WARM_UP_BATCHES: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Established,
    NewFull,
    NewHalf,
    /// `new-full` with the first of each service's four backends down and
    /// no rebuild since: about a quarter of the new flows take the skip
    /// rule.
    NewDead,
}

impl Mode {
    fn from_name(name: &str) -> Option<Mode> {
        match name {
            "established" => Some(Mode::Established),
            "new-full" => Some(Mode::NewFull),
            "new-half" => Some(Mode::NewHalf),
            "new-dead" => Some(Mode::NewDead),
            _ => None,
        }
    }

    fn capacity(self, connections: u64) -> usize {
        match self {
            Mode::Established | Mode::NewFull | Mode::NewDead => connections as usize,
            Mode::NewHalf => 2 * connections as usize,
        }
    }

    /// Batches run before measuring: `WARM_UP` from the environment, or
    /// [`WARM_UP_BATCHES`]; new flows into a full table by default run as
    /// many new flows as the table holds, so that the eviction's clock hand
    /// has gone round the table once (passing up to 8 records an insert on
    /// its first turn, as on any turn where every record it passes was
    /// seen since its last) and the table is in its evicting steady state.
    /// `WARM_UP=256` measures the first turn instead.
    fn warm_up_batches(self, connections: u64) -> usize {
        if let Some(batches) = std::env::var("WARM_UP").ok().and_then(|b| b.parse().ok()) {
            return batches;
        }
        match self {
            Mode::NewFull | Mode::NewDead => (connections as usize).div_ceil(BATCH),
            Mode::Established | Mode::NewHalf => WARM_UP_BATCHES,
        }
    }

    /// Stamps `batches` batches of this mode's packets (not measured).
    fn load(self, world: &mut World, batches: usize) {
        match self {
            Mode::Established => world.load_established(batches),
            Mode::NewFull | Mode::NewHalf | Mode::NewDead => world.load_new(batches),
        }
    }

    /// Tidies up after a run (not measured).
    fn after(self, world: &mut World, batches: usize) {
        if self == Mode::NewHalf {
            world.retire_oldest((batches * BATCH) as u64);
        }
    }
}

/// The measured part: `batches` batches through the pipeline. Kept out
/// of line so callgrind can collect it by name.
#[inline(never)]
fn measured_batches(world: &mut World, batches: usize) {
    for batch in 0..batches {
        world.process(batch);
    }
}

/// The measured part of the worker cases: one poll of every worker.
#[inline(never)]
fn measured_polls(workers: &mut Workers) {
    workers.poll_all();
}

/// `instructions workers <count> <established|new> <services> [steps] [connections]`.
fn workers(args: &[String]) -> ExitCode {
    let count = args
        .get(1)
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let new = match args.get(2).map(String::as_str) {
        Some("established") => Some(false),
        Some("new") => Some(true),
        _ => None,
    };
    let services = args
        .get(3)
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let steps = match args.get(4) {
        Some(b) => b.parse::<usize>().ok(),
        None => Some(1_000),
    };
    let connections = match args.get(5) {
        Some(c) => c.parse::<u64>().ok().filter(|&c| c > 0),
        None => Some(CONNECTIONS),
    };
    let (Some(count), Some(new), Some(services), Some(steps), Some(connections)) =
        (count, new, services, steps, connections)
    else {
        eprintln!(
            "usage: instructions workers <count> <established|new> <services> [steps] [connections]"
        );
        return ExitCode::FAILURE;
    };
    // CAPTURE: unset or `off` (none armed), `drops` (armed for drops
    // only: forwarded frames never match), or N (every frame matches;
    // one in N is copied into the ring).
    let capture = std::env::var("CAPTURE").unwrap_or_default();
    let setup = Instant::now();
    let gateway = Gateway::new(services);
    let mut w = Workers::new(&gateway, count, 2 * connections as usize);
    w.establish(connections);
    match capture.as_str() {
        "" | "off" => {}
        "drops" => w.arm_capture(1, true),
        n => match n.parse::<u32>() {
            Ok(n) if n > 0 => w.arm_capture(n, false),
            _ => {
                eprintln!("CAPTURE: off, drops or a sampling rate N > 0, not {n:?}");
                return ExitCode::FAILURE;
            }
        },
    }
    let step = |w: &mut Workers, measure: bool| {
        if new {
            w.load_new();
        } else {
            w.load_established();
        }
        let start = Instant::now();
        if measure {
            measured_polls(w);
        } else {
            w.poll_all();
        }
        let time = start.elapsed();
        w.drain();
        time
    };
    for _ in 0..WARM_UP_BATCHES {
        step(&mut w, false);
    }
    // Frames handed to a worker polled earlier in a round wait for the
    // next: finish them outside the measured steps, before and after.
    w.poll_all();
    w.drain();
    let setup = setup.elapsed();
    let (forwarded, hits, created, handed) =
        (w.forwarded(), w.flow_hits(), w.new_flows(), w.handed_over());
    let time: Duration = (0..steps).map(|_| step(&mut w, true)).sum();
    w.poll_all();
    w.drain();
    let packets = (steps * BATCH * count) as u64;
    assert_eq!(w.forwarded() - forwarded, packets, "not all forwarded");
    if new {
        assert_eq!(w.new_flows() - created, packets);
    } else {
        assert_eq!(w.flow_hits() - hits, packets);
    }
    let handed = w.handed_over() - handed;
    let (captured, lost) = w.captured();
    println!(
        "mode=workers count={count} new={new} services={services} connections={connections} \
         packets={packets} handed_over={handed} setup_s={:.1} wall_ns_per_packet={:.1} table_len={} \
         capture={capture:?} captured={captured} capture_lost={lost}",
        setup.as_secs_f64(),
        time.as_nanos() as f64 / packets as f64,
        w.connections(),
    );
    ExitCode::SUCCESS
}

/// The measured part of the Maglev case: `builds` table builds.
#[inline(never)]
fn measured_maglev_builds(backends: &[MaglevBackend], size: u32, builds: usize) -> usize {
    (0..builds)
        .map(|_| MaglevTable::build(black_box(backends), black_box(size)).size())
        .sum()
}

/// `instructions maglev <size> [builds]`.
fn maglev(args: &[String]) -> ExitCode {
    let size = args.get(1).and_then(|s| s.parse::<u32>().ok());
    let builds = match args.get(2) {
        Some(b) => b.parse::<usize>().ok().filter(|&b| b > 0),
        None => Some(10),
    };
    let (Some(size), Some(builds)) = (size, builds) else {
        eprintln!("usage: instructions maglev <table size> [builds]");
        return ExitCode::FAILURE;
    };
    let backends = support::maglev_backends();
    let start = Instant::now();
    let slots = measured_maglev_builds(&backends, size, builds);
    let time = start.elapsed();
    assert_eq!(slots, size as usize * builds, "tables not full");
    println!(
        "mode=maglev size={size} backends={} builds={builds} wall_ms_per_build={:.3}",
        backends.len(),
        time.as_secs_f64() * 1e3 / builds as f64
    );
    ExitCode::SUCCESS
}

/// Runs `batches` batches of `mode`; the wall time spent in the measured
/// part.
fn run(world: &mut World, mode: Mode, batches: usize, measure: bool) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = batches;
    while left > 0 {
        let n = left.min(CHUNK);
        mode.load(world, n);
        let start = Instant::now();
        if measure {
            measured_batches(world, n);
        } else {
            for batch in 0..n {
                world.process(batch);
            }
        }
        total += start.elapsed();
        mode.after(world, n);
        left -= n;
    }
    total
}

/// Says how to run it; success when run by `cargo bench` with no case.
fn usage(args: &[String]) -> ExitCode {
    if args.iter().all(|a| a.starts_with("--")) {
        // `cargo bench` runs every bench binary with `--bench`.
        println!("instructions: run it through scripts/instructions.sh");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "usage: instructions [routed-]<established|new-full|new-half|new-dead> <services> [batches] [connections]\n\
         \x20      (routed-: every routing policy on, 1 service, not new-dead)\n\
         \x20      instructions workers <count> <established|new> <services> [steps] [connections]\n\
         \x20      instructions maglev <table size> [builds]"
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("maglev") => return maglev(&args),
        Some("workers") => return workers(&args),
        _ => {}
    }
    let name = args.first().map(String::as_str).unwrap_or("");
    let (routed, name) = match name.strip_prefix("routed-") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let mode = Mode::from_name(name).filter(|&m| !routed || m != Mode::NewDead);
    let services = args.get(1).and_then(|s| s.parse::<usize>().ok());
    let batches = match args.get(2) {
        Some(b) => b.parse::<usize>().ok(),
        None => Some(1_000),
    };
    let connections = match args.get(3) {
        Some(c) => c.parse::<u64>().ok().filter(|&c| c > 0),
        None => Some(CONNECTIONS),
    };
    let (Some(mode), Some(services), Some(batches), Some(connections)) =
        (mode, services, batches, connections)
    else {
        return usage(&args);
    };
    if routed && services != 1 {
        return usage(&args);
    }

    if mode == Mode::NewHalf && connections < (CHUNK * BATCH) as u64 {
        eprintln!("new-half needs at least {} connections", CHUNK * BATCH);
        return ExitCode::FAILURE;
    }

    let setup = Instant::now();
    let gateway = if routed {
        Gateway::routed()
    } else {
        Gateway::new(services)
    };
    let mut world = World::new(&gateway, mode.capacity(connections), CHUNK);
    world.establish(connections);
    if mode == Mode::NewDead {
        gateway.first_backends_down();
    }
    run(&mut world, mode, mode.warm_up_batches(connections), false);
    let setup = setup.elapsed();

    let (forwarded, hits, new) = (world.forwarded(), world.flow_hits(), world.new_flows());
    let time = run(&mut world, mode, batches, true);
    let packets = (batches * BATCH) as u64;
    assert_eq!(world.forwarded() - forwarded, packets, "not all forwarded");
    match mode {
        Mode::Established => assert_eq!(world.flow_hits() - hits, packets),
        Mode::NewFull | Mode::NewHalf | Mode::NewDead => {
            assert_eq!(world.new_flows() - new, packets)
        }
    }
    let stats = world.flows.stats();
    if routed {
        let c = world.pipeline.route_counters().snapshot();
        println!(
            "routing: path {} (fallback {}), SET {} (closed {}), canary {}, first choice {}, zone fallback {}",
            c.path_flows,
            c.path_fallbacks,
            c.set_flows,
            c.set_closed,
            c.canary_flows,
            c.first_choice,
            c.fallbacks
        );
    }
    println!(
        "mode={mode:?} routed={routed} services={services} connections={connections} packets={packets} setup_s={:.1} \
         wall_ns_per_packet={:.1} table_len={} evicted={} evicted_bucket_full={}",
        setup.as_secs_f64(),
        time.as_nanos() as f64 / packets as f64,
        world.flows.len(),
        stats.evicted,
        stats.evicted_bucket_full,
    );
    ExitCode::SUCCESS
}
