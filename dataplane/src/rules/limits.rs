//! Flow control in the rules: a service's `[services.limits]` table and a
//! backend's own connection marks, read from the file into the admission
//! engine's validated limits ([`crate::admission::limits`]), located for
//! messages, and checked against the service's protocol.
//!
//! The limit values are checked as they are read, by the admission
//! constructors (each message names the setting), so a model's limits are
//! valid by their type; the one rule that needs the rest of the service,
//! `over_limit = "reset"` only on TCP, is the validator's.

use serde::Deserialize;
use toml::Spanned;

use crate::admission::limits::setting;
use crate::admission::{
    ClientRateLimit, ConnectionCap, LimitError, OverLimitAction, ServiceRateLimit,
};

/// A service's flow control: `[services.limits]` (every key optional).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLimits {
    /// New flows per second over all workers (`max_new_flows_per_s`,
    /// `new_flows_burst`).
    pub new_flows: Option<ServiceRateLimit>,
    /// New flows per second per client prefix
    /// (`client_max_new_flows_per_s`, `client_new_flows_burst`,
    /// `client_prefix_v4`, `client_prefix_v6`).
    pub client: Option<ClientRateLimit>,
    /// Every backend's connection marks unless it sets its own
    /// (`max_connections`, `resume_connections`).
    pub max_connections: Option<ConnectionCap>,
    /// What an over-limit new flow gets (`over_limit`).
    pub over_limit: OverLimitAction,
    /// Whether SYNs are answered with SYN cookies in XDP (`syn_proxy` and
    /// `syn_proxy_auto_syns_per_s`, keys of the service itself, not of
    /// `[services.limits]`: the proxy is flood defence, kept with the
    /// other new-flow controls in the model).
    pub syn_proxy: crate::synproxy::SynProxy,
}

impl FlowLimits {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.new_flows.is_some() || self.client.is_some() || self.max_connections.is_some()
    }
}

impl std::fmt::Display for FlowLimits {
    /// `none`, or the limits set, as the config names them:
    /// `max_new_flows_per_s 1000 (burst 100), client 20/s (burst 2) per /24 and /64,
    /// max_connections 100 (resume 75), over_limit reset`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = self.new_flows {
            let r = r.rate();
            parts.push(format!(
                "max_new_flows_per_s {} (burst {})",
                r.per_s(),
                r.burst()
            ));
        }
        if let Some(c) = self.client {
            let (r, p) = (c.rate(), c.prefix());
            parts.push(format!(
                "client {}/s (burst {}) per /{} and /{}",
                r.per_s(),
                r.burst(),
                p.v4(),
                p.v6()
            ));
        }
        if let Some(cap) = self.max_connections {
            parts.push(format!(
                "max_connections {} (resume {})",
                cap.upper(),
                cap.lower()
            ));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        parts.push(format!("over_limit {}", self.over_limit.name()));
        f.write_str(&parts.join(", "))
    }
}

/// `[services.limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_new_flows_per_s: Option<Spanned<i64>>,
    pub new_flows_burst: Option<Spanned<i64>>,
    pub client_max_new_flows_per_s: Option<Spanned<i64>>,
    pub client_new_flows_burst: Option<Spanned<i64>>,
    pub client_prefix_v4: Option<Spanned<i64>>,
    pub client_prefix_v6: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub resume_connections: Option<Spanned<i64>>,
    pub over_limit: Option<Spanned<String>>,
}

/// The place key of a `[services.limits]` setting (`limits.KEY`).
pub(super) fn limits_key(name: &str) -> Option<&'static str> {
    Some(match name {
        setting::MAX_NEW_FLOWS_PER_S => "limits.max_new_flows_per_s",
        setting::NEW_FLOWS_BURST => "limits.new_flows_burst",
        setting::CLIENT_MAX_NEW_FLOWS_PER_S => "limits.client_max_new_flows_per_s",
        setting::CLIENT_NEW_FLOWS_BURST => "limits.client_new_flows_burst",
        setting::CLIENT_PREFIX_V4 => "limits.client_prefix_v4",
        setting::CLIENT_PREFIX_V6 => "limits.client_prefix_v6",
        setting::MAX_CONNECTIONS => "limits.max_connections",
        setting::RESUME_CONNECTIONS => "limits.resume_connections",
        setting::OVER_LIMIT => "limits.over_limit",
        _ => return None,
    })
}

/// The setting a [`LimitError`] is about.
pub(super) fn error_setting(e: &LimitError) -> &'static str {
    match e {
        LimitError::Zero { setting, .. }
        | LimitError::Negative { setting, .. }
        | LimitError::TooLarge { setting, .. }
        | LimitError::PrefixLength { setting, .. }
        | LimitError::Qualifies { setting, .. } => setting,
        LimitError::LowerAboveUpper { .. } => setting::RESUME_CONNECTIONS,
        LimitError::UnknownAction { .. } | LimitError::ResetNeedsTcp { .. } => setting::OVER_LIMIT,
    }
}

/// `r`'s value, or `None` with its error added to `problems`.
fn keep<T>(problems: &mut Vec<(&'static str, LimitError)>, r: Result<T, LimitError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push((error_setting(&e), e));
            None
        }
    }
}

