//! What the control API needs from the running gateway.

use std::net::SocketAddr;
use std::time::Duration;

use flowgate_api::{BackendHealth, FlowEntry, HealthSummary, StatsReport, StatusReport};

use crate::rules::{Config, Service};
use crate::xdp::{CapacityError, XdpCapacity};

/// The running gateway as the control API sees it. The daemon implements
/// it over its workers; `MemoryDataplane` (feature `testkit`)
/// implements it in memory for tests and benches.
///
/// Calls come from the control server's connection threads. `apply` is
/// called by one change at a time (changes take turns in
/// [`super::ControlState`]), but reads (`status`, `stats`, `flows`,
/// `generation`) and `check` (dry runs take no turn) may run beside it
/// and must not wait for it: compile outside whatever lock they take.
pub trait Dataplane: Send + Sync {
    /// Whether the kernel side can hold `config` (valid rules): every
    /// limit it has that the rules themselves do not, such as how many
    /// keys the XDP program's maps hold. The control state asks before it
    /// reports or applies any change (dry runs too), so a change refused
    /// here changes nothing.
    ///
    /// The default checks against the maps flowgate's XDP program is built
    /// with ([`XdpCapacity::PROGRAM`]).
    fn check(&self, config: &Config) -> Result<(), CapacityError> {
        XdpCapacity::PROGRAM.check(config)
    }

    /// Compiles `config` (already validated in full, and passed by
    /// [`Dataplane::check`]) into a snapshot built on the current one,
    /// publishes it, and returns what runs.
    ///
    /// All or nothing: on `Err` the snapshot that ran before still runs,
    /// and the error says which generation that is and what the kernel
    /// side holds (the old rules' keys, normally; see [`ApplyError`]).
    fn apply(&self, config: &Config) -> Result<Applied, ApplyError>;

    /// [`Dataplane::apply`] for a config that is shared (the data plane
    /// may keep it as it is, without a copy) and, with `changes`, known to
    /// differ from the config `changes.since` only in the services
    /// `changes.services` names. A data plane that runs `changes.since`
    /// may then compile only those services and carry the rest from the
    /// snapshot it runs; otherwise it compiles in full. The default
    /// applies the whole config.
    fn apply_shared(
        &self,
        config: &std::sync::Arc<Config>,
        changes: Option<ServiceChanges<'_>>,
    ) -> Result<Applied, ApplyError> {
        let _ = changes;
        self.apply(config)
    }

    /// Makes `config` run where it differs from the running rules only in
    /// services' distribution paths: the path table is edited path by
    /// path, beside the snapshot, and no snapshot is built (unless a path
    /// names a backend no path named before: then one is, so that it
    /// resolves). The default applies the whole config.
    fn apply_paths(&self, config: &Config) -> Result<Applied, ApplyError> {
        self.apply(config)
    }

    /// Makes `config` run where it differs from the running rules only in
    /// the paths `updates` name, each as it says (a control API request of
    /// path verbs): the path table is edited with those paths alone, at a
    /// cost that does not grow with the paths it holds, and no snapshot is
    /// built (unless a path names a backend no path named before, as
    /// [`Dataplane::apply_paths`]). The default is
    /// [`Dataplane::apply_paths`].
    fn apply_path_updates(
        &self,
        config: &Config,
        updates: &[crate::table::PathUpdate],
    ) -> Result<Applied, ApplyError> {
        let _ = updates;
        self.apply_paths(config)
    }

    /// Version, generation, uptime, workers with their cores, interfaces
    /// with the modes they got.
    fn status(&self) -> StatusReport;

    /// Counters per service, backend and worker.
    fn stats(&self) -> StatsReport;

    /// Up to `limit` live connections, only those of `service` if given.
    fn flows(&self, service: Option<&str>, limit: usize) -> Vec<FlowEntry>;

    /// The snapshot published last, for `explain`; `None` for a data
    /// plane that has none to show.
    fn snapshot(&self) -> Option<std::sync::Arc<crate::table::Snapshot>> {
        None
    }

