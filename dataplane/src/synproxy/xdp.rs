//! The SYN proxy's maps and counters in the XDP program
//! (bpf/flowgate_synproxy.h), as userspace writes and reads them.

use super::{SynProxy, SynProxyCounters};

/// Map names.
pub(crate) mod map {
    /// Proxied services: `struct traffic_key` → `struct synproxy_service`.
    pub(crate) const SERVICES: &str = "synproxy_services";
    /// The cookies' key (one `struct synproxy_secret`).
    pub(crate) const SECRET: &str = "synproxy_secret";
    /// Per-CPU counters, indexed by [`super::counter`].
    pub(crate) const COUNTERS: &str = "synproxy_counters";
}

/// Counter indices (`enum synproxy_counter`).
pub(crate) mod counter {
    pub(crate) const COOKIES_SENT: u32 = 0;
    pub(crate) const COOKIES_VALID: u32 = 1;
    pub(crate) const COOKIES_INVALID: u32 = 2;
    pub(crate) const SYN_REFUSED: u32 = 3;
    pub(crate) const MARK_FORGED: u32 = 4;
    pub(crate) const ACK_UNCHECKED: u32 = 5;
    pub(crate) const PROBES_VALID: u32 = 6;
    /// How many there are.
    pub(crate) const COUNT: u32 = 7;
}

/// Size of `struct synproxy_service`.
pub(crate) const SERVICE_VALUE_LEN: usize = 40;

/// The map value of a service's setting, its rate measure zero (`None`
/// for `off`: the service has no entry).
pub(crate) fn service_value(mode: SynProxy) -> Option<[u8; SERVICE_VALUE_LEN]> {
    let (code, threshold): (u32, u32) = match mode {
        SynProxy::Off => return None,
        SynProxy::On => (1, 0),
        SynProxy::Auto { syns_per_s } => (2, syns_per_s),
    };
    let mut value = [0u8; SERVICE_VALUE_LEN];
    value[0..4].copy_from_slice(&code.to_ne_bytes());
    value[4..8].copy_from_slice(&threshold.to_ne_bytes());
    Some(value)
}

/// A new random key for the cookies (two 64-bit words, as the program
/// reads them), from the kernel's random source.
pub(crate) fn random_secret() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut key = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}

impl SynProxyCounters {
    /// The counters from per-index totals.
    pub(crate) fn from_totals(totals: &[u64]) -> SynProxyCounters {
        let at = |index: u32| totals.get(index as usize).copied().unwrap_or(0);
        SynProxyCounters {
            cookies_sent: at(counter::COOKIES_SENT),
            cookies_valid: at(counter::COOKIES_VALID),
            cookies_invalid: at(counter::COOKIES_INVALID),
            syn_refused: at(counter::SYN_REFUSED),
            mark_forged: at(counter::MARK_FORGED),
            ack_unchecked: at(counter::ACK_UNCHECKED),
            probes_valid: at(counter::PROBES_VALID),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> &'static str {
        include_str!("../../bpf/flowgate_synproxy.h")
    }

    #[test]
    fn counter_indices_match_the_c_source() {
        let body = header()
            .split("enum synproxy_counter {")
            .nth(1)
            .and_then(|rest| rest.split("};").next())
            .unwrap();
        let c: Vec<(String, u32)> = body
            .lines()
            .filter_map(|line| {
                let (name, value) = line.trim().trim_end_matches(',').split_once(" = ")?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        let rust = [
            ("SYNPROXY_COOKIES_SENT", counter::COOKIES_SENT),
            ("SYNPROXY_COOKIES_VALID", counter::COOKIES_VALID),
            ("SYNPROXY_COOKIES_INVALID", counter::COOKIES_INVALID),
            ("SYNPROXY_SYN_REFUSED", counter::SYN_REFUSED),
            ("SYNPROXY_MARK_FORGED", counter::MARK_FORGED),
            ("SYNPROXY_ACK_UNCHECKED", counter::ACK_UNCHECKED),
            ("SYNPROXY_PROBES_VALID", counter::PROBES_VALID),
            ("SYNPROXY_COUNTER_COUNT", counter::COUNT),
        ];
        assert_eq!(c.len(), rust.len(), "{c:?}");
        for (name, value) in rust {
            assert!(
                c.contains(&(name.to_string(), value)),
                "{name} = {value} not in {c:?}"
            );
        }
    }

    #[test]
    fn constants_shared_with_the_c_source_agree() {
        let h = header();
        let define = |name: &str| -> String {
            h.lines()
                .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        use super::super::handshake as hs;
        assert_eq!(define("SYNPROXY_MARK"), format!("0x{:02x}", hs::MARK));
        assert_eq!(define("SYNPROXY_WSCALE"), hs::OFFERED_WSCALE.to_string());
        assert_eq!(define("SYNPROXY_MSS4"), hs::OFFERED_MSS_V4.to_string());
        assert_eq!(define("SYNPROXY_MSS6"), hs::OFFERED_MSS_V6.to_string());
        assert_eq!(define("SYNPROXY_ON"), "1");
        assert_eq!(define("SYNPROXY_AUTO"), "2");
        // The service value: mode, threshold, then four u64 of state.
        assert!(h.contains("struct synproxy_service {\n\t__u32 mode;\n\t__u32 auto_syns_per_s;"));
        assert_eq!(SERVICE_VALUE_LEN, 4 + 4 + 4 * 8);
        let v = service_value(SynProxy::Auto { syns_per_s: 300 }).unwrap();
        assert_eq!(&v[0..8], &[2, 0, 0, 0, 44, 1, 0, 0]);
        assert!(service_value(SynProxy::Off).is_none());
    }
}
