//! The control side of backend health: what ties the prober, the
//! heartbeats and the one liveness table to the running rules.
//!
//! A [`HealthMonitor`] is told each published generation
//! ([`HealthMonitor::sync`]). From the rules it makes a plan: the check
//! each backend gets (one prober target per distinct address and check
//! definition, so a backend shared by services is probed once), its
//! heartbeat TTL, and the endpoint id the snapshot gave it. It hands the
//! targets to the [`Prober`] and brings each endpoint's liveness word in
//! line with them (a TTL given is armed: one TTL for the first heartbeat;
//! a TTL taken away is disarmed; a check taken away leaves the backend
//! up).
//!
//! Its thread (`fg-health-mon`, off the worker cores like the control
//! thread it is started from) takes the prober's transitions: it writes the
//! words of every endpoint the target stands for — the workers stop giving
//! a down backend new flows from their next poll — logs each change, and
//! then asks for one rebuild, so that the services' tables spread their
//! flows over the backends alive (with Maglev only the dead backend's
//! flows move). It also watches the heartbeat deadlines, which the workers
//! enforce on their own, to log each expiry and rebuild after it.
//! Heartbeats, from the control API or the network endpoint, move a
//! deadline; one that brings an expired backend back asks for a rebuild
//! too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use flowgate_api::{BackendHealth, BackendState, CheckReport, HealthSummary, MAX_NOT_UP};

use crate::fleet::health::Reported;
use crate::fleet::layout::ReportedBackend;
use crate::health::heartbeat::{Heartbeat, HeartbeatToken, HeartbeatTokens, UnknownBackend};
use crate::health::{
    Check, Health, HistogramSample, InitialState, Prober, ProberError, ProberOptions, Target,
    TargetStatus, Transition,
};
use crate::liveness::{Liveness, Status, Word};
use crate::rules::{check_of, heartbeat_ttl_of, settings_of, Config, HealthSource, Service};
use crate::table::Snapshot;
use crate::wire::bytes_to_addr;

/// How often the thread looks at the heartbeat deadlines.
const DEADLINE_WATCH: Duration = Duration::from_millis(50);

/// A backend of a service: the service's name and the backend's address.
pub type BackendRef = (Arc<str>, SocketAddr);

/// What asks for the service tables to be built again over the backends
/// alive (the daemon: its gateway's rebuild).
pub type Rebuild = Box<dyn Fn() + Send>;

/// One backend's part of the plan.
#[derive(Clone, Debug)]
struct Planned {
    /// Its endpoint id in the snapshot the plan was made for.
    id: u32,
    /// The target that checks it, if it is checked.
    target: Option<Arc<Target>>,
    /// Its heartbeat TTL.
    ttl: Option<Duration>,
    /// Its weight.
    weight: u32,
    /// Its liveness is reported in etcd (`[services.health] source =
    /// "etcd"`): alive while the reports name it, never checked.
    reported: bool,
    /// Its name, by which a report may name it.
    name: Option<Arc<str>>,
}

impl Planned {
    /// Whether `reports` say backend `key` is up.
    fn reported_up(&self, key: &BackendRef, reports: &Reported) -> bool {
        let service = key.0.to_string();
        reports.contains(&(service.clone(), ReportedBackend::Address(key.1)))
            || self
                .name
                .as_ref()
                .is_some_and(|n| reports.contains(&(service, ReportedBackend::Name(n.to_string()))))
    }
}

/// The backends of one generation, and the targets that check them.
///
/// Backends are grouped by service, each group shared: a change of a few
/// services copies the others' groups by pointer, so patching the plan
/// costs what the change names (plus a pointer per service), not what
/// every backend holds.
#[derive(Clone, Debug, Default)]
struct Plan {
    backends: PlanBackends,
    /// Each target and the backends it stands for.
    targets: HashMap<Arc<Target>, Vec<BackendRef>>,
    /// The backends with a heartbeat TTL, which the thread watches.
    with_ttl: Vec<BackendRef>,
}

/// Each service's backends, by address.
type PlanBackends = hashbrown::HashMap<Arc<str>, Arc<hashbrown::HashMap<SocketAddr, Planned>>>;

impl Plan {
    /// The part of backend `key`.
    fn get(&self, key: &BackendRef) -> Option<&Planned> {
        self.backends.get(&*key.0)?.get(&key.1)
    }

    /// Whether backend `key` is planned.
    fn contains(&self, key: &BackendRef) -> bool {
        self.get(key).is_some()
    }

