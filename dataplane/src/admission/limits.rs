//! The limits an operator sets, each behind a validating constructor.
//!
//! Every constructor takes the value as the config or the control API
//! carries it (a signed integer: TOML integers are `i64`, so a negative
//! value reaches us and must be refused by name) and returns either a
//! limit that the data path can use as it is, or a [`LimitError`] whose
//! message names the setting and says what would be accepted. The rules
//! validator attaches the position (FILE:LINE:COL, or the request) in
//! front of the message.

/// The setting names the messages use, as the config spells them.
pub mod setting {
    /// A service's new flows per second, over all workers.
    pub const MAX_NEW_FLOWS_PER_S: &str = "max_new_flows_per_s";
    /// How many new flows a service takes at once after a quiet spell.
    pub const NEW_FLOWS_BURST: &str = "new_flows_burst";
    /// One client's (one source prefix's) new flows per second.
    pub const CLIENT_MAX_NEW_FLOWS_PER_S: &str = "client_max_new_flows_per_s";
    /// How many new flows one client opens at once after a quiet spell.
    pub const CLIENT_NEW_FLOWS_BURST: &str = "client_new_flows_burst";
    /// The IPv4 prefix length that makes one client.
    pub const CLIENT_PREFIX_V4: &str = "client_prefix_v4";
    /// The IPv6 prefix length that makes one client.
    pub const CLIENT_PREFIX_V6: &str = "client_prefix_v6";
    /// A backend's upper mark: at this many connections it takes no new flow.
    pub const MAX_CONNECTIONS: &str = "max_connections";
    /// A backend's lower mark: once over the upper mark, it takes new flows
    /// again only below this many connections.
    pub const RESUME_CONNECTIONS: &str = "resume_connections";
    /// What an over-limit new flow gets.
    pub const OVER_LIMIT: &str = "over_limit";
    /// How many clients each worker tracks for the per-client limits.
    pub const CLIENT_TABLE_ENTRIES: &str = "client_table_entries";
}

/// The highest new-flow rate a limit may name: far above what one gateway
/// can set up, and low enough that a chunk's cost in nanoseconds keeps
/// three significant digits.
pub const MAX_NEW_FLOWS_PER_S: u64 = 100_000_000;
/// The largest burst a limit may name.
pub const MAX_BURST: u64 = 1_000_000_000;
/// The highest connection mark (per-worker counts are 32-bit).
pub const MAX_CONNECTIONS: u64 = u32::MAX as u64;
/// The most clients a worker's table may track (16 bytes each: 1 GiB).
pub const MAX_CLIENT_TABLE_ENTRIES: u64 = 1 << 26;

/// Why a limit was refused. Each message is one line that names the
/// setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Zero, where zero cannot mean anything useful.
    #[error("{setting} must be at least 1, not 0 ({hint})")]
    Zero {
        /// The setting.
        setting: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A negative value.
    #[error("{setting} must be a positive number, not {value}")]
    Negative {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: i64,
    },
    /// Above the setting's maximum.
    #[error("{setting} = {value} is above the largest allowed, {max}")]
    TooLarge {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: i64,
        /// The largest accepted value.
        max: u64,
    },
    /// A prefix length that the address family does not have.
    #[error("{setting} = {value} is not an {family} prefix length: it must be from 1 to {max}")]
    PrefixLength {
        /// The setting.
        setting: &'static str,
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// The value given.
        value: i64,
        /// The family's longest prefix (32 or 128).
        max: u8,
    },
    /// A lower mark above the upper one.
    #[error(
        "resume_connections = {lower} is above max_connections = {upper}: a backend \
         resumes at or below the mark where it stops"
    )]
    LowerAboveUpper {
        /// The lower mark given.
        lower: u64,
        /// The upper mark given.
        upper: u64,
    },
    /// An over-limit action with no meaning.
    #[error("over_limit = \"{name}\" is not an action: use \"drop\" or \"reset\"")]
    UnknownAction {
        /// The name given.
        name: String,
    },
    /// A setting that only qualifies another, given without it.
    #[error(
        "{setting} qualifies {needs}, which is not set: set {needs} too, or leave {setting} out"
    )]
    Qualifies {
        /// The setting given.
        setting: &'static str,
        /// The setting it qualifies.
        needs: &'static str,
    },
    /// A RST asked for on a service that is not TCP.
    #[error(
        "over_limit = \"reset\" answers TCP only, and this service is {protocol}: use \"drop\""
    )]
    ResetNeedsTcp {
        /// The service's protocol, by name.
        protocol: &'static str,
    },
}

