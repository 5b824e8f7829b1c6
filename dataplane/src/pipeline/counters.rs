//! Per-worker counters.
//!
//! Each worker owns its counters and is their only writer; a control
//! thread reads them at any time and sums workers. A counter is an
//! `AtomicU64` written with a plain load + store (no read-modify-write, no
//! lock prefix: on x86 the same instructions as a `u64 += n`), so the hot
//! path pays nothing for being readable from another thread. The block is
//! cache-line aligned so two workers' counters never share a line.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::DropReason;

/// A single-writer counter, readable from any thread.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds 1. Only the owning worker may call this.
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One worker's pipeline counters.
#[derive(Debug)]
#[repr(align(64))]
pub struct PipelineCounters {
    /// Frames received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Frames given the Transmit verdict.
    pub forwarded: Counter,
    /// Frames a port accepted for sending (counted by the worker).
    pub tx_packets: Counter,
    /// Bytes a port accepted for sending (counted by the worker).
    pub tx_bytes: Counter,
    /// Frames passed to the kernel.
    pub passed: Counter,
    /// Frames of established connections (flow-table hits).
    pub flow_hits: Counter,
    /// Connections created.
    pub new_flows: Counter,
    /// New flows whose scheduler pick was not alive, placed by the skip
    /// rule on another endpoint.
    pub liveness_skips: Counter,
    /// New flows placed ignoring health because too few of the service's
    /// backends were alive (panic mode).
    pub panic_flows: Counter,
    /// New flows placed ignoring health because none of the service's
    /// backends was alive (`when_all_down = "open"`).
    pub failed_open_flows: Counter,
    /// Segments of a down backend's TCP connections answered with a RST
    /// (`on_backend_down = "reset"`); the frames are counted as forwarded.
    pub dead_backend_resets: Counter,
    /// UDP flows moved from a down backend to an alive one.
    pub dead_backend_rescheduled: Counter,
    /// Backends' replies with no connection translated back to their
    /// service's VIP by the rules alone (counted as forwarded too).
    pub stateless_replies: Counter,
    /// ICMP errors about a connection translated through the NAT (counted
    /// as forwarded too).
    pub icmp_errors_translated: Counter,
    /// Client datagrams to fan-out services sent to their receivers.
    pub fanout_datagrams: Counter,
    /// Copies of fan-out datagrams made for the second and later
    /// receivers (sent as well as the original).
    pub fanout_copies: Counter,
    /// Fan-out client flows pushed out of a full table.
    pub fanout_flow_evictions: Counter,
    /// Proxied connections opened: cookie-valid ACKs (the XDP program's
    /// mark) that became a SYN to a backend.
    pub synproxy_connections: Counter,
    /// Proxied connections whose backend answered: their offsets
    /// recorded, the backend's handshake completed.
    pub synproxy_established: Counter,
    /// Frames dropped, by [`DropReason::index`].
    pub drops: [Counter; DropReason::COUNT],
}

impl Default for PipelineCounters {
    fn default() -> Self {
        PipelineCounters {
            rx_packets: Counter::default(),
            rx_bytes: Counter::default(),
            forwarded: Counter::default(),
            tx_packets: Counter::default(),
            tx_bytes: Counter::default(),
            passed: Counter::default(),
            flow_hits: Counter::default(),
            new_flows: Counter::default(),
            liveness_skips: Counter::default(),
            panic_flows: Counter::default(),
            failed_open_flows: Counter::default(),
            dead_backend_resets: Counter::default(),
            dead_backend_rescheduled: Counter::default(),
            stateless_replies: Counter::default(),
            icmp_errors_translated: Counter::default(),
            fanout_datagrams: Counter::default(),
            fanout_copies: Counter::default(),
            fanout_flow_evictions: Counter::default(),
            synproxy_connections: Counter::default(),
            synproxy_established: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
        }
    }
}

impl PipelineCounters {
    /// Counts one drop.
    #[inline(always)]
    pub fn drop_for(&self, reason: DropReason) {
        // index() < COUNT by construction; get() keeps this panic-free.
        if let Some(c) = self.drops.get(reason.index()) {
            c.inc();
        }
    }

    /// Frames dropped for `reason`.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).map_or(0, Counter::get)
    }

    /// Frames dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// A plain copy of the values, for reports.
    pub fn snapshot(&self) -> CounterValues {
        CounterValues {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            forwarded: self.forwarded.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            passed: self.passed.get(),
            flow_hits: self.flow_hits.get(),
            new_flows: self.new_flows.get(),
            liveness_skips: self.liveness_skips.get(),
            panic_flows: self.panic_flows.get(),
            failed_open_flows: self.failed_open_flows.get(),
            dead_backend_resets: self.dead_backend_resets.get(),
            dead_backend_rescheduled: self.dead_backend_rescheduled.get(),
            stateless_replies: self.stateless_replies.get(),
            icmp_errors_translated: self.icmp_errors_translated.get(),
            fanout_datagrams: self.fanout_datagrams.get(),
            fanout_copies: self.fanout_copies.get(),
            fanout_flow_evictions: self.fanout_flow_evictions.get(),
            synproxy_connections: self.synproxy_connections.get(),
            synproxy_established: self.synproxy_established.get(),
            drops: DropReason::all()
                .map(|r| (r.name(), self.drops_for(r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Counter values at one moment (summable across workers).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterValues {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames given the Transmit verdict.
    pub forwarded: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames passed to the kernel.
    pub passed: u64,
    /// Frames of established connections.
    pub flow_hits: u64,
    /// Connections created.
    pub new_flows: u64,
    /// New flows moved off a pick that was not alive.
    pub liveness_skips: u64,
    /// New flows placed in panic mode.
    pub panic_flows: u64,
    /// New flows placed with no backend alive (failing open).
    pub failed_open_flows: u64,
    /// Down backends' TCP segments answered with a RST.
    pub dead_backend_resets: u64,
    /// UDP flows moved off a down backend.
    pub dead_backend_rescheduled: u64,
    /// Backends' replies with no connection translated by the rules.
    pub stateless_replies: u64,
    /// ICMP errors about a connection translated.
    pub icmp_errors_translated: u64,
    /// Client datagrams to fan-out services sent to their receivers.
    pub fanout_datagrams: u64,
    /// Copies of fan-out datagrams made.
    pub fanout_copies: u64,
    /// Fan-out client flows pushed out of a full table.
    pub fanout_flow_evictions: u64,
    /// Proxied connections opened toward a backend.
    pub synproxy_connections: u64,
    /// Proxied connections whose backend answered.
    pub synproxy_established: u64,
    /// Non-zero drop counters by reason name.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

impl CounterValues {
    /// Frames dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ParseError;

    #[test]
    fn counters_add_and_report_by_reason() {
        let c = PipelineCounters::default();
        c.rx_packets.add(3);
        c.drop_for(DropReason::TtlExpired);
        c.drop_for(DropReason::Malformed(ParseError::BadIhl));
        c.drop_for(DropReason::Malformed(ParseError::BadIhl));
        let v = c.snapshot();
        assert_eq!(v.rx_packets, 3);
        assert_eq!(v.drops.get("bad_ihl"), Some(&2));
        assert_eq!(v.drops.get("ttl_expired"), Some(&1));
        assert_eq!(v.dropped(), 3);
        assert_eq!(c.dropped(), 3);
    }

    #[test]
    fn counter_block_is_cache_line_aligned() {
        assert_eq!(std::mem::align_of::<PipelineCounters>(), 64);
    }
}
