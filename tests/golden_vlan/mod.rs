//! Golden fixtures of the interfaces' VLAN settings (tests/golden/vlan/,
//! made by tests/golden/make_vlan.py): a client's accepted tag taken off
//! towards an untagged segment, replaced by a tagged segment's id (mapped),
//! and put back on the replies; an id not accepted, QinQ, and an untagged
//! frame where untagged frames are refused, dropped under
//! `vlan_not_configured`; the box's own tagged traffic passed as it came.
//! Each runs through the pipeline, and through the XDP program in front of
//! it with the kernel fast path off, on, and on with one port unable to
//! take XDP frames, which must all give the same verdict and frame.

use super::*;
use flowgate_dataplane::port::FrameMemory;

/// Three interfaces: fg-client takes VLANs 100 and 200 and untagged
/// frames and sends tagged 100; fg-backend is untagged; fg-tagged takes
/// VLAN 300 only and sends tagged 300.
pub(crate) const VLAN_RULES: &str = r#"
[[interfaces]]
name = "fg-client"
mac = "02:66:67:00:00:01"
vlans = [100, 200]
egress_vlan = 100

[[interfaces]]
name = "fg-backend"
mac = "02:66:67:00:01:01"

[[interfaces]]
name = "fg-tagged"
mac = "02:66:67:00:02:01"
vlans = [300]
untagged = false
egress_vlan = 300

[[neighbours]]
address = "198.18.1.11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

[[neighbours]]
address = "2001:2:0:1::11"
mac = "02:66:67:00:01:11"
interface = "fg-backend"

[[neighbours]]
address = "198.18.2.11"
mac = "02:66:67:00:02:11"
interface = "fg-tagged"

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080

[[services]]
name = "dns6"
protocol = "udp"
vip = "2001:2:0:100::10"
port = 53
[[services.backends]]
address = "2001:2:0:1::11"
port = 5353

[[services]]
name = "tagged"
protocol = "tcp"
vip = "198.18.100.20"
port = 80
[[services.backends]]
address = "198.18.2.11"
port = 8080
"#;