/// `value` as a count from 1 to `max` for `setting`.
fn positive(
    setting: &'static str,
    value: i64,
    max: u64,
    hint: &'static str,
) -> Result<u64, LimitError> {
    match value {
        0 => Err(LimitError::Zero { setting, hint }),
        v if v < 0 => Err(LimitError::Negative { setting, value }),
        v if v as u64 > max => Err(LimitError::TooLarge {
            setting,
            value,
            max,
        }),
        v => Ok(v as u64),
    }
}

/// A validated rate of new flows with its burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewFlowRate {
    per_s: u64,
    burst: u64,
}

impl NewFlowRate {
    /// The rate and burst under the given setting names; a missing burst is
    /// a tenth of a second's worth (at least 1).
    fn validate(
        rate_setting: &'static str,
        burst_setting: &'static str,
        per_s: i64,
        burst: Option<i64>,
    ) -> Result<NewFlowRate, LimitError> {
        let per_s = positive(
            rate_setting,
            per_s,
            MAX_NEW_FLOWS_PER_S,
            "leave it out for no limit",
        )?;
        let burst = match burst {
            Some(b) => positive(
                burst_setting,
                b,
                MAX_BURST,
                "a burst of 1 admits new flows one at a time",
            )?,
            None => per_s.div_ceil(10),
        };
        Ok(NewFlowRate { per_s, burst })
    }

    /// New flows per second.
    pub fn per_s(&self) -> u64 {
        self.per_s
    }

    /// New flows admitted at once after a quiet spell.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

/// A service's limit on new flows per second, over all workers
/// (`max_new_flows_per_s`, `new_flows_burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRateLimit {
    rate: NewFlowRate,
}

impl ServiceRateLimit {
    /// Validates a service limit of `per_s` new flows per second and a
    /// burst (by default a tenth of a second's worth, at least 1).
    pub fn new(per_s: i64, burst: Option<i64>) -> Result<ServiceRateLimit, LimitError> {
        let rate = NewFlowRate::validate(
            setting::MAX_NEW_FLOWS_PER_S,
            setting::NEW_FLOWS_BURST,
            per_s,
            burst,
        )?;
        Ok(ServiceRateLimit { rate })
    }

    /// The rate and burst.
    pub fn rate(&self) -> NewFlowRate {
        self.rate
    }
}

/// The prefix lengths that aggregate source addresses into one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientPrefix {
    v4: u8,
    v6: u8,
}

impl ClientPrefix {
    /// IPv4 /32 and IPv6 /64 (one host; one IPv6 subnet, which is what a
    /// single subscriber is usually given).
    pub const DEFAULT: ClientPrefix = ClientPrefix { v4: 32, v6: 64 };

    /// Validates the two prefix lengths; a missing one takes the default
    /// (/32, /64).
    pub fn new(v4: Option<i64>, v6: Option<i64>) -> Result<ClientPrefix, LimitError> {
        let check = |setting, family, value: Option<i64>, max: u8, default: u8| match value {
            None => Ok(default),
            Some(v) if (1..=i64::from(max)).contains(&v) => Ok(v as u8),
            Some(value) => Err(LimitError::PrefixLength {
                setting,
                family,
                value,
                max,
            }),
        };
        Ok(ClientPrefix {
            v4: check(setting::CLIENT_PREFIX_V4, "IPv4", v4, 32, Self::DEFAULT.v4)?,
            v6: check(setting::CLIENT_PREFIX_V6, "IPv6", v6, 128, Self::DEFAULT.v6)?,
        })
    }

