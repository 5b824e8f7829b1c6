//! Offline replay: a capture through the production pipeline.
//!
//! `flowgate replay` reads a pcap file, feeds each frame to the same
//! [`Worker`] and pipeline the daemon runs, over in-memory ports (one per
//! configured interface), and writes every frame the gateway would
//! transmit to another pcap. Operators use it to try rules before deploying
//! them; tests use it for golden-packet fixtures. Time is the capture's
//! own: connection timeouts behave as they would have on the live box.
//! Next-hop MACs come from the config's static neighbour list.

pub mod output;
pub mod pcap;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;

use crate::flow::{FlowTable, FlowTimeouts};
use crate::pipeline::CounterValues;
use crate::port::{MemoryFrames, MemoryPort};
use crate::rules::Config;
use crate::table::Snapshot;
use crate::worker::{KernelPath, Worker};
use pcap::{PcapError, PcapReader, PcapWriter};

/// Largest frame replay carries (bigger records are reported, not fed).
pub const REPLAY_FRAME_SIZE: u32 = 16_384;
const RING_SIZE: usize = 64;

/// Replay settings.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Index of the interface every captured frame arrives on. `None`: the
    /// interface whose MAC is the frame's destination MAC (a frame reaches
    /// the interface it was addressed to), else the first interface.
    pub ingress: Option<u16>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input capture could not be read.
    #[error("input capture: {0}")]
    Input(#[from] PcapError),
    /// An output capture could not be written.
    #[error("output capture: {0}")]
    Output(std::io::Error),
    /// The ingress interface does not exist.
    #[error("ingress interface index {0} is not configured")]
    NoSuchIngress(u16),
}

/// What a replay did, per verdict and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    /// Frames read from the input capture.
    pub frames_in: u64,
    /// Records larger than [`REPLAY_FRAME_SIZE`] (not fed to the pipeline).
    pub skipped_oversize: u64,
    /// Records cut short by the capture's snap length (not fed: the
    /// pipeline would see a malformed frame the wire never carried).
    pub skipped_truncated: u64,
    /// Frames transmitted, per egress interface name.
    pub transmitted_by_port: BTreeMap<String, u64>,
    /// Frames transmitted to each backend, keyed `service address:port`.
    pub transmitted_by_backend: BTreeMap<String, u64>,
    /// Frames transmitted to anything but a backend (replies to clients).
    pub transmitted_to_clients: u64,
    /// The pipeline's counters (verdicts, drops by reason, flows).
    pub counters: CounterValues,
    /// Connections still tracked at the end.
    pub active_connections: u64,
    /// Connections evicted because the table was full.
    pub evicted_connections: u64,
    /// Snapshot generation the rules compiled to.
    pub generation: u64,
    /// Services in the rules.
    pub services: u64,
}

