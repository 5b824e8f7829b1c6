//! Loading configs end to end: the shipped ones load, and every invalid
//! config a user can write is rejected with a message at the right place.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::*;

/// Dedents a test config: drops the leading newline and each line's
/// indentation, so that line 1 is the first line written and columns count
/// from the key.
fn doc(text: &str) -> String {
    text.trim_start_matches('\n')
        .lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The problems of an invalid config as displayed, one per entry.
fn errors(text: &str) -> Vec<String> {
    match load_str(&doc(text), "t.toml") {
        Ok(config) => panic!("config was accepted: {config:#?}"),
        Err(error) => {
            let lines: Vec<String> = error.to_string().lines().map(String::from).collect();
            let problems: Vec<String> = error.problems().iter().map(|p| p.to_string()).collect();
            assert_eq!(lines, problems, "Display and problems() disagree");
            lines
        }
    }
}

fn load(text: &str) -> Config {
    match load_str(&doc(text), "t.toml") {
        Ok(config) => config,
        Err(error) => panic!("config was rejected:\n{error}"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("configs")
        .join(name)
}

// --- Valid configs ----------------------------------------------------------

#[test]
fn demo_config_loads_with_the_fixed_topology() {
    let config = load_file(&shipped("demo.toml")).unwrap();
    let names: Vec<&str> = config.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["fg-client", "fg-backend"]);
    assert_eq!(
        config.interfaces[0].mac,
        Some([0x02, 0x66, 0x67, 0x00, 0x00, 0x01])
    );
    assert_eq!(
        config.interfaces[1].mac,
        Some([0x02, 0x66, 0x67, 0x00, 0x01, 0x01])
    );

    let client = config.neighbour(ip("198.18.0.2")).unwrap();
    assert_eq!(client.interface, 0);
    assert_eq!(client.mac, [0x02, 0x66, 0x67, 0x00, 0x00, 0x02]);
    assert_eq!(config.neighbour(ip("2001:2::2")).unwrap().interface, 0);
    for (address, last) in [
        ("198.18.1.11", 0x11),
        ("198.18.1.12", 0x12),
        ("198.18.1.13", 0x13),
        ("2001:2:0:1::11", 0x11),
        ("2001:2:0:1::12", 0x12),
    ] {
        let neighbour = config.neighbour(ip(address)).unwrap();
        assert_eq!(neighbour.interface, 1, "{address}");
        assert_eq!(neighbour.mac, [0x02, 0x66, 0x67, 0x00, 0x01, last]);
    }
    assert_eq!(config.neighbours.len(), 7);

    let web = config.service("web").unwrap();
    assert_eq!(
        (web.protocol, web.vip, web.port, web.scheduler),
        (Protocol::Tcp, ip("198.18.100.10"), 80, Scheduler::Maglev)
    );
    let backends: Vec<(String, u32, Option<&str>)> = web
        .backends
        .iter()
        .map(|b| (b.socket_addr().to_string(), b.weight, b.zone.as_deref()))
        .collect();
    assert_eq!(
        backends,
        [
            ("198.18.1.11:8080".to_string(), 1, Some("a")),
            ("198.18.1.12:8080".to_string(), 1, Some("a")),
            ("198.18.1.13:8080".to_string(), 2, Some("b")),
        ]
    );
    let wrr = config
        .service_at(Protocol::Tcp, ip("198.18.100.11"), 80)
        .unwrap();
    assert_eq!(wrr.name, "web-wrr");
    assert_eq!(wrr.scheduler, Scheduler::Wrr);
    let weights: Vec<u32> = wrr.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [1, 2, 3]);
    let dns = config.service("dns").unwrap();
    assert_eq!(
        (dns.protocol, dns.vip, dns.port),
        (Protocol::Udp, ip("198.18.100.10"), 53)
    );
    assert_eq!(
        dns.backends[1].socket_addr().to_string(),
        "198.18.1.12:5353"
    );
    let web6 = config.service("web6").unwrap();
    assert_eq!(web6.socket_addr().to_string(), "[2001:2:0:100::10]:80");
    assert_eq!(
        web6.backends[0].socket_addr().to_string(),
        "[2001:2:0:1::11]:8080"
    );
    assert_eq!(config.services.len(), 4);
}

#[test]
fn example_config_loads_and_states_the_defaults() {
    let config = load_file(&shipped("example.toml")).unwrap();
    assert_eq!(config.daemon, DaemonSettings::default());
    assert_eq!(config.gateway, GatewaySettings::default());
    assert_eq!(config.flows, FlowSettings::default());
    let web = config.service("web").unwrap();
    assert_eq!(web.maglev_table_size, DEFAULT_MAGLEV_TABLE_SIZE);
    assert_eq!(web.failover.on_backend_down(), OnBackendDown::Keep);
    assert_eq!(
        (web.failover.panic_threshold, web.failover.when_all_down),
        (Failover::default().panic_threshold, WhenAllDown::default())
    );
    assert_eq!(web.announce, Announce::default());
    assert_eq!(web.backends[0].set.as_deref(), Some("shop.sh.g1"));
    assert_eq!(web.backends[0].group.as_deref(), Some("g1"));
    assert_eq!(web.backends[1], Backend::new(ip("198.18.1.12"), 8080));
}

#[test]
fn empty_config_is_an_idle_gateway() {
    assert_eq!(load(""), Config::default());
    assert_eq!(load("[gateway]\n[flows]\n"), Config::default());
}

#[test]
fn omitted_keys_take_their_defaults() {
    let config = load(
        r#"
        [gateway]
        maglev_table_size = 251
        [flows]
        udp_timeout = 5
        [[interfaces]]
        name = "eth0"
        mac = "02:00:00:00:00:01"
        [[neighbours]]
        address = "198.18.1.11"
        mac = "02:00:00:00:01:11"
        [[services]]
        name = "web"
        protocol = "udp"
        vip = "198.18.100.10"
        port = 53
        [[services.backends]]
        address = "198.18.1.11"
        port = 5353
        "#,
    );
    assert_eq!(config.flows.udp_timeout_s, 5);
    assert_eq!(config.flows.tcp_syn_timeout_s, 30);
    assert_eq!(config.flows.capacity, DEFAULT_FLOW_CAPACITY);
    // The only interface is implied.
    assert_eq!(config.neighbours[0].interface, 0);
    let web = &config.services[0];
    assert_eq!(web.scheduler, Scheduler::Maglev);
    // The gateway's table size applies.
    assert_eq!(web.maglev_table_size, 251);
    assert_eq!(web.backends, [Backend::new(ip("198.18.1.11"), 5353)]);
    // Down backends: connections kept, no panic mode, fail open.
    assert_eq!(web.failover, Failover::default());
    assert_eq!(web.failover.on_backend_down(), OnBackendDown::Keep);
    assert_eq!(web.failover.panic_threshold, 0);
    assert_eq!(web.failover.when_all_down, WhenAllDown::Open);
}

#[test]
fn service_table_size_overrides_the_gateway() {
    let config = load(
        r#"
        [[services]]
        name = "web"
        protocol = "tcp"
        vip = "198.18.100.10"
        port = 80
        scheduler = "sh"
        maglev_table_size = 1009
        [[services.backends]]
        address = "198.18.1.11"
        port = 80
        weight = 0
        [[services.backends]]
        address = "198.18.1.12"
        port = 80
        weight = 10000
        "#,
    );
    let web = &config.services[0];
    assert_eq!(web.maglev_table_size, 1009);
    assert_eq!(web.scheduler, Scheduler::Sh);
    assert_eq!(web.total_weight(), 10_000);
    let active: Vec<usize> = web.active_backends().map(|(i, _)| i).collect();
    assert_eq!(active, [1]);
}

#[test]
fn one_vip_may_serve_several_protocols_and_ports_and_share_backends() {
    let config = load(
        r#"
        [[services]]
        name = "a"
        protocol = "tcp"
        vip = "198.18.100.10"
        port = 80
        [[services.backends]]
        address = "198.18.1.11"
        port = 80
        [[services]]
        name = "b"
        protocol = "udp"
        vip = "198.18.100.10"
        port = 80
        [[services.backends]]
        address = "198.18.1.11"
        port = 80
        [[services]]
        name = "c"
        protocol = "tcp"
        vip = "198.18.100.10"
        port = 81
        [[services.backends]]
        address = "198.18.1.11"
        port = 80
        "#,
    );
    assert_eq!(config.services.len(), 3);
}

#[test]
fn a_neighbour_may_have_a_multicast_mac() {
    // Some clusters answer a unicast address with a multicast MAC.
    let config = load(
        r#"
        [[interfaces]]
        name = "eth0"
        mac = "02:00:00:00:00:01"
        [[neighbours]]
        address = "198.18.1.11"
        mac = "03:bf:c6:12:01:0b"
        "#,
    );
    assert_eq!(config.neighbours[0].mac[0], 0x03);
}

// --- Files, syntax and shape ------------------------------------------------

#[test]
fn missing_file_names_the_file_and_the_os_error() {
    let path = shipped("no-such-config.toml");
    let error = load_file(&path).unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read config: ", path.display())),
        "{text}"
    );
    assert!(text.contains("os error 2"), "{text}");
    assert!(
        matches!(&error, ConfigError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(error.problems().is_empty());
}

#[test]
fn problems_in_a_file_name_the_path() {
    let dir = std::env::temp_dir().join(format!("flowgate-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[flows]\ncapacity = 0\n").unwrap();
    let error = load_file(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2:12: flows.capacity 0 is out of range 1..=67108864",
            path.display()
        )
    );
    let problem = &error.problems()[0];
    assert_eq!(
        problem.location,
        Location::File {
            file: path.display().to_string(),
            line: 2,
            column: 12
        }
    );
}

#[test]
fn toml_syntax_error_has_its_position() {
    assert_eq!(
        errors(
            r#"
            [flows]
            capacity = 10
            udp_timeout = "60
            "#
        ),
        // At the end of the line, where the closing quote is missing.
        ["t.toml:3:18: invalid basic string"]
    );
    assert_eq!(
        errors("[flows]\ncapacity = 1\ncapacity = 2\n"),
        ["t.toml:3:1: duplicate key `capacity` in table `flows`"]
    );
}

#[test]
fn unknown_keys_are_rejected_where_they_are() {
    assert_eq!(
        errors("[gateway]\nmaglev_table_size = 251\n\n[flow]\ncapacity = 1\n"),
        ["t.toml:4:2: unknown field `flow`, expected one of `gateway`, `daemon`, `flows`, `health`, `interfaces`, `neighbours`, `services`, `routing`, `ingress`, `etcd`"]
    );
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "web"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = 80
            [[services.backends]]
            address = "198.18.1.11"
            port = 8080
            wieght = 2
            "#
        ),
        ["t.toml:9:1: unknown field `wieght`, expected one of `address`, `port`, `weight`, `zone`, `set`, `group`, `heartbeat_ttl`, `health`, `name`, `max_connections`, `resume_connections`"]
    );
    assert_eq!(
        errors("[flows]\ntcp_timeout = 5\n"),
        ["t.toml:2:1: unknown field `tcp_timeout`, expected one of `capacity`, `tcp_syn_timeout`, `tcp_established_timeout`, `tcp_closing_timeout`, `udp_timeout`, `evict_established`"]
    );
}

