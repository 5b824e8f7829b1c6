//! Naming a backend by identity, not by address.
//!
//! A distribution path says "send this client to backend `orders-7`", not
//! "to 198.18.3.4:8080": containers move, and a path must follow without
//! being rewritten. So a path holds a [`BackendRef`], a small number that
//! stands for a backend's name. The control thread hands them out with
//! [`BackendNames`]; each snapshot resolves them, per service, to the
//! endpoint ids of that generation with a [`BackendIndex`]. Moving a
//! container changes its endpoint (one entry of the next snapshot's
//! index) and every path that names it follows; the path table is not
//! touched.

use hashbrown::HashMap;

use crate::table::EndpointId;

/// A backend's name, as a number: the key a path stores and a snapshot
/// resolves. Fits in 31 bits, so a path's value can tell one backend from
/// a list in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendRef(u32);

impl BackendRef {
    /// The largest ref.
    pub const MAX: u32 = (1 << 31) - 1;

    /// A ref; `None` above [`BackendRef::MAX`].
    pub const fn new(id: u32) -> Option<BackendRef> {
        if id <= BackendRef::MAX {
            Some(BackendRef(id))
        } else {
            None
        }
    }

    /// The ref as a number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The ref stored in a table word (its top bit, a table's flag, is
    /// not part of it).
    #[inline]
    pub(crate) const fn from_word(word: u32) -> BackendRef {
        BackendRef(word & BackendRef::MAX)
    }
}

/// Why a name could not be given a ref.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendNameError {
    /// All 2^31 refs are in use.
    #[error("cannot name backend {name:?}: all {} backend refs are in use", BackendRef::MAX as u64 + 1)]
    Exhausted {
        /// The name that did not fit.
        name: String,
    },
}

/// The control thread's register of backend names and their refs.
///
/// Each name is counted by its users (paths, backends of the config); its
/// ref is freed when the count falls to zero and reused later, so the
/// register stays as large as the set of names in use.
#[derive(Debug, Default)]
pub struct BackendNames {
    by_name: HashMap<Box<str>, NameEntry>,
    /// Name of each ref, `None` for a free one.
    names: Vec<Option<Box<str>>>,
    /// Freed refs, reused before new ones.
    free: Vec<u32>,
}

#[derive(Debug)]
struct NameEntry {
    backend: BackendRef,
    users: u32,
}

impl BackendNames {
    /// An empty register.
    pub fn new() -> BackendNames {
        BackendNames::default()
    }

    /// The ref of `name`, counting one more user; a new ref if the name had
    /// none.
    pub fn acquire(&mut self, name: &str) -> Result<BackendRef, BackendNameError> {
        if let Some(entry) = self.by_name.get_mut(name) {
            entry.users = entry.users.saturating_add(1);
            return Ok(entry.backend);
        }
        let backend = match self.free.pop() {
            Some(id) => BackendRef(id),
            None => u32::try_from(self.names.len())
                .ok()
                .and_then(BackendRef::new)
                .ok_or_else(|| BackendNameError::Exhausted {
                    name: name.to_string(),
                })?,
        };
        let name: Box<str> = name.into();
        let slot = backend.0 as usize;
        if slot == self.names.len() {
            self.names.push(Some(name.clone()));
        } else if let Some(entry) = self.names.get_mut(slot) {
            *entry = Some(name.clone());
        }
        self.by_name.insert(name, NameEntry { backend, users: 1 });
        Ok(backend)
    }

    /// One user of `backend` fewer; the ref is freed when none is left.
    /// Returns whether the ref is still in use.
    pub fn release(&mut self, backend: BackendRef) -> bool {
        let Some(Some(name)) = self.names.get(backend.0 as usize) else {
            return false;
        };
        let Some(entry) = self.by_name.get_mut(name) else {
            return false;
        };
        entry.users -= 1;
        if entry.users > 0 {
            return true;
        }
        let name = name.clone();
        self.by_name.remove(&name);
        self.names[backend.0 as usize] = None;
        self.free.push(backend.0);
        false
    }

