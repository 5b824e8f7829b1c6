//! `flowgate run` with an `[etcd]` section (issue 15): the real daemon in
//! a gateway namespace, with the distribution's etcd on that namespace's
//! loopback. A service put in etcd forwards; a later put forwards without a
//! restart; the gateway's status key is in etcd; with etcd gone the
//! gateway keeps forwarding, and a restart starts from the saved state; a
//! service both in the file and in etcd stops the start by name.
//!
//! Run as root; set FLOWGATE_SKIP_NETNS=1 to skip elsewhere.

mod fleet_support;

use std::fs::{self, File};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_support::{wait_until, Etcd};
use flowgate_dataplane::testnet::{self, NetNs};

const GW_CLIENT_MAC: &str = "02:66:67:00:20:01";
const GW_BACKEND_MAC: &str = "02:66:67:00:21:01";
const VIP: &str = "198.18.120.10";
const BACKEND: &str = "198.18.21.11";
const PREFIX: &str = "/flowgate-fleet";

/// client ══ gateway (etcd on its loopback) ══ backend, with a UDP echo on
/// the backend.
struct Topology {
    client: NetNs,
    gateway: NetNs,
    _backend: NetNs,
    echo_stop: Arc<AtomicBool>,
    dir: PathBuf,
}

impl Topology {
    fn new() -> Topology {
        let client = NetNs::new("fgf").unwrap();
        let gateway = NetNs::new("fgf").unwrap();
        let backend = NetNs::new("fgf").unwrap();
        testnet::veth_pair(&gateway, "fgf-c", &client, "eth0", 1).unwrap();
        testnet::veth_pair(&gateway, "fgf-b", &backend, "eth0", 1).unwrap();
        for (dev, mac, address) in [
            ("fgf-c", GW_CLIENT_MAC, "198.18.20.1/24"),
            ("fgf-b", GW_BACKEND_MAC, "198.18.21.1/24"),
        ] {
            gateway.ip(&["link", "set", dev, "address", mac]).unwrap();
            gateway.ip(&["addr", "add", address, "dev", dev]).unwrap();
        }
        client
            .ip(&["addr", "add", "198.18.20.2/24", "dev", "eth0"])
            .unwrap();
        client
            .ip(&["route", "add", "198.18.120.0/24", "via", "198.18.20.1"])
            .unwrap();
        backend
            .ip(&["addr", "add", "198.18.21.11/24", "dev", "eth0"])
            .unwrap();
        backend
            .ip(&["route", "add", "default", "via", "198.18.21.1"])
            .unwrap();
        // Checksums filled by the kernel, as the wire would have them.
        for ns in [&client, &backend] {
            ns.exec("ethtool", &["-K", "eth0", "tx", "off"]).unwrap();
        }
        let echo = backend
            .enter(|| UdpSocket::bind((BACKEND, 7007)))
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
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fgt-fleet-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Topology {
            client,
            gateway,
            _backend: backend,
            echo_stop,
            dir,
        }
    }

    /// A config with no services of its own (or `services`) and `[etcd]`.
    fn write_config(&self, etcd: &Etcd, services: &str) -> PathBuf {
        let text = format!(
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
name = "fgf-c"
mac = "{GW_CLIENT_MAC}"

[[interfaces]]
name = "fgf-b"
mac = "{GW_BACKEND_MAC}"

[etcd]
endpoints = ["{endpoint}"]
prefix = "{PREFIX}"
gateway_id = "gw-1"
state_file = "{state}"
start_timeout = 2
status_ttl = 3
{services}
"#,
            socket = self.dir.join("control.sock").display(),
            endpoint = etcd.endpoint(),
            state = self.dir.join("etcd-state.json").display(),
        );
        let path = self.dir.join("flowgate.toml");
        fs::write(&path, text).unwrap();
        path
    }

