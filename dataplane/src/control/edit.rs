//! Applies API edits to a copy of the running config, and validates the
//! result.
//!
//! Edits apply in order, each to the result of the ones before it, so a
//! batch can add a service and then its backends. An edit that cannot
//! apply (unknown service, backend already there, unparsable address) is
//! recorded and skipped, the rest still run so that every such problem is
//! reported at once; the result is used only if there were none.
//!
//! The result is then checked in full by the one validator,
//! [`rules::validate`], exactly as a config file is. Its problems are
//! located through an [`EditProvenance`]: each service, backend and field
//! an edit made or changed points at that edit of the request (the rest
//! was already running). A single edit's problems read as bare messages,
//! since the request is the one the client just sent; a batch's say which
//! edit and field: `edit 3 (backend_add web 198.18.1.13:8080), field
//! weight: weight 10001 of backend ...`.
//!
//! Lookups are by hash (service name; backend address and port), and
//! removals leave a hole that is closed once at the end, so a batch of
//! 100 000 edits costs time in proportion to its size.

use hashbrown::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::diff::PathCounts;
use crate::health::CheckKindName;
use crate::rules::{
    self, parse, Backend, ClientClass, ClientPrefix, Config, ConfigError, DistributionPath, Item,
    Location, Place, Provenance, RequestLocation, Service,
};
use crate::table::PathUpdate;
use flowgate_api::{
    ApiError, BackendEdit, BackendKey, BackendSpec, ClassSpec, Edit, ErrorCode, ServiceSpec,
};

/// `config` with `edits` applied and validated, or every reason some could
/// not apply or the result is not valid. `config` is never modified. (Also
/// what `flowgatectl --etcd` edits a fleet's rules with, so that a change
/// to etcd gets a gateway's very words.)
pub fn apply_edits(config: &Config, edits: &[Edit]) -> Result<Config, ApiError> {
    let (next, provenance) = edit_config(config, edits)?;
    rules::validate(&next, &provenance).map_err(|error| invalid(&error, edits.len()))?;
    Ok(next)
}

/// A request of path verbs alone, made on the running rules directly.
pub(crate) struct PathChange {
    /// The rules it makes: the running ones, sharing every path they do
    /// not change (see [`rules::Paths`]).
    pub config: std::sync::Arc<Config>,
    /// What it changes, as [`super::diff`] would say.
    pub diff: flowgate_api::ConfigDiff,
    /// The paths it changes, each as it leaves it, for the path table.
    pub updates: Vec<PathUpdate>,
}

/// `config` with `edits` applied, when they are all path verbs
/// (`path_add`, `path_del`) and each path they touch passes the checks
/// [`rules::validate`] makes of it: at a cost that follows the paths
/// touched, not the paths held (a service may have a million). Nothing
/// else of the rules changes, and they were valid, so the result is too.
/// `None` otherwise, for the caller to take [`apply_edits`], which
/// refuses such a request with every problem in the words any edit gets.
pub(crate) fn apply_path_edits(config: &Config, edits: &[Edit]) -> Option<PathChange> {
    let path_verbs = edits
        .iter()
        .all(|e| matches!(e, Edit::PathAdd(_) | Edit::PathDel(_)));
    if edits.is_empty() || !path_verbs {
        return None;
    }
    let mut next = config.clone();
    let mut positions: HashMap<&str, usize> = HashMap::new();
    let mut position = |name: &str| -> Option<usize> {
        if let Some(&i) = positions.get(name) {
            return Some(i);
        }
        let i = config.services.iter().position(|s| s.name == name)?;
        positions.insert(config.services[i].name.as_str(), i);
        Some(i)
    };
    // Each (service, prefix) touched, once, in request order.
    let mut touched: Vec<(usize, ClientPrefix)> = Vec::with_capacity(edits.len());
    let mut seen: hashbrown::HashSet<(usize, ClientPrefix)> = hashbrown::HashSet::new();
    for edit in edits {
        let (i, client) = match edit {
            Edit::PathAdd(spec) => {
                let client = parse::client_prefix(&spec.client, "path client").ok()?;
                let i = position(&spec.service)?;
                let path = DistributionPath {
                    client,
                    backends: spec.backends.clone(),
                };
                let service = &mut next.services[i];
                if !rules::path_is_valid(service, &path) {
                    return None;
                }
                service.routing.paths.put(path);
                (i, client)
            }
            Edit::PathDel(key) => {
                let client = parse::client_prefix(&key.client, "path client").ok()?;
                let i = position(&key.service)?;
                next.services[i].routing.paths.remove(&client)?;
                (i, client)
            }
            _ => return None,
        };
        if seen.insert((i, client)) {
            touched.push((i, client));
        }
    }
    Some(path_change(config, std::sync::Arc::new(next), touched))
}

/// The change from `config` to `next`, which differ only in the paths
/// `touched` names (service position, client; each once): its diff and
/// the path table's updates, at a cost that follows the paths touched.
pub(crate) fn path_change(
    config: &Config,
    next: std::sync::Arc<Config>,
    touched: impl IntoIterator<Item = (usize, ClientPrefix)>,
) -> PathChange {
    // What each touched path became, and the diff's counts per service.
    let mut counts: std::collections::BTreeMap<usize, PathCounts> = Default::default();
    let mut updates = Vec::new();
    for (i, client) in touched {
        let before = config.services[i].routing.paths.get(&client);
        let after = next.services[i].routing.paths.get(&client);
        let count = counts.entry(i).or_default();
        match (before, after) {
            (None, None) => continue,
            (Some(b), Some(a)) if b.backends == a.backends => continue,
            (None, Some(_)) => count.added += 1,
            (Some(_), None) => count.removed += 1,
            (Some(_), Some(_)) => count.changed += 1,
        }
        updates.push(PathUpdate {
            service: i,
            client,
            backends: after.map(|p| p.backends.clone()),
        });
    }
    let mut diff = flowgate_api::ConfigDiff::default();
    for (i, mut count) in counts {
        count.before = config.services[i].routing.paths.len();
        count.after = next.services[i].routing.paths.len();
        diff.services_changed
            .extend(count.change(&next.services[i].name));
    }
    PathChange {
        config: next,
        diff,
        updates,
    }
}

/// `config` with `edits` applied, not yet validated, and where each part
/// the edits made or changed came from.
fn edit_config<'e>(
    config_before: &Config,
    edits: &'e [Edit],
) -> Result<(Config, EditProvenance<'e>), ApiError> {
    let mut editor = Editor::new(config_before);
    let mut failures: Vec<(ErrorCode, String)> = Vec::new();
    for (i, edit) in edits.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        if let Err((code, message)) = editor.apply(index, edit) {
            let message = if edits.len() > 1 {
                format!("edit {} ({}): {message}", i + 1, edit.op())
            } else {
                message
            };
            failures.push((code, message));
        }
    }
    let (config, provenance) = editor.finish(edits);
    for (i, message) in provenance.unknown_class_zones(config_before, &config) {
        let message = if edits.len() > 1 {
            let op = edits.get(i).map_or("", Edit::op);
            format!("edit {} ({op}): {message}", i + 1)
        } else {
            message
        };
        failures.push((ErrorCode::Invalid, message));
    }
    match failures.first() {
        None => Ok((config, provenance)),
        Some(&(code, _)) => Err(ApiError::with_problems(
            code,
            failures.into_iter().map(|(_, m)| m).collect(),
        )),
    }
}