    /// A reader of the distribution paths the workers read, for
    /// `explain`; `None` for a data plane without a path table.
    fn paths(&self) -> Option<crate::route::PathReader> {
        None
    }

    /// The workers' capture rings, for `capture`; `None` for a data plane
    /// without workers to capture from (the default).
    fn capture_hub(&self) -> Option<std::sync::Arc<crate::capture::CaptureHub>> {
        None
    }

    /// The generation of the snapshot published last. The default asks
    /// [`Dataplane::status`]; override it if that is costly.
    fn generation(&self) -> u64 {
        self.status().generation
    }

    /// The health of each backend of `service` (a service of the running
    /// rules), in its order; empty from a data plane that does not track
    /// health (the default).
    fn backend_health(&self, service: &Service) -> Vec<BackendHealth> {
        let _ = service;
        Vec::new()
    }

    /// Backends of `config` (the running rules) by state, and those not
    /// up; none from a data plane that does not track health (the
    /// default).
    fn health_summary(&self, config: &Config) -> Option<HealthSummary> {
        let _ = config;
        None
    }

    /// Records a heartbeat of backend `backend` of service `service`,
    /// whose heartbeat TTL in the running rules is `ttl`: it stays alive
    /// until a TTL from now. Returns how long until it expires. The
    /// control state has checked that the service and backend run and
    /// that the backend has a TTL; an error here is the data plane's
    /// (the default takes no heartbeats).
    fn heartbeat(
        &self,
        service: &str,
        backend: SocketAddr,
        ttl: Duration,
    ) -> Result<Duration, String> {
        let _ = (service, backend, ttl);
        Err("this data plane takes no heartbeats".into())
    }

    /// Sets the liveness of the backends whose health comes from etcd
    /// from `reports` (see [`crate::control::health::HealthMonitor::set_reported`]);
    /// returns how many changed. No snapshot is built. The default tracks
    /// no health.
    fn set_reported_health(
        &self,
        reports: crate::fleet::health::Reported,
    ) -> Result<usize, String> {
        let _ = reports;
        Err("this data plane tracks no health".into())
    }
}

/// What a change is known to touch: the config it was made from, and the
/// services (by name) it added, replaced or removed. Nothing else differs.
#[derive(Clone, Copy, Debug)]
pub struct ServiceChanges<'a> {
    /// The config the change was made from.
    pub since: &'a std::sync::Arc<Config>,
    /// The services added, replaced or removed, by name.
    pub services: &'a [String],
}

impl ServiceChanges<'_> {
    /// Whether the change was made from `running`, the config the data
    /// plane runs: only then can it build on what runs.
    pub fn made_from(&self, running: &std::sync::Arc<Config>) -> bool {
        std::sync::Arc::ptr_eq(self.since, running)
    }
}

/// Whether any of the services `names` names in `config` has
/// distribution paths: a change of services without any, before and
/// after, leaves the path table as it is.
pub fn paths_in(config: &Config, names: &[String]) -> bool {
    names.iter().any(|name| {
        config
            .service(name)
            .is_some_and(|s| !s.routing.paths.is_empty())
    })
}

/// A change the data plane took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The generation now running: the change's.
    pub generation: u64,
    /// What did not go as it should although the change runs, one line
    /// each; empty normally. For example keys of removed services that the
    /// XDP maps could not drop (traffic matching them reaches the workers,
    /// which forward none of it, until the next change drops them).
    pub warnings: Vec<String>,
}

impl Applied {
    /// A change that went as it should.
    pub fn clean(generation: u64) -> Applied {
        Applied {
            generation,
            warnings: Vec::new(),
        }
    }
}

/// A change the data plane could not take, and what runs instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; generation {generation} keeps running; {kernel}")]
pub struct ApplyError {
    /// Why, in one line.
    pub reason: String,
    /// The generation that runs: the one that ran before the change.
    pub generation: u64,
    /// What the kernel side holds now, as one clause: for the daemon,
    /// whether the XDP maps of every interface hold exactly that
    /// generation's keys (the change's were taken back), and if not, how
    /// many others each still holds.
    pub kernel: String,
}
