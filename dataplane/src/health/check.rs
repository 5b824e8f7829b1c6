//! What a health check is: its kind (`tcp`, `http`, `udp`, `none`) and its
//! timing (`interval`, `timeout`, `rise`, `fall`), as typed values that
//! cannot hold an invalid setting once built.
//!
//! Operators' settings arrive as a [`CheckSettings`] (every key optional,
//! as a file or a request gives them); [`CheckSettings::validate`] turns
//! them into a [`Check`] or returns every problem at once, one
//! [`CheckError`] per invalid value, each naming its key so that the rules
//! validator can point at the file position of that key.
//!
//! Defaults, and why:
//!
//! - `interval` 2 s, `rise` 2, `fall` 3: HAProxy's defaults, which
//!   operators know. A dead backend is ejected after 3 failed checks (about
//!   6 s), and comes back after 2 good ones, so one lucky answer does not
//!   readmit a flapping server.
//! - `timeout` 1 s, or half the interval when that is shorter: a backend on
//!   the same network that needs a second to accept a connection is not
//!   healthy, and a timeout below the interval means a target's checks
//!   never overlap.
//! - `http`: path `/`, statuses 200–399 (HAProxy's rule: 2xx and 3xx pass).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// The interval when none is set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// The timeout when none is set (or half the interval, when shorter).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive successes that bring a down target up, when none is set.
pub const DEFAULT_RISE: u32 = 2;
/// Consecutive failures that take an up target down, when none is set.
pub const DEFAULT_FALL: u32 = 3;
/// The shortest interval: below it checks would be load, not insight.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// The longest interval (an hour): beyond it a check detects nothing useful.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The largest `rise` and `fall`.
pub const MAX_STREAK: u32 = 100;
/// The longest http path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// The longest Host header value, in bytes (a DNS name and a port).
pub const MAX_HOST_LEN: usize = 261;
/// The largest udp payload, in bytes: one datagram under any common MTU.
pub const MAX_PAYLOAD_LEN: usize = 1024;
/// The longest expected reply prefix, in bytes: what a probe reads at most.
pub const MAX_EXPECT_LEN: usize = 256;

/// The name of a check's kind, as operators write it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CheckKindName {
    /// No active check: the target is always up (heartbeats aside).
    #[default]
    None,
    /// A TCP connect.
    Tcp,
    /// An HTTP GET and its status.
    Http,
    /// A UDP datagram and its reply.
    Udp,
}

impl CheckKindName {
    /// The name as written in a file: `none`, `tcp`, `http`, `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKindName::None => "none",
            CheckKindName::Tcp => "tcp",
            CheckKindName::Http => "http",
            CheckKindName::Udp => "udp",
        }
    }
}

impl fmt::Display for CheckKindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CheckKindName {
    type Err = CheckError;
    fn from_str(s: &str) -> Result<Self, CheckError> {
        match s {
            "none" => Ok(CheckKindName::None),
            "tcp" => Ok(CheckKindName::Tcp),
            "http" => Ok(CheckKindName::Http),
            "udp" => Ok(CheckKindName::Udp),
            _ => Err(CheckError::UnknownKind(s.chars().take(32).collect())),
        }
    }
}