/// The validator's problems as an API error. A single edit's problems are
/// bare messages; a batch's name their edit and field.
fn invalid(error: &ConfigError, edits: usize) -> ApiError {
    let problems = error
        .problems()
        .iter()
        .map(|p| if edits > 1 { p.to_string() } else { p.detail() })
        .collect();
    ApiError::with_problems(ErrorCode::Invalid, problems)
}

/// Which edits made or changed one service or backend (edit indices from
/// 0).
#[derive(Clone, Debug, Default)]
struct Touch {
    /// The edit that made the item: every field of it came from there.
    created: Option<u32>,
    /// For a service: the last edit that changed it or its list of
    /// backends. A problem of the whole service (every backend drained, too
    /// many backends for its table) is located there.
    last: Option<u32>,
    /// Fields an edit set, each with the last edit that set it.
    fields: Vec<(&'static str, u32)>,
}

impl Touch {
    fn created(edit: u32) -> Touch {
        Touch {
            created: Some(edit),
            last: Some(edit),
            fields: Vec::new(),
        }
    }

    fn set(&mut self, key: &'static str, edit: u32) {
        self.fields.retain(|(k, _)| *k != key);
        self.fields.push((key, edit));
    }

    /// The edit a place of this item came from: the one that set the
    /// field, else the one that made the item, else the last one that
    /// changed it (a field's value can be at fault with what the item holds
    /// now: a table size with the backends added since); for the item as a
    /// whole, the last one that changed it.
    fn edit_of(&self, key: Option<&'static str>) -> Option<(u32, Option<&'static str>)> {
        match key {
            Some(key) => {
                let set = self.fields.iter().find(|(k, _)| *k == key).map(|&(_, e)| e);
                match set.or(self.created) {
                    Some(edit) => Some((edit, Some(key))),
                    None => self.last.map(|edit| (edit, None)),
                }
            }
            None => self.last.or(self.created).map(|edit| (edit, None)),
        }
    }
}

/// Where the parts of an edited config came from: the edits of one
/// request, for what they made or changed; [`Location::Unrecorded`] for
/// the running rules they left as they were.
pub(crate) struct EditProvenance<'e> {
    edits: &'e [Edit],
    /// By service index in the edited config.
    services: Vec<Touch>,
    /// Only the backends an edit made or changed, by (service, backend)
    /// index in the edited config.
    backends: HashMap<(usize, usize), Touch>,
    /// Only the client classes an edit made, by index in the edited
    /// config's classes: the edit that made each.
    classes: HashMap<usize, u32>,
}

impl EditProvenance<'_> {
    /// The zones of classes the edits made in `config` (from `before`)
    /// that nothing else knows (no backend, no zone priority list, no
    /// class that was running or that the edits left as it was): most
    /// likely a typo, refused with the edit that made the class. A zone is
    /// first named by a backend's label or a priority list.
    fn unknown_class_zones(&self, before: &Config, config: &Config) -> Vec<(usize, String)> {
        if self.classes.is_empty() {
            return Vec::new();
        }
        let mut known: hashbrown::HashSet<&str> = config
            .services
            .iter()
            .flat_map(|s| {
                let priority = s.routing.zone_priority.iter().flatten();
                s.backends
                    .iter()
                    .filter_map(|b| b.zone.as_deref())
                    .chain(priority.map(String::as_str))
            })
            .collect();
        known.extend(config.routing.zone_priority.iter().map(String::as_str));
        known.extend(
            before
                .routing
                .classes
                .iter()
                .filter_map(|c| c.zone.as_deref()),
        );
        let classes = config.routing.classes.iter().enumerate();
        known.extend(
            classes
                .filter(|(i, _)| !self.classes.contains_key(i))
                .filter_map(|(_, c)| c.zone.as_deref()),
        );
        let mut unknown: Vec<(usize, String)> = self
            .classes
            .iter()
            .filter_map(|(&i, &edit)| {
                let class = config.routing.classes.get(i)?;
                let zone = class.zone.as_deref()?;
                (!known.contains(zone)).then(|| {
                    let message = format!(
                        "zone {zone:?} of client class {} is unknown: no backend, client class \
                         or zone_priority has it",
                        class.prefix
                    );
                    (usize::try_from(edit).unwrap_or(usize::MAX), message)
                })
            })
            .collect();
        unknown.sort();
        unknown
    }
}

impl Provenance for EditProvenance<'_> {
    fn locate(&self, place: Place) -> Location {
        let touch = match place.item {
            Item::Service(i) => self.services.get(i),
            Item::Backend { service, backend } => self.backends.get(&(service, backend)),
            Item::ClientClass(i) => {
                let class = self.classes.get(&i).map(|&edit| Touch::created(edit));
                let found = class.and_then(|t| t.edit_of(place.key));
                return self.request_location(found);
            }
            _ => None,
        };
        self.request_location(touch.and_then(|t| t.edit_of(place.key)))
    }
}

impl EditProvenance<'_> {
    /// Where an edit, and the field it set, is in the request.
    fn request_location(&self, found: Option<(u32, Option<&'static str>)>) -> Location {
        let Some((edit, field)) = found else {
            return Location::Unrecorded;
        };
        let index = usize::try_from(edit).unwrap_or(usize::MAX);
        let Some(request) = self.edits.get(index) else {
            return Location::Unrecorded;
        };
        Location::Request(RequestLocation {
            edit: index + 1,
            edits: self.edits.len(),
            op: request.op(),
            target: target(request),
            field,
        })
    }
}

/// What an edit names: its service, and for a backend edit the backend's
/// `address:port` as given.
fn target(edit: &Edit) -> String {
    match edit {
        Edit::ServiceAdd(spec) => spec.name.clone(),
        Edit::ServiceEdit(e) => e.service.clone(),
        Edit::ServiceDel(name) => name.service.clone(),
        Edit::BackendAdd(add) => format!(
            "{} {}",
            add.service,
            endpoint(&add.backend.address, add.backend.port)
        ),
        Edit::BackendEdit(e) => format!("{} {}", e.service, endpoint(&e.address, e.port)),
        Edit::BackendDel(key) | Edit::BackendDrain(key) => {
            format!("{} {}", key.service, endpoint(&key.address, key.port))
        }
        Edit::PathAdd(path) => format!("{} path {}", path.service, path.client),
        Edit::PathDel(key) => format!("{} path {}", key.service, key.client),
        Edit::CanarySet(canary) => format!("{} canary", canary.service),
        Edit::ClassAdd(class) => class.prefix.clone(),
        Edit::ClassDel(key) => key.prefix.clone(),
    }
}

/// Why one edit could not apply.
type Failure = (ErrorCode, String);

/// A service being edited: its backends with holes where some were removed,
/// an index over them built on first use, and what the edits touched.
struct WorkService {
    service: Service,
    backends: Vec<Option<Backend>>,
    index: Option<HashMap<(IpAddr, u16), usize>>,
    touch: Touch,
    /// By backend slot (index in `backends`).
    backend_touches: HashMap<usize, Touch>,
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
            touch: Touch::default(),
            backend_touches: HashMap::new(),
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

    /// The slot of the backend at (address, port).
    fn slot(&mut self, address: IpAddr, port: u16) -> Option<usize> {
        self.index().get(&(address, port)).copied()
    }
}

