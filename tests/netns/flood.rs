//! What the flood tests share, on top of the namespace topology: the
//! project's traffic generator (benches/e2e/xdpgen.c) built and run in the
//! client's namespace, an nginx on each backend, the gateway's resident
//! memory and its Prometheus counters. Included by the flood tests with
//! `#[path = "netns/flood.rs"] mod flood;` beside `mod netns;`.
//!
//! The generator runs on the client's `eth0`, the peer of the gateway's
//! `fg-client`: its frames reach the gateway as the client's do. Its
//! sources are random within 198.18.0.0/15 but never in the prefixes of
//! the test's real hosts ([`REAL_HOSTS`]), and while it runs it drops in
//! XDP on `eth0` whatever comes back to them (SYN-ACKs, resets, ICMP
//! errors), so the client's kernel never sees the flood's returns.
//! Where the kernel refuses the generator's live frames, it sends the
//! same frames through a packet socket at a lower rate (its report says
//! `via=packet`), which still makes several tables' worth of new flows in
//! each test's time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::NetNs;

use crate::netns::Topology;

/// Where the random sources come from.
pub const FLOOD_NET: &str = "198.18.0.0/15";
/// The prefixes of the test's real hosts, which the flood never uses as a
/// source: the client's segment, the backends' segment, the VIPs.
pub const REAL_HOSTS: [&str; 3] = ["198.18.0.0/24", "198.18.1.0/24", "198.18.100.0/24"];
const CLIENT_MAC: &str = "02:66:67:00:00:02";
const GW_CLIENT_MAC: &str = "02:66:67:00:00:01";

/// The generator, built from the repository's sources into `dir`.
pub struct Generator {
    bin: PathBuf,
    obj: PathBuf,
}

impl Generator {
    /// Builds xdpgen and its BPF object with clang (as scripts/bench-e2e.sh
    /// does); panics with clang's message when that fails.
    pub fn build(dir: &Path) -> Generator {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/e2e");
        let obj = dir.join("xdpgen.bpf.o");
        let bin = dir.join("xdpgen");
        let arch_include = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
        let (bpf_src, user_src) = (src.join("xdpgen.bpf.c"), src.join("xdpgen.c"));
        let steps: [Vec<&str>; 2] = [
            vec![
                "-O2",
                "-g",
                "-target",
                "bpf",
                &arch_include,
                "-c",
                bpf_src.to_str().unwrap(),
                "-o",
                obj.to_str().unwrap(),
            ],
            vec![
                "-O2",
                "-Wall",
                "-o",
                bin.to_str().unwrap(),
                user_src.to_str().unwrap(),
                "-lbpf",
            ],
        ];
        for args in steps {
            let out = Command::new("clang").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "clang {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Generator { bin, obj }
    }

    /// Starts a flood from the client's namespace to `to` for `seconds`,
    /// pinned to `cpu`, with `extra` arguments (`--syn`, `--pps N`). Its
    /// sources are random within [`FLOOD_NET`] outside [`REAL_HOSTS`], and
    /// its returns are dropped at the client's interface.
    pub fn start(
        &self,
        topo: &Topology,
        to: SocketAddr,
        seconds: u64,
        cpu: usize,
        extra: &[&str],
    ) -> Flood {
        let log = topo.scratch.path("xdpgen.log");
        let (dst, dport) = (to.ip().to_string(), to.port().to_string());
        let (seconds, cpu) = (seconds.to_string(), cpu.to_string());
        let mut args = vec![
            "-c",
            &cpu,
            self.bin.to_str().unwrap(),
            "--obj",
            self.obj.to_str().unwrap(),
            "--dev",
            "eth0",
            "--src-mac",
            CLIENT_MAC,
            "--dst-mac",
            GW_CLIENT_MAC,
            "--src",
            "198.19.0.1",
            "--dst",
            &dst,
            "--dport",
            &dport,
            "--seconds",
            &seconds,
            "--random-src",
            FLOOD_NET,
            "--drop-returns",
        ];
        for prefix in REAL_HOSTS {
            args.extend(["--avoid", prefix]);
        }
        args.extend(extra);
        let child = topo
            .client
            .command("taskset", &args)
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Flood {
            child: Some(child),
            log,
        }
    }
}

/// A running flood; stopped (SIGTERM, then killed) on drop.
pub struct Flood {
    child: Option<Child>,
    log: PathBuf,
}

/// What the generator said it sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodReport {
    /// Frames made and sent out of the generator's interface.
    pub sent: u64,
    /// How long it ran.
    pub seconds: f64,
    /// sent / seconds.
    pub pps: f64,
    /// The flood's returns the generator's interface dropped.
    pub returns_dropped: u64,
    /// Sent as live XDP frames (false: through a packet socket, where the
    /// kernel refuses live frames).
    pub live_frames: bool,
}

impl FloodReport {
    /// How the frames were sent, for a test's report.
    pub fn via(&self) -> &'static str {
        if self.live_frames {
            "live frames"
        } else {
            "packet socket"
        }
    }
}

