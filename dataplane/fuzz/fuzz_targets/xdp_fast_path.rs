//! Fuzz target: a script of frames through the XDP program (via
//! BPF_PROG_TEST_RUN) and the pipeline, the fast path off and on; see
//! `flowgate_fuzz::xdp`. Needs root and BPF: without them it says so and
//! exits 0 at start-up, running nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Err(why) = flowgate_fuzz::xdp::fast_path_script(&[]) {
            eprintln!("xdp_fast_path: skipped: the XDP program cannot run here ({why}); it needs root and BPF_PROG_TEST_RUN");
            std::process::exit(0);
        }
    },
    |data: &[u8]| {
        if let Err(why) = flowgate_fuzz::xdp::fast_path_script(data) {
            panic!("the XDP program stopped running: {why}");
        }
    }
);
