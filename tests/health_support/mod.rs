//! What the health tests in namespaces ask the running gateway, shared by
//! them: a backend's health state through the control API, a bounded poll,
//! and which forwarding mode the daemon runs in.

#![allow(dead_code)] // each test binary uses its own part

use std::net::IpAddr;
use std::time::{Duration, Instant};

use flowgate_api::{ControlClient, Reply, Request, ServiceName};

use crate::netns::{backend_v4, Gateway};

/// Backend `b` (on `port`) of `service`: its health state and whether it
/// has been checked yet.
pub fn state(client: &mut ControlClient, service: &str, b: u8, port: u16) -> (String, bool) {
    let Reply::Backends(list) = client
        .call(Request::BackendList(ServiceName {
            service: service.into(),
        }))
        .unwrap()
    else {
        panic!("not a backend list");
    };
    let address = IpAddr::from(backend_v4(b));
    let view = list
        .backends
        .iter()
        .find(|v| v.address == address && v.port == port)
        .unwrap();
    let health = view.health.clone().unwrap();
    (health.state, health.last_check.is_some())
}

/// Polls `done` every 10 ms until it holds or `limit` passes; when it held.
pub fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if done() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Which mode this run forwards in, as the daemon says at start.
pub fn print_fast_path_mode(gateway: &Gateway) {
    let log = gateway.log();
    let mode = log.lines().find(|l| l.contains("kernel fast path"));
    println!(
        "{}",
        mode.unwrap_or("no word on the kernel fast path in the log")
    );
}
