//! Reading the values of the model from text, for every source.
//!
//! A source has to turn text into the model's types before there is a model
//! to validate: an address, a protocol or scheduler name, a MAC. Each
//! function here does that for one kind of value and words the failure
//! once, so that a file and an API request that give the same malformed
//! value are told the same thing. Whether a value that parses is *usable*
//! (a loopback VIP, a port of 0) is the validator's business, not theirs.

use std::net::IpAddr;
use std::time::Duration;

use super::mac::parse_mac;
use super::{
    Announce, ClientPrefix, FanoutReplies, MacAddr, OnBackendDown, Protocol, Scheduler, WhenAllDown,
};
use crate::health::{CheckKindName, InitialState};

/// A service's VIP.
pub fn vip(text: &str, service: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("VIP {text:?} of service {service:?} is not an IP address"))
}

/// A backend's address.
pub fn backend_address(text: &str, service: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("backend {text:?} of service {service:?} is not an IP address"))
}

/// A static neighbour's address.
pub fn neighbour_address(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("neighbour address {text:?} is not an IP address"))
}

/// A client prefix, `ADDR/LEN` or a bare address (one client), described
/// as `what` (`client class prefix`). Whether the length fits the family
/// and the host bits are clear is the validator's to judge.
pub fn client_prefix(text: &str, what: &str) -> Result<ClientPrefix, String> {
    let bad = || format!("{what} {text:?} is not an address/length prefix");
    match text.split_once('/') {
        None => text.parse().map(ClientPrefix::host).map_err(|_| bad()),
        Some((address, len)) => {
            let address: IpAddr = address.parse().map_err(|_| bad())?;
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len: u8 = len.parse().map_err(|_| bad())?;
            Ok(ClientPrefix::new(address, len))
        }
    }
}

/// A service's protocol: `tcp` or `udp`.
pub fn protocol(text: &str, service: &str) -> Result<Protocol, String> {
    Protocol::from_name(text).ok_or_else(|| {
        format!("unknown protocol {text:?} in service {service:?} (expected \"tcp\" or \"udp\")")
    })
}

/// A service's scheduler: `maglev`, `wrr`, `sh` or `fanout`.
pub fn scheduler(text: &str, service: &str) -> Result<Scheduler, String> {
    Scheduler::from_name(text).ok_or_else(|| {
        format!(
            "unknown scheduler {text:?} in service {service:?} (expected \"maglev\", \"wrr\", \"sh\" or \"fanout\")"
        )
    })
}

/// A fan-out service's reply mode: `all` or `first`.
pub fn fanout_replies(text: &str, service: &str) -> Result<FanoutReplies, String> {
    FanoutReplies::from_name(text).ok_or_else(|| {
        format!(
            "unknown fanout_replies {text:?} in service {service:?} (expected \"all\" or \"first\")"
        )
    })
}

/// What a service's down backends' connections get: `keep`, `drop` or
/// `reset`.
pub fn on_backend_down(text: &str, service: &str) -> Result<OnBackendDown, String> {
    OnBackendDown::from_name(text).ok_or_else(|| {
        format!(
            "unknown on_backend_down {text:?} in service {service:?} (expected \"keep\", \"drop\" or \"reset\")"
        )
    })
}

/// How a service's VIP is announced: `arp`, `bgp` or `none`.
pub fn announce(text: &str, service: &str) -> Result<Announce, String> {
    match text {
        "arp" => Ok(Announce::Arp),
        "bgp" => Ok(Announce::Bgp),
        "none" => Ok(Announce::None),
        _ => Err(format!(
            "unknown announce {text:?} in service {service:?} (expected \"arp\", \"bgp\" or \"none\")"
        )),
    }
}

/// What a service does when no backend is alive: `open` or `closed`.
pub fn when_all_down(text: &str, service: &str) -> Result<WhenAllDown, String> {
    WhenAllDown::from_name(text).ok_or_else(|| {
        format!(
            "unknown when_all_down {text:?} in service {service:?} (expected \"open\" or \"closed\")"
        )
    })
}

