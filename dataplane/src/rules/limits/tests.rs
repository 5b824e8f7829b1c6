//! `[services.limits]` and a backend's marks, read from a file: what is
//! read, and each invalid value refused at its line and column with
//! nothing of the config used.

use crate::admission::{ClientRateLimit, ConnectionCap, OverLimitAction, ServiceRateLimit};
use crate::rules::{load_str, Config, FlowLimits};

const HEAD: &str =
    "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n";
const BACKENDS: &str = "[[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n";

/// A TCP service "web" (lines 1-5) with `limits` as its
/// `[services.limits]` (from line 7) and one backend after it.
fn with_limits(limits: &str) -> String {
    format!("{HEAD}[services.limits]\n{limits}\n{BACKENDS}")
}

fn load(text: &str) -> Config {
    load_str(text, "t.toml").unwrap_or_else(|e| panic!("refused:\n{e}"))
}

fn errors(text: &str) -> Vec<String> {
    match load_str(text, "t.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_limit_is_read_and_a_backend_may_set_its_own_marks() {
    let text = format!(
        "{HEAD}[services.limits]\nmax_new_flows_per_s = 5000\nnew_flows_burst = 250\n\
         client_max_new_flows_per_s = 20\nclient_new_flows_burst = 4\nclient_prefix_v4 = 24\n\
         client_prefix_v6 = 56\nmax_connections = 1000\nresume_connections = 900\n\
         over_limit = \"reset\"\n{BACKENDS}\
         [[services.backends]]\naddress = \"198.18.1.12\"\nport = 8080\n\
         max_connections = 10\nresume_connections = 5\n"
    );
    let config = load(&text);
    let web = &config.services[0];
    assert_eq!(
        web.limits,
        FlowLimits {
            new_flows: Some(ServiceRateLimit::new(5000, Some(250)).unwrap()),
            client: Some(ClientRateLimit::new(20, Some(4), Some(24), Some(56)).unwrap()),
            max_connections: Some(ConnectionCap::new(1000, Some(900)).unwrap()),
            over_limit: OverLimitAction::Reset,
            syn_proxy: crate::synproxy::SynProxy::Off,
        }
    );
    assert_eq!(web.backends[0].max_connections, None);
    assert_eq!(
        web.backends[1].max_connections,
        Some(ConnectionCap::new(10, Some(5)).unwrap())
    );
    assert_eq!(
        web.limits.to_string(),
        "max_new_flows_per_s 5000 (burst 250), client 20/s (burst 4) per /24 and /56, \
         max_connections 1000 (resume 900), over_limit reset"
    );
}

#[test]
fn no_limits_table_means_no_limits_and_defaults_fill_in() {
    let web = &load(&format!("{HEAD}{BACKENDS}")).services[0];
    assert_eq!(web.limits, FlowLimits::default());
    assert!(!web.limits.is_limited());
    assert_eq!(web.limits.to_string(), "none");
    let web = &load(&with_limits(
        "max_new_flows_per_s = 1000\nclient_max_new_flows_per_s = 10\nmax_connections = 100",
    ))
    .services[0];
    let rate = web.limits.new_flows.unwrap().rate();
    assert_eq!((rate.per_s(), rate.burst()), (1000, 100));
    let prefix = web.limits.client.unwrap().prefix();
    assert_eq!((prefix.v4(), prefix.v6()), (32, 64));
    let cap = web.limits.max_connections.unwrap();
    assert_eq!((cap.upper(), cap.lower()), (100, 75));
    assert_eq!(web.limits.over_limit, OverLimitAction::Drop);
}

#[test]
fn invalid_limits_are_refused_at_their_line() {
    let of = " of service \"web\"";
    for (limits, expected) in [
        (
            "max_new_flows_per_s = 0",
            format!(
                "t.toml:7:23: max_new_flows_per_s must be at least 1, not 0 (leave it out for \
                 no limit){of}"
            ),
        ),
        (
            "max_new_flows_per_s = -100",
            format!("t.toml:7:23: max_new_flows_per_s must be a positive number, not -100{of}"),
        ),
        (
            "max_new_flows_per_s = 100\nnew_flows_burst = -1",
            format!("t.toml:8:19: new_flows_burst must be a positive number, not -1{of}"),
        ),
        (
            "client_max_new_flows_per_s = 10\nclient_prefix_v4 = 33",
            format!(
                "t.toml:8:20: client_prefix_v4 = 33 is not an IPv4 prefix length: it must be \
                 from 1 to 32{of}"
            ),
        ),
        (
            "client_max_new_flows_per_s = 10\nclient_prefix_v6 = 0",
            format!(
                "t.toml:8:20: client_prefix_v6 = 0 is not an IPv6 prefix length: it must be \
                 from 1 to 128{of}"
            ),
        ),
        (
            "client_max_new_flows_per_s = 0",
            format!(
                "t.toml:7:30: client_max_new_flows_per_s must be at least 1, not 0 (leave it \
                 out for no limit){of}"
            ),
        ),
        (
            "max_connections = 100\nresume_connections = 200",
            format!(
                "t.toml:8:22: resume_connections = 200 is above max_connections = 100: a \
                 backend resumes at or below the mark where it stops{of}"
            ),
        ),
        (
            "max_connections = -5",
            format!("t.toml:7:19: max_connections must be a positive number, not -5{of}"),
        ),
        (
            "over_limit = \"rst\"",
            format!(
                "t.toml:7:14: over_limit = \"rst\" is not an action: use \"drop\" or \"reset\"{of}"
            ),
        ),
        (
            "client_prefix_v4 = 24",
            format!(
                "t.toml:7:20: client_prefix_v4 qualifies client_max_new_flows_per_s, which is \
                 not set: set client_max_new_flows_per_s too, or leave client_prefix_v4 out{of}"
            ),
        ),
    ] {
        assert_eq!(errors(&with_limits(limits)), [expected], "{limits}");
    }
}

#[test]
fn a_backend_mark_is_refused_at_its_line() {
    let text = format!(
        "{HEAD}{BACKENDS}max_connections = 10\nresume_connections = 11\n\
         [[services.backends]]\naddress = \"198.18.1.12\"\nport = 8080\nmax_connections = 0\n"
    );
    assert_eq!(
        errors(&text),
        [
            "t.toml:10:22: resume_connections = 11 is above max_connections = 10: a backend \
             resumes at or below the mark where it stops of backend 198.18.1.11:8080 in service \"web\"",
            "t.toml:14:19: max_connections must be at least 1, not 0 (to take a backend out of \
             service give it weight 0) of backend 198.18.1.12:8080 in service \"web\"",
        ]
    );
}

#[test]
fn reset_on_a_udp_service_is_refused() {
    let text = "[[services]]\nname = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\n\
                port = 53\n[services.limits]\nmax_new_flows_per_s = 100\nover_limit = \"reset\"\n\
                [[services.backends]]\naddress = \"198.18.1.11\"\nport = 53\n";
    assert_eq!(
        errors(text),
        [
            "t.toml:8:14: over_limit = \"reset\" answers TCP only, and this service is UDP: use \
          \"drop\" of service \"dns\""
        ]
    );
}

#[test]
fn an_unknown_limit_key_is_refused() {
    let problems = errors(&with_limits("max_new_flows = 10"));
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].starts_with("t.toml:7:1:") && problems[0].contains("max_new_flows"),
        "{problems:?}"
    );
}

