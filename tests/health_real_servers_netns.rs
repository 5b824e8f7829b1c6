//! Backend health on the real daemon with real servers: the service
//! `real` (198.18.100.12:80, Maglev) balances over an nginx on :8090 of
//! each of the demo's three backends, each checked by tcp every 200 ms.
//! While a client makes requests in a loop and a slow reader downloads a
//! large file from a healthy backend, b2's nginx is stopped and started
//! again. The daemon's own per-backend counters bound the failures, no new
//! connection reaches b2 while it is down, and the download is
//! byte-identical. Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere.
//!
//! The topology's veth peers have GRO off, so by default the kernel fast
//! path is off and the worker forwards every packet;
//! FLOWGATE_NETNS_PEER_GRO=1 runs it with the fast path on (a watched
//! backend's connections are then still the worker's). The test prints
//! the daemon's word on which mode it ran in.

mod netns;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use flowgate_api::{ControlClient, Reply, Request, ServiceName};
use flowgate_dataplane::testnet::NetNs;
use netns::{backend_v4, http_get, one_gateway_at_a_time, privileged, Topology};

const INTERVAL_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;
const PORT: u16 = 8090;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 12);
/// The large file's size: at full speed a few hundred milliseconds, at the
/// slow reader's pace far longer than the whole event.
const BIG: usize = 32 << 20;

/// The demo's rules, checks off for them, and the service `real` checked
/// by tcp.
fn config(topo: &Topology) -> String {
    let mut text = format!(
        "{}\n[health]\nkind = \"none\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"100ms\"\n\
         rise = {RISE}\nfall = {FALL}\n\n[[services]]\nname = \"real\"\nprotocol = \"tcp\"\n\
         vip = \"{VIP}\"\nport = 80\nscheduler = \"maglev\"\n\n[services.health]\nkind = \"tcp\"\n",
        topo.config(&[0])
    );
    for b in 1..=3 {
        text.push_str(&format!(
            "\n[[services.backends]]\naddress = \"{}\"\nport = {PORT}\n",
            backend_v4(b)
        ));
    }
    text
}

/// Byte `i` of the large file (a fixed pseudo-random sequence).
fn big_byte(i: usize) -> u8 {
    let mut x = (i as u64 / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x.to_le_bytes()[i % 8]
}

/// One backend's nginx, its files in a directory of its own; stopped on
/// drop (also when a test fails), so no server outlives its namespace.
struct Nginx<'a> {
    ns: &'a NetNs,
    dir: PathBuf,
}