    /// Starts flowgate in the gateway namespace; stderr goes to `log`.
    fn start(&self, config: &Path, log: &str) -> Daemon {
        let log = self.dir.join(log);
        let bin = testnet::workspace_binary("flowgate").unwrap();
        let child = self
            .gateway
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

    /// Whether a UDP request to the VIP's `port` comes back within `wait`.
    fn echo_answers(&self, port: u16, wait: Duration) -> bool {
        let socket = self
            .client
            .enter(|| UdpSocket::bind(("198.18.20.2", 0)))
            .unwrap()
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let vip: SocketAddr = format!("{VIP}:{port}").parse().unwrap();
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
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.echo_stop.store(true, Ordering::Relaxed);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running flowgate, killed on drop if still running.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
    }

    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
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

    fn log(&self) -> String {
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

/// The value of a UDP echo service on `port`.
fn echo_service(port: u16) -> String {
    format!(
        r#"{{"format":1,"protocol":"udp","vip":"{VIP}","port":{port},"backends":[{{"address":"{BACKEND}","port":7007}}]}}"#
    )
}

fn service_key(name: &str) -> String {
    format!("{PREFIX}/v1/rules/services/{name}")
}

#[test]
fn the_daemon_forwards_services_from_etcd_keeps_them_without_etcd_and_restarts_from_disk() {
    if !testnet::privileged() {
        return;
    }
    let topo = Topology::new();
    // Declared after the namespaces: stopped before they go.
    let mut etcd = Etcd::start_in(Some(topo.gateway.name()));
    etcd.ctl(&["put", &service_key("echo7"), &echo_service(7)]);
    let config = topo.write_config(&etcd, "");

    let mut first = topo.start(&config, "first.log");
    assert!(
        topo.echo_answers(7, Duration::from_secs(15)),
        "no echo through the service from etcd:\n{}",
        first.log()
    );
    // A put while it runs: forwarded without a restart.
    assert!(!topo.echo_answers(8, Duration::from_millis(300)));
    etcd.ctl(&["put", &service_key("echo8"), &echo_service(8)]);
    assert!(
        topo.echo_answers(8, Duration::from_secs(10)),
        "the service put in etcd does not forward:\n{}",
        first.log()
    );
    assert!(
        first.log().contains("rules from etcd applied"),
        "{}",
        first.log()
    );
    // Its status key, under its lease.
    assert!(wait_until(Duration::from_secs(5), || {
        let out = etcd.ctl(&[
            "get",
            &format!("{PREFIX}/v1/status/gw-1"),
            "--print-value-only",
        ]);
        out.contains(r#""id":"gw-1""#) && out.contains(r#""services":2"#)
    }));

    // etcd gone: the gateway keeps forwarding.
    etcd.stop();
    assert!(topo.echo_answers(8, Duration::from_secs(5)));
    assert!(topo.echo_answers(7, Duration::from_secs(5)));

    // Restarted while etcd is down: it starts from the saved state.
    first.signal("KILL");
    first
        .wait(Duration::from_secs(5))
        .expect("SIGKILL did not end flowgate");
    let mut second = topo.start(&config, "second.log");
    assert!(
        topo.echo_answers(8, Duration::from_secs(20)),
        "no echo after a restart without etcd:\n{}",
        second.log()
    );
    assert!(
        second.log().contains("starting from the saved etcd state"),
        "{}",
        second.log()
    );
    second.signal("TERM");
    let status = second
        .wait(Duration::from_secs(10))
        .expect("no stop on SIGTERM");
    assert!(status.success(), "exit {status:?}:\n{}", second.log());
}

#[test]
fn a_service_both_in_the_file_and_in_etcd_stops_the_daemon_at_start() {
    if !testnet::privileged() {
        return;
    }
    let topo = Topology::new();
    let etcd = Etcd::start_in(Some(topo.gateway.name()));
    etcd.ctl(&["put", &service_key("echo7"), &echo_service(7)]);
    let file_service = format!(
        r#"
[[services]]
name = "echo7"
protocol = "udp"
vip = "{VIP}"
port = 9

[[services.backends]]
address = "{BACKEND}"
port = 7007
"#
    );
    let config = topo.write_config(&etcd, &file_service);
    let mut daemon = topo.start(&config, "conflict.log");
    let status = daemon
        .wait(Duration::from_secs(15))
        .expect("flowgate did not refuse to start");
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!(
            "service \"echo7\" is defined both in the config file and in etcd (key {})",
            service_key("echo7")
        )),
        "{}",
        daemon.log()
    );
}
