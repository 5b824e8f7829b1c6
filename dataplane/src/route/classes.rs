//! Client classes: an immutable longest-prefix-match table from client
//! prefixes to a small class id.
//!
//! The control thread builds a [`ClientClasses`] from the configured
//! prefixes; the snapshot keeps it and maps each [`ClassId`] to what the
//! class means (a SET name and a zone). Workers look a client up once per
//! new flow.
//!
//! # Shape and cost
//!
//! Prefixes are nested or disjoint, never partly overlapping, so a family's
//! prefixes cut its address space into at most `2n + 1` intervals, each
//! with one answer: the class of the longest prefix covering it, or none.
//! The table keeps only the intervals' start addresses (adjacent intervals
//! with the same answer merged), in Eytzinger order (the implicit binary
//! tree laid out breadth first), beside each start the answer of the
//! interval before it. A lookup is a branch-free descent of that tree:
//! `⌈log2(m + 1)⌉` comparisons for `m` intervals, with the top levels of
//! the tree sharing a few cache lines. For 10 000 prefixes that is at most
//! 15 comparisons, whatever the mix of lengths (a table probed length by
//! length would cost one hash probe per length present, up to 33 or 129).
//!
//! Memory: per interval one start (4 or 16 bytes) and one answer (4 bytes).
//! Building sorts the prefixes (`O(n log n)`), which also finds exact
//! duplicates, then sweeps them once with a stack.
//!
//! # IPv4: direct-indexed stages in front
//!
//! An IPv4 table of [`direct::MIN_INTERVALS`] intervals or more is also
//! laid out as a 16-8-8 multibit trie ([`direct::DirectV4`]): an array of
//! 65 536 entries indexed by the address's top 16 bits, each the answer of
//! its whole /16 or a chunk of 256 entries for its /24s, each of those the
//! answer of its /24 or a chunk of 256 for its addresses. A lookup is at
//! most three dependent loads and a dozen instructions, where the tree's
//! descent is 15 dependent comparisons at 10 000 prefixes. The trie is
//! built from the same intervals, so it gives the same answer for every
//! address (tested against the tree); it is kept only while it takes at
//! most [`direct::MAX_ENTRIES`] entries (scattered long prefixes would
//! need a chunk per /24), else the tree answers alone.

use std::fmt;

use super::prefix::{v4_mask, v6_mask, ClientAddr, Prefix};

/// A client class: an opaque id the snapshot maps to what the class means
/// (e.g. a SET name and a zone, or the index of the configured entry, so
/// that `explain` can name the prefix that matched).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId(u32);

/// The table's marker for "no class"; no [`ClassId`] has it.
const NO_CLASS: u32 = u32::MAX;

impl ClassId {
    /// The largest id.
    pub const MAX: u32 = NO_CLASS - 1;

    /// A class id; `None` above [`ClassId::MAX`].
    pub const fn new(id: u32) -> Option<ClassId> {
        if id <= ClassId::MAX {
            Some(ClassId(id))
        } else {
            None
        }
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The same prefix (address and length) given more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DuplicatePrefix {
    /// The prefix.
    pub prefix: Prefix,
    /// Position of its first occurrence in the input.
    pub first: usize,
    /// Position of a later occurrence.
    pub duplicate: usize,
}

/// Why [`ClientClasses::build`] refused its input: every duplicated prefix,
/// in input order of the later occurrence, so that a validator can attach a
/// file position to each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", DuplicateLines(duplicates))]
pub struct DuplicatePrefixes {
    /// One entry per later occurrence.
    pub duplicates: Vec<DuplicatePrefix>,
}

struct DuplicateLines<'a>(&'a [DuplicatePrefix]);

impl fmt::Display for DuplicateLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "prefix {} is given twice (entries {} and {})",
                d.prefix, d.first, d.duplicate
            )?;
        }
        Ok(())
    }
}

/// The longest-prefix-match table of client classes, both families.
#[derive(Clone, Debug, Default)]
pub struct ClientClasses {
    v4: IntervalMap<u32>,
    /// The IPv4 intervals as a trie, when large enough to be worth it and
    /// small enough to keep.
    v4_direct: Option<direct::DirectV4>,
    v6: IntervalMap<u128>,
    prefixes: usize,
}

