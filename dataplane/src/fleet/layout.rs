//! Where each part of the rules lives in etcd: the key layout, version 1.
//!
//! Under a configured prefix (e.g. `/flowgate/prod`):
//!
//! ```text
//! PREFIX/v1/rules/gateway                      gateway-wide settings ([gateway])
//! PREFIX/v1/rules/services/NAME                one service, its backends inside
//! PREFIX/v1/rules/classes/PREFIX/LEN           one client class: SET and zone
//! PREFIX/v1/rules/paths/SERVICE/PREFIX/LEN     one distribution path
//! PREFIX/v1/rules/health/SERVICE/BACKEND       `up`: one backend reported alive
//!                                              (BACKEND: its name or ADDR:PORT)
//! PREFIX/v1/status/GATEWAY_ID                  one gateway's status, under a lease
//! ```
//!
//! Everything a gateway runs lies under one prefix, `PREFIX/v1/rules/`, so
//! that it is read with one range and watched with one watch, and every
//! revision that touches it is one change; the status keys lie beside it,
//! so that gateways writing their status do not wake each other's watch.
//! `v1` is the layout's version: a later layout goes under `v2` beside it,
//! so that a fleet can be moved over while old gateways still read `v1`.
//!
//! Health keys lie under the rules' prefix, so that they are read at the
//! revision the rules are read at and watched with them, but they are not
//! rules: a revision of health keys alone makes no snapshot generation,
//! it sets the liveness of the backends of services whose
//! `[services.health] source` is `etcd` ([`super::health`]). They were
//! added to v1 (a gateway from before them refuses them as unknown keys:
//! gateways are upgraded before reporters write them).
//!
//! Client prefixes in keys are written in their canonical form (what
//! [`Prefix`]'s `Display` gives: lowercase, shortest IPv6 form, host bits
//! clear), so that one entry has exactly one key.

use std::fmt;

use crate::route::Prefix;

/// The layout's version, the path segment after the prefix.
pub const LAYOUT_VERSION: &str = "v1";

/// Where the rules and status of one fleet live: the configured prefix and
/// the keys under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// `PREFIX/v1`.
    root: String,
    /// `PREFIX/v1/rules/`.
    rules: String,
}

/// Why a configured prefix was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Nothing but slashes.
    #[error("the etcd prefix is empty: give one such as /flowgate")]
    Empty,
    /// Whitespace or a control character, which etcdctl users cannot type
    /// back.
    #[error("the etcd prefix {0:?} may not contain whitespace or control characters")]
    Character(String),
}

/// What a key under `PREFIX/v1/rules/` names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKey {
    /// `rules/gateway`.
    Gateway,
    /// `rules/services/NAME`.
    Service(String),
    /// `rules/classes/PREFIX`.
    Class(Prefix),
    /// `rules/paths/SERVICE/PREFIX`.
    Path {
        /// The service the path belongs to.
        service: String,
        /// The clients it applies to.
        prefix: Prefix,
    },
}

/// The kind of part a key holds, for messages and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PartKind {
    /// The gateway settings.
    Gateway,
    /// A service.
    Service,
    /// A client class.
    Class,
    /// A distribution path.
    Path,
}

impl RuleKey {
    /// The kind of part the key holds.
    pub fn kind(&self) -> PartKind {
        match self {
            RuleKey::Gateway => PartKind::Gateway,
            RuleKey::Service(_) => PartKind::Service,
            RuleKey::Class(_) => PartKind::Class,
            RuleKey::Path { .. } => PartKind::Path,
        }
    }
}

impl fmt::Display for PartKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartKind::Gateway => "gateway settings",
            PartKind::Service => "service",
            PartKind::Class => "client class",
            PartKind::Path => "distribution path",
        })
    }
}

