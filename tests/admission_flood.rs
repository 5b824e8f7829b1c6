//! The per-client table under a flood of ten million distinct sources:
//! its memory does not grow (nothing is allocated, resident memory stays
//! put), a legitimate client below its limit is never refused, and a client
//! hammering its limit stays limited.
//!
//! The binary holds this one test, so its allocation count and resident
//! memory are the flood's alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use flowgate_dataplane::admission::{
    ClientOutcome, ClientRateLimit, ClientRateParams, ClientRateTable,
};

/// The system allocator, counting the allocations each thread makes.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// count is a thread-local Cell, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// This process's resident memory, in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// xorshift64*, for reproducible random sources.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const SECOND: u64 = 1_000_000_000;
const FLOOD: u64 = 10_000_000;
/// The flood's length: 2 M new sources a second.
const DURATION: u64 = 5 * SECOND;

#[test]
fn ten_million_sources_neither_grow_memory_nor_over_limit_a_client() {
    // 10 new flows a second per client, bursts of 10; /32 and /64.
    let limit = ClientRateLimit::new(10, Some(10), None, None).unwrap();
    let params = ClientRateParams::new(limit, 1);
    let mut table = ClientRateTable::new(1 << 18, 0x5eed);
    let memory = table.memory_bytes();
    assert_eq!(memory, 4 << 20);

    let legit = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2];
    let abuser: [u8; 16] = "2001:db8:1:2::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut legit_offered, mut legit_refused) = (0u64, 0u64);
    let (mut abuser_admitted, mut evictions) = (0u64, 0u64);

    // The count sees this thread's allocations.
    let probe = allocations();
    drop(std::hint::black_box(vec![0u8; 64]));
    assert!(allocations() > probe);

    let resident_before = resident_kib();
    let allocations_before = allocations();
    let gap = DURATION / FLOOD;
    for i in 0..FLOOD {
        let now = SECOND + i * gap;
        // Half IPv4 sources anywhere, half IPv6 sources in distinct /64s:
        // ten million distinct clients (a repeat is a 1-in-2^32 event).
        let r = rng.next();
        let src = if r & 1 == 0 {
            let v4 = (r >> 32) as u32;
            (0xffffu128 << 32 | u128::from(v4)).to_be_bytes()
        } else {
            (0x2001_0db8u128 << 96 | u128::from(r >> 1) << 64).to_be_bytes()
        };
        evictions +=
            u64::from(table.admit(0, &src, &params, now) == ClientOutcome::AdmittedEvicting);
        // The legitimate client: 5 a second, half its limit.
        if i % (FLOOD / 25) == 0 {
            legit_offered += 1;
            legit_refused += u64::from(!table.admit(0, &legit, &params, now).admitted());
        }
        // The abuser: 1 000 a second, a hundred times its limit.
        if i % (FLOOD / 5_000) == 0 {
            abuser_admitted += u64::from(table.admit(0, &abuser, &params, now).admitted());
        }
    }
    let allocated = allocations() - allocations_before;
    let grown_kib = resident_kib().saturating_sub(resident_before);

    assert_eq!(allocated, 0, "allocations during the flood");
    assert_eq!(table.memory_bytes(), memory);
    assert!(grown_kib < 1024, "resident memory grew by {grown_kib} KiB");
    assert_eq!(legit_offered, 25);
    assert_eq!(legit_refused, 0);
    // Its limit over 5 s: the burst of 10, then 10 a second.
    assert!(
        (59..=60).contains(&abuser_admitted),
        "abuser admitted {abuser_admitted}"
    );
    // The flood overflowed sets (that is what the evictions count), and
    // still neither client was affected.
    println!(
        "flood of {FLOOD}: {evictions} owing clients forgotten, {} owing at the end of {} entries",
        table.owing(SECOND + DURATION),
        table.capacity()
    );
}
