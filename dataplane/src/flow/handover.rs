//! The connection tables' hand-over format: what a running flowgate gives
//! the process that takes over from it (`flowgate run --takeover`), so that
//! no connection is lost across a restart or an upgrade.
//!
//! The state is a byte image, written once by the old process into a memfd
//! and read by the new one; two builds of flowgate may be on either side,
//! so the image is versioned and checked, and nothing in it is trusted:
//! any input, truncated or corrupt, gives a [`StateError`], never a panic.
//!
//! # Layout (all integers little-endian)
//!
//! A 48-byte header, then `count` records of [`RECORD_LEN`] bytes each:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `FGSTATE\0` |
//! | 8 | 2 | format version ([`VERSION`]) |
//! | 10 | 2 | header length (48) |
//! | 12 | 2 | record length ([`RECORD_LEN`]) |
//! | 14 | 2 | flags: bit 0 a delta over a first copy (see below) |
//! | 16 | 8 | CLOCK_MONOTONIC of the export, ns |
//! | 24 | 8 | record count |
//! | 32 | 8 | xxh3 of the records |
//! | 40 | 8 | reserved (0) |
//!
//! A record:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | client address (IPv4-mapped for IPv4) |
//! | 16 | 16 | VIP |
//! | 32 | 2 | client port |
//! | 34 | 2 | service port |
//! | 36 | 1 | IP protocol |
//! | 37 | 1 | state ([`FlowState`] code) |
//! | 38 | 2 | port index the client's frames arrive on |
//! | 40 | 16 | backend address |
//! | 56 | 2 | backend port |
//! | 58 | 6 | client MAC |
//! | 64 | 4 | endpoint id in the exporter's rules (a hint; see below) |
//! | 68 | 4 | record flags: bit 0 the backend has answered, bit 1 the kernel fast path carried it, bit 2 a SYN-proxy offset follows, bit 3 an origin follows, bit 4 the origin's record was freed |
//! | 72 | 8 | last packet seen, CLOCK_MONOTONIC ns |
//! | 80 | 4 | SYN-proxy sequence offset: the client's numbers minus the backend's (0 unless bit 2) |
//! | 84 | 4 | SYN-proxy timestamp offset, the same way (0 unless bit 2) |
//! | 88 | 1 | SYN-proxy: the backend's window scale (0 unless bit 2) |
//! | 89 | 1 | SYN-proxy: the client's window scale (0 unless bit 2) |
//! | 90 | 2 | origin: the exporter's worker (0 unless bit 3) |
//! | 92 | 4 | origin: the record in that worker's table (0 unless bit 3) |
//!
//! # Pre-copy: a first copy, then the difference
//!
//! A process taking over reads a first copy of the tables while the old
//! workers still forward (every record with its origin), then, at the
//! switch, a delta (header flag bit 0): a record per origin whose
//! connection was created or changed since the copy, and a freed record
//! (flag bit 4, nothing but the origin) per origin whose connection is gone.
//! A connection that only went on seeing packets is not in the delta: its
//! last-seen time is the copy's. Only a delta holds freed records.
//!
//! Version 2 added the timestamp offset and the window scales: version 1
//! carried the sequence offset alone, which cannot translate a proxied
//! connection's timestamps and windows, so a version-1 image is refused.
//!
//! Times are CLOCK_MONOTONIC, which both processes (and the XDP program)
//! share; each process converts them from and to its own worker clock.
//! The endpoint id is only a hint: the importer finds the backend again by
//! service and address in its own rules, which may differ.
//!
//! A reader refuses another version or another record length with an
//! error that names both sides; a new field goes into the reserved bytes
//! with a new flag bit, and a change that old readers must not misread
//! takes a new version.

use thiserror::Error;

use super::state::FlowState;
use super::Connection;
use crate::wire::FiveTuple;

/// The format version this build writes and reads.
pub const VERSION: u16 = 2;
/// The magic at the start of an image.
pub const MAGIC: [u8; 8] = *b"FGSTATE\0";
/// Length of the header.
pub const HEADER_LEN: usize = 48;
/// Length of one record.
pub const RECORD_LEN: usize = 96;

