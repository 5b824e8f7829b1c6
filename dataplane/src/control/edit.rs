//! Applies API edits to a copy of the running config.
//!
//! Edits apply in order, each to the result of the ones before it, so a
//! batch can add a service and then its backends. An edit that cannot
//! apply (unknown service, backend already there, unparsable address) is
//! recorded and skipped, the rest still run so that every such problem is
//! reported at once; the result is used only if there were none. Whether
//! the result is a valid config is checked afterwards, in full, by
//! [`crate::rules::check`].
//!
//! Lookups are by hash (service name; backend address and port), and
//! removals leave a hole that is closed once at the end, so a batch of
//! 100 000 edits costs time in proportion to its size.

use hashbrown::HashMap;
use std::net::IpAddr;

use super::api::{ApiError, BackendEdit, BackendKey, BackendSpec, Edit, ErrorCode, ServiceSpec};
use crate::rules::{Backend, Config, Protocol, Scheduler, Service};

/// `config` with `edits` applied, or every reason some could not apply.
pub(crate) fn apply_edits(config: &Config, edits: &[Edit]) -> Result<Config, ApiError> {
    let mut editor = Editor::new(config);
    let mut failures: Vec<(ErrorCode, String)> = Vec::new();
    for (i, edit) in edits.iter().enumerate() {
        if let Err((code, message)) = editor.apply(edit) {
            let message = if edits.len() > 1 {
                format!("edit {} ({}): {message}", i + 1, edit.op())
            } else {
                message
            };
            failures.push((code, message));
        }
    }
    match failures.first() {
        None => Ok(editor.finish()),
        Some(&(code, _)) => Err(ApiError::with_problems(
            code,
            failures.into_iter().map(|(_, m)| m).collect(),
        )),
    }
}

/// Why one edit could not apply.
type Failure = (ErrorCode, String);

/// A service being edited: its backends with holes where some were removed,
/// and an index over them built on first use.
struct WorkService {
    service: Service,
    backends: Vec<Option<Backend>>,
    index: Option<HashMap<(IpAddr, u16), usize>>,
}

impl WorkService {
    fn new(mut service: Service) -> WorkService {
        let backends = std::mem::take(&mut service.backends)
            .into_iter()
            .map(Some)
            .collect();
        WorkService {
            service,
            backends,
            index: None,
        }
    }

    fn index(&mut self) -> &mut HashMap<(IpAddr, u16), usize> {
        let backends = &self.backends;
        self.index.get_or_insert_with(|| {
            backends
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.as_ref().map(|b| ((b.address, b.port), i)))
                .collect()
        })
    }

    /// The backend at (address, port).
    fn backend_mut(&mut self, address: IpAddr, port: u16) -> Option<&mut Backend> {
        let i = *self.index().get(&(address, port))?;
        self.backends.get_mut(i)?.as_mut()
    }
}

/// The config being edited.
struct Editor {
    /// Everything but the services, unchanged.
    rest: Config,
    services: Vec<Option<WorkService>>,
    by_name: HashMap<String, usize>,
}

impl Editor {
    fn new(config: &Config) -> Editor {
        let mut rest = config.clone();
        let by_name = rest
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let services: Vec<Option<WorkService>> = std::mem::take(&mut rest.services)
            .into_iter()
            .map(|s| Some(WorkService::new(s)))
            .collect();
        Editor {
            rest,
            services,
            by_name,
        }
    }

    fn apply(&mut self, edit: &Edit) -> Result<(), Failure> {
        match edit {
            Edit::ServiceAdd(spec) => self.add_service(spec),
            Edit::ServiceEdit(e) => {
                if e.scheduler.is_none() && e.maglev_table_size.is_none() {
                    return Err(invalid(format!(
                        "nothing to change in service {:?}: give a scheduler or a maglev_table_size",
                        e.service
                    )));
                }
                let scheduler = e
                    .scheduler
                    .as_deref()
                    .map(|s| scheduler(s, &e.service))
                    .transpose()?;
                let work = self.service_mut(&e.service)?;
                if let Some(s) = scheduler {
                    work.service.scheduler = s;
                }
                if let Some(size) = e.maglev_table_size {
                    work.service.maglev_table_size = size;
                }
                Ok(())
            }
            Edit::ServiceDel(name) => {
                let i = self.service_index(&name.service)?;
                self.by_name.remove(&name.service);
                if let Some(slot) = self.services.get_mut(i) {
                    *slot = None;
                }
                Ok(())
            }
            Edit::BackendAdd(add) => self.add_backend(&add.service, &add.backend),
            Edit::BackendEdit(e) => self.edit_backend(e),
            Edit::BackendDel(key) => {
                let address = backend_address(&key.address, &key.service)?;
                let work = self.service_mut(&key.service)?;
                let Some(i) = work.index().remove(&(address, key.port)) else {
                    return Err(no_backend(&key.service, address, key.port));
                };
                if let Some(slot) = work.backends.get_mut(i) {
                    *slot = None;
                }
                Ok(())
            }
            Edit::BackendDrain(key) => {
                let backend = self.backend_mut(key)?;
                backend.weight = 0;
                Ok(())
            }
        }
    }

    fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), Failure> {
        if self.by_name.contains_key(&spec.name) {
            return Err((
                ErrorCode::Exists,
                format!("service {:?} already exists", spec.name),
            ));
        }
        let quoted = format!("{:?}", spec.name);
        let protocol = Protocol::from_name(&spec.protocol).ok_or_else(|| {
            invalid(format!(
                "unknown protocol {:?} in service {quoted} (expected \"tcp\" or \"udp\")",
                spec.protocol
            ))
        })?;
        let vip = spec.vip.parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "VIP {:?} of service {quoted} is not an IP address",
                spec.vip
            ))
        })?;
        let scheduler = spec
            .scheduler
            .as_deref()
            .map(|s| scheduler(s, &spec.name))
            .transpose()?
            .unwrap_or_default();
        let service = Service {
            name: spec.name.clone(),
            protocol,
            vip,
            port: spec.port,
            scheduler,
            maglev_table_size: spec
                .maglev_table_size
                .unwrap_or(self.rest.gateway.maglev_table_size),
            backends: Vec::new(),
        };
        // Backends are parsed before the service is added, so that a bad
        // one leaves no half-made service behind.
        let backends = spec
            .backends
            .iter()
            .map(|b| backend(b, &spec.name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut work = WorkService::new(service);
        work.backends = backends.into_iter().map(Some).collect();
        self.by_name.insert(spec.name.clone(), self.services.len());
        self.services.push(Some(work));
        Ok(())
    }

    fn add_backend(&mut self, service: &str, spec: &BackendSpec) -> Result<(), Failure> {
        let backend = backend(spec, service)?;
        let work = self.service_mut(service)?;
        let key = (backend.address, backend.port);
        let next = work.backends.len();
        if work.index().contains_key(&key) {
            return Err((
                ErrorCode::Exists,
                format!(
                    "service {service:?} already has backend {}",
                    backend.socket_addr()
                ),
            ));
        }
        work.index().insert(key, next);
        work.backends.push(Some(backend));
        Ok(())
    }

    fn edit_backend(&mut self, e: &BackendEdit) -> Result<(), Failure> {
        if e.weight.is_none() && e.zone.is_none() && e.set.is_none() && e.group.is_none() {
            return Err(invalid(format!(
                "nothing to change in backend {} of service {:?}: give a weight or a label",
                endpoint(&e.address, e.port),
                e.service
            )));
        }
        let key = BackendKey {
            service: e.service.clone(),
            address: e.address.clone(),
            port: e.port,
        };
        let backend = self.backend_mut(&key)?;
        if let Some(weight) = e.weight {
            backend.weight = weight;
        }
        for (value, label) in [
            (&e.zone, &mut backend.zone),
            (&e.set, &mut backend.set),
            (&e.group, &mut backend.group),
        ] {
            if let Some(value) = value {
                *label = (!value.is_empty()).then(|| value.clone());
            }
        }
        Ok(())
    }

    fn service_index(&self, name: &str) -> Result<usize, Failure> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| (ErrorCode::NotFound, format!("unknown service {name:?}")))
    }

    fn service_mut(&mut self, name: &str) -> Result<&mut WorkService, Failure> {
        let i = self.service_index(name)?;
        self.services
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| (ErrorCode::NotFound, format!("unknown service {name:?}")))
    }

    fn backend_mut(&mut self, key: &BackendKey) -> Result<&mut Backend, Failure> {
        let address = backend_address(&key.address, &key.service)?;
        let work = self.service_mut(&key.service)?;
        work.backend_mut(address, key.port)
            .ok_or_else(|| no_backend(&key.service, address, key.port))
    }

    /// The edited config: services and backends in their order, holes
    /// closed.
    fn finish(self) -> Config {
        let mut config = self.rest;
        config.services = self
            .services
            .into_iter()
            .flatten()
            .map(|work| {
                let mut service = work.service;
                service.backends = work.backends.into_iter().flatten().collect();
                service
            })
            .collect();
        config
    }
}

