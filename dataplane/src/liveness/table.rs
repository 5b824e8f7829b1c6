//! The table of every endpoint's [`Word`], shared by all threads.
//!
//! A fixed directory of [`MAX_CHUNKS`] slots, each a lazily allocated
//! chunk of [`CHUNK_ENDPOINTS`] words: entry `id` is word `id % 4096` of
//! chunk `id / 4096`. Chunks are allocated by writers (the control side)
//! the first time they write an id in them and are never moved or freed
//! while the table lives, so the table grows with the endpoint ids under
//! readers that never wait: a reader finds a chunk or not (then the
//! endpoint reads as [`Word::UP`], what a new endpoint starts as), never a
//! chunk being moved. The directory costs 64 KiB; each chunk 32 KiB.
//!
//! Writers change a word by compare-and-swap loops, so the control
//! thread (health transitions) and the heartbeat listener (deadlines)
//! never undo each other's change; readers only load.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::word::{Status, Word};

/// Endpoints per chunk.
pub const CHUNK_ENDPOINTS: usize = 4096;
/// Chunks in the directory.
pub const MAX_CHUNKS: usize = 4096;
/// Endpoint ids the table can hold (16 777 216). Ids past it read as up
/// without a TTL and refuse writes.
pub const MAX_ENDPOINTS: usize = CHUNK_ENDPOINTS * MAX_CHUNKS;

type Chunk = Box<[AtomicU64; CHUNK_ENDPOINTS]>;

/// An endpoint id past the table's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("endpoint id {id} is past the liveness table's {MAX_ENDPOINTS} entries")]
pub struct OutOfRange {
    /// The id.
    pub id: u32,
}

/// Every endpoint's liveness, readable by the workers with one relaxed
/// load (see the [module](super) documentation).
pub struct Liveness {
    /// The instant `now_ns == 0` of the workers' clock.
    epoch: Instant,
    chunks: Box<[OnceLock<Chunk>]>,
}

