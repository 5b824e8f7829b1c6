//! Distribution paths: per service, client prefix → named backend(s),
//! longest match, changed one entry at a time while workers read.
//!
//! # Why beside the snapshot
//!
//! A platform keeps up to millions of paths (most of them one client, /32
//! or /128, to one container) and edits them one by one as containers
//! come and go. Copying them into every snapshot would make each edit cost
//! the whole table, and each snapshot rebuild cost the paths. So the paths
//! live in their own structure, published beside the snapshot: the
//! control thread (the only writer) owns a [`PathTable`]; each worker owns
//! a [`PathReader`].
//!
//! # Reading: no lock, no read-modify-write
//!
//! The table is a persistent (copy-on-write) tree of immutable parts: per
//! family, a top node of 64 middle nodes of 64 shards each, every part
//! behind an `Arc`; a version ([`PathView`]) is a root over them, published
//! with `arc-swap`. A [`PathReader`] caches the current version: each
//! [`PathReader::load`] compares the cached pointer with the published one
//! (one relaxed load) and only when a new version was published takes a
//! reference to it (one reference-count increment per worker per update,
//! not per lookup). A lookup through the loaded view is plain loads: the
//! service's bit, then per prefix length present, longest first, one hash,
//! one word of the presence filter of the shard's middle node, and only if
//! the filter passes (always for a path that is there, for about 3 % of
//! other keys) one probe of one shard (about 1.75 slots for a hit, 3.6 for
//! a miss, nearly always one or two adjacent cache lines). The filters
//! take 1–2 bytes a path in small dense arrays, so a client with no path
//! (most clients) costs a likely cache hit instead of a likely cache and
//! TLB miss in the table. A worker loads the view once per batch, as it
//! loads the snapshot, and the pipeline warms each new flow's filter word
//! (and slot) in the batch's warming pass.
//!
//! # Writing: one shard, about 4 096 times smaller than the table
//!
//! An edit rebuilds the shard its key hashes to (n / 4 096 entries, about
//! 250 at a million paths), copies that shard's middle node (64 pointers
//! and its filter, 8–16 KiB at a million paths; rebuilt from the middle
//! node's keys when it has grown to twice its size or removals left too
//! many stale bits) and the top node, and publishes the new root with one
//! pointer store; a batch of edits does this once per touched shard and publishes
//! once. Everything else is shared with the previous version. The
//! previous version's unshared parts are freed when the last worker's
//! reader has moved past it (at its next load), so memory follows the
//! count down as well as up, and a reader holds at most one old version.
//!
//! Paths name backends by [`BackendRef`], never by address; the snapshot
//! resolves a ref to the endpoint of the current generation.

mod family;
mod filter;
mod shard;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::cache::Cache;
use arc_swap::ArcSwap;
use hashbrown::HashMap;

use super::backend_ref::BackendRef;
use super::prefix::{ClientAddr, Prefix};
use family::{shard_index, Family, SHARDS};
pub use shard::{BackendList, PathTarget};
use shard::{Key, ShardRef, MAX_SERVICE};

/// The most backends one path may name.
pub const MAX_PATH_BACKENDS: usize = 16;
/// The largest service id a path may belong to.
pub const MAX_PATH_SERVICE: u32 = MAX_SERVICE;

/// One change to the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathEdit {
    /// Add a path, or replace the backends of an existing one.
    Put {
        /// The service (the snapshot's service id).
        service: u32,
        /// The clients it applies to.
        prefix: Prefix,
        /// Where they go: one backend, or up to [`MAX_PATH_BACKENDS`] to
        /// choose from by flow hash.
        backends: Vec<BackendRef>,
    },
    /// Remove a path.
    Remove {
        /// The service.
        service: u32,
        /// The path's prefix.
        prefix: Prefix,
    },
}

/// A path as stored, for listing and bulk loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEntry {
    /// The service (the snapshot's service id).
    pub service: u32,
    /// The clients it applies to.
    pub prefix: Prefix,
    /// Its backends, in the order given.
    pub backends: Vec<BackendRef>,
}

/// What an accepted change did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathChange {
    /// Paths that did not exist before.
    pub added: usize,
    /// Paths whose backends were replaced.
    pub replaced: usize,
    /// Paths removed.
    pub removed: usize,
}

