//! The committed corpus of the last long campaign (`fuzz/kept/<target>/`)
//! replayed through the targets' own checks on the stable toolchain: every
//! input the fuzzer once found interesting keeps passing, whether or not
//! libFuzzer runs. See docs/fuzzing.md, "Campaigns".

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// The kept inputs of `target`, read whole, in name order.
fn kept(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kept")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

/// Runs `check` on every input, naming the one that fails.
fn replay(inputs: &[(String, Vec<u8>)], check: fn(&[u8])) {
    for (name, bytes) in inputs {
        if catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err() {
            panic!("{name} fails its checks: replay it with scripts/fuzz.sh's commands in docs/fuzzing.md");
        }
    }
}

#[test]
fn every_kept_parse_input_still_passes_its_checks() {
    let inputs = kept("parse");
    assert!(inputs.len() >= 100, "the parse corpus was kept whole");
    replay(&inputs, flowgate_fuzz::check::parse_frame);
}

#[test]
fn every_kept_pipeline_script_still_passes_its_checks() {
    let inputs = kept("pipeline");
    assert!(inputs.len() >= 500, "the pipeline corpus was kept whole");
    replay(&inputs, flowgate_fuzz::check::pipeline_script);
}

#[cfg(feature = "xdp")]
#[test]
fn every_kept_xdp_fast_path_script_still_passes_its_checks() {
    let inputs = kept("xdp_fast_path");
    assert!(!inputs.is_empty(), "the xdp_fast_path corpus was kept");
    if let Err(why) = flowgate_fuzz::xdp::fast_path_script(&[]) {
        eprintln!(
            "skipped: the XDP program cannot run here ({why}); it needs root and BPF_PROG_TEST_RUN"
        );
        return;
    }
    replay(&inputs, |script| {
        if let Err(why) = flowgate_fuzz::xdp::fast_path_script(script) {
            panic!("the XDP program stopped running: {why}");
        }
    });
}