/// One invalid health setting. [`CheckError::key`] names the setting.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CheckError {
    /// `kind` is not one of the four.
    #[error("check kind {0:?} is unknown: use tcp, http, udp or none")]
    UnknownKind(String),
    /// `interval` is zero.
    #[error("interval must be more than 0")]
    IntervalZero,
    /// `interval` is below [`MIN_INTERVAL`].
    #[error("interval {0:?} is shorter than the minimum, {MIN_INTERVAL:?}")]
    IntervalTooShort(Duration),
    /// `interval` is above [`MAX_INTERVAL`].
    #[error("interval {0:?} is longer than the maximum, {MAX_INTERVAL:?}")]
    IntervalTooLong(Duration),
    /// `timeout` is zero.
    #[error("timeout must be more than 0")]
    TimeoutZero,
    /// `timeout` is not below `interval`.
    #[error(
        "timeout {timeout:?} must be below interval {interval:?}, so that a target's checks never overlap"
    )]
    TimeoutNotBelowInterval {
        /// The timeout given (or defaulted).
        timeout: Duration,
        /// The interval in force.
        interval: Duration,
    },
    /// `rise` is 0 or above [`MAX_STREAK`].
    #[error("rise {0} is out of range: use 1 to {MAX_STREAK} consecutive successes")]
    RiseOutOfRange(u32),
    /// `fall` is 0 or above [`MAX_STREAK`].
    #[error("fall {0} is out of range: use 1 to {MAX_STREAK} consecutive failures")]
    FallOutOfRange(u32),
    /// The http path does not start with `/`.
    #[error("http path {0:?} must start with '/'")]
    PathWithoutSlash(String),
    /// The http path has a space or a control character, or is too long.
    #[error("http path {0:?} must be at most {MAX_PATH_LEN} bytes of visible characters (no spaces or control characters)")]
    PathInvalid(String),
    /// The Host header is empty, too long, or has a character a header cannot carry.
    #[error("http host {0:?} must be 1 to {MAX_HOST_LEN} visible characters (no spaces or control characters)")]
    HostInvalid(String),
    /// The status range's low end is above its high end.
    #[error("http status range {low}-{high} is empty: the low end must not exceed the high end")]
    StatusRangeEmpty {
        /// Low end.
        low: u16,
        /// High end.
        high: u16,
    },
    /// The status range reaches outside 100–599.
    #[error("http status range {low}-{high} must lie within 100-599")]
    StatusOutOfRange {
        /// Low end.
        low: u16,
        /// High end.
        high: u16,
    },
    /// A udp check without a payload to send.
    #[error("a udp check needs a payload to send")]
    UdpWithoutPayload,
    /// The udp payload is empty or too long.
    #[error("udp payload of {0} bytes must be 1 to {MAX_PAYLOAD_LEN} bytes")]
    PayloadLength(usize),
    /// The expected reply prefix is empty or too long.
    #[error("udp expected reply prefix of {0} bytes must be 1 to {MAX_EXPECT_LEN} bytes")]
    ExpectLength(usize),
    /// A setting given for a kind it does not apply to.
    #[error("{key} applies only to {applies_to} checks, not to a {kind} check")]
    NotForKind {
        /// The setting.
        key: &'static str,
        /// The kind it applies to.
        applies_to: CheckKindName,
        /// The kind of this check.
        kind: CheckKindName,
    },
}

impl CheckError {
    /// The setting at fault, as operators write it: `kind`, `interval`,
    /// `timeout`, `rise`, `fall`, `path`, `host`, `status`, `payload` or
    /// `expect`.
    pub fn key(&self) -> &'static str {
        match self {
            CheckError::UnknownKind(_) => "kind",
            CheckError::IntervalZero
            | CheckError::IntervalTooShort(_)
            | CheckError::IntervalTooLong(_) => "interval",
            CheckError::TimeoutZero | CheckError::TimeoutNotBelowInterval { .. } => "timeout",
            CheckError::RiseOutOfRange(_) => "rise",
            CheckError::FallOutOfRange(_) => "fall",
            CheckError::PathWithoutSlash(_) | CheckError::PathInvalid(_) => "path",
            CheckError::HostInvalid(_) => "host",
            CheckError::StatusRangeEmpty { .. } | CheckError::StatusOutOfRange { .. } => "status",
            CheckError::UdpWithoutPayload | CheckError::PayloadLength(_) => "payload",
            CheckError::ExpectLength(_) => "expect",
            CheckError::NotForKind { key, .. } => key,
        }
    }
}

/// Every problem of one set of settings, in the order of the keys.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct CheckErrors(pub Vec<CheckError>);

impl CheckErrors {
    /// The problems, one per invalid value.
    pub fn errors(&self) -> &[CheckError] {
        &self.0
    }
}

impl fmt::Display for CheckErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// When and how often a target is checked, and how many results in a row
/// change its state (HAProxy's meaning): a target that is up goes down
/// after `fall` consecutive failures, one that is down comes up after
/// `rise` consecutive successes; a result of the other kind resets the
/// streak. Every value is in range and `timeout < interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
}