/// One reason a change was refused. `index` is the position of the edit
/// (or entry) in the request, for the validator to attach where it came
/// from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The service id is beyond what the table can key.
    #[error("entry {index}: service id {service} is over the path table's limit of {max}")]
    ServiceOutOfRange {
        /// Position in the request.
        index: usize,
        /// The service id.
        service: u32,
        /// [`MAX_PATH_SERVICE`].
        max: u32,
    },
    /// No backend, or too many.
    #[error("entry {index}: a path names 1 to {max} backends, not {count}")]
    BackendCount {
        /// Position in the request.
        index: usize,
        /// How many were given.
        count: usize,
        /// [`MAX_PATH_BACKENDS`].
        max: usize,
    },
    /// The same (service, prefix) twice in one request.
    #[error("entries {first} and {duplicate} are both the path of {prefix} in service {service}")]
    Duplicate {
        /// The service.
        service: u32,
        /// The prefix.
        prefix: Prefix,
        /// Position of the first.
        first: usize,
        /// Position of the later one.
        duplicate: usize,
    },
    /// Removing a path that does not exist.
    #[error("entry {index}: service {service} has no path for {prefix}")]
    NotFound {
        /// Position in the request.
        index: usize,
        /// The service.
        service: u32,
        /// The prefix.
        prefix: Prefix,
    },
    /// The table would hold more paths than it is allowed.
    #[error("the path table holds at most {limit} paths; this change would make {count}")]
    TableFull {
        /// The table's limit.
        limit: usize,
        /// The count the change would reach.
        count: usize,
    },
}

/// Every reason a change was refused, in request order; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", ErrorLines(problems))]
pub struct PathErrors {
    /// One per problem.
    pub problems: Vec<PathError>,
}

struct ErrorLines<'a>(&'a [PathError]);

impl fmt::Display for ErrorLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A published version of the paths; immutable. Workers get it from
/// [`PathReader::load`].
#[derive(Debug)]
pub struct PathView {
    v4: Family<1>,
    v6: Family<4>,
    paths: usize,
    generation: u64,
}

impl PathView {
    /// The path of `service` for a client at `client`: the one with the
    /// longest prefix containing it, if any. An IPv4 client only matches
    /// IPv4 prefixes.
    #[inline]
    pub fn lookup(&self, service: u32, client: ClientAddr) -> Option<PathTarget<'_>> {
        match client {
            ClientAddr::V4(a) => self.v4.lookup(service, [a]),
            ClientAddr::V6(a) => self.v6.lookup(service, v6_words(a)),
        }
    }

    /// Reads the memory the first probe of [`PathView::lookup`] will read
    /// (the filter's word; the slot too if the filter passes), and returns
    /// what it read: pass it to `std::hint::black_box`. A batch
    /// warms all its new flows' slots first and looks them up after, so
    /// that their cache misses overlap instead of queueing (as the
    /// pipeline's passes do for the connection table).
    #[inline]
    pub fn warm(&self, service: u32, client: ClientAddr) -> u32 {
        match client {
            ClientAddr::V4(a) => self.v4.warm(service, [a]),
            ClientAddr::V6(a) => self.v6.warm(service, v6_words(a)),
        }
    }

    /// The path with exactly this prefix (not a longest match).
    pub fn get(&self, service: u32, prefix: Prefix) -> Option<PathTarget<'_>> {
        if service > MAX_SERVICE {
            return None;
        }
        match AnyKey::of(service, prefix) {
            AnyKey::V4(key) => self.v4.get(&key),
            AnyKey::V6(key) => self.v6.get(&key),
        }
    }

    /// How many paths it holds.
    pub fn len(&self) -> usize {
        self.paths
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.paths == 0
    }

    /// Its version number: 0 for the empty table, one more per accepted
    /// change.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A worker's handle on the published paths. One per worker thread (it
/// caches the current version); cheap to clone.
#[derive(Clone)]
pub struct PathReader {
    cache: Cache<Arc<ArcSwap<PathView>>, Arc<PathView>>,
}

impl fmt::Debug for PathReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathReader").finish_non_exhaustive()
    }
}

impl PathReader {
    /// The current version. Costs one relaxed load when nothing was
    /// published since the last call; hold it for a batch.
    #[inline]
    pub fn load(&mut self) -> &PathView {
        self.cache.load()
    }
}

/// Paths of one family, and how many there are per length and service,
/// to know the lengths present and the services with paths.
#[derive(Debug)]
struct FamilyCounts {
    per_length: Vec<usize>,
    per_service: Vec<u32>,
}

