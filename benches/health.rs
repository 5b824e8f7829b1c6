//! Active health checks at scale: 10 000 backends checked every second
//! with tcp checks, for 60 s.
//!
//! Topology: the prober runs in namespace `gw`; the backends' listeners run
//! in namespace `be` on four addresses (198.18.60.1-4) × 2 500 ports, on
//! the loopback of `be`, reached over a veth pair (198.18.61.0/30), so
//! every check is a real TCP handshake and RST across a link. A thread of
//! this process (in `be`) accepts and closes on every listener through one
//! epoll set.
//!
//! Reported:
//! - the prober thread's CPU time (utime + stime from
//!   /proc/self/task/TID/stat, and its run time from schedstat) over the
//!   measured window, as a share of one core, and per check;
//! - checks completed, failures, TIME_WAIT sockets left in either namespace;
//! - the spread of probe starts: how late each probe started after its
//!   scheduled time (the prober's start-delay histogram), and how the
//!   listeners' accepts spread over 10 ms bins (a lockstep would show as
//!   bursts: bins far above the mean).
//!
//! Run as root: `flock /tmp/flowgate-bench.lock cargo bench --bench health`.
//! `FLOWGATE_HEALTH_TARGETS` (10 000) and `FLOWGATE_HEALTH_SECONDS` (60)
//! change the shape; a warm-up of 3 s (first probes spread over the first
//! interval) is not measured.

use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowgate_dataplane::health::{
    Check, HistogramSample, Prober, ProberOptions, Target, Timing, LATENCY_BUCKETS_SECONDS,
};
use flowgate_dataplane::testnet::{self, veth_pair, NetNs};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

const ADDRESSES: [&str; 4] = ["198.18.60.1", "198.18.60.2", "198.18.60.3", "198.18.60.4"];
const WARM_UP: Duration = Duration::from_secs(3);
/// Width of the bins the accepts are counted in.
const BIN: Duration = Duration::from_millis(10);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime in clock ticks, and run time in ns, of thread `tid`.
fn thread_cpu(tid: i32) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let (utime, stime) = (f[11], f[12]);
    let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap();
    let run_ns = schedstat
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (utime, stime, run_ns)
}

/// The run time (ns) of the kernel's NAPI threads of the two veth ends.
fn napi_cpu_ns() -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("napi/hgw") || comm.starts_with("napi/hbe") {
            let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            total += schedstat
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

fn time_waits(ns: &NetNs) -> usize {
    ns.exec("ss", &["-Htan", "state", "time-wait"])
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(usize::MAX)
}

fn delta(a: &HistogramSample, b: &HistogramSample) -> HistogramSample {
    let mut d = HistogramSample {
        sum_micros: b.sum_micros - a.sum_micros,
        ..HistogramSample::default()
    };
    for (i, c) in d.cumulative.iter_mut().enumerate() {
        *c = b.cumulative[i] - a.cumulative[i];
    }
    d
}

/// The smallest bucket bound holding at least `q` of the observations.
fn quantile_bound(h: &HistogramSample, q: f64) -> String {
    let want = (h.count() as f64 * q).ceil() as u64;
    for (i, &c) in h.cumulative.iter().enumerate() {
        if c >= want {
            return match LATENCY_BUCKETS_SECONDS.get(i) {
                Some(le) => format!("≤ {} ms", le * 1000.0),
                None => "> 5 s".into(),
            };
        }
    }
    "-".into()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if testnet::check_privileges().is_err() {
        println!("health bench: skipped (needs root for network namespaces)");
        return;
    }
    let targets_n = env_or("FLOWGATE_HEALTH_TARGETS", 10_000) as usize;
    let seconds = env_or("FLOWGATE_HEALTH_SECONDS", 60);

    raise_descriptor_limit(targets_n);
    let (gw, be) = build_network();
    let listeners = bind_listeners(&be, targets_n);
    let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let origin = Instant::now();
    let acceptor = Acceptor::spawn(listeners, origin, seconds);
    let prober = start_prober(&gw, &addresses);
    std::thread::sleep(WARM_UP);

    let window = measure(&prober, origin, seconds);
    drop(prober);
    let tw = (time_waits(&gw), time_waits(&be));
    let (bins, accepted) = acceptor.finish();
    report(targets_n, &window, &bins, accepted, tw);
}

/// Raises the descriptor limit: listeners and probes each need one.
fn raise_descriptor_limit(targets_n: usize) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = (targets_n as u64 + 4096).min(hard);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

/// The two namespaces, prober side `gw` and backend side `be`, joined by
/// a veth pair, with the backends' addresses on the loopback of `be`.
fn build_network() -> (NetNs, NetNs) {
    let gw = NetNs::new("fghb").unwrap();
    let be = NetNs::new("fghb").unwrap();
    veth_pair(&gw, "hgw", &be, "hbe", 1).unwrap();
    gw.ip(&["addr", "add", "198.18.61.1/30", "dev", "hgw"])
        .unwrap();
    be.ip(&["addr", "add", "198.18.61.2/30", "dev", "hbe"])
        .unwrap();
    gw.ip(&["route", "add", "198.18.60.0/24", "via", "198.18.61.2"])
        .unwrap();
    // Receive work on NAPI threads of its own, as a NIC's runs in its
    // interrupt's softirq: without this, veth runs the receiving side's
    // whole TCP work (the backend's too) inside the prober's send calls,
    // and this kernel (no IRQ time accounting) charges it to the prober.
    for (ns, dev) in [(&gw, "hgw"), (&be, "hbe")] {
        // GRO off then on: veth starts NAPI when GRO is turned on; and it
        // passes a packet through NAPI only when the sender has no TSO.
        ns.exec("ethtool", &["-K", dev, "gro", "off"]).unwrap();
        ns.exec("ethtool", &["-K", dev, "gro", "on", "tso", "off"])
            .unwrap();
        ns.exec(
            "sh",
            &["-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")],
        )
        .unwrap();
    }
    for a in ADDRESSES {
        be.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])
            .unwrap();
    }
    // Enough SYN backlog and ports for 10 000 handshakes a second.
    be.exec("sysctl", &["-qw", "net.core.somaxconn=4096"])
        .unwrap();
    (gw, be)
}