impl Timing {
    /// Checks every value; all problems at once.
    pub fn new(
        interval: Duration,
        timeout: Duration,
        rise: u32,
        fall: u32,
    ) -> Result<Timing, CheckErrors> {
        let mut errors = Vec::new();
        Timing::check_into(interval, timeout, rise, fall, &mut errors);
        if errors.is_empty() {
            Ok(Timing {
                interval,
                timeout,
                rise,
                fall,
            })
        } else {
            Err(CheckErrors(errors))
        }
    }

    fn check_into(
        interval: Duration,
        timeout: Duration,
        rise: u32,
        fall: u32,
        errors: &mut Vec<CheckError>,
    ) {
        let interval_ok = if interval.is_zero() {
            errors.push(CheckError::IntervalZero);
            false
        } else if interval < MIN_INTERVAL {
            errors.push(CheckError::IntervalTooShort(interval));
            false
        } else if interval > MAX_INTERVAL {
            errors.push(CheckError::IntervalTooLong(interval));
            false
        } else {
            true
        };
        if timeout.is_zero() {
            errors.push(CheckError::TimeoutZero);
        } else if interval_ok && timeout >= interval {
            errors.push(CheckError::TimeoutNotBelowInterval { timeout, interval });
        }
        if !(1..=MAX_STREAK).contains(&rise) {
            errors.push(CheckError::RiseOutOfRange(rise));
        }
        if !(1..=MAX_STREAK).contains(&fall) {
            errors.push(CheckError::FallOutOfRange(fall));
        }
    }

    /// Time between the starts of two checks of a target (before jitter).
    pub fn interval(&self) -> Duration {
        self.interval
    }
    /// How long a check may take before it counts as failed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Consecutive successes that bring a down target up.
    pub fn rise(&self) -> u32 {
        self.rise
    }
    /// Consecutive failures that take an up target down.
    pub fn fall(&self) -> u32 {
        self.fall
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}

/// An inclusive range of HTTP statuses within 100–599 that count as healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusRange {
    low: u16,
    high: u16,
}

impl StatusRange {
    /// 200–399: 2xx and 3xx pass, as in HAProxy.
    pub const DEFAULT: StatusRange = StatusRange {
        low: 200,
        high: 399,
    };

    /// `low..=high`, non-empty, within 100–599.
    pub fn new(low: u16, high: u16) -> Result<StatusRange, CheckError> {
        if low > high {
            Err(CheckError::StatusRangeEmpty { low, high })
        } else if low < 100 || high > 599 {
            Err(CheckError::StatusOutOfRange { low, high })
        } else {
            Ok(StatusRange { low, high })
        }
    }
    /// Whether `status` counts as healthy.
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
    /// The lowest healthy status.
    pub fn low(&self) -> u16 {
        self.low
    }
    /// The highest healthy status.
    pub fn high(&self) -> u16 {
        self.high
    }
}

/// An HTTP check: `GET path` with an optional Host header, healthy when
/// the status is in range.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    path: Box<str>,
    host: Option<Box<str>>,
    status: StatusRange,
}

impl HttpCheck {
    /// Checks the path and host; all problems at once.
    pub fn new(
        path: &str,
        host: Option<&str>,
        status: StatusRange,
    ) -> Result<HttpCheck, CheckErrors> {
        let mut errors = Vec::new();
        check_path(path, &mut errors);
        if let Some(host) = host {
            check_host(host, &mut errors);
        }
        if errors.is_empty() {
            Ok(HttpCheck {
                path: path.into(),
                host: host.map(Into::into),
                status,
            })
        } else {
            Err(CheckErrors(errors))
        }
    }
    /// The path requested.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The Host header sent; without one, the target's `address:port`.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    /// The statuses that count as healthy.
    pub fn status(&self) -> StatusRange {
        self.status
    }
}

/// A character a request line or header value can carry as is.
fn visible(b: u8) -> bool {
    b.is_ascii_graphic()
}

fn check_path(path: &str, errors: &mut Vec<CheckError>) {
    if !path.starts_with('/') {
        errors.push(CheckError::PathWithoutSlash(shorten(path)));
    } else if path.len() > MAX_PATH_LEN || !path.bytes().all(visible) {
        errors.push(CheckError::PathInvalid(shorten(path)));
    }
}