    /// Every backend with its part.
    fn iter(&self) -> impl Iterator<Item = (BackendRef, &Planned)> {
        self.backends.iter().flat_map(|(name, backends)| {
            backends
                .iter()
                .map(move |(address, planned)| ((Arc::clone(name), *address), planned))
        })
    }

    /// The backends of service `name`, with their parts.
    fn of_service<'a>(&'a self, name: &str) -> impl Iterator<Item = (BackendRef, &'a Planned)> {
        self.backends
            .get_key_value(name)
            .into_iter()
            .flat_map(|(name, backends)| {
                backends
                    .iter()
                    .map(move |(address, planned)| ((Arc::clone(name), *address), planned))
            })
    }

    /// The backends of the services in `only` (all when `None`).
    fn touched<'a>(
        &'a self,
        only: Option<&'a HashSet<&'a str>>,
    ) -> Box<dyn Iterator<Item = (BackendRef, &'a Planned)> + 'a> {
        match only {
            None => Box::new(self.iter()),
            Some(names) => Box::new(names.iter().flat_map(|name| self.of_service(name))),
        }
    }

    /// Plans backend `key`.
    fn insert(&mut self, key: BackendRef, planned: Planned) {
        let (name, address) = key;
        Arc::make_mut(self.backends.entry(name).or_default()).insert(address, planned);
    }

    /// How many backends are planned.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.backends.values().map(|b| b.len()).sum()
    }
}

/// The backends counted by state, kept for `status`: counting a large
/// fleet at every request would make `status` as slow as the fleet is
/// large.
#[derive(Debug, Default)]
struct Counts {
    up: usize,
    down: usize,
    draining: usize,
    expired: usize,
    checked: usize,
    /// The first [`MAX_NOT_UP`] down or expired, in service order.
    not_up: Vec<(BackendRef, u32)>,
}

/// Transitions and the heartbeat listener's and API's counts, per backend
/// (kept across generations while the backend runs).
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// State changes (check transitions, expiries, readmissions by
    /// heartbeat).
    pub transitions: AtomicU64,
    /// Heartbeats taken.
    pub heartbeats: AtomicU64,
}

/// One backend's health for the metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealthSample {
    /// Its service.
    pub service: Arc<str>,
    /// Its address.
    pub backend: SocketAddr,
    /// Its state now.
    pub status: Status,
    /// Its state changes so far.
    pub transitions: u64,
    /// Its check's latencies (none when it is not checked).
    pub latency: Option<HistogramSample>,
}

/// The control side of backend health (see the module's documentation).
pub struct HealthMonitor {
    liveness: Arc<Liveness>,
    options: ProberOptions,
    /// Started with the first target.
    prober: Mutex<Option<Prober>>,
    plan: ArcSwap<Plan>,
    /// Held by whoever writes health into the words (a sync, the thread
    /// taking a transition).
    writing: Mutex<()>,
    counts: ArcSwap<Counts>,
    tokens: Arc<HeartbeatTokens>,
    counters: Mutex<HashMap<BackendRef, Arc<BackendCounters>>>,
    /// Since when each backend is in its state, as this side saw it.
    since: Mutex<HashMap<BackendRef, (Status, Instant)>>,
    /// The backends reported alive in etcd, as last read.
    reports: Mutex<Arc<Reported>>,
    rebuild_requests: Sender<()>,
    rebuild_wanted: Receiver<()>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor").finish_non_exhaustive()
    }
}

impl HealthMonitor {
    /// A monitor of the endpoints of `liveness` (the table every snapshot
    /// shares), whose prober starts, with `options`, when the rules first
    /// check a backend.
    pub fn new(liveness: Arc<Liveness>, options: ProberOptions) -> Arc<HealthMonitor> {
        let (rebuild_requests, rebuild_wanted) = channel::bounded(1);
        Arc::new(HealthMonitor {
            liveness,
            options,
            prober: Mutex::new(None),
            plan: ArcSwap::from_pointee(Plan::default()),
            writing: Mutex::new(()),
            counts: ArcSwap::from_pointee(Counts::default()),
            tokens: Arc::new(HeartbeatTokens::new()),
            counters: Mutex::new(HashMap::new()),
            since: Mutex::new(HashMap::new()),
            reports: Mutex::new(Arc::new(Reported::new())),
            rebuild_requests,
            rebuild_wanted,
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::new(None),
        })
    }

