//! `flowgate check` is a gate for `flowgate run`: every config `run`
//! refuses at start without touching the machine, `check` refuses too, with
//! the same line and the same exit code, because both go through one
//! function (`daemon::load_checked`). A config file is read only when it
//! is a regular file of at most 256 MiB, by both and by a SIGHUP reload.
//!
//! Each broken config is given to the real `flowgate check` and `flowgate
//! run`. Their interfaces (`fgchk0`, `fgchk1`) exist nowhere, so a `run`
//! that got past these checks would stop at the first interface with exit
//! 3 and fail the test, having touched nothing. The tests of what only
//! `run` can find and of a reload run in network namespaces of their own
//! (root; FLOWGATE_SKIP_NETNS=1 skips them). Needs the binaries built
//! first (`cargo build --workspace --bins`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::{self, NetNs};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fgt-gate-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How a command ended: its exit code and what it wrote to stderr.
#[derive(Debug, PartialEq, Eq)]
struct Ended {
    code: i32,
    stderr: String,
}

/// Waits for `child` (at most `limit`; then kills it and fails).
fn wait_bounded(mut child: Child, what: &str, limit: Duration) -> Ended {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    Ended {
        code: status.code().unwrap_or(-1),
        stderr,
    }
}

/// `flowgate ARGS` with `env` set, to its end (bounded).
fn flowgate(args: &[&str], env: &[(&str, &str)]) -> Ended {
    let bin = testnet::workspace_binary("flowgate").unwrap();
    let mut command = Command::new(bin);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().unwrap();
    wait_bounded(
        child,
        &format!("flowgate {args:?}"),
        Duration::from_secs(60),
    )
}

/// Asserts that `check` and `run` refuse the config at `path` alike:
/// exit 2, the same stderr, and that stderr holds `says`.
fn refused_alike(path: &Path, says: &str, env: &[(&str, &str)]) {
    let path = path.to_str().unwrap();
    let check = flowgate(&["check", "--config", path], env);
    let run = flowgate(&["run", "--config", path], env);
    assert_eq!(check, run, "check and run differ on {path}");
    assert_eq!(check.code, 2, "{}", check.stderr);
    assert!(check.stderr.starts_with("flowgate: "), "{}", check.stderr);
    assert!(
        check.stderr.contains(says),
        "expected {says:?} in:\n{}",
        check.stderr
    );
}

/// A config `run` would start with, but for the machine: two interfaces
/// that do not exist here, one worker, no services.
fn config_with(daemon: &str, interfaces: &str) -> String {
    format!("[daemon]\ncores = [0]\n{daemon}\n{interfaces}")
}

const TWO_INTERFACES: &str = r#"
[[interfaces]]
name = "fgchk0"
mac = "02:66:67:00:20:01"

[[interfaces]]
name = "fgchk1"
mac = "02:66:67:00:20:02"
"#;

#[test]
fn a_log_filter_run_cannot_parse_is_refused_by_check_too() {
    let scratch = Scratch::new();
    let path = scratch.write(
        "gw.toml",
        &config_with("log_level = \"info,[\"", TWO_INTERFACES),
    );
    let says = format!(
        "flowgate: {}: daemon.log_level: bad log filter \"info,[\": invalid filter directive\n",
        path.display()
    );
    refused_alike(&path, &says, &[]);
    // Also while RUST_LOG would override it: the next start may run
    // without RUST_LOG.
    refused_alike(&path, &says, &[("RUST_LOG", "info")]);
    let path = scratch.write(
        "level.toml",
        &config_with("log_level = \"flowgate=loud\"", TWO_INTERFACES),
    );
    refused_alike(
        &path,
        "daemon.log_level: bad log filter \"flowgate=loud\"",
        &[],
    );
}

#[test]
fn a_config_without_interfaces_is_refused_by_both() {
    let scratch = Scratch::new();
    let path = scratch.write("gw.toml", &config_with("", ""));
    refused_alike(
        &path,
        "flowgate: the config has no [[interfaces]]: flowgate run needs at least one\n",
        &[],
    );
}

