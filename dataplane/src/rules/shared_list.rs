//! A list shared between config versions: the model's services.
//!
//! Every change of the rules makes a new config version from the running
//! one (a control API edit, an etcd revision), and a fleet keeps ten
//! thousand services or more. So [`SharedList`] is persistent, as
//! [`super::Paths`] is for paths: each element sits behind an `Arc`, in
//! chunks of 64 behind an `Arc`, under one `Arc`. A clone copies one
//! pointer; an edit of one element copies the chunk list's pointers (one
//! per 64 elements), the element's chunk's 64 pointers and the element
//! itself, and the rest stays shared with the version it was made from.
//! Inserting or removing in the middle re-chunks what follows (pointer
//! copies, no element is copied).
//!
//! It reads like a slice: indexing, [`SharedList::iter`], `len`, `first`,
//! `last`, `for s in &list`; [`SharedList::get_mut`] and `IndexMut` copy
//! on write.

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Index, IndexMut, Range};
use std::sync::Arc;

/// Bits of position per chunk.
const BITS: u32 = 6;
/// Elements per chunk.
const WIDTH: usize = 1 << BITS;

/// One chunk: `WIDTH` elements, except the last chunk (1 to `WIDTH`).
type Chunk<T> = Arc<Vec<Arc<T>>>;

/// A list of `T` shared between versions. See the module's documentation.
pub struct SharedList<T> {
    chunks: Arc<Vec<Chunk<T>>>,
    len: usize,
}

impl<T> SharedList<T> {
    /// An empty list.
    pub fn new() -> SharedList<T> {
        SharedList {
            chunks: Arc::new(Vec::new()),
            len: 0,
        }
    }

