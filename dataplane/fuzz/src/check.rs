//! The properties each fuzz target checks. A violated property panics,
//! which libFuzzer reports as a crash with the input that caused it.

use std::cell::RefCell;

use flowgate_dataplane::admission::{
    BackendConnections, ClientRateTable, WorkerAdmission, WorkerConnections,
};
use flowgate_dataplane::flow::FlowTable;
use flowgate_dataplane::pipeline::{Counter, DropReason, Pipeline, PipelineCounters, Verdict};
use flowgate_dataplane::port::MemoryFrames;
use flowgate_dataplane::wire::{
    self, arp, ethernet, ip_proto, is_v4_mapped, Fragment, PacketMeta, L3, MAX_VLAN_TAGS,
};

use crate::batch::{batch_ranges, BatchFrames, FRAME_SLOT, MAX_BATCH};
use crate::fixture::{Fixture, FLOW_CAPACITY};
use crate::repair::repair_checksums;
use crate::script::{self, Step};

/// Smallest IPv4 header.
const IPV4_MIN_HEADER: usize = 20;
/// Largest IPv4 header.
const IPV4_MAX_HEADER: usize = 60;
/// The fixed IPv6 header.
const IPV6_HEADER: usize = 40;
/// Smallest TCP header.
const TCP_MIN_HEADER: usize = 20;
/// The UDP header.
const UDP_HEADER: usize = 8;
/// The part of an ICMP header the parser reads.
const ICMP_MIN_HEADER: usize = 4;

/// Records the expiry sweep may look at in one go (as a worker's budget).
const EXPIRE_BUDGET: usize = 16;

/// The clock at the start of a run: not 0, so "never seen" and "seen at
/// the start" differ.
const START_NS: u64 = 1_000_000_000_000;

/// The `parse` target: any bytes parse or are refused without panicking,
/// and an accepted frame's metadata is consistent with the frame.
pub fn parse_frame(frame: &[u8]) {
    if let Ok(meta) = wire::parse(frame) {
        check_meta(&meta, frame);
    }
    // The checksum helper reads at the parsed offsets: it must cope too.
    let _ = wire::frame_checksums_ok(frame);
}

/// The invariants of a [`PacketMeta`] that `wire::parse` returned for
/// `frame`.
pub fn check_meta(meta: &PacketMeta, frame: &[u8]) {
    let l3 = usize::from(meta.l3_offset);
    let l4 = usize::from(meta.l4_offset);
    let end = usize::from(meta.ip_end);
    assert!(
        l3 <= l4 && l4 <= end && end <= frame.len(),
        "offsets out of order: l3 {l3} l4 {l4} ip_end {end} len {}",
        frame.len()
    );
    assert!(
        meta.vlan_tags <= MAX_VLAN_TAGS,
        "{} VLAN tags",
        meta.vlan_tags
    );
    assert_eq!(
        l3,
        ethernet::HEADER_LEN + usize::from(meta.vlan_tags) * ethernet::VLAN_TAG_LEN,
        "the L3 header does not follow the Ethernet header and its tags"
    );
    match meta.l3 {
        L3::Arp => {
            assert_eq!(end - l3, arp::PACKET_LEN, "ARP length");
            assert_eq!(meta.tuple, Default::default(), "ARP has no tuple");
            return;
        }
        L3::Ipv4 => {
            assert!(
                (IPV4_MIN_HEADER..=IPV4_MAX_HEADER).contains(&(l4 - l3)),
                "IPv4 header of {} bytes",
                l4 - l3
            );
            assert!(is_v4_mapped(&meta.tuple.src) && is_v4_mapped(&meta.tuple.dst));
        }
        L3::Ipv6 => assert!(l4 - l3 >= IPV6_HEADER, "IPv6 header of {} bytes", l4 - l3),
    }
    let protocol = meta.tuple.protocol;
    if meta.fragment == Fragment::NonFirst {
        assert_eq!((meta.tuple.src_port, meta.tuple.dst_port), (0, 0));
    } else {
        let l4_len = end - l4;
        let min = match protocol {
            ip_proto::TCP => TCP_MIN_HEADER,
            ip_proto::UDP => UDP_HEADER,
            ip_proto::ICMP if meta.l3 == L3::Ipv4 => ICMP_MIN_HEADER,
            ip_proto::ICMPV6 if meta.l3 == L3::Ipv6 => ICMP_MIN_HEADER,
            _ => 0,
        };
        assert!(
            l4_len >= min,
            "{l4_len} bytes of L4 for protocol {protocol}"
        );
    }
    if protocol != ip_proto::TCP {
        assert_eq!(meta.tcp_flags, 0, "TCP flags on protocol {protocol}");
    }
    if !matches!(protocol, ip_proto::TCP | ip_proto::UDP) {
        assert_eq!(
            meta.tuple.src_port, 0,
            "a source port on protocol {protocol}"
        );
    }
}