impl<'a> Nginx<'a> {
    /// Writes backend `n`'s config (`/` answers its name, `/big` the large
    /// file in `www`, `X-Backend` names it) and starts it.
    fn start(ns: &'a NetNs, n: u8, dir: PathBuf, www: &std::path::Path) -> Nginx<'a> {
        fs::create_dir_all(dir.join("tmp")).unwrap();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
             fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
             scgi_temp_path {d}/tmp/scgi;\n  default_type text/plain;\n\
             server {{\n    listen {PORT};\n    root {};\n    add_header X-Backend b{n} always;\n\
             location = /big {{ }}\n    location / {{ return 200 \"b{n}\"; }}\n  }}\n}}\n",
            www.display()
        );
        fs::write(dir.join("nginx.conf"), conf).unwrap();
        let nginx = Nginx { ns, dir };
        nginx.run();
        nginx
    }

    /// Starts nginx (it daemonizes) and waits, bounded, until it accepts.
    fn run(&self) {
        let conf = self.dir.join("nginx.conf");
        let log = self.dir.join("error.log");
        self.ns
            .exec(
                "nginx",
                &[
                    "-q",
                    "-c",
                    conf.to_str().unwrap(),
                    "-e",
                    log.to_str().unwrap(),
                ],
            )
            .unwrap_or_else(|e| panic!("nginx in {}: {e}", self.ns.name()));
        let local = SocketAddr::from(([127, 0, 0, 1], PORT));
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .ns
            .enter(|| TcpStream::connect_timeout(&local, Duration::from_millis(200)))
            .unwrap()
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nginx in {} did not accept within 5 s: {}",
                self.ns.name(),
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its master's pid, while it runs.
    fn pid(&self) -> Option<String> {
        let pid = fs::read_to_string(self.dir.join("nginx.pid")).ok()?;
        let pid = pid.trim().to_owned();
        let alive = std::process::Command::new("kill")
            .args(["-0", &pid])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        alive.then_some(pid)
    }

    /// Stops it with SIGTERM (nginx's fast shutdown: the master closes its
    /// listener and ends its worker) and waits, bounded, for it to be gone;
    /// SIGKILL after 5 s.
    fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.pid().is_some() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
    }
}

impl Drop for Nginx<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Backend `b` of `real`'s health state and whether it has a check result.
fn state(client: &mut ControlClient, b: u8) -> (String, bool) {
    let Reply::Backends(list) = client
        .call(Request::BackendList(ServiceName {
            service: "real".into(),
        }))
        .unwrap()
    else {
        panic!("not a backend list");
    };
    let address = std::net::IpAddr::from(backend_v4(b));
    let view = list
        .backends
        .iter()
        .find(|v| v.address == address && v.port == PORT)
        .unwrap();
    let health = view.health.clone().unwrap();
    (health.state, health.last_check.is_some())
}

/// The new connections the daemon has given backend `b` of `real`.
fn new_flows(client: &mut ControlClient, b: u8) -> u64 {
    let Reply::Stats(stats) = client.call(Request::Stats {}).unwrap() else {
        panic!("not stats");
    };
    let address = std::net::IpAddr::from(backend_v4(b));
    stats
        .services
        .iter()
        .find(|s| s.name == "real")
        .and_then(|s| {
            s.backends
                .iter()
                .find(|v| v.address == address && v.port == PORT)
        })
        .map(|v| v.new_flows)
        .expect("real's backend in the stats")
}

/// Which mode this run forwards in, as the daemon says at start.
fn print_fast_path_mode(gateway: &netns::Gateway) {
    let log = gateway.log();
    let mode = log.lines().find(|l| l.contains("kernel fast path"));
    println!(
        "{}",
        mode.unwrap_or("no word on the kernel fast path in the log")
    );
}

/// Polls `done` every 10 ms until it holds or `limit` passes; when it held.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if done() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// One request's outcome: when it started, and the backend that answered.
type Outcome = (Instant, Result<String, String>);

/// A download of `/big` from a backend other than b2 (new connections
/// until one lands elsewhere, at most 30): reports the backend on
/// `started`, then reads slowly (16 KiB every 10 ms) until `fast` is set,
/// then at full speed. Returns the backend, the bytes that differed from
/// the file (or an error) and whether `fast` was set before the end.
fn slow_download(
    started: mpsc::Sender<String>,
    fast: &AtomicBool,
) -> Result<(String, usize, bool), String> {
    let vip = SocketAddr::from((VIP, 80));
    for _ in 0..30 {
        let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: real\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 4096 || stream.read(&mut byte).map_err(|e| e.to_string())? == 0 {
                return Err(format!("no head: {:?}", String::from_utf8_lossy(&head)));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let backend = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Backend: "))
            .ok_or_else(|| format!("no X-Backend in {head:?}"))?
            .to_owned();
        if !head.starts_with("HTTP/1.1 200") || !head.contains(&format!("Content-Length: {BIG}")) {
            return Err(format!("unexpected head {head:?}"));
        }
        if backend == "b2" {
            continue;
        }
        started.send(backend.clone()).unwrap();
        let mut got = 0usize;
        let mut differing = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut fast_before_end = false;
        while got < BIG {
            if Instant::now() > deadline {
                return Err(format!("download not done in 60 s: {got} of {BIG} bytes"));
            }
            let fast_now = fast.load(Ordering::Relaxed);
            fast_before_end |= fast_now;
            let want = if fast_now { buf.len() } else { 16 << 10 };
            let n = match stream.read(&mut buf[..want]) {
                Ok(0) => return Err(format!("closed after {got} of {BIG} bytes")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read after {got} of {BIG} bytes: {e}")),
            };
            differing += buf[..n]
                .iter()
                .enumerate()
                .filter(|(k, b)| **b != big_byte(got + k))
                .count();
            got += n;
            if !fast_now {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let mut rest = [0u8; 16];
        if stream.read(&mut rest).map_err(|e| e.to_string())? != 0 {
            return Err("more bytes than the file".into());
        }
        return Ok((backend, differing, fast_before_end));
    }
    Err("30 connections in a row landed on b2".into())
}

/// The large file in the scratch directory and an nginx on each backend.
fn start_servers(topo: &Topology) -> Vec<Nginx<'_>> {
    let www = topo.scratch.path("www");
    fs::create_dir_all(&www).unwrap();
    let file: Vec<u8> = (0..BIG).map(big_byte).collect();
    fs::write(www.join("big"), &file).unwrap();
    (1..=3u8)
        .map(|n| {
            let dir = topo.scratch.path(&format!("nginx-b{n}"));
            Nginx::start(&topo.backends[usize::from(n - 1)], n, dir, &www)
        })
        .collect()
}

/// Waits (bounded) until every backend of `real` has been checked up.
fn wait_checked_up(client: &mut ControlClient) {
    for b in 1..=3 {
        let checked = within(Duration::from_secs(5), || {
            state(client, b) == ("up".to_owned(), true)
        });
        assert!(
            checked.is_some(),
            "b{b} not checked up: {:?}",
            state(client, b)
        );
    }
}

#[test]
fn a_killed_nginx_is_ejected_and_readmitted_and_a_long_download_elsewhere_is_untouched() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let servers = start_servers(&topo);
    let mut gateway = topo.start_gateway(&config(&topo));
    let socket = topo.scratch.path("control.sock");
    let mut client = ControlClient::connect(&socket).unwrap();
    print_fast_path_mode(&gateway);
    wait_checked_up(&mut client);

    let vip = SocketAddr::from((VIP, 80));
    let stop = AtomicBool::new(false);
    let fast = AtomicBool::new(false);
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let (started_tx, started_rx) = mpsc::channel();
    let (times, flows, download) = std::thread::scope(|scope| {
        let download = scope.spawn(|| {
            let result = topo
                .client
                .enter(|| slow_download(started_tx, &fast))
                .unwrap();
            // Whatever happened, the main thread is not left waiting.
            fast.store(true, Ordering::Relaxed);
            result
        });
        scope.spawn(|| {
            topo.client
                .enter(|| {
                    let end = Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let started = Instant::now();
                        let got = http_get(vip, Duration::from_millis(500)).map(|(b, _)| b);
                        outcomes.lock().unwrap().push((started, got));
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
                .unwrap();
        });
        let on = started_rx.recv_timeout(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        let before = new_flows(&mut client, 2);
        let killed = Instant::now();
        servers[1].stop();
        let stopped = Instant::now();
        let eject_limit = Duration::from_millis(FALL * INTERVAL_MS + 1000);
        let ejected = within(eject_limit, || state(&mut client, 2).0 == "down");
        let at_ejection = new_flows(&mut client, 2);
        std::thread::sleep(Duration::from_millis(1000));
        let at_restart = new_flows(&mut client, 2);
        let restored = Instant::now();
        servers[1].run();
        let readmit_limit = Duration::from_millis(RISE * INTERVAL_MS + 1000);
        let readmitted = within(readmit_limit, || state(&mut client, 2).0 == "up");
        fast.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        let after = new_flows(&mut client, 2);
        (
            (on, killed, stopped, ejected, restored, readmitted),
            (before, at_ejection, at_restart, after),
            download.join().unwrap(),
        )
    });
    gateway.assert_running();
    let (on, killed, stopped, ejected, restored, readmitted) = times;
    let (before, at_ejection, at_restart, after) = flows;
    let on = on.expect("the download did not start within 10 s");
    let ejected = ejected.expect("b2 not ejected within fall × interval + 1 s");
    let readmitted = readmitted.expect("b2 not readmitted within rise × interval + 1 s");
    println!(
        "nginx of b2 stopped in {:?}; ejected {:?} after the kill, readmitted {:?} after the \
         restart; the daemon gave b2 {} new connections between the kill and the ejection, {} \
         while it was down, {} after its readmission",
        stopped - killed,
        ejected - killed,
        readmitted - restored,
        at_ejection - before,
        at_restart - at_ejection,
        after - at_restart
    );
    assert_eq!(
        at_restart, at_ejection,
        "the daemon gave b2 new connections while it was down"
    );
    assert!(
        after > at_restart,
        "b2 got no new connection after its readmission"
    );

    let outcomes = outcomes.into_inner().unwrap();
    let failed = check_outcomes(&outcomes, killed, ejected, readmitted);
    assert!(
        failed as u64 <= at_ejection - before,
        "{failed} requests failed, more than the {} new connections given to b2 between its \
         kill and its ejection",
        at_ejection - before
    );

    check_download(&on, download);
    gateway.assert_running();
    gateway.stop();
    drop(servers);
}

/// The download came from a backend other than b2, byte-identical, and
/// ran past b2's readmission.
fn check_download(on: &str, download: Result<(String, usize, bool), String>) {
    let (backend, differing, fast_before_end) =
        download.unwrap_or_else(|e| panic!("the download on {on} failed: {e}"));
    println!(
        "the {BIG}-byte download from {backend} ran across the event, {differing} bytes differed"
    );
    assert_ne!(backend, "b2");
    assert_eq!(
        differing, 0,
        "the download from {backend} was not byte-identical"
    );
    assert!(
        fast_before_end,
        "the download ended before b2's readmission, so it did not span the event"
    );
}

/// No request b2 answered started while it was down, only requests of
/// the window between its death and its ejection failed, and it serves
/// again after its readmission. Returns how many failed.
fn check_outcomes(
    outcomes: &[Outcome],
    killed: Instant,
    ejected: Instant,
    readmitted: Instant,
) -> usize {
    let mut failed = 0;
    for (started, got) in outcomes {
        match got {
            Ok(b) if b == "b2" => assert!(
                *started < ejected || *started > readmitted,
                "a new connection reached b2 while it was down"
            ),
            Ok(_) => {}
            Err(e) => {
                // A request in flight to b2 when it died fails too.
                assert!(
                    *started + Duration::from_millis(600) >= killed && *started < ejected,
                    "a request failed outside the window of b2's death: {e}"
                );
                failed += 1;
            }
        }
    }
    let after: Vec<&Outcome> = outcomes.iter().filter(|(s, _)| *s > readmitted).collect();
    assert!(
        after.iter().any(|(_, got)| got.as_deref() == Ok("b2")),
        "b2 answered no request after its readmission ({} requests)",
        after.len()
    );
    println!(
        "{} requests, {failed} failed between the kill and the ejection",
        outcomes.len()
    );
    failed
}
