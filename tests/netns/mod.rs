//! The demo's topology in network namespaces, for tests that run the real
//! `flowgate` binary over AF_XDP: a client, the gateway box (interfaces
//! `fg-client` and `fg-backend`, IP forwarding off), a bridged backend
//! segment, and three backends whose HTTP and UDP services run on threads
//! of the test process and record every connection they serve.
//!
//! The gateway's veths cannot take the frames an XDP program sends out of
//! them (their peers have GRO off), so the kernel fast path is off and
//! the workers forward everything; FLOWGATE_NETNS_PEER_GRO=1 turns GRO on
//! at the peers, and every test then runs with the fast path forwarding
//! established packets (tests/fast_path_netns.rs tests both on purpose).
//!
//! Addresses and MACs are those of configs/demo.toml. Every namespace is
//! deleted when the topology drops (also when a test fails), the servers'
//! threads stop and are joined, and a running flowgate is killed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::{self, NetNs};

/// The client's addresses.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The client's IPv6 address.
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// The gateway's own address on the client side.
pub const GW_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The gateway's own IPv6 address on the client side.
pub const GW_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// The VIP of `web` (tcp/80, maglev 1:1:2) and `dns` (udp/53, maglev 1:1).
pub const WEB_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// The VIP of `web-wrr` (tcp/80, wrr 1:2:3).
pub const WRR_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 11);
/// The VIP of `web6` (tcp/80, maglev 1:1).
pub const WEB6_VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x100, 0, 0, 0, 0x10);

const GW_CLIENT_MAC: &str = "02:66:67:00:00:01";
const GW_BACKEND_MAC: &str = "02:66:67:00:01:01";
const CLIENT_MAC: &str = "02:66:67:00:00:02";

/// Backend `n` (1..=3): its name, addresses and MAC.
pub fn backend_v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + n)
}
/// Backend `n`'s IPv6 address (backends 1 and 2 only).
pub fn backend_v6(n: u8) -> Option<Ipv6Addr> {
    (n <= 2).then(|| Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x10 + u16::from(n)))
}
fn backend_mac(n: u8) -> String {
    format!("02:66:67:00:01:1{n}")
}

/// Whether namespace tests can run here; panics with the reason unless
/// FLOWGATE_SKIP_NETNS is set, in which case it says "skipped".
pub fn privileged() -> bool {
    testnet::privileged()
}

/// One gateway at a time in this test binary: each one's worker polls a
/// core of a 2-core machine, and the timings of the tests assume they have
/// the machine to themselves. Names are unique, so this is about time only.
pub fn one_gateway_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scratch directory, world-readable, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fgt-gw-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Which protocol a backend served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// A TCP connection (one HTTP request).
    Tcp,
    /// A UDP datagram.
    Udp,
}

/// One connection or datagram a backend served.
#[derive(Clone, Debug, PartialEq)]
pub struct Served {
    /// Backend number, 1..=3.
    pub backend: u8,
    /// The protocol and local port it arrived on.
    pub proto: Proto,
    /// Local port.
    pub port: u16,
    /// Who the backend saw as the peer.
    pub peer: SocketAddr,
}

/// The backends' servers: HTTP on :8080 and :8081 and UDP on :5353 (IPv4
/// and IPv6), each answering with the backend's name ("b1", "b2", "b3").
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    served: Arc<Mutex<Vec<Served>>>,
}