    /// How many elements there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element at `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.get_shared(i).map(|e| &**e)
    }

    /// The element at `i`, as the `Arc` it is shared by.
    pub fn get_shared(&self, i: usize) -> Option<&Arc<T>> {
        if i >= self.len {
            return None;
        }
        self.chunks
            .get(i >> BITS)
            .and_then(|chunk| chunk.get(i & (WIDTH - 1)))
    }

    /// The first element.
    pub fn first(&self) -> Option<&T> {
        self.get(0)
    }

    /// The last element.
    pub fn last(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    /// The elements, in order.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            list: self,
            front: 0,
            back: self.len,
        }
    }

    /// Whether `self` and `other` are the same version (one cloned from
    /// the other, neither changed since).
    pub fn ptr_eq(&self, other: &SharedList<T>) -> bool {
        self.len == other.len && Arc::ptr_eq(&self.chunks, &other.chunks)
    }

    /// Whether element `i` of `self` is element `j` of `other`, shared
    /// (so equal without a look at it).
    pub fn shares(&self, i: usize, other: &SharedList<T>, j: usize) -> bool {
        match (self.get_shared(i), other.get_shared(j)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Binary search, by `compare` (the element's order against the one
    /// sought), among the elements of `range`, which must be sorted by it:
    /// `Ok(position)` of a match, or `Err(position)` where it would go.
    pub fn binary_search_in(
        &self,
        range: Range<usize>,
        mut compare: impl FnMut(&T) -> Ordering,
    ) -> Result<usize, usize> {
        let (mut low, mut high) = (range.start, range.end.min(self.len));
        while low < high {
            let mid = low + (high - low) / 2;
            match self.get(mid).map(&mut compare) {
                Some(Ordering::Less) => low = mid + 1,
                Some(Ordering::Greater) => high = mid,
                Some(Ordering::Equal) => return Ok(mid),
                None => break,
            }
        }
        Err(low)
    }

    /// Appends `value`.
    pub fn push(&mut self, value: T) {
        self.push_shared(Arc::new(value));
    }

    /// Appends an element already shared.
    pub fn push_shared(&mut self, value: Arc<T>) {
        let chunks = Arc::make_mut(&mut self.chunks);
        match chunks.last_mut() {
            Some(last) if last.len() < WIDTH => Arc::make_mut(last).push(value),
            _ => chunks.push(Arc::new(vec![value])),
        }
        self.len += 1;
    }

    /// Takes the last element out (a copy, if another version shares it).
    pub fn pop(&mut self) -> Option<T>
    where
        T: Clone,
    {
        let i = self.len.checked_sub(1)?;
        Some(self.remove(i))
    }

    /// Puts `value` at `i`, moving what follows one place on.
    ///
    /// # Panics
    /// If `i > len`, as `Vec::insert` does.
    pub fn insert(&mut self, i: usize, value: T) {
        assert!(i <= self.len, "insert at {i} past the end ({})", self.len);
        self.rechunk_from(i, |tail| tail.insert(0, Arc::new(value)));
    }

    /// Takes the element at `i` out, moving what follows one place back;
    /// returns it (a copy, if another version shares it).
    ///
    /// # Panics
    /// If `i >= len`, as `Vec::remove` does.
    pub fn remove(&mut self, i: usize) -> T
    where
        T: Clone,
    {
        assert!(i < self.len, "remove at {i} past the end ({})", self.len);
        let mut removed = None;
        self.rechunk_from(i, |tail| removed = Some(tail.remove(0)));
        let removed = removed.expect("the tail starts at the element removed");
        Arc::unwrap_or_clone(removed)
    }

    /// Keeps only the elements `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let kept: Vec<Arc<T>> = self
            .shared_iter()
            .filter(|e| keep(e))
            .map(Arc::clone)
            .collect();
        *self = SharedList::from_shared(kept);
    }

    /// Reverses the order.
    pub fn reverse(&mut self) {
        let mut elements: Vec<Arc<T>> = self.shared_iter().cloned().collect();
        elements.reverse();
        *self = SharedList::from_shared(elements);
    }

    /// Removes every element.
    pub fn clear(&mut self) {
        *self = SharedList::new();
    }

    /// The elements, as the `Arc`s they are shared by.
    pub fn shared_iter(&self) -> impl Iterator<Item = &Arc<T>> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The elements as a `Vec` (copies).
    pub fn to_vec(&self) -> Vec<T>
    where
        T: Clone,
    {
        self.iter().cloned().collect()
    }

    /// The element at `i`, to change: copied first if another version
    /// shares it (with its chunk's pointers).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T>
    where
        T: Clone,
    {
        if i >= self.len {
            return None;
        }
        let chunk = Arc::make_mut(&mut self.chunks).get_mut(i >> BITS)?;
        let element = Arc::make_mut(chunk).get_mut(i & (WIDTH - 1))?;
        Some(Arc::make_mut(element))
    }

    /// The first element, to change (copy on write).
    pub fn first_mut(&mut self) -> Option<&mut T>
    where
        T: Clone,
    {
        self.get_mut(0)
    }

    /// Every element, to change: each copied first if another version
    /// shares it.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T>
    where
        T: Clone,
    {
        Arc::make_mut(&mut self.chunks)
            .iter_mut()
            .flat_map(|c| Arc::make_mut(c).iter_mut())
            .map(Arc::make_mut)
    }

    /// A list of elements already shared, in order.
    pub fn from_shared(elements: Vec<Arc<T>>) -> SharedList<T> {
        let len = elements.len();
        let mut chunks = Vec::with_capacity(len.div_ceil(WIDTH));
        let mut rest = elements.into_iter();
        loop {
            let chunk: Vec<Arc<T>> = rest.by_ref().take(WIDTH).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(Arc::new(chunk));
        }
        SharedList {
            chunks: Arc::new(chunks),
            len,
        }
    }

    /// Changes the elements from `i` on with `edit` (given them from `i`)
    /// and puts them back in chunks; the chunks before `i`'s are kept as
    /// they are.
    fn rechunk_from(&mut self, i: usize, edit: impl FnOnce(&mut Vec<Arc<T>>)) {
        let first = i >> BITS;
        let chunks = Arc::make_mut(&mut self.chunks);
        let mut tail: Vec<Arc<T>> = chunks[first..]
            .iter()
            .flat_map(|c| c.iter().cloned())
            .collect();
        let before = i - first * WIDTH;
        let mut moved = tail.split_off(before);
        edit(&mut moved);
        tail.append(&mut moved);
        chunks.truncate(first);
        let kept = first * WIDTH;
        self.len = kept + tail.len();
        let mut rest = tail.into_iter();
        loop {
            let chunk: Vec<Arc<T>> = rest.by_ref().take(WIDTH).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(Arc::new(chunk));
        }
    }
}

impl<T> Default for SharedList<T> {
    fn default() -> Self {
        SharedList::new()
    }
}

impl<T> Clone for SharedList<T> {
    /// One pointer copied.
    fn clone(&self) -> Self {
        SharedList {
            chunks: Arc::clone(&self.chunks),
            len: self.len,
        }
    }
}

impl<T: PartialEq> PartialEq for SharedList<T> {
    fn eq(&self, other: &SharedList<T>) -> bool {
        self.ptr_eq(other)
            || (self.len == other.len
                && self
                    .shared_iter()
                    .zip(other.shared_iter())
                    .all(|(a, b)| Arc::ptr_eq(a, b) || a == b))
    }
}

impl<T: fmt::Debug> fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> Index<usize> for SharedList<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(element) => element,
            None => panic!("index {i} out of range for a list of {}", self.len),
        }
    }
}