/// A MAC address; `owner` names whose it is (`interface "eth0"`,
/// `neighbour 198.18.1.11`).
pub fn mac(text: &str, owner: &str) -> Result<MacAddr, String> {
    parse_mac(text).ok_or_else(|| {
        format!(
            "MAC {text:?} of {owner} is not a MAC address (expected six hex octets such as 02:00:00:00:00:01)"
        )
    })
}

/// A duration: a number and a unit, `ms`, `s`, `m` or `h` (`500ms`,
/// `2s`, `1.5s`, `1m`). `key` and `context` say whose value it is, as
/// `heartbeat_ttl`, ` of service "web"`.
pub fn duration(text: &str, key: &str, context: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| {
        format!(
            "{key} {text:?}{context} is not a duration: write a number and a unit, such as \
             \"500ms\", \"2s\" or \"1m\""
        )
    })
}

/// A duration of at most an hour's millions, or `None`.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let nanos_per_unit: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let nanos = whole
        .checked_mul(nanos_per_unit)?
        .checked_add(fraction * nanos_per_unit / scale)?;
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// A check's kind: `tcp`, `http`, `udp` or `none` (the health module's
/// words when it is none of them).
pub fn check_kind(text: &str) -> Result<CheckKindName, String> {
    text.parse::<CheckKindName>().map_err(|e| e.to_string())
}

/// An http check's healthy statuses: `LOW-HIGH` or one status.
pub fn status_range(text: &str) -> Result<(u16, u16), String> {
    let range = match text.split_once('-') {
        Some((low, high)) => low.trim().parse().ok().zip(high.trim().parse().ok()),
        None => text.trim().parse().ok().map(|s| (s, s)),
    };
    range.ok_or_else(|| {
        format!(
            "status {text:?} is not a range of http statuses: write LOW-HIGH or one \
             status, such as \"200-399\" or \"204\""
        )
    })
}

/// Bytes written as pairs of hex digits (`payload_hex`, `expect_hex`).
pub fn hex(text: &str, key: &str) -> Result<Vec<u8>, String> {
    let digits = text.as_bytes();
    let value = |d: u8| char::from(d).to_digit(16);
    let bytes: Option<Vec<u8>> = digits
        .len()
        .is_multiple_of(2)
        .then(|| {
            digits
                .chunks(2)
                .map(|pair| Some((value(pair[0])? * 16 + value(pair[1])?) as u8))
                .collect()
        })
        .flatten();
    bytes.ok_or_else(|| {
        format!("{key} {text:?} is not hex: write pairs of hex digits such as \"70696e67\"")
    })
}

/// What a backend not checked yet counts as: `up` or `down`.
pub fn initial_state(text: &str) -> Result<InitialState, String> {
    match text {
        "up" => Ok(InitialState::Up),
        "down" => Ok(InitialState::Down),
        _ => Err(format!(
            "initial {text:?} is unknown: use \"up\" or \"down\""
        )),
    }
}