impl Servers {
    fn start(backends: &[NetNs]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (i, ns) in backends.iter().enumerate() {
            let n = i as u8 + 1;
            for port in [8080u16, 8081] {
                // "[::]" takes IPv4 too (as mapped addresses), on every
                // backend; only backends 1 and 2 have an IPv6 address.
                let listener = ns
                    .enter(move || TcpListener::bind(("::", port)))
                    .unwrap()
                    .unwrap();
                listener.set_nonblocking(true).unwrap();
                let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
                threads.push(std::thread::spawn(move || {
                    serve_http(n, port, listener, &stop, &served)
                }));
            }
            let socket = ns.enter(|| UdpSocket::bind(("::", 5353))).unwrap().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            threads.push(std::thread::spawn(move || {
                serve_udp(n, socket, &stop, &served)
            }));
        }
        Servers {
            stop,
            threads,
            served,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// Serves one request per connection, one connection at a time (the
/// clients are few); every read and write is bounded by a timeout.
fn serve_http(
    n: u8,
    port: u16,
    listener: TcpListener,
    stop: &AtomicBool,
    served: &Mutex<Vec<Served>>,
) {
    let body = format!("b{n}");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    while !stop.load(Ordering::Relaxed) {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(_) => continue,
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        if read_request(&mut stream).is_ok() {
            let record = Served {
                backend: n,
                proto: Proto::Tcp,
                port,
                peer: canonical(peer),
            };
            record_and_answer(served, record, || stream.write_all(response.as_bytes()));
        }
    }
}

/// Reads an HTTP request head (bounded to 4 KiB).
fn read_request(stream: &mut TcpStream) -> io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let got = stream.read(&mut buf)?;
        if got == 0 || head.len() > 4096 {
            return Err(io::Error::other("incomplete request"));
        }
        head.extend_from_slice(&buf[..got]);
    }
    Ok(())
}

fn serve_udp(n: u8, socket: UdpSocket, stop: &AtomicBool, served: &Mutex<Vec<Served>>) {
    let answer = format!("b{n}");
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let record = Served {
                backend: n,
                proto: Proto::Udp,
                port: 5353,
                peer: canonical(peer),
            };
            record_and_answer(served, record, || {
                socket.send_to(answer.as_bytes(), peer).map(drop)
            });
        }
    }
}

/// Records `record` and then answers: a client can have its answer
/// before the server's thread runs again (with the kernel fast path the
/// answer crosses the gateway inside the server's own send), so the
/// record must be there first. An answer that could not be sent takes
/// its record back.
fn record_and_answer(
    served: &Mutex<Vec<Served>>,
    record: Served,
    answer: impl FnOnce() -> io::Result<()>,
) {
    served.lock().unwrap().push(record.clone());
    if answer().is_err() {
        let mut served = served.lock().unwrap();
        if let Some(i) = served.iter().rposition(|s| *s == record) {
            served.remove(i);
        }
    }
}

/// The topology: client ══ gateway ══ bridge ─ backends 1, 2, 3.
pub struct Topology {
    /// The client (198.18.0.2, 2001:2::2).
    pub client: NetNs,
    /// The gateway box, where flowgate runs.
    pub gateway: NetNs,
    /// The backends, b1..b3.
    pub backends: Vec<NetNs>,
    servers: Servers,
    lan: NetNs,
    /// Scratch space: configs, logs, the control socket.
    pub scratch: Scratch,
}

impl Topology {
    /// Builds the topology with `queues` queues on the gateway's two veth
    /// links, starts the backends' servers and checks every link.
    pub fn new(queues: u32) -> Topology {
        let make = || {
            let ns = NetNs::new("fgg").unwrap();
            // Links we build ourselves need no duplicate-address detection:
            // addresses, link-local ones too, are usable at once.
            ns.exec(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )
            .unwrap();
            ns
        };
        let client = make();
        let gateway = make();
        let lan = make();
        let backends: Vec<NetNs> = (0..3).map(|_| make()).collect();

        // The kernel of the gateway box forwards nothing: flowgate does.
        gateway
            .exec(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv4.ip_forward=0",
                    "net.ipv6.conf.all.forwarding=0",
                ],
            )
            .unwrap();

