//! The etcd source: a thread that loads the rules prefix, watches it from
//! that revision, feeds every revision to the [`Mirror`] and every good
//! result to the gateway, and keeps the gateway's status key alive.
//!
//! What it does when etcd is in trouble:
//!
//! - A lost connection (etcd stopped, restarted, partitioned) keeps the
//!   running rules. The source reconnects with a backoff that doubles
//!   from [`EtcdSettings::backoff_min`] to [`EtcdSettings::backoff_max`],
//!   and watches again from the revision after the last it saw, so it
//!   misses no change and applies none twice.
//! - If that revision was compacted away meanwhile, it reads the prefix
//!   again and applies the difference as one change.
//! - At start, if etcd cannot be reached within
//!   [`EtcdSettings::start_timeout`], it starts from the last good state
//!   saved on disk (or refuses to start, by configuration) and says so; the
//!   first connection then loads the prefix and applies the difference.
//!
//! The mirror decides what runs; this module only moves bytes, so it is
//! tested against a real etcd (tests/fleet_etcd.rs).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    WatchOptions,
};

use super::health::{HealthReports, Reported};
use super::layout::KeyLayout;
use super::mirror::{Change, HeldKey, Mirror, Outcome, Refusal, Rules, Stored};
use super::saved::{SavedState, Saver};
use super::settings::EtcdSettings;
use super::status::{GatewayStatus, Health, HeldKeyStatus, STATUS_FORMAT};
use crate::rules::Config;

/// Keys read per request when the prefix is loaded: a million paths are
/// read in pages, at one revision, rather than in one reply.
const LOAD_PAGE: i64 = 5_000;

/// Where the gateway's rules go: the gateway (or a test).
pub trait RulesSink: Send + 'static {
    /// Makes `rules` run; returns the snapshot generation that runs them,
    /// or why it could not (the rules that ran before still run).
    fn apply(&mut self, rules: &Rules) -> Result<u64, String>;

    /// A summary of the gateway's counters, for its status key.
    fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }

    /// The snapshot generation that runs now, once the gateway runs: the
    /// first rules are installed by the gateway's start, not through
    /// [`RulesSink::apply`], and edits through the control socket make
    /// generations too.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// A watch reply with changes of `revision` arrived at `at`, before the
    /// mirror reads them: where a revision's time goes (the fleet
    /// benchmark times the legs by it).
    fn watched(&mut self, revision: i64, at: Instant) {
        let _ = (revision, at);
    }

    /// The health keys say `reports` are the backends alive (of services
    /// whose health comes from etcd): set their liveness, without a new
    /// generation. Returns how many changed, or why it could not.
    fn liveness(&mut self, reports: Reported) -> Result<usize, String> {
        let _ = reports;
        Ok(0)
    }
}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The settings are not valid.
    #[error("{}", .0.join("\n"))]
    Settings(Vec<String>),
    /// etcd could not be reached and the gateway may not start without it,
    /// or has no saved state to start from.
    #[error("{0}")]
    Unreachable(String),
    /// The rules cannot be put together (a service both in the file and in
    /// etcd).
    #[error("{}", .0.join("\n"))]
    Conflict(Vec<String>),
    /// The saved state could not be read.
    #[error("{0}")]
    Saved(#[from] super::saved::SavedError),
}

/// Where the first rules came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartedFrom {
    /// From etcd, at this revision.
    Etcd {
        /// The revision.
        revision: i64,
    },
    /// From the state saved on disk, because etcd could not be reached.
    Saved {
        /// The revision the saved rules came from.
        revision: i64,
        /// Why etcd could not be reached.
        why: String,
    },
}

/// What the source knows about itself, for `status`, metrics and the
/// status key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// Whether it holds a watch on etcd now.
    pub connected: bool,
    /// The revision of the rules that run.
    pub revision: i64,
    /// The last revision seen.
    pub seen_revision: i64,
    /// The generation that runs the rules.
    pub generation: u64,
    /// Services that run.
    pub services: usize,
    /// Keys held back and why.
    pub held: Vec<HeldKey>,
    /// The last revision refused, if any.
    pub last_refusal: Option<Refusal>,
    /// The last connection problem, if any.
    pub last_error: Option<String>,
    /// Revisions applied.
    pub applied_revisions: u64,
    /// Revisions refused.
    pub refused_revisions: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Loads of the whole prefix (the first, and after compaction).
    pub loads: u64,
}

