//! Per-worker admission counters: refusals by reason, RSTs sent, and
//! clients forgotten by the per-client table.
//!
//! The same discipline as the pipeline's counters: each worker owns its
//! block and is its only writer, a counter is an `AtomicU64` written with a
//! plain load and store (no locked instruction), the block is cache-line
//! aligned so two workers' blocks never share a line, and the metrics sum
//! workers' [`AdmissionValues`] at scrape time.

use crate::pipeline::Counter;

/// Why a new flow was refused. Each is one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Refusal {
    /// Over its service's new-flow rate.
    ServiceRate,
    /// Over its client's (source prefix's) new-flow rate.
    ClientRate,
    /// Its backend is over its connection cap.
    BackendCap,
}

impl Refusal {
    /// How many reasons there are.
    pub const COUNT: usize = 3;

    /// Every reason, in counter order.
    pub const ALL: [Refusal; Refusal::COUNT] = [
        Refusal::ServiceRate,
        Refusal::ClientRate,
        Refusal::BackendCap,
    ];

    /// This reason's counter index, `0..COUNT`.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for counters and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Refusal::ServiceRate => "service_rate",
            Refusal::ClientRate => "client_rate",
            Refusal::BackendCap => "backend_cap",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One worker's admission counters.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct AdmissionCounters {
    /// New flows refused, by [`Refusal::index`].
    refused: [Counter; Refusal::COUNT],
    /// RSTs written for refused TCP new flows (`over_limit = "reset"`).
    pub resets_sent: Counter,
    /// Clients the per-client table forgot while they still owed, to make
    /// room for another: each may get up to its burst more than its limit.
    /// A steady rise means the table is too small for the sources seen.
    pub client_evictions: Counter,
}

impl AdmissionCounters {
    /// Counts one refusal. Only the owning worker may call this.
    #[inline(always)]
    pub fn refuse(&self, reason: Refusal) {
        // index() < COUNT by construction; get() keeps this panic-free.
        if let Some(c) = self.refused.get(reason.index()) {
            c.inc();
        }
    }

    /// New flows refused for `reason`.
    pub fn refused_for(&self, reason: Refusal) -> u64 {
        self.refused.get(reason.index()).map_or(0, Counter::get)
    }

    /// A plain copy of the values, for reports.
    pub fn snapshot(&self) -> AdmissionValues {
        AdmissionValues {
            service_rate: self.refused_for(Refusal::ServiceRate),
            client_rate: self.refused_for(Refusal::ClientRate),
            backend_cap: self.refused_for(Refusal::BackendCap),
            resets_sent: self.resets_sent.get(),
            client_evictions: self.client_evictions.get(),
        }
    }
}

/// Admission counter values at one moment; summable across workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdmissionValues {
    /// Refused: over the service's new-flow rate.
    pub service_rate: u64,
    /// Refused: over the client's new-flow rate.
    pub client_rate: u64,
    /// Refused: the backend over its connection cap.
    pub backend_cap: u64,
    /// RSTs sent for refused TCP new flows.
    pub resets_sent: u64,
    /// Clients forgotten while they still owed.
    pub client_evictions: u64,
}

impl AdmissionValues {
    /// New flows refused for any reason.
    pub fn refused(&self) -> u64 {
        self.service_rate + self.client_rate + self.backend_cap
    }

    /// The value for `reason`.
    pub fn refused_for(&self, reason: Refusal) -> u64 {
        match reason {
            Refusal::ServiceRate => self.service_rate,
            Refusal::ClientRate => self.client_rate,
            Refusal::BackendCap => self.backend_cap,
        }
    }
}

impl std::ops::AddAssign for AdmissionValues {
    fn add_assign(&mut self, o: AdmissionValues) {
        self.service_rate = self.service_rate.wrapping_add(o.service_rate);
        self.client_rate = self.client_rate.wrapping_add(o.client_rate);
        self.backend_cap = self.backend_cap.wrapping_add(o.backend_cap);
        self.resets_sent = self.resets_sent.wrapping_add(o.resets_sent);
        self.client_evictions = self.client_evictions.wrapping_add(o.client_evictions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_reason_and_sum_across_workers() {
        let (a, b) = (AdmissionCounters::default(), AdmissionCounters::default());
        a.refuse(Refusal::ServiceRate);
        a.refuse(Refusal::ServiceRate);
        a.refuse(Refusal::BackendCap);
        b.refuse(Refusal::ClientRate);
        b.resets_sent.inc();
        b.client_evictions.add(4);
        assert_eq!(a.refused_for(Refusal::ServiceRate), 2);
        let mut total = a.snapshot();
        total += b.snapshot();
        assert_eq!(
            total,
            AdmissionValues {
                service_rate: 2,
                client_rate: 1,
                backend_cap: 1,
                resets_sent: 1,
                client_evictions: 4,
            }
        );
        assert_eq!(total.refused(), 4);
        for r in Refusal::ALL {
            assert_eq!(Refusal::ALL[r.index()], r);
        }
        assert_eq!(Refusal::BackendCap.to_string(), "backend_cap");
    }

    #[test]
    fn counter_block_is_cache_line_aligned() {
        assert_eq!(std::mem::align_of::<AdmissionCounters>(), 64);
    }
}
