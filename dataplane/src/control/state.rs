//! The control thread's state: the running config, and the one path every
//! change takes — build the whole next config, validate it in full, check
//! that the data plane's kernel side can hold it, and only then hand it to
//! the data plane. All or nothing.
//!
//! **Reads never wait for a change.** The running rules are one immutable
//! value behind a pointer that is swapped atomically (`arc-swap`, as the
//! workers' snapshots are): a read (`status`, `service list`, `backend
//! list`, `stats`, `flows`) takes the pointer and answers from what it
//! points at. A change builds, validates and has the data plane compile
//! its next config while nothing that reads is held up, and swaps the
//! pointer at the end.
//!
//! **Changes take turns.** A change holds a lock that only changes take,
//! from reading the rules it starts from until it has swapped in its
//! result, so each change is made on the rules the one before it left and
//! two changes never both apply on one base. A change that arrives during
//! another waits for it, then is checked against its result (a backend the
//! first one added is "already there" for the second): nothing is lost,
//! and nobody has to send a change again because another one was faster.
//! A dry run changes nothing and takes no turn.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use std::net::SocketAddr;

use flowgate_api::{
    ApiError, BackendKey, BackendsReply, ChangeReport, Edit, ErrorCode, FlowsQuery, FlowsReply,
    HeartbeatReply, Reply, Request, ServiceName, ServiceView, ServicesReply, StatusReply,
    DEFAULT_FLOWS_LIMIT, DEFAULT_ORIGIN, MAX_FLOWS_LIMIT,
};

use super::dataplane::Dataplane;
use super::diff::diff;
use super::edit::{apply_edits, apply_path_edits, path_change, PathChange};
use crate::metrics::{ChangeCounters, ChangeSource, RefusalReason};
use crate::rules::{self, Config, ConfigError};

/// Config sections that take effect only when the daemon starts: a change
/// that touches one of them is refused as a whole.
pub const RESTART_ONLY_SECTIONS: [&str; 3] = ["daemon", "interfaces", "flows"];

/// The running rules and the data plane they run on.
///
/// A handle: clones share the same rules, and every method works through
/// a shared reference, so threads that share one state (the control
/// server's, the daemon's SIGHUP) need no lock of their own around it.
/// [`handle`] and [`reload`] take it in a `Mutex` as the daemon keeps it,
/// and hold that lock only to copy the handle.
#[derive(Clone)]
pub struct ControlState {
    rules: Arc<Rules>,
    dataplane: Arc<dyn Dataplane>,
    changes: Arc<ChangeCounters>,
    /// Where the rules from etcd stand, once a gateway with `[etcd]` says
    /// how to ask (`status` shows it).
    etcd: Arc<std::sync::OnceLock<EtcdReport>>,
    /// Whether the operator drained this gateway from the fleet
    /// (`fleet_drain`): runtime state, kept across reloads (which change
    /// the rules, not this), lost with the process.
    drained: Arc<AtomicBool>,
}

/// How `status` (and the metrics) ask the etcd source where the rules
/// from etcd stand.
pub type EtcdReport = Arc<dyn Fn() -> flowgate_api::EtcdStatus + Send + Sync>;

/// The rules that run, and the turn changes take.
struct Rules {
    running: ArcSwap<Running>,
    /// Held by a change from reading [`Rules::running`] to swapping it.
    turn: Mutex<()>,
}

/// The rules that run, as one value: replaced whole, never modified.
#[derive(Debug)]
struct Running {
    config: Arc<Config>,
    /// Backends over all services (what `status` shows).
    backends: usize,
    /// Where the rules were last loaded from as a whole.
    origin: String,
    /// Changes made by edits since then.
    edits_since_load: u64,
}

impl Running {
    fn new(config: Arc<Config>, origin: String, edits_since_load: u64) -> Running {
        Running {
            backends: config.services.iter().map(|s| s.backends.len()).sum(),
            config,
            origin,
            edits_since_load,
        }
    }

    /// The service called `name`, or `not_found`.
    fn service(&self, name: &str) -> Result<&rules::Service, ApiError> {
        self.config
            .service(name)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("unknown service {name:?}")))
    }

    /// A `flows` query names a service that runs, if any.
    fn check_flows_query(&self, query: &FlowsQuery) -> Result<(), ApiError> {
        match &query.service {
            Some(name) => self.service(name).map(|_| ()),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.running();
        f.debug_struct("ControlState")
            .field("origin", &running.origin)
            .field("services", &running.config.services.len())
            .field("edits_since_load", &running.edits_since_load)
            .finish_non_exhaustive()
    }
}