impl Liveness {
    /// An empty table (every endpoint up, no TTL), its clock counting
    /// from `epoch` — the daemon's, from which the workers' `now_ns` count.
    pub fn new(epoch: Instant) -> Liveness {
        Liveness {
            epoch,
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The instant the table's nanoseconds count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Nanoseconds of `at` after the epoch (0 before it).
    pub fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds after the epoch now, by the system's monotonic clock
    /// (for the control side; workers are given their time).
    pub fn now_ns(&self) -> u64 {
        self.nanos(Instant::now())
    }

    /// Endpoint `id`'s word: one relaxed load. An id whose chunk was
    /// never written, or past the table, reads as [`Word::UP`].
    #[inline(always)]
    pub fn word(&self, id: u32) -> Word {
        let id = id as usize;
        match self
            .chunks
            .get(id / CHUNK_ENDPOINTS)
            .and_then(OnceLock::get)
        {
            Some(chunk) => Word::from_bits(chunk[id % CHUNK_ENDPOINTS].load(Relaxed)),
            None => Word::UP,
        }
    }

    /// Whether endpoint `id` is alive at `now_ns` (the workers' clock):
    /// up, and before its heartbeat deadline if it has one. One relaxed
    /// load and a compare.
    #[inline(always)]
    pub fn is_alive(&self, id: u32, now_ns: u64) -> bool {
        self.word(id).is_alive(now_ns)
    }

    /// What operators are shown for endpoint `id` with weight `weight`.
    pub fn status(&self, id: u32, now_ns: u64, weight: u32) -> Status {
        self.word(id).status(now_ns, weight)
    }

    /// Endpoint `id`'s heartbeat deadline, if it has a TTL.
    pub fn deadline(&self, id: u32) -> Option<Instant> {
        let d = self.word(id).deadline_ns()?;
        Some(self.epoch + Duration::from_nanos(d))
    }

    /// The word of `id` for writing, its chunk allocated on first use.
    fn slot(&self, id: u32) -> Result<&AtomicU64, OutOfRange> {
        let i = id as usize;
        let chunk = self
            .chunks
            .get(i / CHUNK_ENDPOINTS)
            .ok_or(OutOfRange { id })?
            .get_or_init(new_chunk);
        Ok(&chunk[i % CHUNK_ENDPOINTS])
    }

    /// Applies `change` to endpoint `id`'s word in a compare-and-swap
    /// loop; returns the word before. `change` returning `None` leaves
    /// the word as it is.
    fn update(&self, id: u32, change: impl Fn(Word) -> Option<Word>) -> Result<Word, OutOfRange> {
        let slot = self.slot(id)?;
        let before = match slot.fetch_update(Relaxed, Relaxed, |w| {
            change(Word::from_bits(w)).map(Word::bits)
        }) {
            Ok(w) | Err(w) => w,
        };
        Ok(Word::from_bits(before))
    }

    /// Sets endpoint `id`'s whole word: for an endpoint id a build hands
    /// to a new backend, so that it starts afresh rather than with what
    /// the id's previous holder left. Writing [`Word::UP`] to a chunk
    /// never written allocates nothing (it reads as that already).
    pub fn reset(&self, id: u32, word: Word) -> Result<(), OutOfRange> {
        let i = id as usize;
        let chunk = self
            .chunks
            .get(i / CHUNK_ENDPOINTS)
            .ok_or(OutOfRange { id })?;
        if word == Word::UP && chunk.get().is_none() {
            return Ok(());
        }
        self.slot(id)?.store(word.bits(), Relaxed);
        Ok(())
    }

    /// Sets endpoint `id`'s health (a check transition), keeping its
    /// deadline. Returns the word before.
    pub fn set_up(&self, id: u32, up: bool) -> Result<Word, OutOfRange> {
        self.update(id, |w| Some(w.with_up(up)))
    }

    /// Gives endpoint `id` a heartbeat deadline of `deadline_ns` (or none),
    /// keeping its health. Returns the word before.
    pub fn set_deadline(&self, id: u32, deadline_ns: Option<u64>) -> Result<Word, OutOfRange> {
        self.update(id, |w| Some(w.with_deadline(deadline_ns)))
    }

    /// Gives endpoint `id` a TTL from `now`: a backend registered with a
    /// TTL has one TTL to send its first heartbeat, and expires if it
    /// does not.
    pub fn arm(&self, id: u32, now: Instant, ttl: Duration) -> Result<(), OutOfRange> {
        let deadline = self.nanos(now).saturating_add(nanos_of(ttl));
        self.set_deadline(id, Some(deadline)).map(drop)
    }

    /// Removes endpoint `id`'s TTL: it no longer expires.
    pub fn disarm(&self, id: u32) -> Result<(), OutOfRange> {
        self.set_deadline(id, None).map(drop)
    }

    /// Records a heartbeat of endpoint `id` at `now`: its deadline becomes
    /// `now + ttl`, never earlier than it was (heartbeats from the API and
    /// from the network may race). An endpoint without a TTL is left as it
    /// is: it takes no heartbeats.
    pub fn heartbeat(&self, id: u32, now: Instant, ttl: Duration) -> Result<(), OutOfRange> {
        let deadline = self.nanos(now).saturating_add(nanos_of(ttl));
        self.extend_deadline(id, deadline).map(drop)
    }

    /// Moves endpoint `id`'s deadline to `deadline_ns` if it has one and
    /// it is earlier. Returns the word before.
    pub fn extend_deadline(&self, id: u32, deadline_ns: u64) -> Result<Word, OutOfRange> {
        self.update(id, |w| {
            let later = Word::up_until(deadline_ns).deadline_ns();
            match (w.deadline_ns(), later) {
                (Some(d), Some(l)) if d < l => Some(w.with_deadline(Some(l))),
                _ => None,
            }
        })
    }

    /// Memory held by the chunks allocated so far (the directory aside).
    pub fn memory_bytes(&self) -> usize {
        let chunks = self.chunks.iter().filter(|c| c.get().is_some()).count();
        chunks * std::mem::size_of::<[AtomicU64; CHUNK_ENDPOINTS]>()
    }
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chunks = self.chunks.iter().filter(|c| c.get().is_some()).count();
        f.debug_struct("Liveness")
            .field("epoch", &self.epoch)
            .field("chunks", &chunks)
            .finish()
    }
}

/// A chunk of new endpoints.
fn new_chunk() -> Chunk {
    Box::new(std::array::from_fn(|_| AtomicU64::new(Word::UP.bits())))
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_backend_lives_a_ttl_past_each_heartbeat() {
        let epoch = Instant::now();
        let table = Liveness::new(epoch);
        let ttl = Duration::from_millis(300);
        // No TTL: alive forever, and heartbeats change nothing.
        assert!(table.is_alive(0, u64::MAX >> 2));
        table.heartbeat(0, epoch, ttl).unwrap();
        assert_eq!(table.deadline(0), None);
        // Armed at 100 ms: alive until 400 ms, then expired.
        table
            .arm(1, epoch + Duration::from_millis(100), ttl)
            .unwrap();
        assert!(table.is_alive(1, 399 * MS));
        assert!(!table.is_alive(1, 400 * MS));
        assert_eq!(table.status(1, 400 * MS, 1), Status::Expired);
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
        assert!(table.is_alive(1, u64::MAX >> 2));
    }

    #[test]
    fn health_and_heartbeats_do_not_undo_each_other() {
        let epoch = Instant::now();
        let table = Liveness::new(epoch);
        table.set_deadline(5, Some(100 * MS)).unwrap();
        let before = table.set_up(5, false).unwrap();
        assert!(before.is_up());
        assert_eq!(table.word(5).deadline_ns(), Some(100 * MS), "kept");
        assert!(!table.is_alive(5, 0), "down before its deadline");
        assert_eq!(table.status(5, 0, 1), Status::Down);
        table.extend_deadline(5, 200 * MS).unwrap();
        assert!(!table.word(5).is_up(), "a heartbeat does not bring it up");
        table.set_up(5, true).unwrap();
        assert!(table.is_alive(5, 199 * MS) && !table.is_alive(5, 200 * MS));
    }

    #[test]
    fn ids_past_the_table_are_refused_and_read_as_alive() {
        let table = Liveness::new(Instant::now());
        let past = MAX_ENDPOINTS as u32;
        let err = table.set_up(past, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "endpoint id 16777216 is past the liveness table's 16777216 entries"
        );
        assert!(table.is_alive(past, 0));
        assert!(table.is_alive(u32::MAX, 0));
        assert!(table.reset(u32::MAX, Word::DOWN).is_err());
        // The last id is in the table.
        table.set_up(past - 1, false).unwrap();
        assert!(!table.is_alive(past - 1, 0));
    }

    #[test]
    fn chunks_are_allocated_by_writes_only_and_never_move() {
        let table = Liveness::new(Instant::now());
        assert_eq!(table.memory_bytes(), 0);
        // Reads and resets to the starting word allocate nothing.
        assert!(table.is_alive(70_000, 0));
        table.reset(70_000, Word::UP).unwrap();
        assert_eq!(table.memory_bytes(), 0);
        table.set_up(3, false).unwrap();
        assert_eq!(table.memory_bytes(), 32 * 1024);
        let word = table.slot(3).unwrap() as *const AtomicU64;
        // Growing the table (ids far beyond) leaves entry 3 where it was.
        for id in (0..1_000_000u32).step_by(CHUNK_ENDPOINTS) {
            table.set_up(id + 1, true).unwrap();
        }
        assert_eq!(table.slot(3).unwrap() as *const AtomicU64, word);
        assert!(!table.is_alive(3, 0));
        // A reset hands the id to a new endpoint, up and without a TTL.
        table.reset(3, Word::UP).unwrap();
        assert_eq!(table.word(3), Word::UP);
    }

    #[test]
    fn a_reader_on_another_thread_sees_expiry_without_the_writer() {
        // The writer arms once and goes away (a busy control thread); the
        // reader's clock alone expires the endpoint.
        let epoch = Instant::now();
        let table = Arc::new(Liveness::new(epoch));
        table.arm(0, epoch, Duration::from_millis(50)).unwrap();
        let reader = Arc::clone(&table);
        let expired_at = std::thread::spawn(move || {
            let limit = Instant::now() + Duration::from_secs(5);
            while Instant::now() < limit {
                let now_ns = reader.now_ns();
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

    #[test]
    fn racing_writers_keep_both_fields() {
        // One thread flips health, another extends the deadline, on the
        // same word: every flip and the last deadline survive.
        let table = Arc::new(Liveness::new(Instant::now()));
        table.set_deadline(9, Some(1)).unwrap();
        let flips = {
            let t = Arc::clone(&table);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    t.set_up(9, i % 2 == 1).unwrap();
                }
            })
        };
        let beats = {
            let t = Arc::clone(&table);
            std::thread::spawn(move || {
                for d in 2..20_002u64 {
                    t.extend_deadline(9, d).unwrap();
                }
            })
        };
        flips.join().unwrap();
        beats.join().unwrap();
        let w = table.word(9);
        assert!(w.is_up(), "the last flip (up) kept");
        assert_eq!(w.deadline_ns(), Some(20_001), "the last deadline kept");
    }
}
