//! Fuzz target: a script of frames through the pipeline; see
//! `flowgate_fuzz::check::pipeline_script` and `flowgate_fuzz::script`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowgate_fuzz::check::pipeline_script(data));