#[test]
fn wrong_types_are_rejected_where_they_are() {
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "web"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = "80"
            "#
        ),
        [r#"t.toml:5:8: invalid type: string "80", expected i64"#]
    );
    assert_eq!(
        errors("[flows]\ncapacity = 1.5\n"),
        ["t.toml:2:12: invalid type: floating point `1.5`, expected i64"]
    );
    assert_eq!(
        errors("services = 3\n"),
        ["t.toml:1:12: invalid type: integer `3`, expected a sequence"]
    );
    assert_eq!(
        errors("[[interfaces]]\nname = 4\nmac = \"02:00:00:00:00:01\"\n"),
        ["t.toml:2:8: invalid type: integer `4`, expected a string"]
    );
}

#[test]
fn missing_required_keys_are_rejected() {
    assert_eq!(
        errors(
            r#"
            [gateway]
            [[services]]
            name = "web"
            vip = "198.18.100.10"
            port = 80
            "#
        ),
        ["t.toml:2:1: missing field `protocol`"]
    );
}

// --- [gateway] and [flows] --------------------------------------------------

#[test]
fn gateway_table_size_must_be_prime_and_in_range() {
    assert_eq!(
        errors("[gateway]\nmaglev_table_size = 65536\n"),
        ["t.toml:2:21: gateway.maglev_table_size 65536 is not prime (nearest primes: 65521, 65537)"]
    );
    assert_eq!(
        errors("[gateway]\nmaglev_table_size = 13\n"),
        ["t.toml:2:21: gateway.maglev_table_size 13 is out of range 251..=16777259"]
    );
    assert_eq!(
        errors("[gateway]\nmaglev_table_size = 16777260\n"),
        ["t.toml:2:21: gateway.maglev_table_size 16777260 is out of range 251..=16777259"]
    );
}