    /// The liveness table.
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// The services' heartbeat tokens, for the network endpoint.
    pub fn tokens(&self) -> Arc<HeartbeatTokens> {
        Arc::clone(&self.tokens)
    }

    /// Starts the thread that takes transitions and watches deadlines;
    /// `rebuild` builds the tables again over the backends alive.
    pub fn start(self: &Arc<Self>, rebuild: Rebuild) -> std::io::Result<()> {
        let monitor = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("fg-health-mon".into())
            .spawn(move || monitor.run(&rebuild))?;
        *lock(&self.thread) = Some(thread);
        Ok(())
    }

    /// Stops the thread and the prober.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        lock(&self.prober).take();
    }

    /// Brings the checks, TTLs and liveness words in line with `config`,
    /// compiled into `snapshot` (just published). Returns whether a word
    /// changed whether its endpoint is alive: the tables should be built
    /// again.
    pub fn sync(&self, config: &Config, snapshot: &Snapshot) -> Result<bool, ProberError> {
        self.install(config, plan(config, snapshot), None)
    }

    /// [`HealthMonitor::sync`] after a change that touched only the
    /// services `changed` names (added, replaced or removed) since the
    /// last sync: the plan is patched for their backends alone, and only
    /// their words are brought in line.
    pub fn sync_changed(
        &self,
        config: &Config,
        snapshot: &Snapshot,
        changed: &[String],
    ) -> Result<bool, ProberError> {
        let names: HashSet<&str> = changed.iter().map(String::as_str).collect();
        let plan = patched_plan(&self.plan.load(), config, snapshot, &names);
        self.install(config, plan, Some(&names))
    }

    /// Makes `plan` the running one and brings the words of its backends
    /// (of those of the services in `only`, when given) in line with it.
    fn install(
        &self,
        config: &Config,
        plan: Plan,
        only: Option<&HashSet<&str>>,
    ) -> Result<bool, ProberError> {
        let plan = Arc::new(plan);
        // Words are written by one writer at a time: a transition taken
        // while this reads the prober's states is either seen here or
        // written after this, never undone by it.
        let _writing = lock(&self.writing);
        let old_plan: Arc<Plan>;
        let statuses = {
            let mut prober = lock(&self.prober);
            if prober.is_none() && !plan.targets.is_empty() {
                *prober = Some(Prober::start(self.options.clone())?);
            }
            // The plan goes first, so that a transition of a new target
            // finds its backends.
            let old = self.plan.swap(Arc::clone(&plan));
            old_plan = Arc::clone(&old);
            if let Some(prober) = prober.as_ref() {
                if old.targets.len() != plan.targets.len()
                    || plan.targets.keys().any(|t| !old.targets.contains_key(t))
                {
                    prober.set_targets(
                        plan.targets
                            .keys()
                            .map(|t| (**t).clone())
                            .collect::<Vec<_>>(),
                    )?;
                }
                prober.statuses()
            } else {
                Vec::new()
            }
        };
        let health: HashMap<&Target, Health> =
            statuses.iter().map(|s| (&*s.target, s.health)).collect();
        let reports = Arc::clone(&lock(&self.reports));
        let now = Instant::now();
        let now_ns = self.liveness.nanos(now);
        let mut changed = false;
        for (key, planned) in plan.touched(only) {
            let before = self.liveness.word(planned.id);
            if planned.reported {
                // Its service's tables do not depend on its liveness (they
                // are built over every weighted backend): no rebuild.
                let _ = self
                    .liveness
                    .set_up(planned.id, planned.reported_up(&key, &reports));
                continue;
            }
            let up = match &planned.target {
                Some(t) => match health.get(&**t) {
                    Some(h) => *h == Health::Up,
                    None => self.options.initial_state == InitialState::Up,
                },
                None => true,
            };
            let mut word = before.with_up(up);
            match (planned.ttl, before.has_ttl()) {
                (Some(ttl), false) => {
                    word = word.with_deadline(Some(now_ns.saturating_add(nanos(ttl))));
                }
                (None, true) => word = word.with_deadline(None),
                _ => {}
            }
            if word != before {
                // Only this thread and the transition thread write health;
                // a heartbeat moving the deadline meanwhile is kept.
                let _ = self.liveness.set_up(planned.id, up);
                if word.has_ttl() != before.has_ttl() {
                    let _ = self.liveness.set_deadline(planned.id, word.deadline_ns());
                }
                changed |= word.is_alive(now_ns) != before.is_alive(now_ns);
            }
        }
        self.tokens.replace(config.services.iter().filter_map(|s| {
            let token = HeartbeatToken::new(s.health.heartbeat_token.as_ref()?.expose()).ok()?;
            Some((Arc::<str>::from(s.name.as_str()), token))
        }));
        {
            let mut counters = lock(&self.counters);
            let mut since = lock(&self.since);
            match only {
                None => {
                    counters.retain(|k, _| plan.contains(k));
                    since.retain(|k, _| plan.contains(k));
                }
                // Counters are kept for planned backends only: those of
                // the changed services were in the plan before.
                Some(_) => {
                    for (key, _) in old_plan.touched(only) {
                        if !plan.contains(&key) {
                            counters.remove(&key);
                            since.remove(&key);
                        }
                    }
                }
            }
            for (key, planned) in plan.touched(only) {
                counters.entry(key.clone()).or_default();
                // A state the rules made (a drain, a check or TTL taken
                // away) starts now; the watch logs only what happens
                // between changes of the rules.
                let status = self.liveness.status(planned.id, now_ns, planned.weight);
                let entry = since.entry(key.clone()).or_insert((status, now));
                if entry.0 != status {
                    *entry = (status, now);
                }
            }
        }
        drop(_writing);
        self.recount();
        Ok(changed)
    }

    /// Sets the liveness of every backend whose service takes it from etcd
    /// (`[services.health] source = "etcd"`) from `reports`, the backends
    /// the health keys report alive: alive iff named there. The words are
    /// written as a check's verdict writes them, and read by the workers'
    /// next placement; no table is built again (those services' tables
    /// hold every weighted backend, and a dead pick moves to the next
    /// alive in the table, the same on every gateway). Returns how many
    /// backends changed.
    pub fn set_reported(&self, reports: Reported) -> usize {
        let reports = Arc::new(reports);
        let _writing = lock(&self.writing);
        *lock(&self.reports) = Arc::clone(&reports);
        let plan = self.plan.load();
        let mut changed = 0;
        for (key, planned) in plan.iter().filter(|(_, p)| p.reported) {
            let up = planned.reported_up(&key, &reports);
            let Ok(before) = self.liveness.set_up(planned.id, up) else {
                continue;
            };
            if before.is_up() != up {
                changed += 1;
                self.seen(&key, planned);
                tracing::info!(
                    service = %key.0,
                    backend = %key.1,
                    "backend {}",
                    if up { "up: reported in etcd" } else { "down: no longer reported in etcd" }
                );
            }
        }
        drop(_writing);
        if changed > 0 {
            self.recount();
        }
        changed
    }

    /// Counts the backends by state again.
    fn recount(&self) {
        let plan = self.plan.load();
        let now_ns = self.liveness.now_ns();
        let mut counts = Counts {
            checked: plan.targets.len(),
            ..Counts::default()
        };
        for (key, planned) in plan.iter() {
            let status = self.liveness.status(planned.id, now_ns, planned.weight);
            match status {
                Status::Up => counts.up += 1,
                Status::Down => counts.down += 1,
                Status::Draining => counts.draining += 1,
                Status::Expired => counts.expired += 1,
            }
            if matches!(status, Status::Down | Status::Expired) {
                counts.not_up.push((key.clone(), planned.weight));
            }
        }
        counts.not_up.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        counts.not_up.truncate(MAX_NOT_UP);
        self.counts.store(Arc::new(counts));
    }

    /// A heartbeat of `backend` of `service`, whose TTL is `ttl`: it stays
    /// alive until `ttl` from now. Returns how long until it expires; an
    /// error when the running rules have no such backend.
    pub fn heartbeat(
        &self,
        service: &str,
        backend: SocketAddr,
        ttl: Duration,
    ) -> Result<Duration, String> {
        let plan = self.plan.load();
        let key: BackendRef = (Arc::from(service), backend);
        let planned = plan
            .get(&key)
            .ok_or_else(|| format!("service {service:?} has no backend {backend} running"))?;
        self.beat(&key, planned, Instant::now(), ttl);
        let deadline = self.liveness.deadline(planned.id);
        Ok(deadline.map_or(ttl, |d| d.saturating_duration_since(Instant::now())))
    }

    /// A heartbeat from the network endpoint: for a backend with a TTL in
    /// the running rules.
    pub fn network_heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), UnknownBackend> {
        let plan = self.plan.load();
        let key: BackendRef = (Arc::clone(&heartbeat.service), heartbeat.backend);
        let planned = plan.get(&key).ok_or(UnknownBackend)?;
        let ttl = planned.ttl.ok_or(UnknownBackend)?;
        self.beat(&key, planned, heartbeat.at, ttl);
        Ok(())
    }

    fn beat(&self, key: &BackendRef, planned: &Planned, at: Instant, ttl: Duration) {
        let now_ns = self.liveness.now_ns();
        let was_alive = self.liveness.is_alive(planned.id, now_ns);
        let _ = self.liveness.heartbeat(planned.id, at, ttl);
        if let Some(c) = lock(&self.counters).get(key) {
            c.heartbeats.fetch_add(1, Ordering::Relaxed);
        }
        if !was_alive && self.liveness.is_alive(planned.id, now_ns) {
            // Readmitted: the watch logs it; the tables take it back.
            let _ = self.rebuild_requests.try_send(());
        }
    }

    /// The health of each backend of `service`, in its order.
    pub fn backend_health(&self, service: &Service) -> Vec<BackendHealth> {
        let plan = self.plan.load();
        let statuses = self.statuses();
        let name: Arc<str> = Arc::from(service.name.as_str());
        service
            .backends
            .iter()
            .map(|b| {
                let key = (Arc::clone(&name), b.socket_addr());
                self.view(&plan, &statuses, &key, b.weight)
            })
            .collect()
    }

    /// Backends by state, and those not up, as of the last change seen
    /// (a sync, a transition, an expiry). `config` is the running rules,
    /// which the last sync was given.
    pub fn summary(&self, config: &Config) -> HealthSummary {
        let _ = config;
        let counts = self.counts.load();
        let plan = self.plan.load();
        let statuses = if counts.not_up.is_empty() {
            HashMap::new()
        } else {
            self.statuses()
        };
        HealthSummary {
            up: counts.up,
            down: counts.down,
            draining: counts.draining,
            expired: counts.expired,
            checked: counts.checked,
            not_up: counts
                .not_up
                .iter()
                .map(|(key, weight)| BackendState {
                    service: key.0.to_string(),
                    address: key.1.ip(),
                    port: key.1.port(),
                    health: self.view(&plan, &statuses, key, *weight),
                })
                .collect(),
        }
    }

    /// Every backend's state, transitions and check latencies, for the
    /// metrics endpoint (in service, then address order).
    pub fn samples(&self) -> Vec<BackendHealthSample> {
        let plan = self.plan.load();
        let statuses = self.statuses();
        let counters = lock(&self.counters);
        let now_ns = self.liveness.now_ns();
        let sorted: BTreeMap<BackendRef, &Planned> = plan.iter().collect();
        sorted
            .into_iter()
            .map(|(key, planned)| BackendHealthSample {
                service: Arc::clone(&key.0),
                backend: key.1,
                status: self.liveness.status(planned.id, now_ns, planned.weight),
                transitions: counters
                    .get(&key)
                    .map_or(0, |c| c.transitions.load(Ordering::Relaxed)),
                latency: planned
                    .target
                    .as_ref()
                    .and_then(|t| statuses.get(&**t))
                    .map(|s| s.latency),
            })
            .collect()
    }

    fn statuses(&self) -> HashMap<Target, TargetStatus> {
        lock(&self.prober)
            .as_ref()
            .map(|p| {
                p.statuses()
                    .into_iter()
                    .map(|s| ((*s.target).clone(), s))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn view(
        &self,
        plan: &Plan,
        statuses: &HashMap<Target, TargetStatus>,
        key: &BackendRef,
        weight: u32,
    ) -> BackendHealth {
        let Some(planned) = plan.get(key) else {
            return BackendHealth {
                state: "up".into(),
                ..BackendHealth::default()
            };
        };
        let now = Instant::now();
        let now_ns = self.liveness.nanos(now);
        let status = self.liveness.status(planned.id, now_ns, weight);
        let target_status = planned.target.as_ref().and_then(|t| statuses.get(&**t));
        let since = lock(&self.since)
            .get(key)
            .filter(|(s, _)| *s == status)
            .map(|(_, at)| *at);
        let last_check =
            target_status
                .and_then(|s| s.last_check)
                .map(|(result, latency, started)| CheckReport {
                    ok: result.is_ok(),
                    result: result.to_string(),
                    latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                    age_ms: millis(now.saturating_duration_since(started)),
                });
        let heartbeat_expires_in_ms = self.liveness.deadline(planned.id).map(|d| {
            if d >= now {
                i64::try_from(millis(d - now)).unwrap_or(i64::MAX)
            } else {
                -i64::try_from(millis(now - d)).unwrap_or(i64::MAX)
            }
        });
        BackendHealth {
            state: status.name().to_owned(),
            since_ms: since.map(|at| millis(now.saturating_duration_since(at))),
            check: planned
                .target
                .as_ref()
                .map(|t| format!("{} {}", t.check.kind().name(), t.address)),
            last_check,
            heartbeat_expires_in_ms,
        }
    }

    /// The thread: transitions as they come, deadlines every
    /// [`DEADLINE_WATCH`], a rebuild after anything changed.
    fn run(&self, rebuild: &Rebuild) {
        let transitions = lock(&self.prober).as_ref().map(Prober::transitions);
        let mut transitions = transitions;
        while !self.stop.load(Ordering::Relaxed) {
            if transitions.is_none() {
                transitions = lock(&self.prober).as_ref().map(Prober::transitions);
            }
            let mut changed = false;
            if let Some(rx) = &transitions {
                match rx.recv_timeout(DEADLINE_WATCH) {
                    Ok(t) => {
                        changed |= self.take(&t);
                        while let Ok(t) = rx.try_recv() {
                            changed |= self.take(&t);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => transitions = None,
                }
            } else {
                std::thread::sleep(DEADLINE_WATCH);
            }
            changed |= self.rebuild_wanted.try_recv().is_ok();
            changed |= self.watch_states();
            if changed {
                self.recount();
                rebuild();
            }
        }
    }

    /// Writes a transition into the words of the backends its target
    /// stands for. Returns whether any word changed.
    fn take(&self, t: &Transition) -> bool {
        let _writing = lock(&self.writing);
        let plan = self.plan.load();
        let Some(backends) = plan.targets.get(&t.target) else {
            return false;
        };
        let up = t.to == Health::Up;
        let mut changed = false;
        for key in backends {
            let Some(planned) = plan.get(key) else {
                continue;
            };
            if let Ok(before) = self.liveness.set_up(planned.id, up) {
                changed |= before.is_up() != up;
            }
            self.seen(key, planned);
            tracing::info!(
                service = %key.0,
                backend = %key.1,
                check = %t.target,
                from = %t.from,
                to = %t.to,
                result = %t.result,
                latency_us = u64::try_from(t.latency.as_micros()).unwrap_or(u64::MAX),
                "backend {}",
                if up { "up: readmitted" } else { "down: ejected" }
            );
        }
        changed
    }

    /// Looks at the state of every backend with a TTL: records and logs
    /// each change since the last look (an expiry, a readmission by
    /// heartbeat). Returns whether one changed whether a backend is
    /// alive.
    fn watch_states(&self) -> bool {
        let plan = self.plan.load();
        let mut changed = false;
        for key in &plan.with_ttl {
            let Some(planned) = plan.get(key) else {
                continue;
            };
            let Some((before, status)) = self.seen(key, planned) else {
                continue;
            };
            changed |= before.is_alive() != status.is_alive();
            if status == Status::Expired {
                tracing::warn!(service = %key.0, backend = %key.1, "backend expired: no heartbeat within its TTL");
            } else if before == Status::Expired {
                tracing::info!(service = %key.0, backend = %key.1, to = %status, "backend heartbeating again");
            }
        }
        changed
    }

    /// Records `key`'s state now; if it changed since last recorded, counts
    /// the transition and returns the states before and now.
    fn seen(&self, key: &BackendRef, planned: &Planned) -> Option<(Status, Status)> {
        let now = Instant::now();
        let status = self
            .liveness
            .status(planned.id, self.liveness.nanos(now), planned.weight);
        let mut since = lock(&self.since);
        let entry = since.entry(key.clone()).or_insert((status, now));
        if entry.0 == status {
            return None;
        }
        let before = entry.0;
        *entry = (status, now);
        drop(since);
        if let Some(c) = lock(&self.counters).get(key) {
            c.transitions.fetch_add(1, Ordering::Relaxed);
        }
        Some((before, status))
    }
}

/// The plan of `config`, compiled into `snapshot`.
fn plan(config: &Config, snapshot: &Snapshot) -> Plan {
    let mut ids: HashMap<(&str, SocketAddr), u32> = HashMap::new();
    for (_, service) in snapshot.services() {
        endpoint_ids(snapshot, service, &mut ids);
    }
    let mut plan = Plan::default();
    for service in &config.services {
        plan_service(config, service, &ids, &mut plan);
    }
    plan
}

/// `old`, the plan of the config before a change that touched only the
/// services in `changed`, made the plan of `config` (compiled into
/// `snapshot`): their backends taken out, and planned again from
/// `config`.
fn patched_plan(old: &Plan, config: &Config, snapshot: &Snapshot, changed: &HashSet<&str>) -> Plan {
    let mut plan = old.clone();
    for name in changed {
        plan.backends.remove(*name);
    }
    plan.with_ttl.retain(|key| !changed.contains(&*key.0));
    plan.targets.retain(|_, backends| {
        backends.retain(|key| !changed.contains(&*key.0));
        !backends.is_empty()
    });
    let services: Vec<&Service> = config
        .services
        .iter()
        .filter(|s| changed.contains(s.name.as_str()))
        .collect();
    let mut ids: HashMap<(&str, SocketAddr), u32> = HashMap::new();
    for service in &services {
        let compiled = snapshot.lookup_service(
            service.protocol.number(),
            &crate::wire::addr_to_bytes(service.vip),
            service.port,
        );
        if let Some((_, compiled)) = compiled.filter(|(_, c)| c.name() == service.name) {
            endpoint_ids(snapshot, compiled, &mut ids);
        }
    }
    for service in services {
        plan_service(config, service, &ids, &mut plan);
    }
    plan
}

/// Records the endpoint id of each backend of `service` (compiled into
/// `snapshot`) in `ids`, by service name and address.
fn endpoint_ids<'a>(
    snapshot: &Snapshot,
    service: &'a crate::table::CompiledService,
    ids: &mut HashMap<(&'a str, SocketAddr), u32>,
) {
    for &id in service.endpoints() {
        if let Some(e) = snapshot.endpoint(id) {
            let address = SocketAddr::new(bytes_to_addr(&e.address), e.port);
            ids.insert((service.name(), address), id);
        }
    }
}

/// Adds the backends of `service` (whose endpoint ids `ids` holds) to
/// `plan`, each checked by a target of the plan's when one is the same.
fn plan_service(
    config: &Config,
    service: &Service,
    ids: &HashMap<(&str, SocketAddr), u32>,
    plan: &mut Plan,
) {
    let name: Arc<str> = Arc::from(service.name.as_str());
    // The service's check, validated once for all its backends that
    // set none of their own.
    let service_check = settings_of(&config.health, service, None)
        .validate()
        .ok()
        .filter(Check::is_active);
    let reported = service.health.source == HealthSource::Etcd;
    for backend in &service.backends {
        let address = backend.socket_addr();
        let Some(&id) = ids.get(&(service.name.as_str(), address)) else {
            continue;
        };
        let check = if reported {
            // Not checked: its liveness is what etcd reports.
            None
        } else if backend.health.overrides_check() {
            check_of(&config.health, service, backend).ok()
        } else {
            service_check.clone().map(|c| {
                let port = service.health.port.unwrap_or(backend.port);
                (c, SocketAddr::new(backend.address, port))
            })
        };
        let target = check
            .filter(|(check, _)| check.is_active())
            .map(|(check, at)| {
                let target = Target::new(at, check);
                match plan.targets.get_key_value(&target) {
                    Some((shared, _)) => Arc::clone(shared),
                    None => Arc::new(target),
                }
            });
        let key: BackendRef = (Arc::clone(&name), address);
        if let Some(t) = &target {
            plan.targets
                .entry(Arc::clone(t))
                .or_default()
                .push(key.clone());
        }
        let ttl = heartbeat_ttl_of(service, backend).filter(|_| !reported);
        if ttl.is_some() {
            plan.with_ttl.push(key.clone());
        }
        plan.insert(
            key,
            Planned {
                id,
                target,
                ttl,
                weight: backend.weight,
                reported,
                name: backend.name.as_deref().map(Arc::from),
            },
        );
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The word a backend given a new endpoint id starts with, for
/// [`crate::table::LivenessInput::initial`]: down if the rules check it
/// and the gateway counts unchecked backends as down; up until one TTL
/// from `now_ns` if it has a heartbeat TTL.
pub fn initial_word(
    config: &Config,
    service: &Service,
    backend: &crate::rules::Backend,
    now_ns: u64,
) -> Word {
    // Checks are validated only where the answer matters.
    let down = config.health.initial == InitialState::Down
        && check_of(&config.health, service, backend).is_ok_and(|(c, _)| c.is_active());
    let up = !down;
    let word = Word::UP.with_up(up);
    match heartbeat_ttl_of(service, backend) {
        Some(ttl) => word.with_deadline(Some(now_ns.saturating_add(nanos(ttl)))),
        None => word,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three services sharing a probed backend, one with a heartbeat TTL,
    /// one whose backend is not probed.
    const RULES: &str = r#"
[health]
kind = "tcp"
interval = "1m"
timeout = "1s"

[[services]]
name = "a"
protocol = "tcp"
vip = "198.18.1.1"
port = 80
[[services.backends]]
address = "198.18.0.1"
port = 8080
[[services.backends]]
address = "198.18.0.2"
port = 8080

[[services]]
name = "b"
protocol = "tcp"
vip = "198.18.1.2"
port = 80
heartbeat_ttl = "10s"
[[services.backends]]
address = "198.18.0.1"
port = 8080
[[services.backends]]
address = "198.18.0.3"
port = 8080
[services.backends.health]
kind = "none"

[[services]]
name = "c"
protocol = "tcp"
vip = "198.18.1.3"
port = 80
[[services.backends]]
address = "198.18.0.4"
port = 8080
"#;

    /// A change to the rules, and the services it names.
    type Step = Box<dyn Fn(&mut Config)>;

    /// A plan as text, in a fixed order.
    fn described(plan: &Plan) -> String {
        let backends: BTreeMap<_, _> = plan
            .iter()
            .map(|(k, p)| {
                (
                    k,
                    format!("{} {:?} {:?} {}", p.id, p.target, p.ttl, p.weight),
                )
            })
            .collect();
        let mut targets: Vec<String> = plan
            .targets
            .iter()
            .map(|(t, refs)| {
                let mut refs = refs.clone();
                refs.sort();
                format!("{t:?} {refs:?}")
            })
            .collect();
        targets.sort();
        let mut with_ttl = plan.with_ttl.clone();
        with_ttl.sort();
        format!("{backends:?}\n{targets:?}\n{with_ttl:?}")
    }

    #[test]
    fn a_plan_patched_for_the_changed_services_is_the_plan_made_in_full() {
        let mut config = crate::rules::load_str(RULES, "test").unwrap();
        let mut snapshot = Snapshot::build(&config, None);
        let patched = HealthMonitor::new(Arc::clone(snapshot.liveness()), ProberOptions::default());
        patched.sync(&config, &snapshot).unwrap();
        let steps: Vec<(&[&str], Step)> = vec![
            // A weight, and a backend's own check.
            (
                &["a"],
                Box::new(|c: &mut Config| c.services[0].backends[1].weight = 5),
            ),
            // The TTL service loses the shared backend; the plain one
            // gains it.
            (
                &["b", "c"],
                Box::new(|c: &mut Config| {
                    let shared = c.services[1].backends.remove(0);
                    c.services[2].backends.push(shared);
                }),
            ),
            // A service removed, one added with a new target.
            (
                &["a", "d"],
                Box::new(|c: &mut Config| {
                    let mut d = c.services.remove(0);
                    d.name = "d".into();
                    d.vip = "198.18.1.4".parse().unwrap();
                    d.backends[0].address = "198.18.0.9".parse().unwrap();
                    c.services.push(d);
                }),
            ),
        ];
        for (changed, change) in steps {
            change(&mut config);
            let changed: Vec<String> = changed.iter().map(|&n| n.to_owned()).collect();
            let input = crate::table::LivenessInput {
                table: snapshot.liveness(),
                now_ns: snapshot.liveness().now_ns(),
                initial: &|_: &Service, _: &crate::rules::Backend| Word::UP,
            };
            snapshot = Snapshot::build_changed(&config, &snapshot, input, &changed);
            patched.sync_changed(&config, &snapshot, &changed).unwrap();
            let full = plan(&config, &snapshot);
            assert_eq!(
                described(&patched.plan.load()),
                described(&full),
                "after changing {changed:?}"
            );
            let counters = lock(&patched.counters);
            let mut keys: Vec<&BackendRef> = counters.keys().collect();
            keys.sort();
            let mut planned: Vec<BackendRef> = full.iter().map(|(k, _)| k).collect();
            planned.sort();
            let planned: Vec<&BackendRef> = planned.iter().collect();
            assert_eq!(keys, planned, "counters after changing {changed:?}");
            assert_eq!(full.len(), planned.len());
        }
        patched.stop();
    }
}