/// One case of make_vlan.py: its name, the port it arrives on, its
/// verdict.
struct Case(&'static str, u16, Verdict);

/// The cases in order: each fixture's steps run through one connection
/// table.
fn fixtures() -> Vec<(&'static str, Vec<Case>)> {
    let refused = Verdict::Drop(DropReason::VlanNotConfigured);
    vec![
        (
            "accepted id, stripped towards an untagged segment, replies tagged again",
            vec![
                Case("accepted_stripped_ipv4_syn", 0, Verdict::Transmit(1)),
                Case("reply_retagged_ipv4_syn_ack", 1, Verdict::Transmit(0)),
                Case("accepted_stripped_ipv4_ack", 0, Verdict::Transmit(1)),
                Case("reply_retagged_ipv4_ack", 1, Verdict::Transmit(0)),
            ],
        ),
        (
            "another accepted id over ipv6",
            vec![
                Case("accepted_stripped_ipv6_udp", 0, Verdict::Transmit(1)),
                Case("reply_retagged_ipv6_udp", 1, Verdict::Transmit(0)),
            ],
        ),
        (
            "accepted id mapped to the tagged segment's",
            vec![
                Case("mapped_ipv4_syn", 0, Verdict::Transmit(2)),
                Case("mapped_reply_ipv4_syn_ack", 2, Verdict::Transmit(0)),
                Case("mapped_ipv4_ack", 0, Verdict::Transmit(2)),
            ],
        ),
        (
            "refused tags",
            vec![
                Case("not_accepted_ipv4_syn", 0, refused),
                Case("qinq_ipv4_syn", 0, refused),
                Case("untagged_refused_ipv4_syn_ack", 2, refused),
                Case("kernel_ssh_tagged", 0, Verdict::Pass),
            ],
        ),
    ]
}

/// tests/golden/vlan/`name`.in.hex, and `.out.hex` (the input itself for
/// a frame not sent on).
fn frames(name: &str) -> (Vec<u8>, Vec<u8>) {
    let input = golden_frame("vlan", &format!("{name}.in.hex")).unwrap_or_else(|| {
        panic!("tests/golden/vlan/{name}.in.hex is missing: run tests/golden/make_vlan.py")
    });
    let output = golden_frame("vlan", &format!("{name}.out.hex")).unwrap_or_else(|| input.clone());
    (input, output)
}

#[test]
fn vlan_settings_give_the_golden_frames_through_the_pipeline() {
    for (fixture, cases) in fixtures() {
        let mut h = Harness::new(VLAN_RULES);
        for (i, Case(name, ingress, verdict)) in cases.iter().enumerate() {
            let (input, expected) = frames(name);
            let (v, out) = h.run(&input, *ingress, 1_000_000_000 + i as u64);
            assert_eq!(v, *verdict, "{fixture} / {name}: verdict");
            assert!(
                out == expected,
                "{fixture} / {name}: frame differs\n got:\n{}\n want:\n{}",
                hex(&out),
                hex(&expected)
            );
            if matches!(v, Verdict::Transmit(_)) {
                assert!(frame_checksums_ok(&out), "{fixture} / {name}: checksums");
            }
        }
    }
}

#[test]
fn vlan_settings_give_the_golden_frames_with_the_fast_path_on_and_off() {
    let mut off = WithXdp::with_rules(VLAN_RULES, 3, false, u64::MAX);
    let mut on = WithXdp::with_rules(VLAN_RULES, 3, true, u64::MAX);
    let mut half = WithXdp::with_rules(VLAN_RULES, 3, true, 0b001);
    for (fixture, cases) in fixtures() {
        off.reset(false);
        on.reset(true);
        half.reset(true);
        let mut now = 1_000_000_000;
        // Twice: the second time every connection is established, where
        // the fast path would take it.
        for round in 0..2 {
            for Case(name, ingress, verdict) in &cases {
                let (input, expected) = frames(name);
                now += 1_000;
                for (which, sys) in [
                    ("off", &mut off),
                    ("on", &mut on),
                    ("on, port 1 not ready", &mut half),
                ] {
                    let (v, out) = sys.run(&input, *ingress, now);
                    assert_eq!(
                        v, *verdict,
                        "{fixture} / {name} ({round}, fast path {which}): verdict"
                    );
                    assert!(
                        out == expected,
                        "{fixture} / {name} ({round}, fast path {which}): frame differs\n got:\n{}\n want:\n{}",
                        hex(&out),
                        hex(&expected)
                    );
                }
            }
        }
        assert_eq!(
            off.fast + on.fast + half.fast,
            0,
            "{fixture}: tags are the workers'"
        );
    }
}

#[test]
fn vlan_settings_give_the_same_frames_in_a_batch_from_a_frame_memory() {
    for (fixture, cases) in fixtures() {
        let mut h = Harness::new(VLAN_RULES);
        let mut replayed = Harness::new(VLAN_RULES);
        for (i, Case(name, ingress, _)) in cases.iter().enumerate() {
            let (input, _) = frames(name);
            let now = 1_000_000_000 + i as u64;
            let direct = h.run(&input, *ingress, now);
            // A frame memory's frame: room past its end, as in a port.
            let mut memory = flowgate_dataplane::port::MemoryFrames::new(1, 2048);
            let mut pool = memory.pool();
            let mut frame = pool.take().unwrap();
            assert!(memory.write(&mut frame, &input));
            let mut frames = [frame];
            let mut verdicts = Vec::new();
            replayed.pipeline.process_batch(
                &mut memory,
                &mut frames,
                *ingress,
                &replayed.snapshot,
                &mut replayed.flows,
                now,
                &mut verdicts,
            );
            let [frame] = frames;
            let batch = (verdicts[0], memory.frame(&frame).to_vec());
            assert_eq!(
                batch, direct,
                "{fixture} / {name}: a batch and a frame differ"
            );
            pool.put(frame);
        }
    }
}
