//! Counts of the rule changes the control side refused.
//!
//! A refused change runs nothing new: the old rules keep running, and
//! whoever asked is told why (the control API's reply, or the log line of a
//! SIGHUP reload). The counts are what an alert watches, so that a reload
//! that failed on a box nobody was looking at is still heard of. They are
//! kept by whoever holds the control state (under its lock) and read at
//! each scrape; no worker takes part.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Where a rule change came from: the `source` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeSource {
    /// The daemon re-read its config file (SIGHUP).
    Reload,
    /// A whole config through the control API (`flowgatectl apply`).
    Apply,
    /// Edits through the control API (`service …`, `backend …`, batches).
    Edit,
}

impl ChangeSource {
    /// Every source, in the order of [`ChangeValues::refused`].
    pub const ALL: [ChangeSource; 3] = [
        ChangeSource::Reload,
        ChangeSource::Apply,
        ChangeSource::Edit,
    ];

    /// The label value.
    pub const fn name(self) -> &'static str {
        match self {
            ChangeSource::Reload => "reload",
            ChangeSource::Apply => "apply",
            ChangeSource::Edit => "edit",
        }
    }
}

/// Why a change was refused: the `reason` label, named after the control
/// API's error code (docs/api.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The rules would be invalid, or need more than the XDP maps hold.
    Invalid,
    /// The change touches settings read only at start.
    RestartRequired,
    /// The data plane could not apply a valid change and took it back.
    ApplyFailed,
    /// The config file could not be read.
    Io,
    /// An edit named a service or backend that is not there.
    NotFound,
    /// An edit added a service or backend that is there already.
    Exists,
    /// Any other error.
    Other,
}

impl RefusalReason {
    /// Every reason, in the order of [`ChangeValues::refused`].
    pub const ALL: [RefusalReason; 7] = [
        RefusalReason::Invalid,
        RefusalReason::RestartRequired,
        RefusalReason::ApplyFailed,
        RefusalReason::Io,
        RefusalReason::NotFound,
        RefusalReason::Exists,
        RefusalReason::Other,
    ];

    /// The label value.
    pub const fn name(self) -> &'static str {
        match self {
            RefusalReason::Invalid => "invalid",
            RefusalReason::RestartRequired => "restart_required",
            RefusalReason::ApplyFailed => "apply_failed",
            RefusalReason::Io => "io",
            RefusalReason::NotFound => "not_found",
            RefusalReason::Exists => "exists",
            RefusalReason::Other => "other",
        }
    }
}

const SOURCES: usize = ChangeSource::ALL.len();
const REASONS: usize = RefusalReason::ALL.len();

/// Refused changes per (source, reason), shared (`Arc`) between the
/// control state, which counts, and the metrics collector, which reads.
#[derive(Debug, Default)]
pub struct ChangeCounters {
    refused: [[AtomicU64; REASONS]; SOURCES],
}

impl ChangeCounters {
    /// Counts one change from `source` refused for `reason`. Dry runs are
    /// not changes: do not count them.
    pub fn refused(&self, source: ChangeSource, reason: RefusalReason) {
        if let Some(c) = self
            .refused
            .get(source as usize)
            .and_then(|r| r.get(reason as usize))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn values(&self) -> ChangeValues {
        let mut values = ChangeValues::default();
        for (row, counters) in values.refused.iter_mut().zip(&self.refused) {
            for (v, c) in row.iter_mut().zip(counters) {
                *v = c.load(Ordering::Relaxed);
            }
        }
        values
    }
}

/// [`ChangeCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChangeValues {
    /// Indexed by [`ChangeSource`], then [`RefusalReason`], in the order of
    /// their `ALL`.
    pub refused: [[u64; REASONS]; SOURCES],
}

impl ChangeValues {
    /// Changes from `source` refused for `reason`.
    pub fn refused(&self, source: ChangeSource, reason: RefusalReason) -> u64 {
        self.refused
            .get(source as usize)
            .and_then(|r| r.get(reason as usize))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_source_and_reason() {
        let c = ChangeCounters::default();
        c.refused(ChangeSource::Reload, RefusalReason::Invalid);
        c.refused(ChangeSource::Reload, RefusalReason::Invalid);
        c.refused(ChangeSource::Edit, RefusalReason::NotFound);
        c.refused(ChangeSource::Apply, RefusalReason::Other);
        let v = c.values();
        assert_eq!(v.refused(ChangeSource::Reload, RefusalReason::Invalid), 2);
        assert_eq!(v.refused(ChangeSource::Edit, RefusalReason::NotFound), 1);
        assert_eq!(v.refused(ChangeSource::Apply, RefusalReason::Other), 1);
        let total: u64 = v.refused.iter().flatten().sum();
        assert_eq!(total, 4, "nothing else moved");
    }

    #[test]
    fn the_order_of_all_is_the_order_of_the_counters() {
        for (i, s) in ChangeSource::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s:?}");
        }
        for (i, r) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }
}