impl FamilyCounts {
    fn new(max_len: u8) -> FamilyCounts {
        FamilyCounts {
            per_length: vec![0; usize::from(max_len) + 1],
            per_service: Vec::new(),
        }
    }

    /// Counts one path in (`added`) or out; returns whether the set of
    /// lengths or of services changed.
    fn count(&mut self, service: u32, len: u8, added: bool) -> bool {
        let s = service as usize;
        if s >= self.per_service.len() {
            self.per_service.resize(s + 1, 0);
        }
        let (by_len, by_service) = (
            &mut self.per_length[usize::from(len)],
            &mut self.per_service[s],
        );
        if added {
            *by_len += 1;
            *by_service += 1;
            *by_len == 1 || *by_service == 1
        } else {
            *by_len -= 1;
            *by_service -= 1;
            *by_len == 0 || *by_service == 0
        }
    }

    /// The lengths present, longest first.
    fn lengths(&self) -> Vec<u8> {
        (0..self.per_length.len())
            .rev()
            .filter(|&len| self.per_length[len] > 0)
            .map(|len| len as u8)
            .collect()
    }

    /// Bit `s` set when service `s` has a path.
    fn service_bits(&mut self) -> Arc<[u64]> {
        while self.per_service.last() == Some(&0) {
            self.per_service.pop();
        }
        self.per_service.shrink_to_fit();
        let mut bits = vec![0u64; self.per_service.len().div_ceil(64)];
        for (s, &n) in self.per_service.iter().enumerate() {
            if n > 0 {
                bits[s / 64] |= 1 << (s % 64);
            }
        }
        Arc::from(bits)
    }

    fn heap_bytes(&self) -> usize {
        self.per_length.capacity() * std::mem::size_of::<usize>()
            + self.per_service.capacity() * std::mem::size_of::<u32>()
    }
}

/// The control thread's handle: the only writer of the paths.
#[derive(Debug)]
pub struct PathTable {
    published: Arc<ArcSwap<PathView>>,
    current: Arc<PathView>,
    v4_counts: FamilyCounts,
    v6_counts: FamilyCounts,
    empty: ShardRef,
    limit: usize,
}

/// A key of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AnyKey {
    V4(Key<1>),
    V6(Key<4>),
}

impl AnyKey {
    fn of(service: u32, prefix: Prefix) -> AnyKey {
        match prefix {
            Prefix::V4 { addr, len } => AnyKey::V4(Key::new(service, len, [addr])),
            Prefix::V6 { addr, len } => AnyKey::V6(Key::new(service, len, v6_words(addr))),
        }
    }
}

fn v6_words(a: u128) -> [u32; 4] {
    // Truncations intended: the four 32-bit words, most significant first.
    [
        (a >> 96) as u32,
        (a >> 64) as u32,
        (a >> 32) as u32,
        a as u32,
    ]
}

fn prefix_of<const A: usize>(key: &Key<A>) -> Prefix {
    let addr = key
        .addr
        .iter()
        .fold(0u128, |acc, &word| acc << 32 | u128::from(word));
    if A == 1 {
        // Truncation intended: an IPv4 key has one word.
        Prefix::V4 {
            addr: addr as u32,
            len: key.len(),
        }
    } else {
        Prefix::V6 {
            addr,
            len: key.len(),
        }
    }
}

fn to_refs(words: &[u32]) -> Vec<BackendRef> {
    words.iter().map(|&w| BackendRef::from_word(w)).collect()
}

/// A checked edit: its key and, for a put, its refs as numbers.
struct Checked {
    key: AnyKey,
    refs: Option<Vec<u32>>,
}

impl PathTable {
    /// An empty table that will hold at most `limit` paths.
    pub fn new(limit: usize) -> PathTable {
        let empty = ShardRef::empty();
        let view = Arc::new(PathView {
            v4: Family::empty(&empty),
            v6: Family::empty(&empty),
            paths: 0,
            generation: 0,
        });
        PathTable {
            published: Arc::new(ArcSwap::new(Arc::clone(&view))),
            current: view,
            v4_counts: FamilyCounts::new(32),
            v6_counts: FamilyCounts::new(128),
            empty,
            limit,
        }
    }

    /// A reader for a worker.
    pub fn reader(&self) -> PathReader {
        PathReader {
            cache: Cache::new(Arc::clone(&self.published)),
        }
    }

