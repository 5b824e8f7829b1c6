//! Backend health on the real daemon with real servers: the service
//! `real` (198.18.100.12:80, Maglev) balances over an nginx on :8090 of
//! each of the demo's three backends, each checked by tcp every 200 ms.
//! While a client makes requests in a loop and a slow reader downloads a
//! large file from a healthy backend, b2's nginx is stopped and started
//! again. The daemon's own per-backend counters bound the failures, no new
//! connection reaches b2 while it is down, and the download is
//! byte-identical. The same holds for UDP: the service `names`
//! (198.18.100.16:53, Maglev, udp checks every 200 ms) over the demo's
//! `udp-name-server.py` on each backend, while one query after another
//! comes from a new socket and one long-lived flow on b2 keeps asking;
//! that flow moves to a live backend once b2 is ejected. Run as root;
//! FLOWGATE_SKIP_NETNS=1 skips elsewhere.
//!
//! The topology's veth peers have GRO off, so by default the kernel fast
//! path is off and the worker forwards every packet;
//! FLOWGATE_NETNS_PEER_GRO=1 runs it with the fast path on (a watched
//! backend's connections are then still the worker's). The test prints
//! the daemon's word on which mode it ran in.

mod health_support;
mod netns;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use flowgate_api::{ControlClient, Reply, Request};
use flowgate_dataplane::testnet::{ChildGuard, NetNs};
use health_support::{print_fast_path_mode, state, within};
use netns::{backend_v4, http_get, one_gateway_at_a_time, privileged, udp_query, Topology};

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

/// Backend `b` (on `port`) of `service`: its health state and whether it
/// has a check result.
/// Whether backend b2 (on `port`) of `service` is in health state `want`.
fn b2_is(client: &mut ControlClient, service: &str, port: u16, want: &str) -> bool {
    state(client, service, 2, port).0 == want
}

/// The new flows (connections) the daemon has given backend `b` (on
/// `port`) of `service`.
fn new_flows(client: &mut ControlClient, service: &str, b: u8, port: u16) -> u64 {
    let Reply::Stats(stats) = client.call(Request::Stats {}).unwrap() else {
        panic!("not stats");
    };
    let address = std::net::IpAddr::from(backend_v4(b));
    stats
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| {
            s.backends
                .iter()
                .find(|v| v.address == address && v.port == port)
        })
        .map(|v| v.new_flows)
        .unwrap_or_else(|| panic!("{service}'s backend b{b} in the stats"))
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