impl SourceState {
    /// The state as `flowgatectl status` and the metrics show it.
    pub fn report(&self) -> flowgate_api::EtcdStatus {
        flowgate_api::EtcdStatus {
            health: self.health().name().to_owned(),
            connected: self.connected,
            revision: self.revision,
            seen_revision: self.seen_revision,
            generation: self.generation,
            held: self
                .held
                .iter()
                .map(|h| flowgate_api::HeldKey {
                    key: h.key.clone(),
                    revision: h.revision,
                    problems: h.problems.clone(),
                })
                .collect(),
            last_error: self.last_error.clone(),
        }
    }

    /// How the gateway is doing.
    pub fn health(&self) -> Health {
        if !self.connected {
            Health::Disconnected
        } else if !self.held.is_empty() {
            Health::Holding
        } else {
            Health::Ok
        }
    }
}

/// A running etcd source. Dropping it stops it.
pub struct EtcdSource {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<SourceState>>,
}

impl std::fmt::Debug for EtcdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSource").finish_non_exhaustive()
    }
}

/// The first rules, and the source that keeps them up to date.
#[derive(Debug)]
pub struct Started {
    /// The source.
    pub source: EtcdSource,
    /// The rules to start with (already given to no sink).
    pub rules: Box<Rules>,
    /// Where they came from.
    pub from: StartedFrom,
}