/// A backend from its spec (range checks are left to the full check).
fn backend(spec: &BackendSpec, service: &str) -> Result<Backend, Failure> {
    let mut backend = Backend::new(backend_address(&spec.address, service)?, spec.port);
    backend.weight = spec.weight.unwrap_or(1);
    backend.zone = spec.zone.clone();
    backend.set = spec.set.clone();
    backend.group = spec.group.clone();
    Ok(backend)
}

fn backend_address(text: &str, service: &str) -> Result<IpAddr, Failure> {
    text.parse().map_err(|_| {
        invalid(format!(
            "backend {text:?} of service {service:?} is not an IP address"
        ))
    })
}

fn scheduler(name: &str, service: &str) -> Result<Scheduler, Failure> {
    Scheduler::from_name(name).ok_or_else(|| {
        invalid(format!(
            "unknown scheduler {name:?} in service {service:?} (expected \"maglev\", \"wrr\" or \"sh\")"
        ))
    })
}

fn no_backend(service: &str, address: IpAddr, port: u16) -> Failure {
    (
        ErrorCode::NotFound,
        format!(
            "service {service:?} has no backend {}",
            std::net::SocketAddr::new(address, port)
        ),
    )
}

fn invalid(message: String) -> Failure {
    (ErrorCode::Invalid, message)
}

/// `address:port` as given, bracketing an IPv6 address.
fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::{BackendAdd, ServiceEdit, ServiceName};
    use crate::rules::load_str;

    const RULES: &str = r#"