#[test]
fn flow_capacity_and_timeouts_must_be_in_range() {
    assert_eq!(
        errors(
            r#"
            [flows]
            capacity = 67108865
            tcp_syn_timeout = 0
            tcp_established_timeout = 604801
            tcp_closing_timeout = -1
            udp_timeout = 0
            "#
        ),
        [
            "t.toml:2:12: flows.capacity 67108865 is out of range 1..=67108864",
            "t.toml:3:19: flows.tcp_syn_timeout 0 is out of range 1..=604800",
            "t.toml:4:27: flows.tcp_established_timeout 604801 is out of range 1..=604800",
            "t.toml:5:23: flows.tcp_closing_timeout -1 is out of range 1..=604800",
            "t.toml:6:15: flows.udp_timeout 0 is out of range 1..=604800",
        ]
    );
    assert_eq!(
        errors("[flows]\ncapacity = 0\n"),
        ["t.toml:2:12: flows.capacity 0 is out of range 1..=67108864"]
    );
}

// --- [[interfaces]] and [[neighbours]] --------------------------------------

#[test]
fn interface_names_must_be_valid_and_unique() {
    assert_eq!(
        errors(
            r#"
            [[interfaces]]
            name = "eth0"
            mac = "02:00:00:00:00:01"
            [[interfaces]]
            name = "eth0"
            mac = "02:00:00:00:00:02"
            [[interfaces]]
            name = "a-very-long-name0"
            mac = "02:00:00:00:00:03"
            [[interfaces]]
            name = ""
            mac = "02:00:00:00:00:04"
            [[interfaces]]
            name = "eth/1"
            mac = "02:00:00:00:00:05"
            "#
        ),
        [
            r#"t.toml:5:8: interface "eth0" is listed twice (first at line 2)"#,
            r#"t.toml:8:8: interface name "a-very-long-name0" is longer than 15 bytes (the kernel's IFNAMSIZ limit)"#,
            r#"t.toml:11:8: interface name "" is empty"#,
            r#"t.toml:14:8: interface name "eth/1" may not contain '/', ':', whitespace or control characters"#,
        ]
    );
}

#[test]
fn an_interface_accepts_the_vlans_it_lists_and_tags_what_it_sends() {
    let config = load(
        "[[interfaces]]\nname = \"eth0\"\nvlans = [100, 200]\negress_vlan = 200\nuntagged = false\n\
         [[interfaces]]\nname = \"eth1\"\nvlans = [300]\n\
         [[interfaces]]\nname = \"eth2\"",
    );
    let vlans: Vec<_> = config.interfaces.iter().map(|i| i.vlan.clone()).collect();
    assert_eq!(
        vlans,
        [
            InterfaceVlans {
                accepted: vec![100, 200],
                untagged: false,
                egress: Some(200),
            },
            InterfaceVlans {
                accepted: vec![300],
                untagged: true,
                egress: None,
            },
            InterfaceVlans::default(),
        ]
    );
    assert!(vlans[2].is_untagged_only() && !vlans[1].is_untagged_only());
}

#[test]
fn vlan_settings_are_refused_at_their_place() {
    assert_eq!(
        errors(
            r#"
            [[interfaces]]
            name = "eth0"
            vlans = [0, 100, 4095, 100, 70000, -1]
            egress_vlan = 200
            [[interfaces]]
            name = "eth1"
            untagged = false
            [[interfaces]]
            name = "eth2"
            vlans = [5]
            egress_vlan = 4095
            "#
        ),
        [
            "t.toml:3:10: interfaces.vlans entry 0 is out of range 1..=4094",
            "t.toml:3:18: interfaces.vlans entry 4095 is out of range 1..=4094",
            r#"t.toml:3:24: interface "eth0" lists VLAN 100 twice (first at line 3)"#,
            "t.toml:3:29: interfaces.vlans entry 70000 is out of range 1..=4094",
            "t.toml:3:36: interfaces.vlans entry -1 is out of range 1..=4094",
            r#"t.toml:4:15: egress_vlan 200 of interface "eth0" is not one of its vlans; add it to vlans (replies on it must be accepted too)"#,
            r#"t.toml:7:12: interface "eth1" refuses untagged frames (untagged = false) but has no egress_vlan to tag what it sends"#,
            "t.toml:11:15: interfaces.egress_vlan 4095 is out of range 1..=4094",
        ]
    );
}

