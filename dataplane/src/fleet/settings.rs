//! How a gateway reaches etcd, and what it does when it cannot.

use std::path::PathBuf;
use std::time::Duration;

use super::layout::{KeyLayout, LayoutError};

/// Where the rules' etcd is and how to use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the cluster's members (`http://10.0.0.1:2379`, or
    /// `https://…` with [`EtcdSettings::tls`]).
    pub endpoints: Vec<String>,
    /// The key prefix of the fleet's rules and status (`/flowgate/prod`).
    pub prefix: String,
    /// This gateway's id: the last segment of its status key. Unique in
    /// the fleet.
    pub gateway_id: String,
    /// User name and password, if the cluster has authentication on.
    pub credentials: Option<(String, String)>,
    /// TLS to the cluster, if its URLs are `https://`.
    pub tls: Option<TlsFiles>,
    /// Where the last good state is kept; none keeps nothing.
    pub state_file: Option<PathBuf>,
    /// Whether a gateway that cannot reach etcd at start runs the saved
    /// state (`true`) or refuses to start (`false`).
    pub start_without_etcd: bool,
    /// How long the start waits for etcd before it gives up (and starts
    /// from the saved state, or refuses to start).
    pub start_timeout: Duration,
    /// The status key's lease: a gateway's key disappears this long after
    /// it stops.
    pub status_ttl_s: i64,
    /// How often the status is written and the lease kept alive.
    pub status_interval: Duration,
    /// The first wait before reconnecting; it doubles up to
    /// [`EtcdSettings::backoff_max`].
    pub backoff_min: Duration,
    /// The longest wait between reconnects.
    pub backoff_max: Duration,
    /// How long one request to etcd may take before the connection is
    /// counted lost.
    pub request_timeout: Duration,
}

/// The files of TLS to etcd (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the cluster's certificates.
    pub ca: PathBuf,
    /// This gateway's client certificate and key, if the cluster asks for
    /// one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl EtcdSettings {
    /// Settings with the defaults for everything but where etcd is, the
    /// prefix and the gateway's id.
    pub fn new(
        endpoints: Vec<String>,
        prefix: impl Into<String>,
        gateway_id: impl Into<String>,
    ) -> EtcdSettings {
        EtcdSettings {
            endpoints,
            prefix: prefix.into(),
            gateway_id: gateway_id.into(),
            credentials: None,
            tls: None,
            state_file: None,
            start_without_etcd: true,
            start_timeout: Duration::from_secs(10),
            status_ttl_s: 10,
            status_interval: Duration::from_secs(2),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// The key layout under the prefix.
    pub fn layout(&self) -> Result<KeyLayout, LayoutError> {
        KeyLayout::new(&self.prefix)
    }

    /// Every problem with the settings, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.endpoints.is_empty() {
            problems.push(
                "etcd: no endpoints: give at least one, such as http://127.0.0.1:2379".into(),
            );
        }
        for endpoint in &self.endpoints {
            let tls = endpoint.starts_with("https://");
            if !tls && !endpoint.starts_with("http://") {
                problems.push(format!(
                    "etcd: endpoint {endpoint:?} is not an http:// or https:// URL"
                ));
            } else if tls && self.tls.is_none() {
                problems.push(format!(
                    "etcd: endpoint {endpoint:?} is https:// but no CA is given (ca_file)"
                ));
            }
        }
        if let Err(e) = self.layout() {
            problems.push(format!("etcd: {e}"));
        }
        let id = &self.gateway_id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            problems.push(format!(
                "etcd: gateway id {id:?} is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -"
            ));
        }
        if self.status_ttl_s < 2 {
            problems.push(format!(
                "etcd: status_ttl {} is too short: at least 2 seconds",
                self.status_ttl_s
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_with_a_line_per_problem() {
        let good = EtcdSettings::new(vec!["http://127.0.0.1:2379".into()], "/fg", "gw-1");
        assert!(good.problems().is_empty());
        let mut bad = EtcdSettings::new(
            vec!["127.0.0.1:2379".into(), "https://e:2379".into()],
            "/",
            "gw 1",
        );
        bad.status_ttl_s = 1;
        assert_eq!(
            bad.problems(),
            [
                "etcd: endpoint \"127.0.0.1:2379\" is not an http:// or https:// URL",
                "etcd: endpoint \"https://e:2379\" is https:// but no CA is given (ca_file)",
                "etcd: the etcd prefix is empty: give one such as /flowgate",
                "etcd: gateway id \"gw 1\" is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -",
                "etcd: status_ttl 1 is too short: at least 2 seconds",
            ]
        );
    }
}