        testnet::veth_pair(&gateway, "fg-client", &client, "eth0", queues).unwrap();
        set_mac(&gateway, "fg-client", GW_CLIENT_MAC);
        set_mac(&client, "eth0", CLIENT_MAC);
        addr(&gateway, "198.18.0.1/24", "fg-client");
        addr(&gateway, "2001:2::1/64", "fg-client");
        addr(&client, "198.18.0.2/24", "eth0");
        addr(&client, "2001:2::2/64", "eth0");
        no_offload(&client, "eth0");
        client
            .ip(&["route", "add", "198.18.100.0/24", "via", "198.18.0.1"])
            .unwrap();
        client
            .ip(&[
                "-6",
                "route",
                "add",
                "2001:2:0:100::/64",
                "via",
                "2001:2::1",
            ])
            .unwrap();

        // No multicast snooping: with no querier it can starve neighbour
        // discovery.
        lan.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])
        .unwrap();
        lan.ip(&["link", "set", "br0", "up"]).unwrap();
        testnet::veth_pair(&gateway, "fg-backend", &lan, "gw", queues).unwrap();
        set_mac(&gateway, "fg-backend", GW_BACKEND_MAC);
        lan.ip(&["link", "set", "gw", "master", "br0"]).unwrap();
        addr(&gateway, "198.18.1.1/24", "fg-backend");
        addr(&gateway, "2001:2:0:1::1/64", "fg-backend");

        for (i, b) in backends.iter().enumerate() {
            let n = i as u8 + 1;
            let port = format!("b{n}");
            testnet::veth_pair(&lan, &port, b, "eth0", 1).unwrap();
            lan.ip(&["link", "set", &port, "master", "br0"]).unwrap();
            set_mac(b, "eth0", &backend_mac(n));
            addr(b, &format!("{}/24", backend_v4(n)), "eth0");
            b.ip(&["route", "add", "default", "via", "198.18.1.1"])
                .unwrap();
            if let Some(v6) = backend_v6(n) {
                addr(b, &format!("{v6}/64"), "eth0");
                b.ip(&["-6", "route", "add", "default", "via", "2001:2:0:1::1"])
                    .unwrap();
            }
            no_offload(b, "eth0");
        }

        let servers = Servers::start(&backends);
        let topo = Topology {
            client,
            gateway,
            backends,
            servers,
            lan,
            scratch: Scratch::new(),
        };
        topo.warm_up();
        if std::env::var_os("FLOWGATE_NETNS_PEER_GRO").is_some() {
            topo.set_peer_gro(true, true);
        }
        topo
    }

    /// One ping over every link that matters, both ways; this also fills
    /// the kernels' neighbour tables so that a lost first neighbour
    /// solicitation does not cost the first request a second.
    fn warm_up(&self) {
        let mut pairs: Vec<(&NetNs, String)> = vec![
            (&self.client, GW_CLIENT_V4.to_string()),
            (&self.client, GW_CLIENT_V6.to_string()),
        ];
        for n in 1..=3u8 {
            let b = &self.backends[usize::from(n - 1)];
            pairs.push((&self.gateway, backend_v4(n).to_string()));
            pairs.push((b, "198.18.1.1".into()));
            if let Some(v6) = backend_v6(n) {
                pairs.push((&self.gateway, v6.to_string()));
                pairs.push((b, "2001:2:0:1::1".into()));
            }
        }
        for (from, to) in pairs {
            let ok = (0..3).any(|_| ping(from, &to));
            assert!(ok, "topology: {} cannot reach {to}", from.name());
        }
    }

    /// Turns GRO on or off on the peers of the gateway's two veths: the
    /// client's `eth0` (peer of `fg-client`) and the bridge port `gw`
    /// (peer of `fg-backend`). A veth takes the frames an XDP program sends
    /// out of it only while its peer has GRO on (or an XDP program of its
    /// own); the topology is built with GRO off on both.
    pub fn set_peer_gro(&self, client_side: bool, backend_side: bool) {
        let gro = |on: bool| if on { "on" } else { "off" };
        self.client
            .exec("ethtool", &["-K", "eth0", "gro", gro(client_side)])
            .unwrap();
        self.lan
            .exec("ethtool", &["-K", "gw", "gro", gro(backend_side)])
            .unwrap();
    }

    /// Everything the backends served so far.
    pub fn served(&self) -> Vec<Served> {
        self.servers.served.lock().unwrap().clone()
    }

    /// Forgets what the backends served so far.
    pub fn clear_served(&self) {
        self.servers.served.lock().unwrap().clear();
    }

    /// The demo's rules for this topology, with a `[daemon]` section: one
    /// worker per core of `cores` (each serves its own queue of both
    /// interfaces), rings sized so that two workers fit the frames, and the
    /// control socket in the scratch directory.
    pub fn config(&self, cores: &[usize]) -> String {
        let cores = cores
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let socket = self.scratch.path("control.sock");
        // The demo's own [daemon] section gives way to this one.
        let demo = without_table(include_str!("../../configs/demo.toml"), "[daemon]");
        format!(
            "[daemon]\ncores = [{cores}]\nframe_count = 16384\nrx_ring_size = 1024\n\
             tx_ring_size = 1024\nfill_ring_size = 2048\ncompletion_ring_size = 2048\n\
             control_socket = \"{}\"\n\n{demo}",
            socket.display()
        )
    }

    /// Starts flowgate in the gateway namespace with `config` and waits
    /// (bounded) until it forwards: a UDP query to `dns` is answered from
    /// the VIP. Panics with flowgate's log when it does not.
    pub fn start_gateway(&self, config: &str) -> Gateway {
        let dns = SocketAddr::new(WEB_VIP.into(), 53);
        // Without flowgate nothing answers for a VIP: the box's kernel does
        // not forward, so whatever answers later went through flowgate.
        assert!(
            udp_query(&self.client, dns, Duration::from_millis(300)).is_err(),
            "the VIP answered before flowgate started"
        );
        let path = self.scratch.path("flowgate.toml");
        fs::write(&path, config).unwrap();
        let log = self.scratch.path("flowgate.log");
        let stderr = File::create(&log).unwrap();
        let bin = testnet::workspace_binary("flowgate").unwrap();
        let child = self
            .gateway
            .command(
                bin.to_str().unwrap(),
                &["run", "--config", path.to_str().unwrap()],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut gateway = Gateway {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = gateway.exited() {
                panic!(
                    "flowgate exited ({status}) before forwarding:\n{}",
                    gateway.log()
                );
            }
            if udp_query(&self.client, dns, Duration::from_millis(250)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "flowgate did not forward within 30 s:\n{}",
                gateway.log()
            );
        }
        // Workers forward before the control socket is bound: a test that
        // talks to the control API right away waits for it too.
        let socket = self.scratch.path("control.sock");
        while config.contains(socket.to_str().unwrap_or("")) && !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "flowgate did not bind its control socket within 30 s:\n{}",
                gateway.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The probe's answer is not part of any test's count.
        self.clear_served();
        gateway
    }

    /// Frames the XDP program on the gateway's `dev` redirected to
    /// flowgate's sockets, per receive queue (the veth driver's counters).
    pub fn gateway_queue_frames(&self, dev: &str) -> BTreeMap<String, u64> {
        let out = self.gateway.exec("ethtool", &["-S", dev]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                let k = k.trim();
                (k.starts_with("rx_queue_") && k.ends_with("_xdp_redirect"))
                    .then(|| (k.to_string(), v.trim().parse().unwrap_or(0)))
            })
            .collect()
    }
}