impl KeyLayout {
    /// The layout under `prefix`; trailing slashes are dropped
    /// (`/flowgate/` is `/flowgate`).
    pub fn new(prefix: &str) -> Result<KeyLayout, LayoutError> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(LayoutError::Empty);
        }
        if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(LayoutError::Character(prefix.to_owned()));
        }
        let root = format!("{prefix}/{LAYOUT_VERSION}");
        let rules = format!("{root}/rules/");
        Ok(KeyLayout { root, rules })
    }

    /// The configured prefix, without the version.
    pub fn prefix(&self) -> &str {
        &self.root[..self.root.len() - LAYOUT_VERSION.len() - 1]
    }

    /// `PREFIX/v1/rules/`: everything a gateway runs.
    pub fn rules(&self) -> &str {
        &self.rules
    }

    /// `PREFIX/v1/status/`: the gateways' status keys.
    pub fn status(&self) -> String {
        format!("{}/status/", self.root)
    }

    /// `PREFIX/v1/rules/gateway`.
    pub fn gateway_key(&self) -> String {
        format!("{}gateway", self.rules)
    }

    /// `PREFIX/v1/rules/services/`.
    pub fn services(&self) -> String {
        format!("{}services/", self.rules)
    }

    /// `PREFIX/v1/rules/services/NAME`.
    pub fn service_key(&self, name: &str) -> String {
        format!("{}services/{name}", self.rules)
    }

    /// `PREFIX/v1/rules/classes/`.
    pub fn classes(&self) -> String {
        format!("{}classes/", self.rules)
    }

    /// `PREFIX/v1/rules/classes/PREFIX`.
    pub fn class_key(&self, prefix: &Prefix) -> String {
        format!("{}classes/{prefix}", self.rules)
    }

    /// `PREFIX/v1/rules/paths/`.
    pub fn paths(&self) -> String {
        format!("{}paths/", self.rules)
    }

    /// `PREFIX/v1/rules/paths/SERVICE/`: every path of one service.
    pub fn paths_of(&self, service: &str) -> String {
        format!("{}paths/{service}/", self.rules)
    }

    /// `PREFIX/v1/rules/paths/SERVICE/PREFIX`.
    pub fn path_key(&self, service: &str, prefix: &Prefix) -> String {
        format!("{}paths/{service}/{prefix}", self.rules)
    }

    /// `PREFIX/v1/rules/health/`: the health keys.
    pub fn health(&self) -> String {
        format!("{}health/", self.rules)
    }

    /// `PREFIX/v1/rules/health/SERVICE/BACKEND`.
    pub fn health_key(&self, service: &str, backend: &ReportedBackend) -> String {
        format!("{}health/{service}/{backend}", self.rules)
    }

    /// Whether `key` is a health key (well formed or not).
    pub fn is_health(&self, key: &[u8]) -> bool {
        key.strip_prefix(self.rules.as_bytes())
            .is_some_and(|rest| rest.starts_with(b"health/"))
    }

    /// What a key under [`KeyLayout::health`] names, or why it names
    /// nothing: the message, for the operator.
    pub fn parse_health(&self, key: &[u8]) -> Result<HealthKey, String> {
        let Ok(key) = std::str::from_utf8(key) else {
            return Err("the key is not UTF-8".into());
        };
        let shape = || {
            format!(
                "a health key is {}health/SERVICE/BACKEND, BACKEND a backend's name or its ADDRESS:PORT",
                self.rules
            )
        };
        let Some(rest) = key
            .strip_prefix(self.rules.as_str())
            .and_then(|r| r.strip_prefix("health/"))
        else {
            return Err(shape());
        };
        let Some((service, backend)) = rest
            .split_once('/')
            .filter(|(s, b)| !s.is_empty() && !b.is_empty() && !b.contains('/'))
        else {
            return Err(shape());
        };
        Ok(HealthKey {
            service: service.to_owned(),
            backend: backend.parse()?,
        })
    }

    /// `PREFIX/v1/status/ID`.
    pub fn status_key(&self, gateway: &str) -> String {
        format!("{}/status/{gateway}", self.root)
    }

    /// What a key under [`KeyLayout::rules`] names, or why it names
    /// nothing: the message, for the operator.
    pub fn parse(&self, key: &[u8]) -> Result<RuleKey, String> {
        let Ok(key) = std::str::from_utf8(key) else {
            return Err("the key is not UTF-8".into());
        };
        let Some(rest) = key.strip_prefix(self.rules.as_str()) else {
            return Err(format!("the key is not under {}", self.rules));
        };
        if rest == "gateway" {
            return Ok(RuleKey::Gateway);
        }
        if let Some(name) = rest.strip_prefix("services/") {
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "a service key is {}services/NAME, with one name and no '/'",
                    self.rules
                ));
            }
            return Ok(RuleKey::Service(name.to_owned()));
        }
        if let Some(text) = rest.strip_prefix("classes/") {
            return canonical_prefix(text).map(RuleKey::Class);
        }
        if let Some(rest) = rest.strip_prefix("paths/") {
            let Some((service, text)) = rest.split_once('/').filter(|(s, _)| !s.is_empty()) else {
                return Err(format!("a path key is {}paths/SERVICE/PREFIX", self.rules));
            };
            let prefix = canonical_prefix(text)?;
            return Ok(RuleKey::Path {
                service: service.to_owned(),
                prefix,
            });
        }
        if rest.starts_with("health/") {
            return Err("a health key is read apart from the rules".into());
        }
        Err(format!(
            "unknown kind of key: under {} flowgate reads gateway, services/NAME, \
             classes/PREFIX, paths/SERVICE/PREFIX and health/SERVICE/BACKEND",
            self.rules
        ))
    }
}