/// Waits (bounded) until every backend of `service` (on `port`) has been
/// checked up.
fn wait_checked_up(client: &mut ControlClient, service: &str, port: u16) {
    for b in 1..=3 {
        let checked = within(Duration::from_secs(5), || {
            state(client, service, b, port) == ("up".to_owned(), true)
        });
        assert!(
            checked.is_some(),
            "b{b} of {service} not checked up: {:?}",
            state(client, service, b, port)
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
    wait_checked_up(&mut client, "real", PORT);

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
        let before = new_flows(&mut client, "real", 2, PORT);
        let killed = Instant::now();
        servers[1].stop();
        let stopped = Instant::now();
        let eject_limit = Duration::from_millis(FALL * INTERVAL_MS + 1000);
        let ejected = within(eject_limit, || b2_is(&mut client, "real", PORT, "down"));
        let at_ejection = new_flows(&mut client, "real", 2, PORT);
        std::thread::sleep(Duration::from_millis(1000));
        let at_restart = new_flows(&mut client, "real", 2, PORT);
        let restored = Instant::now();
        servers[1].run();
        let readmit_limit = Duration::from_millis(RISE * INTERVAL_MS + 1000);
        let readmitted = within(readmit_limit, || b2_is(&mut client, "real", PORT, "up"));
        fast.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        let after = new_flows(&mut client, "real", 2, PORT);
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
    let failed = check_outcomes(&outcomes, killed, (ejected, restored), readmitted);
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

/// No request b2 answered started while it was down (from its ejection
/// to its nginx's restart: the readmission the test observes comes up to
/// a poll later than the daemon's, so it cannot bound this), only
/// requests of the window between its death and its ejection failed, and
/// it serves again after its readmission. Returns how many failed.
fn check_outcomes(
    outcomes: &[Outcome],
    killed: Instant,
    (ejected, restarted): (Instant, Instant),
    readmitted: Instant,
) -> usize {
    let mut failed = 0;
    for (started, got) in outcomes {
        match got {
            Ok(b) if b == "b2" => assert!(
                *started < ejected || *started > restarted,
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

/// The UDP service `names` (198.18.100.16:53, Maglev) over the demo's UDP
/// service, `udp-name-server.py`, on this port of each backend (not the
/// topology's own 5353).
const UDP_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 16);
const UDP_PORT: u16 = 5399;
/// How long a query waits for its answer.
const QUERY_WAIT: Duration = Duration::from_millis(300);

/// The demo's rules, checks off for them, and the service `names` checked
/// by udp: a payload, and a reply that must start with "b" (each server
/// answers its name, "b1\n" ...).
fn udp_config(topo: &Topology) -> String {
    let mut text = format!(
        "{}\n[health]\nkind = \"none\"\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"100ms\"\n\
         rise = {RISE}\nfall = {FALL}\n\n[[services]]\nname = \"names\"\nprotocol = \"udp\"\n\
         vip = \"{UDP_VIP}\"\nport = 53\nscheduler = \"maglev\"\n\n[services.health]\n\
         kind = \"udp\"\npayload = \"health?\"\nexpect = \"b\"\n",
        topo.config(&[0])
    );
    for b in 1..=3 {
        text.push_str(&format!(
            "\n[[services.backends]]\naddress = \"{}\"\nport = {UDP_PORT}\n",
            backend_v4(b)
        ));
    }
    text
}

/// Backend `n`'s `udp-name-server.py`, as the demo runs it; killed on drop
/// (also when a test fails), so no server outlives its namespace.
struct UdpNameServer<'a> {
    ns: &'a NetNs,
    n: u8,
    process: Option<ChildGuard>,
}

impl<'a> UdpNameServer<'a> {
    fn start(ns: &'a NetNs, n: u8) -> UdpNameServer<'a> {
        let mut server = UdpNameServer {
            ns,
            n,
            process: None,
        };
        server.run();
        server
    }

    /// Starts the server and waits, bounded, until it answers its name.
    fn run(&mut self) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/lib/udp-name-server.py"
        );
        // The demo's choice: Debian's Python, else whatever is on PATH.
        let python = if std::path::Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let name = format!("b{}", self.n);
        self.process = Some(
            self.ns
                .spawn(python, &[script, &name, &UDP_PORT.to_string()])
                .unwrap_or_else(|e| panic!("udp-name-server.py in {}: {e}", self.ns.name())),
        );
        let answered = within(Duration::from_secs(5), || {
            udp_query(self.ns, self.local(), Duration::from_millis(100))
                .is_ok_and(|(got, _)| got == format!("{name}\n"))
        });
        assert!(
            answered.is_some(),
            "udp-name-server.py in {} did not answer within 5 s",
            self.ns.name()
        );
    }

    fn local(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], UDP_PORT))
    }

    /// Ends it with SIGTERM and waits, bounded, until it has exited and
    /// nothing answers on its port any more (the guard SIGKILLs it after
    /// 5 s).
    fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        if let Some(child) = process.child() {
            // `ip netns exec` execs the program: this is Python's pid.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = within(Duration::from_secs(5), || {
                child.try_wait().is_ok_and(|s| s.is_some())
            });
        }
        drop(process);
        assert!(
            udp_query(self.ns, self.local(), Duration::from_millis(100)).is_err(),
            "b{}'s server still answers after it was stopped",
            self.n
        );
    }
}

impl Drop for UdpNameServer<'_> {
    fn drop(&mut self) {
        // A guard that drops kills and reaps its process.
        self.process.take();
    }
}

/// A query's outcome: when it was sent, and the name that answered (from
/// the VIP) or why none did.
type Query = (Instant, Result<String, String>);