#[test]
fn an_interface_may_leave_its_mac_to_the_kernel() {
    let config = load(
        "[[interfaces]]\nname = \"eth0\"\n\
         [[interfaces]]\nname = \"eth1\"\nmac = \"02:00:00:00:00:01\"",
    );
    let macs: Vec<_> = config.interfaces.iter().map(|i| i.mac).collect();
    assert_eq!(macs, [None, Some([2, 0, 0, 0, 0, 1])]);
    // Given, it is checked as before.
    assert_eq!(
        errors("[[interfaces]]\nname = \"eth0\"\nmac = \"ff:ff:ff:ff:ff:ff\""),
        [
            "t.toml:3:7: MAC ff:ff:ff:ff:ff:ff of interface \"eth0\" is the broadcast address; \
          an interface needs a unicast MAC"
        ]
    );
}

#[test]
fn interface_macs_must_be_unicast_station_addresses() {
    assert_eq!(
        errors(
            r#"
            [[interfaces]]
            name = "eth0"
            mac = "02:00:00:00:00:0g"
            [[interfaces]]
            name = "eth1"
            mac = "01:00:5e:00:00:01"
            [[interfaces]]
            name = "eth2"
            mac = "ff:ff:ff:ff:ff:ff"
            [[interfaces]]
            name = "eth3"
            mac = "00:00:00:00:00:00"
            "#
        ),
        [
            r#"t.toml:3:7: MAC "02:00:00:00:00:0g" of interface "eth0" is not a MAC address (expected six hex octets such as 02:00:00:00:00:01)"#,
            r#"t.toml:6:7: MAC 01:00:5e:00:00:01 of interface "eth1" is a multicast address; an interface needs a unicast MAC"#,
            r#"t.toml:9:7: MAC ff:ff:ff:ff:ff:ff of interface "eth2" is the broadcast address; an interface needs a unicast MAC"#,
            r#"t.toml:12:7: MAC 00:00:00:00:00:00 of interface "eth3" is all zeros; an interface needs a unicast MAC"#,
        ]
    );
}

#[test]
fn neighbour_addresses_and_macs_must_be_valid_and_unique() {
    assert_eq!(
        errors(
            r#"
            [[interfaces]]
            name = "eth0"
            mac = "02:00:00:00:00:01"
            [[neighbours]]
            address = "2001:2:0:1::11"
            mac = "02:00:00:00:01:11"
            [[neighbours]]
            address = "2001:2:0:1:0:0:0:11"
            mac = "02:00:00:00:01:12"
            [[neighbours]]
            address = "198.18.1.300"
            mac = "02:00:00:00:01:13"
            [[neighbours]]
            address = "198.18.1.14"
            mac = "02:00:00:00:01"
            [[neighbours]]
            address = "198.18.1.15"
            mac = "ff:ff:ff:ff:ff:ff"
            [[neighbours]]
            address = "198.18.1.16"
            mac = "00:00:00:00:00:00"
            [[neighbours]]
            address = "224.0.0.5"
            mac = "02:00:00:00:01:17"
            "#
        ),
        [
            "t.toml:8:11: neighbour 2001:2:0:1::11 is listed twice (first at line 5)",
            r#"t.toml:11:11: neighbour address "198.18.1.300" is not an IP address"#,
            r#"t.toml:15:7: MAC "02:00:00:00:01" of neighbour 198.18.1.14 is not a MAC address (expected six hex octets such as 02:00:00:00:00:01)"#,
            "t.toml:18:7: MAC ff:ff:ff:ff:ff:ff of neighbour 198.18.1.15 is the broadcast address",
            "t.toml:21:7: MAC 00:00:00:00:00:00 of neighbour 198.18.1.16 is all zeros",
            "t.toml:23:11: neighbour address 224.0.0.5 is a multicast address",
        ]
    );
}

#[test]
fn neighbour_interface_must_exist_and_be_named_when_ambiguous() {
    assert_eq!(
        errors(
            r#"
            [[interfaces]]
            name = "eth0"
            mac = "02:00:00:00:00:01"
            [[interfaces]]
            name = "eth1"
            mac = "02:00:00:00:00:02"
            [[neighbours]]
            address = "198.18.1.11"
            mac = "02:00:00:00:01:11"
            interface = "eth9"
            [[neighbours]]
            address = "198.18.1.12"
            mac = "02:00:00:00:01:12"
            "#
        ),
        [
            r#"t.toml:10:13: neighbour 198.18.1.11 names unknown interface "eth9" (interfaces: eth0, eth1)"#,
            "t.toml:12:11: neighbour 198.18.1.12 must name its interface: there are 2 (eth0, eth1)",
        ]
    );
    assert_eq!(
        errors(
            r#"
            [[neighbours]]
            address = "198.18.1.11"
            mac = "02:00:00:00:01:11"
            [[neighbours]]
            address = "198.18.1.12"
            mac = "02:00:00:00:01:12"
            interface = "eth0"
            "#
        ),
        [
            "t.toml:2:11: neighbour 198.18.1.11 has no interface: no [[interfaces]] are configured",
            r#"t.toml:7:13: neighbour 198.18.1.12 names interface "eth0", but no [[interfaces]] are configured"#,
        ]
    );
}

// --- [[services]] -----------------------------------------------------------

/// A service header with the given key lines, then one backend.
fn service_with(keys: &str) -> String {
    format!("[[services]]\n{keys}\n[[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n")
}

#[test]
fn service_names_must_be_valid_and_unique() {
    let text = [
        service_with("name = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80"),
        service_with("name = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 81"),
        service_with("name = \"w b\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 82"),
        service_with(&format!(
            "name = \"{}\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 83",
            "x".repeat(65)
        )),
    ]
    .concat();
    assert_eq!(
        errors(&text),
        [
            r#"t.toml:10:8: service "web" is defined twice (first at line 2)"#,
            r#"t.toml:18:8: service name "w b" is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -"#,
            &format!(
                r#"t.toml:26:8: service name "{}" is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -"#,
                "x".repeat(65)
            ),
        ]
    );
}

