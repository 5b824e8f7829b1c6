//! The real daemon refuses a change its XDP maps cannot hold, at their
//! real size, and changes nothing: the `flowgate` binary on the demo's
//! topology (tests/netns/), a change one key over the `reply_sources` map
//! and one over the `services` map sent over its control socket, and
//! before and after each: what `flowgatectl` shows, the generation, and
//! what the maps of both interfaces hold, read from the kernel.
//!
//! A request holds at most 16 MiB, about 120 000 `service_add` edits, so
//! the services map is filled in two steps: a batch that fits (and runs),
//! then the one that goes one key over.
//!
//! Needs root; FLOWGATE_SKIP_NETNS=1 skips. Needs the binaries built
//! first (scripts/test.sh does it).

mod netns;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use flowgate_api::{
    ApiError, BackendSpec, Batch, ClientError, ControlClient, Edit, ErrorCode, Reply, Request,
    RequestEnvelope, ServiceSpec, MAX_REQUEST_BYTES,
};
use flowgate_dataplane::testnet;
use flowgate_dataplane::xdp::{read_attached_maps, XdpCapacity, XdpMapKeys};
use netns::*;

/// What an operator and the kernel see of the running gateway.
#[derive(Debug, PartialEq)]
struct Seen {
    /// `flowgatectl status`, without its uptime line.
    status: String,
    /// `flowgatectl service list`.
    services: String,
    /// `flowgatectl backend list web`.
    backends: String,
    /// The generation the control API reports.
    generation: u64,
    /// The maps of the program on fg-client and on fg-backend.
    maps: Vec<XdpMapKeys>,
}

fn flowgatectl(socket: &Path, args: &[&str]) -> String {
    let bin = testnet::workspace_binary("flowgatectl").unwrap();
    let out = std::process::Command::new(bin)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowgatectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn client(socket: &Path) -> ControlClient {
    let mut client = ControlClient::connect(socket).unwrap();
    client.set_timeout(Some(Duration::from_secs(300))).unwrap();
    client
}

fn seen(topo: &Topology, socket: &Path) -> Seen {
    let status: String = flowgatectl(socket, &["status"])
        .lines()
        .filter(|l| !l.starts_with("uptime"))
        .map(|l| format!("{l}\n"))
        .collect();
    let Reply::Status(reply) = client(socket).call(Request::Status {}).unwrap() else {
        panic!("not a status")
    };
    let maps = ["fg-client", "fg-backend"]
        .into_iter()
        .map(|interface| {
            topo.gateway
                .enter(move || read_attached_maps(interface))
                .unwrap()
                .unwrap()
        })
        .collect();
    Seen {
        status,
        services: flowgatectl(socket, &["service", "list"]),
        // How long each backend has been in its state moves with the clock.
        backends: flowgatectl(socket, &["backend", "list", "web"])
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let since = w
                    .iter()
                    .position(|x| *x == "ago")
                    .map_or(usize::MAX, |i| i - 1);
                let kept: Vec<&str> = w
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != since)
                    .map(|(_, x)| *x)
                    .collect();
                format!("{}\n", kept.join(" "))
            })
            .collect(),
        generation: reply.dataplane.generation,
        maps,
    }
}

/// Sends `edits` as one batch.
fn batch(socket: &Path, edits: Vec<Edit>) -> Result<Reply, ClientError> {
    let request = Request::Batch(Batch {
        edits,
        dry_run: false,
    });
    let size = serde_json::to_vec(&RequestEnvelope::new(request.clone()))
        .unwrap()
        .len();
    assert!(size < MAX_REQUEST_BYTES, "the request is {size} bytes");
    client(socket).call(request)
}

/// Sends `edits` as one batch; returns the daemon's refusal.
fn refused(socket: &Path, edits: Vec<Edit>) -> ApiError {
    match batch(socket, edits) {
        Err(ClientError::Rejected(e)) => e,
        other => panic!("not refused: {other:?}"),
    }
}

/// New services `first..first + n`, TCP and UDP in turn, on 198.18.200.1
/// and .2, all on one backend of the demo's (no new reply source), with
/// the smallest Maglev table (the demo's default is large).
fn services(first: usize, n: usize) -> Vec<Edit> {
    (first..first + n)
        .map(|i| {
            Edit::ServiceAdd(ServiceSpec {
                name: format!("x{i}"),
                protocol: if i % 2 == 0 { "tcp" } else { "udp" }.into(),
                vip: format!("198.18.200.{}", 1 + i / 131_070),
                port: u16::try_from(i / 2 % 65_535 + 1).unwrap(),
                scheduler: None,
                maglev_table_size: Some(251),
                backends: vec![BackendSpec::new("198.18.1.11", 8080)],
            })
        })
        .collect()
}

/// One new TCP service with `n` backends, none of them the demo's (its
/// Maglev table, a prime, must be larger than that).
fn backends(n: usize) -> Vec<Edit> {
    let backends = (0..n)
        .map(|i| {
            BackendSpec::new(
                format!("198.19.{}.1", i / 65_535),
                u16::try_from(i % 65_535 + 1).unwrap(),
            )
        })
        .collect();
    vec![Edit::ServiceAdd(ServiceSpec {
        name: "many".into(),
        protocol: "tcp".into(),
        vip: "198.18.201.1".into(),
        port: 80,
        scheduler: None,
        maglev_table_size: Some(262_147),
        backends,
    })]
}

#[test]
fn a_change_one_key_over_a_map_is_refused_and_nothing_changes() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&topo.config(&[0]));
    let socket = topo.scratch.path("control.sock");
    let capacity = XdpCapacity::PROGRAM;
    let before = seen(&topo, &socket);
    let [client_side, backend_side] = before.maps.as_slice() else {
        panic!("{:?}", before.maps)
    };
    assert_eq!(client_side, backend_side);
    let running = client_side.owned();
    assert!(!running.services.is_empty() && !running.reply_sources.is_empty());

    // One reply source too many (the new service's key fits).
    let e = refused(
        &socket,
        backends(capacity.reply_sources + 1 - running.reply_sources.len()),
    );
    assert_eq!(e.code, ErrorCode::Invalid, "{e:?}");
    assert_eq!(
        e.problems,
        [
            "the change needs 262 145 reply sources (protocol, backend address, backend port); \
          the XDP program holds at most 262 144"
        ]
    );
    assert_eq!(seen(&topo, &socket), before);

    // Half the services map, which runs...
    let half = capacity.service_keys / 2;
    let Ok(Reply::Changed(report)) = batch(&socket, services(0, half)) else {
        panic!("{}", gw.log())
    };
    assert_eq!(report.generation, before.generation + 1);
    let before = seen(&topo, &socket);
    assert_eq!(before.maps[0].services.len(), running.services.len() + half);
    // ... then one service key too many.
    let e = refused(
        &socket,
        services(
            half,
            capacity.service_keys + 1 - running.services.len() - half,
        ),
    );
    assert_eq!(e.code, ErrorCode::Invalid, "{e:?}");
    assert_eq!(
        e.problems,
        [
            "the change needs 131 073 service keys (protocol, VIP, port); \
          the XDP program holds at most 131 072"
        ]
    );
    assert_eq!(seen(&topo, &socket), before);

    // The old rules still forward.
    let dns = SocketAddr::new(WEB_VIP.into(), 53);
    assert!(
        udp_query(&topo.client, dns, Duration::from_secs(2)).is_ok(),
        "{}",
        gw.log()
    );
    gw.assert_running();
    gw.stop();
}
