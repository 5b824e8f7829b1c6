//! The daemon's life: start, forward, stop cleanly, restart at once, survive
//! its own crash, reload on SIGHUP, and fail with one clear line and the
//! documented exit code when the machine or the config is wrong.
//!
//! Each test builds its own namespaces (client, gateway, backend) and runs
//! the real `flowgate` binary in the gateway namespace over AF_XDP. Run as
//! root; set FLOWGATE_SKIP_NETNS=1 to skip elsewhere.

mod echo_gateway;

use std::fs::{self, File};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use echo_gateway::{EchoGateway, ECHO_PORT};
use flowgate_dataplane::testnet;

const GW_BACKEND_MAC: &str = "02:66:67:00:11:01";

/// The lifecycle tests' topology (namespaces and interfaces `fgl`, subnet
/// 198.18.10.0/24 on the client side).
fn topology() -> EchoGateway {
    EchoGateway::new("fgl", 10)
}

/// A config with the echo service on `port` of the VIP.
fn echo_config(topo: &EchoGateway, port: u16) -> String {
    format!(
        "{}\n[[services]]\nname = \"echo\"\nprotocol = \"udp\"\nvip = \"{}\"\nport = {port}\n\n\
         [[services.backends]]\naddress = \"{}\"\nport = {ECHO_PORT}\n",
        topo.base_config(),
        topo.vip(),
        topo.backend()
    )
}

#[test]
fn stops_cleanly_restarts_at_once_and_survives_a_crash() {
    if !testnet::privileged() {
        return;
    }
    let topo = topology();
    let config = topo.write_config(&echo_config(&topo, 7));

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
    let topo = topology();
    let config = topo.write_config(&echo_config(&topo, 7));
    // A command-line override must not make the file's unchanged [daemon]
    // look like a change that needs a restart.
    let mut daemon = topo.start_with(&config, "hup.log", &["--cores", "0"]);
    assert!(
        topo.echo_answers(7, Duration::from_secs(15)),
        "{}",
        daemon.log()
    );

    // Move the service to another port.
    topo.write_config(&echo_config(&topo, 8));
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
    topo.write_config(&echo_config(&topo, 8).replace("port = 7007", "port = 70000"));
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
fn run_to_end(topo: &EchoGateway, prefix: &[&str], config: &Path) -> (Option<i32>, String) {
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
    let topo = topology();

    let missing = topo.write_config(&echo_config(&topo, 7).replace("\"fgl-b\"", "\"fgl-x\""));
    let (code, stderr) = run_to_end(&topo, &[], &missing);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(last_line(&stderr).contains("fgl-x"), "{stderr}");
    assert!(
        last_line(&stderr).contains("no such network interface"),
        "{stderr}"
    );

    let wrong_mac =
        topo.write_config(&echo_config(&topo, 7).replace(GW_BACKEND_MAC, "02:66:67:00:11:99"));
    let (code, stderr) = run_to_end(&topo, &[], &wrong_mac);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        last_line(&stderr)
            .contains("has MAC 02:66:67:00:11:01 but the config says 02:66:67:00:11:99"),
        "{stderr}"
    );

    let two_workers =
        topo.write_config(&echo_config(&topo, 7).replace("cores = [0]", "cores = [0, 1]"));
    let (code, stderr) = run_to_end(&topo, &[], &two_workers);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        last_line(&stderr).contains("ethtool -L fgl-c combined 2"),
        "{stderr}"
    );

    let invalid = topo.write_config(&echo_config(&topo, 7).replace("port = 7007", "port = 0"));
    let (code, stderr) = run_to_end(&topo, &[], &invalid);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("flowgate.toml:"), "{stderr}");

    // Without privileges: one line that says what is missing.
    let config = topo.write_config(&echo_config(&topo, 7));
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
