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

/// The `[etcd]` table of a config file, as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Vec<String>,
    prefix: String,
    gateway_id: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    state_file: Option<PathBuf>,
    start_without_etcd: Option<bool>,
    start_timeout: Option<u64>,
    status_ttl: Option<i64>,
}

/// A config file's text, for its `[etcd]` table only.
#[derive(Debug, serde::Deserialize)]
struct FileWithEtcd {
    etcd: Option<RawEtcd>,
}

/// The `[etcd]` table of a config file (`origin` names it in messages),
/// or `None` if it has none: every problem, one line each, prefixed by
/// the origin. The rest of the file is the rules reader's.
///
/// The password is read from `password_file` (its first line), so that
/// the config file itself holds no secret.
pub fn from_config_text(text: &str, origin: &str) -> Result<Option<EtcdSettings>, Vec<String>> {
    let file: FileWithEtcd =
        toml::from_str(text).map_err(|e| vec![format!("{origin}: [etcd]: {}", e.message())])?;
    file.etcd.map_or(Ok(None), |raw| settings_of(raw, origin))
}

/// [`from_config_text`] for the `[etcd]` table the rules reader kept from
/// the same file ([`crate::rules::load_file_with_etcd`]), so that the
/// file is parsed once: a config of 100 000 services is 15 MiB of TOML.
pub fn from_etcd_table(
    table: Option<toml::Table>,
    origin: &str,
) -> Result<Option<EtcdSettings>, Vec<String>> {
    let Some(table) = table else {
        return Ok(None);
    };
    let raw: RawEtcd = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| vec![format!("{origin}: [etcd]: {}", e.message())])?;
    settings_of(raw, origin)
}

/// The settings of an `[etcd]` table, or every problem with them.
fn settings_of(raw: RawEtcd, origin: &str) -> Result<Option<EtcdSettings>, Vec<String>> {
    let mut problems = Vec::new();
    let mut settings = EtcdSettings::new(raw.endpoints, raw.prefix, raw.gateway_id);
    match (raw.username, raw.password_file) {
        (Some(user), Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => {
                let password = text.lines().next().unwrap_or_default().to_owned();
                settings.credentials = Some((user, password));
            }
            Err(e) => problems.push(format!("etcd: password_file {}: {e}", path.display())),
        },
        (None, None) => {}
        _ => problems.push("etcd: username and password_file go together".into()),
    }
    if let Some(ca) = raw.ca_file {
        let identity = match (raw.cert_file, raw.key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                problems.push("etcd: cert_file and key_file go together".into());
                None
            }
        };
        settings.tls = Some(TlsFiles { ca, identity });
    } else if raw.cert_file.is_some() || raw.key_file.is_some() {
        problems.push("etcd: cert_file and key_file need ca_file".into());
    }
    settings.state_file = raw.state_file;
    if let Some(start) = raw.start_without_etcd {
        settings.start_without_etcd = start;
    }
    if let Some(seconds) = raw.start_timeout {
        if !(1..=600).contains(&seconds) {
            problems.push(format!(
                "etcd: start_timeout {seconds} is out of range 1..=600"
            ));
        }
        settings.start_timeout = Duration::from_secs(seconds);
    }
    if let Some(ttl) = raw.status_ttl {
        settings.status_ttl_s = ttl;
        // Written three times a lease, so that one lost write does not
        // let the key expire.
        settings.status_interval = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
    }
    problems.extend(settings.problems());
    if problems.is_empty() {
        Ok(Some(settings))
    } else {
        Err(problems
            .into_iter()
            .map(|p| format!("{origin}: {p}"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_table_of_a_config_file() {
        assert_eq!(
            from_config_text("[gateway]\nmaglev_table_size = 251\n", "gw.toml"),
            Ok(None)
        );
        let text = r#"
            [etcd]
            endpoints = ["http://127.0.0.1:2379"]
            prefix = "/flowgate/prod"
            gateway_id = "gw-1"
            state_file = "/var/lib/flowgate/etcd-state.json"
            start_without_etcd = false
            status_ttl = 6
        "#;
        let settings = from_config_text(text, "gw.toml").unwrap().unwrap();
        assert_eq!(settings.prefix, "/flowgate/prod");
        assert!(!settings.start_without_etcd);
        assert_eq!(settings.status_interval, Duration::from_secs(2));
        assert_eq!(
            settings.state_file.as_deref(),
            Some(std::path::Path::new("/var/lib/flowgate/etcd-state.json"))
        );
        let bad = r#"
            [etcd]
            endpoints = []
            prefix = "/fg"
            gateway_id = "gw-1"
            username = "flowgate"
        "#;
        assert_eq!(
            from_config_text(bad, "gw.toml").unwrap_err(),
            [
                "gw.toml: etcd: username and password_file go together",
                "gw.toml: etcd: no endpoints: give at least one, such as http://127.0.0.1:2379",
            ]
        );
        let unknown = from_config_text("[etcd]\nendpoint = 1\n", "gw.toml").unwrap_err();
        assert!(
            unknown[0].starts_with("gw.toml: [etcd]: unknown field `endpoint`"),
            "{unknown:?}"
        );
    }

    #[test]
    fn the_table_the_rules_reader_kept_reads_as_the_text_does() {
        let table = |text: &str| -> Option<toml::Table> {
            let mut file: toml::Table = toml::from_str(text).unwrap();
            file.remove("etcd")
                .map(|etcd| etcd.as_table().cloned().unwrap())
        };
        for text in [
            "[gateway]\nmaglev_table_size = 251\n",
            "[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/fg\"\n\
             gateway_id = \"gw-1\"\nstatus_ttl = 6\nstart_timeout = 30\n",
            "[etcd]\nendpoints = []\nprefix = \"/fg\"\ngateway_id = \"gw-1\"\n\
             username = \"flowgate\"\n",
            "[etcd]\nendpoint = 1\n",
            "[etcd]\nendpoints = [\"http://e:2379\"]\nprefix = \"/fg\"\n\
             gateway_id = \"gw-1\"\nstart_timeout = -1\n",
        ] {
            let from_text = from_config_text(text, "gw.toml");
            let from_table = from_etcd_table(table(text), "gw.toml");
            assert_eq!(
                format!("{from_table:?}"),
                format!("{from_text:?}"),
                "{text}"
            );
        }
    }

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
