//! Distribution paths on the real gateway: the `flowgate` binary on real
//! AF_XDP sockets in the demo's namespaces (tests/netns/). A path in the
//! config sends the client's new connections straight to one backend; a
//! change through the control API that removes it gives them back to the
//! scheduler, `explain` shows the path stage while it is there, and a path
//! added by an edit steers the next connections.
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod netns;

use std::net::SocketAddr;
use std::time::Duration;

use flowgate_api::{
    ApplyConfig, Batch, ControlClient, Edit, ExplainQuery, PathSpec, Reply, Request,
};
use netns::*;

/// Time allowed for one batch of requests; far more than they need.
const BUDGET: Duration = Duration::from_secs(60);

/// The topology's rules with, if `path`, web's clients at 198.18.0.2
/// (the client namespace) sent to its second backend.
fn rules(topo: &Topology, path: bool) -> String {
    let config = topo.config(&[0]);
    if !path {
        return config;
    }
    // Before web-wrr's header: the path is the service above's, web's.
    let at = config.find("[[services]]\nname = \"web-wrr\"").unwrap();
    format!(
        "{}[[services.paths]]\nclient = \"198.18.0.2\"\nbackends = [\"198.18.1.12:8080\"]\n\n{}",
        &config[..at],
        &config[at..]
    )
}

fn explain(client: &mut ControlClient) -> flowgate_api::ExplainReply {
    let query = ExplainQuery {
        from: "198.18.0.2:40000".into(),
        to: "198.18.100.10:80".into(),
        protocol: None,
    };
    match client.call(Request::Explain(query)).unwrap() {
        Reply::Explain(reply) => reply,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_path_in_the_config_steers_live_connections_until_a_change_removes_it() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&rules(&topo, true));
    let web = SocketAddr::new(WEB_VIP.into(), 80);
    let socket = topo.scratch.path("control.sock");
    let mut client = ControlClient::connect(&socket).unwrap();

    let load = http_load(&topo.client, web, 200, 4, BUDGET);
    assert_eq!(load.answered(), 200, "{:?}\n{}", load.failures, gw.log());
    let only_b2: Vec<_> = load.by_backend.keys().cloned().collect();
    assert_eq!(only_b2, ["b2"], "every connection on the path's backend");
    let reply = explain(&mut client);
    let path = reply.path.as_ref().expect("explain shows the path");
    assert_eq!(path.chosen.as_deref(), Some("198.18.1.12:8080"));

    // The same rules without the path, through the control API.
    let apply = ApplyConfig {
        config: rules(&topo, false),
        origin: Some("no-path.toml".into()),
        dry_run: false,
    };
    match client.call(Request::Apply(apply)).unwrap() {
        Reply::Changed(report) => assert!(report.applied, "{report:?}"),
        other => panic!("{other:?}"),
    }
    let load = http_load(&topo.client, web, 200, 4, BUDGET);
    assert_eq!(load.answered(), 200, "{:?}\n{}", load.failures, gw.log());
    assert_spread("web", &load.by_backend, &[("b1", 1), ("b2", 1), ("b3", 2)]);
    assert_eq!(explain(&mut client).path, None);

    // One path added through the API: the next connections follow it.
    let add = Edit::PathAdd(PathSpec {
        service: "web".into(),
        client: "198.18.0.2".into(),
        backends: vec!["198.18.1.13:8080".into()],
    });
    let batch = Batch {
        edits: vec![add],
        dry_run: false,
    };
    match client.call(Request::Batch(batch)).unwrap() {
        Reply::Changed(report) => assert!(report.applied, "{report:?}"),
        other => panic!("{other:?}"),
    }
    let load = http_load(&topo.client, web, 100, 4, BUDGET);
    assert_eq!(load.answered(), 100, "{:?}\n{}", load.failures, gw.log());
    let only_b3: Vec<_> = load.by_backend.keys().cloned().collect();
    assert_eq!(
        only_b3,
        ["b3"],
        "every connection on the added path's backend"
    );

    gw.assert_running();
    gw.stop();
}