#[test]
fn protocol_vip_and_port_must_be_unique_together() {
    // The same address spelt two ways is the same address.
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "a"
            protocol = "tcp"
            vip = "2001:2:0:100::10"
            port = 80
            [[services.backends]]
            address = "2001:2:0:1::11"
            port = 8080
            [[services]]
            name = "b"
            protocol = "tcp"
            vip = "2001:2:0:100:0::10"
            port = 80
            [[services.backends]]
            address = "2001:2:0:1::11"
            port = 8080
            "#
        ),
        [
            r#"t.toml:12:7: tcp [2001:2:0:100::10]:80 of service "b" is already used by service "a" (first at line 4)"#
        ]
    );
}

#[test]
fn failover_keys_are_read() {
    let config = load(&service_with(
        "name = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
         on_backend_down = \"reset\"\npanic_threshold = 50\nwhen_all_down = \"closed\"",
    ));
    assert_eq!(
        config.services[0].failover,
        Failover {
            on_backend_down: Some(OnBackendDown::Reset),
            panic_threshold: 50,
            when_all_down: WhenAllDown::Closed,
        }
    );
    for (text, policy) in [("keep", OnBackendDown::Keep), ("drop", OnBackendDown::Drop)] {
        let config = load(&service_with(&format!(
            "name = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\non_backend_down = \"{text}\""
        )));
        assert_eq!(config.services[0].failover.on_backend_down(), policy);
    }
}

#[test]
fn bad_failover_values_are_rejected_where_they_are() {
    let tcp = "name = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80";
    assert_eq!(
        errors(&service_with(&format!(
            "{tcp}\non_backend_down = \"rst\"\npanic_threshold = 101\nwhen_all_down = \"shut\""
        ))),
        [
            r#"t.toml:6:19: unknown on_backend_down "rst" in service "web" (expected "keep", "drop" or "reset")"#,
            r#"t.toml:7:19: panic_threshold 101 of service "web" is out of range 0..=100"#,
            r#"t.toml:8:17: unknown when_all_down "shut" in service "web" (expected "open" or "closed")"#,
        ]
    );
    // A value the model's type cannot hold reads as the validator words it.
    assert_eq!(
        errors(&service_with(&format!("{tcp}\npanic_threshold = -1"))),
        [r#"t.toml:6:19: panic_threshold -1 of service "web" is out of range 0..=100"#]
    );
    assert_eq!(
        errors(&service_with(&format!("{tcp}\npanic_threshold = \"50%\""))).len(),
        1,
        "a string is the wrong type"
    );
    // UDP flows of a down backend are always rescheduled.
    let udp = "name = \"dns\"\nprotocol = \"udp\"\nvip = \"198.18.100.10\"\nport = 53";
    assert_eq!(
        errors(&service_with(&format!("{udp}\non_backend_down = \"keep\""))),
        [
            r#"t.toml:6:19: on_backend_down "keep" of service "dns" applies to TCP only: a UDP flow of a down backend is always rescheduled"#
        ]
    );
    // The other two keys apply to UDP as to TCP.
    let config = load(&service_with(&format!(
        "{udp}\npanic_threshold = 100\nwhen_all_down = \"closed\""
    )));
    assert_eq!(config.services[0].failover.panic_threshold, 100);
}

#[test]
fn unknown_protocol_and_scheduler_are_rejected() {
    assert_eq!(
        errors(&service_with(
            "name = \"web\"\nprotocol = \"sctp\"\nvip = \"198.18.100.10\"\nport = 80\nscheduler = \"rr\""
        )),
        [
            r#"t.toml:3:12: unknown protocol "sctp" in service "web" (expected "tcp" or "udp")"#,
            r#"t.toml:6:13: unknown scheduler "rr" in service "web" (expected "maglev", "wrr", "sh" or "fanout")"#,
        ]
    );
}

#[test]
fn vip_must_be_a_unicast_address() {
    let cases = [
        (
            "198.18.100.300",
            r#"VIP "198.18.100.300" of service "web" is not an IP address"#,
        ),
        (
            "0.0.0.0",
            r#"VIP 0.0.0.0 of service "web" is the unspecified address"#,
        ),
        (
            "::",
            r#"VIP :: of service "web" is the unspecified address"#,
        ),
        (
            "239.1.1.1",
            r#"VIP 239.1.1.1 of service "web" is a multicast address"#,
        ),
        (
            "ff02::1",
            r#"VIP ff02::1 of service "web" is a multicast address"#,
        ),
        (
            "255.255.255.255",
            r#"VIP 255.255.255.255 of service "web" is the broadcast address"#,
        ),
        (
            "127.0.0.1",
            r#"VIP 127.0.0.1 of service "web" is a loopback address"#,
        ),
        ("::1", r#"VIP ::1 of service "web" is a loopback address"#),
        (
            "::ffff:198.18.100.10",
            r#"VIP ::ffff:198.18.100.10 of service "web" is an IPv4-mapped IPv6 address: write the IPv4 address"#,
        ),
    ];
    for (vip, message) in cases {
        let text = service_with(&format!(
            "name = \"web\"\nprotocol = \"tcp\"\nvip = \"{vip}\"\nport = 80"
        ));
        // Alone: the backend's family is checked only against a usable VIP.
        assert_eq!(
            errors(&text),
            [format!("t.toml:4:7: {message}")],
            "vip {vip}"
        );
    }
}

#[test]
fn ports_must_be_in_range() {
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "web"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = 0
            [[services.backends]]
            address = "198.18.1.11"
            port = 65536
            [[services.backends]]
            address = "198.18.1.12"
            port = -80
            "#
        ),
        [
            r#"t.toml:5:8: port 0 of service "web" is out of range 1..=65535"#,
            r#"t.toml:8:8: port 65536 of backend 198.18.1.11 in service "web" is out of range 1..=65535"#,
            r#"t.toml:11:8: port -80 of backend 198.18.1.12 in service "web" is out of range 1..=65535"#,
        ]
    );
}