/// A socket in the client namespace whose flow Maglev gives to b2 (new
/// sockets until one is answered by b2, at most 60).
fn flow_on_b2(client: &NetNs) -> UdpSocket {
    for _ in 0..60 {
        let socket = client
            .enter(|| UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        socket.set_read_timeout(Some(QUERY_WAIT)).unwrap();
        if ask(&socket).as_deref() == Ok("b2") {
            return socket;
        }
    }
    panic!("60 flows in a row did not land on b2");
}

/// One query on `socket` (whose earlier, late answers are dropped first).
fn ask(socket: &UdpSocket) -> Result<String, String> {
    let mut buf = [0u8; 256];
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    while socket.recv_from(&mut buf).is_ok() {}
    socket.set_nonblocking(false).map_err(|e| e.to_string())?;
    let vip = SocketAddr::from((UDP_VIP, 53));
    socket
        .send_to(b"who are you?", vip)
        .map_err(|e| format!("send: {e}"))?;
    let (n, from) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
    if from != vip {
        return Err(format!("answered from {from}, not the VIP"));
    }
    Ok(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned())
}

/// What happened around b2's death, as the main thread saw it.
struct Event {
    killed: Instant,
    ejected: Instant,
    restored: Instant,
    readmitted: Instant,
    /// b2's new flows before the kill, at ejection, at restart, at the end.
    flows: [u64; 4],
}

#[test]
fn a_killed_udp_name_server_is_ejected_its_long_flow_moves_and_it_is_readmitted() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut servers: Vec<UdpNameServer> = (1..=3u8)
        .map(|n| UdpNameServer::start(&topo.backends[usize::from(n - 1)], n))
        .collect();
    let mut gateway = topo.start_gateway(&udp_config(&topo));
    let mut client = ControlClient::connect(&topo.scratch.path("control.sock")).unwrap();
    print_fast_path_mode(&gateway);
    wait_checked_up(&mut client, "names", UDP_PORT);
    let long_flow = flow_on_b2(&topo.client);

    let stop = AtomicBool::new(false);
    let (short, long, event) = std::thread::scope(|scope| {
        // New flows: each query from a new socket.
        let short = scope.spawn(|| {
            let mut queries: Vec<Query> = Vec::new();
            let mut earlier = std::collections::HashMap::new();
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let socket = topo
                    .client
                    .enter(|| UdpSocket::bind("0.0.0.0:0"))
                    .unwrap()
                    .unwrap();
                socket.set_read_timeout(Some(QUERY_WAIT)).unwrap();
                let port = socket.local_addr().unwrap().port();
                let sent = Instant::now();
                let got = ask(&socket).map_err(|e| {
                    format!(
                        "from port {port} (earlier on it: {:?}): {e}",
                        earlier.get(&port)
                    )
                });
                earlier
                    .entry(port)
                    .or_insert_with(Vec::new)
                    .push(got.clone());
                queries.push((sent, got));
                std::thread::sleep(Duration::from_millis(5));
            }
            queries
        });
        // The long-lived flow, on b2 when it dies.
        let long = scope.spawn(|| {
            let mut queries: Vec<Query> = Vec::new();
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                queries.push((Instant::now(), ask(&long_flow)));
                std::thread::sleep(Duration::from_millis(20));
            }
            queries
        });
        std::thread::sleep(Duration::from_millis(500));
        let event = kill_and_restart_b2(&mut client, &mut servers[1]);
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        let mut event = event;
        event.flows[3] = new_flows(&mut client, "names", 2, UDP_PORT);
        (short.join().unwrap(), long.join().unwrap(), event)
    });
    gateway.assert_running();
    check_udp_event(&short, &long, &event);
    gateway.stop();
    drop(servers);
}

/// Stops b2's server, waits for its ejection, lets it stay down 1 s,
/// starts it again and waits for its readmission.
fn kill_and_restart_b2(client: &mut ControlClient, b2: &mut UdpNameServer) -> Event {
    let before = new_flows(client, "names", 2, UDP_PORT);
    let killed = Instant::now();
    b2.stop();
    let stopped = killed.elapsed();
    let eject_limit = Duration::from_millis(FALL * INTERVAL_MS + 1000);
    let ejected = within(eject_limit, || b2_is(client, "names", UDP_PORT, "down"))
        .expect("b2 not ejected within fall × interval + 1 s");
    let at_ejection = new_flows(client, "names", 2, UDP_PORT);
    std::thread::sleep(Duration::from_millis(1000));
    let at_restart = new_flows(client, "names", 2, UDP_PORT);
    let restored = Instant::now();
    b2.run();
    let readmit_limit = Duration::from_millis(RISE * INTERVAL_MS + 1000);
    let readmitted = within(readmit_limit, || b2_is(client, "names", UDP_PORT, "up"))
        .expect("b2 not readmitted within rise × interval + 1 s");
    println!(
        "b2's udp-name-server.py stopped in {stopped:?}; ejected {:?} after the kill, readmitted \
         {:?} after the restart",
        ejected - killed,
        readmitted - restored
    );
    Event {
        killed,
        ejected,
        restored,
        readmitted,
        flows: [before, at_ejection, at_restart, 0],
    }
}