/// The `pipeline` target: runs a [script](crate::script) of frames
/// through the pipeline and a small connection table, under the
/// [fixture](crate::fixture)'s snapshots. No frame may make it panic, and
/// every verdict must keep its promises (see [`check_verdict`]).
///
/// The script runs twice side by side: in [batches](crate::batch) through
/// `Pipeline::process_batch`, as a worker runs it, and frame by frame
/// through `Pipeline::process_frame`. Both must decide and rewrite every
/// frame alike and leave their connection tables and counters alike.
pub fn pipeline_script(input: &[u8]) {
    run_script(input, |_| {});
}

/// What [`run_script`] tells its observer after each step, before the
/// step's checks run.
#[derive(Debug)]
pub struct StepReport<'a> {
    /// The step's position in the script, from 0.
    pub index: usize,
    /// The step as decoded.
    pub step: &'a Step<'a>,
    /// The frame as processed (after any checksum repair).
    pub frame_in: &'a [u8],
    /// The frame as the batch pipeline left it.
    pub frame_out: &'a [u8],
    /// The batch pipeline's verdict.
    pub verdict: Verdict,
    /// Which snapshot of the fixture's chain was in force.
    pub generation: usize,
    /// The clock.
    pub now_ns: u64,
}

/// Entries of each lane's per-client table: room for every client a
/// script can name (at most 256 steps) many times over. The daemon's
/// default (`DEFAULT_CLIENT_TABLE_ENTRIES`, 1 MiB) would cost more to
/// allocate and zero than most scripts cost to run.
const CLIENT_TABLE_ENTRIES: usize = 1024;

/// The per-client table's seed: fixed, so that an input chooses the same
/// sets in every process (the daemon seeds it at random).
const CLIENT_TABLE_SEED: u64 = 0x666c_6f77_6761_7465;

/// A pipeline with its own connection table.
pub(crate) struct Lane {
    pub(crate) pipeline: Pipeline,
    pub(crate) flows: FlowTable,
    /// The lane's backend connection counts, kept from script to script
    /// while they read zero (see [`reset`](Self::reset)): the first table
    /// that counts on them allocates and zeroes their lines for 1 024
    /// backends, which cost more than a short script.
    backends: WorkerConnections,
}

/// One worker's handle on new backend connection counts for the fixture's
/// endpoints.
fn new_backend_counts(fixture: &Fixture) -> WorkerConnections {
    let (_, mut handles) = BackendConnections::new(1, fixture.endpoint_limit);
    handles
        .pop()
        .unwrap_or_else(|| unreachable!("one worker, one handle"))
}

impl Lane {
    /// A lane as it is at the start of every script: see [`reset`](Self::reset).
    pub(crate) fn new(fixture: &Fixture) -> Lane {
        let mut lane = Lane {
            pipeline: Pipeline::new(),
            flows: FlowTable::new(FLOW_CAPACITY, fixture.timeouts),
            backends: new_backend_counts(fixture),
        };
        lane.reset(fixture);
        lane
    }

    /// Puts the lane back in the state every script starts from, without
    /// building a new `Pipeline` (whose admission state costs more than a
    /// script): a fresh connection table and admission state (client
    /// table, backend connection counts, refusal counters), and per-service
    /// state emptied by adopting the empty snapshot, so that the first
    /// snapshot of the script sizes it anew from zero (the weighted
    /// round-robin cursors). The pipeline's frame counters run on across
    /// scripts: [`run_script`] checks what a script added to them.
    ///
    /// The backend connection counts are the last script's, emptied: every
    /// connection leaves the table as expiry removes one (at the end of
    /// time, when all are idle past their timeouts), which takes it off
    /// the counts. They are made anew if a connection is left, or if the
    /// fixture's rules cap a backend's connections: then the counts
    /// decide, and a backend the last script flagged overloaded must not
    /// be (reading every count back to check costs more).
    pub(crate) fn reset(&mut self, fixture: &Fixture) {
        // A table with no connection (a script of junk) has none to take off.
        if !self.flows.is_empty() {
            let capacity = self.flows.capacity();
            self.flows.expire(u64::MAX, capacity);
        }
        if !self.flows.is_empty() || fixture.caps_connections {
            self.backends = new_backend_counts(fixture);
        }
        self.pipeline.set_admission(WorkerAdmission::new(
            ClientRateTable::new(CLIENT_TABLE_ENTRIES, CLIENT_TABLE_SEED),
            self.backends.clone(),
        ));
        let mut nothing = MemoryFrames::new(1, 1);
        self.pipeline.process_batch(
            &mut nothing,
            &mut [],
            0,
            &fixture.empty,
            &mut self.flows,
            START_NS,
            &mut Vec::new(),
        );
        self.flows = FlowTable::new(FLOW_CAPACITY, fixture.timeouts);
    }
}

