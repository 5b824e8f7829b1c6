//! client ══ gateway ══ backend in namespaces of their own, with a UDP echo
//! on the backend, and the real `flowgate` binary started in the gateway's:
//! the small topology of the daemon's lifecycle and fleet tests. Each test
//! file picks its own addresses (`EchoGateway::new`'s `subnet`), so that
//! test binaries never share a name or an address.

#![allow(dead_code)] // each test binary uses its own part

use std::fs::{self, File};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::{self, NetNs};

/// The UDP echo's port on the backend.
pub const ECHO_PORT: u16 = 7007;

/// A scratch directory removed on drop; world-readable so that an
/// unprivileged flowgate can read its config.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new directory named by `tag` and this process.
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fgt-{tag}-{}-{n}", std::process::id()));
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

/// The topology. With `subnet` `s`: the client at 198.18.s.2 behind the
/// gateway's 198.18.s.1 (interface `TAG-c`), the backend at 198.18.(s+1).11
/// behind 198.18.(s+1).1 (`TAG-b`), the VIP 198.18.(100+s).10.
pub struct EchoGateway {
    pub client: NetNs,
    pub gateway: NetNs,
    _backend: NetNs,
    echo_stop: Arc<AtomicBool>,
    pub scratch: Scratch,
    tag: String,
    subnet: u8,
}

