//! Building the scheduler tables of a snapshot's changed services, on the
//! cores the machine has.
//!
//! A snapshot build first walks the services in order (ids are handed out
//! there, so that they do not depend on timing) and notes every service
//! whose Maglev table and round-robin schedule cannot be carried over from
//! the previous snapshot. Those tables depend on nothing but the service's
//! own scheduled backends and table size, so they are built afterwards, all
//! at once, split over a few scoped threads by their slot count: a change
//! of 100 000 services or one of a 10 000 019-slot table spreads over the
//! cores, a change of one small service builds on the calling thread. The
//! result is the same tables in the same places whatever the split.

use std::sync::Arc;

use super::maglev::{MaglevBackend, MaglevTable};
use super::wrr::build_schedule;
use super::{EndpointId, ServiceId};

/// Below this many slots in all, the tables are built on the calling
/// thread: starting a thread costs more than building them.
const PARALLEL_SLOTS: u64 = 1 << 20;

/// The tables one service needs built.
pub(super) struct TableJob {
    /// Whose tables they are.
    pub service: ServiceId,
    /// Its scheduled backends.
    pub backends: Vec<MaglevBackend>,
    /// The Maglev table's size.
    pub table_size: u32,
}

/// A service's built tables.
pub(super) struct BuiltTables {
    /// Whose tables they are.
    pub service: ServiceId,
    /// Its Maglev table.
    pub maglev: MaglevTable,
    /// Its weighted round-robin schedule.
    pub wrr: Arc<[EndpointId]>,
}

/// Builds the tables of every job, on up to one thread fewer than the
/// cores this thread may run on; the result is in the jobs' order. One
/// core is left to the rest of the control side: a large change must not
/// keep the control socket (`status`) or the health checks from running.
pub(super) fn build_all(jobs: Vec<TableJob>) -> Vec<BuiltTables> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1);
    build_on(jobs, threads)
}

/// [`build_all`] on up to `threads` threads.
fn build_on(jobs: Vec<TableJob>, threads: usize) -> Vec<BuiltTables> {
    let total: u64 = jobs.iter().map(work).sum();
    if threads < 2 || jobs.is_empty() || total < PARALLEL_SLOTS {
        return jobs.iter().map(build_one).collect();
    }
    let parts = split_by_work(&jobs, threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .skip(1)
            .map(|part| scope.spawn(move || part.iter().map(build_one).collect::<Vec<_>>()))
            .collect();
        // The calling thread builds the first part itself.
        let mut built: Vec<BuiltTables> = Vec::with_capacity(jobs.len());
        built.extend(
            parts
                .first()
                .copied()
                .unwrap_or_default()
                .iter()
                .map(build_one),
        );
        for handle in handles {
            match handle.join() {
                Ok(part) => built.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        built
    })
}

/// What a job costs, about: its slots, and its backends for the schedule.
fn work(job: &TableJob) -> u64 {
    u64::from(job.table_size) + job.backends.len() as u64
}

/// `jobs` cut into at most `parts` consecutive runs of about equal work.
fn split_by_work(jobs: &[TableJob], parts: usize) -> Vec<&[TableJob]> {
    let total: u64 = jobs.iter().map(work).sum();
    let share = total.div_ceil(parts as u64).max(1);
    let mut runs = Vec::with_capacity(parts);
    let (mut start, mut sum) = (0, 0u64);
    for (i, job) in jobs.iter().enumerate() {
        sum += work(job);
        if sum >= share && runs.len() + 1 < parts {
            runs.push(&jobs[start..=i]);
            (start, sum) = (i + 1, 0);
        }
    }
    if start < jobs.len() {
        runs.push(&jobs[start..]);
    }
    runs
}

/// One service's Maglev table and schedule.
fn build_one(job: &TableJob) -> BuiltTables {
    let weights: Vec<(EndpointId, u32)> = job.backends.iter().map(|b| (b.id, b.weight)).collect();
    BuiltTables {
        service: job.service,
        maglev: MaglevTable::build(&job.backends, job.table_size),
        wrr: build_schedule(&weights),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(service: ServiceId, backends: u32, table_size: u32) -> TableJob {
        TableJob {
            service,
            backends: (0..backends)
                .map(|i| MaglevBackend {
                    address: [
                        service as u8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        i as u8,
                    ],
                    port: 80,
                    weight: 1 + i % 3,
                    id: service * 1000 + i,
                })
                .collect(),
            table_size,
        }
    }

    #[test]
    fn runs_cover_every_job_once_in_order() {
        let jobs: Vec<TableJob> = (0..10).map(|s| job(s, 2, 101 + s * 50)).collect();
        for parts in 1..=12 {
            let runs = split_by_work(&jobs, parts);
            assert!(runs.len() <= parts && !runs.is_empty());
            let order: Vec<ServiceId> = runs
                .iter()
                .flat_map(|r| r.iter().map(|j| j.service))
                .collect();
            assert_eq!(order, (0..10).collect::<Vec<_>>(), "{parts} parts");
        }
        assert!(split_by_work(&[], 4).is_empty());
    }

    #[test]
    fn tables_built_in_parallel_are_the_ones_built_alone() {
        // Large enough in all to be split over threads.
        let jobs: Vec<TableJob> = (0..8).map(|s| job(s, 1 + s % 4, 262_147)).collect();
        assert!(jobs.iter().map(work).sum::<u64>() >= PARALLEL_SLOTS);
        let alone: Vec<BuiltTables> = jobs.iter().map(build_one).collect();
        let built = build_on(jobs, 3);
        assert_eq!(built.len(), alone.len());
        for (b, a) in built.iter().zip(&alone) {
            assert_eq!(b.service, a.service);
            assert_eq!(b.maglev.slots(), a.maglev.slots());
            assert_eq!(b.wrr, a.wrr);
            assert_eq!(b.maglev.size(), 262_147);
        }
    }
}
