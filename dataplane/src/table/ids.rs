//! Handing out ids for a snapshot build.
//!
//! Ids index vectors, so they are kept dense: a new id reuses a hole of the
//! previous snapshot (an id that was already free there) before growing the
//! vector. An id freed by the build under way is a hole only in the next
//! snapshot, so it is never handed out again in the build that freed it:
//! a flow holding it sees it vanish for at least one generation.

/// Hands out ids: the previous snapshot's holes first (ascending), then
/// fresh ids past its end.
#[derive(Debug)]
pub(crate) struct IdAllocator {
    /// Holes of the previous snapshot, largest first (popped from the end).
    holes: Vec<u32>,
    /// The next id past every id in use.
    next_fresh: u32,
}

impl IdAllocator {
    /// An allocator after a previous table whose slot `i` is live when
    /// `live[i]` holds.
    pub(crate) fn after(live: impl ExactSizeIterator<Item = bool>) -> IdAllocator {
        let len = live.len();
        let mut holes: Vec<u32> = live
            .enumerate()
            .filter(|(_, is_live)| !is_live)
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        holes.reverse();
        IdAllocator {
            holes,
            next_fresh: u32::try_from(len).unwrap_or(u32::MAX),
        }
    }

    /// The next id; `None` once all 2^32 ids are in use.
    pub(crate) fn allocate(&mut self) -> Option<u32> {
        if let Some(id) = self.holes.pop() {
            return Some(id);
        }
        let id = self.next_fresh;
        self.next_fresh = self.next_fresh.checked_add(1)?;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_first_then_fresh_ids() {
        let mut ids = IdAllocator::after([true, false, true, false].into_iter());
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), Some(3));
        assert_eq!(ids.allocate(), Some(4));
        assert_eq!(ids.allocate(), Some(5));
    }

    #[test]
    fn empty_previous_starts_at_zero() {
        let mut ids = IdAllocator::after(std::iter::empty::<bool>());
        assert_eq!(ids.allocate(), Some(0));
        assert_eq!(ids.allocate(), Some(1));
    }
}