impl Flood {
    /// Waits (at most `limit`) for the generator to finish and returns its
    /// report; panics with its error output when it failed.
    pub fn wait(mut self, limit: Duration) -> FloodReport {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("xdpgen did not finish within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        let out = fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "xdpgen failed ({status}): {err}{out}");
        let field = |name: &str| -> f64 {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name}= in xdpgen's report {out:?}"))
        };
        FloodReport {
            sent: field("sent") as u64,
            seconds: field("seconds"),
            pps: field("pps"),
            returns_dropped: field("returns_dropped") as u64,
            live_frames: !out.contains("via=packet"),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Byte `i` of the large file the backends serve (a fixed pseudo-random
/// sequence).
pub fn big_byte(i: usize) -> u8 {
    let mut x = (i as u64 / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x.to_le_bytes()[i % 8]
}

/// Opens `/big` of `size` bytes through `vip` (a read waits at most
/// 10 s): the stream positioned after a `200` head that names the size.
pub fn open_big(vip: SocketAddr, host: &str, size: usize) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET /big HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
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
    if !head.starts_with("HTTP/1.1 200") || !head.contains(&format!("Content-Length: {size}")) {
        return Err(format!("unexpected head {head:?}"));
    }
    Ok(stream)
}

/// One nginx per backend on `port`: `/` answers the backend's name, `/big`
/// a file of `big` bytes of [`big_byte`]; idle keep-alive connections are
/// kept for 300 s. Stopped on drop (also when a
/// test fails), so no server outlives its namespace.
pub struct Nginxes {
    pids: Vec<PathBuf>,
}

impl Nginxes {
    /// Writes the file and each backend's config, starts them and waits
    /// (bounded) until each accepts.
    pub fn start(topo: &Topology, port: u16, big: usize) -> Nginxes {
        let www = topo.scratch.path("www");
        fs::create_dir_all(&www).unwrap();
        let file: Vec<u8> = (0..big).map(big_byte).collect();
        fs::write(www.join("big"), &file).unwrap();
        let mut nginxes = Nginxes { pids: Vec::new() };
        for (i, ns) in topo.backends.iter().enumerate() {
            let n = i + 1;
            let dir = topo.scratch.path(&format!("nginx-b{n}"));
            fs::create_dir_all(dir.join("tmp")).unwrap();
            let d = dir.display();
            let conf = format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n\
                 keepalive_timeout 300s;\n  keepalive_requests 100000;\n\
                 client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\n  default_type text/plain;\n\
                 server {{\n    listen {port} backlog=4096;\n    root {};\n\
                 location = /big {{ }}\n    location / {{ return 200 \"b{n}\"; }}\n  }}\n}}\n",
                www.display()
            );
            let conf_path = dir.join("nginx.conf");
            fs::write(&conf_path, conf).unwrap();
            nginxes.pids.push(dir.join("nginx.pid"));
            let log = dir.join("error.log");
            ns.exec(
                "nginx",
                &[
                    "-q",
                    "-c",
                    conf_path.to_str().unwrap(),
                    "-e",
                    log.to_str().unwrap(),
                ],
            )
            .unwrap_or_else(|e| panic!("nginx in {}: {e}", ns.name()));
            let local = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(5);
            while ns
                .enter(|| TcpStream::connect_timeout(&local, Duration::from_millis(200)))
                .unwrap()
                .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "nginx in {} did not accept within 5 s: {}",
                    ns.name(),
                    fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        nginxes
    }
}

impl Drop for Nginxes {
    fn drop(&mut self) {
        for pid_file in &self.pids {
            let Ok(pid) = fs::read_to_string(pid_file) else {
                continue;
            };
            let pid = pid.trim();
            let _ = Command::new("kill").args(["-TERM", pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A process's resident memory in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// Where the gateway serves Prometheus, inside its namespace.
pub const METRICS: &str = "127.0.0.1:9464";

/// `config` (from [`Topology::config`]) with the metrics endpoint on.
pub fn with_metrics(config: &str) -> String {
    config.replacen(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_address = \"{METRICS}\"\n"),
        1,
    )
}

/// One scrape: every series, `name{labels}` → value.
#[derive(Debug, Clone, Default)]
pub struct Scrape(pub BTreeMap<String, f64>);

impl Scrape {
    /// Scrapes the gateway's metrics (bounded: 5 s).
    pub fn take(gateway: &NetNs) -> Scrape {
        let text = gateway
            .enter(|| -> std::io::Result<String> {
                let addr: SocketAddr = METRICS.parse().unwrap();
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")?;
                let mut body = String::new();
                s.take(16 << 20).read_to_string(&mut body)?;
                Ok(body)
            })
            .unwrap()
            .unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let series = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect();
        Scrape(series)
    }

    /// The sum of the series of family `name` whose labels contain every
    /// one of `labels` (`reason="flow_table_full"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                let family = k.split('{').next().unwrap_or("");
                family == name && labels.iter().all(|l| k.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Counters that moved from `before` to `self`, with their change.
    pub fn moved(&self, before: &Scrape) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let d = v - before.0.get(k).copied().unwrap_or(0.0);
                (d != 0.0).then(|| (k.clone(), d))
            })
            .collect()
    }
}

/// The IPv4 address of prefix `p` (`a.b.c.d/len`) is within it.
pub fn in_prefix(addr: Ipv4Addr, p: &str) -> bool {
    let (net, len) = p.split_once('/').unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(addr) & mask == u32::from(net) & mask
}