/// b2 got no new flow and answered no query while down; only queries in
/// flight between its death and its ejection failed, no more than the new
/// flows it was given then plus the long-lived flow's queries then; the
/// long-lived flow was moved to a live backend and answered there; b2
/// serves new flows again after its readmission.
fn check_udp_event(short: &[Query], long: &[Query], event: &Event) {
    let [before, at_ejection, at_restart, after] = event.flows;
    let in_window = |sent: Instant| sent + QUERY_WAIT >= event.killed && sent < event.ejected;
    // While b2 was down: from its ejection until its readmission, less the
    // 50 ms by which polling the state every 10 ms may see that late.
    let down = |sent: Instant| {
        sent >= event.ejected && sent + Duration::from_millis(50) < event.readmitted
    };
    let mut failed = [0usize; 2];
    let flows = [("a new-flow", short), ("the long-lived flow's", long)];
    for ((which, queries), failed) in flows.into_iter().zip(failed.iter_mut()) {
        for (sent, got) in queries {
            match got {
                Ok(name) => {
                    assert!(
                        ["b1", "b2", "b3"].contains(&name.as_str()),
                        "answer {name:?}"
                    );
                    assert!(
                        !(name == "b2" && down(*sent)),
                        "b2 answered {which} query sent while it was down: {:?} after its \
                         ejection, {:?} before its readmission",
                        *sent - event.ejected,
                        event.readmitted - *sent
                    );
                }
                Err(e) => {
                    assert!(
                        in_window(*sent),
                        "{which} query failed outside the window of b2's death: {e}; sent \
                         {:?} after the kill (ejection {:?}, restart {:?}, readmission {:?})",
                        sent.saturating_duration_since(event.killed),
                        event.ejected - event.killed,
                        event.restored - event.killed,
                        event.readmitted - event.killed
                    );
                    *failed += 1;
                }
            }
        }
    }
    // The long-lived flow's queries sent between the kill and the ejection.
    let long_in_window = long
        .iter()
        .filter(|(sent, _)| *sent >= event.killed && *sent < event.ejected)
        .count();
    let moved: Vec<&str> = long
        .iter()
        .filter(|(sent, _)| *sent >= event.ejected && *sent < event.restored)
        .filter_map(|(_, got)| got.as_deref().ok())
        .collect();
    println!(
        "{} new-flow queries, {} failed; the long-lived flow: {} queries, {} failed, {} in the \
         window; the daemon gave b2 {} new flows between the kill and the ejection, {} while it \
         was down, {} after its readmission; the long-lived flow answered {} times \
         while b2 was down, from {:?}",
        short.len(),
        failed[0],
        long.len(),
        failed[1],
        long_in_window,
        at_ejection - before,
        at_restart - at_ejection,
        after - at_restart,
        moved.len(),
        moved.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        long.iter()
            .filter(|(sent, _)| *sent + QUERY_WAIT < event.killed)
            .all(|(_, got)| got.as_deref() == Ok("b2")),
        "the long-lived flow was not on b2 before the kill"
    );
    assert_eq!(
        at_restart, at_ejection,
        "the daemon gave b2 new flows while it was down"
    );
    assert!(
        failed[0] + failed[1] <= (at_ejection - before) as usize + long_in_window,
        "{failed:?} queries failed, more than b2's {} new flows between its kill and its \
         ejection plus the long-lived flow's {long_in_window} queries then",
        at_ejection - before
    );
    assert!(
        !moved.is_empty(),
        "the long-lived flow was not answered while b2 was down"
    );
    assert!(
        after > at_restart,
        "b2 got no new flow after its readmission"
    );
    assert!(
        short
            .iter()
            .any(|(sent, got)| *sent > event.readmitted && got.as_deref() == Ok("b2")),
        "b2 answered no new flow after its readmission"
    );
}
