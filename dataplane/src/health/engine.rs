//! The prober's thread: one epoll set over every probe's socket, a timer
//! heap, and a cap on probes in flight.
//!
//! Next-probe times wait in a binary heap, the deadlines of probes in
//! flight in one FIFO per timeout (see `schedule`).
//!
//! Each target lives in a slot. A slot is in exactly one phase — waiting
//! for its next probe time (`Scheduled`), due but queued behind the cap
//! (`Waiting`), or `Probing` — so a target's probes never overlap. Every
//! phase change bumps the slot's sequence number; timers and epoll events
//! carry the number they were made with, and a stale one (its probe ended
//! early, its target was removed) is ignored when it arrives.
//!
//! Nothing here blocks but `epoll_wait`, whose timeout is the next timer:
//! a target that never answers holds one place of the cap until its own
//! timeout, and no other probe waits for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, Sender, TrySendError};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::check::CheckKind;
use super::probe::{http_request, interest, Probe, StartError, Step};
use super::schedule::{duration_nanos, DeadlineQueues, Jitter, Timer, TimerHeap};
use super::state::{CheckResult, FailureReason, Health, InitialState, RiseFall};
use super::stats::{ProberCounters, TargetStats};
use super::target::Target;
use super::waker::Waker;

/// The epoll data of the waker.
const WAKE: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;
/// The longest sleep without a timer due (the stop flag is also woken).
const IDLE_WAIT_MS: u64 = 1000;

/// A target and its live statistics, shared with readers.
#[derive(Debug)]
pub(super) struct TargetEntry {
    /// The target.
    pub target: Arc<Target>,
    /// Its counters, state and last result.
    pub stats: TargetStats,
}

/// A change of a target's state.
#[derive(Clone, Debug)]
pub struct Transition {
    /// The target.
    pub target: Arc<Target>,
    /// Its state before.
    pub from: Health,
    /// Its state now.
    pub to: Health,
    /// When the deciding check finished.
    pub at: Instant,
    /// What the deciding check found.
    pub result: CheckResult,
    /// How long the deciding check took.
    pub latency: Duration,
    /// The target's checks so far, this one included.
    pub checks: u64,
    /// The target's failed checks so far, this one included.
    pub failures: u64,
}

/// What the prober's handle and its thread share.
#[derive(Debug)]
pub(super) struct Shared {
    pub stop: AtomicBool,
    pub counters: ProberCounters,
    pub entries: ArcSwap<Vec<Arc<TargetEntry>>>,
    pub epoch: Instant,
    pub thread_id: AtomicI32,
}

/// A request to the prober's thread.
pub(super) enum Command {
    /// Replace the targets; answer on the sender once done.
    SetTargets(Vec<Target>, Sender<()>),
}

/// The settings the thread needs.
pub(super) struct EngineOptions {
    pub max_in_flight: usize,
    pub initial_state: InitialState,
    pub jitter: Jitter,
}

enum Phase {
    Scheduled { at: u64 },
    Waiting { due: u64 },
    Probing { probe: Probe, started: u64 },
}

struct Slot {
    entry: Arc<TargetEntry>,
    /// The http request, built once.
    request: Box<[u8]>,
    rise_fall: RiseFall,
    phase: Phase,
}

#[derive(Default)]
struct Cell {
    /// Survives the slot's occupants, so a new target in a reused slot
    /// never matches an old one's timers or events.
    seq: u32,
    slot: Option<Slot>,
}

/// The prober thread's state.
pub(super) struct Engine {
    epoll: Epoll,
    waker: Arc<Waker>,
    commands: Receiver<Command>,
    transitions: Sender<Transition>,
    shared: Arc<Shared>,
    options: EngineOptions,
    cells: Vec<Cell>,
    free: Vec<u32>,
    by_target: HashMap<Arc<Target>, u32>,
    /// Next-probe times.
    timers: TimerHeap,
    /// Deadlines of probes in flight.
    deadlines: DeadlineQueues,
    waiting: VecDeque<(u32, u32)>,
    in_flight: usize,
}

fn event_data(slot: u32, seq: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(seq)
}