fn value(v: &Option<Spanned<i64>>) -> Option<i64> {
    v.as_ref().map(|v| *v.get_ref())
}

impl RawLimits {
    /// The limits, or each setting that is wrong with its message (the
    /// setting names it), in the order of the keys.
    pub(super) fn read(&self) -> (FlowLimits, Vec<(&'static str, LimitError)>) {
        let mut problems = Vec::new();
        let burst = value(&self.new_flows_burst);
        let new_flows = match value(&self.max_new_flows_per_s) {
            Some(rate) => keep(&mut problems, ServiceRateLimit::new(rate, burst)),
            None => None,
        };
        let client = match value(&self.client_max_new_flows_per_s) {
            Some(rate) => keep(
                &mut problems,
                ClientRateLimit::new(
                    rate,
                    value(&self.client_new_flows_burst),
                    value(&self.client_prefix_v4),
                    value(&self.client_prefix_v6),
                ),
            ),
            None => None,
        };
        let max_connections = match value(&self.max_connections) {
            Some(upper) => keep(
                &mut problems,
                ConnectionCap::new(upper, value(&self.resume_connections)),
            ),
            None => None,
        };
        let over_limit = match &self.over_limit {
            Some(name) => {
                keep(&mut problems, OverLimitAction::from_name(name.get_ref())).unwrap_or_default()
            }
            None => OverLimitAction::default(),
        };
        // A setting that only qualifies another means nothing alone.
        let orphans = [
            (
                setting::NEW_FLOWS_BURST,
                self.new_flows_burst.is_some() && self.max_new_flows_per_s.is_none(),
                setting::MAX_NEW_FLOWS_PER_S,
            ),
            (
                setting::CLIENT_NEW_FLOWS_BURST,
                self.client_new_flows_burst.is_some() && self.client_max_new_flows_per_s.is_none(),
                setting::CLIENT_MAX_NEW_FLOWS_PER_S,
            ),
            (
                setting::CLIENT_PREFIX_V4,
                self.client_prefix_v4.is_some() && self.client_max_new_flows_per_s.is_none(),
                setting::CLIENT_MAX_NEW_FLOWS_PER_S,
            ),
            (
                setting::CLIENT_PREFIX_V6,
                self.client_prefix_v6.is_some() && self.client_max_new_flows_per_s.is_none(),
                setting::CLIENT_MAX_NEW_FLOWS_PER_S,
            ),
            (
                setting::RESUME_CONNECTIONS,
                self.resume_connections.is_some() && self.max_connections.is_none(),
                setting::MAX_CONNECTIONS,
            ),
        ];
        let mut orphaned = Vec::new();
        for (name, alone, needs) in orphans {
            if alone {
                orphaned.push((name, needs));
            }
        }
        let limits = FlowLimits {
            new_flows,
            client,
            max_connections,
            over_limit,
            syn_proxy: crate::synproxy::SynProxy::Off,
        };
        let mut out: Vec<(&'static str, LimitError)> = problems;
        out.extend(orphaned.into_iter().map(|(name, needs)| {
            (
                name,
                LimitError::Qualifies {
                    setting: name,
                    needs,
                },
            )
        }));
        (limits, out)
    }

    /// Where the value of `key` (a place key, `limits.KEY`) starts.
    pub(super) fn offset(&self, key: &str) -> Option<usize> {
        let number = |v: &Option<Spanned<i64>>| v.as_ref().map(|v| v.span().start);
        match key.strip_prefix("limits.")? {
            setting::MAX_NEW_FLOWS_PER_S => number(&self.max_new_flows_per_s),
            setting::NEW_FLOWS_BURST => number(&self.new_flows_burst),
            setting::CLIENT_MAX_NEW_FLOWS_PER_S => number(&self.client_max_new_flows_per_s),
            setting::CLIENT_NEW_FLOWS_BURST => number(&self.client_new_flows_burst),
            setting::CLIENT_PREFIX_V4 => number(&self.client_prefix_v4),
            setting::CLIENT_PREFIX_V6 => number(&self.client_prefix_v6),
            setting::MAX_CONNECTIONS => number(&self.max_connections),
            setting::RESUME_CONNECTIONS => {
                number(&self.resume_connections).or(number(&self.max_connections))
            }
            setting::OVER_LIMIT => self.over_limit.as_ref().map(|v| v.span().start),
            _ => None,
        }
    }
}

/// A backend's own marks (`max_connections`, `resume_connections` in its
/// `[[services.backends]]` entry).
pub(super) fn backend_cap(
    max_connections: &Option<Spanned<i64>>,
    resume_connections: &Option<Spanned<i64>>,
) -> Result<Option<ConnectionCap>, (&'static str, LimitError)> {
    match (value(max_connections), value(resume_connections)) {
        (Some(upper), lower) => ConnectionCap::new(upper, lower)
            .map(Some)
            .map_err(|e| (error_setting(&e), e)),
        (None, Some(_)) => Err((
            setting::RESUME_CONNECTIONS,
            LimitError::Qualifies {
                setting: setting::RESUME_CONNECTIONS,
                needs: setting::MAX_CONNECTIONS,
            },
        )),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
