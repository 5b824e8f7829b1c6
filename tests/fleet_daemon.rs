//! `flowgate run` with an `[etcd]` section (issue 15): the real daemon in
//! a gateway namespace, with the distribution's etcd on that namespace's
//! loopback. A service put in etcd forwards; a later put forwards without a
//! restart; the gateway's status key is in etcd; with etcd gone the
//! gateway keeps forwarding, and a restart starts from the saved state; a
//! service both in the file and in etcd stops the start by name.
//!
//! Run as root; set FLOWGATE_SKIP_NETNS=1 to skip elsewhere.

mod echo_gateway;
mod fleet_support;

use std::path::PathBuf;
use std::time::Duration;

use echo_gateway::EchoGateway;
use fleet_support::{wait_until, Etcd};
use flowgate_dataplane::testnet;

const VIP: &str = "198.18.120.10";
const BACKEND: &str = "198.18.21.11";
const PREFIX: &str = "/flowgate-fleet";

/// client ══ gateway (etcd on its loopback) ══ backend, with a UDP echo on
/// the backend (namespaces and interfaces `fgf`, subnet 198.18.20.0/24 on
/// the client side: VIP and BACKEND above).
fn topology() -> EchoGateway {
    EchoGateway::new("fgf", 20)
}

/// Writes a config with no services of its own (or `services`) and
/// `[etcd]`.
fn write_config(topo: &EchoGateway, etcd: &Etcd, services: &str) -> PathBuf {
    let text = format!(
        r#"{base}
[etcd]
endpoints = ["{endpoint}"]
prefix = "{PREFIX}"
gateway_id = "gw-1"
state_file = "{state}"
start_timeout = 2
status_ttl = 3
{services}
"#,
        base = topo.base_config(),
        endpoint = etcd.endpoint(),
        state = topo.scratch.path("etcd-state.json").display(),
    );
    topo.write_config(&text)
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
    let topo = topology();
    // Declared after the namespaces: stopped before they go.
    let mut etcd = Etcd::start_in(Some(topo.gateway.name()));
    etcd.ctl(&["put", &service_key("echo7"), &echo_service(7)]);
    let config = write_config(&topo, &etcd, "");

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
    // The log line follows the publication the echo already went through.
    assert!(
        wait_until(Duration::from_secs(5), || first
            .log()
            .contains("rules from etcd applied")),
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
    let topo = topology();
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
    let config = write_config(&topo, &etcd, &file_service);
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
