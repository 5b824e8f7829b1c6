//! The control side's end of a capture: arms one capture at a time and
//! drains every worker's ring.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use super::filter::CaptureFilter;
use super::ring::{SlotRing, RING_SLOTS};
use super::tap::CaptureTap;
use crate::pipeline::Verdict;

/// What the control side and every worker share: whether a capture is
/// armed (its session number; 0 when none is) and its filter.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) armed: AtomicU64,
    pub(super) filter: ArcSwapOption<CaptureFilter>,
}

/// The control side's handle on every worker's capture ring.
#[derive(Debug)]
pub struct CaptureHub {
    shared: Arc<Shared>,
    rings: Vec<Arc<SlotRing>>,
    /// Interface names, by port index.
    interfaces: Vec<String>,
    /// The workers' clock origin.
    epoch: Instant,
    next_session: AtomicU64,
    busy: AtomicBool,
}

/// A capture is running already: one at a time.
#[derive(Debug, thiserror::Error)]
#[error("a capture is running already; one runs at a time")]
pub struct CaptureBusy;

/// One frame taken from a worker's ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The worker that decided it.
    pub worker: usize,
    /// When, on the workers' clock (ns since the daemon's epoch).
    pub time_ns: u64,
    /// The port it came in on.
    pub ingress: u16,
    /// What was decided.
    pub verdict: Verdict,
    /// Its whole length.
    pub length: u32,
    /// Its first bytes.
    pub bytes: Vec<u8>,
}

impl CaptureHub {
    /// A hub for `workers` workers of ports named `interfaces` (by port
    /// index), whose clock starts at `epoch`; and each worker's tap, in
    /// worker order. Every ring is allocated here.
    pub fn new(
        workers: usize,
        interfaces: Vec<String>,
        epoch: Instant,
    ) -> (Arc<CaptureHub>, Vec<CaptureTap>) {
        let shared = Arc::new(Shared::default());
        let rings: Vec<Arc<SlotRing>> = (0..workers)
            .map(|_| Arc::new(SlotRing::new(RING_SLOTS)))
            .collect();
        let taps = rings
            .iter()
            .map(|ring| CaptureTap::linked(Arc::clone(&shared), Arc::clone(ring)))
            .collect();
        let hub = CaptureHub {
            shared,
            rings,
            interfaces,
            epoch,
            next_session: AtomicU64::new(1),
            busy: AtomicBool::new(false),
        };
        (Arc::new(hub), taps)
    }

    /// The name of port `port`.
    pub fn interface(&self, port: u16) -> String {
        self.interfaces
            .get(usize::from(port))
            .cloned()
            .unwrap_or_else(|| format!("port{port}"))
    }

    /// Workers it has a ring of.
    pub fn workers(&self) -> usize {
        self.rings.len()
    }

    /// Arms a capture with `filter`; it runs until the session is dropped.
    pub fn start(self: &Arc<Self>, filter: CaptureFilter) -> Result<CaptureSession, CaptureBusy> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(CaptureBusy);
        }
        // Frames of an earlier capture still in a ring are not this one's.
        for ring in &self.rings {
            while let Some(slot) = ring.take() {
                ring.give_back(slot);
            }
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let lost_before = self.rings.iter().map(|r| r.lost()).collect();
        let unix_at_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(self.epoch.elapsed());
        self.shared.filter.store(Some(Arc::new(filter)));
        // The filter first, then the session that makes workers read it.
        self.shared.armed.store(session, Ordering::Release);
        Ok(CaptureSession {
            hub: Arc::clone(self),
            session,
            lost_before,
            unix_at_epoch_ns: u64::try_from(unix_at_epoch.as_nanos()).unwrap_or(0),
            next_ring: 0,
        })
    }
}

/// A running capture; dropping it disarms the workers.
#[derive(Debug)]
pub struct CaptureSession {
    hub: Arc<CaptureHub>,
    session: u64,
    lost_before: Vec<u64>,
    unix_at_epoch_ns: u64,
    /// The ring the next drain starts at, so each gets its turn.
    next_ring: usize,
}

impl CaptureSession {
    /// Takes up to `max` frames from the workers' rings, round the rings
    /// in turn, into `out`; returns how many.
    pub fn drain(&mut self, max: usize, out: &mut Vec<Captured>) -> usize {
        let rings = &self.hub.rings;
        let mut taken = 0;
        let mut idle = 0;
        while taken < max && idle < rings.len() {
            let index = self.next_ring % rings.len().max(1);
            self.next_ring = self.next_ring.wrapping_add(1);
            let Some(ring) = rings.get(index) else {
                break;
            };
            let Some(slot) = ring.take() else {
                idle += 1;
                continue;
            };
            idle = 0;
            if slot.session == self.session {
                out.push(Captured {
                    worker: index,
                    time_ns: slot.time_ns,
                    ingress: slot.ingress,
                    verdict: slot.verdict,
                    length: slot.length,
                    bytes: slot.data().to_vec(),
                });
                taken += 1;
            }
            ring.give_back(slot);
        }
        taken
    }