fn check_host(host: &str, errors: &mut Vec<CheckError>) {
    if host.is_empty() || host.len() > MAX_HOST_LEN || !host.bytes().all(visible) {
        errors.push(CheckError::HostInvalid(shorten(host)));
    }
}

/// At most 64 characters of an operator's value, for an error message.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A UDP check: send `payload`, healthy when a reply arrives (starting
/// with `expect`, when set).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UdpCheck {
    payload: Box<[u8]>,
    expect: Option<Box<[u8]>>,
}

impl UdpCheck {
    /// Checks the lengths; all problems at once.
    pub fn new(payload: &[u8], expect: Option<&[u8]>) -> Result<UdpCheck, CheckErrors> {
        let mut errors = Vec::new();
        if payload.is_empty() || payload.len() > MAX_PAYLOAD_LEN {
            errors.push(CheckError::PayloadLength(payload.len()));
        }
        if let Some(expect) = expect {
            if expect.is_empty() || expect.len() > MAX_EXPECT_LEN {
                errors.push(CheckError::ExpectLength(expect.len()));
            }
        }
        if errors.is_empty() {
            Ok(UdpCheck {
                payload: payload.into(),
                expect: expect.map(Into::into),
            })
        } else {
            Err(CheckErrors(errors))
        }
    }
    /// The datagram sent.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// The prefix a reply must start with, if any.
    pub fn expect(&self) -> Option<&[u8]> {
        self.expect.as_deref()
    }
}

/// What a check does on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// No active check.
    None,
    /// Healthy when a TCP connection is accepted (then reset, so no
    /// TIME_WAIT is left on either side).
    Tcp,
    /// Healthy when `GET path` answers a status in range.
    Http(HttpCheck),
    /// Healthy when the payload draws a (matching) reply.
    Udp(UdpCheck),
}

impl CheckKind {
    /// The kind's name.
    pub fn name(&self) -> CheckKindName {
        match self {
            CheckKind::None => CheckKindName::None,
            CheckKind::Tcp => CheckKindName::Tcp,
            CheckKind::Http(_) => CheckKindName::Http,
            CheckKind::Udp(_) => CheckKindName::Udp,
        }
    }
}

/// A complete, valid check definition. Two equal definitions are one
/// check: a backend shared by services with the same definition is probed
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Check {
    kind: CheckKind,
    timing: Timing,
}

impl Check {
    /// A check of `kind` with `timing` (both already valid).
    pub fn new(kind: CheckKind, timing: Timing) -> Check {
        Check { kind, timing }
    }
    /// A TCP connect check.
    pub fn tcp(timing: Timing) -> Check {
        Check::new(CheckKind::Tcp, timing)
    }
    /// What the check does.
    pub fn kind(&self) -> &CheckKind {
        &self.kind
    }
    /// When, and how results change state.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }
    /// Whether the check probes at all (`none` does not).
    pub fn is_active(&self) -> bool {
        !matches!(self.kind, CheckKind::None)
    }
}

/// Health settings as an operator gives them, every key optional. A
/// `[health]` default overlaid by a service's settings (and a backend's)
/// gives the settings of one backend; [`CheckSettings::validate`] turns
/// them into a [`Check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckSettings {
    /// `kind`: none when unset.
    pub kind: Option<CheckKindName>,
    /// `interval`.
    pub interval: Option<Duration>,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `rise`.
    pub rise: Option<u32>,
    /// `fall`.
    pub fall: Option<u32>,
    /// `path` (http).
    pub path: Option<String>,
    /// `host` (http).
    pub host: Option<String>,
    /// `status` (http): the inclusive range of healthy statuses.
    pub status: Option<(u16, u16)>,
    /// `payload` (udp).
    pub payload: Option<Vec<u8>>,
    /// `expect` (udp): the prefix a reply must start with.
    pub expect: Option<Vec<u8>>,
}

