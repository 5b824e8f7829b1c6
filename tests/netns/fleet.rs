//! A fleet of two gateways behind a router, in network namespaces, for
//! the fleet's ECMP, BGP and failover tests (issue 15):
//!
//! ```text
//! client ── router ─┬─ gw1 (fgw-c │ fgw-b) ─┐
//! (8 addresses)     ├─ gw2 (fgw-c │ fgw-b) ─┼─ bridge ─ backends b1..b3
//!                   └──────── r-b ──────────┘
//! ```
//!
//! The router forwards with a layer-4 multipath hash
//! (`net.ipv4.fib_multipath_hash_policy=1`). The backends' default route
//! is the router, which sends their replies (whatever comes in on `r-b`
//! for the clients) over the two gateways by a multipath route of its own,
//! so a reply may reach the gateway that did not see its connection. Both
//! gateways run the real `flowgate` with their rules from one real etcd
//! (on the test's loopback, reached from each gateway's own loopback
//! through a forwarder). Each backend answers on TCP 8080 and 8081 with
//! its name and then as many bytes as asked, at the pace asked.
//!
//! Only 198.18.0.0/15 is used. Every namespace is deleted when the
//! topology drops, also when a test fails; processes the tests start are
//! values of their own, declared after the topology so that they stop
//! first.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fleet_support::Proxy;

use flowgate_dataplane::testnet::{self, NetNs};

/// The VIP of both services.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 160, 10);
/// The `maglev` service's port (backends' 8080).
pub const MAGLEV_PORT: u16 = 80;
/// The `sh` service's port (backends' 8081).
pub const SH_PORT: u16 = 81;
/// How many client addresses there are.
pub const CLIENTS: u8 = 8;
/// The etcd prefix of the fleet's rules.
pub const PREFIX: &str = "/flowgate-ecmp";
/// The clients' subnet.
pub const CLIENT_NET: &str = "198.18.60.0/24";

/// Client address `i` (0..CLIENTS).
pub fn client_v4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 60, 10 + i)
}

/// Gateway `g`'s (1 or 2) address on its link to the router.
pub fn gateway_front(g: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 60 + g, 2)
}

/// The router's address on its link to gateway `g`.
pub fn router_towards(g: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 60 + g, 1)
}

/// Backend `n`'s (1..=3) address.
pub fn backend_v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 63, 10 + n)
}

/// The router's address on the backends' segment.
pub const ROUTER_BACK: Ipv4Addr = Ipv4Addr::new(198, 18, 63, 1);

/// Gateway `g`'s address on the backends' segment.
pub fn gateway_back(g: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 63, 1 + g)
}

/// A scratch directory, world-readable, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fgt-fleet-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Command::new("chmod")
            .arg("0755")
            .arg(&dir)
            .status()
            .unwrap();
        Scratch(dir)
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One connection a backend served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// Backend number, 1..=3.
    pub backend: u8,
    /// The backend's port (8080 or 8081).
    pub port: u16,
    /// The client as the backend saw it.
    pub peer: SocketAddr,
}

/// The topology.
pub struct Fleet {
    /// The clients (addresses [`client_v4`]).
    pub client: NetNs,
    /// The router in front of the gateways.
    pub router: NetNs,
    /// The two gateway boxes.
    pub gateways: Vec<NetNs>,
    /// The backends b1..b3.
    pub backends: Vec<NetNs>,
    lan: NetNs,
    servers: Servers,
    /// Configs, logs, sockets.
    pub scratch: Scratch,
}

impl Fleet {
    /// Builds it (the router's routes to the VIP are the test's to add),
    /// starts the backends' servers and checks every link.
    pub fn new() -> Fleet {
        let make = |tag: &str| {
            let ns = NetNs::new(tag).unwrap();
            ns.exec(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                ],
            )
            .unwrap();
            ns
        };
        let client = make("fgec");
        let router = make("fger");
        let gateways = vec![make("fgeg"), make("fgeg")];
        let lan = make("fgel");
        let backends: Vec<NetNs> = (0..3).map(|_| make("fgeb")).collect();

