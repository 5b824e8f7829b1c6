//! The worker's end of a capture.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::filter::CaptureFilter;
use super::hub::Shared;
use super::ring::{SlotRing, SNAP_MAX};
use crate::pipeline::Verdict;

/// A worker's capture tap: detached (no capture can ever run, as in
/// replay and benches that do not ask for one), or linked to a
/// [`super::CaptureHub`].
#[derive(Debug, Default)]
pub struct CaptureTap {
    link: Option<Link>,
}

#[derive(Debug)]
struct Link {
    shared: Arc<Shared>,
    ring: Arc<SlotRing>,
    /// The capture whose filter is held (0: none yet).
    session: u64,
    filter: Option<Arc<CaptureFilter>>,
    /// Matching frames passed over since the last one recorded.
    skipped: u32,
}

/// A tap while a capture is armed, for one batch.
#[derive(Debug)]
pub struct Armed<'a> {
    link: &'a mut Link,
}

impl CaptureTap {
    /// A tap no capture reaches.
    pub fn detached() -> CaptureTap {
        CaptureTap::default()
    }

    pub(super) fn linked(shared: Arc<Shared>, ring: Arc<SlotRing>) -> CaptureTap {
        CaptureTap {
            link: Some(Link {
                shared,
                ring,
                session: 0,
                filter: None,
                skipped: 0,
            }),
        }
    }

    /// Whether a capture is armed: one atomic load, once per batch. The
    /// filter is taken (a reference count) only when a new capture began.
    #[inline]
    pub fn armed(&mut self) -> Option<Armed<'_>> {
        let link = self.link.as_mut()?;
        let session = link.shared.armed.load(Ordering::Acquire);
        if session == 0 {
            return None;
        }
        if session != link.session {
            link.filter = link.shared.filter.load_full();
            link.session = session;
            link.skipped = 0;
        }
        Some(Armed { link })
    }
}

impl Armed<'_> {
    /// Offers one decided frame: recorded if the filter wants it, the
    /// sampling picks it and the ring has a free slot (else counted lost).
    /// The frame's bytes are fetched (`frame`) only when the filter must
    /// read them or the frame is to be recorded, so that a sampled capture
    /// costs the frames it skips one verdict check and one count.
    #[inline]
    pub fn offer<'f>(
        &mut self,
        frame: impl Fn() -> &'f [u8],
        ingress: u16,
        verdict: Verdict,
        now_ns: u64,
    ) {
        let link = &mut *self.link;
        let Some(filter) = link.filter.as_deref() else {
            return;
        };
        if !filter.wants_verdict(verdict) {
            return;
        }
        let mut fetched = None;
        if !filter.keys.is_empty() {
            let bytes = frame();
            if !filter.wants_frame(bytes) {
                return;
            }
            fetched = Some(bytes);
        }
        link.skipped = link.skipped.saturating_add(1);
        if link.skipped < filter.sample_every {
            return;
        }
        link.skipped = 0;
        let frame = fetched.unwrap_or_else(frame);
        let snap = filter.snap.min(SNAP_MAX).min(frame.len());
        let session = link.session;
        link.ring.record(|slot| {
            slot.session = session;
            slot.time_ns = now_ns;
            slot.ingress = ingress;
            slot.verdict = verdict;
            slot.length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            slot.captured = 0;
            if let (Some(to), Some(from)) = (slot.bytes.get_mut(..snap), frame.get(..snap)) {
                to.copy_from_slice(from);
                slot.captured = snap;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::capture::{CaptureFilter, CaptureHub};
    use crate::flow::{FlowTable, FlowTimeouts};
    use crate::pipeline::{DropReason, Verdict};
    use crate::port::{MemoryFrames, MemoryPort};
    use crate::rules;
    use crate::table::Snapshot;
    use crate::wire::builder::FrameBuilder;
    use crate::worker::{CountingKernelPath, Worker};

    /// A worker with a tap records the frames it decides while a capture
    /// is armed, as it decided them; a forwarded frame rewritten.
    #[test]
    fn a_worker_records_its_verdicts_while_a_capture_is_armed() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml");
        let snapshot = Snapshot::build(&rules::load_file(&path).unwrap(), None);
        let (hub, mut taps) = CaptureHub::new(1, vec!["c".into(), "b".into()], Instant::now());
        let mut memory = MemoryFrames::new(64, 2048);
        let pool = memory.pool();
        let mut worker = Worker::new(FlowTable::new(64, FlowTimeouts::default()), pool, 2, 16)
            .with_capture(taps.remove(0));
        let mut ports = vec![MemoryPort::new("c", 16), MemoryPort::new("b", 16)];
        let mut kernel = CountingKernelPath::default();
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 1);
        let vip = "198.18.100.10:53".parse().unwrap();
        let client = "198.18.0.2:4000".parse().unwrap();
        // To the client-facing interface's MAC: frames for another host
        // are dropped before anything else.
        let gw = snapshot.interface_mac(0).unwrap();
        let to_gw = |b: FrameBuilder| b.macs([2, 0, 0, 0, 0, 9], gw);
        let good = to_gw(FrameBuilder::udp(client, vip)).build();
        let expired = to_gw(FrameBuilder::udp(client, vip)).ttl(1).build();

        // Not armed: nothing recorded.
        assert!(ports[0].inject(&mut memory, &expired));
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 2);

        let mut session = hub
            .start(CaptureFilter {
                drops_only: false,
                reason: None,
                keys: Vec::new(),
                sample_every: 1,
                snap: 2048,
            })
            .unwrap();
        assert!(ports[0].inject(&mut memory, &expired));
        assert!(ports[0].inject(&mut memory, &good));
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 3);
        let mut out = Vec::new();
        assert_eq!(session.drain(10, &mut out), 2);
        assert_eq!(out[0].verdict, Verdict::Drop(DropReason::TtlExpired));
        assert_eq!(out[0].bytes, expired);
        assert_eq!(out[0].time_ns, 3);
        assert_eq!(out[1].verdict, Verdict::Transmit(1));
        let mut sent = Vec::new();
        ports[1].take_transmitted(&memory, &mut sent);
        assert_eq!(out[1].bytes, sent[0], "as it left: rewritten");
        assert_ne!(out[1].bytes, good);
        drop(session);

        assert!(ports[0].inject(&mut memory, &expired));
        worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 4);
        let mut session = hub
            .start(CaptureFilter {
                drops_only: true,
                reason: None,
                keys: Vec::new(),
                sample_every: 1,
                snap: 16,
            })
            .unwrap();
        assert_eq!(session.drain(10, &mut out), 0, "nothing while disarmed");
    }
}