impl<T: Clone> IndexMut<usize> for SharedList<T> {
    /// Copy on write, as [`SharedList::get_mut`].
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(i) {
            Some(element) => element,
            None => panic!("index {i} out of range for a list of {len}"),
        }
    }
}

impl<T> FromIterator<T> for SharedList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        SharedList::from_shared(iter.into_iter().map(Arc::new).collect())
    }
}

impl<T> From<Vec<T>> for SharedList<T> {
    fn from(elements: Vec<T>) -> Self {
        elements.into_iter().collect()
    }
}

impl<T> Extend<T> for SharedList<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for element in iter {
            self.push(element);
        }
    }
}

impl<'a, T> IntoIterator for &'a SharedList<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: Clone> IntoIterator for SharedList<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    /// The elements, each taken out or copied if another version shares
    /// it.
    fn into_iter(self) -> Self::IntoIter {
        let elements: Vec<T> = match Arc::try_unwrap(self.chunks) {
            Ok(chunks) => chunks
                .into_iter()
                .flat_map(Arc::unwrap_or_clone)
                .map(Arc::unwrap_or_clone)
                .collect(),
            Err(chunks) => chunks
                .iter()
                .flat_map(|c| c.iter())
                .map(|e| T::clone(e))
                .collect(),
        };
        elements.into_iter()
    }
}

/// The elements of a [`SharedList`], in order.
pub struct Iter<'a, T> {
    list: &'a SharedList<T>,
    front: usize,
    back: usize,
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter {
            list: self.list,
            front: self.front,
            back: self.back,
        }
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        if self.front >= self.back {
            return None;
        }
        let element = self.list.get(self.front);
        self.front += 1;
        element
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.back - self.front;
        (left, Some(left))
    }

    fn nth(&mut self, n: usize) -> Option<&'a T> {
        self.front = self.front.saturating_add(n).min(self.back);
        self.next()
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        self.back -= 1;
        self.list.get(self.back)
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the same edits on a `SharedList` and a `Vec` and compares them
    /// after each, with an older version kept to show it is untouched.
    #[test]
    fn edits_read_as_a_vec_does_and_leave_older_versions_alone() {
        let mut list: SharedList<u32> = (0..200).collect();
        let mut vec: Vec<u32> = (0..200).collect();
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n.max(1)
        };
        for step in 0..2_000u32 {
            let older = list.clone();
            let older_vec = vec.clone();
            match next(5) {
                0 => {
                    let i = next(vec.len() + 1);
                    list.insert(i, step);
                    vec.insert(i, step);
                }
                1 if !vec.is_empty() => {
                    let i = next(vec.len());
                    assert_eq!(list.remove(i), vec.remove(i));
                }
                2 => {
                    list.push(step);
                    vec.push(step);
                }
                _ if !vec.is_empty() => {
                    let i = next(vec.len());
                    list[i] = step;
                    vec[i] = step;
                }
                _ => {}
            }
            assert_eq!(list.len(), vec.len());
            assert!(list.iter().eq(vec.iter()), "step {step}");
            assert!(list.iter().rev().eq(vec.iter().rev()), "step {step}");
            assert!(
                older.iter().eq(older_vec.iter()),
                "step {step}: older changed"
            );
            assert_eq!(list == older, vec == older_vec);
        }
        list.retain(|v| v % 3 != 0);
        vec.retain(|v| v % 3 != 0);
        assert!(list.iter().eq(vec.iter()));
        assert_eq!(list.clone().into_iter().collect::<Vec<_>>(), vec);
    }

    #[test]
    fn an_edit_shares_every_other_element() {
        let list: SharedList<String> = (0..1_000).map(|i| i.to_string()).collect();
        let mut next = list.clone();
        assert!(next.ptr_eq(&list));
        next[500] = "changed".into();
        assert!(!next.ptr_eq(&list));
        assert_eq!(list[500], "500");
        for i in (0..1_000).filter(|&i| i != 500) {
            assert!(next.shares(i, &list, i), "{i} was copied");
        }
        assert!(!next.shares(500, &list, 500));
        next.remove(10);
        assert!(next.shares(9, &list, 9));
        assert!(next.shares(10, &list, 11));
    }

    #[test]
    fn binary_search_in_a_range() {
        let list: SharedList<u32> = [9, 1, 3, 5, 7].into_iter().collect();
        assert_eq!(list.binary_search_in(1..5, |v| v.cmp(&5)), Ok(3));
        assert_eq!(list.binary_search_in(1..5, |v| v.cmp(&4)), Err(3));
        assert_eq!(list.binary_search_in(1..5, |v| v.cmp(&8)), Err(5));
        assert_eq!(list.binary_search_in(1..1, |v| v.cmp(&8)), Err(1));
    }
}