/// The two lanes of [`run_script`] and the buffers it works in, kept
/// between scripts so that each script pays for a
/// [`reset`](Lane::reset), not for two new pipelines and new buffers.
struct Lanes {
    batched: Lane,
    single: Lane,
    scratch: Scratch,
}

/// Where [`run_script`] keeps a batch's frames. Nothing in it outlives a
/// batch: each batch overwrites what it uses.
struct Scratch {
    /// The batch lane's frames, in slots that hold any frame (the same
    /// slots for every script: see [`BatchFrames::clear`]).
    memory: BatchFrames,
    verdicts: Vec<Verdict>,
    /// The batch's frames as processed (after any repair); only the first
    /// `batch.len()` are the batch's.
    inputs: Vec<Vec<u8>>,
    /// The frame-by-frame lane's copy of the frame at hand.
    frame: Vec<u8>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            memory: BatchFrames::new(FRAME_SLOT),
            verdicts: Vec::with_capacity(MAX_BATCH),
            inputs: Vec::with_capacity(MAX_BATCH),
            frame: Vec::new(),
        }
    }
}

thread_local! {
    /// This thread's lanes between scripts; `None` before the first script
    /// and after one that panicked (whose lanes are dropped, not reused).
    static LANES: RefCell<Option<Lanes>> = const { RefCell::new(None) };
}

/// Runs `run` on lanes in the state every script starts from: this
/// thread's, reset, or new ones. They are kept for the next script only if
/// `run` returns.
fn with_lanes<R>(fixture: &Fixture, run: impl FnOnce(&mut Lanes) -> R) -> R {
    let mut lanes = match LANES.with(|kept| kept.borrow_mut().take()) {
        Some(mut lanes) => {
            lanes.batched.reset(fixture);
            lanes.single.reset(fixture);
            lanes
        }
        None => Lanes {
            batched: Lane::new(fixture),
            single: Lane::new(fixture),
            scratch: Scratch::new(),
        },
    };
    let result = run(&mut lanes);
    LANES.with(|kept| *kept.borrow_mut() = Some(lanes));
    result
}