impl ClientClasses {
    /// A table of `entries` (prefix, class). Refused, listing every one, if
    /// a prefix (same address and length) occurs more than once, even with
    /// the same class.
    pub fn build<I>(entries: I) -> Result<ClientClasses, DuplicatePrefixes>
    where
        I: IntoIterator<Item = (Prefix, ClassId)>,
    {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut prefixes = 0;
        for (index, (prefix, class)) in entries.into_iter().enumerate() {
            prefixes += 1;
            match prefix {
                Prefix::V4 { addr, len } => v4.push(Span {
                    start: addr,
                    end: addr | !v4_mask(len),
                    len,
                    class: class.0,
                    index,
                }),
                Prefix::V6 { addr, len } => v6.push(Span {
                    start: addr,
                    end: addr | !v6_mask(len),
                    len,
                    class: class.0,
                    index,
                }),
            }
        }
        let mut duplicates = Vec::new();
        sort_and_find_duplicates(&mut v4, &mut duplicates, |s| Prefix::V4 {
            addr: s.start,
            len: s.len,
        });
        sort_and_find_duplicates(&mut v6, &mut duplicates, |s| Prefix::V6 {
            addr: s.start,
            len: s.len,
        });
        if !duplicates.is_empty() {
            duplicates.sort_by_key(|d| d.duplicate);
            return Err(DuplicatePrefixes { duplicates });
        }
        let v4_bounds = boundaries(&v4);
        Ok(ClientClasses {
            v4_direct: direct::DirectV4::build(&v4_bounds),
            v4: IntervalMap::from_boundaries(&v4_bounds),
            v6: IntervalMap::from_boundaries(&boundaries(&v6)),
            prefixes,
        })
    }

    /// The class of the longest prefix containing `addr`; `None` if no
    /// prefix does. An IPv4 client is only matched against IPv4 prefixes.
    /// Always inlined: out of line, the call costs a routed new flow more
    /// than the trie's lookup does.
    #[inline(always)]
    pub fn lookup(&self, addr: ClientAddr) -> Option<ClassId> {
        let class = match addr {
            ClientAddr::V4(a) => match &self.v4_direct {
                Some(direct) => direct.lookup(a),
                None => self.v4.lookup(a),
            },
            ClientAddr::V6(a) => self.v6.lookup(a),
        };
        ClassId::new(class)
    }

    /// How many prefixes it was built from.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    /// Whether it was built from no prefix.
    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// How many intervals each family's space is cut into (IPv4, IPv6).
    pub fn intervals(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Bytes it holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        let direct = self
            .v4_direct
            .as_ref()
            .map_or(0, direct::DirectV4::heap_bytes);
        self.v4.heap_bytes() + self.v6.heap_bytes() + direct
    }

    /// Whether IPv4 lookups go through the direct-indexed stages.
    pub fn has_direct_v4(&self) -> bool {
        self.v4_direct.is_some()
    }
}

/// One prefix as the span of addresses it covers.
#[derive(Clone, Copy, Debug)]
struct Span<T> {
    start: T,
    end: T,
    len: u8,
    class: u32,
    /// Position in the input.
    index: usize,
}

/// Sorts spans by (start, length): a prefix comes before the longer ones
/// it contains, and copies of one prefix are adjacent, in input order.
/// Removes the later copies, recording each as a duplicate.
fn sort_and_find_duplicates<T: Copy + Ord>(
    spans: &mut Vec<Span<T>>,
    duplicates: &mut Vec<DuplicatePrefix>,
    prefix_of: impl Fn(&Span<T>) -> Prefix,
) {
    spans.sort_by_key(|s| (s.start, s.len, s.index));
    let mut first: Option<Span<T>> = None;
    spans.retain(|s| {
        let is_copy = matches!(first, Some(f) if f.start == s.start && f.len == s.len);
        if is_copy {
            if let Some(f) = first {
                duplicates.push(DuplicatePrefix {
                    prefix: prefix_of(s),
                    first: f.index,
                    duplicate: s.index,
                });
            }
        } else {
            first = Some(*s);
        }
        !is_copy
    });
}

/// An address type: `u32` or `u128`.
trait Address: Copy + Ord + Default + fmt::Debug {
    /// The next address, `None` past the last one.
    fn successor(self) -> Option<Self>;
}

impl Address for u32 {
    fn successor(self) -> Option<u32> {
        self.checked_add(1)
    }
}

impl Address for u128 {
    fn successor(self) -> Option<u128> {
        self.checked_add(1)
    }
}

/// One family's address space cut into intervals, searched as an
/// Eytzinger tree.
#[derive(Clone, Debug)]
struct IntervalMap<T> {
    /// Interval starts in Eytzinger order from index 1 (index 0 is unused):
    /// the children of node `k` are `2k` and `2k + 1`.
    starts: Box<[T]>,
    /// For node `k`: the answer of the interval just before `starts[k]`.
    before: Box<[u32]>,
    /// The answer of the last interval (up to the family's last address).
    last: u32,
}

