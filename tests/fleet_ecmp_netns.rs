//! Two gateways behind ECMP choose the same backend for every flow, and a
//! reply that reaches the gateway that did not see its connection still
//! goes back from the VIP (issue 15 point 6): a router with a layer-4
//! multipath route to the VIP over two gateways that take the same rules
//! from one real etcd, the backends' replies spread over the gateways by
//! the router too; 1 000 connections per service (`maglev`, `sh`) from
//! eight client addresses each reach the backend that the rules alone
//! (`flowgate explain`'s code) choose.
//!
//! Run as root; set FLOWGATE_SKIP_NETNS=1 to skip elsewhere.

#[path = "netns/fleet.rs"]
mod fleet;
mod fleet_support;

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fleet::*;
use fleet_support::Etcd;
use flowgate_api::ExplainQuery;
use flowgate_dataplane::control::explain::explain;
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::{rules, testnet};

const PER_SERVICE: usize = 1_000;

/// The backend a single gateway with the fleet's rules gives a new flow
/// from `local` to the VIP's `port`.
fn single_gateway_choice(snapshot: &Snapshot, local: std::net::SocketAddr, port: u16) -> u8 {
    let reply = explain(
        snapshot,
        None,
        &ExplainQuery {
            from: local.to_string(),
            to: format!("{VIP}:{port}"),
            protocol: Some("tcp".into()),
        },
    )
    .unwrap();
    backend_number(reply.backend.as_deref().unwrap_or("")).unwrap()
}

/// `total` connections from the clients, every other one to each
/// service, the client addresses in turn, on four threads (bounded to
/// 240 s): each with its service port and what it got.
fn connections(fleet: &Fleet, total: usize) -> Vec<(u16, Result<Answer, String>)> {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    fleet
        .client
        .enter(|| {
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            let mut mine = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= total || started.elapsed() > Duration::from_secs(240) {
                                    break;
                                }
                                let port = if i.is_multiple_of(2) {
                                    MAGLEV_PORT
                                } else {
                                    SH_PORT
                                };
                                let from = client_v4((i / 2 % usize::from(CLIENTS)) as u8);
                                let to = SocketAddrV4::new(VIP, port);
                                mine.push((port, request(from, to, 0, 0, Duration::from_secs(5))));
                            }
                            mine
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap())
                    .collect()
            })
        })
        .unwrap()
}

/// Every connection reached the backend one gateway with the fleet's
/// rules would choose; `sh` kept each client address on one backend.
fn assert_single_gateway_choice(results: &[(u16, Result<Answer, String>)]) {
    let snapshot = Snapshot::build(&rules::load_str(&rules_file(), "fleet.toml").unwrap(), None);
    let total = results.len();
    let mut wrong = Vec::new();
    let mut sh_clients = std::collections::BTreeMap::new();
    for (port, answer) in results {
        let answer = answer.as_ref().unwrap();
        let expected = single_gateway_choice(&snapshot, answer.local, *port);
        if answer.backend != format!("b{expected}") {
            wrong.push((*port, answer.local, answer.backend.clone(), expected));
        }
        if *port == SH_PORT {
            let first = sh_clients
                .entry(answer.local.ip())
                .or_insert_with(|| answer.backend.clone());
            assert_eq!(*first, answer.backend, "sh moved {}", answer.local.ip());
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {total} connections reached another backend than one gateway would choose \
         (port, client, got, expected): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(sh_clients.len(), usize::from(CLIENTS));
}

#[test]
fn two_gateways_behind_ecmp_send_every_connection_where_one_gateway_would() {
    if !testnet::privileged() {
        return;
    }
    let fleet = Fleet::new();
    fleet.router_multipath(&format!("{VIP}/32"), "main", &[1, 2]);
    fleet.replies_through_gateways(&[1, 2]);
    let etcd = Etcd::start();
    fleet.put_services(&etcd);
    let forwarders: Vec<fleet_support::Proxy> = fleet
        .gateways
        .iter()
        .map(|ns| forwarder(ns, etcd.address()))
        .collect();
    let gateways: Vec<Gateway> = (1..=2u8)
        .map(|g| {
            let config = fleet.gateway_config(g, &forwarders[usize::from(g - 1)].endpoint(), "");
            fleet.start_gateway(g, &config)
        })
        .collect();

    let started = Instant::now();
    let total = 2 * PER_SERVICE;
    let results = connections(&fleet, total);
    let logs = || {
        gateways
            .iter()
            .map(Gateway::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let failures: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(
        results.len() == total && failures.is_empty(),
        "{} of {total} connections made, {} failed: {:?}\n{}",
        results.len(),
        failures.len(),
        &failures[..failures.len().min(10)],
        logs()
    );
    assert_single_gateway_choice(&results);
    // The backends saw the clients themselves.
    let served = fleet.served();
    for (_, answer) in &results {
        let answer = answer.as_ref().unwrap();
        assert!(
            served.iter().any(|s| s.peer == answer.local),
            "{} was never seen by a backend",
            answer.local
        );
    }
    // Both gateways made connections, and replies crossed: some reached
    // the gateway that had no connection for them.
    let new_flows: Vec<u64> = gateways
        .iter()
        .map(|g| g.metric("flowgate_new_flows_total"))
        .collect();
    let stateless: Vec<u64> = gateways
        .iter()
        .map(|g| g.metric("flowgate_stateless_replies_total"))
        .collect();
    eprintln!(
        "{total} connections in {:?}; new flows per gateway {new_flows:?}, \
         replies translated without a connection {stateless:?}",
        started.elapsed()
    );
    assert!(
        new_flows.iter().all(|&n| n >= (total / 10) as u64),
        "ECMP did not spread the connections: {new_flows:?}"
    );
    assert!(
        stateless.iter().all(|&n| n > 0),
        "no reply crossed to the other gateway: {stateless:?}"
    );
    for (g, gateway) in gateways.iter().enumerate() {
        assert!(
            gateway.metric("flowgate_dropped_packets_total") == 0,
            "gateway {} dropped packets:\n{}",
            g + 1,
            gateway.log()
        );
    }
    drop(gateways);
    drop(forwarders);
}