    /// The IPv4 prefix length (1..=32).
    pub fn v4(&self) -> u8 {
        self.v4
    }

    /// The IPv6 prefix length (1..=128).
    pub fn v6(&self) -> u8 {
        self.v6
    }
}

/// A per-client limit on new flows per second: each source prefix of a
/// service gets its own budget (`client_max_new_flows_per_s`,
/// `client_new_flows_burst`, `client_prefix_v4`, `client_prefix_v6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRateLimit {
    rate: NewFlowRate,
    prefix: ClientPrefix,
}

impl ClientRateLimit {
    /// Validates a per-client limit: `per_s` new flows per second per
    /// client, a burst (by default a tenth of a second's worth, at least
    /// one flow) and the prefix lengths that make one client (by default
    /// IPv4 /32 and IPv6 /64).
    pub fn new(
        per_s: i64,
        burst: Option<i64>,
        prefix_v4: Option<i64>,
        prefix_v6: Option<i64>,
    ) -> Result<ClientRateLimit, LimitError> {
        let rate = NewFlowRate::validate(
            setting::CLIENT_MAX_NEW_FLOWS_PER_S,
            setting::CLIENT_NEW_FLOWS_BURST,
            per_s,
            burst,
        )?;
        let prefix = ClientPrefix::new(prefix_v4, prefix_v6)?;
        Ok(ClientRateLimit { rate, prefix })
    }

    /// The rate and burst per client.
    pub fn rate(&self) -> NewFlowRate {
        self.rate
    }

    /// The prefix lengths that make one client.
    pub fn prefix(&self) -> ClientPrefix {
        self.prefix
    }
}

/// A backend's cap on concurrent connections, with IPVS's two marks: at
/// `upper` connections the backend takes no new flow, and it takes them
/// again only once it is below `lower` (`max_connections`,
/// `resume_connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCap {
    upper: u32,
    lower: u32,
}

impl ConnectionCap {
    /// Validates the marks. Without a lower mark the backend resumes below
    /// three quarters of the upper one, as IPVS does.
    pub fn new(upper: i64, lower: Option<i64>) -> Result<ConnectionCap, LimitError> {
        let upper = positive(
            setting::MAX_CONNECTIONS,
            upper,
            MAX_CONNECTIONS,
            "to take a backend out of service give it weight 0",
        )?;
        let lower = match lower {
            None => (3 * upper).div_ceil(4),
            Some(l) => positive(
                setting::RESUME_CONNECTIONS,
                l,
                MAX_CONNECTIONS,
                "connections never fall below 0, so the backend would never resume",
            )?,
        };
        if lower > upper {
            return Err(LimitError::LowerAboveUpper { lower, upper });
        }
        Ok(ConnectionCap {
            upper: upper as u32,
            lower: lower as u32,
        })
    }

    /// The upper mark: at this many connections, no new flow.
    pub fn upper(&self) -> u32 {
        self.upper
    }

    /// The lower mark: once stopped, new flows again only below this many.
    pub fn lower(&self) -> u32 {
        self.lower
    }
}

/// What a new flow over one of its service's limits gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverLimitAction {
    /// Dropped silently: the client retries on its own schedule (a SYN
    /// flood learns nothing).
    #[default]
    Drop,
    /// (TCP only) answered with a RST, so a real client fails at once
    /// instead of retransmitting its SYN for seconds.
    Reset,
}

impl OverLimitAction {
    /// The action named `name` in the config (`"drop"`, `"reset"`).
    pub fn from_name(name: &str) -> Result<OverLimitAction, LimitError> {
        match name {
            "drop" => Ok(OverLimitAction::Drop),
            "reset" => Ok(OverLimitAction::Reset),
            _ => Err(LimitError::UnknownAction {
                name: name.to_owned(),
            }),
        }
    }