/// Record flag: the backend has answered (a datagram flow is no longer
/// embryonic; a TCP backend sent its SYN+ACK).
const BACKEND_REPLIED: u32 = 1 << 0;
/// Record flag: the kernel fast path carried the connection.
const FAST_PATH: u32 = 1 << 1;
/// Record flag: a SYN-proxy sequence offset is set.
const SYN_PROXY: u32 = 1 << 2;
/// Record flag: the record's origin is set.
const ORIGIN: u32 = 1 << 3;
/// Record flag: the origin's connection is gone (a delta's freed record).
const FREED: u32 = 1 << 4;
/// Every record flag this version knows.
const KNOWN_FLAGS: u32 = BACKEND_REPLIED | FAST_PATH | SYN_PROXY | ORIGIN | FREED;
/// Header flag: the image is a delta over a first copy.
const DELTA: u16 = 1 << 0;

/// Why an image was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StateError {
    /// Shorter than its header, or than the records it announces.
    #[error("the connection state is truncated: {got} bytes, {need} needed")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the header (or the header's absence) calls for.
        need: usize,
    },
    /// Not a connection state at all.
    #[error("not a flowgate connection state (bad magic)")]
    BadMagic,
    /// Written by a flowgate with another format version.
    #[error(
        "the running flowgate hands over connection state version {found}, this one reads \
         version {supported}: upgrade through a version that reads both, or restart (its \
         connections are lost)"
    )]
    Version {
        /// The image's version.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// Same version, yet another header or record length, or unknown flags.
    #[error("the connection state's layout is not version {VERSION}'s: {0}")]
    Layout(String),
    /// The records do not match their checksum.
    #[error("the connection state is corrupt (checksum mismatch)")]
    Checksum,
    /// A record holds a value no connection has.
    #[error("connection record {index} is invalid: {why}")]
    Record {
        /// Its position in the image.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// One connection as handed over: the record, its times in CLOCK_MONOTONIC,
/// and what else the gateway keeps per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandedConnection {
    /// The connection; its `last_seen_ns` is unused here (see
    /// `last_seen_mono_ns`).
    pub connection: Connection,
    /// When a packet of either direction was last seen, CLOCK_MONOTONIC.
    pub last_seen_mono_ns: u64,
    /// Whether the backend has answered.
    pub backend_replied: bool,
    /// Whether the kernel fast path carried it (the importer offers it to
    /// its own fast path at once).
    pub fast_path: bool,
    /// The SYN proxy's sequence offset, for a connection it set up.
    pub syn_proxy: Option<SynProxyOffset>,
    /// Where the exporter keeps it, in a pre-copy's first copy and delta.
    pub origin: Option<Origin>,
}

/// Where the exporting process keeps a connection: a worker's table and
/// the record in it. A pre-copy's delta names the records of its first
/// copy by their origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The exporter's worker.
    pub worker: u16,
    /// The record in that worker's table.
    pub record: u32,
}

impl HandedConnection {
    /// Whether `other` is the same connection in the same condition: all
    /// but the last-seen time and whether the fast path carried it, which
    /// a pre-copy's delta does not hand over again.
    pub fn same_but_seen(&self, other: &HandedConnection) -> bool {
        self.connection.same_condition(&other.connection)
            && self.backend_replied == other.backend_replied
            && self.syn_proxy == other.syn_proxy
    }
}

/// What a SYN proxy keeps per connection it answered itself, once the
/// backend answered: the translation of every later segment
/// ([`crate::synproxy::SeqOffset`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynProxyOffset {
    /// Client-facing sequence minus the backend's, modulo 2^32.
    pub seq_delta: u32,
    /// Client-facing TSval minus the backend's, modulo 2^32.
    pub ts_delta: u32,
    /// The backend's window scale.
    pub backend_wscale: u8,
    /// The client's window scale.
    pub client_wscale: u8,
}

impl From<crate::synproxy::SeqOffset> for SynProxyOffset {
    fn from(o: crate::synproxy::SeqOffset) -> Self {
        SynProxyOffset {
            seq_delta: o.seq,
            ts_delta: o.ts,
            backend_wscale: o.backend_wscale,
            client_wscale: o.client_wscale,
        }
    }
}

