//! The daemon's life: start, forward, stop cleanly, restart at once, survive
//! its own crash, reload on SIGHUP, and fail with one clear line and the
//! documented exit code when the machine or the config is wrong.
//!
//! Each test builds its own namespaces (client, gateway, backend) and runs
//! the real `flowgate` binary in the gateway namespace over AF_XDP. Run as
//! root; set FLOWGATE_SKIP_NETNS=1 to skip elsewhere.

use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::{self, NetNs};

const GW_CLIENT_MAC: &str = "02:66:67:00:10:01";
const GW_BACKEND_MAC: &str = "02:66:67:00:11:01";
const VIP: &str = "198.18.110.10";
const BACKEND: &str = "198.18.11.11";

/// A scratch directory removed on drop; world-readable so that an
/// unprivileged flowgate can read its config.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fgt-life-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Command::new("chmod")
            .arg("0755")
            .arg(&dir)
            .status()
            .unwrap();
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

/// client ══ gateway ══ backend, with a UDP echo on the backend.
struct Topology {
    client: NetNs,
    gateway: NetNs,
    _backend: NetNs,
    echo_stop: Arc<AtomicBool>,
    scratch: Scratch,
}

impl Topology {
    fn new() -> Topology {
        let client = NetNs::new("fgl").unwrap();
        let gateway = NetNs::new("fgl").unwrap();
        let backend = NetNs::new("fgl").unwrap();
        testnet::veth_pair(&gateway, "fgl-c", &client, "eth0", 1).unwrap();
        testnet::veth_pair(&gateway, "fgl-b", &backend, "eth0", 1).unwrap();
        gateway
            .ip(&["link", "set", "fgl-c", "address", GW_CLIENT_MAC])
            .unwrap();
        gateway
            .ip(&["link", "set", "fgl-b", "address", GW_BACKEND_MAC])
            .unwrap();
        gateway
            .ip(&["addr", "add", "198.18.10.1/24", "dev", "fgl-c"])
            .unwrap();
        gateway
            .ip(&["addr", "add", "198.18.11.1/24", "dev", "fgl-b"])
            .unwrap();
        client
            .ip(&["addr", "add", "198.18.10.2/24", "dev", "eth0"])
            .unwrap();
        client
            .ip(&["route", "add", "198.18.110.0/24", "via", "198.18.10.1"])
            .unwrap();
        backend
            .ip(&["addr", "add", "198.18.11.11/24", "dev", "eth0"])
            .unwrap();
        backend
            .ip(&["route", "add", "default", "via", "198.18.11.1"])
            .unwrap();
        // A local socket's packets leave a veth with the checksum left
        // for the "hardware" to fill in; a real NIC's peer would have
        // filled it. Have the kernel compute it, as the wire would.
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
        Topology {
            client,
            gateway,
            _backend: backend,
            echo_stop,
            scratch: Scratch::new(),
        }
    }