    /// Checks the action suits a service of IP protocol `protocol`: a RST
    /// exists only in TCP.
    pub fn check_protocol(self, protocol: u8) -> Result<OverLimitAction, LimitError> {
        match (self, protocol) {
            (OverLimitAction::Reset, crate::wire::ip_proto::TCP) | (OverLimitAction::Drop, _) => {
                Ok(self)
            }
            (OverLimitAction::Reset, crate::wire::ip_proto::UDP) => {
                Err(LimitError::ResetNeedsTcp { protocol: "UDP" })
            }
            (OverLimitAction::Reset, _) => Err(LimitError::ResetNeedsTcp {
                protocol: "not TCP",
            }),
        }
    }

    /// The config's name for the action.
    pub fn name(self) -> &'static str {
        match self {
            OverLimitAction::Drop => "drop",
            OverLimitAction::Reset => "reset",
        }
    }
}

/// Validates the number of clients each worker's table tracks.
pub fn client_table_entries(value: i64) -> Result<usize, LimitError> {
    positive(
        setting::CLIENT_TABLE_ENTRIES,
        value,
        MAX_CLIENT_TABLE_ENTRIES,
        "leave it out for the default",
    )
    .map(|v| v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_rate_refuses_zero_negative_and_huge_values_by_name() {
        assert_eq!(
            ServiceRateLimit::new(0, None).unwrap_err().to_string(),
            "max_new_flows_per_s must be at least 1, not 0 (leave it out for no limit)"
        );
        assert_eq!(
            ServiceRateLimit::new(-5, None).unwrap_err().to_string(),
            "max_new_flows_per_s must be a positive number, not -5"
        );
        assert_eq!(
            ServiceRateLimit::new(100_000_001, None)
                .unwrap_err()
                .to_string(),
            "max_new_flows_per_s = 100000001 is above the largest allowed, 100000000"
        );
        assert_eq!(
            ServiceRateLimit::new(100, Some(0)).unwrap_err().to_string(),
            "new_flows_burst must be at least 1, not 0 (a burst of 1 admits new flows one at a time)"
        );
        assert_eq!(
            ServiceRateLimit::new(100, Some(-1))
                .unwrap_err()
                .to_string(),
            "new_flows_burst must be a positive number, not -1"
        );
    }

    #[test]
    fn rate_burst_defaults_to_a_tenth_of_a_second_and_at_least_one() {
        let r = ServiceRateLimit::new(1000, None).unwrap().rate();
        assert_eq!((r.per_s(), r.burst()), (1000, 100));
        let r = ServiceRateLimit::new(5, None).unwrap().rate();
        assert_eq!((r.per_s(), r.burst()), (5, 1));
        let r = ServiceRateLimit::new(15, Some(40)).unwrap().rate();
        assert_eq!((r.per_s(), r.burst()), (15, 40));
    }

    #[test]
    fn client_limit_names_its_own_settings() {
        assert_eq!(
            ClientRateLimit::new(0, None, None, None)
                .unwrap_err()
                .to_string(),
            "client_max_new_flows_per_s must be at least 1, not 0 (leave it out for no limit)"
        );
        assert_eq!(
            ClientRateLimit::new(10, Some(-3), None, None)
                .unwrap_err()
                .to_string(),
            "client_new_flows_burst must be a positive number, not -3"
        );
    }

    #[test]
    fn prefix_lengths_must_exist_in_their_family() {
        for (v4, v6, msg) in [
            (
                Some(0),
                None,
                "client_prefix_v4 = 0 is not an IPv4 prefix length: it must be from 1 to 32",
            ),
            (
                Some(33),
                None,
                "client_prefix_v4 = 33 is not an IPv4 prefix length: it must be from 1 to 32",
            ),
            (
                Some(-24),
                None,
                "client_prefix_v4 = -24 is not an IPv4 prefix length: it must be from 1 to 32",
            ),
            (
                None,
                Some(129),
                "client_prefix_v6 = 129 is not an IPv6 prefix length: it must be from 1 to 128",
            ),
            (
                None,
                Some(0),
                "client_prefix_v6 = 0 is not an IPv6 prefix length: it must be from 1 to 128",
            ),
        ] {
            assert_eq!(
                ClientRateLimit::new(10, None, v4, v6)
                    .unwrap_err()
                    .to_string(),
                msg
            );
        }
        let p = ClientPrefix::new(Some(24), Some(48)).unwrap();
        assert_eq!((p.v4(), p.v6()), (24, 48));
        assert_eq!(
            ClientPrefix::new(None, None).unwrap(),
            ClientPrefix::DEFAULT
        );
        for (v4, v6) in [(1, 1), (32, 128), (24, 64), (32, 48)] {
            let p = ClientPrefix::new(Some(v4), Some(v6)).unwrap();
            assert_eq!((i64::from(p.v4()), i64::from(p.v6())), (v4, v6));
        }
    }

    #[test]
    fn connection_cap_marks() {
        let cap = ConnectionCap::new(100, Some(80)).unwrap();
        assert_eq!((cap.upper(), cap.lower()), (100, 80));
        // IPVS's default: resume below three quarters of the upper mark.
        let cap = ConnectionCap::new(10, None).unwrap();
        assert_eq!((cap.upper(), cap.lower()), (10, 8));
        let cap = ConnectionCap::new(1, None).unwrap();
        assert_eq!((cap.upper(), cap.lower()), (1, 1));
        // Equal marks: a plain cap without hysteresis.
        assert!(ConnectionCap::new(50, Some(50)).is_ok());
        assert_eq!(
            ConnectionCap::new(100, Some(101)).unwrap_err().to_string(),
            "resume_connections = 101 is above max_connections = 100: a backend resumes at or \
             below the mark where it stops"
        );
        assert_eq!(
            ConnectionCap::new(0, None).unwrap_err().to_string(),
            "max_connections must be at least 1, not 0 (to take a backend out of service give it weight 0)"
        );
        assert_eq!(
            ConnectionCap::new(100, Some(0)).unwrap_err().to_string(),
            "resume_connections must be at least 1, not 0 (connections never fall below 0, so \
             the backend would never resume)"
        );
        assert_eq!(
            ConnectionCap::new(-1, None).unwrap_err().to_string(),
            "max_connections must be a positive number, not -1"
        );
        assert_eq!(
            ConnectionCap::new(1 << 32, None).unwrap_err().to_string(),
            "max_connections = 4294967296 is above the largest allowed, 4294967295"
        );
    }

    #[test]
    fn over_limit_action_by_name_and_protocol() {
        assert_eq!(
            OverLimitAction::from_name("drop"),
            Ok(OverLimitAction::Drop)
        );
        assert_eq!(
            OverLimitAction::from_name("reset"),
            Ok(OverLimitAction::Reset)
        );
        assert_eq!(
            OverLimitAction::from_name("rst").unwrap_err().to_string(),
            "over_limit = \"rst\" is not an action: use \"drop\" or \"reset\""
        );
        assert!(OverLimitAction::Reset.check_protocol(6).is_ok());
        assert!(OverLimitAction::Drop.check_protocol(17).is_ok());
        assert_eq!(
            OverLimitAction::Reset
                .check_protocol(17)
                .unwrap_err()
                .to_string(),
            "over_limit = \"reset\" answers TCP only, and this service is UDP: use \"drop\""
        );
        assert_eq!(OverLimitAction::default(), OverLimitAction::Drop);
        assert_eq!(OverLimitAction::Reset.name(), "reset");
    }

    #[test]
    fn client_table_size() {
        assert_eq!(client_table_entries(65_536), Ok(65_536));
        assert!(matches!(
            client_table_entries(0),
            Err(LimitError::Zero { .. })
        ));
        assert!(matches!(
            client_table_entries(1 << 27),
            Err(LimitError::TooLarge { .. })
        ));
    }
}