impl From<SynProxyOffset> for crate::synproxy::SeqOffset {
    fn from(o: SynProxyOffset) -> Self {
        crate::synproxy::SeqOffset {
            seq: o.seq_delta,
            ts: o.ts_delta,
            backend_wscale: o.backend_wscale,
            client_wscale: o.client_wscale,
        }
    }
}

/// A decoded image: the exporter's clock at export, and its connections.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HandedState {
    /// CLOCK_MONOTONIC of the export, ns.
    pub exported_mono_ns: u64,
    /// The connections (in a delta: those created or changed since the
    /// first copy).
    pub connections: Vec<HandedConnection>,
    /// Whether this is a delta over a first copy.
    pub delta: bool,
    /// In a delta: the origins whose connections are gone.
    pub freed: Vec<Origin>,
}

impl HandedState {
    /// The whole state, not a delta.
    pub fn whole(exported_mono_ns: u64, connections: Vec<HandedConnection>) -> HandedState {
        HandedState {
            exported_mono_ns,
            connections,
            delta: false,
            freed: Vec::new(),
        }
    }
}

/// The byte image of `connections`, exported at `now_mono_ns`.
pub fn encode(now_mono_ns: u64, connections: &[HandedConnection]) -> Vec<u8> {
    encode_image(now_mono_ns, 0, connections, &[])
}

/// The byte image of a pre-copy's delta, exported at `now_mono_ns`: the
/// connections created or changed since the first copy (each with its
/// origin), and the origins of those gone.
pub fn encode_delta(now_mono_ns: u64, changed: &[HandedConnection], freed: &[Origin]) -> Vec<u8> {
    encode_image(now_mono_ns, DELTA, changed, freed)
}

fn encode_image(
    now_mono_ns: u64,
    flags: u16,
    connections: &[HandedConnection],
    freed: &[Origin],
) -> Vec<u8> {
    let count = connections.len() + freed.len();
    let mut out = Vec::with_capacity(HEADER_LEN + count * RECORD_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out.extend_from_slice(&(RECORD_LEN as u16).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&now_mono_ns.to_le_bytes());
    out.extend_from_slice(&(count as u64).to_le_bytes());
    out.extend_from_slice(&[0; 16]); // checksum (below) and reserved
    for c in connections {
        encode_record(c, &mut out);
    }
    for origin in freed {
        let start = out.len();
        out.resize(start + RECORD_LEN, 0);
        out[start + 68..start + 72].copy_from_slice(&(ORIGIN | FREED).to_le_bytes());
        out[start + 90..start + 92].copy_from_slice(&origin.worker.to_le_bytes());
        out[start + 92..start + 96].copy_from_slice(&origin.record.to_le_bytes());
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out[HEADER_LEN..]);
    out[32..40].copy_from_slice(&sum.to_le_bytes());
    out
}

fn encode_record(c: &HandedConnection, out: &mut Vec<u8>) {
    let start = out.len();
    let conn = &c.connection;
    out.extend_from_slice(&conn.client.src);
    out.extend_from_slice(&conn.client.dst);
    out.extend_from_slice(&conn.client.src_port.to_le_bytes());
    out.extend_from_slice(&conn.client.dst_port.to_le_bytes());
    out.push(conn.client.protocol);
    out.push(state_code(conn.state));
    out.extend_from_slice(&conn.client_ingress.to_le_bytes());
    out.extend_from_slice(&conn.backend_addr);
    out.extend_from_slice(&conn.backend_port.to_le_bytes());
    out.extend_from_slice(&conn.client_mac);
    out.extend_from_slice(&conn.endpoint.to_le_bytes());
    let mut flags = 0;
    if c.backend_replied {
        flags |= BACKEND_REPLIED;
    }
    if c.fast_path {
        flags |= FAST_PATH;
    }
    if c.syn_proxy.is_some() {
        flags |= SYN_PROXY;
    }
    if c.origin.is_some() {
        flags |= ORIGIN;
    }
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&c.last_seen_mono_ns.to_le_bytes());
    let proxy = c.syn_proxy.unwrap_or(SynProxyOffset {
        seq_delta: 0,
        ts_delta: 0,
        backend_wscale: 0,
        client_wscale: 0,
    });
    out.extend_from_slice(&proxy.seq_delta.to_le_bytes());
    out.extend_from_slice(&proxy.ts_delta.to_le_bytes());
    out.push(proxy.backend_wscale);
    out.push(proxy.client_wscale);
    let origin = c.origin.unwrap_or(Origin {
        worker: 0,
        record: 0,
    });
    out.extend_from_slice(&origin.worker.to_le_bytes());
    out.extend_from_slice(&origin.record.to_le_bytes());
    out.resize(start + RECORD_LEN, 0);
}