    /// The current version, as workers see it.
    pub fn view(&self) -> &PathView {
        &self.current
    }

    /// How many paths it holds.
    pub fn len(&self) -> usize {
        self.current.paths
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.current.paths == 0
    }

    /// The most paths it may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Adds a path or replaces its backends.
    pub fn insert(
        &mut self,
        service: u32,
        prefix: Prefix,
        backends: &[BackendRef],
    ) -> Result<PathChange, PathErrors> {
        self.apply(&[PathEdit::Put {
            service,
            prefix,
            backends: backends.to_vec(),
        }])
    }

    /// Removes a path; refused if it does not exist.
    pub fn remove(&mut self, service: u32, prefix: Prefix) -> Result<PathChange, PathErrors> {
        self.apply(&[PathEdit::Remove { service, prefix }])
    }

    /// Removes every path of `service` (when the service goes, or before
    /// its id is given to another). Returns how many.
    pub fn remove_service(&mut self, service: u32) -> usize {
        let mut edits = Vec::new();
        let owns = |tag: u32| tag >> 8 == service;
        if self
            .v4_counts
            .per_service
            .get(service as usize)
            .is_some_and(|&n| n > 0)
        {
            for shard in self.current.v4.shards() {
                edits.extend(
                    shard
                        .entries::<1>()
                        .filter(|(k, _)| owns(k.tag))
                        .map(|(k, _)| PathEdit::Remove {
                            service,
                            prefix: prefix_of(&k),
                        }),
                );
            }
        }
        if self
            .v6_counts
            .per_service
            .get(service as usize)
            .is_some_and(|&n| n > 0)
        {
            for shard in self.current.v6.shards() {
                edits.extend(
                    shard
                        .entries::<4>()
                        .filter(|(k, _)| owns(k.tag))
                        .map(|(k, _)| PathEdit::Remove {
                            service,
                            prefix: prefix_of(&k),
                        }),
                );
            }
        }
        // Every edit removes a path that exists, once: it cannot be refused.
        self.apply(&edits).map_or(0, |change| change.removed)
    }

    /// Applies `edits` all together, published as one version, or refuses
    /// them all (every problem listed) and changes nothing.
    pub fn apply(&mut self, edits: &[PathEdit]) -> Result<PathChange, PathErrors> {
        let (checked, change) = self.check(edits)?;
        let mut v4_edits: Vec<(Key<1>, Option<&[u32]>)> = Vec::new();
        let mut v6_edits: Vec<(Key<4>, Option<&[u32]>)> = Vec::new();
        let (mut v4_shape, mut v6_shape) = (false, false);
        for c in &checked {
            let exists = self.exists(&c.key);
            let added = c.refs.is_some();
            // A replacement changes no count.
            let counted = added != exists;
            match c.key {
                AnyKey::V4(key) => {
                    if counted {
                        v4_shape |= self.v4_counts.count(key.service(), key.len(), added);
                    }
                    v4_edits.push((key, c.refs.as_deref()));
                }
                AnyKey::V6(key) => {
                    if counted {
                        v6_shape |= self.v6_counts.count(key.service(), key.len(), added);
                    }
                    v6_edits.push((key, c.refs.as_deref()));
                }
            }
        }
        let old = &self.current;
        let v4 = if v4_edits.is_empty() {
            old.v4.clone()
        } else {
            let services = if v4_shape {
                self.v4_counts.service_bits()
            } else {
                Arc::clone(old.v4.services())
            };
            old.v4
                .edited(&v4_edits, &self.v4_counts.lengths(), services, &self.empty)
        };
        let v6 = if v6_edits.is_empty() {
            old.v6.clone()
        } else {
            let services = if v6_shape {
                self.v6_counts.service_bits()
            } else {
                Arc::clone(old.v6.services())
            };
            old.v6
                .edited(&v6_edits, &self.v6_counts.lengths(), services, &self.empty)
        };
        let paths = old.paths + change.added - change.removed;
        self.publish(v4, v6, paths);
        Ok(change)
    }