#[test]
fn interface_and_core_faults_are_refused_by_both_where_they_are() {
    let scratch = Scratch::new();
    let long = TWO_INTERFACES.replace("fgchk1", "a-very-long-name0");
    let slash = TWO_INTERFACES.replace("fgchk1", "fg/chk1");
    let twice = TWO_INTERFACES.replace("fgchk1", "fgchk0");
    let malformed = TWO_INTERFACES.replace("02:66:67:00:20:02", "02:66:67:00:20:0g");
    let multicast = TWO_INTERFACES.replace("02:66:67:00:20:02", "01:00:5e:00:00:01");
    let zero = TWO_INTERFACES.replace("02:66:67:00:20:02", "00:00:00:00:00:00");
    let cases = [
        (
            config_with("", &long),
            ":10:8: interface name \"a-very-long-name0\" is longer than 15 bytes",
        ),
        (config_with("", &slash), ":10:8: interface name \"fg/chk1\""),
        (
            config_with("", &twice),
            ":10:8: interface \"fgchk0\" is listed twice (first at line 6)",
        ),
        (
            config_with("", &malformed),
            ":11:7: MAC \"02:66:67:00:20:0g\" of interface \"fgchk1\" is not a MAC address",
        ),
        (
            config_with("", &multicast),
            ":11:7: MAC 01:00:5e:00:00:01 of interface \"fgchk1\" is a multicast address",
        ),
        (
            config_with("", &zero),
            ":11:7: MAC 00:00:00:00:00:00 of interface \"fgchk1\"",
        ),
        (
            format!("[daemon]\ncores = [0, 1, 0]\n{TWO_INTERFACES}"),
            ":2:16: daemon.cores lists core 0 twice",
        ),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let path = scratch.write(&format!("case{i}.toml"), text);
        refused_alike(&path, &format!("{}{says}", path.display()), &[]);
    }
}

#[test]
fn cores_given_twice_on_the_command_line_are_refused_before_the_machine() {
    let scratch = Scratch::new();
    let path = scratch.write("gw.toml", &config_with("", TWO_INTERFACES));
    let path = path.to_str().unwrap();
    let run = flowgate(&["run", "--config", path, "--cores", "0,0"], &[]);
    assert_eq!(
        run,
        Ended {
            code: 2,
            stderr: "flowgate: core 0 is listed twice\n".into()
        }
    );
}

#[test]
fn rules_the_xdp_maps_cannot_hold_are_refused_by_both_in_the_same_words() {
    let scratch = Scratch::new();
    let mut text = config_with("", TWO_INTERFACES);
    // One service key more than the `services` map holds.
    for i in 0..131_073u32 {
        text.push_str(&format!(
            "[[services]]\nname = \"s{i}\"\nprotocol = \"tcp\"\nvip = \"198.18.{}.1\"\nport = {}\n\
             backends = [{{ address = \"198.18.1.11\", port = 8080 }}]\n",
            100 + i / 60_000,
            1 + i % 60_000
        ));
    }
    let path = scratch.write("gw.toml", &text);
    let says = format!(
        "flowgate: {}: the config needs 131 073 service keys (protocol, VIP, port); \
         the XDP program holds at most 131 072\n",
        path.display()
    );
    refused_alike(&path, &says, &[]);
}

