//! The SYN flood run of issue 11 point 8, shared by the test without a
//! defence (tests/syn_flood_netns.rs) and the test with the SYN proxy on
//! (tests/syn_flood_proxy_netns.rs): each asserts its own bars on the
//! figures [`run`] returns.
//!
//! The service `flood` (198.18.100.20:80, Maglev) balances over an nginx
//! on :8090 of each of the three backends. A long download of `/big` is
//! established through the gateway first and read slowly for the whole
//! flood; then the generator sends SYNs from random sources and ports
//! within 198.18.0.0/15 at its maximum rate to the VIP for the run's
//! length, while the client makes 50 HTTP requests per second with curl
//! (5 s timeout each, no retries beyond TCP's own) to the same VIP.
//!
//! The run's length is the caller's: the SYN proxy's test runs the
//! issue's 20 s always; the test without a defence runs
//! `FLOWGATE_FLOOD_SECONDS` (default 20 s; scripts/test.sh runs it 5 s in
//! CI). The client makes 50 × that many requests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::flood::{
    big_byte, open_big, rss_kib, with_metrics, FloodReport, Generator, Nginxes, Scrape,
};
use crate::netns::{backend_v4, one_gateway_at_a_time, wake_the_clients_veth, Topology};
use flowgate_api::{StatsReport, SynProxyStats};
use flowgate_dataplane::testnet::workspace_binary;

/// The flooded service's VIP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 20);
const PORT: u16 = 8090;
/// Requests per second the client makes.
pub const RATE: u64 = 50;
/// The large file: at 1.6 MB/s (16 KiB every 10 ms) longer than the
/// default run, so the download spans the whole flood.
const BIG: usize = 48 << 20;

/// The issue's run: 20 s of flood.
pub const ISSUE_SECONDS: u64 = 20;

/// The run's length in seconds: `FLOWGATE_FLOOD_SECONDS`, default 20.
pub fn seconds() -> u64 {
    std::env::var("FLOWGATE_FLOOD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| (1..=300).contains(s))
        .unwrap_or(20)
}

/// What the long download got.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Bytes of the file received.
    pub received: usize,
    /// Bytes received that differed from the file.
    pub differing: usize,
    /// Why it did not complete (none: it did, and no byte more came).
    pub error: Option<String>,
    /// Whether it was still running when the flood ended.
    pub spanned_flood: bool,
}

