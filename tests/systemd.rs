//! flowgate under systemd: configs/flowgate.service passes
//! `systemd-analyze verify`, and the daemon speaks the notify protocol —
//! READY=1 once it forwards, RELOADING=1 then READY=1 around a SIGHUP
//! reload, STOPPING=1 at shutdown — to a real datagram socket named by
//! $NOTIFY_SOCKET, running in network namespaces of its own. The same run
//! checks that `flowgatectl status` shows the queues in use, not the ones
//! the interface has.

use std::fs::{self, File};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::{self, NetNs};

/// A scratch directory removed on drop; world-readable so that the
/// daemon (in another namespace, same file system) reads its config.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fg-systemd-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let scratch = Scratch::new("verify");
    let unit = include_str!("../configs/flowgate.service");
    for line in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_XDP",
        "LimitMEMLOCK=infinity",
        "NoNewPrivileges=yes",
        "RuntimeDirectory=flowgate",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has no {line:?}");
    }
    // Exactly the capabilities flowgate needs, ambient and bounding alike.
    let caps = "CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON CAP_IPC_LOCK";
    assert!(unit.contains(&format!("AmbientCapabilities={caps}\n")));
    assert!(unit.contains(&format!("CapabilityBoundingSet={caps}\n")));

    // The unit names the installed binary; verify checks that its
    // commands exist, so point them at this build's, and its man pages
    // (Documentation=) at the ones this build writes.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_flowgate"));
    let ctl = PathBuf::from(env!("CARGO_BIN_EXE_flowgatectl"));
    let man = scratch.path("man");
    for (binary, section) in [(&bin, "man8"), (&ctl, "man1")] {
        let out = Command::new(binary)
            .arg("man")
            .arg(man.join(section))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file = scratch.path("flowgate.service");
    fs::write(
        &file,
        unit.replace("/usr/local/bin/flowgate", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .env("MANPATH", &man)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze (the systemd package, scripts/install-deps.sh) is installed");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const GW_CLIENT_MAC: &str = "02:66:67:00:20:01";
const GW_BACKEND_MAC: &str = "02:66:67:00:21:01";

/// The gateway's two links, each with two queues, to a peer namespace.
struct Topology {
    gateway: NetNs,
    _peer: NetNs,
}

impl Topology {
    fn new() -> Topology {
        let gateway = NetNs::new("fgs").unwrap();
        let peer = NetNs::new("fgs").unwrap();
        testnet::veth_pair(&gateway, "fgs-c", &peer, "c0", 2).unwrap();
        testnet::veth_pair(&gateway, "fgs-b", &peer, "b0", 2).unwrap();
        for (dev, mac, cidr) in [
            ("fgs-c", GW_CLIENT_MAC, "198.18.20.1/24"),
            ("fgs-b", GW_BACKEND_MAC, "198.18.21.1/24"),
        ] {
            gateway.ip(&["link", "set", dev, "address", mac]).unwrap();
            gateway.ip(&["addr", "add", cidr, "dev", dev]).unwrap();
        }
        Topology {
            gateway,
            _peer: peer,
        }
    }
}

fn config(socket: &Path) -> String {
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
name = "fgs-c"
mac = "{GW_CLIENT_MAC}"

[[interfaces]]
name = "fgs-b"
mac = "{GW_BACKEND_MAC}"

[[services]]
name = "echo"
protocol = "udp"
vip = "198.18.120.10"
port = 7

[[services.backends]]
address = "198.18.21.11"
port = 7007
"#,
        socket = socket.display()
    )
}

/// A running flowgate, killed on drop if still running.
struct Daemon(Option<Child>);

impl Daemon {
    fn signal(&self, signal: &str) {
        let pid = self.0.as_ref().unwrap().id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
    }

    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.0.as_mut()?.try_wait().unwrap() {
                self.0 = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The next notification, within `limit`.
fn next(socket: &UnixDatagram, limit: Duration, log: &Path) -> String {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification within {limit:?} ({e}):\n{}",
            fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

#[test]
fn the_daemon_notifies_systemd_and_status_shows_the_queues_in_use() {
    if !testnet::privileged() {
        return;
    }
    let topo = Topology::new();
    let scratch = Scratch::new("notify");
    let socket = scratch.path("control.sock");
    let config_path = scratch.path("flowgate.toml");
    fs::write(&config_path, config(&socket)).unwrap();
    // systemd's end: a datagram socket on the file system (which every
    // network namespace shares).
    let notify_path = scratch.path("notify.sock");
    let systemd = UnixDatagram::bind(&notify_path).unwrap();
    let log = scratch.path("flowgate.log");
    let bin = testnet::workspace_binary("flowgate").unwrap();
    let mut daemon = Daemon(Some(
        topo.gateway
            .command(
                bin.to_str().unwrap(),
                &["run", "--config", config_path.to_str().unwrap()],
            )
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));

    let ready = next(&systemd, Duration::from_secs(30), &log);
    assert!(
        ready.starts_with("READY=1\nSTATUS=forwarding: 1 workers, generation 1"),
        "{ready}"
    );
    // READY=1 comes when the control socket already answers.
    let ctl = testnet::workspace_binary("flowgatectl").unwrap();
    let out = Command::new(&ctl)
        .args(["--socket", socket.to_str().unwrap(), "-o", "json", "status"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for interface in status["dataplane"]["interfaces"].as_array().unwrap() {
        // One worker serves queue 0 of each two-queue veth.
        assert_eq!(interface["queues"], 1, "{interface}");
        assert_eq!(interface["nic_queues"], 2, "{interface}");
        assert_eq!(interface["xdp_mode"], "native", "{interface}");
    }
    let text = Command::new(&ctl)
        .args(["--socket", socket.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    let row = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("fgs-c"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[cells.len() - 2..],
        ["1", "2"],
        "QUEUES, NIC QUEUES: {text}"
    );

    daemon.signal("HUP");
    let reloading = next(&systemd, Duration::from_secs(10), &log);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let ready = next(&systemd, Duration::from_secs(10), &log);
    assert!(ready.starts_with("READY=1\n"), "{ready}");

    daemon.signal("TERM");
    let stopping = next(&systemd, Duration::from_secs(10), &log);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let status = daemon
        .wait(Duration::from_secs(10))
        .expect("flowgate stops");
    assert!(status.success(), "{status:?}");
}