impl CheckSettings {
    /// These settings with `over`'s keys in place of ours where `over`
    /// sets them. When `over` names another kind, our kind-specific keys
    /// (path, host, status, payload, expect) are dropped: a service that
    /// turns an http default into a udp check does not inherit its path.
    pub fn overlaid(&self, over: &CheckSettings) -> CheckSettings {
        let kind_changes = over.kind.is_some() && over.kind != self.kind;
        let base = if kind_changes {
            CheckSettings {
                kind: self.kind,
                interval: self.interval,
                timeout: self.timeout,
                rise: self.rise,
                fall: self.fall,
                ..CheckSettings::default()
            }
        } else {
            self.clone()
        };
        CheckSettings {
            kind: over.kind.or(base.kind),
            interval: over.interval.or(base.interval),
            timeout: over.timeout.or(base.timeout),
            rise: over.rise.or(base.rise),
            fall: over.fall.or(base.fall),
            path: over.path.clone().or(base.path),
            host: over.host.clone().or(base.host),
            status: over.status.or(base.status),
            payload: over.payload.clone().or(base.payload),
            expect: over.expect.clone().or(base.expect),
        }
    }

    /// The check these settings describe, with defaults for unset keys, or
    /// every problem, one per invalid value.
    pub fn validate(&self) -> Result<Check, CheckErrors> {
        let kind = self.kind.unwrap_or_default();
        let mut errors = Vec::new();

        let interval = self.interval.unwrap_or(DEFAULT_INTERVAL);
        // Half the interval when that is below the default; an invalid
        // (zero) interval is reported once, not again as a zero timeout.
        let timeout = self.timeout.unwrap_or_else(|| {
            Some(DEFAULT_TIMEOUT.min(interval / 2))
                .filter(|t| !t.is_zero())
                .unwrap_or(DEFAULT_TIMEOUT)
        });
        let rise = self.rise.unwrap_or(DEFAULT_RISE);
        let fall = self.fall.unwrap_or(DEFAULT_FALL);
        Timing::check_into(interval, timeout, rise, fall, &mut errors);

        let mut not_for = |key: &'static str, set: bool, applies_to: CheckKindName| {
            if set && kind != applies_to {
                errors.push(CheckError::NotForKind {
                    key,
                    applies_to,
                    kind,
                });
            }
        };
        not_for("path", self.path.is_some(), CheckKindName::Http);
        not_for("host", self.host.is_some(), CheckKindName::Http);
        not_for("status", self.status.is_some(), CheckKindName::Http);
        not_for("payload", self.payload.is_some(), CheckKindName::Udp);
        not_for("expect", self.expect.is_some(), CheckKindName::Udp);