fn set_mac(ns: &NetNs, dev: &str, mac: &str) {
    ns.ip(&["link", "set", "dev", dev, "address", mac]).unwrap();
}

fn addr(ns: &NetNs, cidr: &str, dev: &str) {
    ns.ip(&["addr", "add", cidr, "dev", dev]).unwrap();
}

/// Senders compute their own checksums and segment in software, as a real
/// host's NIC would hand over complete frames: over veth, offloads would
/// give the gateway partial checksums and 64 KiB super-frames.
fn no_offload(ns: &NetNs, dev: &str) {
    ns.exec(
        "ethtool",
        &["-K", dev, "tx", "off", "tso", "off", "gso", "off"],
    )
    .unwrap();
}

/// One ping with a 1 s wait.
pub fn ping(from: &NetNs, to: &str) -> bool {
    from.exec("ping", &["-c", "1", "-W", "1", to]).is_ok()
}

/// A running flowgate; killed on drop if still running.
pub struct Gateway {
    child: Option<Child>,
    log: PathBuf,
}

impl Gateway {
    /// flowgate's stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Whether it is still running (so nothing above crashed it).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("flowgate exited ({status}):\n{}", self.log());
        }
    }

    /// Stops it with SIGTERM and asserts it exits 0 within 10 s.
    pub fn stop(mut self) {
        self.assert_running();
        let pid = self.child.as_ref().map(Child::id).unwrap_or_default();
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                assert!(
                    status.success(),
                    "flowgate exited {status}:\n{}",
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "flowgate did not stop within 10 s of SIGTERM:\n{}",
            self.log()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one datagram from a fresh socket (a new source port, so a new
/// flow) and returns the answer and the address it came from.
pub fn udp_query(from: &NetNs, to: SocketAddr, wait: Duration) -> io::Result<(String, SocketAddr)> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = from.enter(move || UdpSocket::bind(any))??;
    socket.set_read_timeout(Some(wait))?;
    socket.send_to(b"who are you?", to)?;
    let mut buf = [0u8; 256];
    let (n, source) = socket.recv_from(&mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), source))
}