/// What a change is made of.
enum Proposal<'a> {
    /// Edits to the running rules, each to the result of the ones before.
    Edits(&'a [Edit]),
    /// A whole config, as text, and where it comes from.
    Text { text: &'a str, origin: &'a str },
    /// A whole config, in a file.
    File(&'a Path),
    /// A whole config another source put together (etcd's rules on the
    /// file's), and where it came from.
    Config { config: &'a Config, origin: &'a str },
    /// The same, shared, and known to differ from `since` only in the
    /// services named in `services` (when `since` is given).
    Shared {
        config: Arc<Config>,
        since: Option<(&'a Arc<Config>, &'a [String])>,
        origin: &'a str,
    },
    /// The same, known to differ from `since` only in the paths `updates`
    /// names, each as it says.
    Paths {
        config: Arc<Config>,
        since: &'a Arc<Config>,
        updates: &'a [crate::table::PathUpdate],
        origin: &'a str,
    },
}

impl ControlState {
    /// State for a data plane that already runs `config`, loaded from
    /// `origin` (its path). Give the config as the file has it, before any
    /// command-line overrides, so that reloading an unchanged file changes
    /// nothing.
    pub fn new(config: Config, origin: impl Into<String>, dataplane: Arc<dyn Dataplane>) -> Self {
        ControlState {
            rules: Arc::new(Rules {
                running: ArcSwap::from_pointee(Running::new(Arc::new(config), origin.into(), 0)),
                turn: Mutex::new(()),
            }),
            dataplane,
            changes: Arc::default(),
            etcd: Arc::default(),
            drained: Arc::default(),
        }
    }

    /// The drain flag `fleet_drain` and `fleet_undrain` set, shared with
    /// whoever withdraws the VIPs' announcements while it is set (the
    /// daemon's BGP offer).
    pub fn drain_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.drained)
    }

    /// Whether the gateway is drained from the fleet now.
    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// `fleet_drain` (`drained`) or `fleet_undrain`: sets the flag; says
    /// whether that changed it.
    fn set_drained(&self, drained: bool) -> flowgate_api::DrainReply {
        let changed = self.drained.swap(drained, Ordering::Relaxed) != drained;
        if changed {
            if drained {
                tracing::warn!("drained from the fleet: the VIPs' BGP announcements are withdrawn");
            } else {
                tracing::info!("undrained: the VIPs offered are announced by BGP again");
            }
        }
        flowgate_api::DrainReply { drained, changed }
    }

    /// `status` shows where the rules from etcd stand, as `report` says
    /// (every handle of this state; set once).
    pub fn report_etcd(&self, report: EtcdReport) {
        let _ = self.etcd.set(report);
    }

    /// Where the rules from etcd stand, if a gateway with `[etcd]` said
    /// how to ask.
    pub fn etcd_status(&self) -> Option<flowgate_api::EtcdStatus> {
        self.etcd.get().map(|report| report())
    }

    /// Counts refused changes in `changes` (which the metrics read).
    pub fn with_change_counters(mut self, changes: Arc<ChangeCounters>) -> Self {
        self.changes = changes;
        self
    }

    /// The running config. It does not change under the caller: a change
    /// made meanwhile replaces it for later callers.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.running().config)
    }

    /// The data plane.
    pub fn dataplane(&self) -> &Arc<dyn Dataplane> {
        &self.dataplane
    }

    /// Answers one request. Mutating requests change everything they ask
    /// for or nothing.
    pub fn handle(&mut self, request: Request) -> Result<Reply, ApiError> {
        self.answer(request)
    }

    /// Applies `edits` as one change: each to the result of the previous
    /// ones, then the whole result checked by [`rules::validate`].
    pub fn edit(&mut self, edits: &[Edit], dry_run: bool) -> Result<ChangeReport, ApiError> {
        self.change(ChangeSource::Edit, Proposal::Edits(edits), dry_run)
    }

    /// Replaces the rules with the config in `text` (a file's contents),
    /// validated as a file is; problems are reported as `ORIGIN:LINE:COL:`.
    pub fn apply_text(
        &mut self,
        text: &str,
        origin: &str,
        dry_run: bool,
    ) -> Result<ChangeReport, ApiError> {
        let proposal = Proposal::Text { text, origin };
        self.change(ChangeSource::Apply, proposal, dry_run)
    }

    /// Re-reads the config file at `path` and applies the difference. An
    /// unreadable or invalid file is refused with its problems and the old
    /// rules keep running.
    pub fn reload(&mut self, path: &Path) -> Result<ChangeReport, ApiError> {
        self.change(ChangeSource::Reload, Proposal::File(path), false)
    }

    /// Replaces the rules with `config`, a whole config another source put
    /// together (the etcd source: the file's rules with etcd's parts);
    /// `origin` says where it came from (`etcd revision 42`).
    ///
    /// `config` must have passed [`rules::validate`]: the source validates
    /// it with its own provenance (problems at etcd keys), and it is not
    /// validated twice. Everything else a change goes through (restart-only
    /// sections, the data plane's check, all or nothing) applies.
    pub fn apply_config(&self, config: &Config, origin: &str) -> Result<ChangeReport, ApiError> {
        let proposal = Proposal::Config { config, origin };
        self.change(ChangeSource::Reload, proposal, false)
    }

    /// [`ControlState::apply_config`] for a config that is shared (it
    /// runs as it is, without a copy) and, with `since`, known to differ
    /// from the config `since.0` only in the services named in `since.1`
    /// (added, replaced or removed): when `since.0` is what runs, the
    /// change is compared service by service, so it costs what it
    /// changes. Otherwise (another change ran between), it is compared in
    /// full.
    pub fn apply_shared(
        &self,
        config: Arc<Config>,
        since: Option<(&Arc<Config>, &[String])>,
        origin: &str,
    ) -> Result<ChangeReport, ApiError> {
        let proposal = Proposal::Shared {
            config,
            since,
            origin,
        };
        self.change(ChangeSource::Reload, proposal, false)
    }

    /// [`ControlState::apply_shared`] for a config known to differ from
    /// `since` only in the distribution paths `updates` names, each as it
    /// says (the etcd source's revision of path keys alone): when `since`
    /// is what runs, it takes the path verbs' road — the path table is
    /// edited with those paths alone and no snapshot is built — so it
    /// costs what it changes, however many paths the rules hold.
    /// Otherwise it is compared in full. `config` must be valid, as for
    /// [`ControlState::apply_config`].
    pub fn apply_path_updates(
        &self,
        config: Arc<Config>,
        since: &Arc<Config>,
        updates: &[crate::table::PathUpdate],
        origin: &str,
    ) -> Result<ChangeReport, ApiError> {
        let proposal = Proposal::Paths {
            config,
            since,
            updates,
            origin,
        };
        self.change(ChangeSource::Reload, proposal, false)
    }

    /// The rules that run now.
    fn running(&self) -> Arc<Running> {
        self.rules.running.load_full()
    }

    /// `status`: the data plane's and the running rules'.
    fn status(&self) -> Reply {
        let running = self.running();
        Reply::Status(StatusReply {
            dataplane: self.dataplane.status(),
            services: running.config.services.len(),
            backends: running.backends,
            origin: running.origin.clone(),
            edits_since_load: running.edits_since_load,
            health: self.dataplane.health_summary(&running.config),
            etcd: self.etcd_status(),
            drained: self.drained(),
        })
    }

    /// `backend list`: the service's backends with their health.
    fn backend_list(&self, service: String) -> Result<Reply, ApiError> {
        let running = self.running();
        let rules = running.service(&service)?;
        let mut backends = ServiceView::from(rules).backends;
        let health = self.dataplane.backend_health(rules);
        if health.len() == backends.len() {
            for (view, health) in backends.iter_mut().zip(health) {
                view.health = Some(health);
            }
        }
        Ok(Reply::Backends(BackendsReply { service, backends }))
    }

    /// Answers one request; reads from the rules that run when it starts.
    fn answer(&self, request: Request) -> Result<Reply, ApiError> {
        match request {
            Request::Status {} => Ok(self.status()),
            Request::Stats {} => Ok(Reply::Stats(self.dataplane.stats())),
            Request::Flows(query) => {
                self.running().check_flows_query(&query)?;
                let flows = self
                    .dataplane
                    .flows(query.service.as_deref(), flows_limit(&query));
                Ok(Reply::Flows(FlowsReply { flows }))
            }
            Request::ServiceList {} => Ok(Reply::Services(ServicesReply {
                services: self
                    .running()
                    .config
                    .services
                    .iter()
                    .map(ServiceView::from)
                    .collect(),
            })),
            Request::BackendList(ServiceName { service }) => self.backend_list(service),
            Request::Apply(apply) => {
                let origin = apply.origin.as_deref().unwrap_or(DEFAULT_ORIGIN);
                let proposal = Proposal::Text {
                    text: &apply.config,
                    origin,
                };
                self.change(ChangeSource::Apply, proposal, apply.dry_run)
                    .map(Reply::Changed)
            }
            Request::Batch(batch) => self
                .change(
                    ChangeSource::Edit,
                    Proposal::Edits(&batch.edits),
                    batch.dry_run,
                )
                .map(Reply::Changed),
            Request::ServiceAdd(x) => self.edit_one(Edit::ServiceAdd(x)),
            Request::ServiceEdit(x) => self.edit_one(Edit::ServiceEdit(x)),
            Request::ServiceDel(x) => self.edit_one(Edit::ServiceDel(x)),
            Request::BackendAdd(x) => self.edit_one(Edit::BackendAdd(x)),
            Request::BackendEdit(x) => self.edit_one(Edit::BackendEdit(x)),
            Request::BackendDel(x) => self.edit_one(Edit::BackendDel(x)),
            Request::BackendDrain(x) => self.edit_one(Edit::BackendDrain(x)),
            Request::BackendHeartbeat(key) => self.heartbeat(&key).map(Reply::Heartbeat),
            // Streamed by the control socket (`capture::stream`); a
            // caller with no connection to stream to gets the check only.
            Request::Capture(query) => {
                crate::capture::stream::filter_for(&query, self)?;
                Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "capture streams its frames: send it on a control socket connection",
                ))
            }
            Request::PathList(name) => {
                let running = self.running();
                let service = running.service(&name.service)?;
                Ok(Reply::Paths(flowgate_api::PathsReply {
                    service: service.name.clone(),
                    paths: service
                        .routing
                        .paths
                        .iter()
                        .map(|p| flowgate_api::PathView {
                            client: p.client.to_string(),
                            backends: p.backends.clone(),
                        })
                        .collect(),
                }))
            }
            Request::FleetDrain {} => Ok(Reply::Drain(self.set_drained(true))),
            Request::FleetUndrain {} => Ok(Reply::Drain(self.set_drained(false))),
            Request::ClassList {} => {
                let running = self.running();
                let classes = &running.config.routing.classes;
                Ok(Reply::Classes(flowgate_api::ClassesReply {
                    classes: classes.iter().map(super::diff::class_view).collect(),
                }))
            }
            Request::Explain(query) => {
                let snapshot = self.dataplane.snapshot().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Internal,
                        "this data plane has no snapshot to explain",
                    )
                })?;
                let mut paths = self.dataplane.paths();
                let view = paths.as_mut().map(|reader| reader.load());
                super::explain::explain(&snapshot, view, &query).map(Reply::Explain)
            }
        }
    }

    /// A heartbeat of a backend of the running rules that has a TTL: it
    /// changes no rule, so it takes no turn.
    fn heartbeat(&self, key: &BackendKey) -> Result<HeartbeatReply, ApiError> {
        let running = self.running();
        let service = running.service(&key.service)?;
        let address = rules::parse::backend_address(&key.address, &key.service)
            .map_err(|e| ApiError::new(ErrorCode::Invalid, e))?;
        let backend = service
            .backends
            .iter()
            .find(|b| b.address == address && b.port == key.port)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "service {:?} has no backend {}",
                        service.name,
                        SocketAddr::new(address, key.port)
                    ),
                )
            })?;
        let socket = backend.socket_addr();
        let ttl = rules::heartbeat_ttl_of(service, backend).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Invalid,
                format!(
                    "backend {socket} of service {:?} has no heartbeat_ttl, so it takes no \
                     heartbeats: give it one (backend edit --heartbeat-ttl) to register it by \
                     heartbeats",
                    service.name
                ),
            )
        })?;
        let expires_in = self
            .dataplane
            .heartbeat(&service.name, socket, ttl)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
        Ok(HeartbeatReply {
            service: service.name.clone(),
            address,
            port: key.port,
            ttl_ms: millis(ttl),
            expires_in_ms: millis(expires_in),
        })
    }

    fn edit_one(&self, edit: Edit) -> Result<Reply, ApiError> {
        self.change(ChangeSource::Edit, Proposal::Edits(&[edit]), false)
            .map(Reply::Changed)
    }

    /// Makes one change, in its turn (a dry run needs none), and counts
    /// it if it was refused.
    fn change(
        &self,
        source: ChangeSource,
        proposal: Proposal<'_>,
        dry_run: bool,
    ) -> Result<ChangeReport, ApiError> {
        let _turn = (!dry_run).then(|| lock(&self.rules.turn));
        // Read in the turn: the rules the previous change left.
        let base = self.running();
        let result = self.make(&base, proposal, dry_run);
        if let (Err(e), false) = (&result, dry_run) {
            self.changes.refused(source, refusal_reason(e.code));
        }
        result
    }

    /// Builds the next config from `base` and `proposal`, and makes it
    /// run unless this is a dry run.
    ///
    /// Before anything is reported or applied, the data plane checks that
    /// its kernel side can hold it (the XDP maps' sizes): a change it
    /// cannot take is invalid, like a change that breaks a rule.
    fn make(
        &self,
        base: &Running,
        proposal: Proposal<'_>,
        dry_run: bool,
    ) -> Result<ChangeReport, ApiError> {
        // The services that alone differ from what runs, when known.
        let mut only: Option<&[String]> = None;
        let (next, origin) = match proposal {
            Proposal::Edits(edits) => match apply_path_edits(&base.config, edits) {
                Some(change) => return self.make_path_change(base, change, None, dry_run),
                None => (Arc::new(apply_edits(&base.config, edits)?), None),
            },
            Proposal::Text { text, origin } => (
                Arc::new(rules::load_str(text, origin).map_err(config_error)?),
                Some(origin.to_owned()),
            ),
            Proposal::File(path) => (
                Arc::new(rules::load_file(path).map_err(config_error)?),
                Some(path.display().to_string()),
            ),
            Proposal::Config { config, origin } => {
                (Arc::new(config.clone()), Some(origin.to_owned()))
            }
            Proposal::Shared {
                config,
                since,
                origin,
            } => {
                only = since
                    .filter(|(since, _)| Arc::ptr_eq(since, &base.config))
                    .map(|(_, names)| names);
                (config, Some(origin.to_owned()))
            }
            Proposal::Paths {
                config,
                since,
                updates,
                origin,
            } => {
                if Arc::ptr_eq(since, &base.config) {
                    let touched = updates.iter().map(|u| (u.service, u.client));
                    let change = path_change(&base.config, config, touched);
                    return self.make_path_change(base, change, Some(origin), dry_run);
                }
                (config, Some(origin.to_owned()))
            }
        };
        let diff = match only {
            Some(names) => super::diff::diff_services(&base.config, &next, names),
            None => diff(&base.config, &next),
        };
        let restart: Vec<&str> = diff
            .settings_changed
            .iter()
            .map(String::as_str)
            .filter(|s| RESTART_ONLY_SECTIONS.contains(s))
            .collect();
        if !restart.is_empty() {
            return Err(restart_required(&restart));
        }
        self.dataplane
            .check(&next)
            .map_err(|e| ApiError::with_problems(ErrorCode::Invalid, e.problems("the change")))?;
        if dry_run || diff.is_empty() {
            if !dry_run {
                // Nothing to compile or publish, and nothing to count as
                // an edit; a new order or origin is kept.
                self.install(base, next, origin, false);
            }
            return Ok(ChangeReport {
                generation: self.dataplane.generation(),
                applied: false,
                dry_run,
                diff,
                warnings: Vec::new(),
            });
        }
        // Paths alone live beside the snapshot: edited in place, path by
        // path, with no snapshot built.
        let only_paths = match only {
            Some(names) => super::diff::only_paths_differ_in(&base.config, &next, names),
            None => super::diff::only_paths_differ(&base.config, &next),
        };
        let applied = if only_paths {
            self.dataplane.apply_paths(&next)
        } else {
            let changes = only.map(|services| super::ServiceChanges {
                since: &base.config,
                services,
            });
            self.dataplane.apply_shared(&next, changes)
        };
        self.finish(base, next, origin, diff, applied)
    }

    /// [`ControlState::make`] for a request of path verbs alone, made and
    /// checked path by path ([`apply_path_edits`]): its diff is the paths
    /// it changes, and the data plane edits its path table with those
    /// paths alone. No restart-only section and nothing the kernel side
    /// holds changes, so neither is checked. `origin` is set for rules
    /// from another source (etcd), as for a whole config.
    fn make_path_change(
        &self,
        base: &Running,
        change: PathChange,
        origin: Option<&str>,
        dry_run: bool,
    ) -> Result<ChangeReport, ApiError> {
        let PathChange {
            config: next,
            diff,
            updates,
        } = change;
        let origin = origin.map(str::to_owned);
        if dry_run || diff.is_empty() {
            if !dry_run {
                // A new order of the paths is kept; nothing to publish.
                self.install(base, next, origin, false);
            }
            return Ok(ChangeReport {
                generation: self.dataplane.generation(),
                applied: false,
                dry_run,
                diff,
                warnings: Vec::new(),
            });
        }
        let applied = self.dataplane.apply_path_updates(&next, &updates);
        self.finish(base, next, origin, diff, applied)
    }

    /// Makes `next` the running rules once the data plane has `applied`
    /// it, and reports the change; or reports why the data plane could not.
    fn finish(
        &self,
        base: &Running,
        next: Arc<Config>,
        origin: Option<String>,
        diff: flowgate_api::ConfigDiff,
        applied: Result<super::Applied, super::ApplyError>,
    ) -> Result<ChangeReport, ApiError> {
        let applied = applied.map_err(|e| ApiError {
            generation: Some(e.generation),
            ..ApiError::new(
                ErrorCode::ApplyFailed,
                format!("the data plane could not apply the change: {e}"),
            )
        })?;
        let origin = self.install(base, next, origin, true);
        tracing::info!(
            generation = applied.generation,
            changes = diff.change_count(),
            origin = %origin,
            "rules changed"
        );
        for warning in &applied.warnings {
            tracing::warn!(generation = applied.generation, "{warning}");
        }
        Ok(ChangeReport {
            generation: applied.generation,
            applied: true,
            dry_run: false,
            diff,
            warnings: applied.warnings,
        })
    }

    /// Swaps in `next`, made from `base` (which runs: the caller holds the
    /// turn). `origin` is set when `next` is a whole file (apply, reload),
    /// which starts the count of edits again; an edit counts only if it
    /// `changed` something. Returns the origin now.
    fn install(
        &self,
        base: &Running,
        next: Arc<Config>,
        origin: Option<String>,
        changed: bool,
    ) -> String {
        debug_assert!(std::ptr::eq(&**self.rules.running.load(), base));
        let running = match origin {
            Some(origin) => Running::new(next, origin, 0),
            None => Running::new(
                next,
                base.origin.clone(),
                base.edits_since_load + u64::from(changed),
            ),
        };
        let origin = running.origin.clone();
        self.rules.running.store(Arc::new(running));
        origin
    }
}