        let check_kind = match kind {
            CheckKindName::None => Some(CheckKind::None),
            CheckKindName::Tcp => Some(CheckKind::Tcp),
            CheckKindName::Http => {
                let status = match self.status {
                    None => Some(StatusRange::DEFAULT),
                    Some((low, high)) => {
                        StatusRange::new(low, high).map_err(|e| errors.push(e)).ok()
                    }
                };
                let http = HttpCheck::new(
                    self.path.as_deref().unwrap_or("/"),
                    self.host.as_deref(),
                    status.unwrap_or(StatusRange::DEFAULT),
                )
                .map_err(|e| errors.extend(e.0))
                .ok();
                http.filter(|_| status.is_some()).map(CheckKind::Http)
            }
            CheckKindName::Udp => match &self.payload {
                None => {
                    errors.push(CheckError::UdpWithoutPayload);
                    None
                }
                Some(payload) => UdpCheck::new(payload, self.expect.as_deref())
                    .map_err(|e| errors.extend(e.0))
                    .ok()
                    .map(CheckKind::Udp),
            },
        };
        match check_kind {
            Some(kind) if errors.is_empty() => Ok(Check::new(
                kind,
                Timing {
                    interval,
                    timeout,
                    rise,
                    fall,
                },
            )),
            _ => Err(CheckErrors(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings(kind: CheckKindName) -> CheckSettings {
        CheckSettings {
            kind: Some(kind),
            ..CheckSettings::default()
        }
    }

    fn errors_of(s: &CheckSettings) -> Vec<CheckError> {
        s.validate().unwrap_err().0
    }

    #[test]
    fn defaults_are_haproxys_with_a_timeout_below_the_interval() {
        let check = settings(CheckKindName::Tcp).validate().unwrap();
        let t = check.timing();
        assert_eq!(
            (t.interval(), t.timeout(), t.rise(), t.fall()),
            (Duration::from_secs(2), Duration::from_secs(1), 2, 3)
        );
        assert_eq!(check.kind(), &CheckKind::Tcp);
        // Unset kind means no check.
        let none = CheckSettings::default().validate().unwrap();
        assert!(!none.is_active());
        // A short interval without a timeout gets half of it, not an error.
        let short = CheckSettings {
            interval: Some(ms(300)),
            ..settings(CheckKindName::Tcp)
        };
        assert_eq!(short.validate().unwrap().timing().timeout(), ms(150));
        // http: path "/" and 200-399.
        let http = settings(CheckKindName::Http).validate().unwrap();
        let CheckKind::Http(h) = http.kind() else {
            panic!("{http:?}")
        };
        assert_eq!(
            (h.path(), h.host(), h.status()),
            ("/", None, StatusRange::DEFAULT)
        );
        assert!(h.status().contains(200) && h.status().contains(399));
        assert!(!h.status().contains(199) && !h.status().contains(400));
    }

    #[test]
    fn each_invalid_timing_value_has_its_own_message_and_key() {
        let cases: Vec<(CheckSettings, &str, &str)> = vec![
            (
                CheckSettings { interval: Some(Duration::ZERO), ..settings(CheckKindName::Tcp) },
                "interval",
                "interval must be more than 0",
            ),
            (
                CheckSettings { interval: Some(ms(10)), timeout: Some(ms(5)), ..settings(CheckKindName::Tcp) },
                "interval",
                "interval 10ms is shorter than the minimum, 50ms",
            ),
            (
                CheckSettings { interval: Some(Duration::from_secs(7200)), ..settings(CheckKindName::Tcp) },
                "interval",
                "interval 7200s is longer than the maximum, 3600s",
            ),
            (
                CheckSettings { timeout: Some(Duration::ZERO), ..settings(CheckKindName::Tcp) },
                "timeout",
                "timeout must be more than 0",
            ),
            (
                CheckSettings { interval: Some(ms(500)), timeout: Some(ms(500)), ..settings(CheckKindName::Tcp) },
                "timeout",
                "timeout 500ms must be below interval 500ms, so that a target's checks never overlap",
            ),
            (
                CheckSettings { rise: Some(0), ..settings(CheckKindName::Tcp) },
                "rise",
                "rise 0 is out of range: use 1 to 100 consecutive successes",
            ),
            (
                CheckSettings { fall: Some(0), ..settings(CheckKindName::Tcp) },
                "fall",
                "fall 0 is out of range: use 1 to 100 consecutive failures",
            ),
            (
                CheckSettings { fall: Some(101), ..settings(CheckKindName::Tcp) },
                "fall",
                "fall 101 is out of range: use 1 to 100 consecutive failures",
            ),
        ];
        for (s, key, message) in cases {
            let errors = errors_of(&s);
            assert_eq!(errors.len(), 1, "{s:?}: {errors:?}");
            assert_eq!(errors[0].key(), key);
            assert_eq!(errors[0].to_string(), message);
        }
    }

    #[test]
    fn each_invalid_kind_value_has_its_own_message_and_key() {
        let http =
            |path: Option<&str>, host: Option<&str>, status: Option<(u16, u16)>| CheckSettings {
                path: path.map(Into::into),
                host: host.map(Into::into),
                status,
                ..settings(CheckKindName::Http)
            };
        let cases: Vec<(CheckSettings, &str, &str)> = vec![
            (http(Some("health"), None, None), "path", "http path \"health\" must start with '/'"),
            (
                http(Some("/a b"), None, None),
                "path",
                "http path \"/a b\" must be at most 1024 bytes of visible characters (no spaces or control characters)",
            ),
            (
                http(None, Some("a\r\nX-Evil: 1"), None),
                "host",
                "http host \"a\\r\\nX-Evil: 1\" must be 1 to 261 visible characters (no spaces or control characters)",
            ),
            (http(None, Some(""), None), "host", "http host \"\" must be 1 to 261 visible characters (no spaces or control characters)"),
            (
                http(None, None, Some((300, 200))),
                "status",
                "http status range 300-200 is empty: the low end must not exceed the high end",
            ),
            (http(None, None, Some((99, 200))), "status", "http status range 99-200 must lie within 100-599"),
            (http(None, None, Some((200, 600))), "status", "http status range 200-600 must lie within 100-599"),
            (settings(CheckKindName::Udp), "payload", "a udp check needs a payload to send"),
            (
                CheckSettings { payload: Some(vec![]), ..settings(CheckKindName::Udp) },
                "payload",
                "udp payload of 0 bytes must be 1 to 1024 bytes",
            ),
            (
                CheckSettings { payload: Some(vec![1; 1025]), ..settings(CheckKindName::Udp) },
                "payload",
                "udp payload of 1025 bytes must be 1 to 1024 bytes",
            ),
            (
                CheckSettings { payload: Some(vec![1]), expect: Some(vec![0; 257]), ..settings(CheckKindName::Udp) },
                "expect",
                "udp expected reply prefix of 257 bytes must be 1 to 256 bytes",
            ),
            (
                CheckSettings { path: Some("/".into()), ..settings(CheckKindName::Tcp) },
                "path",
                "path applies only to http checks, not to a tcp check",
            ),
            (
                CheckSettings { payload: Some(vec![1]), ..settings(CheckKindName::Http) },
                "payload",
                "payload applies only to udp checks, not to a http check",
            ),
        ];
        for (s, key, message) in cases {
            let errors = errors_of(&s);
            assert_eq!(errors.len(), 1, "{s:?}: {errors:?}");
            assert_eq!(errors[0].key(), key, "{s:?}");
            assert_eq!(errors[0].to_string(), message);
        }
        assert_eq!(
            "ping".parse::<CheckKindName>().unwrap_err().to_string(),
            "check kind \"ping\" is unknown: use tcp, http, udp or none"
        );
        assert_eq!("udp".parse::<CheckKindName>().unwrap(), CheckKindName::Udp);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = CheckSettings {
            kind: Some(CheckKindName::Http),
            interval: Some(Duration::ZERO),
            timeout: Some(Duration::ZERO),
            rise: Some(0),
            fall: Some(0),
            path: Some("x".into()),
            status: Some((500, 400)),
            ..CheckSettings::default()
        };
        let keys: Vec<&str> = errors_of(&s).iter().map(CheckError::key).collect();
        assert_eq!(
            keys,
            ["interval", "timeout", "rise", "fall", "status", "path"]
        );
        let joined = s.validate().unwrap_err().to_string();
        assert!(
            joined.starts_with("interval must be more than 0; timeout must be more than 0; "),
            "{joined}"
        );
    }

    #[test]
    fn overlay_takes_the_specific_keys_and_drops_the_other_kinds() {
        let default = CheckSettings {
            kind: Some(CheckKindName::Http),
            interval: Some(ms(1000)),
            path: Some("/healthz".into()),
            ..CheckSettings::default()
        };
        // Same kind: the path is inherited, the fall overridden.
        let same = default.overlaid(&CheckSettings {
            fall: Some(5),
            ..CheckSettings::default()
        });
        let check = same.validate().unwrap();
        assert_eq!(check.timing().fall(), 5);
        assert_eq!(check.timing().interval(), ms(1000));
        assert!(matches!(check.kind(), CheckKind::Http(h) if h.path() == "/healthz"));
        // Another kind: the http path does not follow, the timing does.
        let udp = default.overlaid(&CheckSettings {
            kind: Some(CheckKindName::Udp),
            payload: Some(b"ping".to_vec()),
            ..CheckSettings::default()
        });
        let check = udp.validate().unwrap();
        assert_eq!(check.timing().interval(), ms(1000));
        assert!(matches!(check.kind(), CheckKind::Udp(u) if u.payload() == b"ping"));
    }

    #[test]
    fn equal_definitions_are_one_check() {
        use std::collections::HashSet;
        let a = settings(CheckKindName::Tcp).validate().unwrap();
        let b = CheckSettings {
            rise: Some(2),
            ..settings(CheckKindName::Tcp)
        }
        .validate()
        .unwrap();
        let c = CheckSettings {
            rise: Some(3),
            ..settings(CheckKindName::Tcp)
        }
        .validate()
        .unwrap();
        let set: HashSet<Check> = [a, b, c].into_iter().collect();
        assert_eq!(set.len(), 2);
    }
}