    /// Frames that matched but found their worker's ring full, since the
    /// capture began.
    pub fn lost(&self) -> u64 {
        self.hub
            .rings
            .iter()
            .zip(&self.lost_before)
            .map(|(ring, before)| ring.lost().saturating_sub(*before))
            .sum()
    }

    /// A worker's time (ns since the daemon's epoch) as ns since the Unix
    /// epoch.
    pub fn unix_ns(&self, time_ns: u64) -> u64 {
        self.unix_at_epoch_ns.saturating_add(time_ns)
    }

    /// The hub (for interface names).
    pub fn hub(&self) -> &CaptureHub {
        &self.hub
    }
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        self.hub.shared.armed.store(0, Ordering::Release);
        self.hub.shared.filter.store(None);
        self.hub.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::DropReason;

    fn all(snap: usize) -> CaptureFilter {
        CaptureFilter {
            drops_only: false,
            reason: None,
            keys: Vec::new(),
            sample_every: 1,
            snap,
        }
    }

    #[test]
    fn taps_record_only_while_armed_and_one_capture_runs_at_a_time() {
        let (hub, mut taps) = CaptureHub::new(2, vec!["c".into(), "b".into()], Instant::now());
        let frame = [0xabu8; 100];
        let ttl = Verdict::Drop(DropReason::TtlExpired);
        assert!(taps[0].armed().is_none(), "nothing armed");
        let mut session = hub.start(all(60)).unwrap();
        assert!(hub.start(all(60)).is_err(), "one at a time");
        taps[0].armed().unwrap().offer(|| &frame[..], 1, ttl, 5);
        taps[1]
            .armed()
            .unwrap()
            .offer(|| &frame[..], 0, Verdict::Pass, 6);
        let mut out = Vec::new();
        assert_eq!(session.drain(10, &mut out), 2);
        assert_eq!(out[0].worker, 0);
        assert_eq!(
            (out[0].ingress, out[0].verdict, out[0].length),
            (1, ttl, 100)
        );
        assert_eq!(out[0].bytes, vec![0xab; 60], "cut at the snap length");
        assert_eq!((out[1].worker, out[1].verdict), (1, Verdict::Pass));
        assert_eq!(hub.interface(1), "b");
        drop(session);
        assert!(taps[0].armed().is_none(), "disarmed when the session ends");

        // Sampling: one in three matching frames, per worker.
        let mut session = hub
            .start(CaptureFilter {
                sample_every: 3,
                drops_only: true,
                ..all(10)
            })
            .unwrap();
        for _ in 0..9 {
            let mut armed = taps[0].armed().unwrap();
            armed.offer(|| &frame[..], 0, ttl, 1);
            armed.offer(|| &frame[..], 0, Verdict::Transmit(1), 1);
        }
        out.clear();
        assert_eq!(session.drain(100, &mut out), 3);
        assert_eq!(session.lost(), 0);
    }

    #[test]
    fn a_full_ring_loses_frames_and_stale_frames_are_not_reported() {
        let (hub, mut taps) = CaptureHub::new(1, Vec::new(), Instant::now());
        let session = hub.start(all(16)).unwrap();
        let mut armed = taps[0].armed().unwrap();
        for _ in 0..RING_SLOTS + 5 {
            armed.offer(|| &[1u8; 20][..], 0, Verdict::Pass, 1);
        }
        assert_eq!(session.lost(), 5);
        drop(session);
        // The next capture neither reports the last one's frames nor its
        // losses.
        let mut session = hub.start(all(16)).unwrap();
        let mut out = Vec::new();
        assert_eq!(session.drain(1_000, &mut out), 0);
        assert_eq!(session.lost(), 0);
        taps[0]
            .armed()
            .unwrap()
            .offer(|| &[2u8; 20][..], 0, Verdict::Pass, 9);
        assert_eq!(session.drain(1_000, &mut out), 1);
        assert_eq!(out[0].bytes, vec![2u8; 16]);
        assert!(session.unix_ns(9) > 1_600_000_000_000_000_000);
    }

    #[test]
    fn a_detached_tap_is_never_armed() {
        let mut tap = CaptureTap::detached();
        assert!(tap.armed().is_none());
    }
}
