//! The `xdp_fast_path` target: a script of frames through flowgate's XDP
//! program (run by the kernel through `BPF_PROG_TEST_RUN`) in front of the
//! pipeline, three ways: with the fast path off, on, and on with port 1
//! unable to take XDP frames (its connections' packets handed up). Every
//! frame must get the same verdict and leave as the same bytes every way:
//! whatever the program forwards itself, the pipeline would have forwarded
//! the same way, and whatever it hands up reaches the pipeline untouched.
//! It is the property of tests/golden.rs's
//! `mutated_frames_of_established_connections_give_the_same_output_with_the_fast_path_on_and_off`,
//! over the fuzzer's scripts instead of random mutations of fixed ones.
//!
//! The input is a [script](crate::script) as for the `pipeline` target,
//! of which only the ingress port (bit 0) and the checksum repair (bit 2)
//! count: the program's clock is the kernel's, which a test run cannot
//! move, so time does not pass (1 µs a frame, as in the golden test), and
//! the rules stay the fixture's first snapshot.
//!
//! Needs root (or CAP_BPF and CAP_NET_ADMIN) and a kernel that runs XDP
//! programs through `BPF_PROG_TEST_RUN`; [`XdpSystems::load`] says why when
//! it cannot. The programs are loaded once per process (verifying them
//! takes a while); each script starts from empty caches and a reset
//! pipeline, so a failing input fails the same way alone.

use std::cell::RefCell;

use flowgate_dataplane::fastpath::{connection_rewrites, CacheGeometry, FastConfig};
use flowgate_dataplane::pipeline::Verdict;
use flowgate_dataplane::table::Snapshot;
use flowgate_dataplane::xdp::{OwnedTraffic, ProgramOutcome, XdpError, XdpTester};

use crate::check::Lane;
use crate::fixture::Fixture;
use crate::repair::repair_checksums;
use crate::script;

/// The interfaces of the fixture's rules (client side 0, backend side 1).
const PORTS: u16 = 2;

/// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
const MIN_FRAME: usize = 14;

/// The clock at the start of a script, and its step per frame.
const START_NS: u64 = 1_000_000_000;
const STEP_NS: u64 = 1_000;

/// One way of running frames: one program instance per port in front of
/// a pipeline, the fast path on or off.
struct System {
    lane: Lane,
    programs: Vec<XdpTester>,
    fast_path: bool,
    /// The ports the fast path may send out of (`FastConfig::egress_ready`).
    egress_ready: u64,
    /// Frames the fast path forwarded in this script.
    fast: usize,
}

impl System {
    fn load(fixture: &Fixture, fast_path: bool, egress_ready: u64) -> Result<System, XdpError> {
        let snapshot = rules(fixture);
        // 256 slots for at most 128 entries (64 connections, two
        // directions): every script clears every slot of six caches.
        let geometry = CacheGeometry::new(1, 256);
        let owned = OwnedTraffic::from_snapshot(snapshot);
        let mut programs = Vec::new();
        for port in 0..u32::from(PORTS) {
            let mut x = XdpTester::load(geometry)?;
            x.own(&owned)?;
            let port16 = port as u16;
            let mac = snapshot
                .interface_mac(port16)
                .unwrap_or_else(|| panic!("the fixture names no interface {port}"));
            x.set_ingress(mac, snapshot.vlans().port(port16))?;
            // Loopback stands in for every interface: a test run
            // redirects nothing, it only reports the action.
            for p in 0..u32::from(PORTS) {
                x.set_tx_port(p, 1)?;
            }
            x.set_fast_config(FastConfig {
                partitions: if fast_path { geometry.partitions } else { 0 },
                slot_mask: geometry.slots - 1,
                port_index: port,
                egress_ready,
            })?;
            programs.push(x);
        }
        Ok(System {
            lane: Lane::new(fixture),
            programs,
            fast_path,
            egress_ready,
            fast: 0,
        })
    }

    /// Back to the state every script starts from: the pipeline's lane
    /// reset, the caches empty, the fast path's writer new.
    fn reset(&mut self, fixture: &Fixture) {
        self.lane.reset(fixture);
        self.fast = 0;
        for x in &self.programs {
            x.clear_cache();
        }
        if self.fast_path {
            if let Some(fast) = XdpTester::fast_path(&self.programs, self.lane.flows.capacity()) {
                self.lane.flows.set_fast_path(fast);
            }
        }
    }

    /// One frame in on `ingress`: the verdict and frame of whichever of
    /// the program and the pipeline decided it.
    fn run(
        &mut self,
        snapshot: &Snapshot,
        input: &[u8],
        ingress: u16,
        now_ns: u64,
    ) -> (Verdict, Vec<u8>) {
        let program = &self.programs[usize::from(ingress)];
        let outcome = program
            .outcome(input, ingress, PORTS, self.egress_ready, snapshot)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"));
        match outcome {
            ProgramOutcome::Decided(verdict, frame) => {
                if matches!(verdict, Verdict::Transmit(_)) {
                    self.fast += 1;
                }
                (verdict, frame)
            }
            ProgramOutcome::HandedUp => {
                let result = self.pipeline(snapshot, input, ingress, now_ns);
                let generation = snapshot.generation();
                self.lane
                    .flows
                    .sync_fast_path(generation, |c| connection_rewrites(c, snapshot));
                result
            }
        }
    }

