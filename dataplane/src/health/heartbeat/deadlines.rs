//! When each endpoint's heartbeats run out, readable by the workers
//! without a lock.
//!
//! One `AtomicU64` per endpoint id holds its deadline — last heartbeat +
//! TTL — in nanoseconds after the daemon's epoch, the clock the workers
//! already keep (`now_ns`). A worker expires a backend by itself with one
//! relaxed load and a compare: expiry takes effect on time even while the
//! control thread is busy. An endpoint without a TTL holds `u64::MAX` and
//! never expires.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::health::schedule::duration_nanos;

/// The deadline of an endpoint that has no TTL.
const NO_TTL: u64 = u64::MAX;

/// An endpoint id past the table's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("endpoint id {id} is past the heartbeat table's {len} entries")]
pub struct OutOfRange {
    /// The id.
    pub id: usize,
    /// The table's size.
    pub len: usize,
}

/// Per-endpoint heartbeat deadlines.
#[derive(Debug)]
pub struct HeartbeatDeadlines {
    epoch: Instant,
    deadlines: Box<[AtomicU64]>,
}

impl HeartbeatDeadlines {
    /// A table for endpoint ids `0..endpoints`, none with a TTL, counting
    /// from `epoch` (the daemon's, as the workers' `now_ns`).
    pub fn new(epoch: Instant, endpoints: usize) -> HeartbeatDeadlines {
        HeartbeatDeadlines {
            epoch,
            deadlines: (0..endpoints).map(|_| AtomicU64::new(NO_TTL)).collect(),
        }
    }

    /// A copy with room for `endpoints` ids (new ones without a TTL), for
    /// when the endpoint table grows; publish it as the snapshots are.
    pub fn resized(&self, endpoints: usize) -> HeartbeatDeadlines {
        HeartbeatDeadlines {
            epoch: self.epoch,
            deadlines: (0..endpoints)
                .map(|i| AtomicU64::new(self.deadlines.get(i).map_or(NO_TTL, |d| d.load(Relaxed))))
                .collect(),
        }
    }