        router
            .exec(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv4.ip_forward=1",
                    "net.ipv4.fib_multipath_hash_policy=1",
                ],
            )
            .unwrap();
        testnet::veth_pair(&router, "r-c", &client, "eth0", 1).unwrap();
        addr(&router, "198.18.60.1/24", "r-c");
        for i in 0..CLIENTS {
            addr(&client, &format!("{}/24", client_v4(i)), "eth0");
        }
        client
            .ip(&["route", "add", "default", "via", "198.18.60.1"])
            .unwrap();
        no_offload(&client, "eth0");

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
        testnet::veth_pair(&router, "r-b", &lan, "r", 1).unwrap();
        lan.ip(&["link", "set", "r", "master", "br0"]).unwrap();
        addr(&router, &format!("{ROUTER_BACK}/24"), "r-b");

        link_gateways(&router, &gateways, &lan);
        no_offload(&router, "r-b");
        no_offload(&router, "r-c");

        for (i, b) in backends.iter().enumerate() {
            let n = i as u8 + 1;
            let port = format!("b{n}");
            testnet::veth_pair(&lan, &port, b, "eth0", 1).unwrap();
            lan.ip(&["link", "set", &port, "master", "br0"]).unwrap();
            addr(b, &format!("{}/24", backend_v4(n)), "eth0");
            b.ip(&["route", "add", "default", "via", &ROUTER_BACK.to_string()])
                .unwrap();
            no_offload(b, "eth0");
        }

        let servers = Servers::start(&backends);
        let fleet = Fleet {
            client,
            router,
            gateways,
            backends,
            lan,
            servers,
            scratch: Scratch::new(),
        };
        fleet.warm_up();
        fleet
    }

    /// One ping over every link, which also fills the neighbour tables.
    fn warm_up(&self) {
        let mut pairs: Vec<(&NetNs, String)> = vec![(&self.client, "198.18.60.1".into())];
        for g in 1..=2u8 {
            let gw = &self.gateways[usize::from(g - 1)];
            pairs.push((&self.router, gateway_front(g).to_string()));
            pairs.push((gw, router_towards(g).to_string()));
            for n in 1..=3u8 {
                pairs.push((gw, backend_v4(n).to_string()));
            }
        }
        for b in &self.backends {
            pairs.push((b, ROUTER_BACK.to_string()));
        }
        for (from, to) in pairs {
            let ok = (0..3).any(|_| ping(from, &to));
            assert!(ok, "topology: {} cannot reach {to}", from.name());
        }
    }

    /// The router's multipath route `prefix` over the gateways `via`
    /// (1, 2 or both), in `table` (`main`, or a number).
    pub fn router_multipath(&self, prefix: &str, table: &str, via: &[u8]) {
        let mut args: Vec<String> = ["route", "replace", prefix, "table", table]
            .map(String::from)
            .to_vec();
        for g in via {
            args.extend([
                "nexthop".into(),
                "via".into(),
                gateway_front(*g).to_string(),
                "dev".into(),
                format!("r-g{g}"),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.router.ip(&args).unwrap();
    }

    /// The backends' replies (what comes in on `r-b` for the clients) go
    /// over the gateways `via` by a multipath route of table 100.
    pub fn replies_through_gateways(&self, via: &[u8]) {
        self.replies_by_table_100();
        self.router_multipath(CLIENT_NET, "100", via);
    }

    /// What comes in on `r-b` is routed by table 100 (filled by the test,
    /// or by the router's BIRD: [`router_bird_config`]).
    pub fn replies_by_table_100(&self) {
        let _ = self
            .router
            .ip(&["rule", "add", "iif", "r-b", "lookup", "100", "pref", "100"]);
    }

    /// The next hops of the router's route to `prefix` (main table).
    pub fn router_next_hops(&self, prefix: &str) -> Vec<Ipv4Addr> {
        let out = self.router.ip(&["route", "show", prefix]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut hops: Vec<Ipv4Addr> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        hops
    }

    /// BIRD on the router ([`router_bird_config`]) and on each gateway
    /// ([`gateway_bird_config`]), in that order.
    pub fn start_birds(&self) -> Vec<Bird> {
        let mut birds = vec![Bird::start(
            &self.router,
            &self.scratch,
            "router",
            &router_bird_config(),
        )];
        for g in 1..=2u8 {
            birds.push(Bird::start(
                &self.gateways[usize::from(g - 1)],
                &self.scratch,
                &format!("gw{g}"),
                &gateway_bird_config(g),
            ));
        }
        birds
    }

    /// Everything the backends served so far.
    pub fn served(&self) -> Vec<Served> {
        self.servers.served.lock().unwrap().clone()
    }

    /// The `[daemon]`, `[flows]`, `[[interfaces]]` and `[etcd]` of gateway
    /// `g`, which takes its services from `etcd_endpoint`; `extra` is
    /// appended (e.g. `[announce]` keys).
    pub fn gateway_config(&self, g: u8, etcd_endpoint: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[daemon]
cores = [{core}]
frame_count = 8192
rx_ring_size = 1024
tx_ring_size = 1024
fill_ring_size = 2048
completion_ring_size = 2048
fast_path = "off"
control_socket = "{socket}"
metrics_address = "unix:{metrics}"

[flows]
capacity = 16384

[[interfaces]]
name = "fgw-c"

[[interfaces]]
name = "fgw-b"

[etcd]
endpoints = ["{etcd_endpoint}"]
prefix = "{PREFIX}"
gateway_id = "gw-{g}"
start_timeout = 5
status_ttl = 3
{extra}
"#,
            core = g - 1,
            socket = self.control_socket(g).display(),
            metrics = self.scratch.path(&format!("metrics-{g}.sock")).display(),
        );
        let path = self.scratch.path(&format!("gw-{g}.toml"));
        fs::write(&path, text).unwrap();
        path
    }

    /// Gateway `g`'s control socket.
    pub fn control_socket(&self, g: u8) -> PathBuf {
        self.scratch.path(&format!("control-{g}.sock"))
    }

    /// Starts flowgate on gateway `g` with `config` and waits (bounded)
    /// until its control socket is bound, which it does once its workers
    /// forward the rules it started with.
    pub fn start_gateway(&self, g: u8, config: &Path) -> Gateway {
        let socket = self.control_socket(g);
        let _ = fs::remove_file(&socket);
        static RUN: AtomicU32 = AtomicU32::new(0);
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let log = self.scratch.path(&format!("gw-{g}-{run}.log"));
        let bin = testnet::workspace_binary("flowgate").unwrap();
        let child = self.gateways[usize::from(g - 1)]
            .command(
                bin.to_str().unwrap(),
                &["run", "--config", config.to_str().unwrap()],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut gateway = Gateway {
            child: Some(child),
            log,
            metrics: self.scratch.path(&format!("metrics-{g}.sock")),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Some(status) = gateway.exited() {
                panic!("gateway {g} exited ({status}):\n{}", gateway.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway {g} did not bind its control socket within 30 s:\n{}",
                gateway.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        gateway
    }

    /// Puts the two services in etcd: `maglev` on VIP:80 and `sh` on
    /// VIP:81, over the three backends (ports 8080 and 8081).
    pub fn put_services(&self, etcd: &crate::fleet_support::Etcd) {
        self.put_services_with(etcd, "none", None);
    }

    /// As [`Fleet::put_services`], announced by `announce`; with
    /// `health_port`, every backend is checked by a TCP connect to that
    /// port every 200 ms (down after 2 failures, up after 1 success).
    pub fn put_services_with(
        &self,
        etcd: &crate::fleet_support::Etcd,
        announce: &str,
        health_port: Option<u16>,
    ) {
        let health = health_port.map_or(String::new(), |port| {
            format!(
                r#","health":{{"kind":"tcp","port":{port},"interval":"200ms","timeout":"100ms","rise":1,"fall":2}}"#
            )
        });
        for (name, port, backend_port) in [("maglev", MAGLEV_PORT, 8080), ("sh", SH_PORT, 8081)] {
            let backends: Vec<String> = (1..=3u8)
                .map(|n| format!(r#"{{"address":"{}","port":{backend_port}}}"#, backend_v4(n)))
                .collect();
            let value = format!(
                r#"{{"format":1,"protocol":"tcp","vip":"{VIP}","port":{port},"scheduler":"{name}","announce":"{announce}"{health},"backends":[{}]}}"#,
                backends.join(",")
            );
            etcd.ctl(&["put", &format!("{PREFIX}/v1/rules/services/{name}"), &value]);
        }
    }
}

/// The same services as a config file's rules, for computing what a
/// single gateway would choose.
pub fn rules_file() -> String {
    let mut text =
        String::from("[[interfaces]]\nname = \"fgw-c\"\n[[interfaces]]\nname = \"fgw-b\"\n");
    for (name, port, backend_port) in [("maglev", MAGLEV_PORT, 8080), ("sh", SH_PORT, 8081)] {
        text.push_str(&format!(
            "\n[[services]]\nname = \"{name}\"\nprotocol = \"tcp\"\nvip = \"{VIP}\"\n\
             port = {port}\nscheduler = \"{name}\"\n"
        ));
        for n in 1..=3u8 {
            text.push_str(&format!(
                "[[services.backends]]\naddress = \"{}\"\nport = {backend_port}\n",
                backend_v4(n)
            ));
        }
    }
    text
}

/// Each gateway between the router (`r-gN` ↔ `fgw-c`) and the backends'
/// bridge (`fgw-b`), with its kernel forwarding nothing.
fn link_gateways(router: &NetNs, gateways: &[NetNs], lan: &NetNs) {
    for (i, gw) in gateways.iter().enumerate() {
        let g = i as u8 + 1;
        // The gateway box's kernel forwards nothing: flowgate does.
        gw.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=0",
                "net.ipv6.conf.all.forwarding=0",
            ],
        )
        .unwrap();
        let router_if = format!("r-g{g}");
        testnet::veth_pair(gw, "fgw-c", router, &router_if, 1).unwrap();
        addr(gw, &format!("{}/24", gateway_front(g)), "fgw-c");
        addr(router, &format!("{}/24", router_towards(g)), &router_if);
        gw.ip(&[
            "route",
            "add",
            "default",
            "via",
            &router_towards(g).to_string(),
        ])
        .unwrap();
        let port = format!("g{g}");
        testnet::veth_pair(gw, "fgw-b", lan, &port, 1).unwrap();
        lan.ip(&["link", "set", &port, "master", "br0"]).unwrap();
        addr(gw, &format!("{}/24", gateway_back(g)), "fgw-b");
        // What the router forwards to a gateway is checksummed whole.
        no_offload(router, &router_if);
    }
}

fn addr(ns: &NetNs, cidr: &str, dev: &str) {
    ns.ip(&["addr", "add", cidr, "dev", dev]).unwrap();
}

/// Senders compute their own checksums and segment in software.
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

/// Polls `ready` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ready()
}

/// A running flowgate; killed on drop if still running.
pub struct Gateway {
    child: Option<Child>,
    log: PathBuf,
    metrics: PathBuf,
}

impl Gateway {
    /// Its stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Sends `signal` (`KILL`, `TERM`) and waits (bounded) for the exit.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "flowgate did not stop within 10 s of SIG{signal}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The sum of the metric `name`'s series (e.g.
    /// `flowgate_new_flows_total`), scraped from its metrics socket.
    pub fn metric(&self, name: &str) -> u64 {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "--unix-socket"])
            .arg(&self.metrics)
            .arg("http://localhost/metrics")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
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

/// A TCP forwarder from a loopback port inside `ns` to `target`, an
/// address of the test's own namespace (etcd, for a gateway): the
/// listening socket is made in the namespace, the connections out of it in
/// the test's. Its `endpoint` is the URL a client in the namespace uses.
pub fn forwarder(ns: &NetNs, target: String) -> Proxy {
    let listener = ns
        .enter(|| TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    Proxy::on(listener, target)
}

/// The backends' servers on TCP 8080 and 8081. A request is one line,
/// `BYTES MILLIS`: the answer is the backend's name and a newline, then
/// BYTES bytes spread over about MILLIS ms, then the connection closes.
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
                let listener = ns
                    .enter(move || TcpListener::bind(("0.0.0.0", port)))
                    .unwrap()
                    .unwrap();
                listener.set_nonblocking(true).unwrap();
                let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
                threads.push(std::thread::spawn(move || {
                    accept_loop(n, port, listener, &stop, &served)
                }));
            }
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

fn accept_loop(
    n: u8,
    port: u16,
    listener: TcpListener,
    stop: &Arc<AtomicBool>,
    served: &Arc<Mutex<Vec<Served>>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(_) => continue,
        };
        served.lock().unwrap().push(Served {
            backend: n,
            port,
            peer,
        });
        let stop = Arc::clone(stop);
        std::thread::spawn(move || {
            let _ = serve(n, stream, &stop);
        });
    }
}

/// Answers one request (every read and write bounded by a timeout).
fn serve(n: u8, stream: TcpStream, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?)
        .take(64)
        .read_line(&mut line)?;
    let mut words = line.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(bytes)), Some(Ok(millis))) = (words.next(), words.next()) else {
        return Err(io::Error::other("bad request"));
    };
    let mut stream = stream;
    stream.write_all(format!("b{n}\n").as_bytes())?;
    let chunk = [b'x'; 4096];
    let chunks = bytes.div_ceil(chunk.len() as u64).max(1);
    let pause = Duration::from_millis(millis) / u32::try_from(chunks).unwrap_or(u32::MAX);
    let mut left = bytes;
    while left > 0 && !stop.load(Ordering::Relaxed) {
        let now = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..now])?;
        left -= now as u64;
        std::thread::sleep(pause);
    }
    stream.shutdown(Shutdown::Write)
}