/// Service "web" (lines 1-5) of `protocol` with `keys` on its own table
/// (from line 6).
fn with_service_keys(protocol: &str, keys: &str) -> String {
    let head = HEAD.replace("protocol = \"tcp\"", &format!("protocol = \"{protocol}\""));
    format!("{head}{keys}\n{BACKENDS}")
}

#[test]
fn syn_proxy_off_on_and_auto_are_read_with_their_threshold() {
    use crate::synproxy::{mode::DEFAULT_AUTO_SYNS_PER_S, SynProxy};
    let proxy = |keys: &str| {
        load(&with_service_keys("tcp", keys)).services[0]
            .limits
            .syn_proxy
    };
    assert_eq!(proxy(""), SynProxy::Off);
    assert_eq!(proxy("syn_proxy = \"off\"\n"), SynProxy::Off);
    assert_eq!(proxy("syn_proxy = \"on\"\n"), SynProxy::On);
    assert_eq!(
        proxy("syn_proxy = \"auto\"\n"),
        SynProxy::Auto {
            syns_per_s: DEFAULT_AUTO_SYNS_PER_S
        }
    );
    assert_eq!(
        proxy("syn_proxy = \"auto\"\nsyn_proxy_auto_syns_per_s = 250\n"),
        SynProxy::Auto { syns_per_s: 250 }
    );
    // Their checks (a threshold without "auto" or out of range, a UDP
    // service) are in bad_syn_proxy_settings_are_refused_at_their_line.
}

#[test]
fn bad_syn_proxy_settings_are_refused_at_their_line() {
    assert_eq!(
        errors(&with_service_keys("tcp", "syn_proxy = \"yes\"\n")),
        [
            r#"t.toml:6:13: unknown syn_proxy "yes" in service "web" (expected "off", "on" or "auto")"#
        ]
    );
    assert_eq!(
        errors(&with_service_keys("udp", "syn_proxy = \"on\"\n")),
        [
            r#"t.toml:6:13: syn_proxy of service "web" needs protocol "tcp": the proxy answers TCP handshakes"#
        ]
    );
    assert_eq!(
        errors(&with_service_keys(
            "tcp",
            "syn_proxy = \"auto\"\nsyn_proxy_auto_syns_per_s = 0\n"
        )),
        [
            r#"t.toml:7:29: syn_proxy_auto_syns_per_s of service "web" must be 1 to 4294967295 (it is 0)"#
        ]
    );
    assert_eq!(
        errors(&with_service_keys(
            "tcp",
            "syn_proxy = \"on\"\nsyn_proxy_auto_syns_per_s = 10\n"
        )),
        [
            r#"t.toml:7:29: syn_proxy_auto_syns_per_s of service "web" needs syn_proxy = "auto" (it is "on")"#
        ]
    );
    assert_eq!(
        errors(&with_service_keys(
            "tcp",
            "syn_proxy_auto_syns_per_s = 10\n"
        )),
        [
            r#"t.toml:6:29: syn_proxy_auto_syns_per_s of service "web" needs syn_proxy = "auto" (syn_proxy is not set)"#
        ]
    );
}