impl Engine {
    pub(super) fn new(
        waker: Arc<Waker>,
        commands: Receiver<Command>,
        transitions: Sender<Transition>,
        shared: Arc<Shared>,
        options: EngineOptions,
    ) -> io::Result<Engine> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&*waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        Ok(Engine {
            epoll,
            waker,
            commands,
            transitions,
            shared,
            options,
            cells: Vec::new(),
            free: Vec::new(),
            by_target: HashMap::new(),
            timers: TimerHeap::new(),
            deadlines: DeadlineQueues::new(),
            waiting: VecDeque::new(),
            in_flight: 0,
        })
    }

    fn now(&self) -> u64 {
        duration_nanos(self.shared.epoch.elapsed())
    }

    /// Runs until the stop flag is set. Sockets close when `self` drops.
    pub(super) fn run(mut self) -> io::Result<()> {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        while !self.shared.stop.load(Ordering::Acquire) {
            let now = self.now();
            let next = match (self.timers.next_at(), self.deadlines.next_at()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait_ms = match next {
                // Round up: waking a little late costs under a millisecond,
                // waking early costs a wasted wake.
                Some(at) => at.saturating_sub(now).div_ceil(1_000_000).min(IDLE_WAIT_MS),
                None => IDLE_WAIT_MS,
            };
            let n = match self
                .epoll
                .wait(&mut events, EpollTimeout::from(wait_ms as u16))
            {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            let now = self.now();
            for event in &events[..n] {
                if event.data() == WAKE {
                    self.waker.drain();
                    self.take_commands();
                } else {
                    self.on_ready(event.data(), event.events(), now);
                }
            }
            self.fire_timers();
            self.start_waiting();
        }
        Ok(())
    }

    fn take_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::SetTargets(targets, done) => {
                    self.set_targets(targets);
                    let _ = done.send(());
                }
            }
        }
    }

    fn set_targets(&mut self, targets: Vec<Target>) {
        let now = self.now();
        let wanted: HashSet<Target> = targets
            .into_iter()
            .filter(|t| t.check.is_active())
            .collect();
        for i in 0..self.cells.len() {
            let cell = &mut self.cells[i];
            let gone = matches!(&cell.slot, Some(s) if !wanted.contains(&*s.entry.target));
            if gone {
                if let Some(slot) = cell.slot.take() {
                    if matches!(slot.phase, Phase::Probing { .. }) {
                        self.in_flight -= 1;
                    }
                    self.by_target.remove(&*slot.entry.target);
                }
                cell.seq = cell.seq.wrapping_add(1);
                self.free.push(i as u32);
            }
        }
        self.shared.counters.set_in_flight(self.in_flight);
        self.deadlines.drop_empty();
        for target in wanted {
            if !self.by_target.contains_key(&target) {
                self.add(target, now);
            }
        }
        let entries: Vec<Arc<TargetEntry>> = self
            .cells
            .iter()
            .filter_map(|c| c.slot.as_ref().map(|s| Arc::clone(&s.entry)))
            .collect();
        self.shared.entries.store(Arc::new(entries));
    }

    fn add(&mut self, target: Target, now: u64) {
        let rise_fall = RiseFall::new(self.options.initial_state);
        let request = match target.check.kind() {
            CheckKind::Http(http) => http_request(http, target.address),
            _ => Box::default(),
        };
        let at = now
            + duration_nanos(
                self.options
                    .jitter
                    .first_delay(target.check.timing().interval()),
            );
        let target = Arc::new(target);
        let entry = Arc::new(TargetEntry {
            target: Arc::clone(&target),
            stats: TargetStats::new(rise_fall.health(), now),
        });
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.cells.push(Cell::default());
                (self.cells.len() - 1) as u32
            }
        };
        self.by_target.insert(target, index);
        let cell = &mut self.cells[index as usize];
        cell.seq = cell.seq.wrapping_add(1);
        cell.slot = Some(Slot {
            entry,
            request,
            rise_fall,
            phase: Phase::Scheduled { at },
        });
        self.timers.push(Timer {
            at,
            slot: index,
            seq: cell.seq,
        });
    }

    fn on_ready(&mut self, data: u64, events: EpollFlags, now: u64) {
        let (index, seq) = ((data >> 32) as u32, data as u32);
        let Some(cell) = self.cells.get_mut(index as usize) else {
            return;
        };
        if cell.seq != seq {
            return;
        }
        let Some(slot) = cell.slot.as_mut() else {
            return;
        };
        let Phase::Probing { probe, .. } = &mut slot.phase else {
            return;
        };
        if let Step::Done(result) =
            probe.on_ready(events, slot.entry.target.check.kind(), &slot.request)
        {
            self.finish(index, result, now);
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        // Timeouts first: they free places for the probes that are due.
        while let Some(timer) = self.deadlines.pop_due(now) {
            let probing = matches!(
                self.cells.get(timer.slot as usize),
                Some(Cell { seq, slot: Some(Slot { phase: Phase::Probing { .. }, .. }) }) if *seq == timer.seq
            );
            if probing {
                self.finish(timer.slot, CheckResult::Failed(FailureReason::Timeout), now);
            }
        }
        while let Some(timer) = self.timers.pop_due(now) {
            let Some(cell) = self.cells.get_mut(timer.slot as usize) else {
                continue;
            };
            if cell.seq != timer.seq {
                continue;
            }
            let Some(slot) = cell.slot.as_mut() else {
                continue;
            };
            match slot.phase {
                Phase::Scheduled { at } => {
                    if self.in_flight < self.options.max_in_flight {
                        self.start(timer.slot, at, now);
                    } else {
                        cell.seq = cell.seq.wrapping_add(1);
                        slot.phase = Phase::Waiting { due: at };
                        self.waiting.push_back((timer.slot, cell.seq));
                        self.shared.counters.deferred.inc();
                    }
                }
                Phase::Probing { .. } | Phase::Waiting { .. } => {}
            }
        }
    }

    fn start_waiting(&mut self) {
        let now = self.now();
        while self.in_flight < self.options.max_in_flight {
            let Some((index, seq)) = self.waiting.pop_front() else {
                break;
            };
            let cell = &self.cells[index as usize];
            if cell.seq != seq {
                continue;
            }
            if let Some(Slot {
                phase: Phase::Waiting { due },
                ..
            }) = cell.slot
            {
                self.start(index, due, now);
            }
        }
    }

    /// Starts the probe of slot `index`, which was due at `due`.
    fn start(&mut self, index: u32, due: u64, now: u64) {
        let counters = &self.shared.counters;
        counters
            .start_delay
            .record(Duration::from_nanos(now.saturating_sub(due)));
        let Some(slot) = self.cells[index as usize].slot.as_ref() else {
            return;
        };
        let target = &slot.entry.target;
        let kind = target.check.kind();
        let (probe, timeout) = match Probe::start(target.address, kind, &slot.request) {
            Ok((probe, Step::Pending)) => {
                counters.started.inc();
                (probe, duration_nanos(target.check.timing().timeout()))
            }
            Ok((_closed, Step::Done(result))) => {
                counters.started.inc();
                return self.complete(index, result, now, now);
            }
            Err(StartError::Failed(reason)) => {
                counters.started.inc();
                return self.complete(index, CheckResult::Failed(reason), now, now);
            }
            Err(StartError::Local(_)) => {
                counters.local_errors.inc();
                return self.schedule_next(index, now, now);
            }
        };
        let seq = self.cells[index as usize].seq.wrapping_add(1);
        let registered = self.epoll.add(
            probe.fd(),
            EpollEvent::new(interest(kind), event_data(index, seq)),
        );
        if registered.is_err() {
            drop(probe);
            counters.local_errors.inc();
            return self.schedule_next(index, now, now);
        }
        let cell = &mut self.cells[index as usize];
        cell.seq = seq;
        if let Some(slot) = cell.slot.as_mut() {
            slot.phase = Phase::Probing {
                probe,
                started: now,
            };
        }
        self.deadlines.push(
            timeout,
            Timer {
                at: now + timeout,
                slot: index,
                seq,
            },
        );
        self.in_flight += 1;
        self.shared.counters.set_in_flight(self.in_flight);
    }

    /// Ends slot `index`'s probe in flight with `result`.
    fn finish(&mut self, index: u32, result: CheckResult, now: u64) {
        let Some(slot) = self.cells[index as usize].slot.as_mut() else {
            return;
        };
        let phase = std::mem::replace(&mut slot.phase, Phase::Scheduled { at: now });
        let Phase::Probing { probe, started } = phase else {
            slot.phase = phase;
            return;
        };
        // Closes the socket (a TCP one with a RST) and leaves epoll.
        drop(probe);
        self.in_flight -= 1;
        self.shared.counters.set_in_flight(self.in_flight);
        self.complete(index, result, started, now);
    }

    /// Records a check of slot `index` that started at `started` and
    /// ended at `now`, and schedules the next one.
    fn complete(&mut self, index: u32, result: CheckResult, started: u64, now: u64) {
        let Some(slot) = self.cells[index as usize].slot.as_mut() else {
            return;
        };
        let latency = Duration::from_nanos(now.saturating_sub(started));
        let stats = &slot.entry.stats;
        stats.record(result, latency, started);
        let from = slot.rise_fall.health();
        if let Some(to) = slot
            .rise_fall
            .observe(result.is_ok(), slot.entry.target.check.timing())
        {
            stats.transitions.inc();
            stats.set_state(to, now);
            let transition = Transition {
                target: Arc::clone(&slot.entry.target),
                from,
                to,
                at: self.shared.epoch + Duration::from_nanos(now),
                result,
                latency,
                checks: stats.checks.get(),
                failures: stats.failures.get(),
            };
            match self.transitions.try_send(transition) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => self.shared.counters.transitions_dropped.inc(),
            }
        }
        self.schedule_next(index, started, now);
    }

    /// Schedules slot `index`'s next probe one jittered interval after
    /// `started`, and not before `now`.
    fn schedule_next(&mut self, index: u32, started: u64, now: u64) {
        let cell = &mut self.cells[index as usize];
        let Some(slot) = cell.slot.as_mut() else {
            return;
        };
        let interval = slot.entry.target.check.timing().interval();
        let at = (started + duration_nanos(self.options.jitter.next_interval(interval))).max(now);
        cell.seq = cell.seq.wrapping_add(1);
        slot.phase = Phase::Scheduled { at };
        self.timers.push(Timer {
            at,
            slot: index,
            seq: cell.seq,
        });
    }
}