/// What one request through the VIP got.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The client's own address and port.
    pub local: SocketAddr,
    /// The backend's name (`b1`..`b3`), as it answered.
    pub backend: String,
    /// Bytes received after the name.
    pub bytes: u64,
}

/// A TCP connection from `from` (a client address; port chosen by the
/// kernel) to `to`. Call inside the client's namespace.
pub fn connect_from(from: Ipv4Addr, to: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )?;
    let stream = TcpStream::from(fd);
    // A bounded connect: non-blocking, then wait for writability.
    stream.set_nonblocking(true)?;
    match connect(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        &SockaddrIn::from(to),
    ) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + timeout;
    loop {
        match stream.peer_addr() {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                if let Ok(Some(e)) = stream.take_error() {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// One request from `from` to `to`: the name of the backend that answered
/// and `bytes` bytes spread over `millis` ms; every step bounded by
/// `timeout`. Call inside the client's namespace.
pub fn request(
    from: Ipv4Addr,
    to: SocketAddrV4,
    bytes: u64,
    millis: u64,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut stream = connect_from(from, to, timeout).map_err(|e| format!("connect: {e}"))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{bytes} {millis}\n").as_bytes())
        .map_err(|e| format!("{local}: write: {e}"))?;
    let mut name = [0u8; 3];
    stream
        .read_exact(&mut name)
        .map_err(|e| format!("{local}: no answer: {e}"))?;
    let backend = String::from_utf8_lossy(&name[..2]).into_owned();
    let mut buffer = [0u8; 16 * 1024];
    let mut got = 0u64;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => {
                return Err(format!(
                    "{local} ({backend}): after {got} of {bytes} bytes: {e}"
                ))
            }
        }
    }
    Ok(Answer {
        local,
        backend,
        bytes: got,
    })
}

/// Backend `bN`'s number from an `ADDR:PORT` `explain` names.
pub fn backend_number(address: &str) -> Option<u8> {
    let sa: SocketAddr = address.parse().ok()?;
    (1..=3u8).find(|&n| sa.ip() == IpAddr::V4(backend_v4(n)))
}

/// A BIRD 2 daemon in a namespace with its own config, control socket,
/// pid file and log in the scratch directory; killed on drop.
pub struct Bird {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    ns: String,
}

impl Bird {
    /// Starts `bird` in `ns` with `config` (its `log` line is added), as
    /// `name` (files `bird-NAME.*`), and waits (bounded) for its socket.
    pub fn start(ns: &NetNs, scratch: &Scratch, name: &str, config: &str) -> Bird {
        let path = |ext: &str| scratch.path(&format!("bird-{name}.{ext}"));
        let (conf, socket, pid, log) = (path("conf"), path("ctl"), path("pid"), path("log"));
        fs::write(&conf, format!("log \"{}\" all;\n{config}", log.display())).unwrap();
        let child = ns
            .command("bird", &["-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(path("stderr")).unwrap())
            .spawn()
            .expect("bird (Debian package bird2; scripts/install-deps.sh installs it)");
        let mut bird = Bird {
            child: Some(child),
            socket,
            log,
            ns: ns.name().to_owned(),
        };
        let up = wait_until(Duration::from_secs(10), || {
            bird.ctl(&["show", "status"]).contains("Daemon is up")
        });
        if !up {
            let stderr = fs::read_to_string(path("stderr")).unwrap_or_default();
            let _ = bird.child.as_mut().map(Child::kill);
            panic!("bird {name} did not start: {stderr}\n{}", bird.log());
        }
        bird
    }

    /// `birdc` with `args` on its socket: the output (empty on failure).
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Its log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The router's BIRD: a BGP session with each gateway, the VIPs' paths
/// merged into one multipath route in the kernel; and the route of the
/// backends' replies to the clients (kernel table 100), resolved through
/// the VIP's route, so that it goes over the same gateways and loses one
/// when the VIP's route does. The template is the fleet demo's.
pub fn router_bird_config() -> String {
    include_str!("../../scripts/lib/fleet-bird-router.conf")
        .replace("@VIP@", &VIP.to_string())
        .replace("@CLIENT_NET@", CLIENT_NET)
        .replace("@ROUTER_TOWARDS_1@", &router_towards(1).to_string())
        .replace("@ROUTER_TOWARDS_2@", &router_towards(2).to_string())
        .replace("@GW_FRONT_1@", &gateway_front(1).to_string())
        .replace("@GW_FRONT_2@", &gateway_front(2).to_string())
}

/// Gateway `g`'s BIRD: it learns the VIPs' host routes flowgate puts on
/// its device and announces them to the router. The template is the
/// fleet demo's.
pub fn gateway_bird_config(g: u8) -> String {
    include_str!("../../scripts/lib/fleet-bird-gateway.conf")
        .replace("@GW_FRONT@", &gateway_front(g).to_string())
        .replace("@ROUTER_TOWARDS@", &router_towards(g).to_string())
}
