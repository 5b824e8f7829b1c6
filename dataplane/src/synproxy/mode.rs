//! A service's `syn_proxy` setting.

use std::fmt;

/// `syn_proxy_auto_syns_per_s` when a service sets `syn_proxy = "auto"`
/// without it.
pub const DEFAULT_AUTO_SYNS_PER_S: u32 = 1000;

/// Whether the XDP program answers a TCP service's SYNs with SYN cookies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SynProxy {
    /// Never (default): SYNs go to the workers as any new flow.
    #[default]
    Off,
    /// Always: every connection to the service is proxied.
    On,
    /// While the SYN rate to the service, measured in the XDP program,
    /// is above this many per second (`syn_proxy_auto_syns_per_s`): only
    /// the connections opened under pressure pay for the proxy.
    Auto {
        /// The threshold, SYNs per second (> 0).
        syns_per_s: u32,
    },
}

impl SynProxy {
    /// `off`, `on` or `auto`.
    pub const fn name(self) -> &'static str {
        match self {
            SynProxy::Off => "off",
            SynProxy::On => "on",
            SynProxy::Auto { .. } => "auto",
        }
    }

    /// Whether the proxy may answer the service's SYNs at all.
    pub const fn is_enabled(self) -> bool {
        !matches!(self, SynProxy::Off)
    }

    /// The mode called `name` (as in a config), `auto` with `syns_per_s`.
    pub fn from_name(name: &str, syns_per_s: u32) -> Option<SynProxy> {
        match name {
            "off" => Some(SynProxy::Off),
            "on" => Some(SynProxy::On),
            "auto" => Some(SynProxy::Auto { syns_per_s }),
            _ => None,
        }
    }
}

impl fmt::Display for SynProxy {
    /// `off`, `on`, `auto above 1000 SYN/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SynProxy::Auto { syns_per_s } => write!(f, "auto above {syns_per_s} SYN/s"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for mode in [
            SynProxy::Off,
            SynProxy::On,
            SynProxy::Auto { syns_per_s: 7 },
        ] {
            assert_eq!(SynProxy::from_name(mode.name(), 7), Some(mode));
        }
        assert_eq!(SynProxy::from_name("ON", 7), None);
        assert_eq!(
            SynProxy::Auto { syns_per_s: 5 }.to_string(),
            "auto above 5 SYN/s"
        );
        assert!(!SynProxy::Off.is_enabled() && SynProxy::On.is_enabled());
    }
}