impl Transfer {
    /// Complete and byte-identical.
    pub fn identical(&self) -> bool {
        self.error.is_none() && self.differing == 0 && self.received == BIG
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct Figures {
    /// What the generator sent.
    pub flood: FloodReport,
    /// Requests the client made, and how many got their 200.
    pub requests: usize,
    /// Requests answered 200 within their 5 s.
    pub succeeded: usize,
    /// Failed requests by curl's exit code and HTTP status.
    pub failures: BTreeMap<String, usize>,
    /// The long download.
    pub transfer: Transfer,
    /// The gateway's resident memory (KiB) before the flood, its highest
    /// during it (sampled every second) and after it.
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
    /// The gateway's counters before and after the flood: Prometheus,
    /// and `flowgatectl stats -o json`.
    pub before: Scrape,
    pub after: Scrape,
    pub stats_before: StatsReport,
    pub stats_after: StatsReport,
    /// Frames dropped between the client's veth and the gateway's during
    /// the flood (the gateway's receive queue full, ahead of its XDP
    /// program): the generator's and the client's.
    pub veth_dropped: u64,
}

impl Figures {
    /// The share of the client's requests that succeeded, in %.
    pub fn success_percent(&self) -> f64 {
        100.0 * self.succeeded as f64 / self.requests.max(1) as f64
    }

    /// How much a counter family (summed over its series matching
    /// `labels`) moved during the flood.
    pub fn delta(&self, name: &str, labels: &[&str]) -> f64 {
        self.after.sum(name, labels) - self.before.sum(name, labels)
    }

    /// How much the SYN proxy's figures in `flowgatectl stats` moved
    /// during the flood (all zero when stats shows no SYN proxy).
    pub fn syn_proxy(&self) -> SynProxyStats {
        let (a, b) = (
            self.stats_before.syn_proxy.unwrap_or_default(),
            self.stats_after.syn_proxy.unwrap_or_default(),
        );
        SynProxyStats {
            cookies_sent: b.cookies_sent - a.cookies_sent,
            cookies_valid: b.cookies_valid - a.cookies_valid,
            cookies_invalid: b.cookies_invalid - a.cookies_invalid,
            syns_refused: b.syns_refused - a.syns_refused,
            marks_forged: b.marks_forged - a.marks_forged,
            acks_unchecked: b.acks_unchecked - a.acks_unchecked,
            probes_valid: b.probes_valid - a.probes_valid,
            connections: b.connections - a.connections,
            established: b.established - a.established,
        }
    }

    /// The figures as lines for the test's output (and the docs).
    pub fn print(&self, title: &str) {
        let moved = self.after.moved(&self.before);
        println!("== {title}");
        println!(
            "veth: {} frames dropped ahead of the gateway's XDP (its receive queue full)",
            self.veth_dropped
        );
        if self.stats_after.syn_proxy.is_some() {
            println!(
                "flowgatectl stats, during the flood: {:?}",
                self.syn_proxy()
            );
        }
        println!(
            "flood: {} SYNs in {:.1} s ({:.0}/s, {}), {} returns dropped at the generator",
            self.flood.sent,
            self.flood.seconds,
            self.flood.pps,
            self.flood.via(),
            self.flood.returns_dropped
        );
        println!(
            "client: {} of {} requests succeeded ({:.1} %); failures {:?}",
            self.succeeded,
            self.requests,
            self.success_percent(),
            self.failures
        );
        println!(
            "long transfer: {} of {BIG} bytes, {} differing, error {:?}, spanned the flood: {}",
            self.transfer.received,
            self.transfer.differing,
            self.transfer.error,
            self.transfer.spanned_flood
        );
        println!(
            "gateway RSS: {} KiB before, {} KiB peak, {} KiB after ({:+.1} %)",
            self.rss_before,
            self.rss_peak,
            self.rss_after,
            100.0 * (self.rss_after as f64 - self.rss_before as f64) / self.rss_before as f64
        );
        for (k, v) in moved.iter().filter(|(k, _)| {
            !k.contains("_bucket") && !k.contains("idle_polls") && !k.contains("polls_total")
        }) {
            println!("  {k} {v:+}");
        }
    }
}

fn config(topo: &Topology, syn_proxy: bool) -> String {
    let mut text = format!(
        "{}\n[[services]]\nname = \"flood\"\nprotocol = \"tcp\"\nvip = \"{VIP}\"\nport = 80\n\
         scheduler = \"maglev\"\n",
        with_metrics(&topo.config(&[0]))
    );
    if syn_proxy {
        text.push_str("syn_proxy = \"on\"\n");
    }
    for b in 1..=3 {
        text.push_str(&format!(
            "\n[[services.backends]]\naddress = \"{}\"\nport = {PORT}\n",
            backend_v4(b)
        ));
    }
    text
}

/// Downloads `/big` through the VIP: says on `started` once the head is
/// in, reads 16 KiB every 10 ms until `fast` is set, then at full speed
/// (a read waits at most 10 s).
fn slow_download(started: mpsc::Sender<()>, fast: &AtomicBool) -> Transfer {
    let mut t = Transfer::default();
    if let Err(e) = download(started, fast, &mut t) {
        t.error = Some(e);
    }
    t
}

fn download(started: mpsc::Sender<()>, fast: &AtomicBool, t: &mut Transfer) -> Result<(), String> {
    let mut stream = open_big(SocketAddr::from((VIP, 80)), "flood", BIG)?;
    let _ = started.send(());
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < BIG {
        if Instant::now() > deadline {
            return Err(format!("not done in 120 s: {got} of {BIG} bytes"));
        }
        let fast_now = fast.load(Ordering::Relaxed);
        t.spanned_flood |= fast_now;
        let want = if fast_now { buf.len() } else { 16 << 10 };
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("closed after {got} of {BIG} bytes")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read after {got} of {BIG} bytes: {e}")),
        };
        t.differing += buf[..n]
            .iter()
            .enumerate()
            .filter(|(k, b)| **b != big_byte(got + k))
            .count();
        got += n;
        t.received = got;
        if !fast_now {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut rest = [0u8; 16];
    if stream.read(&mut rest).map_err(|e| e.to_string())? != 0 {
        return Err("more bytes than the file".into());
    }
    Ok(())
}

/// One curl request: 5 s timeout, no retries.
fn curl(url: &str) -> io::Result<Child> {
    Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_connect}",
            "--max-time",
            "5",
            "--retry",
            "0",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
}

/// `count` curl requests at `RATE` per second (each on its own process,
/// started on schedule whether or not the earlier ones finished); calls
/// `each_second` once a second. Returns the successes and the failures by
/// cause. Bounded: every request ends within its 5 s, and whatever still
/// runs 10 s after the last start is killed and counted as failed.
fn curl_load(count: usize, mut each_second: impl FnMut()) -> (usize, BTreeMap<String, usize>) {
    let url = format!("http://{VIP}/");
    let start = Instant::now();
    let mut running: Vec<Child> = Vec::new();
    let mut done: Vec<Result<String, String>> = Vec::new();
    let mut next_tick = Duration::from_secs(1);
    let reap = |running: &mut Vec<Child>, done: &mut Vec<Result<String, String>>| {
        running.retain_mut(|c| match c.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                let _ = c.stdout.take().unwrap().read_to_string(&mut out);
                done.push(if status.success() && out.starts_with("200 ") {
                    Ok(out)
                } else {
                    Err(format!(
                        "exit {:?} http {} connect {}",
                        status.code(),
                        out.split(' ').next().unwrap_or(""),
                        if out.ends_with(" 0.000000") {
                            "none"
                        } else {
                            "made"
                        }
                    ))
                });
                false
            }
            Ok(None) => true,
            Err(e) => {
                done.push(Err(e.to_string()));
                false
            }
        });
    };
    for i in 0..count {
        let at = Duration::from_micros(i as u64 * 1_000_000 / RATE);
        while start.elapsed() < at {
            std::thread::sleep(Duration::from_millis(1).min(at.saturating_sub(start.elapsed())));
        }
        if start.elapsed() >= next_tick {
            each_second();
            next_tick += Duration::from_secs(1);
        }
        match curl(&url) {
            Ok(child) => running.push(child),
            Err(e) => done.push(Err(format!("spawn: {e}"))),
        }
        reap(&mut running, &mut done);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.is_empty() && Instant::now() < deadline {
        reap(&mut running, &mut done);
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut c in running.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
        done.push(Err("still running 10 s after the last start".into()));
    }
    let mut failures = BTreeMap::new();
    let mut ok = 0;
    for d in done {
        match d {
            Ok(_) => ok += 1,
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    (ok, failures)
}

/// `flowgatectl stats -o json` of the gateway.
fn ctl_stats(topo: &Topology) -> StatsReport {
    let out = Command::new(workspace_binary("flowgatectl").unwrap())
        .arg("--socket")
        .arg(topo.scratch.path("control.sock"))
        .args(["stats", "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowgatectl stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_object_mut().unwrap().remove("kind");
    serde_json::from_value(json).unwrap()
}

/// Frames the client's veth could not hand to the gateway's: its
/// receive queue (veth's ring of 256 frames) was full, so they were
/// dropped before the gateway's XDP program saw them — the generator's
/// (its XDP frames' transmit errors) and the client's own. (The gateway
/// side's rx_dropped would count these and also frames the program
/// redirected to a full AF_XDP ring.)
fn veth_dropped_ahead_of_xdp(topo: &Topology) -> u64 {
    let out = topo
        .client
        .exec("cat", &["/sys/class/net/eth0/statistics/tx_dropped"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The run of `seconds`: a gateway (with the SYN proxy on the service if
/// `syn_proxy`), the download, the flood and the client's requests; the
/// gateway still runs after it and stops cleanly.
pub fn run(syn_proxy: bool, seconds: u64) -> Figures {
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let generator = Generator::build(&topo.scratch.path(""));
    let nginxes = Nginxes::start(&topo, PORT, BIG);
    if syn_proxy {
        wake_the_clients_veth(&topo);
    }
    let mut gateway = topo.start_gateway(&config(&topo, syn_proxy));
    let pid = gateway.pid().unwrap();
    // The service answers before anything starts.
    let probe = topo
        .client
        .enter(|| curl(&format!("http://{VIP}/")).and_then(|c| c.wait_with_output()))
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).split(' ').next(),
        Some("200"),
        "no answer from {VIP} before the flood:\n{}",
        gateway.log()
    );

    let fast = AtomicBool::new(false);
    let (started_tx, started_rx) = mpsc::channel();
    let figures = std::thread::scope(|scope| {
        let download = scope.spawn(|| {
            let result = topo
                .client
                .enter(|| slow_download(started_tx, &fast))
                .unwrap();
            fast.store(true, Ordering::Relaxed);
            result
        });
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the download did not start within 10 s");
        std::thread::sleep(Duration::from_secs(1));
        let rss_before = rss_kib(pid);
        let before = Scrape::take(&topo.gateway);
        let stats_before = ctl_stats(&topo);
        let dropped_before = veth_dropped_ahead_of_xdp(&topo);

        let flood = generator.start(&topo, SocketAddr::from((VIP, 80)), seconds, 1, &["--syn"]);
        let mut rss_peak = rss_before;
        let (succeeded, failures) = topo
            .client
            .enter(|| {
                curl_load((RATE * seconds) as usize, || {
                    rss_peak = rss_peak.max(rss_kib(pid))
                })
            })
            .unwrap();
        let report = flood.wait(Duration::from_secs(seconds + 30));
        let rss_after = rss_kib(pid);
        let after = Scrape::take(&topo.gateway);
        let stats_after = ctl_stats(&topo);
        let veth_dropped = veth_dropped_ahead_of_xdp(&topo) - dropped_before;
        fast.store(true, Ordering::Relaxed);
        let transfer = download.join().unwrap();
        Figures {
            flood: report,
            requests: (RATE * seconds) as usize,
            succeeded,
            failures,
            transfer,
            rss_before,
            rss_peak: rss_peak.max(rss_after),
            rss_after,
            before,
            after,
            stats_before,
            stats_after,
            veth_dropped,
        }
    });
    gateway.assert_running();
    gateway.stop();
    drop(nginxes);
    figures
}