    /// The ref of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<BackendRef> {
        self.by_name.get(name).map(|entry| entry.backend)
    }

    /// The name behind `backend`, if the ref is in use.
    pub fn name(&self, backend: BackendRef) -> Option<&str> {
        self.names.get(backend.0 as usize)?.as_deref()
    }

    /// How many names have a ref.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no name has a ref.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// One service's backends by ref, in one snapshot: what a path's
/// [`BackendRef`] is in this generation. Sorted, searched by bisection
/// (`⌈log2(n)⌉` comparisons over one small array).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendIndex {
    entries: Box<[(BackendRef, EndpointId)]>,
}

/// A ref given to two endpoints of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("backend ref {} names two endpoints ({first} and {second}) of one service", backend.get())]
pub struct DuplicateBackendRef {
    /// The ref.
    pub backend: BackendRef,
    /// One endpoint.
    pub first: EndpointId,
    /// The other.
    pub second: EndpointId,
}

impl BackendIndex {
    /// The index of a service's (ref, endpoint) pairs; a ref may name one
    /// endpoint only.
    pub fn build(
        pairs: impl IntoIterator<Item = (BackendRef, EndpointId)>,
    ) -> Result<BackendIndex, DuplicateBackendRef> {
        let mut entries: Vec<(BackendRef, EndpointId)> = pairs.into_iter().collect();
        entries.sort_unstable();
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(DuplicateBackendRef {
                backend: pair[0].0,
                first: pair[0].1,
                second: pair[1].1,
            });
        }
        Ok(BackendIndex {
            entries: entries.into_boxed_slice(),
        })
    }

    /// The endpoint `backend` names in this generation, if it is one of the
    /// service's backends.
    #[inline]
    pub fn resolve(&self, backend: BackendRef) -> Option<EndpointId> {
        let i = self
            .entries
            .binary_search_by_key(&backend, |&(b, _)| b)
            .ok()?;
        self.entries.get(i).map(|&(_, endpoint)| endpoint)
    }

    /// How many backends it names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it names none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_ref_while_used_and_refs_are_reused_after() {
        let mut names = BackendNames::new();
        let a = names.acquire("orders-1").unwrap();
        let b = names.acquire("orders-2").unwrap();
        assert_ne!(a, b);
        assert_eq!(names.acquire("orders-1").unwrap(), a);
        assert_eq!(names.get("orders-1"), Some(a));
        assert_eq!(names.name(b), Some("orders-2"));

        assert!(names.release(a)); // one user left
        assert_eq!(names.name(a), Some("orders-1"));
        assert!(!names.release(a)); // freed
        assert_eq!(names.get("orders-1"), None);
        assert_eq!(names.name(a), None);
        assert!(!names.release(a)); // releasing a free ref changes nothing
        assert_eq!(names.len(), 1);

        let c = names.acquire("payments-1").unwrap();
        assert_eq!(c, a, "a freed ref is reused");
        assert_eq!(names.name(c), Some("payments-1"));
        assert_eq!(names.get("orders-2"), Some(b));
    }

    #[test]
    fn refs_fit_in_31_bits() {
        assert_eq!(
            BackendRef::new(BackendRef::MAX).map(BackendRef::get),
            Some(0x7FFF_FFFF)
        );
        assert_eq!(BackendRef::new(1 << 31), None);
    }

    #[test]
    fn an_index_resolves_refs_of_its_service_only() {
        let r = |id| BackendRef::new(id).unwrap();
        let index = BackendIndex::build([(r(9), 40), (r(2), 41), (r(5), 42)]).unwrap();
        assert_eq!(index.resolve(r(2)), Some(41));
        assert_eq!(index.resolve(r(5)), Some(42));
        assert_eq!(index.resolve(r(9)), Some(40));
        assert_eq!(index.resolve(r(3)), None);
        assert_eq!(BackendIndex::default().resolve(r(2)), None);

        // A moved container: the next generation's index names a new
        // endpoint for the same ref.
        let next = BackendIndex::build([(r(9), 40), (r(2), 77), (r(5), 42)]).unwrap();
        assert_eq!(next.resolve(r(2)), Some(77));

        let err = BackendIndex::build([(r(1), 3), (r(1), 4)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "backend ref 1 names two endpoints (3 and 4) of one service"
        );
    }
}