#[test]
fn a_config_path_that_is_not_a_regular_file_is_refused_by_both_at_once() {
    let scratch = Scratch::new();
    let fifo = scratch.path("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let socket = scratch.path("control.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let link = scratch.path("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    for (path, what) in [
        (fifo, "a FIFO"),
        (PathBuf::from("/dev/zero"), "a character device"),
        (link, "a character device"),
        (scratch.0.clone(), "a directory"),
        (socket, "a socket"),
    ] {
        let says = format!(
            "flowgate: invalid config:\n{}: cannot read config: it is {what}, not a regular file\n",
            path.display()
        );
        refused_alike(&path, &says, &[]);
    }
}

#[test]
fn a_config_file_over_256_mib_is_refused_by_its_size() {
    let scratch = Scratch::new();
    let path = scratch.path("gw.toml");
    // Sparse: it takes no disk, and is refused before it is read.
    fs::File::create(&path)
        .unwrap()
        .set_len((256 << 20) + 1)
        .unwrap();
    let says = format!(
        "flowgate: invalid config:\n{}: cannot read config: it holds 268435457 bytes; \
         a config file holds at most 256 MiB\n",
        path.display()
    );
    refused_alike(&path, &says, &[]);
}

/// Whether tests that need namespaces run here.
fn netns_tests() -> bool {
    std::env::var_os("FLOWGATE_SKIP_NETNS").is_none() && testnet::privileged()
}

#[test]
fn a_config_check_accepts_is_refused_by_run_only_for_the_machine() {
    if !netns_tests() {
        return;
    }
    let scratch = Scratch::new();
    let path = scratch.write("gw.toml", &config_with("", TWO_INTERFACES));
    let path = path.to_str().unwrap();
    let check = flowgate(&["check", "--config", path], &[]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    // A namespace of its own: only `lo`, so `run` finds no interface.
    let ns = NetNs::new("fgchk").unwrap();
    let bin = testnet::workspace_binary("flowgate").unwrap();
    let child = ns
        .command(bin.to_str().unwrap(), &["run", "--config", path])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_bounded(child, "flowgate run", Duration::from_secs(30));
    assert_eq!(run.code, 3, "{}", run.stderr);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("flowgate: interface fgchk0: "),
        "{}",
        run.stderr
    );
}

/// A running `flowgate run` in a namespace of its own, with one veth
/// interface; killed on drop if still running.
struct Running {
    child: Option<Child>,
    log: PathBuf,
    socket: PathBuf,
    _gateway: NetNs,
    _peer: NetNs,
}

impl Running {
    fn start(scratch: &Scratch) -> (Running, PathBuf) {
        let gateway = NetNs::new("fgchk").unwrap();
        let peer = NetNs::new("fgchk").unwrap();
        testnet::veth_pair(&gateway, "fgchk0", &peer, "eth0", 1).unwrap();
        gateway
            .ip(&["link", "set", "fgchk0", "address", "02:66:67:00:20:01"])
            .unwrap();
        let socket = scratch.path("control.sock");
        let config = scratch.write(
            "gw.toml",
            &format!(
                "[daemon]\ncores = [0]\nframe_count = 4096\nrx_ring_size = 512\n\
                 tx_ring_size = 512\nfill_ring_size = 1024\ncompletion_ring_size = 1024\n\
                 control_socket = \"{}\"\n\n[flows]\ncapacity = 4096\n\n\
                 [[interfaces]]\nname = \"fgchk0\"\nmac = \"02:66:67:00:20:01\"\n",
                socket.display()
            ),
        );
        let log = scratch.path("flowgate.log");
        let bin = testnet::workspace_binary("flowgate").unwrap();
        let child = gateway
            .command(
                bin.to_str().unwrap(),
                &["run", "--config", config.to_str().unwrap()],
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut running = Running {
            child: Some(child),
            log,
            socket,
            _gateway: gateway,
            _peer: peer,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !running.status_answers() {
            running.assert_running();
            assert!(
                Instant::now() < deadline,
                "flowgate did not serve its control socket within 30 s:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (running, config)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        let child = self.child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            panic!("flowgate exited ({status}):\n{}", self.log());
        }
    }

    /// Whether `flowgatectl status` answers within 5 s.
    fn status_answers(&self) -> bool {
        let bin = testnet::workspace_binary("flowgatectl").unwrap();
        let child = Command::new(bin)
            .arg("--socket")
            .arg(&self.socket)
            .arg("status")
            .env_remove("FLOWGATE_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(child, "flowgatectl status", Duration::from_secs(5)).code == 0
    }

    fn hang_up(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// Waits (up to 10 s) until the log holds `text` `count` times.
    fn wait_log(&self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "{text:?} not logged {count} times:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_reload_refuses_a_fifo_a_device_and_a_huge_file_and_keeps_serving() {
    if !netns_tests() {
        return;
    }
    let scratch = Scratch::new();
    let (mut running, config) = Running::start(&scratch);
    let fifo = scratch.path("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let huge = scratch.path("huge.toml");
    fs::File::create(&huge)
        .unwrap()
        .set_len((256 << 20) + 1)
        .unwrap();
    let cases = [
        (fifo, "it is a FIFO, not a regular file"),
        (
            PathBuf::from("/dev/zero"),
            "it is a character device, not a regular file",
        ),
        (
            huge,
            "it holds 268435457 bytes; a config file holds at most 256 MiB",
        ),
    ];
    let good = fs::read_to_string(&config).unwrap();
    for (n, (target, says)) in cases.iter().enumerate() {
        // The config's path now leads to something that is not a config.
        fs::remove_file(&config).unwrap();
        std::os::unix::fs::symlink(target, &config).unwrap();
        running.hang_up();
        running.wait_log("reload rejected", n + 1);
        let log = running.log();
        assert!(log.contains(says), "{says:?} not in:\n{log}");
        // Neither the main loop nor the control API is stuck on it.
        running.assert_running();
        assert!(running.status_answers(), "{}", running.log());
    }
    // And the file, once a file again, reloads.
    fs::remove_file(&config).unwrap();
    fs::write(&config, good).unwrap();
    running.hang_up();
    running.wait_log("config reloaded", 1);
    running.assert_running();
}