    /// Replaces every path with `entries` (a start or a reload): built
    /// beside the current version and published at once, or refused with
    /// every problem listed (duplicates by position) and nothing changed.
    /// Time is linear in the entries (one hash each, a counting sort by
    /// shard, a sort within each shard).
    pub fn load(&mut self, entries: &[PathEntry]) -> Result<(), PathErrors> {
        let mut problems = Vec::new();
        if entries.len() > self.limit {
            problems.push(PathError::TableFull {
                limit: self.limit,
                count: entries.len(),
            });
        }
        let mut refs: Vec<u32> = Vec::with_capacity(entries.len());
        let mut v4_items: Vec<(Key<1>, usize)> = Vec::new();
        let mut v6_items: Vec<(Key<4>, usize)> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            if let Err(problem) = check_entry(index, entry.service, Some(&entry.backends)) {
                problems.push(problem);
                continue;
            }
            match AnyKey::of(entry.service, entry.prefix) {
                AnyKey::V4(key) => v4_items.push((key, index)),
                AnyKey::V6(key) => v6_items.push((key, index)),
            }
        }
        // Every entry's refs in one array, so that building borrows slices
        // of it instead of allocating per entry.
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let start = refs.len();
            refs.extend(entry.backends.iter().map(|b| b.get()));
            spans.push((start, refs.len()));
        }
        let refs_of = |index: usize| {
            let (start, end) = spans[index];
            &refs[start..end]
        };
        let mut v4_counts = FamilyCounts::new(32);
        let mut v6_counts = FamilyCounts::new(128);
        let v4_shards = build_shards(
            &v4_items,
            &refs_of,
            &self.empty,
            &mut v4_counts,
            entries,
            &mut problems,
        );
        let v6_shards = build_shards(
            &v6_items,
            &refs_of,
            &self.empty,
            &mut v6_counts,
            entries,
            &mut problems,
        );
        if !problems.is_empty() {
            problems.sort_by_key(problem_position);
            return Err(PathErrors { problems });
        }
        let v4 = Family::from_shards(v4_shards, &v4_counts.lengths(), v4_counts.service_bits());
        let v6 = Family::from_shards(v6_shards, &v6_counts.lengths(), v6_counts.service_bits());
        self.v4_counts = v4_counts;
        self.v6_counts = v6_counts;
        self.publish(v4, v6, entries.len());
        Ok(())
    }

    /// A page of paths, of `service` only if given, in a fixed order (by
    /// hash), starting after `after` (the previous page's `next`). Paths
    /// added or removed between pages may be missed or listed, as with any
    /// cursor; none is listed twice. A page with a service filter scans the
    /// whole table.
    pub fn list(&self, service: Option<u32>, after: Option<&PathCursor>, limit: usize) -> PathPage {
        let mut page = PathPage {
            entries: Vec::new(),
            next: None,
        };
        if limit == 0 {
            page.next = after.copied();
            return page;
        }
        page.next = list_family(
            &self.current.v4,
            0,
            service,
            after,
            limit,
            &mut page.entries,
        );
        if page.next.is_none() {
            page.next = list_family(
                &self.current.v6,
                1,
                service,
                after,
                limit,
                &mut page.entries,
            );
        }
        page
    }

    /// Bytes the table holds on the heap: the current version (each shared
    /// part once) and the writer's counts. Older versions still held by a
    /// reader that has not loaded since are not included.
    pub fn heap_bytes(&self) -> usize {
        let arc_header = 2 * std::mem::size_of::<usize>();
        arc_header
            + std::mem::size_of::<ArcSwap<PathView>>()
            + arc_header
            + std::mem::size_of::<PathView>()
            + self.current.v4.heap_bytes(&self.empty)
            + self.current.v6.heap_bytes(&self.empty)
            + self.empty.heap_bytes()
            + self.v4_counts.heap_bytes()
            + self.v6_counts.heap_bytes()
    }

    fn exists(&self, key: &AnyKey) -> bool {
        match key {
            AnyKey::V4(key) => self.current.v4.get(key).is_some(),
            AnyKey::V6(key) => self.current.v6.get(key).is_some(),
        }
    }

    /// Checks every edit against the current version; what the change
    /// would do, or every problem.
    fn check(&self, edits: &[PathEdit]) -> Result<(Vec<Checked>, PathChange), PathErrors> {
        let mut problems = Vec::new();
        let mut checked = Vec::with_capacity(edits.len());
        let mut first_of: HashMap<AnyKey, usize> = HashMap::with_capacity(edits.len());
        let mut change = PathChange::default();
        for (index, edit) in edits.iter().enumerate() {
            let (service, prefix, backends) = match edit {
                PathEdit::Put {
                    service,
                    prefix,
                    backends,
                } => (*service, *prefix, Some(backends)),
                PathEdit::Remove { service, prefix } => (*service, *prefix, None),
            };
            if let Err(problem) = check_entry(index, service, backends) {
                problems.push(problem);
                continue;
            }
            let key = AnyKey::of(service, prefix);
            if let Some(&first) = first_of.get(&key) {
                problems.push(PathError::Duplicate {
                    service,
                    prefix,
                    first,
                    duplicate: index,
                });
                continue;
            }
            first_of.insert(key, index);
            let exists = self.exists(&key);
            match (backends, exists) {
                (Some(_), true) => change.replaced += 1,
                (Some(_), false) => change.added += 1,
                (None, true) => change.removed += 1,
                (None, false) => {
                    problems.push(PathError::NotFound {
                        index,
                        service,
                        prefix,
                    });
                    continue;
                }
            }
            checked.push(Checked {
                key,
                refs: backends.map(|b| b.iter().map(|r| r.get()).collect()),
            });
        }
        let count = self.current.paths + change.added - change.removed;
        if count > self.limit {
            problems.push(PathError::TableFull {
                limit: self.limit,
                count,
            });
        }
        if problems.is_empty() {
            Ok((checked, change))
        } else {
            problems.sort_by_key(problem_position);
            Err(PathErrors { problems })
        }
    }

    fn publish(&mut self, v4: Family<1>, v6: Family<4>, paths: usize) {
        let next = Arc::new(PathView {
            v4,
            v6,
            paths,
            generation: self.current.generation + 1,
        });
        self.published.store(Arc::clone(&next));
        self.current = next;
    }
}

