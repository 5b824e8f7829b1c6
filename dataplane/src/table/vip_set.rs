//! The set of the services' VIPs, asked of every new flow's source (a
//! source that is a VIP is a martian): a bitmap in front of the hash set
//! answers "no" for most sources with one word read, and only a source
//! whose bucket holds a VIP is looked up.

use hashbrown::HashSet;

/// Buckets of the bitmap: 4 096 bits, 512 bytes, eight cache lines.
const BUCKETS: usize = 4096;

/// The VIPs (16-byte form as a number), with a count and a bit per
/// bucket of their low 12 bits (an IPv4 VIP's last one and a half bytes).
#[derive(Clone, Debug)]
pub(super) struct VipSet {
    set: HashSet<u128>,
    /// VIPs per bucket, so that a removal knows when a bit clears.
    counts: Box<[u32]>,
    /// Bit `b` set while `counts[b]` is not zero.
    bits: Box<[u64]>,
}

impl Default for VipSet {
    fn default() -> Self {
        VipSet {
            set: HashSet::new(),
            counts: vec![0; BUCKETS].into_boxed_slice(),
            bits: vec![0; BUCKETS / 64].into_boxed_slice(),
        }
    }
}

#[inline(always)]
fn bucket(vip: u128) -> usize {
    vip as usize & (BUCKETS - 1)
}

impl VipSet {
    /// Room for `more` VIPs without growing.
    pub(super) fn reserve(&mut self, more: usize) {
        self.set.reserve(more);
    }

    /// Adds `vip` (a second add of one does nothing).
    pub(super) fn insert(&mut self, vip: u128) {
        if self.set.insert(vip) {
            let b = bucket(vip);
            if let (Some(count), Some(word)) = (self.counts.get_mut(b), self.bits.get_mut(b / 64)) {
                *count += 1;
                *word |= 1 << (b % 64);
            }
        }
    }

    /// Removes `vip`, if it is in.
    pub(super) fn remove(&mut self, vip: &u128) {
        if self.set.remove(vip) {
            let b = bucket(*vip);
            if let (Some(count), Some(word)) = (self.counts.get_mut(b), self.bits.get_mut(b / 64)) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    *word &= !(1 << (b % 64));
                }
            }
        }
    }

    /// Whether `vip` is in: the bitmap first, the set only for a source
    /// whose bucket holds a VIP.
    #[inline(always)]
    pub(super) fn contains(&self, vip: u128) -> bool {
        let b = bucket(vip);
        let maybe = self
            .bits
            .get(b / 64)
            .is_some_and(|w| w & 1 << (b % 64) != 0);
        maybe && self.set.contains(&vip)
    }

    /// The VIPs, in no order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &u128> {
        self.set.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> u128 {
        u128::from_be_bytes(crate::wire::v4_mapped(a))
    }

    #[test]
    fn members_are_found_and_others_are_not_even_in_a_shared_bucket() {
        let mut vips = VipSet::default();
        let vip = v4([198, 19, 0, 1]);
        // Same low 12 bits, another address: its bucket's bit is set, the
        // set says no.
        let neighbour = v4([198, 19, 16, 1]);
        assert_eq!(bucket(vip), bucket(neighbour));
        assert!(!vips.contains(vip));
        vips.insert(vip);
        assert!(vips.contains(vip));
        assert!(!vips.contains(neighbour));
        assert!(!vips.contains(v4([198, 19, 0, 2])));
        vips.insert(neighbour);
        assert!(vips.contains(neighbour));
        assert_eq!(vips.iter().count(), 2);
    }

    #[test]
    fn a_bucket_clears_when_its_last_vip_leaves_and_not_before() {
        let mut vips = VipSet::default();
        let (a, b) = (v4([198, 19, 0, 1]), v4([198, 19, 16, 1]));
        vips.insert(a);
        vips.insert(a);
        vips.insert(b);
        vips.remove(&a);
        assert!(!vips.contains(a));
        assert!(vips.contains(b));
        assert_ne!(vips.bits[bucket(b) / 64] & 1 << (bucket(b) % 64), 0);
        vips.remove(&b);
        vips.remove(&b);
        assert!(!vips.contains(b));
        assert!(vips.bits.iter().all(|&w| w == 0));
        assert!(vips.counts.iter().all(|&c| c == 0));
    }

    #[test]
    fn ipv6_vips_are_members_too() {
        let mut vips = VipSet::default();
        let vip = u128::from_be_bytes("2001:2::53".parse::<std::net::Ipv6Addr>().unwrap().octets());
        vips.insert(vip);
        assert!(vips.contains(vip));
        assert!(!vips.contains(vip + 1));
    }
}