/// Reads an image; refuses anything that is not exactly what [`encode`]
/// writes for this [`VERSION`].
pub fn decode(bytes: &[u8]) -> Result<HandedState, StateError> {
    let header = bytes.get(..HEADER_LEN).ok_or(StateError::Truncated {
        got: bytes.len(),
        need: HEADER_LEN,
    })?;
    if header[..8] != MAGIC {
        return Err(StateError::BadMagic);
    }
    let version = u16_at(header, 8);
    if version != VERSION {
        return Err(StateError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let (header_len, record_len, flags) = (
        u16_at(header, 10) as usize,
        u16_at(header, 12) as usize,
        u16_at(header, 14),
    );
    if header_len != HEADER_LEN || record_len != RECORD_LEN || flags & !DELTA != 0 {
        return Err(StateError::Layout(format!(
            "header {header_len} bytes, records {record_len} bytes, flags {flags:#x} \
             (expected {HEADER_LEN}, {RECORD_LEN}, {DELTA:#x} at most)"
        )));
    }
    let delta = flags & DELTA != 0;
    let exported_mono_ns = u64_at(header, 16);
    let count = u64_at(header, 24);
    let need = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(RECORD_LEN))
        .and_then(|n| n.checked_add(HEADER_LEN))
        .ok_or(StateError::Layout(format!("{count} records")))?;
    if bytes.len() < need {
        return Err(StateError::Truncated {
            got: bytes.len(),
            need,
        });
    }
    if bytes.len() > need {
        return Err(StateError::Layout(format!(
            "{} bytes after the last record",
            bytes.len() - need
        )));
    }
    let records = &bytes[HEADER_LEN..];
    if xxhash_rust::xxh3::xxh3_64(records) != u64_at(header, 32) {
        return Err(StateError::Checksum);
    }
    let mut state = HandedState {
        exported_mono_ns,
        delta,
        ..HandedState::default()
    };
    for (index, r) in records.chunks_exact(RECORD_LEN).enumerate() {
        let record = |why| StateError::Record { index, why };
        let flags = u32_at(r, 68);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(record("unknown flags"));
        }
        if flags & FREED == 0 {
            state
                .connections
                .push(decode_record(r, flags).map_err(record)?);
        } else if !delta {
            return Err(record("a freed record outside a delta"));
        } else if flags != FREED | ORIGIN {
            return Err(record("a freed record carries more than its origin"));
        } else {
            state.freed.push(origin_at(r));
        }
    }
    Ok(state)
}

fn origin_at(r: &[u8]) -> Origin {
    Origin {
        worker: u16_at(r, 90),
        record: u32_at(r, 92),
    }
}

fn decode_record(r: &[u8], flags: u32) -> Result<HandedConnection, &'static str> {
    let state = state_of(r[37]).ok_or("unknown state")?;
    let client = FiveTuple {
        src: array_at(r, 0),
        dst: array_at(r, 16),
        src_port: u16_at(r, 32),
        dst_port: u16_at(r, 34),
        protocol: r[36],
    };
    let last_seen_mono_ns = u64_at(r, 72);
    Ok(HandedConnection {
        connection: Connection {
            client,
            backend_addr: array_at(r, 40),
            backend_port: u16_at(r, 56),
            endpoint: u32_at(r, 64),
            client_mac: array_at(r, 58),
            client_ingress: u16_at(r, 38),
            state,
            last_seen_ns: 0,
        },
        last_seen_mono_ns,
        backend_replied: flags & BACKEND_REPLIED != 0,
        fast_path: flags & FAST_PATH != 0,
        syn_proxy: (flags & SYN_PROXY != 0).then(|| SynProxyOffset {
            seq_delta: u32_at(r, 80),
            ts_delta: u32_at(r, 84),
            backend_wscale: r[88].min(14),
            client_wscale: r[89].min(14),
        }),
        origin: (flags & ORIGIN != 0).then(|| origin_at(r)),
    })
}

