//! The Maglev build's wall time, one build at a time: each build of a
//! table (100 backends) is timed alone and the median, the fastest and the
//! 90th percentile are printed. On a shared machine criterion's samples
//! (batches of builds averaged) take in every time the thread waits for a
//! core; the median of single builds is what a build takes when it runs,
//! as an operator's reload of one service does.
//!
//! `cargo bench --bench maglev_wall -- [BUILDS]` (400 by default), under
//! `flock /tmp/flowgate-bench.lock` beside other timing runs.

use std::hint::black_box;
use std::time::Instant;

use flowgate_dataplane::table::MaglevTable;

mod support;

/// The table sizes measured: the default and a large service's.
const SIZES: [u32; 2] = [65_537, 655_373];

fn main() {
    let builds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(400);
    let backends = support::maglev_backends();
    for size in SIZES {
        // One build first, so that the allocator has its pages.
        black_box(MaglevTable::build(&backends, size));
        let mut ms: Vec<f64> = (0..builds)
            .map(|_| {
                let start = Instant::now();
                black_box(MaglevTable::build(black_box(&backends), black_box(size)));
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q) as usize];
        println!(
            "maglev build, {size} slots, {builds} builds: median {:.3} ms, fastest {:.3} ms, p90 {:.3} ms",
            at(0.5),
            at(0.0),
            at(0.9)
        );
    }
}
