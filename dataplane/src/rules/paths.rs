//! A service's distribution paths as the config model holds them: a list
//! in the order given, shared between config versions.
//!
//! A platform keeps up to millions of paths and edits them one at a time
//! through the control API, and every edit makes a new config version
//! from the running one. So [`Paths`] is persistent: made of immutable
//! parts behind `Arc`s, cloned in O(1) (one reference count), and changed
//! by copying only the parts on the way to what changes (a few nodes of 64
//! entries), the rest shared with the version it was made from. Two parts:
//!
//! - the paths, in order, in a radix tree of 64-wide nodes by position
//!   (a removed path leaves a hole, until holes outnumber the paths and
//!   the list is made again; the last one's slot is reused);
//! - an index from client prefix to position: 4 096 buckets by the
//!   prefix's hash, under 64 middle nodes of 64 (about 250 prefixes a
//!   bucket at a million paths).
//!
//! The order is what a file gave, so that the validator's positions are
//! the file's; an edit replaces a path in place or appends one.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{ClientPrefix, DistributionPath};

/// Bits of position or hash per level.
const BITS: u32 = 6;
/// Entries per node.
const WIDTH: usize = 1 << BITS;

/// A service's distribution paths: in the order given, at most one per
/// client prefix in a valid config (a decoded file may hold two, which the
/// validator reports; [`Paths::get`] finds the first).
#[derive(Clone, Default)]
pub struct Paths {
    slots: Slots,
    index: PrefixIndex,
    /// Paths held (slots that are not holes).
    len: usize,
}

impl Paths {
    /// No paths.
    pub fn new() -> Paths {
        Paths::default()
    }

    /// How many paths there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The paths, in order.
    pub fn iter(&self) -> PathsIter<'_> {
        PathsIter {
            stack: self.slots.root.iter().map(|n| (n, 0)).collect(),
            leaf: [].iter(),
            left: self.len,
        }
    }

    /// The first path.
    pub fn first(&self) -> Option<&DistributionPath> {
        self.iter().next()
    }

    /// The path of exactly `client`.
    pub fn get(&self, client: &ClientPrefix) -> Option<&DistributionPath> {
        let slot = self.index.get(client)?;
        self.slots.get(slot)
    }

    /// Adds `path` at the end, or replaces the path of its prefix where it
    /// is; returns the path replaced.
    pub fn put(&mut self, path: DistributionPath) -> Option<DistributionPath> {
        if let Some(slot) = self.index.get(&path.client) {
            return self.slots.set(slot, Some(path));
        }
        self.append(path);
        None
    }

    /// Appends `path`, even if its prefix has a path already (as a file
    /// may hold two; the validator refuses that config).
    pub fn push(&mut self, path: DistributionPath) {
        if self.index.get(&path.client).is_some() {
            let slot = self.slots.next;
            self.slots.set(slot, Some(path));
            self.len += 1;
        } else {
            self.append(path);
        }
    }

    /// Removes the path of `client`; returns it.
    pub fn remove(&mut self, client: &ClientPrefix) -> Option<DistributionPath> {
        let slot = self.index.remove(client)?;
        let removed = self.slots.set(slot, None);
        if removed.is_some() {
            self.len -= 1;
        }
        if self.slots.next - self.len > self.len.max(WIDTH) {
            // Mostly holes: made again, in order, without them.
            *self = self.iter().cloned().collect();
        }
        removed
    }

    /// Removes every path.
    pub fn clear(&mut self) {
        *self = Paths::default();
    }

    /// Whether `self` and `other` are the same version (one cloned from
    /// the other, neither changed since): equal without a look at the
    /// paths.
    pub fn ptr_eq(&self, other: &Paths) -> bool {
        self.len == other.len
            && self.slots.next == other.slots.next
            && self.slots.root.as_ref().map(Node::ptr) == other.slots.root.as_ref().map(Node::ptr)
    }

    fn append(&mut self, path: DistributionPath) {
        let slot = self.slots.next;
        self.index.insert(path.client, slot);
        self.slots.set(slot, Some(path));
        self.len += 1;
    }
}

impl PartialEq for Paths {
    fn eq(&self, other: &Paths) -> bool {
        self.ptr_eq(other) || (self.len == other.len && self.iter().eq(other.iter()))
    }
}

impl fmt::Debug for Paths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<DistributionPath> for Paths {
    fn from_iter<I: IntoIterator<Item = DistributionPath>>(iter: I) -> Paths {
        let mut paths = Paths::default();
        for path in iter {
            paths.push(path);
        }
        paths
    }
}