impl EtcdSource {
    /// Connects, loads the rules (the file's `base` with etcd's parts on
    /// top) and starts watching. The first rules are returned, not given
    /// to `sink`; every later good revision is.
    pub fn start(
        settings: EtcdSettings,
        base: Config,
        sink: Box<dyn RulesSink>,
    ) -> Result<Started, SourceError> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(SourceError::Settings(problems));
        }
        let layout = settings
            .layout()
            .map_err(|e| SourceError::Settings(vec![e.to_string()]))?;
        let state = Arc::new(Mutex::new(SourceState::default()));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (first_tx, first_rx) = mpsc::channel();
        let wait = settings.start_timeout + Duration::from_secs(5);
        let saver = match &settings.state_file {
            Some(path) => Some(Saver::new(path.clone()).map_err(|e| {
                SourceError::Unreachable(format!("cannot start the state-saving thread: {e}"))
            })?),
            None => None,
        };
        let worker = Worker {
            saver,
            mirror: Mirror::new(layout.clone(), base),
            health: HealthReports::new(layout.clone()),
            liveness_due: false,
            layout,
            settings,
            sink,
            state: Arc::clone(&state),
            need_load: true,
            save_due: false,
            stop: stop_rx,
        };
        let thread = std::thread::Builder::new()
            .name("flowgate-etcd".into())
            .spawn(move || worker.run(first_tx))
            .map_err(|e| SourceError::Unreachable(format!("cannot start the etcd thread: {e}")))?;
        let mut source = EtcdSource {
            stop,
            thread: Some(thread),
            state,
        };
        match first_rx.recv_timeout(wait) {
            Ok(Ok((rules, from))) => Ok(Started {
                source,
                rules,
                from,
            }),
            Ok(Err(e)) => {
                source.stop();
                Err(e)
            }
            Err(_) => {
                source.stop();
                Err(SourceError::Unreachable(
                    "etcd: the first load did not finish in time".into(),
                ))
            }
        }
    }

    /// What the source knows now.
    pub fn state(&self) -> SourceState {
        lock(&self.state).clone()
    }

    /// What the source knows, asked for whenever `status` or a scrape
    /// wants it (for [`crate::control::ControlState::report_etcd`]).
    pub fn reporter(&self) -> crate::control::EtcdReport {
        let state = Arc::clone(&self.state);
        Arc::new(move || lock(&state).report())
    }

    /// Stops the source: the watch ends, the status key's lease is revoked
    /// (the key disappears at once) and the last good state is saved.
    pub fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EtcdSource {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first result, sent back to [`EtcdSource::start`].
type First = Result<(Box<Rules>, StartedFrom), SourceError>;

/// A write of the status key, in flight.
type StatusWrite = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How a session with etcd ended.
enum SessionEnd {
    /// The source was told to stop.
    Stop,
    /// The watched revision was compacted: load again, now.
    Compacted(i64),
    /// The connection failed: wait, then connect again.
    Lost(String),
}

/// The source's thread.
struct Worker {
    settings: EtcdSettings,
    layout: KeyLayout,
    mirror: Mirror,
    /// The health keys, read with the rules but kept apart from them.
    health: HealthReports,
    /// The health keys changed since the gateway was last told.
    liveness_due: bool,
    sink: Box<dyn RulesSink>,
    state: Arc<Mutex<SourceState>>,
    /// The next session loads the prefix before it watches.
    need_load: bool,
    /// The running state changed since it was last handed to the saver.
    save_due: bool,
    /// Writes the last good state to `settings.state_file`, off the
    /// watch's road.
    saver: Option<Saver>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Worker {
    fn run(mut self, first: mpsc::Sender<First>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = first.send(Err(SourceError::Unreachable(format!(
                    "etcd: cannot start its runtime: {e}"
                ))));
                return;
            }
        };
        runtime.block_on(self.serve(first));
    }

    async fn serve(&mut self, first: mpsc::Sender<First>) {
        let start = self.first_rules().await;
        let started = start.is_ok();
        let _ = first.send(start);
        if !started {
            return;
        }
        // The gateway runs the first rules now: their liveness follows.
        self.tell_liveness();
        let mut backoff = self.settings.backoff_min;
        let mut client = None;
        loop {
            match self.session(&mut client).await {
                SessionEnd::Stop => break,
                SessionEnd::Compacted(at) => {
                    tracing::warn!(
                        revision = self.mirror.revision(),
                        compacted = at,
                        "etcd compacted the revisions the watch needed; loading the rules again"
                    );
                    self.need_load = true;
                }
                SessionEnd::Lost(why) => {
                    client = None;
                    self.save();
                    self.lost(&why);
                    tracing::warn!(
                        revision = self.mirror.revision(),
                        retry_ms = backoff.as_millis() as u64,
                        "etcd: {why}; the running rules stay"
                    );
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    backoff = (backoff * 2).min(self.settings.backoff_max);
                    continue;
                }
            }
            backoff = self.settings.backoff_min;
        }
        self.save_now();
    }

    /// The first rules: from etcd, or from the saved state.
    async fn first_rules(&mut self) -> First {
        let loaded = tokio::time::timeout(self.settings.start_timeout, async {
            let mut client = self.connect().await?;
            self.load(&mut client).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {:?}",
                self.settings.start_timeout
            ))
        });
        let (outcome, from) = match loaded {
            Ok(outcome) => {
                self.need_load = false;
                let from = StartedFrom::Etcd {
                    revision: self.mirror.revision(),
                };
                (outcome, from)
            }
            Err(why) => {
                let why = format!("etcd at {} cannot be reached: {why}", self.endpoints());
                let restored = self.restore(&why)?;
                self.lost(&why);
                restored
            }
        };
        let conflicts = self.mirror.file_conflicts();
        if !conflicts.is_empty() {
            return Err(SourceError::Conflict(conflicts));
        }
        let rules = match outcome {
            Outcome::Applied(rules) => rules,
            // A load holds bad keys and runs the rest: it is never refused
            // whole.
            Outcome::Refused(refusal) => {
                return Err(SourceError::Unreachable(refusal.to_string()));
            }
        };
        self.note_applied(&rules, 0);
        // A load reads the rules as of the store's revision, which status
        // writes move too: the rules' own revision is their newest value's,
        // the same on every gateway that loaded the same rules (a deletion
        // before the load is not seen, as in `flowgatectl fleet`'s lag).
        lock(&self.state).revision = self
            .mirror
            .good_entries()
            .map(|(_, stored)| stored.mod_revision)
            .max()
            .unwrap_or(0);
        self.save_due = true;
        self.save();
        Ok((rules, from))
    }

    /// The saved state, when etcd could not be reached at start.
    fn restore(&mut self, why: &str) -> Result<(Outcome, StartedFrom), SourceError> {
        if !self.settings.start_without_etcd {
            return Err(SourceError::Unreachable(format!(
                "{why}; not starting without it (start_without_etcd = false)"
            )));
        }
        let Some(path) = self.settings.state_file.clone() else {
            return Err(SourceError::Unreachable(format!(
                "{why}, and no state file is configured to start from"
            )));
        };
        let Some(saved) = SavedState::read(&path, self.layout.prefix())? else {
            return Err(SourceError::Unreachable(format!(
                "{why}, and {} holds no saved state to start from",
                path.display()
            )));
        };
        let revision = saved.revision;
        tracing::warn!(
            revision,
            state = %path.display(),
            "{why}: starting from the last good state saved on disk"
        );
        let outcome = self.mirror.restore(revision, saved.into_entries());
        Ok((
            outcome,
            StartedFrom::Saved {
                revision,
                why: why.to_owned(),
            },
        ))
    }

    fn endpoints(&self) -> String {
        self.settings.endpoints.join(",")
    }

    async fn connect(&self) -> Result<Client, String> {
        let options = connect_options(&self.settings)?;
        Client::connect(&self.settings.endpoints, Some(options))
            .await
            .map_err(|e| format!("cannot connect: {e}"))
    }

    /// Reads the whole rules prefix at one revision, in pages, and gives
    /// it to the mirror.
    async fn load(&mut self, client: &mut Client) -> Result<Outcome, String> {
        let prefix = self.layout.rules().as_bytes().to_vec();
        let end = prefix_end(&prefix);
        let mut changes = Vec::new();
        let mut health = Vec::new();
        let mut from = prefix.clone();
        let mut revision = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LOAD_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut page = client
                .get(from.clone(), Some(options))
                .await
                .map_err(|e| format!("cannot read {}: {e}", self.layout.rules()))?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let mut last = None;
            for kv in page.take_kvs() {
                let mod_revision = kv.mod_revision();
                let (key, value) = kv.into_key_value();
                last = Some(key.clone());
                let change = Change {
                    key,
                    value: Some(Stored {
                        value,
                        mod_revision,
                    }),
                };
                if self.layout.is_health(&change.key) {
                    health.push(change);
                } else {
                    changes.push(change);
                }
            }
            match (more, last) {
                (true, Some(mut last)) => {
                    last.push(0);
                    from = last;
                }
                _ => break,
            }
        }
        let keys = changes.len();
        // Every health key as it is now: one that went while the gateway
        // was not watching is down.
        self.health.load(health);
        self.liveness_due = true;
        let outcome = self.mirror.load(revision, changes);
        lock(&self.state).loads += 1;
        tracing::info!(
            revision,
            keys,
            prefix = self.layout.rules(),
            "etcd rules loaded"
        );
        Ok(outcome)
    }

    /// One connection: load if needed, then watch until it ends.
    async fn session(&mut self, client: &mut Option<Client>) -> SessionEnd {
        if *self.stop.borrow() {
            return SessionEnd::Stop;
        }
        let mut c = match client.take() {
            Some(c) => c,
            None => match self.connect().await {
                Ok(c) => c,
                Err(e) => return SessionEnd::Lost(e),
            },
        };
        if self.need_load {
            match self.load(&mut c).await {
                Ok(outcome) => {
                    self.need_load = false;
                    self.handle(outcome);
                    self.tell_liveness();
                    self.save();
                }
                Err(e) => return SessionEnd::Lost(e),
            }
        }
        let end = self.watch(&mut c).await;
        if matches!(end, SessionEnd::Compacted(_)) {
            *client = Some(c);
        }
        end
    }

    /// Watches from the revision after the last seen, keeping the status
    /// key alive, until the connection ends.
    async fn watch(&mut self, client: &mut Client) -> SessionEnd {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.mirror.revision() + 1)
            .with_progress_notify();
        let mut stream = match client.watch(self.layout.rules(), Some(options)).await {
            Ok(stream) => stream,
            Err(e) => return SessionEnd::Lost(format!("cannot watch: {e}")),
        };
        let lease = match self.grant(client).await {
            Ok(lease) => lease,
            Err(e) => return SessionEnd::Lost(e),
        };
        let (mut keeper, mut kept) = match client.lease_keep_alive(lease).await {
            Ok(pair) => pair,
            Err(e) => return SessionEnd::Lost(format!("cannot keep the status lease: {e}")),
        };
        lock(&self.state).connected = true;
        lock(&self.state).last_error = None;
        if let Err(e) = self.put_status(client, lease).await {
            return SessionEnd::Lost(e);
        }
        let mut tick = tokio::time::interval(self.settings.status_interval);
        let mut stop = self.stop.clone();
        // The status key is written beside the watch, never in its way: a
        // change starts a write (on a clone of the client) and goes on to
        // the next reply; changes while one is in flight make one more
        // write when it ends, with the state of then.
        let mut writing: Option<StatusWrite> = None;
        let mut status_due = false;
        loop {
            if writing.is_none() && status_due {
                status_due = false;
                match self.status_write(client, lease) {
                    Ok(write) => writing = Some(write),
                    Err(e) => return SessionEnd::Lost(e),
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {
                    // The key goes with the lease, at once.
                    let _ = client.lease_revoke(lease).await;
                    return SessionEnd::Stop;
                }
                written = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                    writing = None;
                    if let Err(e) = written {
                        return SessionEnd::Lost(e);
                    }
                }
                message = stream.message() => {
                    let arrived = Instant::now();
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) => return SessionEnd::Lost("the watch ended".into()),
                        Err(e) => return SessionEnd::Lost(format!("the watch failed: {e}")),
                    };
                    if response.canceled() {
                        if response.compact_revision() > 0 {
                            return SessionEnd::Compacted(response.compact_revision());
                        }
                        return SessionEnd::Lost(format!(
                            "etcd cancelled the watch: {}",
                            response.cancel_reason()
                        ));
                    }
                    let changed = !response.events().is_empty();
                    self.events(response.events(), arrived);
                    // Saved once a reply, before anything else can
                    // happen to the process: a gateway killed right after
                    // restarts with what it ran.
                    self.save();
                    status_due |= changed;
                }
                _ = tick.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        return SessionEnd::Lost(format!("cannot keep the status lease: {e}"));
                    }
                    match tokio::time::timeout(self.settings.request_timeout, kept.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                        Ok(Ok(Some(_))) => return SessionEnd::Lost("the status lease expired".into()),
                        _ => return SessionEnd::Lost("no answer to the status lease's keep-alive".into()),
                    }
                    status_due = true;
                    self.save();
                }
            }
        }
    }

    async fn grant(&self, client: &mut Client) -> Result<i64, String> {
        client
            .lease_grant(self.settings.status_ttl_s, None)
            .await
            .map(|r| r.id())
            .map_err(|e| format!("cannot take a lease for the status key: {e}"))
    }

    /// The events of one watch reply (arrived at `at`), applied revision
    /// by revision.
    fn events(&mut self, events: &[etcd_client::Event], at: Instant) {
        let mut batch: Vec<Change> = Vec::new();
        let mut health: Vec<Change> = Vec::new();
        let mut revision = 0;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            if kv.mod_revision() != revision && !(batch.is_empty() && health.is_empty()) {
                self.revision(revision, &mut batch, &mut health, at);
            }
            revision = kv.mod_revision();
            let value = match event.event_type() {
                EventType::Put => Some(Stored {
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                }),
                EventType::Delete => None,
            };
            let change = Change {
                key: kv.key().to_vec(),
                value,
            };
            if self.layout.is_health(&change.key) {
                health.push(change);
            } else {
                batch.push(change);
            }
        }
        if !(batch.is_empty() && health.is_empty()) {
            self.revision(revision, &mut batch, &mut health, at);
        }
    }

    /// One revision's changes: the rules' as one generation (if it has
    /// any), then the health keys' as liveness.
    fn revision(
        &mut self,
        revision: i64,
        rules: &mut Vec<Change>,
        health: &mut Vec<Change>,
        at: Instant,
    ) {
        if !rules.is_empty() {
            self.sink.watched(revision, at);
            let outcome = self.mirror.apply(revision, std::mem::take(rules));
            self.handle(outcome);
        }
        if !health.is_empty() {
            self.health.apply(std::mem::take(health));
            self.liveness_due = true;
            self.tell_liveness();
        }
    }

    /// Tells the gateway the liveness the health keys give, if they
    /// changed since it was told; records the health keys held back.
    fn tell_liveness(&mut self) {
        if !self.liveness_due {
            return;
        }
        self.liveness_due = false;
        let held = self.health.held();
        for key in &held {
            tracing::error!(
                revision = key.revision,
                key = %key.key,
                "etcd health key held back: {}",
                key.problems.join("; ")
            );
        }
        {
            let mut state = lock(&self.state);
            state.held = self.mirror.held();
            state.held.extend(held);
            state.seen_revision = state.seen_revision.max(self.mirror.revision());
        }
        match self.sink.liveness(self.health.reported()) {
            Ok(0) => {}
            Ok(changed) => tracing::info!(changed, "backend liveness from etcd applied"),
            Err(why) => tracing::error!("the gateway could not take the liveness from etcd: {why}"),
        }
    }

    /// Gives good rules to the gateway; logs and records a refusal.
    fn handle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Applied(rules) => match self.sink.apply(&rules) {
                Ok(generation) => {
                    tracing::info!(
                        revision = rules.revision,
                        generation,
                        keys = rules.applied_keys,
                        held = rules.held.len(),
                        "rules from etcd applied"
                    );
                    self.note_applied(&rules, generation);
                    self.save_due = true;
                }
                Err(why) => {
                    tracing::error!(
                        revision = rules.revision,
                        "the gateway could not apply the rules from etcd: {why}"
                    );
                    let mut state = lock(&self.state);
                    state.seen_revision = self.mirror.revision();
                    state.last_error = Some(format!(
                        "revision {} could not be applied: {why}",
                        rules.revision
                    ));
                }
            },
            Outcome::Refused(refusal) => {
                for held in &refusal.problems {
                    tracing::error!(
                        revision = refusal.revision,
                        key = %held.key,
                        "etcd revision refused: {}",
                        held.problems.join("; ")
                    );
                }
                let mut state = lock(&self.state);
                state.seen_revision = self.mirror.revision();
                state.held = self.mirror.held();
                state.held.extend(self.health.held());
                state.refused_revisions += 1;
                state.last_refusal = Some(refusal);
            }
        }
    }

    fn note_applied(&self, rules: &Rules, generation: u64) {
        let mut state = lock(&self.state);
        state.revision = rules.revision;
        state.seen_revision = self.mirror.revision();
        state.generation = generation;
        state.services = rules.config.services.len();
        state.held = rules.held.clone();
        state.held.extend(self.health.held());
        state.applied_revisions += 1;
    }

    fn lost(&self, why: &str) {
        let mut state = lock(&self.state);
        if state.connected {
            state.disconnects += 1;
        }
        state.connected = false;
        state.last_error = Some(why.to_owned());
    }

    /// Writes this gateway's status under its lease.
    async fn put_status(&self, client: &mut Client, lease: i64) -> Result<(), String> {
        self.status_write(client, lease)?.await
    }

    /// The write of this gateway's status (as it is now) under its lease,
    /// to run beside the watch.
    fn status_write(&self, client: &Client, lease: i64) -> Result<StatusWrite, String> {
        let state = lock(&self.state).clone();
        let status = GatewayStatus {
            format: STATUS_FORMAT,
            id: self.settings.gateway_id.clone(),
            revision: state.revision,
            seen_revision: state.seen_revision,
            generation: self.sink.generation().unwrap_or(state.generation),
            health: state.health(),
            held: state.held.iter().map(HeldKeyStatus::from).collect(),
            services: state.services,
            counters: self.sink.counters(),
        };
        let value = serde_json::to_vec(&status).map_err(|e| e.to_string())?;
        let key = self.layout.status_key(&self.settings.gateway_id);
        let mut client = client.clone();
        Ok(Box::pin(async move {
            client
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot write the status key: {e}"))
        }))
    }

    /// Hands the running state to the saver, if it changed, a file is
    /// configured and the saver is not busy with an earlier one (then it
    /// stays due: the next reply or tick hands it over).
    fn save(&mut self) {
        let Some(saver) = &self.saver else {
            return;
        };
        if saver.take_failed() {
            self.save_due = true;
        }
        if !self.save_due || saver.busy() {
            return;
        }
        saver.hand(SavedState::of(&self.mirror));
        self.save_due = false;
    }

    /// Saves the running state now and waits until it is on disk: before
    /// the first rules are given, and when the source stops.
    fn save_now(&mut self) {
        let Some(saver) = &self.saver else {
            return;
        };
        saver.flush();
        if saver.take_failed() {
            self.save_due = true;
        }
        if self.save_due {
            saver.hand(SavedState::of(&self.mirror));
            saver.flush();
            self.save_due = saver.take_failed();
        }
    }
}

/// How to reach the cluster: timeouts, keep-alive, credentials, TLS.
pub fn connect_options(s: &EtcdSettings) -> Result<ConnectOptions, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(s.request_timeout)
        .with_timeout(s.request_timeout)
        // A partition that leaves the connection open is found by HTTP/2
        // pings, not by waiting for the next change.
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = &s.credentials {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &s.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("TLS file {}: {e}", p.display()))
        };
        let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(config);
    }
    Ok(options)
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/fg/v1/rules/"), b"/fg/v1/rules0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