    /// Ids the table holds.
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    /// Whether the table holds no id.
    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }

    /// Nanoseconds of `at` after the epoch (0 before it).
    pub fn nanos(&self, at: Instant) -> u64 {
        duration_nanos(at.saturating_duration_since(self.epoch))
    }

    fn slot(&self, id: usize) -> Result<&AtomicU64, OutOfRange> {
        self.deadlines.get(id).ok_or(OutOfRange {
            id,
            len: self.deadlines.len(),
        })
    }

    /// Gives endpoint `id` a TTL from `now`: a backend added with a TTL
    /// has one TTL to send its first heartbeat, and expires if it does not.
    pub fn arm(&self, id: usize, now: Instant, ttl: Duration) -> Result<(), OutOfRange> {
        let deadline = self.nanos(now).saturating_add(duration_nanos(ttl));
        self.slot(id)?.store(deadline.min(NO_TTL - 1), Relaxed);
        Ok(())
    }

    /// Records a heartbeat of endpoint `id` at `now`: its deadline becomes
    /// `now + ttl`, never earlier than it was (heartbeats from the API and
    /// the network may race).
    pub fn heartbeat(&self, id: usize, now: Instant, ttl: Duration) -> Result<(), OutOfRange> {
        let deadline = self
            .nanos(now)
            .saturating_add(duration_nanos(ttl))
            .min(NO_TTL - 1);
        let slot = self.slot(id)?;
        // Only an endpoint with a TTL takes heartbeats' deadlines.
        let _ = slot.fetch_update(Relaxed, Relaxed, |d| {
            (d != NO_TTL && d < deadline).then_some(deadline)
        });
        Ok(())
    }

    /// Removes endpoint `id`'s TTL: it never expires.
    pub fn disarm(&self, id: usize) -> Result<(), OutOfRange> {
        self.slot(id)?.store(NO_TTL, Relaxed);
        Ok(())
    }

    /// Whether endpoint `id` is within its TTL at `now_ns` (the workers'
    /// clock). An id without a TTL, or past the table, is alive: the table
    /// only ever expires what it was told to.
    #[inline]
    pub fn is_alive(&self, id: usize, now_ns: u64) -> bool {
        self.deadlines
            .get(id)
            .is_none_or(|d| now_ns < d.load(Relaxed))
    }

    /// Endpoint `id`'s deadline, if it has a TTL.
    pub fn deadline(&self, id: usize) -> Option<Instant> {
        let d = self.deadlines.get(id)?.load(Relaxed);
        (d != NO_TTL).then(|| self.epoch + Duration::from_nanos(d))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_backend_lives_a_ttl_past_each_heartbeat() {
        let epoch = Instant::now();
        let table = HeartbeatDeadlines::new(epoch, 4);
        let ttl = Duration::from_millis(300);
        // No TTL: alive forever, and heartbeats change nothing.
        assert!(table.is_alive(0, u64::MAX - 1));
        table.heartbeat(0, epoch, ttl).unwrap();
        assert_eq!(table.deadline(0), None);
        // Armed at 100 ms: alive until 400 ms, then expired.
        table
            .arm(1, epoch + Duration::from_millis(100), ttl)
            .unwrap();
        assert!(table.is_alive(1, 399 * MS));
        assert!(!table.is_alive(1, 400 * MS));
        // A heartbeat at 350 ms moves the deadline to 650 ms.
        table
            .heartbeat(1, epoch + Duration::from_millis(350), ttl)
            .unwrap();
        assert!(table.is_alive(1, 649 * MS) && !table.is_alive(1, 650 * MS));
        assert_eq!(table.deadline(1), Some(epoch + Duration::from_millis(650)));
        // An older heartbeat (a late one from another path) does not shorten it.
        table
            .heartbeat(1, epoch + Duration::from_millis(200), ttl)
            .unwrap();
        assert_eq!(table.deadline(1), Some(epoch + Duration::from_millis(650)));
        // A heartbeat after expiry brings it back.
        table
            .heartbeat(1, epoch + Duration::from_millis(900), ttl)
            .unwrap();
        assert!(table.is_alive(1, 1100 * MS));
        table.disarm(1).unwrap();
        assert!(table.is_alive(1, u64::MAX - 1));
    }

    #[test]
    fn ids_past_the_table_are_refused_or_alive() {
        let table = HeartbeatDeadlines::new(Instant::now(), 2);
        let err = table
            .arm(2, Instant::now(), Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "endpoint id 2 is past the heartbeat table's 2 entries"
        );
        assert!(table.is_alive(7, 0));
        table.arm(1, table.epoch, Duration::from_secs(1)).unwrap();
        let bigger = table.resized(5);
        assert_eq!(bigger.len(), 5);
        assert_eq!(bigger.deadline(1), table.deadline(1));
        assert_eq!(bigger.deadline(4), None);
    }

    #[test]
    fn a_reader_on_another_thread_sees_expiry_without_the_writer() {
        // The writer arms once and goes away (a busy control thread); the
        // reader's clock alone expires the endpoint.
        let epoch = Instant::now();
        let table = Arc::new(HeartbeatDeadlines::new(epoch, 1));
        table.arm(0, epoch, Duration::from_millis(50)).unwrap();
        let reader = Arc::clone(&table);
        let expired_at = std::thread::spawn(move || {
            let limit = Instant::now() + Duration::from_secs(5);
            while Instant::now() < limit {
                let now_ns = duration_nanos(epoch.elapsed());
                if !reader.is_alive(0, now_ns) {
                    return Some(now_ns);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        })
        .join()
        .unwrap()
        .expect("expired within 5 s");
        assert!(expired_at >= 50 * MS, "{expired_at}");
        assert!(expired_at < 1000 * MS, "{expired_at}");
    }
}