/// One HTTP/1.1 request on a new connection; the body, and the socket's
/// peer. The peer is the address connected to; that the handshake
/// completed is what shows the SYN-ACK came from it (a client's kernel
/// answers a SYN-ACK from any other address with a reset).
pub fn http_get(to: SocketAddr, timeout: Duration) -> Result<(String, SocketAddr), String> {
    let mut stream =
        TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    let host = to.ip();
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {head:?}"));
    }
    Ok((body.to_string(), peer))
}

/// What a run of requests got.
#[derive(Debug, Default)]
pub struct Load {
    /// Answers per backend name.
    pub by_backend: BTreeMap<String, usize>,
    /// Addresses the answers came from.
    pub sources: BTreeMap<SocketAddr, usize>,
    /// The first few failures, described, and how many there were.
    pub failures: Vec<String>,
    /// How many requests failed.
    pub failed: usize,
    /// Requests not even tried because the time ran out.
    pub not_tried: usize,
    /// How long it took.
    pub elapsed: Duration,
}

impl Load {
    /// Requests answered.
    pub fn answered(&self) -> usize {
        self.by_backend.values().sum()
    }

    fn record(&mut self, result: Result<(String, SocketAddr), String>) {
        match result {
            Ok((name, source)) => {
                *self.by_backend.entry(name).or_default() += 1;
                *self.sources.entry(source).or_default() += 1;
            }
            Err(e) => {
                self.failed += 1;
                if self.failures.len() < 10 {
                    self.failures.push(e);
                }
            }
        }
    }

    fn merge(&mut self, other: Load) {
        for (k, v) in other.by_backend {
            *self.by_backend.entry(k).or_default() += v;
        }
        for (k, v) in other.sources {
            *self.sources.entry(k).or_default() += v;
        }
        self.failed += other.failed;
        self.not_tried += other.not_tried;
        self.failures.extend(
            other
                .failures
                .into_iter()
                .take(10 - self.failures.len().min(10)),
        );
    }
}