[gateway]
maglev_table_size = 251
[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.12"
port = 8080
"#;

    fn rules() -> Config {
        load_str(RULES, "t.toml").unwrap()
    }

    fn key(service: &str, address: &str, port: u16) -> BackendKey {
        BackendKey {
            service: service.into(),
            address: address.into(),
            port,
        }
    }

    fn add(service: &str, address: &str, port: u16, weight: u32) -> Edit {
        Edit::BackendAdd(BackendAdd {
            service: service.into(),
            backend: BackendSpec {
                weight: Some(weight),
                ..BackendSpec::new(address, port)
            },
        })
    }

    fn spec(name: &str, vip: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            protocol: "udp".into(),
            vip: vip.into(),
            port: 53,
            scheduler: None,
            maglev_table_size: None,
            backends: vec![BackendSpec::new("198.18.1.11", 5353)],
        }
    }

    fn endpoints(c: &Config, service: &str) -> Vec<(String, u32)> {
        c.service(service)
            .unwrap()
            .backends
            .iter()
            .map(|b| (b.socket_addr().to_string(), b.weight))
            .collect()
    }

    #[test]
    fn edits_apply_in_order() {
        let edits = [
            Edit::ServiceAdd(spec("dns", "198.18.100.10")),
            add("dns", "198.18.1.12", 5353, 3),
            Edit::BackendDel(key("web", "198.18.1.11", 8080)),
            add("web", "198.18.1.11", 8081, 2),
            Edit::BackendDrain(key("web", "198.18.1.12", 8080)),
            Edit::ServiceEdit(ServiceEdit {
                service: "web".into(),
                scheduler: Some("wrr".into()),
                maglev_table_size: Some(257),
            }),
        ];
        let c = apply_edits(&rules(), &edits).unwrap();
        assert_eq!(
            endpoints(&c, "web"),
            [
                ("198.18.1.12:8080".into(), 0),
                ("198.18.1.11:8081".into(), 2)
            ]
        );
        assert_eq!(
            endpoints(&c, "dns"),
            [
                ("198.18.1.11:5353".into(), 1),
                ("198.18.1.12:5353".into(), 3)
            ]
        );
        let web = c.service("web").unwrap();
        assert_eq!(
            (web.scheduler, web.maglev_table_size),
            (Scheduler::Wrr, 257)
        );
        // A new service takes the gateway's table size.
        assert_eq!(c.service("dns").unwrap().maglev_table_size, 251);
        assert_eq!(c.services.len(), 2);
    }

    #[test]
    fn delete_then_add_again_in_one_batch() {
        let edits = [
            Edit::ServiceDel(ServiceName {
                service: "web".into(),
            }),
            Edit::ServiceAdd(ServiceSpec {
                protocol: "tcp".into(),
                port: 80,
                ..spec("web", "198.18.100.11")
            }),
            Edit::BackendDel(key("web", "198.18.1.11", 5353)),
            add("web", "198.18.1.11", 5353, 1),
        ];
        let c = apply_edits(&rules(), &edits).unwrap();
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].vip.to_string(), "198.18.100.11");
        assert_eq!(endpoints(&c, "web"), [("198.18.1.11:5353".into(), 1)]);
    }

    #[test]
    fn backend_edit_sets_and_clears_labels() {
        let mut edit = BackendEdit {
            service: "web".into(),
            address: "198.18.1.11".into(),
            port: 8080,
            weight: None,
            zone: Some("a".into()),
            set: None,
            group: Some("g".into()),
        };
        let c = apply_edits(&rules(), &[Edit::BackendEdit(edit.clone())]).unwrap();
        let b = &c.services[0].backends[0];
        assert_eq!(
            (b.zone.as_deref(), b.group.as_deref(), b.weight),
            (Some("a"), Some("g"), 1)
        );
        edit.zone = Some(String::new());
        edit.group = None;
        edit.weight = Some(9);
        let c = apply_edits(&c, &[Edit::BackendEdit(edit)]).unwrap();
        let b = &c.services[0].backends[0];
        assert_eq!(
            (b.zone.as_deref(), b.group.as_deref(), b.weight),
            (None, Some("g"), 9)
        );
    }

    #[test]
    fn every_failed_edit_is_reported_and_nothing_applies() {
        let original = rules();
        let edits = [
            add("nope", "198.18.1.1", 80, 1),
            add("web", "198.18.1.11", 8080, 1),
            add("web", "198.18.1.300", 8080, 1),
            Edit::BackendDel(key("web", "198.18.1.99", 8080)),
            Edit::ServiceAdd(spec("web", "198.18.100.10")),
            Edit::ServiceAdd(ServiceSpec {
                protocol: "sctp".into(),
                ..spec("x", "198.18.100.12")
            }),
            Edit::ServiceEdit(ServiceEdit {
                service: "web".into(),
                scheduler: Some("rr".into()),
                maglev_table_size: None,
            }),
            add("web", "198.18.1.13", 8080, 1),
        ];
        let e = apply_edits(&original, &edits).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "the first failure's code");
        assert_eq!(
            e.problems,
            [
                "edit 1 (backend_add): unknown service \"nope\"",
                "edit 2 (backend_add): service \"web\" already has backend 198.18.1.11:8080",
                "edit 3 (backend_add): backend \"198.18.1.300\" of service \"web\" is not an IP address",
                "edit 4 (backend_del): service \"web\" has no backend 198.18.1.99:8080",
                "edit 5 (service_add): service \"web\" already exists",
                "edit 6 (service_add): unknown protocol \"sctp\" in service \"x\" (expected \"tcp\" or \"udp\")",
                "edit 7 (service_edit): unknown scheduler \"rr\" in service \"web\" (expected \"maglev\", \"wrr\" or \"sh\")",
            ]
        );
        assert_eq!(original, rules(), "the input is never modified");
    }

    #[test]
    fn a_single_edit_reports_without_a_prefix() {
        let e =
            apply_edits(&rules(), &[Edit::BackendDrain(key("web", "2001:2::1", 80))]).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(e.message, "service \"web\" has no backend [2001:2::1]:80");
        let e = apply_edits(
            &rules(),
            &[Edit::BackendEdit(BackendEdit {
                service: "web".into(),
                address: "2001:2::1".into(),
                port: 80,
                weight: None,
                zone: None,
                set: None,
                group: None,
            })],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(e
            .message
            .starts_with("nothing to change in backend [2001:2::1]:80"));
    }

    #[test]
    fn a_large_batch_applies() {
        let edits: Vec<Edit> = (0..50_000u32)
            .map(|i| add("web", &format!("198.19.{}.{}", i >> 8, i & 0xff), 80, 1))
            .chain((0..50_000u32).map(|i| {
                Edit::BackendDrain(key("web", &format!("198.19.{}.{}", i >> 8, i & 0xff), 80))
            }))
            .collect();
        let c = apply_edits(&rules(), &edits).unwrap();
        assert_eq!(c.services[0].backends.len(), 50_002);
        assert!(c.services[0].backends[2..].iter().all(|b| b.weight == 0));
        assert!(c.services[0].backends[..2].iter().all(|b| b.weight == 1));
    }
}
