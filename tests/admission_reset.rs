//! The RST for a refused TCP new flow against frames made independently of
//! the crate: scapy builds each refused segment and the RST RFC 793
//! prescribes for it (tests/golden/make_resets.py, committed in
//! tests/golden/resets/), and the crate must turn the one into the other
//! byte for byte.

use std::path::{Path, PathBuf};

use flowgate_dataplane::admission::{write_reset, RefusedSegment};
use flowgate_dataplane::wire::{frame_checksums_ok, parse};

/// Every case make_resets.py writes.
const CASES: [&str; 8] = [
    "ipv4_syn",
    "ipv6_syn",
    "ipv4_syn_data_wraps",
    "ipv4_options_syn",
    "vlan_ipv4_syn",
    "qinq_ipv6_syn",
    "ipv4_ack_midstream",
    "ipv6_fin_ack",
];

fn resets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/resets")
}

/// The bytes of a .hex file: '#' lines are comments, the rest hex bytes.
fn read_hex(file: &str) -> Vec<u8> {
    let path = resets_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|byte| {
            u8::from_str_radix(byte, 16)
                .unwrap_or_else(|e| panic!("{}: {byte:?}: {e}", path.display()))
        })
        .collect()
}

#[test]
fn every_committed_case_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(resets_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".in.hex").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn the_reset_matches_scapy_byte_for_byte() {
    for case in CASES {
        let refused = read_hex(&format!("{case}.in.hex"));
        let expected = read_hex(&format!("{case}.out.hex"));
        assert!(frame_checksums_ok(&refused), "{case}: scapy's input");
        assert!(frame_checksums_ok(&expected), "{case}: scapy's RST");
        let meta = parse(&refused).unwrap_or_else(|e| panic!("{case}: {e}"));
        let segment = RefusedSegment::from_frame(&refused, &meta)
            .unwrap_or_else(|| panic!("{case}: not a TCP segment"));
        let mut out = [0u8; 2048];
        let len = write_reset(&segment, &mut out).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(&out[..len], &expected[..], "{case}");
        // Written over the refused frame's own buffer, too.
        let mut in_place = refused.clone();
        in_place.resize(2048, 0);
        let len = write_reset(&segment, &mut in_place).unwrap();
        assert_eq!(&in_place[..len], &expected[..], "{case}: in place");
    }
}