    /// A config with the echo service on `port` of the VIP.
    fn config(&self, port: u16) -> String {
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
name = "fgl-c"
mac = "{GW_CLIENT_MAC}"

[[interfaces]]
name = "fgl-b"
mac = "{GW_BACKEND_MAC}"

[[services]]
name = "echo"
protocol = "udp"
vip = "{VIP}"
port = {port}

[[services.backends]]
address = "{BACKEND}"
port = 7007
"#,
            socket = self.scratch.path("control.sock").display()
        )
    }

    fn write_config(&self, text: &str) -> PathBuf {
        let path = self.scratch.path("flowgate.toml");
        fs::write(&path, text).unwrap();
        path
    }

    /// Starts flowgate in the gateway namespace; stderr goes to a file.
    fn start(&self, config: &Path, log: &str) -> Daemon {
        self.start_with(config, log, &[])
    }

    /// As [`Topology::start`], with more command-line arguments.
    fn start_with(&self, config: &Path, log: &str, extra: &[&str]) -> Daemon {
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
    fn echo_answers(&self, port: u16, wait: Duration) -> bool {
        let socket = self
            .client
            .enter(|| UdpSocket::bind(("198.18.10.2", 0)))
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

    /// Whether any XDP program is attached to the gateway's interfaces.
    fn xdp_attached(&self) -> bool {
        let out = self.gateway.ip(&["link", "show"]).unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.echo_stop.store(true, Ordering::Relaxed);
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

    /// Waits (bounded) for the process to end.
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
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
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

#[test]
fn stops_cleanly_restarts_at_once_and_survives_a_crash() {
    if !testnet::privileged() {
        return;
    }
    let topo = Topology::new();
    let config = topo.write_config(&topo.config(7));

    let mut first = topo.start(&config, "first.log");
    assert!(
        topo.echo_answers(7, Duration::from_secs(15)),
        "no echo through the gateway:\n{}",
        first.log()
    );
    assert!(topo.xdp_attached());
    first.signal("TERM");
    let status = first
        .wait(Duration::from_secs(10))
        .expect("flowgate did not stop on SIGTERM");
    assert!(status.success(), "exit {status:?}:\n{}", first.log());
    assert!(
        !topo.xdp_attached(),
        "XDP program left attached after SIGTERM"
    );
    assert!(
        !topo.scratch.path("control.sock").exists(),
        "control socket left behind"
    );
    // With flowgate gone, nothing forwards: the box is not a router.
    assert!(!topo.echo_answers(7, Duration::from_millis(500)));

    // An immediate restart works.
    let mut second = topo.start(&config, "second.log");
    assert!(
        topo.echo_answers(7, Duration::from_secs(15)),
        "no echo after restart:\n{}",
        second.log()
    );
    // A crash (SIGKILL: no cleanup at all) leaves nothing that blocks the
    // next start.
    second.signal("KILL");
    second
        .wait(Duration::from_secs(5))
        .expect("SIGKILL did not end flowgate");
    let mut third = topo.start(&config, "third.log");
    assert!(
        topo.echo_answers(7, Duration::from_secs(15)),
        "no echo after a crash:\n{}",
        third.log()
    );
    third.signal("INT");
    let status = third
        .wait(Duration::from_secs(10))
        .expect("flowgate did not stop on SIGINT");
    assert!(status.success(), "exit {status:?}:\n{}", third.log());
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_rules_on_an_invalid_one() {
    if !testnet::privileged() {
        return;
    }
    let topo = Topology::new();
    let config = topo.write_config(&topo.config(7));
    // A command-line override must not make the file's unchanged [daemon]
    // look like a change that needs a restart.
    let mut daemon = topo.start_with(&config, "hup.log", &["--cores", "0"]);
    assert!(
        topo.echo_answers(7, Duration::from_secs(15)),
        "{}",
        daemon.log()
    );

    // Move the service to another port.
    topo.write_config(&topo.config(8));
    daemon.signal("HUP");
    assert!(
        topo.echo_answers(8, Duration::from_secs(10)),
        "new rules not applied:\n{}",
        daemon.log()
    );
    assert!(
        !topo.echo_answers(7, Duration::from_millis(500)),
        "old port still served"
    );

    // An invalid file is rejected; the running rules stay.
    topo.write_config(&topo.config(8).replace("port = 7007", "port = 70000"));
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("reload rejected") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert!(log.contains("reload rejected"), "{log}");
    assert!(
        log.contains("70000"),
        "the rejection names the problem:\n{log}"
    );
    assert!(
        topo.echo_answers(8, Duration::from_secs(5)),
        "old rules stopped after a bad reload"
    );
    assert!(
        daemon.wait(Duration::from_millis(10)).is_none(),
        "flowgate exited on a bad reload"
    );
    daemon.signal("TERM");
    assert!(daemon
        .wait(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// Runs flowgate to completion (bounded) and returns its exit code and
/// stderr.
fn run_to_end(topo: &Topology, prefix: &[&str], config: &Path) -> (Option<i32>, String) {
    let bin = testnet::workspace_binary("flowgate").unwrap();
    let mut args: Vec<&str> = prefix.to_vec();
    args.extend([
        bin.to_str().unwrap(),
        "run",
        "--config",
        config.to_str().unwrap(),
    ]);
    let log = topo.scratch.path("fail.log");
    let mut child = topo
        .gateway
        .command(args[0], &args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    (status.and_then(|s| s.code()), stderr)
}

/// The last line, which is the one an operator reads.
fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or("")
}

#[test]
fn setup_failures_are_one_clear_line_with_their_exit_code() {
    if !testnet::privileged() {
        return;
    }
    let topo = Topology::new();

    let missing = topo.write_config(&topo.config(7).replace("\"fgl-b\"", "\"fgl-x\""));
    let (code, stderr) = run_to_end(&topo, &[], &missing);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(last_line(&stderr).contains("fgl-x"), "{stderr}");
    assert!(
        last_line(&stderr).contains("no such network interface"),
        "{stderr}"
    );

    let wrong_mac = topo.write_config(&topo.config(7).replace(GW_BACKEND_MAC, "02:66:67:00:11:99"));
    let (code, stderr) = run_to_end(&topo, &[], &wrong_mac);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        last_line(&stderr)
            .contains("has MAC 02:66:67:00:11:01 but the config says 02:66:67:00:11:99"),
        "{stderr}"
    );

    let two_workers = topo.write_config(&topo.config(7).replace("cores = [0]", "cores = [0, 1]"));
    let (code, stderr) = run_to_end(&topo, &[], &two_workers);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        last_line(&stderr).contains("ethtool -L fgl-c combined 2"),
        "{stderr}"
    );

    let invalid = topo.write_config(&topo.config(7).replace("port = 7007", "port = 0"));
    let (code, stderr) = run_to_end(&topo, &[], &invalid);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("flowgate.toml:"), "{stderr}");

    // Without privileges: one line that says what is missing.
    let config = topo.write_config(&topo.config(7));
    let unprivileged = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let (code, stderr) = run_to_end(&topo, &unprivileged, &config);
    assert_eq!(code, Some(3), "{stderr}");
    let line = last_line(&stderr).to_lowercase();
    assert!(
        line.contains("cap_") || line.contains("permission"),
        "{stderr}"
    );
    assert!(!topo.xdp_attached());
}