impl From<Vec<DistributionPath>> for Paths {
    fn from(paths: Vec<DistributionPath>) -> Paths {
        paths.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Paths {
    type Item = &'a DistributionPath;
    type IntoIter = PathsIter<'a>;

    fn into_iter(self) -> PathsIter<'a> {
        self.iter()
    }
}

/// The paths of a [`Paths`], in order.
pub struct PathsIter<'a> {
    /// Branches being walked, with the next child of each.
    stack: Vec<(&'a Node, usize)>,
    leaf: std::slice::Iter<'a, Option<DistributionPath>>,
    left: usize,
}

impl<'a> Iterator for PathsIter<'a> {
    type Item = &'a DistributionPath;

    fn next(&mut self) -> Option<&'a DistributionPath> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some(path) = self.leaf.by_ref().flatten().next() {
                self.left -= 1;
                return Some(path);
            }
            let (node, child) = self.stack.pop()?;
            match node {
                Node::Leaf(slots) => self.leaf = slots.iter(),
                Node::Branch(children) => {
                    if let Some(next) = children.get(child) {
                        self.stack.push((node, child + 1));
                        self.stack.push((next, 0));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// A node of the position tree.
#[derive(Clone)]
enum Node {
    /// Up to [`WIDTH`] slots.
    Leaf(Arc<Vec<Option<DistributionPath>>>),
    /// Up to [`WIDTH`] children, all full but the last.
    Branch(Arc<Vec<Node>>),
}

impl Node {
    fn ptr(&self) -> *const () {
        match self {
            Node::Leaf(slots) => Arc::as_ptr(slots).cast(),
            Node::Branch(children) => Arc::as_ptr(children).cast(),
        }
    }

    /// Sets slot `at` (below `1 << (BITS * (height + 1))`) of the subtree
    /// of this node, `height` levels above its leaves; copies the nodes on
    /// the way that are shared. Returns what the slot held.
    fn set(
        &mut self,
        height: u32,
        at: usize,
        value: Option<DistributionPath>,
    ) -> Option<DistributionPath> {
        match self {
            Node::Leaf(slots) => {
                let slots = Arc::make_mut(slots);
                if at >= slots.len() {
                    slots.resize(at + 1, None);
                }
                std::mem::replace(&mut slots[at], value)
            }
            Node::Branch(children) => {
                let child = at >> (BITS * height);
                let rest = at & ((1 << (BITS * height)) - 1);
                let children = Arc::make_mut(children);
                while children.len() <= child {
                    children.push(Node::empty(height - 1));
                }
                children[child].set(height - 1, rest, value)
            }
        }
    }

    fn get(&self, height: u32, at: usize) -> Option<&DistributionPath> {
        match self {
            Node::Leaf(slots) => slots.get(at)?.as_ref(),
            Node::Branch(children) => {
                let child = children.get(at >> (BITS * height))?;
                child.get(height - 1, at & ((1 << (BITS * height)) - 1))
            }
        }
    }

    fn empty(height: u32) -> Node {
        if height == 0 {
            Node::Leaf(Arc::default())
        } else {
            Node::Branch(Arc::default())
        }
    }
}

/// The paths by position: a radix tree, `height` levels of branches over
/// the leaves.
#[derive(Clone, Default)]
struct Slots {
    root: Option<Node>,
    height: u32,
    /// One past the last slot used.
    next: usize,
}

impl Slots {
    /// Sets slot `at` (at most [`Slots::next`]); returns what it held.
    fn set(&mut self, at: usize, value: Option<DistributionPath>) -> Option<DistributionPath> {
        let root = self.root.get_or_insert_with(|| Node::empty(0));
        while at >> (BITS * (self.height + 1)) != 0 {
            let below = std::mem::replace(root, Node::empty(0));
            *root = Node::Branch(Arc::new(vec![below]));
            self.height += 1;
        }
        let filled = value.is_some();
        let old = root.set(self.height, at, value);
        if filled {
            self.next = self.next.max(at + 1);
        } else {
            // Holes at the end: the next paths take them again.
            while self.next > 0 && self.get(self.next - 1).is_none() {
                self.next -= 1;
            }
        }
        old
    }

    fn get(&self, at: usize) -> Option<&DistributionPath> {
        if at >> (BITS * (self.height + 1)) != 0 {
            return None;
        }
        self.root.as_ref()?.get(self.height, at)
    }
}

/// A bucket of the prefix index: prefixes and their slots.
type Bucket = Arc<Vec<(ClientPrefix, usize)>>;

/// Client prefix → slot, in [`WIDTH`]² buckets by hash.
#[derive(Clone, Default)]
struct PrefixIndex {
    /// [`WIDTH`] middle nodes of [`WIDTH`] buckets, made at the first
    /// insert.
    root: Option<Arc<Vec<Arc<Vec<Bucket>>>>>,
}

impl PrefixIndex {
    /// The (middle, bucket) of `prefix`.
    fn place(prefix: &ClientPrefix) -> (usize, usize) {
        // SipHash with fixed keys: the same buckets in every process.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        prefix.hash(&mut hasher);
        let hash = hasher.finish();
        let mask = (WIDTH - 1) as u64;
        // Truncations intended: 6 bits each.
        ((hash & mask) as usize, ((hash >> BITS) & mask) as usize)
    }

    fn get(&self, prefix: &ClientPrefix) -> Option<usize> {
        let (middle, bucket) = PrefixIndex::place(prefix);
        let bucket = &self.root.as_ref()?[middle][bucket];
        bucket
            .iter()
            .find(|(p, _)| p == prefix)
            .map(|&(_, slot)| slot)
    }

    fn bucket_mut(&mut self, prefix: &ClientPrefix) -> &mut Vec<(ClientPrefix, usize)> {
        let (middle, bucket) = PrefixIndex::place(prefix);
        let root = self.root.get_or_insert_with(|| {
            let middle: Arc<Vec<Bucket>> = Arc::new(vec![Arc::default(); WIDTH]);
            Arc::new(vec![middle; WIDTH])
        });
        let middle = Arc::make_mut(&mut Arc::make_mut(root)[middle]);
        Arc::make_mut(&mut middle[bucket])
    }

    /// Indexes `prefix` (not indexed yet) at `slot`.
    fn insert(&mut self, prefix: ClientPrefix, slot: usize) {
        self.bucket_mut(&prefix).push((prefix, slot));
    }

    /// Forgets `prefix`; returns its slot.
    fn remove(&mut self, prefix: &ClientPrefix) -> Option<usize> {
        self.get(prefix)?;
        let bucket = self.bucket_mut(prefix);
        let at = bucket.iter().position(|(p, _)| p == prefix)?;
        Some(bucket.swap_remove(at).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn path(host: u32, backend: &str) -> DistributionPath {
        DistributionPath {
            client: ClientPrefix::host(IpAddr::V4(Ipv4Addr::from(host))),
            backends: vec![backend.into()],
        }
    }

    #[test]
    fn paths_keep_their_order_and_an_edit_leaves_the_version_it_was_made_from() {
        let first: Paths = (0..5000).map(|i| path(i, "a")).collect();
        assert_eq!(first.len(), 5000);
        let mut next = first.clone();
        assert!(next.ptr_eq(&first));
        // Replaced in place, removed, added at the end.
        assert_eq!(
            next.put(path(7, "b")).map(|p| p.backends),
            Some(vec!["a".into()])
        );
        assert_eq!(
            next.remove(&path(8, "").client).map(|p| p.backends),
            Some(vec!["a".into()])
        );
        assert_eq!(next.remove(&path(8, "").client), None);
        assert_eq!(next.put(path(9000, "c")), None);
        assert!(!next.ptr_eq(&first) && next != first);
        assert_eq!(next.len(), 5000);
        assert_eq!(next.get(&path(7, "").client).unwrap().backends, ["b"]);
        assert_eq!(next.get(&path(8, "").client), None);
        let order: Vec<u32> = next
            .iter()
            .map(|p| match p.client.address {
                IpAddr::V4(a) => u32::from(a),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect();
        let expected: Vec<u32> = (0..5000).filter(|&i| i != 8).chain([9000]).collect();
        assert_eq!(order, expected);
        // The first version is as it was.
        assert_eq!(first.get(&path(7, "").client).unwrap().backends, ["a"]);
        assert!(first.get(&path(8, "").client).is_some());
        assert!(first
            .iter()
            .map(|p| p.backends[0].as_str())
            .all(|b| b == "a"));
        assert_eq!(first.iter().count(), 5000);
        // Equal by content, whatever their holes.
        let same: Paths = next.iter().cloned().collect();
        assert_eq!(same, next);
    }

    #[test]
    fn the_last_slot_is_reused_and_a_list_of_holes_is_made_again() {
        let mut paths: Paths = (0..100).map(|i| path(i, "a")).collect();
        for _ in 0..1000 {
            paths.put(path(500, "x"));
            paths.remove(&path(500, "").client);
        }
        assert_eq!(paths.slots.next, 100);
        for i in 0..90 {
            paths.remove(&path(i, "").client);
        }
        assert_eq!(paths.len(), 10);
        assert!(paths.slots.next <= 100);
        let left: Vec<_> = paths.iter().cloned().collect();
        assert_eq!(left, (90..100).map(|i| path(i, "a")).collect::<Vec<_>>());
        for i in 90..100 {
            assert!(paths.get(&path(i, "").client).is_some());
        }
        paths.clear();
        assert!(paths.is_empty() && paths.first().is_none());
    }

    #[test]
    fn a_second_path_of_a_prefix_is_kept_for_the_validator() {
        let paths: Paths = vec![path(1, "a"), path(1, "b")].into();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths.get(&path(1, "").client).unwrap().backends, ["a"]);
        assert_eq!(paths.iter().count(), 2);
    }
}