/// `count` HTTP requests to `to` from the client, each on a new connection,
/// on `threads` threads; stops starting new ones after `budget`.
pub fn http_load(
    client: &NetNs,
    to: SocketAddr,
    count: usize,
    threads: usize,
    budget: Duration,
) -> Load {
    run_load(client, count, threads, budget, move || {
        http_get(to, Duration::from_secs(5))
    })
}

/// `count` UDP queries to `to` from the client, each from a new socket.
pub fn udp_load(client: &NetNs, to: SocketAddr, count: usize, budget: Duration) -> Load {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    run_load(client, count, 1, budget, move || {
        let socket = UdpSocket::bind(any).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        socket
            .send_to(b"who are you?", to)
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 256];
        let (n, source) = socket
            .recv_from(&mut buf)
            .map_err(|e| format!("no answer: {e}"))?;
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), source))
    })
}

fn run_load<F>(client: &NetNs, count: usize, threads: usize, budget: Duration, one: F) -> Load
where
    F: Fn() -> Result<(String, SocketAddr), String> + Sync + Send,
{
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let mut load = client
        .enter(|| {
            // Threads spawned here inherit the client's namespace.
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut mine = Load::default();
                            while next.fetch_add(1, Ordering::Relaxed) < count {
                                if started.elapsed() > budget {
                                    mine.not_tried += 1;
                                    continue;
                                }
                                mine.record(one());
                            }
                            mine
                        })
                    })
                    .collect();
                let mut total = Load::default();
                for w in workers {
                    total.merge(w.join().unwrap());
                }
                total
            })
        })
        .unwrap();
    load.elapsed = started.elapsed();
    load
}

/// Asserts that `got` answers spread over `weights` (backend name →
/// weight) as a weighted random choice would, within 5 standard deviations
/// of the binomial count plus 1% of the total (Maglev's table shares are
/// within a fraction of a percent of the weights): a sound run fails this
/// with probability under 1e-6 per backend, while ignoring the weights
/// (e.g. 1:1:1 for 1:1:2) misses it by far at these counts.
pub fn assert_spread(what: &str, got: &BTreeMap<String, usize>, weights: &[(&str, u32)]) {
    let n: usize = got.values().sum();
    let total_weight: u32 = weights.iter().map(|(_, w)| w).sum();
    for (name, weight) in weights {
        let p = f64::from(*weight) / f64::from(total_weight);
        let expected = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        let tolerance = 5.0 * sigma + 0.01 * n as f64;
        let count = got.get(*name).copied().unwrap_or(0) as f64;
        assert!(
            (count - expected).abs() <= tolerance,
            "{what}: {name} got {count} of {n}, expected {expected:.0} ± {tolerance:.0} \
             (weights {weights:?}); all: {got:?}"
        );
    }
    let unknown: Vec<_> = got
        .keys()
        .filter(|k| !weights.iter().any(|(name, _)| name == k))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what}: answers from outside the service: {unknown:?}"
    );
}

/// `toml` without the table whose header line is `header` (up to the next
/// table header).
fn without_table(toml: &str, header: &str) -> String {
    let mut skipping = false;
    let mut kept = String::with_capacity(toml.len());
    for line in toml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            skipping = trimmed.starts_with(header);
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Gives the client's eth0 an XDP program (flowgate's, with empty maps:
/// it passes everything). Frames the gateway's veth sends by XDP_TX
/// (cookie SYN-ACKs, the fast path's replies) reach a veth peer only
/// while its own XDP path runs (as tests/vip_announce_netns.rs found for
/// the ARP answers); a NIC needs nothing of the kind. The generator
/// replaces it with its own while it floods.
pub fn wake_the_clients_veth(topo: &Topology) {
    let object = topo.scratch.path("pass.o");
    fs::write(&object, flowgate_dataplane::xdp::program_object()).unwrap();
    let out = topo
        .client
        .ip(&[
            "link",
            "set",
            "dev",
            "eth0",
            "xdpdrv",
            "obj",
            object.to_str().unwrap(),
            "sec",
            "xdp",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