    /// The pipeline's verdict on a frame handed up, and the frame as it
    /// left it (an answer written over it at its own length; room past
    /// the end for a VLAN tag, as frames in a frame memory have).
    fn pipeline(
        &mut self,
        snapshot: &Snapshot,
        frame: &[u8],
        ingress: u16,
        now_ns: u64,
    ) -> (Verdict, Vec<u8>) {
        let mut buf = frame.to_vec();
        buf.resize(frame.len() + 4, 0);
        let (verdict, len) = self.lane.pipeline.process_frame_in(
            &mut buf,
            frame.len(),
            ingress,
            snapshot,
            &mut self.lane.flows,
            now_ns,
        );
        buf.truncate(len);
        (verdict, buf)
    }
}

/// The rules every script runs under: the fixture's first snapshot.
fn rules(fixture: &Fixture) -> &Snapshot {
    &fixture.snapshots[0]
}

/// The three ways a script runs.
pub struct XdpSystems {
    off: System,
    on: System,
    half: System,
}

/// What one script did through the fast path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastCount {
    /// Frames run.
    pub frames: usize,
    /// Frames the fast path forwarded with every port ready.
    pub on: usize,
    /// Frames it forwarded with port 1 not ready.
    pub half: usize,
}

impl XdpSystems {
    /// Loads the six program instances (two ports, three ways), or says
    /// why they cannot be: not root, no BPF, a kernel that cannot test-run
    /// XDP programs.
    pub fn load() -> Result<XdpSystems, XdpError> {
        let fixture = Fixture::get();
        Ok(XdpSystems {
            off: System::load(fixture, false, u64::MAX)?,
            on: System::load(fixture, true, u64::MAX)?,
            half: System::load(fixture, true, 0b01)?,
        })
    }

    /// Runs `input` (a script) all three ways from the state every script
    /// starts from; panics, naming the step, where they disagree.
    pub fn run_script(&mut self, input: &[u8]) -> FastCount {
        let fixture = Fixture::get();
        let snapshot = rules(fixture);
        let XdpSystems { off, on, half } = self;
        for sys in [&mut *off, &mut *on, &mut *half] {
            sys.reset(fixture);
        }
        let mut now_ns = START_NS;
        let mut frames = 0;
        for (index, step) in script::steps(input).enumerate() {
            if step.frame.len() < MIN_FRAME {
                continue;
            }
            let mut frame = step.frame.to_vec();
            if step.repair_checksums {
                repair_checksums(&mut frame);
            }
            now_ns += STEP_NS;
            frames += 1;
            let ingress = step.ingress;
            let a = off.run(snapshot, &frame, ingress, now_ns);
            for (name, sys) in [("on", &mut *on), ("on, port 1 not ready", &mut *half)] {
                let b = sys.run(snapshot, &frame, ingress, now_ns);
                assert_eq!(
                    a.0, b.0,
                    "step {index} (port {ingress}), fast path {name}: verdict"
                );
                assert!(
                    a.1 == b.1,
                    "step {index} (port {ingress}), fast path {name}: the frame differs\n off: {:02x?}\n on:  {:02x?}",
                    a.1,
                    b.1
                );
            }
        }
        assert_eq!(
            off.fast, 0,
            "the fast path forwarded with the fast path off"
        );
        for sys in [&*off, &*on, &*half] {
            for x in &sys.programs {
                x.check_counters_accounted();
            }
        }
        FastCount {
            frames,
            on: on.fast,
            half: half.fast,
        }
    }
}

thread_local! {
    /// This thread's systems: loaded on first use, `Err` with the reason
    /// if they cannot be; `None` while a script runs on them (and after
    /// one panicked: they are loaded again, from scratch).
    static SYSTEMS: RefCell<Option<Result<XdpSystems, String>>> = const { RefCell::new(None) };
}

/// The `xdp_fast_path` target's check: [`XdpSystems::run_script`] on this
/// thread's systems. `Err` with the reason if the program cannot run here
/// (no root, no BPF): the caller says so and skips.
pub fn fast_path_script(input: &[u8]) -> Result<FastCount, String> {
    let systems = SYSTEMS
        .with(|kept| kept.borrow_mut().take())
        .unwrap_or_else(|| XdpSystems::load().map_err(|e| e.to_string()));
    let mut systems = match systems {
        Ok(systems) => systems,
        Err(why) => {
            SYSTEMS.with(|kept| *kept.borrow_mut() = Some(Err(why.clone())));
            return Err(why);
        }
    };
    let count = systems.run_script(input);
    SYSTEMS.with(|kept| *kept.borrow_mut() = Some(Ok(systems)));
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn seed_scripts_agree_with_the_fast_path_on_and_off_and_it_forwards_some() {
        if let Err(why) = fast_path_script(&[]) {
            eprintln!("skipped: the XDP program cannot run here ({why})");
            return;
        }
        let mut total = FastCount::default();
        for (name, script) in seeds::scripts() {
            let count = fast_path_script(&script).unwrap_or_else(|e| panic!("{name}: {e}"));
            // The same script again, from the same state: the same count.
            assert_eq!(fast_path_script(&script), Ok(count), "{name}");
            total.frames += count.frames;
            total.on += count.on;
            total.half += count.half;
        }
        assert!(total.on > 0, "the fast path forwarded nothing: {total:?}");
        assert!(
            total.half < total.on,
            "port 1 not ready took nothing off: {total:?}"
        );
    }
}