/// `[services.health] source`: `checks` or `etcd`.
pub fn health_source(text: &str) -> Result<crate::rules::HealthSource, String> {
    match text {
        "checks" => Ok(crate::rules::HealthSource::Checks),
        "etcd" => Ok(crate::rules::HealthSource::Etcd),
        _ => Err(format!(
            "health source {text:?} is unknown: use \"checks\" or \"etcd\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_say_what_they_should_be() {
        assert_eq!(vip("198.18.100.10", "web"), Ok([198, 18, 100, 10].into()));
        assert_eq!(
            vip("198.18.100.300", "web").unwrap_err(),
            r#"VIP "198.18.100.300" of service "web" is not an IP address"#
        );
        assert_eq!(
            backend_address("backend-1", "web").unwrap_err(),
            r#"backend "backend-1" of service "web" is not an IP address"#
        );
        assert_eq!(
            neighbour_address("::g").unwrap_err(),
            r#"neighbour address "::g" is not an IP address"#
        );
        assert_eq!(protocol("udp", "dns"), Ok(Protocol::Udp));
        assert_eq!(
            protocol("sctp", "web").unwrap_err(),
            r#"unknown protocol "sctp" in service "web" (expected "tcp" or "udp")"#
        );
        assert_eq!(scheduler("sh", "web"), Ok(Scheduler::Sh));
        assert_eq!(
            scheduler("rr", "web").unwrap_err(),
            r#"unknown scheduler "rr" in service "web" (expected "maglev", "wrr", "sh" or "fanout")"#
        );
        assert_eq!(on_backend_down("reset", "web"), Ok(OnBackendDown::Reset));
        assert_eq!(
            on_backend_down("rst", "web").unwrap_err(),
            r#"unknown on_backend_down "rst" in service "web" (expected "keep", "drop" or "reset")"#
        );
        assert_eq!(announce("arp", "web"), Ok(Announce::Arp));
        assert_eq!(announce("none", "web"), Ok(Announce::None));
        assert_eq!(announce("bgp", "web"), Ok(Announce::Bgp));
        assert_eq!(
            announce("ARP", "web").unwrap_err(),
            r#"unknown announce "ARP" in service "web" (expected "arp", "bgp" or "none")"#
        );
        assert_eq!(when_all_down("closed", "web"), Ok(WhenAllDown::Closed));
        assert_eq!(
            when_all_down("shut", "web").unwrap_err(),
            r#"unknown when_all_down "shut" in service "web" (expected "open" or "closed")"#
        );
        assert_eq!(mac("02:00:00:00:00:01", "x"), Ok([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            mac("02:00", "interface \"eth0\"").unwrap_err(),
            r#"MAC "02:00" of interface "eth0" is not a MAC address (expected six hex octets such as 02:00:00:00:00:01)"#
        );
    }

    #[test]
    fn health_values_parse_or_say_what_they_should_be() {
        let ms = Duration::from_millis;
        for (text, d) in [
            ("500ms", ms(500)),
            ("2s", ms(2000)),
            ("1.5s", ms(1500)),
            ("0.25s", ms(250)),
            ("1m", ms(60_000)),
            ("2h", ms(7_200_000)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(duration(text, "interval", ""), Ok(d), "{text}");
        }
        for text in [
            "2",
            "s",
            "2 s",
            "-1s",
            "1.s5",
            "2sec",
            "",
            "1e3ms",
            ".5s",
            "99999999999999h",
        ] {
            assert_eq!(
                duration(text, "heartbeat_ttl", " of service \"web\"").unwrap_err(),
                format!(
                    "heartbeat_ttl {text:?} of service \"web\" is not a duration: write a number \
                     and a unit, such as \"500ms\", \"2s\" or \"1m\""
                ),
                "{text}"
            );
        }
        assert_eq!(check_kind("http"), Ok(CheckKindName::Http));
        assert_eq!(
            check_kind("ping").unwrap_err(),
            r#"check kind "ping" is unknown: use tcp, http, udp or none"#
        );
        assert_eq!(status_range("200-399"), Ok((200, 399)));
        assert_eq!(status_range("204"), Ok((204, 204)));
        assert_eq!(
            status_range("2xx").unwrap_err(),
            r#"status "2xx" is not a range of http statuses: write LOW-HIGH or one status, such as "200-399" or "204""#
        );
        assert!(status_range("200-70000").is_err());
        assert_eq!(hex("70696E67", "payload_hex"), Ok(b"ping".to_vec()));
        assert_eq!(hex("", "payload_hex"), Ok(Vec::new()));
        assert_eq!(
            hex("7g", "payload_hex").unwrap_err(),
            r#"payload_hex "7g" is not hex: write pairs of hex digits such as "70696e67""#
        );
        assert!(hex("707", "payload_hex").is_err());
        assert!(hex("é1", "payload_hex").is_err());
        assert_eq!(initial_state("down"), Ok(InitialState::Down));
        assert_eq!(
            initial_state("maybe").unwrap_err(),
            r#"initial "maybe" is unknown: use "up" or "down""#
        );
    }
}