/// [`pipeline_script`], telling `observe` about every step (for triage:
/// see the `show` example).
pub fn run_script(input: &[u8], observe: impl FnMut(&StepReport<'_>)) {
    let fixture = Fixture::get();
    with_lanes(fixture, |lanes| {
        run_script_on(fixture, lanes, input, observe)
    });
}

/// [`run_script`] on `lanes`, which are in the state every script starts
/// from.
fn run_script_on(
    fixture: &Fixture,
    lanes: &mut Lanes,
    input: &[u8],
    mut observe: impl FnMut(&StepReport<'_>),
) {
    let Lanes {
        batched,
        single,
        scratch,
    } = lanes;
    let batched_before = Counts::of(batched.pipeline.counters());
    let single_before = Counts::of(single.pipeline.counters());
    let Scratch {
        memory,
        verdicts,
        inputs,
        frame,
    } = scratch;
    let steps: Vec<Step<'_>> = script::steps(input).collect();
    let mut generation = 0usize;
    let mut now_ns = START_NS;
    for range in batch_ranges(&steps) {
        let batch = &steps[range.clone()];
        let Some(first) = batch.first() else {
            continue;
        };
        if first.switch_snapshot {
            generation = (generation + 1) % fixture.snapshots.len();
        }
        let snapshot = &fixture.snapshots[generation];
        now_ns = now_ns.saturating_add(first.advance_ns);
        if first.expire {
            batched.flows.expire(now_ns, EXPIRE_BUDGET);
            single.flows.expire(now_ns, EXPIRE_BUDGET);
        }
        memory.clear();
        for (i, step) in batch.iter().enumerate() {
            if inputs.len() == i {
                inputs.push(Vec::new());
            }
            let f = &mut inputs[i];
            f.clear();
            f.extend_from_slice(step.frame);
            if step.repair_checksums {
                repair_checksums(f);
            }
            assert!(memory.push(f), "a batch holds its frames");
        }
        let inputs = &inputs[..batch.len()];
        let ingress = first.ingress;
        let (frame_memory, frames) = memory.parts();
        batched.pipeline.process_batch(
            frame_memory,
            frames,
            ingress,
            snapshot,
            &mut batched.flows,
            now_ns,
            verdicts,
        );
        assert_eq!(verdicts.len(), batch.len(), "one verdict per frame");
        for (i, (step, input)) in batch.iter().zip(inputs).enumerate() {
            frame.clear();
            frame.extend_from_slice(input);
            let alone =
                single
                    .pipeline
                    .process_frame(frame, ingress, snapshot, &mut single.flows, now_ns);
            let verdict = verdicts[i];
            let out = memory.frame(i);
            observe(&StepReport {
                index: range.start + i,
                step,
                frame_in: input,
                frame_out: out,
                verdict,
                generation,
                now_ns,
            });
            assert_eq!(verdict, alone, "a batch decided unlike frame-by-frame");
            assert!(
                out == frame.as_slice(),
                "a batch rewrote unlike frame-by-frame"
            );
            check_verdict(verdict, input, out, snapshot);
        }
        check_flow_table(&batched.flows);
        assert_eq!(
            (batched.flows.len(), batched.flows.stats()),
            (single.flows.len(), single.flows.stats()),
            "a batch left the connection table unlike frame-by-frame"
        );
    }
    check_counters(
        (&batched.pipeline, batched_before),
        (&single.pipeline, single_before),
    );
}

/// After a script: every frame it added to the batch pipeline's counters
/// has exactly one counted fate, and both pipelines counted alike. Each
/// pipeline comes with its counts before the script: the counters run on
/// across scripts (see [`Lane::reset`]), and this script's frames are what
/// it added.
fn check_counters(
    (batched, batched_before): (&Pipeline, Counts),
    (single, single_before): (&Pipeline, Counts),
) {
    let batched_after = Counts::of(batched.counters());
    assert_eq!(
        batched_after.received() - batched_before.received(),
        batched_after.fates() - batched_before.fates(),
        "every frame has exactly one counted fate"
    );
    let single_after = Counts::of(single.counters());
    if (batched_before, batched_after) != (single_before, single_after) {
        // The counters by name, to read.
        assert_eq!(
            batched.counters().snapshot(),
            single.counters().snapshot(),
            "a batch counted unlike frame-by-frame"
        );
        panic!("a batch counted unlike frame-by-frame, before this script: {batched_before:?} and {single_before:?}");
    }
}

/// Every counter of a pipeline, read as plain numbers in a fixed order:
/// the values `PipelineCounters::snapshot` reports, without its map of
/// drop reasons by name, whose build and sort cost a fifth of a script
/// once the counters that run on across scripts have seen most reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    /// The counters other than drops, in declaration order.
    frames: [u64; 20],
    /// Drops by reason index.
    drops: [u64; DropReason::COUNT],
}

impl Counts {
    fn of(counters: &PipelineCounters) -> Counts {
        // Every field is named (no `..`): a counter added to the pipeline
        // fails to compile here until it is compared too.
        let PipelineCounters {
            rx_packets,
            rx_bytes,
            forwarded,
            tx_packets,
            tx_bytes,
            passed,
            flow_hits,
            new_flows,
            liveness_skips,
            panic_flows,
            failed_open_flows,
            dead_backend_resets,
            dead_backend_rescheduled,
            stateless_replies,
            icmp_errors_translated,
            fanout_datagrams,
            fanout_copies,
            fanout_flow_evictions,
            synproxy_connections,
            synproxy_established,
            drops,
        } = counters;
        Counts {
            frames: [
                rx_packets,
                rx_bytes,
                forwarded,
                tx_packets,
                tx_bytes,
                passed,
                flow_hits,
                new_flows,
                liveness_skips,
                panic_flows,
                failed_open_flows,
                dead_backend_resets,
                dead_backend_rescheduled,
                stateless_replies,
                icmp_errors_translated,
                fanout_datagrams,
                fanout_copies,
                fanout_flow_evictions,
                synproxy_connections,
                synproxy_established,
            ]
            .map(Counter::get),
            drops: drops.each_ref().map(Counter::get),
        }
    }

    /// Frames received (`rx_packets`).
    fn received(&self) -> u64 {
        self.frames[0]
    }

    /// Frames forwarded, passed or dropped (`forwarded`, `passed`, drops).
    fn fates(&self) -> u64 {
        self.frames[2] + self.frames[5] + self.drops.iter().sum::<u64>()
    }
}

/// What a verdict promises about the frame it was given (`before`) and the
/// frame the pipeline left (`after`, the same length by construction).
///
/// - `Transmit(port)`: `port` is one of the gateway's interfaces; the
///   frame still parses, to the same protocol; its source MAC is the
///   egress interface's; TTL / hop limit went down by one; and if its
///   checksums were right before, they are right after.
/// - `Pass`: the frame is handed to the kernel unchanged.
/// - `Drop`: nothing (the frame is discarded).
pub fn check_verdict(
    verdict: Verdict,
    before: &[u8],
    after: &[u8],
    snapshot: &flowgate_dataplane::table::Snapshot,
) {
    match verdict {
        Verdict::Transmit(port) => {
            let Some(egress_mac) = snapshot.interface_mac(port) else {
                panic!("transmit on port {port}, which is not an interface");
            };
            let (Ok(meta_in), Ok(meta_out)) = (wire::parse(before), wire::parse(after)) else {
                panic!("a transmitted frame that does not parse (before or after the rewrite)");
            };
            assert_eq!(meta_out.l3, meta_in.l3);
            assert_eq!(meta_out.tuple.protocol, meta_in.tuple.protocol);
            assert_eq!(
                (meta_out.l3_offset, meta_out.l4_offset, meta_out.ip_end),
                (meta_in.l3_offset, meta_in.l4_offset, meta_in.ip_end),
                "a rewrite moved the headers"
            );
            assert_eq!(after.get(6..12), Some(&egress_mac[..]), "source MAC");
            assert_eq!(
                meta_out.ttl,
                meta_in.ttl.wrapping_sub(1),
                "TTL not decremented"
            );
            if wire::frame_checksums_ok(before) {
                assert!(
                    wire::frame_checksums_ok(after),
                    "checksums broken by the rewrite"
                );
            }
        }
        Verdict::Pass => assert!(before == after, "a passed frame was changed"),
        Verdict::Drop(_) => {}
    }
}

/// The connection table stays within its capacity, and its statistics
/// account for every record that ever entered it.
pub fn check_flow_table(flows: &FlowTable) {
    assert!(flows.len() <= flows.capacity(), "table over capacity");
    let s = flows.stats();
    let departed = s.removed + s.expired + s.evicted + s.replaced + s.reply_conflicts;
    assert_eq!(
        s.inserted.checked_sub(departed),
        Some(flows.len() as u64),
        "flow statistics do not add up: {s:?}, len {}",
        flows.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;
    use std::sync::Arc;

    /// Whether `backends` reads as new for every endpoint of the fixture: no
    /// connection counted, no backend flagged overloaded.
    fn reads_as_new(backends: &WorkerConnections, fixture: &Fixture) -> bool {
        let table = backends.table();
        (0..fixture.endpoint_limit).all(|id| table.connections(id) == 0 && !table.overloaded(id))
    }

    /// What a script did, step by step: verdict, rewritten frame, snapshot.
    type Outcome = Vec<(Verdict, Vec<u8>, usize)>;

    fn outcome(input: &[u8]) -> Outcome {
        let mut out = Vec::new();
        run_script(input, |r| {
            out.push((r.verdict, r.frame_out.to_vec(), r.generation));
        });
        out
    }

    /// What each seed script does on lanes no other script has touched.
    fn on_new_lanes(inputs: &[(String, Vec<u8>)]) -> Vec<Outcome> {
        inputs
            .iter()
            .map(|(_, input)| {
                let input = input.clone();
                std::thread::spawn(move || outcome(&input))
                    .join()
                    .expect("a seed runs clean")
            })
            .collect()
    }

    #[test]
    fn a_script_does_the_same_run_twice_or_after_any_other() {
        let inputs = seeds::scripts();
        let alone = on_new_lanes(&inputs);
        // The WRR cursors, the connection counts and the table must not
        // leak from one script into the next: forwards, then backwards
        // (each after a different predecessor), then each twice in a row.
        for (i, (name, input)) in inputs.iter().enumerate() {
            assert_eq!(
                outcome(input),
                alone[i],
                "{name} after the scripts before it"
            );
        }
        for (i, (name, input)) in inputs.iter().enumerate().rev() {
            assert_eq!(
                outcome(input),
                alone[i],
                "{name} after the scripts after it"
            );
        }
        for (i, (name, input)) in inputs.iter().enumerate() {
            assert_eq!(outcome(input), alone[i], "{name}, first run");
            assert_eq!(outcome(input), alone[i], "{name}, second run");
        }
        // The frame memory is kept between scripts: after batches of the
        // longest frames a script can carry, of bytes no seed has.
        let long = [0xa5; u16::MAX as usize];
        let steps = [script::Step::new(&long); 3];
        let filler = script::encode(&steps);
        for (i, (name, input)) in inputs.iter().enumerate() {
            outcome(&filler);
            assert_eq!(outcome(input), alone[i], "{name} after the longest frames");
        }
    }

    #[test]
    fn a_script_leaves_the_backend_counts_as_it_found_them() {
        // The connection counts are kept from script to script only if the
        // reset takes every connection off them: the seeds leave
        // connections in the table, and the same counts must read zero.
        let fixture = Fixture::get();
        for (name, input) in seeds::scripts() {
            run_script(&input, |_| {});
            LANES.with(|kept| {
                let mut kept = kept.borrow_mut();
                let lanes = kept.as_mut().expect("lanes kept after a clean script");
                for lane in [&mut lanes.batched, &mut lanes.single] {
                    let counts = Arc::clone(lane.backends.table());
                    lane.reset(fixture);
                    assert!(lane.flows.is_empty(), "{name}: connections after a reset");
                    assert!(
                        Arc::ptr_eq(&counts, lane.backends.table()),
                        "{name}: the counts were not emptied, and were made anew"
                    );
                    assert!(reads_as_new(&lane.backends, fixture), "{name}");
                }
            });
        }
    }

    #[test]
    fn counts_read_what_the_counters_report() {
        let inputs = seeds::scripts();
        let pipeline = {
            let mut lane = Lane::new(Fixture::get());
            for (_, input) in &inputs {
                let fixture = Fixture::get();
                let snapshot = &fixture.snapshots[0];
                for step in script::steps(input) {
                    let mut frame = step.frame.to_vec();
                    lane.pipeline.process_frame(
                        &mut frame,
                        step.ingress,
                        snapshot,
                        &mut lane.flows,
                        START_NS,
                    );
                }
            }
            lane.pipeline
        };
        let counters = pipeline.counters();
        let named = counters.snapshot();
        let counts = Counts::of(counters);
        assert!(named.rx_packets > 0 && named.forwarded > 0 && named.dropped() > 0);
        assert_eq!(counts.received(), named.rx_packets);
        assert_eq!(
            counts.fates(),
            named.forwarded + named.passed + named.dropped()
        );
        for reason in DropReason::all() {
            assert_eq!(counts.drops[reason.index()], counters.drops_for(reason));
        }
        // One more drop of any reason is a difference.
        counters.drop_for(DropReason::TtlExpired);
        assert_ne!(Counts::of(counters), counts);
    }

    #[test]
    fn weighted_round_robin_starts_over_in_every_script() {
        // The wrr service alone decides by a cursor the pipeline keeps:
        // the same new connections must go to the same backends whatever
        // ran before. Find a seed through it and run it after itself.
        let inputs = seeds::scripts();
        let (name, input) = inputs
            .iter()
            .find(|(name, _)| name.contains("wrr"))
            .expect("a seed through the wrr service");
        let first = outcome(input);
        assert!(
            first
                .iter()
                .any(|(v, _, _)| matches!(v, Verdict::Transmit(_))),
            "{name} forwards"
        );
        assert_eq!(outcome(input), first);
        // And after every other seed, each of which may move the cursors.
        for (other, before) in &inputs {
            outcome(before);
            assert_eq!(outcome(input), first, "{name} after {other}");
        }
    }

    #[test]
    fn a_script_that_panics_leaves_no_lanes_behind() {
        let inputs = seeds::scripts();
        let (_, input) = &inputs[0];
        let alone = outcome(input);
        let panicked = std::panic::catch_unwind(|| {
            run_script(input, |_| panic!("an observer that panics"));
        });
        assert!(panicked.is_err());
        assert!(LANES.with(|kept| kept.borrow().is_none()));
        assert_eq!(outcome(input), alone);
    }
}
