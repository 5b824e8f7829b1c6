//! Reading the values of the model from text, for every source.
//!
//! A source has to turn text into the model's types before there is a model
//! to validate: an address, a protocol or scheduler name, a MAC. Each
//! function here does that for one kind of value and words the failure
//! once, so that a file and an API request that give the same malformed
//! value are told the same thing. Whether a value that parses is *usable*
//! (a loopback VIP, a port of 0) is the validator's business, not theirs.

use std::net::IpAddr;

use super::mac::parse_mac;
use super::{MacAddr, OnBackendDown, Protocol, Scheduler, WhenAllDown};

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

/// A service's protocol: `tcp` or `udp`.
pub fn protocol(text: &str, service: &str) -> Result<Protocol, String> {
    Protocol::from_name(text).ok_or_else(|| {
        format!("unknown protocol {text:?} in service {service:?} (expected \"tcp\" or \"udp\")")
    })
}

/// A service's scheduler: `maglev`, `wrr` or `sh`.
pub fn scheduler(text: &str, service: &str) -> Result<Scheduler, String> {
    Scheduler::from_name(text).ok_or_else(|| {
        format!(
            "unknown scheduler {text:?} in service {service:?} (expected \"maglev\", \"wrr\" or \"sh\")"
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
            r#"unknown scheduler "rr" in service "web" (expected "maglev", "wrr" or "sh")"#
        );
        assert_eq!(on_backend_down("reset", "web"), Ok(OnBackendDown::Reset));
        assert_eq!(
            on_backend_down("rst", "web").unwrap_err(),
            r#"unknown on_backend_down "rst" in service "web" (expected "keep", "drop" or "reset")"#
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
}
