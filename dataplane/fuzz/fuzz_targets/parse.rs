//! Fuzz target: arbitrary bytes through `wire::parse`; see
//! `flowgate_fuzz::check::parse_frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| flowgate_fuzz::check::parse_frame(data));
