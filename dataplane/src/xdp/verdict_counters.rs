//! The counters [`super::XdpTester::outcome`] tells a verdict by, and
//! what the tester knows of them between runs.
//!
//! A run moves exactly one of them by one, or none (a passed frame), and
//! which one depends on the action the run returned: a fast-path XDP_TX
//! `FAST_TX`, a fast-path redirect `FAST_REDIRECT`, a drop either
//! `DROPPED_NO_SOCKET` (handed up, with no socket in a test run) or one
//! ingress drop. So after a run the tester reads only the counters its
//! action can have moved — one lookup for most runs, none for a pass —
//! instead of every counter; [`VerdictCounters::read`] over all of them
//! (one batch) starts the account and
//! [`super::XdpTester::check_counters_accounted`] closes it, finding any
//! count the outcomes did not explain.

use aya::maps::{MapData, PerCpuArray};

use super::per_cpu::{per_cpu_total, per_cpu_totals};
use super::program::counter;
use super::XdpError;
use crate::pipeline::DropReason;
use crate::wire::ParseError;

/// The ingress checks' drop counters, with the reason the pipeline gives
/// each.
pub(super) const INGRESS_DROPS: [(u32, DropReason); 5] = [
    (counter::DROPPED_OTHER_HOST, DropReason::OtherHost),
    (counter::DROPPED_BROADCAST, DropReason::BroadcastFrame),
    (counter::DROPPED_MULTICAST, DropReason::MulticastFrame),
    (
        counter::DROPPED_BAD_IP_CHECKSUM,
        DropReason::Malformed(ParseError::BadIpChecksum),
    ),
    (
        counter::DROPPED_VLAN_NOT_CONFIGURED,
        DropReason::VlanNotConfigured,
    ),
];

/// How many counters, from the first, a full read takes: through the last
/// ingress drop.
const READ: u32 = counter::DROPPED_VLAN_NOT_CONFIGURED + 1;

/// The verdict counters' totals over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VerdictCounters {
    /// `DROPPED_NO_SOCKET`.
    pub(super) no_socket: u64,
    /// `FAST_TX`.
    pub(super) fast_tx: u64,
    /// `FAST_REDIRECT`.
    pub(super) fast_redirect: u64,
    /// The ingress drops, in [`INGRESS_DROPS`]' order.
    pub(super) ingress: [u64; 5],
}

impl VerdictCounters {
    /// All of them, in one batch read.
    pub(super) fn read(counters: &PerCpuArray<MapData, u64>) -> VerdictCounters {
        let totals = per_cpu_totals(counters, READ);
        let at = |index: u32| totals.get(index as usize).copied().unwrap_or(0);
        VerdictCounters {
            no_socket: at(counter::DROPPED_NO_SOCKET),
            fast_tx: at(counter::FAST_TX),
            fast_redirect: at(counter::FAST_REDIRECT),
            ingress: INGRESS_DROPS.map(|(index, _)| at(index)),
        }
    }
}

/// One counter's total over CPUs, in one lookup.
pub(super) fn read_one(counters: &PerCpuArray<MapData, u64>, index: u32) -> Result<u64, XdpError> {
    per_cpu_total(counters, index)
        .map_err(|e| XdpError::Other(format!("reading XDP counter {index}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::CacheGeometry;
    use crate::pipeline::Verdict;
    use crate::table::Snapshot;
    use crate::xdp::{ProgramOutcome, XdpTester};

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    /// A 60-byte frame of `ethertype` to `destination`.
    fn frame(destination: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&destination);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn tester() -> Option<XdpTester> {
        match XdpTester::load(CacheGeometry::new(1, 256)) {
            Ok(mut t) => {
                t.set_ingress_mac(MAC).expect("setting the interface's MAC");
                Some(t)
            }
            Err(e) => {
                eprintln!("skipped: the XDP program cannot be loaded here ({e})");
                None
            }
        }
    }

    fn outcome(t: &XdpTester, f: &[u8]) -> ProgramOutcome {
        t.outcome(f, 0, 1, u64::MAX, &Snapshot::empty())
            .expect("a test run")
    }

    #[test]
    fn outcomes_read_one_counter_each_and_account_for_every_count() {
        let Some(t) = tester() else { return };
        let other_host = frame([0x02, 0, 0, 0, 0, 7], 0x0800);
        let not_ip = frame(MAC, 0x88cc);
        for _ in 0..3 {
            assert_eq!(
                outcome(&t, &other_host),
                ProgramOutcome::Decided(Verdict::Drop(DropReason::OtherHost), other_host.clone())
            );
            assert_eq!(
                outcome(&t, &not_ip),
                ProgramOutcome::Decided(Verdict::Pass, not_ip.clone())
            );
        }
        t.check_counters_accounted();
        let read = VerdictCounters::read(t.counters_map());
        assert_eq!(read.ingress[0], 3, "three frames for another host");
    }

    #[test]
    fn a_count_no_outcome_explains_is_found() {
        let Some(t) = tester() else { return };
        let not_ip = frame(MAC, 0x88cc);
        outcome(&t, &not_ip);
        // A pass that also counted a hand-up, as a broken program might.
        t.bump_counter(counter::DROPPED_NO_SOCKET);
        outcome(&t, &not_ip);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.check_counters_accounted()
        }));
        let panic = caught.expect_err("the unexplained count was not found");
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(message.contains("did not account for"), "{message}");
        // The account starts again from what the counters read.
        t.check_counters_accounted();
        outcome(&t, &not_ip);
        t.check_counters_accounted();
    }
}