/// The config being edited.
struct Editor {
    /// Everything but the services, unchanged.
    rest: Config,
    services: Vec<Option<WorkService>>,
    by_name: HashMap<String, usize>,
    /// The client classes, with holes where some were removed, each with
    /// the edit that made it (none: it was running).
    classes: Vec<Option<(ClientClass, Option<u32>)>>,
    /// Class slots by prefix.
    class_slots: HashMap<ClientPrefix, usize>,
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
        let classes: Vec<_> = std::mem::take(&mut rest.routing.classes)
            .into_iter()
            .map(|c| Some((c, None)))
            .collect();
        // Running prefixes are unique (validated); the first wins if not.
        let mut class_slots = HashMap::with_capacity(classes.len());
        for (i, class) in classes.iter().enumerate() {
            if let Some((class, _)) = class {
                class_slots.entry(class.prefix).or_insert(i);
            }
        }
        Editor {
            rest,
            services,
            by_name,
            classes,
            class_slots,
        }
    }

    /// Applies `edit`, the `index`-th of its request.
    fn apply(&mut self, index: u32, edit: &Edit) -> Result<(), Failure> {
        match edit {
            Edit::ServiceAdd(spec) => self.add_service(index, spec),
            Edit::ServiceEdit(e) => {
                if e.scheduler.is_none() && e.maglev_table_size.is_none() {
                    return Err(invalid_edit(format!(
                        "nothing to change in service {:?}: give a scheduler or a maglev_table_size",
                        e.service
                    )));
                }
                let scheduler = e
                    .scheduler
                    .as_deref()
                    .map(|s| parse::scheduler(s, &e.service).map_err(invalid_edit))
                    .transpose()?;
                let work = self.service_mut(&e.service)?;
                if let Some(s) = scheduler {
                    work.service.scheduler = s;
                    work.touch.set("scheduler", index);
                }
                if let Some(size) = e.maglev_table_size {
                    work.service.maglev_table_size = size;
                    work.touch.set("maglev_table_size", index);
                }
                work.touch.last = Some(index);
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
            Edit::BackendAdd(add) => self.add_backend(index, &add.service, &add.backend),
            Edit::BackendEdit(e) => self.edit_backend(index, e),
            Edit::BackendDel(key) => {
                let address = backend_address(&key.address, &key.service)?;
                let work = self.service_mut(&key.service)?;
                let Some(i) = work.index().remove(&(address, key.port)) else {
                    return Err(no_backend(&key.service, address, key.port));
                };
                if let Some(slot) = work.backends.get_mut(i) {
                    *slot = None;
                }
                work.backend_touches.remove(&i);
                work.touch.last = Some(index);
                Ok(())
            }
            Edit::BackendDrain(key) => {
                let (backend, touch, service) = self.backend_mut(key)?;
                backend.weight = 0;
                touch.set("weight", index);
                service.last = Some(index);
                Ok(())
            }
            Edit::PathAdd(_) | Edit::PathDel(_) | Edit::CanarySet(_) => {
                self.edit_routing(index, edit)
            }
            Edit::ClassAdd(spec) => self.add_class(index, spec),
            Edit::ClassDel(key) => {
                let prefix =
                    parse::client_prefix(&key.prefix, "client class").map_err(invalid_edit)?;
                let Some(slot) = self.class_slots.remove(&prefix) else {
                    return Err((
                        ErrorCode::NotFound,
                        format!("no client class has prefix {prefix}"),
                    ));
                };
                if let Some(class) = self.classes.get_mut(slot) {
                    *class = None;
                }
                Ok(())
            }
        }
    }

    /// A client class added, or replaced if its spec says so. Its SET and
    /// prefix are the validator's to judge, its zone [`EditProvenance`]'s.
    fn add_class(&mut self, index: u32, spec: &ClassSpec) -> Result<(), Failure> {
        let prefix = parse::client_prefix(&spec.prefix, "client class").map_err(invalid_edit)?;
        let label = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let class = ClientClass {
            prefix,
            set: label(&spec.set),
            zone: label(&spec.zone),
        };
        match self.class_slots.get(&prefix) {
            Some(&slot) if spec.replace => {
                if let Some(entry) = self.classes.get_mut(slot) {
                    *entry = Some((class, Some(index)));
                }
            }
            Some(&slot) => {
                let running = self.classes.get(slot).and_then(Option::as_ref);
                let shown = running.map_or_else(String::new, |(c, _)| {
                    format!(" ({})", class_labels(c.set.as_deref(), c.zone.as_deref()))
                });
                return Err((
                    ErrorCode::Exists,
                    format!(
                        "client class {prefix} already exists{shown}: remove it first, or \
                         replace it"
                    ),
                ));
            }
            None => {
                self.class_slots.insert(prefix, self.classes.len());
                self.classes.push(Some((class, Some(index))));
            }
        }
        Ok(())
    }

    /// A path added or removed, or a canary's share set.
    fn edit_routing(&mut self, index: u32, edit: &Edit) -> Result<(), Failure> {
        match edit {
            Edit::PathAdd(path) => {
                let client =
                    parse::client_prefix(&path.client, "path client").map_err(invalid_edit)?;
                let work = self.service_mut(&path.service)?;
                work.service.routing.paths.put(DistributionPath {
                    client,
                    backends: path.backends.clone(),
                });
                work.touch.last = Some(index);
                Ok(())
            }
            Edit::PathDel(key) => {
                let client =
                    parse::client_prefix(&key.client, "path client").map_err(invalid_edit)?;
                let work = self.service_mut(&key.service)?;
                if work.service.routing.paths.remove(&client).is_none() {
                    return Err((
                        ErrorCode::NotFound,
                        format!("service {:?} has no path for {client}", key.service),
                    ));
                }
                work.touch.last = Some(index);
                Ok(())
            }
            Edit::CanarySet(share) => {
                let work = self.service_mut(&share.service)?;
                let Some(canary) = work.service.routing.canary.as_mut() else {
                    return Err(invalid_edit(format!(
                        "service {:?} has no canary: give it a [services.canary] group in its \
                         rules first",
                        share.service
                    )));
                };
                canary.share_bp = share.share;
                work.touch.last = Some(index);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn add_service(&mut self, index: u32, spec: &ServiceSpec) -> Result<(), Failure> {
        if self.by_name.contains_key(&spec.name) {
            return Err((
                ErrorCode::Exists,
                format!("service {:?} already exists", spec.name),
            ));
        }
        let protocol = parse::protocol(&spec.protocol, &spec.name).map_err(invalid_edit)?;
        let vip = parse::vip(&spec.vip, &spec.name).map_err(invalid_edit)?;
        let scheduler = spec
            .scheduler
            .as_deref()
            .map(|s| parse::scheduler(s, &spec.name).map_err(invalid_edit))
            .transpose()?
            .unwrap_or_default();
        let service = Service {
            limits: Default::default(),
            name: spec.name.clone(),
            protocol,
            vip,
            port: spec.port,
            scheduler,
            maglev_table_size: spec
                .maglev_table_size
                .unwrap_or(self.rest.gateway.maglev_table_size),
            failover: Default::default(),
            health: Default::default(),
            backends: Vec::new(),
            routing: Default::default(),
            // A VIP address is announced one way: a service added to a VIP
            // that runs takes the announcement of that VIP's services.
            announce: self
                .services
                .iter()
                .flatten()
                .find(|w| w.service.vip == vip)
                .map(|w| w.service.announce)
                .unwrap_or_default(),
        };
        // Backends are parsed before the service is added, so that a bad
        // one leaves no half-made service behind.
        let backends = spec
            .backends
            .iter()
            .map(|b| backend(b, &spec.name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut work = WorkService::new(service);
        work.backend_touches = (0..backends.len())
            .map(|slot| (slot, Touch::created(index)))
            .collect();
        work.backends = backends.into_iter().map(Some).collect();
        work.touch = Touch::created(index);
        self.by_name.insert(spec.name.clone(), self.services.len());
        self.services.push(Some(work));
        Ok(())
    }

    fn add_backend(
        &mut self,
        index: u32,
        service: &str,
        spec: &BackendSpec,
    ) -> Result<(), Failure> {
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
        work.backend_touches.insert(next, Touch::created(index));
        work.touch.last = Some(index);
        Ok(())
    }

    fn edit_backend(&mut self, index: u32, e: &BackendEdit) -> Result<(), Failure> {
        if e.weight.is_none()
            && e.zone.is_none()
            && e.set.is_none()
            && e.group.is_none()
            && e.heartbeat_ttl.is_none()
            && e.health.is_none()
        {
            return Err(invalid_edit(format!(
                "nothing to change in backend {} of service {:?}: give a weight, a label, a \
                 heartbeat_ttl or a check",
                endpoint(&e.address, e.port),
                e.service
            )));
        }
        let key = BackendKey {
            service: e.service.clone(),
            address: e.address.clone(),
            port: e.port,
        };
        let (backend, touch, service) = self.backend_mut(&key)?;
        if let Some(weight) = e.weight {
            backend.weight = weight;
            touch.set("weight", index);
        }
        for (key, value, label) in [
            ("zone", &e.zone, &mut backend.zone),
            ("set", &e.set, &mut backend.set),
            ("group", &e.group, &mut backend.group),
        ] {
            if let Some(value) = value {
                *label = (!value.is_empty()).then(|| value.clone());
                touch.set(key, index);
            }
        }
        let context = backend_context(&e.address, e.port, &e.service);
        if let Some(ttl) = &e.heartbeat_ttl {
            backend.health.heartbeat_ttl = heartbeat_ttl(ttl, &context)?;
            touch.set("heartbeat_ttl", index);
        }
        if let Some(check) = &e.health {
            if let Some(kind) = &check.kind {
                backend.health.kind = check_kind(kind, &context)?;
                touch.set("health.kind", index);
            }
            if let Some(port) = check.port {
                backend.health.port = (port != 0).then_some(port);
                touch.set("health.port", index);
            }
        }
        service.last = Some(index);
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

    /// The backend of `key`, and what the edits did to it and to its
    /// service.
    fn backend_mut(
        &mut self,
        key: &BackendKey,
    ) -> Result<(&mut Backend, &mut Touch, &mut Touch), Failure> {
        let address = backend_address(&key.address, &key.service)?;
        let work = self.service_mut(&key.service)?;
        let slot = work.slot(address, key.port);
        let backend = slot
            .and_then(|slot| work.backends.get_mut(slot))
            .and_then(Option::as_mut);
        match (slot, backend) {
            (Some(slot), Some(backend)) => Ok((
                backend,
                work.backend_touches.entry(slot).or_default(),
                &mut work.touch,
            )),
            _ => Err(no_backend(&key.service, address, key.port)),
        }
    }

    /// The edited config, services and backends in their order with the
    /// holes closed, and where the edited parts came from.
    fn finish(self, edits: &[Edit]) -> (Config, EditProvenance<'_>) {
        let mut config = self.rest;
        let mut classes = HashMap::new();
        for (class, made) in self.classes.into_iter().flatten() {
            if let Some(edit) = made {
                classes.insert(config.routing.classes.len(), edit);
            }
            config.routing.classes.push(class);
        }
        let mut touches = Vec::with_capacity(self.services.len());
        let mut backend_touches = HashMap::new();
        for mut work in self.services.into_iter().flatten() {
            let i = touches.len();
            let mut backends = Vec::with_capacity(work.backends.len());
            for (slot, backend) in work.backends.into_iter().enumerate() {
                let Some(backend) = backend else {
                    continue;
                };
                if !work.backend_touches.is_empty() {
                    if let Some(touch) = work.backend_touches.remove(&slot) {
                        backend_touches.insert((i, backends.len()), touch);
                    }
                }
                backends.push(backend);
            }
            work.service.backends = backends;
            config.services.push(work.service);
            touches.push(work.touch);
        }
        let provenance = EditProvenance {
            edits,
            services: touches,
            backends: backend_touches,
            classes,
        };
        (config, provenance)
    }
}

/// `set S zone Z` of a class, `no SET, no zone` for neither.
fn class_labels(set: Option<&str>, zone: Option<&str>) -> String {
    match (set, zone) {
        (None, None) => "no SET, no zone".to_owned(),
        (Some(set), None) => format!("set {set}"),
        (None, Some(zone)) => format!("zone {zone}"),
        (Some(set), Some(zone)) => format!("set {set} zone {zone}"),
    }
}

/// A backend from its spec (every rule is left to the validator).
fn backend(spec: &BackendSpec, service: &str) -> Result<Backend, Failure> {
    let mut backend = Backend::new(backend_address(&spec.address, service)?, spec.port);
    backend.weight = spec.weight.unwrap_or(1);
    backend.zone = spec.zone.clone();
    backend.set = spec.set.clone();
    backend.group = spec.group.clone();
    let context = backend_context(&spec.address, spec.port, service);
    if let Some(ttl) = &spec.heartbeat_ttl {
        backend.health.heartbeat_ttl = heartbeat_ttl(ttl, &context)?;
    }
    if let Some(check) = &spec.health {
        if let Some(kind) = &check.kind {
            backend.health.kind = check_kind(kind, &context)?;
        }
        backend.health.port = check.port;
    }
    Ok(backend)
}

/// ` of backend ADDRESS:PORT in service "NAME"`, for a message.
fn backend_context(address: &str, port: u16, service: &str) -> String {
    format!(
        " of backend {} in service {service:?}",
        endpoint(address, port)
    )
}

/// A heartbeat TTL as an edit writes it (`"5s"`; `""`: none). Whether it
/// is in range is the validator's.
fn heartbeat_ttl(text: &str, context: &str) -> Result<Option<Duration>, Failure> {
    if text.is_empty() {
        return Ok(None);
    }
    parse::duration(text, "heartbeat_ttl", context)
        .map(Some)
        .map_err(invalid_edit)
}

/// A backend's own check kind as an edit writes it (`""`: its service's).
fn check_kind(text: &str, context: &str) -> Result<Option<CheckKindName>, Failure> {
    if text.is_empty() {
        return Ok(None);
    }
    parse::check_kind(text)
        .map(Some)
        .map_err(|e| invalid_edit(format!("health.kind{context}: {e}")))
}

fn backend_address(text: &str, service: &str) -> Result<IpAddr, Failure> {
    parse::backend_address(text, service).map_err(invalid_edit)
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

fn invalid_edit(message: String) -> Failure {
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
    use crate::rules::{load_str, Scheduler};
    use flowgate_api::{BackendAdd, ServiceEdit, ServiceName};

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
            health: Default::default(),
            heartbeat_ttl: None,
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
    fn backend_edit_sets_and_clears_its_ttl_and_check() {
        let ttl = |c: &Config| c.services[0].backends[0].health.clone();
        let mut edit = BackendEdit {
            service: "web".into(),
            address: "198.18.1.11".into(),
            port: 8080,
            weight: None,
            zone: None,
            set: None,
            group: None,
            health: Some(flowgate_api::BackendCheck {
                kind: Some("none".into()),
                port: Some(9000),
            }),
            heartbeat_ttl: Some("3s".into()),
        };
        let c = apply_edits(&rules(), &[Edit::BackendEdit(edit.clone())]).unwrap();
        let h = ttl(&c);
        assert_eq!(h.heartbeat_ttl, Some(Duration::from_secs(3)));
        assert_eq!((h.kind, h.port), (Some(CheckKindName::None), Some(9000)));
        edit.heartbeat_ttl = Some(String::new());
        edit.health = Some(flowgate_api::BackendCheck {
            kind: Some(String::new()),
            port: Some(0),
        });
        let c = apply_edits(&c, &[Edit::BackendEdit(edit.clone())]).unwrap();
        assert_eq!(ttl(&c), Default::default());

        // Each bad value is refused with its reason, and nothing applies.
        let cases = [
            (
                Some("0s"),
                None,
                "heartbeat_ttl of backend 198.18.1.11:8080 in service \"web\" must be more than 0",
            ),
            (
                Some("5"),
                None,
                "heartbeat_ttl \"5\" of backend 198.18.1.11:8080 in service \"web\" is not a \
                 duration",
            ),
            (
                None,
                Some("ping"),
                "health.kind of backend 198.18.1.11:8080 in service \"web\": check kind \"ping\" \
                 is unknown",
            ),
        ];
        for (ttl_text, kind, want) in cases {
            edit.heartbeat_ttl = ttl_text.map(Into::into);
            edit.health = kind.map(|k| flowgate_api::BackendCheck {
                kind: Some(k.into()),
                port: None,
            });
            let e = apply_edits(&c, &[Edit::BackendEdit(edit.clone())]).unwrap_err();
            assert!(e.message.contains(want), "{}", e.message);
        }
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
                "edit 7 (service_edit): unknown scheduler \"rr\" in service \"web\" (expected \"maglev\", \"wrr\", \"sh\" or \"fanout\")",
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
                health: Default::default(),
                heartbeat_ttl: None,
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
        // Applied only: 50 002 backends do not fit the 251-entry table, which
        // the validator would refuse.
        let (c, _) = edit_config(&rules(), &edits).unwrap();
        assert_eq!(c.services[0].backends.len(), 50_002);
        assert!(c.services[0].backends[2..].iter().all(|b| b.weight == 0));
        assert!(c.services[0].backends[..2].iter().all(|b| b.weight == 1));
    }

    /// One fault, written in a config file and made through the API.
    struct Fault {
        /// Appended to the file's text.
        file: String,
        /// The same fault as edits of one request.
        edits: Vec<Edit>,
        /// What the one problem says, from either source.
        message: &'static str,
        /// Where the file's problem is: the text its line starts with, and
        /// its column.
        line: &'static str,
        column: usize,
        /// Where the API's problem is: the edit (from 1) and the field.
        edit: usize,
        field: Option<&'static str>,
    }

    /// A `[[services.backends]]` block with `extra` key lines.
    fn block(address: &str, port: u16, extra: &str) -> String {
        format!("[[services.backends]]\naddress = \"{address}\"\nport = {port}\n{extra}")
    }

    fn backend_spec(address: &str, port: u16) -> BackendSpec {
        BackendSpec::new(address, port)
    }

    fn add_spec(service: &str, backend: BackendSpec) -> Edit {
        Edit::BackendAdd(BackendAdd {
            service: service.into(),
            backend,
        })
    }

    /// Every fault of the test: of backends, of services, of tables.
    fn faults() -> Vec<Fault> {
        let mut faults = backend_faults();
        faults.extend(service_faults());
        faults.extend(table_faults());
        faults
    }

    /// Faults of the backends of "web".
    fn backend_faults() -> Vec<Fault> {
        let drain = |address: &str| Edit::BackendDrain(key("web", address, 8080));
        vec![
            Fault {
                file: block("198.18.1.13", 8080, "weight = 10001\n"),
                edits: vec![add("web", "198.18.1.13", 8080, 10_001)],
                message: "weight 10001 of backend 198.18.1.13:8080 in service \"web\" is out of range 0..=10000",
                line: "weight = 10001",
                column: 10,
                edit: 1,
                field: Some("weight"),
            },
            Fault {
                file: block("198.18.1.13", 0, ""),
                edits: vec![add_spec("web", backend_spec("198.18.1.13", 0))],
                message: "port 0 of backend 198.18.1.13 in service \"web\" is out of range 1..=65535",
                line: "port = 0",
                column: 8,
                edit: 1,
                field: Some("port"),
            },
            Fault {
                file: block("2001:2::13", 8080, ""),
                edits: vec![add("web", "2001:2::13", 8080, 1)],
                message: "backend 2001:2::13 of service \"web\" is IPv6 but its VIP 198.18.100.10 is IPv4",
                line: "address = \"2001:2::13\"",
                column: 11,
                edit: 1,
                field: Some("address"),
            },
            Fault {
                file: block("127.0.0.1", 8080, ""),
                edits: vec![add("web", "127.0.0.1", 8080, 1)],
                message: "backend 127.0.0.1 of service \"web\" is a loopback address",
                line: "address = \"127.0.0.1\"",
                column: 11,
                edit: 1,
                field: Some("address"),
            },
            Fault {
                file: block("198.18.1.13", 8080, "zone = \"a b\"\n"),
                edits: vec![add_spec(
                    "web",
                    BackendSpec {
                        zone: Some("a b".into()),
                        ..backend_spec("198.18.1.13", 8080)
                    },
                )],
                message: "zone \"a b\" of backend 198.18.1.13:8080 in service \"web\" is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -",
                line: "zone = ",
                column: 8,
                edit: 1,
                field: Some("zone"),
            },
            Fault {
                // The file drains both backends of "web"; two edits do.
                file: String::new(),
                edits: vec![drain("198.18.1.11"), drain("198.18.1.12")],
                message: "service \"web\" has no backend with weight > 0 (all 2 are drained)",
                line: "name = \"web\"",
                column: 8,
                edit: 2,
                field: None,
            },
        ]
    }

    /// A service "dns" with these settings and backends.
    fn dns(protocol: &str, vip: &str, port: u16, backends: Vec<BackendSpec>) -> ServiceSpec {
        ServiceSpec {
            name: "dns".into(),
            protocol: protocol.into(),
            vip: vip.into(),
            port,
            scheduler: None,
            maglev_table_size: None,
            backends,
        }
    }

    /// The same service "dns", without backends, in a config file.
    fn dns_text(protocol: &str, vip: &str, port: u16) -> String {
        format!("[[services]]\nname = \"dns\"\nprotocol = \"{protocol}\"\nvip = \"{vip}\"\nport = {port}\n")
    }

    /// Faults of a new service.
    fn service_faults() -> Vec<Fault> {
        vec![
            Fault {
                file: dns_text("udp", "198.18.100.10", 53).replace("\"dns\"", "\"d s\"")
                    + &block("198.18.1.11", 5353, ""),
                edits: vec![Edit::ServiceAdd(ServiceSpec {
                    name: "d s".into(),
                    ..dns("udp", "198.18.100.10", 53, vec![backend_spec("198.18.1.11", 5353)])
                })],
                message: "service name \"d s\" is not valid: use 1 to 64 of A-Z a-z 0-9 _ . -",
                line: "name = \"d s\"",
                column: 8,
                edit: 1,
                field: Some("name"),
            },
            Fault {
                file: dns_text("tcp", "198.18.100.10", 80) + &block("198.18.1.11", 5353, ""),
                edits: vec![Edit::ServiceAdd(dns(
                    "tcp",
                    "198.18.100.10",
                    80,
                    vec![backend_spec("198.18.1.11", 5353)],
                ))],
                message: "tcp 198.18.100.10:80 of service \"dns\" is already used by service \"web\"",
                line: "vip = \"198.18.100.10\"\nport = 80\n[[services.backends]]\naddress = \"198.18.1.11\"\nport = 5353",
                column: 7,
                edit: 1,
                field: Some("vip"),
            },
            Fault {
                file: dns_text("udp", "127.0.0.1", 53) + &block("198.18.1.11", 5353, ""),
                edits: vec![Edit::ServiceAdd(dns(
                    "udp",
                    "127.0.0.1",
                    53,
                    vec![backend_spec("198.18.1.11", 5353)],
                ))],
                message: "VIP 127.0.0.1 of service \"dns\" is a loopback address",
                line: "vip = \"127.0.0.1\"",
                column: 7,
                edit: 1,
                field: Some("vip"),
            },
            Fault {
                file: dns_text("udp", "198.18.100.10", 53),
                edits: vec![Edit::ServiceAdd(dns("udp", "198.18.100.10", 53, vec![]))],
                message: "service \"dns\" has no backends",
                line: "name = \"dns\"",
                column: 8,
                edit: 1,
                field: None,
            },
            Fault {
                file: dns_text("udp", "198.18.100.10", 53)
                    + &block("198.18.1.11", 5353, "")
                    + &block("198.18.1.11", 5353, ""),
                edits: vec![Edit::ServiceAdd(dns(
                    "udp",
                    "198.18.100.10",
                    53,
                    vec![backend_spec("198.18.1.11", 5353); 2],
                ))],
                message: "backend 198.18.1.11:5353 is listed twice in service \"dns\"",
                line: "address = \"198.18.1.11\"\nport = 5353",
                column: 11,
                edit: 1,
                field: Some("address"),
            },
        ]
    }

    /// Faults of a service's Maglev table.
    fn table_faults() -> Vec<Fault> {
        vec![
            Fault {
                file: dns_text("udp", "198.18.100.10", 53)
                    + "maglev_table_size = 252\n"
                    + &block("198.18.1.11", 5353, ""),
                edits: vec![
                    Edit::ServiceAdd(dns(
                        "udp",
                        "198.18.100.10",
                        53,
                        vec![backend_spec("198.18.1.11", 5353)],
                    )),
                    Edit::ServiceEdit(ServiceEdit {
                        service: "dns".into(),
                        scheduler: None,
                        maglev_table_size: Some(252),
                    }),
                ],
                message: "maglev_table_size 252 of service \"dns\" is not prime (nearest primes: 251, 257)",
                line: "maglev_table_size = 252",
                column: 21,
                edit: 2,
                field: Some("maglev_table_size"),
            },
            Fault {
                // 2 + 249 backends do not fit the gateway's 251 entries.
                file: (0..249u16)
                    .map(|i| block("198.18.2.1", 9000 + i, ""))
                    .collect(),
                edits: (0..249u16)
                    .map(|i| add("web", "198.18.2.1", 9000 + i, 1))
                    .collect(),
                message: "service \"web\" has 251 backends, not fewer than gateway.maglev_table_size 251: \
                          set a larger maglev_table_size (100 times the backends is recommended)",
                line: "name = \"web\"",
                column: 8,
                edit: 249,
                field: None,
            },
        ]
    }

    /// The line of `text` that starts with (or, for several lines, starts
    /// the last occurrence of) `needle`, from 1.
    fn line_of(text: &str, needle: &str) -> usize {
        let at = text.rfind(needle).expect("needle in text");
        text[..at].matches('\n').count() + 1
    }

    #[test]
    fn a_fault_reads_the_same_from_a_file_and_from_an_edit() {
        for fault in faults() {
            let text = format!("{RULES}{}", fault.file);
            let text = if fault.file.is_empty() {
                // Both backends drained.
                text.replace("port = 8080\n", "port = 8080\nweight = 0\n")
            } else {
                text
            };
            let error = load_str(&text, "gw.toml").expect_err(fault.message);
            let [from_file] = error.problems() else {
                panic!("{error}")
            };
            let (next, provenance) = edit_config(&rules(), &fault.edits).unwrap();
            let error = rules::validate(&next, &provenance).expect_err(fault.message);
            let [from_api] = error.problems() else {
                panic!("{error}")
            };

            // The same message, from the one validator...
            assert_eq!(from_file.message, fault.message);
            assert_eq!(from_api.message, fault.message);
            // ...located where each source has it.
            let line = line_of(&text, fault.line);
            assert_eq!(
                from_file.location,
                Location::File {
                    file: "gw.toml".into(),
                    line,
                    column: fault.column
                },
                "{}",
                fault.message
            );
            let request = fault.edits.get(fault.edit - 1).unwrap();
            assert_eq!(
                from_api.location,
                Location::Request(RequestLocation {
                    edit: fault.edit,
                    edits: fault.edits.len(),
                    op: request.op(),
                    target: target(request),
                    field: fault.field,
                }),
                "{}",
                fault.message
            );
            // A duplicate's first occurrence has a line only in the file.
            match &from_file.first {
                Some(first) => {
                    assert!(from_file
                        .to_string()
                        .ends_with(&format!(" (first at line {})", first.line().unwrap())));
                    assert_eq!(from_api.detail(), fault.message);
                }
                None => assert!(from_api.first.is_none()),
            }
        }
    }

    #[test]
    fn a_value_that_cannot_be_read_reads_the_same_too() {
        let text = format!("{RULES}{}", block("198.18.1.300", 8080, ""));
        let from_file = load_str(&text, "gw.toml").unwrap_err();
        let from_api = apply_edits(&rules(), &[add("web", "198.18.1.300", 8080, 1)]).unwrap_err();
        assert_eq!(
            from_file.problems()[0].message,
            "backend \"198.18.1.300\" of service \"web\" is not an IP address"
        );
        assert_eq!(from_api.message, from_file.problems()[0].message);
    }

    #[test]
    fn problems_of_an_edit_are_shown_bare_and_of_a_batch_with_their_edit() {
        let e = apply_edits(&rules(), &[add("web", "198.18.1.13", 8080, 10_001)]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert_eq!(
            e.problems,
            ["weight 10001 of backend 198.18.1.13:8080 in service \"web\" is out of range 0..=10000"]
        );
        let e = apply_edits(
            &rules(),
            &[
                add("web", "198.18.1.13", 8080, 1),
                add("web", "198.18.1.14", 0, 10_001),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                "edit 2 (backend_add web 198.18.1.14:0), field port: port 0 of backend 198.18.1.14 in service \"web\" is out of range 1..=65535",
                "edit 2 (backend_add web 198.18.1.14:0), field weight: weight 10001 of backend 198.18.1.14:0 in service \"web\" is out of range 0..=10000",
            ]
        );
    }

    #[test]
    fn an_edit_locates_only_what_it_touched() {
        let edits = [
            Edit::BackendEdit(BackendEdit {
                service: "web".into(),
                address: "198.18.1.12".into(),
                port: 8080,
                weight: Some(4),
                zone: None,
                set: None,
                group: None,
                health: Default::default(),
                heartbeat_ttl: None,
            }),
            Edit::BackendDel(key("web", "198.18.1.11", 8080)),
        ];
        let (next, provenance) = edit_config(&rules(), &edits).unwrap();
        // 198.18.1.12 is now the first backend: its weight came from edit 1,
        // its address from the running rules.
        assert_eq!(next.services[0].backends[0].weight, 4);
        let Location::Request(weight) = provenance.locate(Place::backend(0, 0, "weight")) else {
            panic!("the weight is not located at its edit")
        };
        assert_eq!(
            (weight.edit, weight.op, weight.field),
            (1, "backend_edit", Some("weight"))
        );
        assert_eq!(weight.target, "web 198.18.1.12:8080");
        assert_eq!(
            provenance.locate(Place::backend(0, 0, "address")),
            Location::Unrecorded
        );
        // The service as a whole was last changed by the deletion.
        let Location::Request(service) = provenance.locate(Place::item(Item::Service(0))) else {
            panic!("the service is not located at its last edit")
        };
        assert_eq!(
            (service.edit, service.op, service.field),
            (2, "backend_del", None)
        );
        assert_eq!(
            provenance.locate(Place::service(0, "vip")).to_string(),
            "edit 2 (backend_del web 198.18.1.11:8080)"
        );
    }

    #[test]
    fn paths_are_added_replaced_and_removed_and_a_bad_one_changes_nothing() {
        use flowgate_api::{PathKey, PathSpec};
        let add = |client: &str, backend: &str| {
            Edit::PathAdd(PathSpec {
                service: "web".into(),
                client: client.into(),
                backends: vec![backend.into()],
            })
        };
        let paths = |c: &Config| -> Vec<(String, Vec<String>)> {
            c.services[0]
                .routing
                .paths
                .iter()
                .map(|p| (p.client.to_string(), p.backends.clone()))
                .collect()
        };
        let c = apply_edits(
            &rules(),
            &[
                add("198.18.60.5", "198.18.1.11:8080"),
                add("198.18.61.0/24", "198.18.1.11:8080"),
                add("198.18.60.5", "198.18.1.12:8080"),
            ],
        )
        .unwrap();
        assert_eq!(
            paths(&c),
            [
                (
                    "198.18.60.5/32".to_owned(),
                    vec!["198.18.1.12:8080".to_owned()]
                ),
                (
                    "198.18.61.0/24".to_owned(),
                    vec!["198.18.1.11:8080".to_owned()]
                ),
            ]
        );
        let key = |client: &str| {
            Edit::PathDel(PathKey {
                service: "web".into(),
                client: client.into(),
            })
        };
        let c = apply_edits(&c, &[key("198.18.61.0/24")]).unwrap();
        assert_eq!(paths(&c).len(), 1);
        let gone = apply_edits(&c, &[key("198.18.61.0/24")]).unwrap_err();
        assert_eq!(gone.code, ErrorCode::NotFound, "{gone:?}");
        // A backend the service does not have: refused by the rules' check.
        let unknown = apply_edits(&c, &[add("198.18.62.1", "nope")]).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::Invalid, "{unknown:?}");
        let bad = apply_edits(&c, &[add("198.18.62.x", "198.18.1.11:8080")]).unwrap_err();
        assert!(bad.message.contains("198.18.62.x"), "{bad:?}");
    }

    /// Rules of two services with named backends and a few paths each.
    fn path_rules() -> Config {
        let mut text = String::new();
        for (s, name) in ["web", "api"].iter().enumerate() {
            text += &format!(
                "[[services]]\nname = \"{name}\"\nprotocol = \"tcp\"\nvip = \"198.18.100.{}\"\nport = 80\nmaglev_table_size = 251\n",
                10 + s
            );
            for k in 1..=3 {
                text += &format!(
                    "[[services.paths]]\nclient = \"198.18.60.{k}\"\nbackends = [\"{name}-{k}\"]\n"
                );
            }
            for k in 1..=4 {
                text += &format!(
                    "[[services.backends]]\naddress = \"198.18.{}.{k}\"\nport = 8080\nname = \"{name}-{k}\"\n",
                    1 + s
                );
            }
            if s == 0 {
                text += "[[services.backends]]\naddress = \"198.18.1.9\"\nport = 8080\n";
            }
        }
        load_str(&text, "paths.toml").unwrap()
    }

    #[test]
    fn path_verbs_made_path_by_path_give_the_rules_and_diff_of_the_whole_road() {
        use flowgate_api::{PathKey, PathSpec};
        let mut config = path_rules();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next_random = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut fast, mut refused) = (0, 0);
        for _ in 0..400 {
            let count = 1 + next_random(4);
            let edits: Vec<Edit> = (0..count)
                .map(|_| {
                    let service =
                        ["web", "api", "nope"][next_random(3).min(next_random(3)) as usize];
                    let client = match next_random(8) {
                        0 => "198.18.61.0/24".to_owned(),
                        1 => "2001:2::7".to_owned(),
                        2 => "198.18.62.1/24".to_owned(),
                        3 => "not-an-address".to_owned(),
                        k => format!("198.18.60.{k}"),
                    };
                    if next_random(3) == 0 {
                        return Edit::PathDel(PathKey {
                            service: service.into(),
                            client,
                        });
                    }
                    let backends = (0..1 + next_random(2))
                        .map(|_| match next_random(7) {
                            0 => "198.18.1.9:8080".to_owned(),
                            1 => "unknown".to_owned(),
                            k => format!("{service}-{}", 1 + k % 4),
                        })
                        .collect();
                    Edit::PathAdd(PathSpec {
                        service: service.into(),
                        client,
                        backends,
                    })
                })
                .collect();
            let whole = apply_edits(&config, &edits);
            match apply_path_edits(&config, &edits) {
                Some(change) => {
                    fast += 1;
                    let next = whole.expect("what is made path by path is valid");
                    assert_eq!(*change.config, next, "{edits:?}");
                    assert_eq!(change.diff, super::super::diff(&config, &next), "{edits:?}");
                    // The updates turn the old paths into the new ones.
                    for (i, service) in next.services.iter().enumerate() {
                        let mut paths: hashbrown::HashMap<_, _> = config.services[i]
                            .routing
                            .paths
                            .iter()
                            .map(|p| (p.client, p.backends.clone()))
                            .collect();
                        for update in change.updates.iter().filter(|u| u.service == i) {
                            match &update.backends {
                                Some(b) => paths.insert(update.client, b.clone()),
                                None => paths.remove(&update.client),
                            };
                        }
                        let now: hashbrown::HashMap<_, _> = service
                            .routing
                            .paths
                            .iter()
                            .map(|p| (p.client, p.backends.clone()))
                            .collect();
                        assert_eq!(paths, now, "{edits:?}");
                    }
                    config = next;
                }
                // Refused (or one a later edit of the batch mends): the
                // whole road's answer stands.
                None => refused += usize::from(whole.is_err()),
            }
        }
        assert!(
            fast > 50 && refused > 50,
            "{fast} made path by path, {refused} refused"
        );
        // What only the whole road may take: not path verbs alone.
        let canary = Edit::CanarySet(flowgate_api::CanaryShare {
            service: "web".into(),
            share: 5,
        });
        assert!(apply_path_edits(&config, &[canary]).is_none());
        assert!(apply_path_edits(&config, &[]).is_none());
    }

    #[test]
    fn a_canary_share_is_set_within_range_on_a_service_with_a_canary() {
        use flowgate_api::CanaryShare;
        let set = |share: u32| {
            Edit::CanarySet(CanaryShare {
                service: "web".into(),
                share,
            })
        };
        let none = apply_edits(&rules(), &[set(500)]).unwrap_err();
        assert!(none.message.contains("has no canary"), "{none:?}");
        let text = RULES.replacen(
            "port = 80\n",
            "port = 80\n[services.canary]\ngroup = \"v2\"\n",
            1,
        ) + "group = \"v2\"\n";
        let c = load_str(&text, "t.toml").unwrap();
        let c = apply_edits(&c, &[set(500)]).unwrap();
        assert_eq!(c.services[0].routing.canary.as_ref().unwrap().share_bp, 500);
        let over = apply_edits(&c, &[set(10_001)]).unwrap_err();
        assert_eq!(over.code, ErrorCode::Invalid, "{over:?}");
    }

    /// The classes of `c` as `PREFIX SET ZONE` (`-` for none).
    fn classes(c: &Config) -> Vec<String> {
        c.routing
            .classes
            .iter()
            .map(|c| {
                let label = |l: &Option<String>| l.clone().unwrap_or_else(|| "-".into());
                format!("{} {} {}", c.prefix, label(&c.set), label(&c.zone))
            })
            .collect()
    }

    fn class(prefix: &str, set: Option<&str>, zone: Option<&str>) -> Edit {
        Edit::ClassAdd(ClassSpec {
            prefix: prefix.into(),
            set: set.map(str::to_owned),
            zone: zone.map(str::to_owned),
            replace: false,
        })
    }

    /// [`RULES`] with backends in zones dc1 and dc2.
    fn zoned_rules() -> Config {
        let text = RULES
            .replacen("port = 8080\n", "port = 8080\nzone = \"dc1\"\n", 1)
            .replacen(
                "address = \"198.18.1.12\"\nport = 8080\n",
                "address = \"198.18.1.12\"\nport = 8080\nzone = \"dc2\"\n",
                1,
            );
        load_str(&text, "t.toml").unwrap()
    }

    #[test]
    fn client_classes_are_added_replaced_and_removed() {
        use flowgate_api::ClassKey;
        let c = apply_edits(
            &zoned_rules(),
            &[
                class("198.18.10.0/24", Some("shop.sh.g1"), Some("dc1")),
                class("198.18.10.7", None, None),
                class("2001:2::/32", Some("shop.sh.*"), Some("dc2")),
            ],
        )
        .unwrap();
        assert_eq!(
            classes(&c),
            [
                "198.18.10.0/24 shop.sh.g1 dc1",
                "198.18.10.7/32 - -",
                "2001:2::/32 shop.sh.* dc2"
            ]
        );
        // Already there: refused unless replaced.
        let again = apply_edits(&c, &[class("198.18.10.0/24", None, Some("dc2"))]).unwrap_err();
        assert_eq!(again.code, ErrorCode::Exists, "{again:?}");
        assert_eq!(
            again.message,
            "client class 198.18.10.0/24 already exists (set shop.sh.g1 zone dc1): remove it \
             first, or replace it"
        );
        let mut replace = ClassSpec {
            prefix: "198.18.10.0/24".into(),
            set: None,
            zone: Some("dc2".into()),
            replace: true,
        };
        let replaced = apply_edits(&c, &[Edit::ClassAdd(replace.clone())]).unwrap();
        assert_eq!(classes(&replaced)[0], "198.18.10.0/24 - dc2");
        // A replace of a prefix with no class adds it.
        replace.prefix = "198.18.11.0/24".into();
        let added = apply_edits(&c, &[Edit::ClassAdd(replace)]).unwrap();
        assert_eq!(classes(&added).len(), 4);

        let del = |prefix: &str| {
            Edit::ClassDel(ClassKey {
                prefix: prefix.into(),
            })
        };
        let c = apply_edits(&c, &[del("198.18.10.7/32"), del("2001:2::/32")]).unwrap();
        assert_eq!(classes(&c), ["198.18.10.0/24 shop.sh.g1 dc1"]);
        let gone = apply_edits(&c, &[del("198.18.10.7")]).unwrap_err();
        assert_eq!(gone.code, ErrorCode::NotFound, "{gone:?}");
        assert_eq!(gone.message, "no client class has prefix 198.18.10.7/32");
        // Removed and added again in one batch.
        let c = apply_edits(
            &c,
            &[
                del("198.18.10.0/24"),
                class("198.18.10.0/24", Some("shop.sh.g2"), None),
            ],
        )
        .unwrap();
        assert_eq!(classes(&c), ["198.18.10.0/24 shop.sh.g2 -"]);
    }

    #[test]
    fn a_bad_client_class_is_refused_with_its_reason_and_changes_nothing() {
        let base = apply_edits(
            &zoned_rules(),
            &[class("198.18.10.0/24", None, Some("dc1"))],
        )
        .unwrap();
        let refused = |edits: &[Edit]| {
            let error = apply_edits(&base, edits).unwrap_err();
            (error.code, error.problems.clone())
        };
        let (code, problems) = refused(&[class("198.18.20.0/24", Some("shop.g1"), None)]);
        assert_eq!(code, ErrorCode::Invalid);
        assert!(
            problems[0].starts_with("set \"shop.g1\" of client class 198.18.20.0/24 "),
            "{problems:?}"
        );
        let (_, problems) = refused(&[class("198.18.20.0/24", None, Some("dc9"))]);
        assert_eq!(
            problems,
            [
                "zone \"dc9\" of client class 198.18.20.0/24 is unknown: no backend, client class \
              or zone_priority has it"
            ]
        );
        let (_, problems) = refused(&[class("198.18.20.1/24", None, None)]);
        assert_eq!(
            problems,
            ["client class prefix 198.18.20.1/24 has host bits set"]
        );
        let (_, problems) = refused(&[class("198.18.20.x", None, None)]);
        assert!(problems[0].contains("198.18.20.x"), "{problems:?}");
        let (code, _) = refused(&[class("198.18.10.0/24", None, None)]);
        assert_eq!(code, ErrorCode::Exists);
        // In a batch, a problem is named with its edit, and the good edit
        // beside it applies no more than it does.
        let (_, problems) = refused(&[
            class("198.18.30.0/24", None, Some("dc2")),
            class("198.18.32.0/24", None, Some("dc7")),
        ]);
        assert_eq!(
            problems,
            [
                "edit 2 (class_add): zone \"dc7\" of client class 198.18.32.0/24 is unknown: no \
              backend, client class or zone_priority has it"
            ]
        );
        let (_, problems) = refused(&[
            class("198.18.30.0/24", None, Some("dc2")),
            class("198.18.31.0/24", Some("a.b"), None),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("edit 2 (class_add 198.18.31.0/24), field set: "),
            "{problems:?}"
        );
        // A zone a running class has, or one a backend added in the same
        // batch has, is known.
        let c = apply_edits(&base, &[class("198.18.40.0/24", None, Some("dc1"))]).unwrap();
        assert_eq!(classes(&c).len(), 2);
        let c = apply_edits(
            &base,
            &[
                Edit::BackendAdd(flowgate_api::BackendAdd {
                    service: "web".into(),
                    backend: BackendSpec {
                        zone: Some("dc3".into()),
                        ..BackendSpec::new("198.18.1.13", 8080)
                    },
                }),
                class("198.18.41.0/24", None, Some("dc3")),
            ],
        )
        .unwrap();
        assert_eq!(classes(&c)[1], "198.18.41.0/24 - dc3");
    }
}