/// The state's code in the image (stable across versions of the enum).
fn state_code(state: FlowState) -> u8 {
    match state {
        FlowState::TcpSyn => 1,
        FlowState::TcpEstablished => 2,
        FlowState::TcpClosing => 3,
        FlowState::Udp => 4,
        FlowState::Other => 5,
    }
}

fn state_of(code: u8) -> Option<FlowState> {
    Some(match code {
        1 => FlowState::TcpSyn,
        2 => FlowState::TcpEstablished,
        3 => FlowState::TcpClosing,
        4 => FlowState::Udp,
        5 => FlowState::Other,
        _ => return None,
    })
}

// The readers below are called only on slices whose length was checked
// (the header, or a chunk of exactly RECORD_LEN), at constant offsets
// inside it; `unwrap_or_default` keeps them panic-free regardless.
fn array_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array_at(bytes, at))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array_at(bytes, at))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array_at(bytes, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ip_proto, v4_mapped};

    fn handed(port: u16, state: FlowState) -> HandedConnection {
        HandedConnection {
            connection: Connection {
                client: FiveTuple::v4([198, 18, 0, 2], [198, 18, 100, 10], port, 80, ip_proto::TCP),
                backend_addr: v4_mapped([198, 18, 1, 13]),
                backend_port: 8080,
                endpoint: u32::from(port) % 7,
                client_mac: [2, 0, 0, 0, 0, port as u8],
                client_ingress: 1,
                state,
                last_seen_ns: 0,
            },
            last_seen_mono_ns: 5_000_000_000 + u64::from(port),
            backend_replied: port.is_multiple_of(2),
            fast_path: port.is_multiple_of(3),
            syn_proxy: port.is_multiple_of(5).then_some(SynProxyOffset {
                seq_delta: 0xdead_beef ^ u32::from(port),
                ts_delta: u32::from(port) << 8,
                backend_wscale: (port % 15) as u8,
                client_wscale: 7,
            }),
            origin: port.is_multiple_of(4).then_some(Origin {
                worker: port % 3,
                record: u32::from(port) * 7,
            }),
        }
    }

    fn sample() -> Vec<HandedConnection> {
        let states = [
            FlowState::TcpSyn,
            FlowState::TcpEstablished,
            FlowState::TcpClosing,
            FlowState::Udp,
            FlowState::Other,
        ];
        (0..40u16)
            .map(|i| handed(40_000 + i, states[usize::from(i) % states.len()]))
            .collect()
    }

    #[test]
    fn an_image_reads_back_as_written() {
        let connections = sample();
        let image = encode(123_456_789, &connections);
        assert_eq!(image.len(), HEADER_LEN + connections.len() * RECORD_LEN);
        let state = decode(&image).unwrap();
        assert_eq!(state.exported_mono_ns, 123_456_789);
        assert_eq!(state.connections, connections);
        // An empty table is an image too.
        let empty = decode(&encode(7, &[])).unwrap();
        assert_eq!((empty.exported_mono_ns, empty.connections.len()), (7, 0));
    }

    #[test]
    fn another_version_is_refused_with_both_versions_named() {
        let mut image = encode(1, &sample());
        // Version 1 carried the SYN proxy's sequence offset alone.
        image[8..10].copy_from_slice(&1u16.to_le_bytes());
        let err = decode(&image).unwrap_err();
        assert_eq!(
            err,
            StateError::Version {
                found: 1,
                supported: 2
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("version 2") && message.contains("version 1"),
            "{message}"
        );
    }

    #[test]
    fn another_layout_or_unknown_flags_are_refused() {
        let image = encode(1, &sample());
        let mut longer_records = image.clone();
        longer_records[12..14].copy_from_slice(&128u16.to_le_bytes());
        assert!(matches!(
            decode(&longer_records),
            Err(StateError::Layout(_))
        ));
        let mut flagged = image.clone();
        flagged[14] = 2;
        assert!(matches!(decode(&flagged), Err(StateError::Layout(_))));
        let mut magic = image.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(StateError::BadMagic));
        let mut trailing = image.clone();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(StateError::Layout(_))));
    }

    #[test]
    fn a_corrupt_record_is_refused() {
        let image = encode(1, &sample());
        let mut flipped = image.clone();
        flipped[HEADER_LEN + 3] ^= 0x40;
        assert_eq!(decode(&flipped), Err(StateError::Checksum));
        // A record with an unknown state, with its checksum made right.
        let mut bad_state = image;
        bad_state[HEADER_LEN + RECORD_LEN + 37] = 9;
        let sum = xxhash_rust::xxh3::xxh3_64(&bad_state[HEADER_LEN..]);
        bad_state[32..40].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            decode(&bad_state),
            Err(StateError::Record {
                index: 1,
                why: "unknown state"
            })
        );
    }

    #[test]
    fn a_delta_reads_back_with_its_freed_origins() {
        let changed = sample();
        let freed = [
            Origin {
                worker: 0,
                record: 3,
            },
            Origin {
                worker: 1,
                record: 70_000,
            },
        ];
        let image = encode_delta(9, &changed, &freed);
        let state = decode(&image).unwrap();
        assert!(state.delta);
        assert_eq!(state.connections, changed);
        assert_eq!(state.freed, freed);
        // A whole image is no delta and has nothing freed.
        let whole = decode(&encode(9, &changed)).unwrap();
        assert!(!whole.delta && whole.freed.is_empty());
    }

    #[test]
    fn a_freed_record_outside_a_delta_or_with_more_than_its_origin_is_refused() {
        let freed = [Origin {
            worker: 2,
            record: 5,
        }];
        let reseal = |image: &mut Vec<u8>| {
            let sum = xxhash_rust::xxh3::xxh3_64(&image[HEADER_LEN..]);
            image[32..40].copy_from_slice(&sum.to_le_bytes());
        };
        let mut not_delta = encode_delta(1, &[], &freed);
        not_delta[14] = 0;
        assert_eq!(
            decode(&not_delta),
            Err(StateError::Record {
                index: 0,
                why: "a freed record outside a delta"
            })
        );
        let mut more = encode_delta(1, &[], &freed);
        more[HEADER_LEN + 68] |= BACKEND_REPLIED as u8;
        reseal(&mut more);
        assert_eq!(
            decode(&more),
            Err(StateError::Record {
                index: 0,
                why: "a freed record carries more than its origin"
            })
        );
    }

    #[test]
    fn same_but_seen_ignores_the_last_seen_time_and_the_fast_path_alone() {
        let a = handed(40_001, FlowState::TcpEstablished);
        let mut b = a.clone();
        b.last_seen_mono_ns += 1_000_000;
        b.connection.last_seen_ns += 5;
        b.fast_path = !a.fast_path;
        assert!(a.same_but_seen(&b));
        let changes: [fn(&mut HandedConnection); 5] = [
            |c| c.connection.state = FlowState::TcpClosing,
            |c| c.backend_replied = !c.backend_replied,
            |c| c.connection.client_mac[5] ^= 1,
            |c| c.connection.backend_port += 1,
            |c| {
                c.syn_proxy = Some(SynProxyOffset {
                    seq_delta: 1,
                    ts_delta: 2,
                    backend_wscale: 3,
                    client_wscale: 4,
                })
            },
        ];
        for change in changes {
            let mut c = a.clone();
            change(&mut c);
            assert!(!a.same_but_seen(&c), "{c:?}");
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let image = encode(99, &sample()[..5]);
        for len in 0..image.len() {
            match decode(&image[..len]) {
                Err(StateError::Truncated { got, need }) => {
                    assert_eq!(got, len);
                    assert!(need > len);
                }
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        // A count that would overflow is refused, not allocated.
        let mut huge = encode(1, &[]);
        huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn a_valid_header_on_arbitrary_records_never_panics(
            records in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
        ) {
            let mut image = encode(1, &[]);
            let count = (records.len() / RECORD_LEN) as u64;
            image[24..32].copy_from_slice(&count.to_le_bytes());
            image.extend_from_slice(&records);
            let sum = xxhash_rust::xxh3::xxh3_64(&image[HEADER_LEN..]);
            image[32..40].copy_from_slice(&sum.to_le_bytes());
            let _ = decode(&image);
        }
    }
}
