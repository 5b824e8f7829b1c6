//! Checking, reloading and applying rules grows linearly with the rules,
//! counted rather than timed: this binary's allocator counts the
//! allocations and the bytes every step asks for, and a config four times
//! as large must cost at most about four times as much (a quadratic step
//! would cost sixteen). What is counted is what makes the work: a step
//! that copies or rebuilds a growing collection per service or per
//! backend, a set of every service built per service, a table per backend
//! shows here as it does in the benchmark's curve (`cargo bench --bench
//! scale`, docs/benchmarks.md), with no clock involved.
//!
//! One test function, so that no other test allocates while it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flowgate_dataplane::control::{ControlState, Dataplane, MemoryDataplane};
use flowgate_dataplane::daemon;
use flowgate_dataplane::rules::{load_str, next_prime};

/// The system allocator, counting.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters are atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations and bytes asked for while `work` ran.
#[derive(Clone, Copy, Debug)]
struct Cost {
    allocations: u64,
    bytes: u64,
}

fn cost_of(work: impl FnOnce()) -> Cost {
    let (a, b) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    work();
    Cost {
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - a,
        bytes: BYTES.load(Ordering::Relaxed) - b,
    }
}

/// One interface, one core, tables of `table_size` slots.
fn head(table_size: u32) -> String {
    format!(
        "[gateway]\nmaglev_table_size = {table_size}\n\n[daemon]\ncores = [0]\n\n\
         [[interfaces]]\nname = \"fg-client\"\nmac = \"02:66:67:00:00:01\"\n\n"
    )
}

/// Address `i` of 198.18.0.0/15, past its first 256.
fn address(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0xc612_0000u32 + 256 + i as u32)
}

/// `n` services of one backend each, tables of 1021 slots.
fn services(n: usize) -> (String, String) {
    let head = head(1021);
    let mut text = head.clone();
    for i in 0..n {
        let _ = write!(
            text,
            "[[services]]\nname = \"svc-{i}\"\nprotocol = \"tcp\"\nvip = \"{}\"\nport = 80\n\
             scheduler = \"maglev\"\n\n[[services.backends]]\naddress = \"{}\"\nport = 8080\n\n",
            address(i),
            address(60_000 + i),
        );
    }
    (head, text)
}

/// One service of `n` backends, a table of about 100 slots per backend.
fn backends(n: usize) -> (String, String) {
    let head = head(next_prime(100 * n as u32).expect("a prime"));
    let mut text = head.clone();
    text.push_str(
        "[[services]]\nname = \"big\"\nprotocol = \"tcp\"\nvip = \"198.19.0.10\"\nport = 80\n\
         scheduler = \"maglev\"\n\n",
    );
    for i in 0..n {
        let _ = write!(
            text,
            "[[services.backends]]\naddress = \"{}\"\nport = 8080\n\n",
            address(i)
        );
    }
    (head, text)
}

/// The cost of `flowgate check`, of a reload and of an `apply` of `text`
/// onto rules with no services (`head`).
fn costs(shape: &str, n: usize, (head, text): (String, String)) -> [Cost; 3] {
    let dir = std::env::temp_dir().join(format!("fgt-scale-{}-{shape}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flowgate.toml");
    std::fs::write(&path, &text).unwrap();
    let base = load_str(&head, "base").unwrap();

    let check = cost_of(|| {
        daemon::load_checked(&path, None).unwrap();
    });
    let dataplane: Arc<dyn Dataplane> = Arc::new(MemoryDataplane::new());
    let mut state = ControlState::new(base.clone(), "test", dataplane);
    let reload = cost_of(|| {
        state.reload(&path).unwrap();
    });
    let dataplane: Arc<dyn Dataplane> = Arc::new(MemoryDataplane::new());
    let mut state = ControlState::new(base, "test", dataplane);
    let apply = cost_of(|| {
        state.apply_text(&text, "test", false).unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
    [check, reload, apply]
}

#[test]
fn check_reload_and_apply_cost_grows_linearly_with_services_and_backends() {
    const SMALL: usize = 1_000;
    const FACTOR: u64 = 4;
    // Linear work costs FACTOR times as much; allow for the fixed part
    // shrinking and for collections' doubling, but not for a square.
    let limit = FACTOR as f64 * 1.5;
    for (shape, make) in [
        ("services", services as fn(usize) -> (String, String)),
        ("backends", backends),
    ] {
        let small = costs(shape, SMALL, make(SMALL));
        let large = costs(
            shape,
            SMALL * FACTOR as usize,
            make(SMALL * FACTOR as usize),
        );
        for ((step, s), l) in ["check", "reload", "apply"].iter().zip(small).zip(large) {
            let allocations = l.allocations as f64 / s.allocations.max(1) as f64;
            let bytes = l.bytes as f64 / s.bytes.max(1) as f64;
            eprintln!("{step} of {shape}: ×{allocations:.2} allocations, ×{bytes:.2} bytes");
            assert!(
                allocations <= limit && bytes <= limit,
                "{step} of {shape}: {FACTOR}× the rules cost {allocations:.1}× the allocations \
                 and {bytes:.1}× the bytes ({s:?} → {l:?}); linear work stays under {limit}×"
            );
        }
    }
}