/// Where a problem sorts: by position, a table-wide one first.
fn problem_position(problem: &PathError) -> usize {
    match *problem {
        PathError::ServiceOutOfRange { index, .. }
        | PathError::BackendCount { index, .. }
        | PathError::NotFound { index, .. } => index,
        PathError::Duplicate { duplicate, .. } => duplicate,
        PathError::TableFull { .. } => 0,
    }
}

/// Checks what one entry can get wrong on its own.
fn check_entry(
    index: usize,
    service: u32,
    backends: Option<&Vec<BackendRef>>,
) -> Result<(), PathError> {
    if service > MAX_SERVICE {
        return Err(PathError::ServiceOutOfRange {
            index,
            service,
            max: MAX_SERVICE,
        });
    }
    if let Some(backends) = backends {
        if backends.is_empty() || backends.len() > MAX_PATH_BACKENDS {
            return Err(PathError::BackendCount {
                index,
                count: backends.len(),
                max: MAX_PATH_BACKENDS,
            });
        }
    }
    Ok(())
}

/// Builds one family's [`SHARDS`] shards from scratch: items bucketed by
/// shard (a counting sort), then each shard's sorted by key, which puts
/// duplicates side by side.
fn build_shards<'r, const A: usize>(
    items: &[(Key<A>, usize)],
    refs_of: &impl Fn(usize) -> &'r [u32],
    empty: &ShardRef,
    counts: &mut FamilyCounts,
    entries: &[PathEntry],
    problems: &mut Vec<PathError>,
) -> Vec<ShardRef> {
    let hashed: Vec<(u64, Key<A>, usize)> = items
        .iter()
        .map(|&(key, index)| (key.hash(), key, index))
        .collect();
    let mut starts = vec![0usize; SHARDS + 1];
    for (hash, _, _) in &hashed {
        starts[shard_index(*hash) + 1] += 1;
    }
    for i in 0..SHARDS {
        starts[i + 1] += starts[i];
    }
    let mut order = vec![0u32; hashed.len()];
    let mut fill = starts.clone();
    for (i, (hash, _, _)) in hashed.iter().enumerate() {
        let shard = shard_index(*hash);
        order[fill[shard]] = i as u32;
        fill[shard] += 1;
    }
    let mut shards = Vec::with_capacity(SHARDS);
    let mut group: Vec<(u64, Key<A>, usize)> = Vec::new();
    let mut built: Vec<(u64, Key<A>, &[u32])> = Vec::new();
    for shard in 0..SHARDS {
        group.clear();
        group.extend(
            order[starts[shard]..starts[shard + 1]]
                .iter()
                .map(|&i| hashed[i as usize]),
        );
        group.sort_unstable_by_key(|&(_, key, index)| (key, index));
        built.clear();
        let mut previous: Option<(Key<A>, usize)> = None;
        for &(hash, key, index) in &group {
            if let Some((prev_key, first)) = previous {
                if prev_key == key {
                    problems.push(PathError::Duplicate {
                        service: key.service(),
                        prefix: entries[index].prefix,
                        first,
                        duplicate: index,
                    });
                    continue;
                }
            }
            previous = Some((key, index));
            counts.count(key.service(), key.len(), true);
            built.push((hash, key, refs_of(index)));
        }
        shards.push(ShardRef::build(&built, empty));
    }
    shards
}