/// Replays `input` through the rules of `config`, writing transmitted
/// frames to `output` and, if given, passed frames to `passed`.
pub fn replay<R: Read, W: Write>(
    config: &Config,
    input: R,
    output: W,
    passed: Option<&mut dyn Write>,
    options: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let snapshot = Snapshot::build(config, None);
    let names: Vec<String> = if config.interfaces.is_empty() {
        vec!["replay".to_string()]
    } else {
        config.interfaces.iter().map(|i| i.name.clone()).collect()
    };
    if let Some(i) = options.ingress {
        if usize::from(i) >= names.len() {
            return Err(ReplayError::NoSuchIngress(i));
        }
    }
    let mut ports: Vec<MemoryPort> = names
        .iter()
        .map(|n| MemoryPort::new(n, RING_SIZE))
        .collect();
    // Enough frames for every ring of every port, twice over.
    let frames = u32::try_from(names.len() * RING_SIZE * 8).unwrap_or(u32::MAX);
    let mut memory = MemoryFrames::new(frames, REPLAY_FRAME_SIZE);
    let flows = FlowTable::new(config.flows.capacity, FlowTimeouts::from(&config.flows));
    let pool = memory.pool();
    let mut worker = Worker::new(flows, pool, ports.len(), RING_SIZE);

    let mut reader = PcapReader::new(input)?;
    let mut writer = PcapWriter::new(output).map_err(ReplayError::Output)?;
    let mut kernel = PassedWriter {
        out: match passed {
            Some(w) => Some(PcapWriter::new(w).map_err(ReplayError::Output)?),
            None => None,
        },
        timestamp_ns: 0,
        error: None,
    };
    let mut report = ReplayReport {
        generation: snapshot.generation(),
        services: snapshot.service_count() as u64,
        ..ReplayReport::default()
    };
    let backends = backend_names(config);
    let mut sent = Vec::new();
    // Hands the ports their first free frames; each later poll recycles.
    worker.poll(&mut ports, &mut memory, &snapshot, &mut kernel, 0);
    while let Some(record) = reader.next_record()? {
        report.frames_in += 1;
        if record.data.len() > REPLAY_FRAME_SIZE as usize {
            report.skipped_oversize += 1;
            continue;
        }
        if (record.orig_len as usize) > record.data.len() {
            report.skipped_truncated += 1;
            continue;
        }
        // One frame per poll keeps each output frame's capture time exact.
        let ingress = match options.ingress {
            Some(i) => usize::from(i),
            None => addressed_interface(config, &record.data),
        };
        if let Some(port) = ports.get_mut(ingress) {
            port.inject(&mut memory, &record.data);
        }
        kernel.timestamp_ns = record.timestamp_ns;
        worker.poll(
            &mut ports,
            &mut memory,
            &snapshot,
            &mut kernel,
            record.timestamp_ns,
        );
        if let Some(e) = kernel.error.take() {
            return Err(ReplayError::Output(e));
        }
        for (port, name) in ports.iter_mut().zip(&names) {
            sent.clear();
            let n = port.take_transmitted(&memory, &mut sent);
            if n > 0 {
                *report.transmitted_by_port.entry(name.clone()).or_default() += n as u64;
            }
            for frame in &sent {
                count_destination(&mut report, &backends, frame);
                writer
                    .write(record.timestamp_ns, frame)
                    .map_err(ReplayError::Output)?;
            }
        }
    }
    writer.finish().map_err(ReplayError::Output)?;
    if let Some(w) = kernel.out {
        w.finish().map_err(ReplayError::Output)?;
    }
    report.counters = worker.pipeline().counters().snapshot();
    report.active_connections = worker.flows().len() as u64;
    report.evicted_connections = worker.flows().stats().evicted;
    Ok(report)
}

/// `service address:port` for every backend socket of the rules.
fn backend_names(config: &Config) -> HashMap<SocketAddr, Vec<String>> {
    let mut names: HashMap<SocketAddr, Vec<String>> = HashMap::new();
    for s in &config.services {
        for b in &s.backends {
            let addr = SocketAddr::new(b.address, b.port);
            names
                .entry(addr)
                .or_default()
                .push(format!("{} {addr}", s.name));
        }
    }
    names
}

/// Counts a transmitted frame by where it went. A backend socket shared
/// by several services is counted under each of their names' first.
fn count_destination(
    report: &mut ReplayReport,
    backends: &HashMap<SocketAddr, Vec<String>>,
    frame: &[u8],
) {
    let to = crate::wire::parse(frame)
        .ok()
        .map(|m| SocketAddr::new(m.tuple.dst_ip(), m.tuple.dst_port))
        .and_then(|addr| backends.get(&addr))
        .and_then(|names| names.first());
    match to {
        Some(name) => {
            *report
                .transmitted_by_backend
                .entry(name.clone())
                .or_default() += 1
        }
        None => report.transmitted_to_clients += 1,
    }
}

/// The interface a frame was addressed to (by destination MAC), or 0.
fn addressed_interface(config: &Config, frame: &[u8]) -> usize {
    frame
        .get(..6)
        .and_then(|dst| {
            config
                .interfaces
                .iter()
                .position(|i| i.mac.is_some_and(|mac| mac[..] == *dst))
        })
        .unwrap_or(0)
}

/// The replay's kernel: passed frames go to an optional capture.
struct PassedWriter<'a> {
    out: Option<PcapWriter<&'a mut dyn Write>>,
    timestamp_ns: u64,
    error: Option<std::io::Error>,
}

impl KernelPath for PassedWriter<'_> {
    fn pass(&mut self, _ingress: u16, frame: &[u8]) {
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write(self.timestamp_ns, frame) {
                self.error.get_or_insert(e);
            }
        }
    }
}