/// `targets_n` listeners in `be`, spread evenly over `ADDRESSES`.
fn bind_listeners(be: &NetNs, targets_n: usize) -> Vec<TcpListener> {
    let per_address = targets_n.div_ceil(ADDRESSES.len());
    be.enter(|| {
        let mut v = Vec::with_capacity(targets_n);
        'all: for a in ADDRESSES {
            for _ in 0..per_address {
                if v.len() == targets_n {
                    break 'all;
                }
                v.push(TcpListener::bind((a, 0)).unwrap());
            }
        }
        v
    })
    .unwrap()
}

/// The accepting side: a thread with one epoll set over every listener;
/// counts accepts into 10 ms bins from `origin`.
struct Acceptor {
    stop: Arc<AtomicBool>,
    bins: Arc<Mutex<Vec<u32>>>,
    accepted: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Acceptor {
    fn spawn(listeners: Vec<TcpListener>, origin: Instant, seconds: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let bins: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicU64::new(0));
        let (stop_t, bins_t, accepted_t) =
            (Arc::clone(&stop), Arc::clone(&bins), Arc::clone(&accepted));
        let thread = std::thread::spawn(move || {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
            for (i, l) in listeners.iter().enumerate() {
                l.set_nonblocking(true).unwrap();
                epoll
                    .add(l.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                    .unwrap();
            }
            let mut events = vec![EpollEvent::empty(); 1024];
            let mut local_bins: Vec<u32> = Vec::new();
            let end = origin + WARM_UP + Duration::from_secs(seconds) + Duration::from_secs(30);
            while !stop_t.load(Ordering::Relaxed) && Instant::now() < end {
                let n = epoll
                    .wait(&mut events, EpollTimeout::from(100u16))
                    .unwrap_or(0);
                for e in &events[..n] {
                    let l = &listeners[e.data() as usize];
                    while let Ok((s, _)) = l.accept() {
                        let bin = (origin.elapsed().as_nanos() / BIN.as_nanos()) as usize;
                        if local_bins.len() <= bin {
                            local_bins.resize(bin + 1, 0);
                        }
                        local_bins[bin] += 1;
                        accepted_t.fetch_add(1, Ordering::Relaxed);
                        drop(s);
                    }
                }
            }
            *bins_t.lock().unwrap() = local_bins;
        });
        Acceptor {
            stop,
            bins,
            accepted,
            thread,
        }
    }

    /// Stops the thread; the accepts per bin, and in all.
    fn finish(self) -> (Vec<u32>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let bins = std::mem::take(&mut *self.bins.lock().unwrap());
        (bins, self.accepted.load(Ordering::Relaxed))
    }
}

/// A prober in `gw` with a tcp check of every address, every second.
fn start_prober(gw: &NetNs, addresses: &[SocketAddr]) -> Prober {
    let prober = gw
        .enter(|| {
            Prober::start(ProberOptions {
                max_in_flight: 1024,
                ..ProberOptions::default()
            })
            .unwrap()
        })
        .unwrap();
    let timing = Timing::new(Duration::from_secs(1), Duration::from_millis(500), 2, 3).unwrap();
    let targets: Vec<Target> = addresses
        .iter()
        .map(|&a| Target::new(a, Check::tcp(timing)))
        .collect();
    prober.set_targets(targets).unwrap();
    prober
}

/// What the prober did over the measured window.
struct Window {
    elapsed: Duration,
    checks: u64,
    failures: u64,
    /// Prober thread CPU at the start and the end: utime, stime, run ns.
    cpu: [(u64, u64, u64); 2],
    napi_ns: u64,
    delay: HistogramSample,
    /// The accept bins wholly inside the window.
    bins: Range<usize>,
    peak: u64,
    deferred: u64,
    local_errors: u64,
}

/// Samples the prober's counters and CPU time, sleeps `seconds`, and
/// samples them again.
fn measure(prober: &Prober, origin: Instant, seconds: u64) -> Window {
    let tid = prober.thread_id().unwrap();
    let c = prober.counters();
    let sum_checks = |p: &Prober| {
        p.statuses()
            .iter()
            .fold((0, 0), |(c, f), s| (c + s.checks, f + s.failures))
    };
    let (checks0, failures0) = sum_checks(prober);
    let delay0 = c.start_delay.sample();
    let cpu0 = thread_cpu(tid);
    let napi0 = napi_cpu_ns();
    let t0 = Instant::now();
    let window_start_bin = (t0.duration_since(origin).as_nanos() / BIN.as_nanos()) as usize + 1;
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu1 = thread_cpu(tid);
    let napi1 = napi_cpu_ns();
    let elapsed = t0.elapsed();
    let (checks1, failures1) = sum_checks(prober);
    let delay = delta(&delay0, &c.start_delay.sample());
    let window_end_bin =
        (Instant::now().duration_since(origin).as_nanos() / BIN.as_nanos()) as usize;
    Window {
        elapsed,
        checks: checks1 - checks0,
        failures: failures1 - failures0,
        cpu: [cpu0, cpu1],
        napi_ns: napi1 - napi0,
        delay,
        bins: window_start_bin..window_end_bin,
        peak: c.in_flight_peak.get(),
        deferred: c.deferred.get(),
        local_errors: c.local_errors.get(),
    }
}

/// Mean, standard deviation, min and max of the accepts per bin.
fn spread(window: &[u32]) -> (f64, f64, u32, u32) {
    let mean = window.iter().map(|&b| f64::from(b)).sum::<f64>() / window.len().max(1) as f64;
    let sd = (window
        .iter()
        .map(|&b| (f64::from(b) - mean).powi(2))
        .sum::<f64>()
        / window.len().max(1) as f64)
        .sqrt();
    let (bmin, bmax) = (
        window.iter().min().copied().unwrap_or(0),
        window.iter().max().copied().unwrap_or(0),
    );
    (mean, sd, bmin, bmax)
}

/// Prints the figures of the run.
fn report(targets_n: usize, w: &Window, bins: &[u32], accepted: u64, tw: (usize, usize)) {
    let [cpu0, cpu1] = w.cpu;
    let hz = ticks_per_second() as f64;
    let secs = w.elapsed.as_secs_f64();
    let ticks = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
    let cpu_stat = ticks as f64 / hz;
    let cpu_run = (cpu1.2 - cpu0.2) as f64 / 1e9;
    let checks = w.checks;
    let window: Vec<u32> = bins
        .get(w.bins.start..w.bins.end.min(bins.len()))
        .unwrap_or(&[])
        .to_vec();
    let (mean, sd, bmin, bmax) = spread(&window);
    let delay = &w.delay;
    let (peak, deferred, local) = (w.peak, w.deferred, w.local_errors);

    println!("health bench: {targets_n} tcp targets, interval 1 s ± 10 %, timeout 500 ms, {secs:.1} s measured");
    println!(
        "  checks completed        {checks} ({:.0}/s), failures {}",
        checks as f64 / secs,
        w.failures
    );
    println!(
        "  prober CPU (stat)       {cpu_stat:.2} s = {:.3} core (user {:.2} s, system {:.2} s)",
        cpu_stat / secs,
        (cpu1.0 - cpu0.0) as f64 / hz,
        (cpu1.1 - cpu0.1) as f64 / hz
    );
    println!(
        "  prober CPU (schedstat)  {cpu_run:.2} s = {:.3} core",
        cpu_run / secs
    );
    println!(
        "  CPU per check           {:.1} µs",
        cpu_run * 1e6 / checks.max(1) as f64
    );
    let napi = w.napi_ns as f64 / 1e9;
    println!(
        "  kernel receive work     {napi:.2} s = {:.3} core on the veth NAPI threads (both ends)",
        napi / secs
    );
    println!(
        "  start delay             median {}, p99 {}, p99.9 {}, mean {:.0} µs",
        quantile_bound(delay, 0.5),
        quantile_bound(delay, 0.99),
        quantile_bound(delay, 0.999),
        delay.sum_micros as f64 / delay.count().max(1) as f64
    );
    println!(
        "  accepts per 10 ms bin   mean {mean:.1}, sd {sd:.1}, min {bmin}, max {bmax} ({} bins)",
        window.len()
    );
    println!(
        "  in flight peak {peak}, deferred {deferred}, local errors {local}, accepted {accepted}"
    );
    println!(
        "  TIME_WAIT sockets after: prober side {}, backend side {}",
        tw.0, tw.1
    );
}