/// Lists one family's paths after `after` into `out`, up to `limit` in all;
/// the cursor of the last one listed if more remain.
fn list_family<const A: usize>(
    family: &Family<A>,
    family_id: u8,
    service: Option<u32>,
    after: Option<&PathCursor>,
    limit: usize,
    out: &mut Vec<PathEntry>,
) -> Option<PathCursor> {
    let first_shard = match after {
        Some(cursor) if cursor.family > family_id => return None,
        Some(cursor) if cursor.family == family_id => shard_index(cursor.hash),
        _ => 0,
    };
    let mut items: Vec<(PathCursor, Key<A>, &[u32])> = Vec::new();
    for index in first_shard..SHARDS {
        let Some(shard) = family.shard(index) else {
            continue;
        };
        items.clear();
        items.extend(
            shard
                .entries::<A>()
                .filter(|(key, _)| service.is_none_or(|s| key.service() == s))
                .map(|(key, refs)| (PathCursor::of(family_id, &key), key, refs))
                .filter(|(cursor, _, _)| after.is_none_or(|a| cursor > a)),
        );
        items.sort_unstable_by_key(|&(cursor, _, _)| cursor);
        for (_, key, refs) in &items {
            if out.len() == limit {
                return out.last().map(cursor_of_entry);
            }
            out.push(PathEntry {
                service: key.service(),
                prefix: prefix_of(key),
                backends: to_refs(refs),
            });
        }
    }
    None
}

/// The cursor of a listed entry.
fn cursor_of_entry(entry: &PathEntry) -> PathCursor {
    match AnyKey::of(entry.service, entry.prefix) {
        AnyKey::V4(key) => PathCursor::of(0, &key),
        AnyKey::V6(key) => PathCursor::of(1, &key),
    }
}

/// A page of [`PathTable::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPage {
    /// The paths of this page.
    pub entries: Vec<PathEntry>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<PathCursor>,
}

/// Where a listing stopped: a position in the table's fixed order (family,
/// hash, key). Shown and parsed as an opaque token for `flowgatectl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathCursor {
    family: u8,
    hash: u64,
    tag: u32,
    addr: [u32; 4],
}

impl PathCursor {
    fn of<const A: usize>(family: u8, key: &Key<A>) -> PathCursor {
        let mut addr = [0u32; 4];
        addr[..A].copy_from_slice(&key.addr);
        PathCursor {
            family,
            hash: key.hash(),
            tag: key.tag,
            addr,
        }
    }
}

impl fmt::Display for PathCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{:016x}-{:08x}", self.family, self.hash, self.tag)?;
        for word in self.addr {
            write!(f, "{word:08x}")?;
        }
        Ok(())
    }
}

/// A listing token that is not one [`PathCursor`] writes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a path listing cursor")]
pub struct BadCursor(String);

impl FromStr for PathCursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<PathCursor, BadCursor> {
        let bad = || BadCursor(text.to_string());
        let mut parts = text.split('-');
        let (Some(family), Some(hash), Some(rest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if family.len() != 1 || hash.len() != 16 || rest.len() != 40 || !rest.is_ascii() {
            return Err(bad());
        }
        let hex32 = |s: &str| u32::from_str_radix(s, 16).map_err(|_| bad());
        let family = u8::from_str_radix(family, 16).map_err(|_| bad())?;
        if family > 1 {
            return Err(bad());
        }
        let hash = u64::from_str_radix(hash, 16).map_err(|_| bad())?;
        let tag = hex32(&rest[..8])?;
        let mut addr = [0u32; 4];
        for (i, word) in addr.iter_mut().enumerate() {
            *word = hex32(&rest[8 + 8 * i..16 + 8 * i])?;
        }
        Ok(PathCursor {
            family,
            hash,
            tag,
            addr,
        })
    }
}

#[cfg(test)]
mod tests;