#[test]
fn backends_must_be_usable_unique_and_of_the_vip_family() {
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "web"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = 80
            [[services.backends]]
            address = "198.18.1.11"
            port = 8080
            [[services.backends]]
            address = "198.18.1.11"
            port = 8080
            [[services.backends]]
            address = "2001:2:0:1::11"
            port = 8080
            [[services.backends]]
            address = "backend-1"
            port = 8080
            [[services.backends]]
            address = "127.0.0.1"
            port = 8080
            [[services.backends]]
            address = "198.18.1.11"
            port = 8081
            "#
        ),
        [
            r#"t.toml:10:11: backend 198.18.1.11:8080 is listed twice in service "web" (first at line 7)"#,
            r#"t.toml:13:11: backend 2001:2:0:1::11 of service "web" is IPv6 but its VIP 198.18.100.10 is IPv4"#,
            r#"t.toml:16:11: backend "backend-1" of service "web" is not an IP address"#,
            r#"t.toml:19:11: backend 127.0.0.1 of service "web" is a loopback address"#,
        ]
    );
}

#[test]
fn weights_must_be_in_range() {
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "web"
            protocol = "tcp"
            vip = "2001:2:0:100::10"
            port = 80
            [[services.backends]]
            address = "2001:2:0:1::11"
            port = 8080
            weight = 10001
            [[services.backends]]
            address = "2001:2:0:1::12"
            port = 8080
            weight = -1
            "#
        ),
        [
            r#"t.toml:9:10: weight 10001 of backend [2001:2:0:1::11]:8080 in service "web" is out of range 0..=10000"#,
            r#"t.toml:13:10: weight -1 of backend [2001:2:0:1::12]:8080 in service "web" is out of range 0..=10000"#,
        ]
    );
}

#[test]
fn a_service_needs_a_backend_that_takes_flows() {
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "none"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = 80
            [[services]]
            name = "empty"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = 81
            backends = []
            [[services]]
            name = "drained"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = 82
            [[services.backends]]
            address = "198.18.1.11"
            port = 8080
            weight = 0
            [[services.backends]]
            address = "198.18.1.12"
            port = 8080
            weight = 0
            "#
        ),
        [
            r#"t.toml:2:8: service "none" has no backends"#,
            r#"t.toml:7:8: service "empty" has no backends"#,
            r#"t.toml:13:8: service "drained" has no backend with weight > 0 (all 2 are drained)"#,
        ]
    );
}

#[test]
fn labels_must_be_valid_names() {
    assert_eq!(
        errors(
            r#"
            [[services]]
            name = "web"
            protocol = "tcp"
            vip = "198.18.100.10"
            port = 80
            [[services.backends]]
            address = "198.18.1.11"
            port = 8080
            zone = ""
            set = "s 1"
            group = "g1"
            "#
        ),
        [
            r#"t.toml:9:8: zone "" of backend 198.18.1.11:8080 in service "web" is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -"#,
            r#"t.toml:10:7: set "s 1" of backend 198.18.1.11:8080 in service "web" is not a SET name: write name.area.group, three parts of A-Z a-z 0-9 _ - (the group may be *), at most 64 bytes"#,
        ]
    );
}