/// A health key: one backend of one service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HealthKey {
    /// The service.
    pub service: String,
    /// The backend.
    pub backend: ReportedBackend,
}

/// How a health key names a backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReportedBackend {
    /// By its address and port (`198.18.1.11:8080`, `[2001:db8::1]:80`).
    Address(std::net::SocketAddr),
    /// By its `name`.
    Name(String),
}

impl std::str::FromStr for ReportedBackend {
    type Err = String;

    fn from_str(text: &str) -> Result<ReportedBackend, String> {
        if let Ok(address) = text.parse::<std::net::SocketAddr>() {
            let canonical = address.to_string();
            if canonical != text {
                return Err(format!(
                    "backend {text:?} must be written {canonical:?} in a key, so that it has one key"
                ));
            }
            return Ok(ReportedBackend::Address(address));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
        {
            return Err(format!(
                "backend {text:?} is neither ADDRESS:PORT nor a backend name"
            ));
        }
        Ok(ReportedBackend::Name(text.to_owned()))
    }
}

impl fmt::Display for ReportedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportedBackend::Address(a) => write!(f, "{a}"),
            ReportedBackend::Name(n) => f.write_str(n),
        }
    }
}

/// A client prefix written in a key: `ADDRESS/LENGTH`, in canonical form.
fn canonical_prefix(text: &str) -> Result<Prefix, String> {
    if !text.contains('/') {
        return Err(format!(
            "{text:?} is not ADDRESS/LENGTH: a key names a prefix with its length"
        ));
    }
    let prefix: Prefix = text.parse().map_err(|e| format!("client prefix: {e}"))?;
    let canonical = prefix.to_string();
    if canonical != text {
        return Err(format!(
            "client prefix {text:?} must be written {canonical:?} in a key, so that it has one key"
        ));
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KeyLayout {
        KeyLayout::new("/flowgate/prod/").unwrap()
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let l = layout();
        assert_eq!(l.prefix(), "/flowgate/prod");
        assert_eq!(l.rules(), "/flowgate/prod/v1/rules/");
        assert_eq!(l.gateway_key(), "/flowgate/prod/v1/rules/gateway");
        assert_eq!(l.service_key("web"), "/flowgate/prod/v1/rules/services/web");
        let v4: Prefix = "198.18.0.0/16".parse().unwrap();
        let v6: Prefix = "2001:db8::1/128".parse().unwrap();
        assert_eq!(
            l.class_key(&v4),
            "/flowgate/prod/v1/rules/classes/198.18.0.0/16"
        );
        assert_eq!(
            l.path_key("web", &v6),
            "/flowgate/prod/v1/rules/paths/web/2001:db8::1/128"
        );
        assert_eq!(l.status_key("gw-1"), "/flowgate/prod/v1/status/gw-1");
        // The status keys are outside the rules' range.
        assert!(!l.status_key("gw-1").starts_with(l.rules()));
        for key in [
            l.gateway_key(),
            l.service_key("web"),
            l.class_key(&v4),
            l.path_key("web", &v6),
        ] {
            assert!(key.starts_with(l.rules()));
            assert!(l.parse(key.as_bytes()).is_ok(), "{key}");
        }
        assert_eq!(
            l.parse(l.path_key("web", &v6).as_bytes()),
            Ok(RuleKey::Path {
                service: "web".into(),
                prefix: v6
            })
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(KeyLayout::new("///"), Err(LayoutError::Empty));
        assert_eq!(
            KeyLayout::new("/flow gate").unwrap_err().to_string(),
            "the etcd prefix \"/flow gate\" may not contain whitespace or control characters"
        );
        assert_eq!(KeyLayout::new("fg").unwrap().rules(), "fg/v1/rules/");
    }

    #[test]
    fn malformed_keys_say_what_a_key_should_be() {
        let l = layout();
        let r = l.rules();
        let bad = |k: String| l.parse(k.as_bytes()).unwrap_err();
        assert_eq!(
            bad(format!("{r}services/a/b")),
            format!("a service key is {r}services/NAME, with one name and no '/'")
        );
        assert!(bad(format!("{r}servers/web")).starts_with("unknown kind of key"));
        assert_eq!(
            bad(format!("{r}classes/198.18.0.1/16")),
            "client prefix: 198.18.0.1/16 has host bits set; the prefix is 198.18.0.0/16"
        );
        assert_eq!(
            bad(format!("{r}classes/2001:DB8::/32")),
            "client prefix \"2001:DB8::/32\" must be written \"2001:db8::/32\" in a key, so that it has one key"
        );
        assert_eq!(
            bad(format!("{r}paths/web/198.18.0.1")),
            "\"198.18.0.1\" is not ADDRESS/LENGTH: a key names a prefix with its length"
        );
        assert_eq!(
            bad(format!("{r}paths//198.18.0.1/32")),
            format!("a path key is {r}paths/SERVICE/PREFIX")
        );
        assert_eq!(
            l.parse(b"/other/key").unwrap_err(),
            format!("the key is not under {r}")
        );
        let mut key = r.as_bytes().to_vec();
        key.extend_from_slice(b"services/\xff");
        assert_eq!(l.parse(&key).unwrap_err(), "the key is not UTF-8");
        let mut key = r.as_bytes().to_vec();
        key.extend_from_slice(b"health/web/\xff");
        assert_eq!(l.parse(&key).unwrap_err(), "the key is not UTF-8");
    }

    #[test]
    fn health_keys_name_a_backend_by_address_or_name() {
        let l = layout();
        let r = l.rules();
        let by_address = ReportedBackend::Address("198.18.1.11:8080".parse().unwrap());
        let key = l.health_key("web", &by_address);
        assert_eq!(key, "/flowgate/prod/v1/rules/health/web/198.18.1.11:8080");
        assert!(l.is_health(key.as_bytes()));
        assert!(!l.is_health(l.service_key("web").as_bytes()));
        assert_eq!(
            l.parse_health(key.as_bytes()),
            Ok(HealthKey {
                service: "web".into(),
                backend: by_address
            })
        );
        assert_eq!(
            l.parse_health(format!("{r}health/web/[2001:db8::1]:80").as_bytes()),
            Ok(HealthKey {
                service: "web".into(),
                backend: ReportedBackend::Address("[2001:db8::1]:80".parse().unwrap())
            })
        );
        assert_eq!(
            l.parse_health(format!("{r}health/web/web-7").as_bytes()),
            Ok(HealthKey {
                service: "web".into(),
                backend: ReportedBackend::Name("web-7".into())
            })
        );
        let bad = |k: String| l.parse_health(k.as_bytes()).unwrap_err();
        let shape = format!(
            "a health key is {r}health/SERVICE/BACKEND, BACKEND a backend's name or its ADDRESS:PORT"
        );
        assert_eq!(bad(format!("{r}health/web")), shape);
        assert_eq!(bad(format!("{r}health//198.18.1.11:80")), shape);
        assert_eq!(bad(format!("{r}health/web/a/b")), shape);
        assert_eq!(
            bad(format!("{r}health/web/[2001:DB8::1]:80")),
            "backend \"[2001:DB8::1]:80\" must be written \"[2001:db8::1]:80\" in a key, so that it has one key"
        );
        assert_eq!(
            bad(format!("{r}health/web/198.18.1.11:99999")),
            "backend \"198.18.1.11:99999\" is neither ADDRESS:PORT nor a backend name"
        );
        // The rules' parser does not take them: they are read apart.
        assert_eq!(
            l.parse(format!("{r}health/web/web-7").as_bytes())
                .unwrap_err(),
            "a health key is read apart from the rules"
        );
    }
}