impl<T: Address> Default for IntervalMap<T> {
    fn default() -> IntervalMap<T> {
        IntervalMap::from_boundaries(&boundaries::<T>(&[]))
    }
}

/// Where each answer begins, for prefixes sorted by (start, length),
/// duplicates removed: (start, answer) pairs, strictly increasing in
/// start, the first at address 0, neighbours' answers different. Interval
/// `i` runs from its start to the next one's, or to the family's end.
fn boundaries<T: Address>(spans: &[Span<T>]) -> Vec<(T, u32)> {
    // Boundaries (start, answer), non-decreasing in start: where an
    // answer begins. Prefixes nest, so the covering prefixes of the
    // sweep position form a stack; when one ends, its parent's answer
    // resumes.
    let mut bounds: Vec<(T, u32)> = vec![(T::default(), NO_CLASS)];
    let mut open: Vec<Span<T>> = Vec::new();
    let close_until = |open: &mut Vec<Span<T>>, bounds: &mut Vec<(T, u32)>, limit| {
        while let Some(top) = open.last().copied() {
            if matches!(limit, Some(l) if top.end >= l) {
                break;
            }
            open.pop();
            if let Some(next) = top.end.successor() {
                let parent = open.last().map_or(NO_CLASS, |p| p.class);
                bounds.push((next, parent));
            }
        }
    };
    for span in spans {
        close_until(&mut open, &mut bounds, Some(span.start));
        bounds.push((span.start, span.class));
        open.push(*span);
    }
    close_until(&mut open, &mut bounds, None);

    // At equal starts the last boundary pushed holds (an inner prefix
    // starts after its parent; a prefix starts after its sibling ends);
    // then equal neighbouring answers merge.
    let mut sorted: Vec<(T, u32)> = Vec::with_capacity(bounds.len());
    for (start, class) in bounds {
        if let Some(prev) = sorted.last_mut() {
            if prev.0 == start {
                *prev = (start, class);
                continue;
            }
        }
        sorted.push((start, class));
    }
    let mut merged: Vec<(T, u32)> = Vec::with_capacity(sorted.len());
    for (start, class) in sorted {
        if let Some(prev) = merged.last() {
            if prev.1 == class {
                continue;
            }
        }
        merged.push((start, class));
    }
    merged
}

impl<T: Address> IntervalMap<T> {
    /// The tree of `merged`, as [`boundaries`] gives them.
    fn from_boundaries(merged: &[(T, u32)]) -> IntervalMap<T> {
        let n = merged.len();
        let mut starts = vec![T::default(); n + 1];
        let mut before = vec![NO_CLASS; n + 1];
        let mut next = 0;
        fill_eytzinger(merged, &mut starts, &mut before, &mut next, 1);
        IntervalMap {
            starts: starts.into_boxed_slice(),
            before: before.into_boxed_slice(),
            last: merged.last().map_or(NO_CLASS, |b| b.1),
        }
    }

    /// The answer of the interval holding `x`.
    #[inline]
    fn lookup(&self, x: T) -> u32 {
        let starts = &self.starts[..];
        let mut k = 1;
        while k < starts.len() {
            k = 2 * k + usize::from(starts[k] <= x);
        }
        // `k` walked past the leaves; dropping the trailing right turns and
        // the last left turn gives the first start greater than `x`.
        k >>= k.trailing_ones() + 1;
        if k == 0 {
            self.last
        } else {
            self.before.get(k).copied().unwrap_or(NO_CLASS)
        }
    }

    fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.starts) + std::mem::size_of_val(&*self.before)
    }
}

/// Lays `sorted` out in Eytzinger order: an in-order walk of the implicit
/// tree rooted at `k` takes the sorted boundaries one by one.
fn fill_eytzinger<T: Copy>(
    sorted: &[(T, u32)],
    starts: &mut [T],
    before: &mut [u32],
    next: &mut usize,
    k: usize,
) {
    if k >= starts.len() {
        return;
    }
    fill_eytzinger(sorted, starts, before, next, 2 * k);
    starts[k] = sorted[*next].0;
    before[k] = if *next == 0 {
        NO_CLASS
    } else {
        sorted[*next - 1].1
    };
    *next += 1;
    fill_eytzinger(sorted, starts, before, next, 2 * k + 1);
}

mod direct;

#[cfg(test)]
mod tests;