impl EchoGateway {
    /// Builds it; `tag` names the namespaces, interfaces and scratch
    /// directory (at most 4 characters: interface names are short).
    pub fn new(tag: &str, subnet: u8) -> EchoGateway {
        let client = NetNs::new(tag).unwrap();
        let gateway = NetNs::new(tag).unwrap();
        let backend = NetNs::new(tag).unwrap();
        let (client_if, backend_if) = (format!("{tag}-c"), format!("{tag}-b"));
        testnet::veth_pair(&gateway, &client_if, &client, "eth0", 1).unwrap();
        testnet::veth_pair(&gateway, &backend_if, &backend, "eth0", 1).unwrap();
        let (s, b) = (subnet, subnet + 1);
        for (dev, mac, address) in [
            (&client_if, gateway_mac(s), format!("198.18.{s}.1/24")),
            (&backend_if, gateway_mac(b), format!("198.18.{b}.1/24")),
        ] {
            gateway.ip(&["link", "set", dev, "address", &mac]).unwrap();
            gateway.ip(&["addr", "add", &address, "dev", dev]).unwrap();
        }
        let vips = format!("198.18.{}.0/24", 100 + u16::from(s));
        let client_gw = format!("198.18.{s}.1");
        client
            .ip(&["addr", "add", &format!("198.18.{s}.2/24"), "dev", "eth0"])
            .unwrap();
        client
            .ip(&["route", "add", &vips, "via", &client_gw])
            .unwrap();
        let backend_address = format!("198.18.{b}.11");
        backend
            .ip(&[
                "addr",
                "add",
                &format!("{backend_address}/24"),
                "dev",
                "eth0",
            ])
            .unwrap();
        backend
            .ip(&["route", "add", "default", "via", &format!("198.18.{b}.1")])
            .unwrap();
        // A local socket's packets leave a veth with the checksum left for
        // the "hardware" to fill in; a real NIC's peer would have filled
        // it. Have the kernel compute it, as the wire would.
        for ns in [&client, &backend] {
            ns.exec("ethtool", &["-K", "eth0", "tx", "off"]).unwrap();
        }
        let echo = backend
            .enter(move || UdpSocket::bind((backend_address.as_str(), ECHO_PORT)))
            .unwrap()
            .unwrap();
        echo.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let echo_stop = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&echo_stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = echo.recv_from(&mut buf) {
                    let _ = echo.send_to(&buf[..n], from);
                }
            }
        });
        EchoGateway {
            client,
            gateway,
            _backend: backend,
            echo_stop,
            scratch: Scratch::new(tag),
            tag: tag.to_owned(),
            subnet,
        }
    }

    /// The VIP.
    pub fn vip(&self) -> String {
        format!("198.18.{}.10", 100 + u16::from(self.subnet))
    }

    /// The backend's address.
    pub fn backend(&self) -> String {
        format!("198.18.{}.11", self.subnet + 1)
    }

    /// The gateway's client-side interface.
    pub fn client_if(&self) -> String {
        format!("{}-c", self.tag)
    }

    /// `[daemon]` (one worker, small rings, the control socket in the
    /// scratch directory), `[flows]` and the two `[[interfaces]]`.
    pub fn base_config(&self) -> String {
        let s = self.subnet;
        format!(
            r#"
[daemon]
cores = [0]
frame_count = 4096
rx_ring_size = 512
tx_ring_size = 512
fill_ring_size = 1024
completion_ring_size = 1024
control_socket = "{socket}"

[flows]
capacity = 4096

[[interfaces]]
name = "{tag}-c"
mac = "{client_mac}"

[[interfaces]]
name = "{tag}-b"
mac = "{backend_mac}"
"#,
            socket = self.scratch.path("control.sock").display(),
            tag = self.tag,
            client_mac = gateway_mac(s),
            backend_mac = gateway_mac(s + 1),
        )
    }

    /// Writes `text` as the scratch directory's `flowgate.toml`.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.scratch.path("flowgate.toml");
        fs::write(&path, text).unwrap();
        path
    }

    /// Starts flowgate in the gateway namespace; stderr goes to `log` in
    /// the scratch directory.
    pub fn start(&self, config: &Path, log: &str) -> Daemon {
        self.start_with(config, log, &[])
    }

    /// As [`EchoGateway::start`], with more command-line arguments.
    pub fn start_with(&self, config: &Path, log: &str, extra: &[&str]) -> Daemon {
        let log = self.scratch.path(log);
        let stderr = File::create(&log).unwrap();
        let bin = testnet::workspace_binary("flowgate").unwrap();
        let mut args = vec!["run", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = self
            .gateway
            .command(bin.to_str().unwrap(), &args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Whether a UDP request to the VIP's `port` comes back, from the VIP,
    /// within `wait`.
    pub fn echo_answers(&self, port: u16, wait: Duration) -> bool {
        let source = format!("198.18.{}.2", self.subnet);
        let socket = self
            .client
            .enter(move || UdpSocket::bind((source.as_str(), 0)))
            .unwrap()
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let vip: SocketAddr = format!("{}:{port}", self.vip()).parse().unwrap();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            let _ = socket.send_to(b"ping", vip);
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                if &buf[..n] == b"ping" && from == vip {
                    return true;
                }
            }
        }
        false
    }

    /// Whether any XDP program is attached to the gateway's interfaces.
    pub fn xdp_attached(&self) -> bool {
        let out = self.gateway.ip(&["link", "show"]).unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }
}

impl Drop for EchoGateway {
    fn drop(&mut self) {
        self.echo_stop.store(true, Ordering::Relaxed);
    }
}

/// The gateway's MAC on subnet `s`'s side: 02:66:67:00:S:01 (S in decimal
/// digits, which read as the same hex digits for the subnets used).
fn gateway_mac(s: u8) -> String {
    format!("02:66:67:00:{s:02}:01")
}

/// A running flowgate, killed on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts flowgate with `config` in `ns`; stderr goes to `log` (for a
    /// topology of a test's own).
    pub fn start(ns: &NetNs, config: &Path, log: PathBuf) -> Daemon {
        let bin = testnet::workspace_binary("flowgate").unwrap();
        let child = ns
            .command(
                bin.to_str().unwrap(),
                &["run", "--config", config.to_str().unwrap()],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Sends it `signal` (a name such as `TERM` or `HUP`).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
    }

    /// Its exit status, if it exits within `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