#[test]
fn service_table_size_must_be_prime_and_in_range() {
    assert_eq!(
        errors(&service_with(
            "name = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\nmaglev_table_size = 1000"
        )),
        [r#"t.toml:6:21: maglev_table_size 1000 of service "web" is not prime (nearest primes: 997, 1009)"#]
    );
    assert_eq!(
        errors(&service_with(
            "name = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\nmaglev_table_size = 0"
        )),
        [r#"t.toml:6:21: maglev_table_size 0 of service "web" is out of range 251..=16777259"#]
    );
    assert_eq!(
        errors("[gateway]\nmaglev_table_size = 16777258\n"),
        ["t.toml:2:21: gateway.maglev_table_size 16777258 is not prime (nearest primes: 16777213, 16777259)"]
    );
}

/// A service with `count` backends 198.18.1.1:1, :2, ... and the given
/// extra keys.
fn big_service(name: &str, port: u16, keys: &str, count: u16) -> String {
    let mut text = format!(
        "[[services]]\nname = \"{name}\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = {port}\n{keys}"
    );
    for port in 1..=count {
        text.push_str(&format!(
            "[[services.backends]]\naddress = \"198.18.1.1\"\nport = {port}\n"
        ));
    }
    text
}

#[test]
fn table_size_must_exceed_the_backend_count() {
    let text = [
        "[gateway]\nmaglev_table_size = 251\n".to_string(),
        // Line 3: 251 backends against the gateway's 251: too many.
        big_service("big", 80, "", 251),
        // Its own 257 is larger than 256 backends: fine.
        big_service("fits", 81, "maglev_table_size = 257\n", 256),
        // Its own 257 is not larger than 257 backends.
        big_service("full", 82, "maglev_table_size = 257\n", 257),
    ]
    .concat();
    let full_line = 2 + 5 + 3 * 251 + 6 + 3 * 256 + 6;
    assert_eq!(
        errors(&text),
        [
            r#"t.toml:4:8: service "big" has 251 backends, not fewer than gateway.maglev_table_size 251: set a larger maglev_table_size (100 times the backends is recommended)"#.to_string(),
            format!(r#"t.toml:{full_line}:21: maglev_table_size 257 of service "full" must be larger than its 257 backends (100 times larger is recommended)"#),
        ]
    );
}

// --- All problems at once ---------------------------------------------------

#[test]
fn every_problem_is_reported_in_order_of_position() {
    let errors = errors(
        r#"
        [[services]]
        name = "web"
        protocol = "tcp"
        vip = "198.18.100.10"
        port = 80
        [[services.backends]]
        address = "198.18.1.11"
        port = 8080
        [[services.backends]]
        address = "198.18.1.11"
        port = 8080
        weight = 20000
        [[interfaces]]
        name = "eth0"
        mac = "01:00:00:00:00:01"
        [flows]
        udp_timeout = 0
        [gateway]
        maglev_table_size = 100
        "#,
    );
    assert_eq!(
        errors,
        [
            r#"t.toml:10:11: backend 198.18.1.11:8080 is listed twice in service "web" (first at line 7)"#,
            r#"t.toml:12:10: weight 20000 of backend 198.18.1.11:8080 in service "web" is out of range 0..=10000"#,
            r#"t.toml:15:7: MAC 01:00:00:00:00:01 of interface "eth0" is a multicast address; an interface needs a unicast MAC"#,
            "t.toml:17:15: flows.udp_timeout 0 is out of range 1..=604800",
            "t.toml:19:21: gateway.maglev_table_size 100 is out of range 251..=16777259",
        ]
    );
}

#[test]
fn problems_are_exposed_with_their_fields() {
    let error = load_str("[flows]\n  capacity = 0\n", "api").unwrap_err();
    assert_eq!(
        error.problems(),
        [ConfigProblem {
            location: Location::File {
                file: "api".into(),
                line: 2,
                column: 14,
            },
            message: "flows.capacity 0 is out of range 1..=67108864".into(),
            first: None,
        }]
    );
}

// --- [daemon] ---------------------------------------------------------------

#[test]
fn daemon_settings_load_and_default() {
    let config = load(
        r#"
        [daemon]
        cores = [1, 0]
        idle = "busy"
        frame_size = 4096
        frame_count = 8192
        rx_ring_size = 1024
        bind_mode = "copy"
        xdp_mode = "generic"
        fast_path = "off"
        control_socket = "/run/fg/ctl.sock"
        metrics_address = "127.0.0.1:9464"
        log_format = "json"
        log_level = "debug"
        "#,
    );
    let d = &config.daemon;
    assert_eq!(d.cores, [1, 0]);
    assert_eq!(d.idle, IdlePolicy::Busy);
    assert_eq!((d.frame_size, d.frame_count), (4096, 8192));
    assert_eq!(d.rx_ring_size, 1024);
    assert_eq!(d.tx_ring_size, DaemonSettings::default().tx_ring_size);
    assert_eq!(d.bind_mode, BindModeSetting::Copy);
    assert_eq!(d.xdp_mode, XdpModeSetting::Generic);
    assert_eq!(d.fast_path, FastPathSetting::Off);
    assert_eq!(DaemonSettings::default().fast_path, FastPathSetting::Xdp);
    assert_eq!(d.control_socket, Path::new("/run/fg/ctl.sock"));
    assert_eq!(
        d.metrics_address,
        Some(MetricsAddress::Tcp("127.0.0.1:9464".parse().unwrap()))
    );
    assert_eq!(d.log_format, LogFormatSetting::Json);
    assert_eq!(d.log_level, "debug");
    assert_eq!(load("").daemon, DaemonSettings::default());
}

#[test]
fn daemon_settings_are_checked() {
    let found = errors(
        r#"
        [daemon]
        cores = [0, 0]
        batch = 0
        frame_size = 3000
        frame_count = 5000
        rx_ring_size = 100000
        bind_mode = "fast"
        metrics_address = "198.18.0.1:9464"
        log_format = "xml"
        fast_path = "tc"
        "#,
    );
    assert_eq!(
        found,
        [
            "t.toml:2:13: daemon.cores lists core 0 twice",
            "t.toml:3:9: daemon.batch 0 is out of range 1..=256",
            "t.toml:4:14: daemon.frame_size 3000 must be 2048 or 4096",
            "t.toml:5:15: daemon.frame_count 5000 is not a power of two",
            "t.toml:6:16: daemon.rx_ring_size 100000 is out of range 64..=16384",
            "t.toml:7:13: daemon.bind_mode \"fast\" is not one of: auto, zero-copy, copy",
            "t.toml:8:19: daemon.metrics_address 198.18.0.1:9464 is not a loopback address: \
             metrics are served on loopback only (put a proxy in front to expose them, or use a Unix socket)",
            "t.toml:9:14: daemon.log_format \"xml\" is not one of: human, json",
            "t.toml:10:13: daemon.fast_path \"tc\" is not one of: xdp, off",
        ]
    );
    assert_eq!(
        errors("[daemon]\ncores = []"),
        ["t.toml:2:9: daemon.cores is empty: list at least one core"]
    );
}

#[test]
fn metrics_can_be_served_on_a_unix_socket_with_a_mode_and_a_group() {
    let config = load(
        "[daemon]\nmetrics_address = \"unix:/run/fg/metrics.sock\"\n\
         metrics_socket_mode = 0o660\nmetrics_socket_group = \"root\"",
    );
    let d = &config.daemon;
    assert_eq!(
        d.metrics_address,
        Some(MetricsAddress::Unix("/run/fg/metrics.sock".into()))
    );
    assert_eq!(d.metrics_socket_mode, Some(0o660));
    assert_eq!(d.metrics_socket_group, Some(0), "root is group 0");
    let by_number =
        load("[daemon]\nmetrics_address = \"unix:/m.sock\"\nmetrics_socket_group = \"4242\"");
    assert_eq!(by_number.daemon.metrics_socket_group, Some(4242));
    let unset = load("[daemon]\nmetrics_address = \"unix:/m.sock\"");
    assert_eq!(
        unset.daemon.metrics_socket_mode, None,
        "0o600 is applied at start"
    );
}

#[test]
fn a_bad_metrics_socket_setting_is_refused_with_its_place() {
    for (text, problem) in [
        (
            "metrics_address = \"unix:run/m.sock\"",
            "t.toml:2:19: daemon.metrics_address unix:run/m.sock is not an absolute path",
        ),
        (
            "metrics_address = \"localhost\"",
            "t.toml:2:19: daemon.metrics_address \"localhost\" is neither an address and port such as \
             \"127.0.0.1:9464\" nor a Unix socket such as \"unix:/run/flowgate/metrics.sock\"",
        ),
        (
            "metrics_address = \"unix:/run/flowgate/control.sock\"",
            "t.toml:2:19: daemon.metrics_address unix:/run/flowgate/control.sock is the control socket's path",
        ),
        (
            "metrics_address = \"127.0.0.1:9464\"\nmetrics_socket_mode = 0o660",
            "t.toml:3:23: daemon.metrics_socket_mode applies to a Unix metrics socket only: \
             set metrics_address = \"unix:/PATH\" or remove it",
        ),
        (
            "metrics_socket_group = \"root\"",
            "t.toml:2:24: daemon.metrics_socket_group applies to a Unix metrics socket only: \
             set metrics_address = \"unix:/PATH\" or remove it",
        ),
        (
            "metrics_address = \"unix:/m.sock\"\nmetrics_socket_mode = 0o1777",
            "t.toml:3:23: daemon.metrics_socket_mode 1023 (0o1777; permission bits are at most 0o777) \
             is out of range 0..=511",
        ),
        (
            "metrics_address = \"unix:/m.sock\"\nmetrics_socket_group = \"no-such-group-fg\"",
            "t.toml:3:24: daemon.metrics_socket_group \"no-such-group-fg\" is not a group on this host",
        ),
    ] {
        assert_eq!(errors(&format!("[daemon]\n{text}")), [problem], "{text}");
    }
}

#[test]
fn the_control_idle_timeout_is_whole_seconds_in_range() {
    assert_eq!(DaemonSettings::default().control_idle_timeout_s, 3);
    let config = load("[daemon]\ncontrol_idle_timeout = 7");
    assert_eq!(config.daemon.control_idle_timeout_s, 7);
    for (text, problem) in [
        (
            "0",
            "t.toml:2:24: daemon.control_idle_timeout 0 is out of range 1..=600",
        ),
        (
            "601",
            "t.toml:2:24: daemon.control_idle_timeout 601 is out of range 1..=600",
        ),
        (
            "-1",
            "t.toml:2:24: daemon.control_idle_timeout -1 is out of range 1..=600",
        ),
    ] {
        let found = errors(&format!("[daemon]\ncontrol_idle_timeout = {text}"));
        assert_eq!(found, [problem], "{text}");
    }
    assert!(errors("[daemon]\ncontrol_idle_timeout = 2.5")[0]
        .starts_with("t.toml:2:24: invalid type: floating point `2.5`, expected i64"));
}

// --- Provenance -------------------------------------------------------------

/// The line and column `place` is located at in a file called `t.toml`.
fn located(provenance: &FileProvenance<'_>, place: Place) -> (usize, usize) {
    match provenance.locate(place) {
        Location::File { file, line, column } => {
            assert_eq!(file, "t.toml");
            (line, column)
        }
        other => panic!("{place} is not located in the file: {other:?}"),
    }
}

#[test]
fn provenance_of_a_file_points_at_nested_values() {
    let text = doc(r#"
        [daemon]
        cores = [2, 3]
        [[interfaces]]
        name = "eth0"
        mac = "02:00:00:00:00:01"
        [[interfaces]]
        name = "eth1"
        mac = "02:00:00:00:00:02"
        [[neighbours]]
        address = "198.18.1.11"
        mac = "02:00:00:00:01:11"
        interface = "eth1"
        [[neighbours]]
        address = "198.18.1.12"
        interface = "eth1"
        mac = "02:00:00:00:01:12"
        [[services]]
        name = "web"
        protocol = "tcp"
        vip = "198.18.100.10"
        port = 80
        [[services.backends]]
        address = "198.18.1.11"
        port = 8080
        [[services]]
        name = "dns"
        protocol = "udp"
        vip = "198.18.100.10"
        port = 53
        [[services.backends]]
        address = "198.18.1.11"
        port = 5353
        [[services.backends]]
        address = "198.18.1.12"
        port = 5353
        weight = 7
        zone = "b"
        "#);
    let (config, provenance) = load_str_with_provenance(&text, "t.toml").unwrap();
    assert_eq!(config.services[1].backends[1].weight, 7);
    // The second service's second backend's weight: `weight = 7` on line 36.
    assert_eq!(
        located(&provenance, Place::backend(1, 1, "weight")),
        (36, 10)
    );
    assert_eq!(located(&provenance, Place::backend(1, 1, "zone")), (37, 8));
    assert_eq!(located(&provenance, Place::backend(1, 0, "port")), (32, 8));
    // The second neighbour's MAC, written after its interface.
    assert_eq!(
        located(&provenance, Place::field(Item::Neighbour(1), "mac")),
        (16, 7)
    );
    assert_eq!(
        located(&provenance, Place::field(Item::Neighbour(0), "interface")),
        (12, 13)
    );
    assert_eq!(
        located(&provenance, Place::field(Item::Interface(1), "mac")),
        (8, 7)
    );
    assert_eq!(
        located(&provenance, Place::element(Item::Daemon, "cores", 1)),
        (2, 13)
    );
    assert_eq!(located(&provenance, Place::service(1, "port")), (29, 8));
    // A field the file leaves to its default is located at its item: a
    // backend at its address, a service at its name.
    assert_eq!(
        located(&provenance, Place::backend(0, 0, "weight")),
        (23, 11)
    );
    assert_eq!(
        located(&provenance, Place::service(0, "maglev_table_size")),
        (18, 8)
    );
    assert_eq!(located(&provenance, Place::item(Item::Service(1))), (26, 8));
    // Everything was read: nothing stands in.
    assert_eq!(provenance.stand_in(Place::backend(1, 1, "weight")), None);
}

#[test]
fn provenance_of_an_invalid_file_holds_what_could_not_be_read() {
    // The problems located through the provenance are the loader's.
    let error = load_str(
        "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
         [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\nweight = -3\n",
        "t.toml",
    )
    .unwrap_err();
    // The weight could not be read (a stand-in), so "every backend drained"
    // is not judged on it.
    assert_eq!(
        error.to_string(),
        "t.toml:9:10: weight -3 of backend 198.18.1.11:8080 in service \"web\" is out of range 0..=10000"
    );
}