/// [`ControlState::reload`] on shared state (for the daemon's SIGHUP).
pub fn reload(state: &Mutex<ControlState>, path: &Path) -> Result<ChangeReport, ApiError> {
    shared(state).change(ChangeSource::Reload, Proposal::File(path), false)
}

/// [`ControlState::handle`] on shared state. The lock is held only to copy
/// the handle: reads never wait for a change, nor for one another, and
/// changes take turns among themselves (see the module's documentation).
pub fn handle(state: &Mutex<ControlState>, request: Request) -> Result<Reply, ApiError> {
    shared(state).answer(request)
}

/// A handle on shared state. A panic while the lock was held cannot have
/// left anything half-made (it is held only to copy the handle), so a
/// poisoned lock is still good to use.
fn shared(state: &Mutex<ControlState>) -> ControlState {
    lock(state).clone()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whole milliseconds of `d`.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How many flows a query gets.
fn flows_limit(query: &FlowsQuery) -> usize {
    query
        .limit
        .unwrap_or(DEFAULT_FLOWS_LIMIT)
        .min(MAX_FLOWS_LIMIT)
}

/// A config that did not load, as an API error.
fn config_error(error: ConfigError) -> ApiError {
    match error {
        ConfigError::Io { .. } => ApiError::new(ErrorCode::Io, error.to_string()),
        ConfigError::Invalid { problems } => ApiError::with_problems(
            ErrorCode::Invalid,
            problems.iter().map(ToString::to_string).collect(),
        ),
    }
}

/// The metrics' name for why a change was refused.
fn refusal_reason(code: ErrorCode) -> RefusalReason {
    match code {
        ErrorCode::Invalid => RefusalReason::Invalid,
        ErrorCode::RestartRequired => RefusalReason::RestartRequired,
        ErrorCode::ApplyFailed => RefusalReason::ApplyFailed,
        ErrorCode::Io => RefusalReason::Io,
        ErrorCode::NotFound => RefusalReason::NotFound,
        ErrorCode::Exists => RefusalReason::Exists,
        _ => RefusalReason::Other,
    }
}

/// Refusal of a change to settings read only at start.
fn restart_required(sections: &[&str]) -> ApiError {
    let named: Vec<String> = sections.iter().map(|s| format!("[{s}]")).collect();
    let message = format!(
        "{} changed: read only when flowgate starts; restart flowgate to use the new values, \
         or keep the running ones (nothing was changed)",
        named.join(", ")
    );
    ApiError {
        code: ErrorCode::RestartRequired,
        message,
        problems: named,
        generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::MemoryDataplane;
    use flowgate_api::{
        ApplyConfig, BackendAdd, BackendKey, BackendSpec, Batch, FlowsQuery, ServiceEdit,
    };

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

    fn setup() -> (ControlState, Arc<MemoryDataplane>) {
        let config = rules::load_str(RULES, "gw.toml").unwrap();
        let dataplane = Arc::new(MemoryDataplane::with_config(&config));
        let state = ControlState::new(config, "gw.toml", dataplane.clone());
        (state, dataplane)
    }

    fn add(address: &str, weight: u32) -> Request {
        Request::BackendAdd(BackendAdd {
            service: "web".into(),
            backend: BackendSpec {
                weight: Some(weight),
                ..BackendSpec::new(address, 8080)
            },
        })
    }

    fn changed(reply: Reply) -> ChangeReport {
        match reply {
            Reply::Changed(c) => c,
            other => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn an_edit_publishes_one_generation_and_reports_it() {
        let (mut state, dataplane) = setup();
        let c = changed(state.handle(add("198.18.1.13", 3)).unwrap());
        assert!(c.applied);
        assert_eq!(c.generation, 2);
        assert_eq!(dataplane.current().generation(), 2);
        assert_eq!(dataplane.current().endpoint_count(), 3);
        assert_eq!(c.diff.backends_added.len(), 1);
        assert_eq!(state.config().services[0].backends.len(), 3);
    }

    #[test]
    fn an_invalid_edit_changes_nothing() {
        let (mut state, dataplane) = setup();
        let before = state.config().clone();
        let e = state.handle(add("198.18.1.13", 10_001)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert_eq!(
            e.message,
            "weight 10001 of backend 198.18.1.13:8080 in service \"web\" is out of range 0..=10000"
        );
        let e = state.handle(add("2001:2::13", 1)).unwrap_err();
        assert!(
            e.message
                .contains("is IPv6 but its VIP 198.18.100.10 is IPv4"),
            "{e}"
        );
        // Draining every backend leaves none for new flows.
        let drain = |a: &str| {
            Edit::BackendDrain(BackendKey {
                service: "web".into(),
                address: a.into(),
                port: 8080,
            })
        };
        let e = state
            .edit(&[drain("198.18.1.11"), drain("198.18.1.12")], false)
            .unwrap_err();
        assert_eq!(
            e.message,
            "edit 2 (backend_drain web 198.18.1.12:8080): \
             service \"web\" has no backend with weight > 0 (all 2 are drained)"
        );
        assert_eq!(state.config(), before);
        assert_eq!(dataplane.current().generation(), 1);
        assert_eq!(dataplane.applies(), 1);
    }

    #[test]
    fn a_dry_run_reports_and_changes_nothing() {
        let (mut state, dataplane) = setup();
        let batch = Request::Batch(Batch {
            edits: vec![Edit::ServiceEdit(ServiceEdit {
                service: "web".into(),
                scheduler: Some("sh".into()),
                maglev_table_size: None,
            })],
            dry_run: true,
        });
        let c = changed(state.handle(batch).unwrap());
        assert!(c.dry_run && !c.applied);
        assert_eq!(c.generation, 1);
        assert_eq!(c.diff.services_changed[0].to, "sh");
        assert_eq!(dataplane.applies(), 1);
        assert_eq!(state.config().services[0].scheduler.name(), "maglev");
    }

    #[test]
    fn a_change_to_nothing_publishes_nothing() {
        let (mut state, dataplane) = setup();
        let reversed = RULES
            .replace("198.18.1.11", "198.18.1.XX")
            .replace("198.18.1.12", "198.18.1.11")
            .replace("198.18.1.XX", "198.18.1.12");
        let c = state.apply_text(&reversed, "gw2.toml", false).unwrap();
        assert!(!c.applied && c.diff.is_empty());
        assert_eq!(dataplane.applies(), 1);
        let Reply::Status(status) = state.handle(Request::Status {}).unwrap() else {
            panic!()
        };
        assert_eq!(status.origin, "gw2.toml");
        assert_eq!((status.services, status.backends), (1, 2));
    }

    #[test]
    fn apply_reports_problems_with_positions() {
        let (mut state, _) = setup();
        let e = state
            .handle(Request::Apply(ApplyConfig {
                config: RULES.replace("port = 8080", "port = 0"),
                origin: Some("new.toml".into()),
                dry_run: false,
            }))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert_eq!(e.problems.len(), 2);
        assert!(
            e.problems[0].starts_with("new.toml:11:8: port 0 of backend"),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn settings_read_at_start_are_refused() {
        let (mut state, dataplane) = setup();
        let text = format!("[flows]\nudp_timeout = 5\n{RULES}");
        let e = state.apply_text(&text, "gw.toml", true).unwrap_err();
        assert_eq!(e.code, ErrorCode::RestartRequired);
        assert!(e
            .message
            .starts_with("[flows] changed: read only when flowgate starts"));
        let text = format!("[daemon]\ncores = [1]\n{RULES}").replace("port = 80\n", "port = 81\n");
        let e = state.apply_text(&text, "gw.toml", false).unwrap_err();
        assert_eq!(e.problems, ["[daemon]"]);
        assert_eq!(
            state.config().services[0].port,
            80,
            "the service change did not apply either"
        );
        assert_eq!(dataplane.applies(), 1);
    }

    #[test]
    fn a_failing_data_plane_keeps_the_old_rules() {
        let (mut state, dataplane) = setup();
        dataplane.fail_next_apply("out of memory");
        let e = state.handle(add("198.18.1.13", 1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ApplyFailed);
        assert_eq!(
            e.message,
            "the data plane could not apply the change: out of memory; generation 1 keeps \
             running; nothing else was changed (an in-memory data plane)"
        );
        assert_eq!(e.generation, Some(1));
        assert_eq!(state.config().services[0].backends.len(), 2);
        // The same edit goes through once the data plane takes it.
        assert!(changed(state.handle(add("198.18.1.13", 1)).unwrap()).applied);
    }

    /// What `status`, `service list` and `backend list web` show, less
    /// the uptime (which moves on its own).
    fn views(state: &mut ControlState) -> (u64, usize, usize, String, u64, Reply, Reply) {
        let Reply::Status(status) = state.handle(Request::Status {}).unwrap() else {
            panic!()
        };
        let services = state.handle(Request::ServiceList {}).unwrap();
        let mut backends = state
            .handle(Request::BackendList(ServiceName {
                service: "web".into(),
            }))
            .unwrap();
        // How long a backend has been in its state moves with the clock.
        if let Reply::Backends(list) = &mut backends {
            for health in list.backends.iter_mut().filter_map(|b| b.health.as_mut()) {
                health.since_ms = None;
            }
        }
        (
            status.dataplane.generation,
            status.services,
            status.backends,
            status.origin,
            status.edits_since_load,
            services,
            backends,
        )
    }

    fn service_add(name: &str, vip: &str, port: u16) -> Edit {
        Edit::ServiceAdd(flowgate_api::ServiceSpec {
            name: name.into(),
            protocol: "tcp".into(),
            vip: vip.into(),
            port,
            scheduler: None,
            maglev_table_size: None,
            backends: vec![BackendSpec::new("198.18.1.11", 8080)],
        })
    }

    fn backend_add(address: &str) -> Edit {
        Edit::BackendAdd(BackendAdd {
            service: "web".into(),
            backend: BackendSpec::new(address, 8080),
        })
    }

    /// RULES as a file with `edits` made: the same change as a whole
    /// config. Backends are added to `web`, the last service of RULES, so
    /// they come before any new service.
    fn as_text(edits: &[Edit]) -> String {
        let mut text = RULES.to_owned();
        for edit in edits {
            if let Edit::BackendAdd(b) = edit {
                text.push_str(&format!(
                    "[[services.backends]]\naddress = \"{}\"\nport = 8080\n",
                    b.backend.address
                ));
            }
        }
        for edit in edits {
            match edit {
                Edit::BackendAdd(_) => {}
                Edit::ServiceAdd(s) => text.push_str(&format!(
                    "[[services]]\nname = \"{}\"\nprotocol = \"tcp\"\nvip = \"{}\"\nport = {}\n\
                     [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n",
                    s.name, s.vip, s.port
                )),
                other => panic!("{other:?}"),
            }
        }
        text
    }

    #[test]
    fn a_change_the_xdp_maps_cannot_hold_is_refused_by_every_path_and_changes_nothing() {
        let (mut state, dataplane) = setup();
        // web: 1 service key, 2 reply sources, 1 VIP address.
        dataplane.set_capacity(crate::xdp::XdpCapacity {
            service_keys: 3,
            reply_sources: 4,
            vip_addresses: 2,
            local_addresses: 1,
            announced_addresses: 1,
        });
        let before = views(&mut state);
        let dir = std::env::temp_dir().join(format!("fg-capacity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gw.toml");
        let cases = [
            (
                vec![
                    service_add("a", "198.18.100.10", 81),
                    service_add("b", "198.18.100.10", 82),
                    service_add("c", "198.18.100.10", 83),
                ],
                "needs 4 service keys (protocol, VIP, port); the XDP program holds at most 3",
            ),
            (
                vec![
                    backend_add("198.18.1.13"),
                    backend_add("198.18.1.14"),
                    backend_add("198.18.1.15"),
                ],
                "needs 5 reply sources (protocol, backend address, backend port); \
                 the XDP program holds at most 4",
            ),
            (
                vec![
                    service_add("a", "198.18.100.11", 80),
                    service_add("b", "198.18.100.12", 80),
                ],
                "needs 3 VIP addresses; the XDP program holds at most 2",
            ),
        ];
        for (edits, problem) in cases {
            let change = format!("the change {problem}");
            let config = format!("the config {problem}");
            for dry_run in [false, true] {
                let e = state.edit(&edits, dry_run).unwrap_err();
                assert_eq!(
                    (e.code, &e.problems),
                    (ErrorCode::Invalid, &vec![change.clone()])
                );
                assert_eq!(e.message, change);
                let e = state
                    .apply_text(&as_text(&edits), "new.toml", dry_run)
                    .unwrap_err();
                assert_eq!(
                    (e.code, e.message.as_str()),
                    (ErrorCode::Invalid, change.as_str())
                );
            }
            // The daemon's SIGHUP.
            std::fs::write(&file, as_text(&edits)).unwrap();
            let shared = Mutex::new(state);
            let e = reload(&shared, &file).unwrap_err();
            assert_eq!(e.problems, std::slice::from_ref(&change));
            state = shared.into_inner().unwrap();
            // A data plane asked to apply it anyway refuses it too.
            let next = rules::load_file(&file).unwrap();
            let e = dataplane.apply(&next).unwrap_err();
            assert_eq!(e.reason, config);
            assert_eq!(e.generation, 1);
        }
        assert_eq!(views(&mut state), before);
        assert_eq!(dataplane.current().generation(), 1);
        assert_eq!(dataplane.applies(), 1);

        // At every limit at once, it goes through.
        let c = state
            .edit(
                &[
                    service_add("a", "198.18.100.10", 81),
                    service_add("b", "198.18.100.11", 80),
                    backend_add("198.18.1.13"),
                    backend_add("198.18.1.14"),
                ],
                false,
            )
            .unwrap();
        assert!(c.applied && c.warnings.is_empty());
        assert_eq!(dataplane.current().generation(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refused_changes_are_counted_by_source_and_reason_and_dry_runs_are_not() {
        use crate::metrics::ChangeValues;
        let (state, dataplane) = setup();
        let changes = Arc::new(ChangeCounters::default());
        let mut state = state.with_change_counters(Arc::clone(&changes));
        let dir = std::env::temp_dir().join(format!("fg-refused-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gw.toml");

        // Changes that go through, and refusals that are only dry runs.
        assert!(changed(state.handle(add("198.18.1.13", 1)).unwrap()).applied);
        assert!(state.edit(&[backend_add("198.18.1.13")], true).is_err());
        let restart = format!("[flows]\nudp_timeout = 5\n{RULES}");
        assert!(state.apply_text(&restart, "gw.toml", true).is_err());
        assert_eq!(changes.values(), ChangeValues::default());

        let refused = [
            (state.handle(add("198.18.1.13", 1)), ErrorCode::Exists),
            (state.handle(add("198.18.1.14", 10_001)), ErrorCode::Invalid),
            (
                state.handle(Request::BackendDel(BackendKey {
                    service: "nope".into(),
                    address: "198.18.1.11".into(),
                    port: 8080,
                })),
                ErrorCode::NotFound,
            ),
            (
                state
                    .apply_text(&restart, "gw.toml", false)
                    .map(Reply::Changed),
                ErrorCode::RestartRequired,
            ),
            (
                state
                    .apply_text("[[services]]\nname = 1\n", "x", false)
                    .map(Reply::Changed),
                ErrorCode::Invalid,
            ),
        ];
        for (result, code) in refused {
            assert_eq!(result.unwrap_err().code, code);
        }
        dataplane.fail_next_apply("out of memory");
        let e = state.handle(add("198.18.1.14", 1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ApplyFailed);
        // SIGHUP: a file that is not there, then one that is invalid.
        let shared = Mutex::new(state);
        assert_eq!(reload(&shared, &file).unwrap_err().code, ErrorCode::Io);
        std::fs::write(&file, "[[services]]\nname = 1\n").unwrap();
        assert_eq!(reload(&shared, &file).unwrap_err().code, ErrorCode::Invalid);

        let v = changes.values();
        let expected = [
            (ChangeSource::Edit, RefusalReason::Exists, 1),
            (ChangeSource::Edit, RefusalReason::Invalid, 1),
            (ChangeSource::Edit, RefusalReason::NotFound, 1),
            (ChangeSource::Edit, RefusalReason::ApplyFailed, 1),
            (ChangeSource::Apply, RefusalReason::RestartRequired, 1),
            (ChangeSource::Apply, RefusalReason::Invalid, 1),
            (ChangeSource::Reload, RefusalReason::Io, 1),
            (ChangeSource::Reload, RefusalReason::Invalid, 1),
        ];
        for (source, reason, n) in expected {
            assert_eq!(v.refused(source, reason), n, "{source:?} {reason:?}");
        }
        assert_eq!(v.refused.iter().flatten().sum::<u64>(), 8, "nothing else");
        // The rules are the ones of the one change that went through.
        assert_eq!(dataplane.current().generation(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_name_unknown_services() {
        let (mut state, _) = setup();
        for request in [
            Request::BackendList(ServiceName {
                service: "nope".into(),
            }),
            Request::Flows(FlowsQuery {
                service: Some("nope".into()),
                limit: None,
            }),
        ] {
            let e = state.handle(request).unwrap_err();
            assert_eq!(
                (e.code, e.message.as_str()),
                (ErrorCode::NotFound, "unknown service \"nope\"")
            );
        }
        let Reply::Backends(b) = state
            .handle(Request::BackendList(ServiceName {
                service: "web".into(),
            }))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(b.backends.len(), 2);
    }

    #[test]
    fn a_drain_sets_the_shared_flag_survives_a_reload_and_changes_no_rule() {
        let (state, dataplane) = setup();
        let flag = state.drain_flag();
        let state = Mutex::new(state);
        let ask = |request: Request| handle(&state, request).unwrap();
        let drain_reply = |reply: Reply| match reply {
            Reply::Drain(d) => (d.drained, d.changed),
            other => panic!("not a drain reply: {other:?}"),
        };
        let status_drained = || match ask(Request::Status {}) {
            Reply::Status(s) => s.drained,
            other => panic!("not a status: {other:?}"),
        };
        assert!(!status_drained());
        assert_eq!(drain_reply(ask(Request::FleetDrain {})), (true, true));
        assert!(flag.load(Ordering::Relaxed), "the offer sees the drain");
        assert!(status_drained());
        assert_eq!(drain_reply(ask(Request::FleetDrain {})), (true, false));
        assert_eq!(dataplane.current().generation(), 1, "no rule changed");

        // A reload changes the rules, not the drain.
        let dir = std::env::temp_dir().join(format!("fg-drain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(&path, RULES.replace("port = 8080", "port = 9090")).unwrap();
        let reloaded = reload(&state, &path);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(reloaded.unwrap().applied);
        assert!(status_drained(), "a reload keeps the drain");
        assert!(flag.load(Ordering::Relaxed));

        assert_eq!(drain_reply(ask(Request::FleetUndrain {})), (false, true));
        assert!(!flag.load(Ordering::Relaxed));
        assert!(!status_drained());
        assert_eq!(drain_reply(ask(Request::FleetUndrain {})), (false, false));
    }

    #[test]
    fn reload_rereads_the_file_and_keeps_the_old_rules_when_it_is_bad() {
        let (state, dataplane) = setup();
        let state = Mutex::new(state);
        let dir = std::env::temp_dir().join(format!("fg-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(&path, RULES.replace("port = 8080", "port = 9090")).unwrap();
        let c = reload(&state, &path).unwrap();
        assert_eq!(
            (c.diff.backends_added.len(), c.diff.backends_removed.len()),
            (2, 2)
        );
        assert_eq!(dataplane.current().generation(), 2);

        std::fs::write(&path, "[[services]]\nname = 1\n").unwrap();
        let e = reload(&state, &path).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(
            e.message.starts_with(&format!("{}:2:8:", path.display())),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
        let e = reload(&state, &path).unwrap_err();
        assert_eq!(e.code, ErrorCode::Io);
        assert_eq!(dataplane.current().generation(), 2);
        assert_eq!(
            state.lock().unwrap().config().services[0].backends[0].port,
            9090
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn backend_edit(weight: Option<u32>, zone: Option<&str>) -> Edit {
        Edit::BackendEdit(flowgate_api::BackendEdit {
            service: "web".into(),
            address: "198.18.1.11".into(),
            port: 8080,
            weight,
            zone: zone.map(Into::into),
            set: None,
            group: None,
            health: Default::default(),
            heartbeat_ttl: None,
        })
    }

    fn edits_since_load(state: &mut ControlState) -> u64 {
        match state.handle(Request::Status {}).unwrap() {
            Reply::Status(status) => status.edits_since_load,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_edit_that_changes_nothing_is_not_counted_and_publishes_nothing() {
        let (mut state, dataplane) = setup();
        // The weight it has, a drain undone in the same batch, labels it
        // has: nothing changes.
        let drain = Edit::BackendDrain(BackendKey {
            service: "web".into(),
            address: "198.18.1.11".into(),
            port: 8080,
        });
        for edits in [
            vec![backend_edit(Some(1), None)],
            vec![drain, backend_edit(Some(1), None)],
            vec![backend_edit(None, Some(""))],
        ] {
            let c = state.edit(&edits, false).unwrap();
            assert!(!c.applied && c.diff.is_empty(), "{edits:?}: {c:?}");
            assert_eq!(c.generation, 1);
            assert_eq!(edits_since_load(&mut state), 0, "{edits:?}");
        }
        assert_eq!(dataplane.applies(), 1, "nothing was published");
        // A change is counted, once; the same labels again are not.
        for (edit, applied, count) in [
            (backend_edit(None, Some("a")), true, 1),
            (backend_edit(None, Some("a")), false, 1),
            (backend_edit(Some(2), Some("a")), true, 2),
            (backend_edit(Some(2), None), false, 2),
        ] {
            let c = changed(
                state
                    .handle(match edit {
                        Edit::BackendEdit(e) => Request::BackendEdit(e),
                        _ => unreachable!(),
                    })
                    .unwrap(),
            );
            assert_eq!(c.applied, applied, "{c:?}");
            assert_eq!(edits_since_load(&mut state), count);
        }
        assert_eq!(dataplane.applies(), 3);
        // A whole config starts the count again, even one that changes
        // nothing.
        let text = RULES.replace(
            "port = 8080\n[[services.backends]]",
            "port = 8080\nweight = 2\nzone = \"a\"\n[[services.backends]]",
        );
        let c = state.apply_text(&text, "gw.toml", false).unwrap();
        assert!(!c.applied && c.diff.is_empty(), "{c:?}");
        assert_eq!(edits_since_load(&mut state), 0);
    }

    /// A data plane whose applies stop at a gate: each says it has
    /// started, then waits until the test lets it go on.
    struct GatedDataplane {
        inner: MemoryDataplane,
        started: Mutex<std::sync::mpsc::Sender<()>>,
        go: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Dataplane for GatedDataplane {
        fn apply(
            &self,
            config: &Config,
        ) -> Result<super::super::Applied, super::super::ApplyError> {
            self.started.lock().unwrap().send(()).unwrap();
            let go = self.go.lock().unwrap();
            go.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
            self.inner.apply(config)
        }
        fn status(&self) -> flowgate_api::StatusReport {
            self.inner.status()
        }
        fn stats(&self) -> flowgate_api::StatsReport {
            self.inner.stats()
        }
        fn flows(&self, service: Option<&str>, limit: usize) -> Vec<flowgate_api::FlowEntry> {
            self.inner.flows(service, limit)
        }
        fn generation(&self) -> u64 {
            self.inner.generation()
        }
    }

    #[test]
    fn reads_and_dry_runs_do_not_wait_for_a_change_and_changes_take_turns() {
        use std::sync::mpsc::{channel, RecvTimeoutError};
        use std::time::Duration;
        let config = rules::load_str(RULES, "gw.toml").unwrap();
        let (started_tx, started) = channel();
        let (go, go_rx) = channel();
        let dataplane = Arc::new(GatedDataplane {
            inner: MemoryDataplane::with_config(&config),
            started: Mutex::new(started_tx),
            go: Mutex::new(go_rx),
        });
        let shared = Arc::new(Mutex::new(ControlState::new(
            config,
            "gw.toml",
            dataplane.clone(),
        )));
        let change = |address: &str| {
            let shared = Arc::clone(&shared);
            let request = add(address, 1);
            std::thread::spawn(move || changed(handle(&shared, request).unwrap()))
        };
        // The first change is in the data plane, and stays there.
        let first = change("198.18.1.13");
        started.recv_timeout(Duration::from_secs(10)).unwrap();

        // Every read answers, from the rules that run.
        let Reply::Status(status) = handle(&shared, Request::Status {}).unwrap() else {
            panic!()
        };
        assert_eq!((status.dataplane.generation, status.backends), (1, 2));
        for read in [
            Request::Stats {},
            Request::ServiceList {},
            Request::BackendList(ServiceName {
                service: "web".into(),
            }),
            Request::Flows(FlowsQuery::default()),
        ] {
            handle(&shared, read).unwrap();
        }
        // So does a dry run, on the rules that run.
        let dry = Request::Batch(Batch {
            edits: vec![backend_add("198.18.1.14")],
            dry_run: true,
        });
        let c = changed(handle(&shared, dry).unwrap());
        assert_eq!((c.generation, c.diff.backends_added.len()), (1, 1));

        // A second change waits for its turn: it does not reach the data
        // plane while the first is there...
        let second = change("198.18.1.14");
        assert_eq!(
            started.recv_timeout(Duration::from_millis(300)),
            Err(RecvTimeoutError::Timeout)
        );
        go.send(()).unwrap();
        let c = first.join().unwrap();
        assert_eq!((c.generation, c.diff.backends_added.len()), (2, 1));
        // ... and is then made on the first one's result.
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        go.send(()).unwrap();
        let c = second.join().unwrap();
        assert_eq!((c.generation, c.diff.backends_added.len()), (3, 1));
        assert_eq!(c.diff.backends_added[0].address.to_string(), "198.18.1.14");
        let config = lock(&shared).config();
        let addresses: Vec<String> = config.services[0]
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        assert_eq!(
            addresses,
            ["198.18.1.11", "198.18.1.12", "198.18.1.13", "198.18.1.14"]
        );
        let Reply::Status(status) = handle(&shared, Request::Status {}).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                status.dataplane.generation,
                status.backends,
                status.edits_since_load
            ),
            (3, 4, 2)
        );
    }

    /// Rules of one service with four named backends and `paths` paths
    /// to the first two.
    fn path_rules(paths: u32) -> Config {
        let mut text = String::from(
            "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\nmaglev_table_size = 251\n",
        );
        for k in 1..=4 {
            text += &format!(
                "[[services.backends]]\naddress = \"198.18.1.{k}\"\nport = 8080\nname = \"w{k}\"\n"
            );
        }
        for i in 0..paths {
            text += &format!(
                "[[services.paths]]\nclient = \"198.18.{}.{}\"\nbackends = [\"w{}\"]\n",
                64 + i / 256,
                i % 256,
                1 + i % 2
            );
        }
        rules::load_str(&text, "paths.toml").unwrap()
    }

    /// The data plane's path table holds exactly `config`'s paths.
    fn assert_table_is(dataplane: &MemoryDataplane, config: &Config) {
        let snapshot = dataplane.current();
        let mut reader = dataplane.path_reader();
        let view = reader.load();
        let mut count = 0;
        for service in &config.services {
            let vip = crate::wire::addr_to_bytes(service.vip);
            let (id, _) = snapshot
                .lookup_service(service.protocol.number(), &vip, service.port)
                .unwrap();
            for path in &service.routing.paths {
                let prefix = crate::table::subset::table_prefix(path.client).unwrap();
                let target = view.get(id, prefix).expect("every path is in the table");
                let names = snapshot.backend_names().lock().unwrap();
                let held: Vec<&str> = target
                    .backends()
                    .into_iter()
                    .map(|r| names.name(r).unwrap())
                    .collect();
                assert_eq!(held, path.backends, "{}", path.client);
                count += 1;
            }
        }
        assert_eq!(view.len(), count, "and no other path");
    }

    #[test]
    fn path_verbs_edit_the_path_table_path_by_path_all_or_nothing() {
        use flowgate_api::{PathKey, PathSpec};
        let first = path_rules(1000);
        let dataplane = Arc::new(MemoryDataplane::with_config(&first));
        let mut state = ControlState::new(first.clone(), "paths.toml", dataplane.clone());
        let generation = dataplane.generation();
        let add = |client: &str, backend: &str| {
            Edit::PathAdd(PathSpec {
                service: "web".into(),
                client: client.into(),
                backends: vec![backend.into()],
            })
        };
        let del = |client: &str| {
            Edit::PathDel(PathKey {
                service: "web".into(),
                client: client.into(),
            })
        };

        // A dry run reports the change and makes none.
        let dry = state.edit(&[add("198.18.7.7", "w1")], true).unwrap();
        assert!(dry.dry_run && !dry.applied);
        assert_eq!(
            dry.diff.services_changed[0].to,
            "1001 paths (1 added, 0 removed, 0 changed)"
        );
        assert_eq!(state.config(), Arc::new(first.clone()));
        assert_table_is(&dataplane, &first);

        // Added, replaced and removed in one batch: one diff, the table
        // edited, no snapshot built (every name is held by a path).
        let report = state
            .edit(
                &[
                    add("198.18.7.7", "w1"),
                    add("198.18.64.3", "w1"),
                    del("198.18.64.4"),
                ],
                false,
            )
            .unwrap();
        assert!(report.applied);
        assert_eq!(report.generation, generation);
        assert_eq!(
            report.diff.services_changed[0].to,
            "1000 paths (1 added, 1 removed, 1 changed)"
        );
        let edited = state.config();
        assert_eq!(edited.services[0].routing.paths.len(), 1000);
        assert_table_is(&dataplane, &edited);

        // A backend no path named: a snapshot is built so that it resolves.
        let report = state.edit(&[add("198.18.7.8", "w3")], false).unwrap();
        assert_eq!(report.generation, generation + 1);
        assert_table_is(&dataplane, &state.config());

        // Refusals read as the whole road words them, and change nothing.
        let before = state.config();
        let unknown = state.edit(&[add("198.18.7.9", "nope")], false).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::Invalid);
        assert_eq!(
            unknown.message,
            "path of client 198.18.7.9/32 names unknown backend \"nope\" of service \"web\" \
             (a backend's name, or ADDR:PORT for one without)"
        );
        let gone = state.edit(&[del("198.18.9.9")], false).unwrap_err();
        assert_eq!(gone.code, ErrorCode::NotFound);
        assert_eq!(
            gone.message,
            "service \"web\" has no path for 198.18.9.9/32"
        );
        let batch = state
            .edit(&[add("198.18.7.10", "w1"), add("198.18.7.11", "w9")], false)
            .unwrap_err();
        assert_eq!(
            batch.message,
            "path of client 198.18.7.11/32 names unknown backend \"w9\" of service \"web\" \
             (a backend's name, or ADDR:PORT for one without)"
        );
        assert_eq!(state.config(), before);
        assert_table_is(&dataplane, &before);

        // The running rules, loaded afresh, make the same table; and a
        // reload of the file's rules brings the file's table back.
        let fresh = MemoryDataplane::with_config(&state.config());
        assert_table_is(&fresh, &state.config());
        let report = state.apply_config(&first, "paths.toml").unwrap();
        assert!(report.applied);
        assert_table_is(&dataplane, &first);
    }
}
