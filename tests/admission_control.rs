//! Limits through the control API: a config with invalid limits sent with
//! `apply` is refused with each problem at its line in the sent file and
//! nothing applied; valid limits are applied and reported as a change of
//! the service's `limits`.

mod control_support;

use control_support::*;
use flowgate_api::{ApplyConfig, ClientError, ErrorCode, Reply, Request};

/// `base_rules` with `limits` as web's `[services.limits]` and `backend`
/// as keys of its first backend.
fn with_limits(limits: &str, backend: &str) -> String {
    base_rules().replace(
        "port = 80\n[[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\nweight = 1\n",
        &format!(
            "port = 80\n[services.limits]\n{limits}\n[[services.backends]]\naddress = \
             \"198.18.1.11\"\nport = 8080\nweight = 1\n{backend}\n"
        ),
    )
}

fn line_of(text: &str, key: &str) -> usize {
    text.lines().position(|l| l.starts_with(key)).unwrap() + 1
}

#[test]
fn invalid_limits_sent_with_apply_are_refused_at_their_line_and_nothing_changes() {
    let gateway = Gateway::start(&base_rules());
    let mut client = gateway.client();
    let generation = gateway.generation();
    let text = with_limits(
        "max_new_flows_per_s = 0\nclient_max_new_flows_per_s = 10\nclient_prefix_v6 = 129",
        "max_connections = 10\nresume_connections = 20",
    );
    let reply = client.call(Request::Apply(ApplyConfig {
        config: text.clone(),
        origin: Some("limits.toml".into()),
        dry_run: false,
    }));
    let Err(ClientError::Rejected(error)) = reply else {
        panic!("not refused: {reply:?}");
    };
    assert_eq!(error.code, ErrorCode::Invalid, "{error:?}");
    let at = |key: &str| format!("limits.toml:{}:", line_of(&text, key));
    let expected = [
        format!(
            "{}23: max_new_flows_per_s must be at least 1, not 0 (leave it out for no limit) of \
             service \"web\"",
            at("max_new_flows_per_s")
        ),
        format!(
            "{}20: client_prefix_v6 = 129 is not an IPv6 prefix length: it must be from 1 to 128 \
             of service \"web\"",
            at("client_prefix_v6")
        ),
        format!(
            "{}22: resume_connections = 20 is above max_connections = 10: a backend resumes at or \
             below the mark where it stops of backend 198.18.1.11:8080 in service \"web\"",
            at("resume_connections")
        ),
    ];
    assert_eq!(error.problems, expected, "{error:?}");
    assert_eq!(gateway.generation(), generation, "nothing applied");

    // Valid limits apply, as a change of the service's limits.
    let text = with_limits(
        "max_new_flows_per_s = 5000\nover_limit = \"reset\"",
        "max_connections = 100",
    );
    let Reply::Changed(changed) = client
        .call(Request::Apply(ApplyConfig {
            config: text,
            origin: Some("limits.toml".into()),
            dry_run: false,
        }))
        .unwrap()
    else {
        panic!()
    };
    assert!(changed.applied);
    assert_eq!(gateway.generation(), generation + 1);
    let limits = changed
        .diff
        .services_changed
        .iter()
        .find(|c| c.field == "limits")
        .unwrap_or_else(|| panic!("{:?}", changed.diff));
    assert_eq!(
        (limits.from.as_str(), limits.to.as_str()),
        (
            "none",
            "max_new_flows_per_s 5000 (burst 500), over_limit reset"
        )
    );
}
