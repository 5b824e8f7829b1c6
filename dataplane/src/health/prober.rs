//! The prober's handle: starts its thread, replaces its targets, reads
//! their statuses, hands out transitions, and stops and joins the thread
//! when dropped.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{self, Receiver, Sender};
use thiserror::Error;

use super::engine::{Command, Engine, EngineOptions, Shared, Transition};
use super::schedule::Jitter;
use super::state::{CheckResult, Health, InitialState};
use super::stats::{HistogramSample, ProberCounters};
use super::target::Target;
use super::waker::Waker;

/// How long [`Prober::set_targets`] waits for the thread to take a set.
const SET_TARGETS_WAIT: Duration = Duration::from_secs(5);

/// The prober's settings.
#[derive(Clone, Debug)]
pub struct ProberOptions {
    /// The most probes in flight at once (each holds a socket). A target
    /// that never answers holds its place until its timeout, so this should
    /// exceed the probes started per second × the longest timeout that
    /// can all time out at once. Default 1024; the process needs that many
    /// file descriptors beyond its others.
    pub max_in_flight: usize,
    /// The state of a target not checked yet (see [`InitialState`]).
    pub initial_state: InitialState,
    /// Transitions the channel holds before new ones are dropped (and
    /// counted in [`ProberCounters::transitions_dropped`]).
    pub transition_capacity: usize,
    /// A fixed jitter seed (tests); by default one from the clock.
    pub jitter_seed: Option<u64>,
}

impl Default for ProberOptions {
    fn default() -> ProberOptions {
        ProberOptions {
            max_in_flight: 1024,
            initial_state: InitialState::Up,
            transition_capacity: 4096,
            jitter_seed: None,
        }
    }
}

/// Why the prober cannot do what was asked.
#[derive(Debug, Error)]
pub enum ProberError {
    /// Creating its epoll set, eventfd or thread failed.
    #[error("health prober: {0}")]
    Io(#[from] std::io::Error),
    /// `max_in_flight` is 0.
    #[error("health prober: max_in_flight must be at least 1")]
    NoConcurrency,
    /// Its thread has ended.
    #[error("the health prober has stopped")]
    Stopped,
    /// Its thread did not take a new target set in time.
    #[error("the health prober did not take the new targets within {0:?}")]
    Busy(Duration),
}

/// One target's status, read without a lock.
#[derive(Clone, Debug)]
pub struct TargetStatus {
    /// The target.
    pub target: Arc<Target>,
    /// Its state.
    pub health: Health,
    /// Since when (the prober's start, or its last change).
    pub since: Instant,
    /// Its last completed check: result, latency and start time.
    pub last_check: Option<(CheckResult, Duration, Instant)>,
    /// Checks completed.
    pub checks: u64,
    /// Checks failed.
    pub failures: u64,
    /// State changes.
    pub transitions: u64,
    /// Check latencies.
    pub latency: HistogramSample,
}

/// Active health checks of many targets, on a thread of their own.
///
/// The thread inherits the CPU affinity and network namespace of the
/// thread that calls [`Prober::start`]; the daemon starts it from its
/// control thread, off the worker cores.
#[derive(Debug)]
pub struct Prober {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    commands: Sender<Command>,
    transitions: Receiver<Transition>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the thread, with no targets.
    pub fn start(options: ProberOptions) -> Result<Prober, ProberError> {
        if options.max_in_flight == 0 {
            return Err(ProberError::NoConcurrency);
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counters: ProberCounters::default(),
            entries: ArcSwap::from_pointee(Vec::new()),
            epoch: Instant::now(),
            thread_id: AtomicI32::new(0),
        });
        let waker = Arc::new(Waker::new()?);
        let (commands, command_rx) = channel::unbounded();
        let (transition_tx, transitions) = channel::bounded(options.transition_capacity.max(1));
        let jitter = match options.jitter_seed {
            Some(seed) => Jitter::seeded(seed),
            None => Jitter::from_entropy(),
        };
        let engine = Engine::new(
            Arc::clone(&waker),
            command_rx,
            transition_tx,
            Arc::clone(&shared),
            EngineOptions {
                max_in_flight: options.max_in_flight,
                initial_state: options.initial_state,
                jitter,
            },
        )?;
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("flowgate-health".into())
            .spawn(move || {
                thread_shared
                    .thread_id
                    .store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
                if let Err(e) = engine.run() {
                    tracing::error!(error = %e, "health prober stopped");
                }
                thread_shared.stop.store(true, Ordering::Release);
            })?;
        Ok(Prober {
            shared,
            waker,
            commands,
            transitions,
            thread: Some(thread),
        })
    }

    /// Replaces the target set and returns once the thread has taken it.
    /// Targets that stay keep their state, counters and schedule; new ones
    /// start in the initial state, their first probe at a random point of
    /// their first interval; gone ones stop (a probe in flight is closed).
    /// Duplicates count once; targets whose check is `none` are not probed.
    pub fn set_targets<I: IntoIterator<Item = Target>>(
        &self,
        targets: I,
    ) -> Result<(), ProberError> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(ProberError::Stopped);
        }
        let (done, applied) = channel::bounded(1);
        self.commands
            .send(Command::SetTargets(targets.into_iter().collect(), done))
            .map_err(|_| ProberError::Stopped)?;
        self.waker.wake();
        applied.recv_timeout(SET_TARGETS_WAIT).map_err(|e| match e {
            channel::RecvTimeoutError::Timeout => ProberError::Busy(SET_TARGETS_WAIT),
            channel::RecvTimeoutError::Disconnected => ProberError::Stopped,
        })
    }

    /// The channel of state changes, for the control thread. It is
    /// bounded: if nobody reads it, new transitions are dropped and
    /// counted; [`Prober::statuses`] always has the current states.
    pub fn transitions(&self) -> Receiver<Transition> {
        self.transitions.clone()
    }

    /// Every target's current status.
    pub fn statuses(&self) -> Vec<TargetStatus> {
        let epoch = self.shared.epoch;
        let at = |ns: u64| epoch + Duration::from_nanos(ns);
        self.shared
            .entries
            .load()
            .iter()
            .map(|entry| {
                let stats = &entry.stats;
                let (health, since) = stats.state();
                TargetStatus {
                    target: Arc::clone(&entry.target),
                    health,
                    since: at(since),
                    last_check: stats
                        .last()
                        .map(|l| (l.result, l.latency, at(l.started_ns))),
                    checks: stats.checks.get(),
                    failures: stats.failures.get(),
                    transitions: stats.transitions.get(),
                    latency: stats.latency.sample(),
                }
            })
            .collect()
    }

    /// The status of one target, if it is in the set.
    pub fn status(&self, target: &Target) -> Option<TargetStatus> {
        self.statuses().into_iter().find(|s| *s.target == *target)
    }

    /// The prober's own counters.
    pub fn counters(&self) -> &ProberCounters {
        &self.shared.counters
    }

    /// The instant the prober's nanosecond times count from.
    pub fn epoch(&self) -> Instant {
        self.shared.epoch
    }

    /// The thread's id (for reading its CPU time), once it runs.
    pub fn thread_id(&self) -> Option<i32> {
        Some(self.shared.thread_id.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// Whether the thread is still running.
    pub fn is_running(&self) -> bool {
        !self.shared.stop.load(Ordering::Acquire)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
