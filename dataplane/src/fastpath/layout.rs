//! The layouts the XDP program and the workers share for the kernel fast
//! path, mirrored from dataplane/bpf/flowgate_fastpath.h (the tests below
//! read that file and check every offset and constant), and the two hashes
//! both sides compute.
//!
//! An entry is 128 bytes, handled as 16 native-endian 64-bit words: the
//! program loads the key as five such words and hashes them, so Rust must
//! see the same words — it builds them from the bytes with
//! `u64::from_ne_bytes`, which is what the CPU's load does.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use crate::wire::checksum::ChecksumDelta;
use crate::wire::FiveTuple;

/// Bytes per entry (`FLOWGATE_FAST_ENTRY_SIZE`).
pub const ENTRY_SIZE: usize = 128;
/// 64-bit words per entry.
pub const ENTRY_WORDS: usize = ENTRY_SIZE / 8;
/// Slots probed from a key's home slot, at most (`FLOWGATE_FAST_PROBES`).
pub const PROBES: u32 = 8;

/// `entry.state`: never used.
pub const STATE_EMPTY: u32 = 0;
/// `entry.state`: holds one direction of a connection.
pub const STATE_LIVE: u32 = 1;
/// `entry.state`: held one, free again; lookups probe past it.
pub const STATE_FREED: u32 = 2;

/// `entry.rewrite`: the source becomes VIP:port (backend → client).
pub const REWRITE_SRC: u8 = 0;
/// `entry.rewrite`: the destination becomes backend:port (client → VIP).
pub const REWRITE_DST: u8 = 1;

/// `entry.synproxy`: not a SYN-proxied connection.
pub const SYNPROXY_NONE: u8 = 0;
/// `entry.synproxy`: a SYN-proxied connection, its numbers translated
/// with `seq_add` and `ts_add`.
pub const SYNPROXY_TRANSLATE: u8 = 1;

/// Byte offsets in `struct fast_entry`.
pub mod offset {
    /// `seq` (u32): odd while being written.
    pub const SEQ: usize = 0;
    /// `state` (u32).
    pub const STATE: usize = 4;
    /// `key` (`struct fast_key`, 40 bytes).
    pub const KEY: usize = 8;
    /// `new_addr` (16 bytes).
    pub const NEW_ADDR: usize = 48;
    /// `new_port` (network byte order).
    pub const NEW_PORT: usize = 64;
    /// `l3_delta` (u16, host order).
    pub const L3_DELTA: usize = 66;
    /// `l4_delta` (u16, host order).
    pub const L4_DELTA: usize = 68;
    /// `rewrite` (u8).
    pub const REWRITE: usize = 70;
    /// `synproxy` (u8).
    pub const SYNPROXY: usize = 71;
    /// `eth_dst` (6 bytes).
    pub const ETH_DST: usize = 72;
    /// `eth_src` (6 bytes).
    pub const ETH_SRC: usize = 78;
    /// `egress_port` (u16, host order).
    pub const EGRESS_PORT: usize = 84;
    /// `client_mac` (6 bytes).
    pub const CLIENT_MAC: usize = 86;
    /// `seq_add` (u32, host order).
    pub const SEQ_ADD: usize = 92;
    /// `ts_add` (u32, host order).
    pub const TS_ADD: usize = 96;
    /// `wscale_backend` (u8).
    pub const WSCALE_BACKEND: usize = 100;
    /// `wscale_client` (u8).
    pub const WSCALE_CLIENT: usize = 101;
    /// `last_seen_ns` (u64).
    pub const LAST_SEEN_NS: usize = 104;
    /// `packets` (u64).
    pub const PACKETS: usize = 112;
    /// `bytes` (u64).
    pub const BYTES: usize = 120;
}

/// Where the part userspace writes ends: bytes 8.. up to here are the
/// fields, the rest are the program's counters.
pub const WRITTEN_END: usize = offset::LAST_SEEN_NS;

/// `struct fast_config`, one per program instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastConfig {
    /// Partitions, one per worker; 0 turns the fast path off.
    pub partitions: u32,
    /// Slots per partition minus one (slots are a power of two).
    pub slot_mask: u32,
    /// The interface's own port index: entries egressing there use XDP_TX.
    pub port_index: u32,
    /// Bit `p` set: frames this instance sends out of port `p` leave (the
    /// device takes XDP frames, or this instance runs in generic mode);
    /// an entry whose egress port has its bit clear goes to the worker.
    pub egress_ready: u64,
}

/// Bytes of `struct fast_config`.
pub const FAST_CONFIG_SIZE: usize = 32;

impl FastConfig {
    /// The struct's bytes, with this process's [`owner_seed`] (every
    /// instance of the program hashes owners as the workers do).
    pub fn to_bytes(self) -> [u8; FAST_CONFIG_SIZE] {
        let mut b = [0u8; FAST_CONFIG_SIZE];
        b[0..4].copy_from_slice(&self.partitions.to_ne_bytes());
        b[4..8].copy_from_slice(&self.slot_mask.to_ne_bytes());
        b[8..12].copy_from_slice(&self.port_index.to_ne_bytes());
        b[16..24].copy_from_slice(&self.egress_ready.to_ne_bytes());
        b[24..32].copy_from_slice(&owner_seed().to_ne_bytes());
        b
    }
}

/// `struct fast_key`: one direction of a connection as its packets carry
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FastKey(pub FiveTuple);

impl FastKey {
    /// The key's 40 bytes.
    pub fn to_bytes(&self) -> [u8; 40] {
        let t = &self.0;
        let mut b = [0u8; 40];
        b[0..16].copy_from_slice(&t.src);
        b[16..32].copy_from_slice(&t.dst);
        b[32..34].copy_from_slice(&t.src_port.to_be_bytes());
        b[34..36].copy_from_slice(&t.dst_port.to_be_bytes());
        b[36] = t.protocol;
        b
    }

    /// The five words the program loads and hashes.
    pub fn words(&self) -> [u64; 5] {
        let b = self.to_bytes();
        let mut w = [0u64; 5];
        for (word, chunk) in w.iter_mut().zip(b.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            *word = u64::from_ne_bytes(bytes);
        }
        w
    }

    /// `fast_key_hash`: picks the key's home slot.
    pub fn hash(&self) -> u64 {
        let mut h = KEY_SEED;
        for w in self.words() {
            h = mix(h, w);
        }
        h
    }
}

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
const KEY_SEED: u64 = 0x666c_6f77_6761_7465; // "flowgate"

/// The owner hash's seed, drawn from the operating system's random source
/// once per process. With a seed anyone can read in the source, a client
/// could pick addresses and ports that all hash to one worker and leave
/// the others idle; drawn at random, where a connection lands cannot be
/// chosen. A new process taking over draws its own: it imports each
/// connection into the worker that owns it by its seed, and its programs
/// get the seed with their config ([`FastConfig::to_bytes`]).
pub fn owner_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    // std's hasher keys come from the OS (getrandom) for every
    // `RandomState`; one hash of them is a seed no one outside can know.
    *SEED.get_or_init(|| RandomState::new().hash_one(0x6f77_6e65_7273_6869_u64))
}

/// `fast_mix`.
#[inline]
fn mix(h: u64, word: u64) -> u64 {
    let h = (h ^ word).wrapping_mul(MIX);
    h ^ (h >> 29)
}

/// `fast_owner`: which of `partitions` owns the connection whose client
/// end is (`addr`, `port`) — the same answer as the program's, and the
/// worker that owns the connection ([`crate::handoff::owner_of`] uses it).
/// 0 when `partitions` is 0 or 1.
#[inline]
pub fn owner(addr: &[u8; 16], port: u16, partitions: u32) -> u32 {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&addr[..8]);
    hi.copy_from_slice(&addr[8..]);
    // The program loads the port as a 16-bit word from the packet.
    let port_word = u64::from(u16::from_ne_bytes(port.to_be_bytes()));
    let mut h = owner_seed();
    h = mix(h, u64::from_ne_bytes(lo));
    h = mix(h, u64::from_ne_bytes(hi));
    h = mix(h, port_word);
    (((h >> 32) * u64::from(partitions)) >> 32) as u32
}

/// The rewrite of one direction of a connection: what an entry holds
/// besides its sequence word, state and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectionRewrite {
    /// The packets' tuple, as they arrive.
    pub key: FastKey,
    /// The address written over the destination (to a backend) or the
    /// source (to a client).
    pub new_addr: [u8; 16],
    /// The port written with it.
    pub new_port: u16,
    /// [`REWRITE_DST`] or [`REWRITE_SRC`].
    pub rewrite: u8,
    /// Folded checksum delta of the IPv4 header (address and TTL).
    pub l3_delta: u16,
    /// Folded checksum delta of TCP/UDP (address and port).
    pub l4_delta: u16,
    /// The next hop's MAC.
    pub eth_dst: [u8; 6],
    /// The egress interface's MAC.
    pub eth_src: [u8; 6],
    /// The egress port index.
    pub egress_port: u16,
    /// To a backend: the client MAC the entry holds for (frames from
    /// another go to the worker); zero: not checked.
    pub client_mac: [u8; 6],
    /// The port whose program instance sees these packets arrive: the
    /// cache of that interface gets the entry.
    pub ingress_port: u16,
    /// A SYN-proxied connection's translation, or `None`.
    pub synproxy: Option<SeqTranslation>,
}

/// What the program does to a SYN-proxied connection's segments in one
/// direction: toward the client, adds to the sequence number and TSval
/// (modulo 2³²) and rescales the window; toward the backend, adds to the
/// acknowledgement number and TSecr — [`crate::synproxy::SeqOffset`]'s
/// translation, for the segments the program can translate exactly
/// (docs/architecture.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqTranslation {
    /// Added to the sequence or acknowledgement number.
    pub seq_add: u32,
    /// Added to TSval or TSecr.
    pub ts_add: u32,
    /// Toward the client: the backend's window scale, windows are
    /// rescaled from (when it differs from `wscale_client`; at most 14).
    pub wscale_backend: u8,
    /// Toward the client: the scale the client reads windows with.
    pub wscale_client: u8,
}

/// A [`ChecksumDelta`] folded to the 16 bits an entry stores: `d` with
/// `d.apply(c) == !fold(!c + folded)` for every `c`.
fn folded(delta: ChecksumDelta) -> u16 {
    // apply(0xFFFF) = !fold(0 + Σ), so Σ folded is its complement.
    !delta.apply(0xffff)
}

/// The checksum change of an address field: 4 bytes for IPv4 (the mapped
/// form's last four), 16 for IPv6.
fn address_delta(old: &[u8; 16], new: &[u8; 16], v4: bool) -> ChecksumDelta {
    if v4 {
        ChecksumDelta::bytes(&old[12..], &new[12..])
    } else {
        ChecksumDelta::bytes(old, new)
    }
}

/// Whether a 16-byte address is IPv4-mapped.
fn is_v4(addr: &[u8; 16]) -> bool {
    addr[..10] == [0; 10] && addr[10..12] == [0xff, 0xff]
}

/// What a direction's rewrite needs to know.
#[derive(Clone, Copy, Debug)]
pub struct Direction {
    /// The tuple its packets arrive with.
    pub tuple: FiveTuple,
    /// The port they arrive on.
    pub ingress_port: u16,
    /// Whether the destination (to a backend) or the source (to a client)
    /// is rewritten.
    pub rewrite_dst: bool,
    /// The address and port written.
    pub new_addr: [u8; 16],
    /// See `new_addr`.
    pub new_port: u16,
    /// Next hop and egress interface MACs, and the egress port.
    pub eth_dst: [u8; 6],
    /// See `eth_dst`.
    pub eth_src: [u8; 6],
    /// See `eth_dst`.
    pub egress_port: u16,
    /// The client MAC to check, or zero.
    pub client_mac: [u8; 6],
}

impl DirectionRewrite {
    /// The entry for `d`, with its checksum deltas computed as the
    /// pipeline's rewrite would patch them: the address (and for IPv4 the
    /// TTL word) in the IPv4 header, the address and port in TCP/UDP.
    pub fn new(d: &Direction) -> DirectionRewrite {
        let t = &d.tuple;
        let v4 = is_v4(&t.dst);
        let (old_addr, old_port) = if d.rewrite_dst {
            (&t.dst, t.dst_port)
        } else {
            (&t.src, t.src_port)
        };
        let addr = address_delta(old_addr, &d.new_addr, v4);
        let port = ChecksumDelta::bytes(&old_port.to_be_bytes(), &d.new_port.to_be_bytes());
        // TTL t → t-1 changes the (TTL, protocol) word by -0x100 whatever
        // t is: Σ(~m + m') is 0xFEFF.
        let ttl = ChecksumDelta::word(0x0100, 0);
        DirectionRewrite {
            key: FastKey(*t),
            new_addr: d.new_addr,
            new_port: d.new_port,
            rewrite: if d.rewrite_dst {
                REWRITE_DST
            } else {
                REWRITE_SRC
            },
            l3_delta: if v4 { folded(addr + ttl) } else { 0 },
            l4_delta: folded(addr + port),
            eth_dst: d.eth_dst,
            eth_src: d.eth_src,
            egress_port: d.egress_port,
            client_mac: d.client_mac,
            ingress_port: d.ingress_port,
            synproxy: None,
        }
    }

    /// This direction with a SYN-proxied connection's translation.
    #[must_use]
    pub fn with_synproxy(mut self, translation: SeqTranslation) -> DirectionRewrite {
        self.synproxy = Some(translation);
        self
    }

    /// Bytes 8 up to [`WRITTEN_END`] of the entry: the key and the
    /// rewrite (index 0 is byte 8).
    pub fn field_bytes(&self) -> [u8; WRITTEN_END - offset::KEY] {
        let mut b = [0u8; WRITTEN_END - offset::KEY];
        let at = |o: usize| o - offset::KEY;
        b[..40].copy_from_slice(&self.key.to_bytes());
        b[at(offset::NEW_ADDR)..at(offset::NEW_ADDR) + 16].copy_from_slice(&self.new_addr);
        b[at(offset::NEW_PORT)..at(offset::NEW_PORT) + 2]
            .copy_from_slice(&self.new_port.to_be_bytes());
        b[at(offset::L3_DELTA)..at(offset::L3_DELTA) + 2]
            .copy_from_slice(&self.l3_delta.to_ne_bytes());
        b[at(offset::L4_DELTA)..at(offset::L4_DELTA) + 2]
            .copy_from_slice(&self.l4_delta.to_ne_bytes());
        b[at(offset::REWRITE)] = self.rewrite;
        b[at(offset::ETH_DST)..at(offset::ETH_DST) + 6].copy_from_slice(&self.eth_dst);
        b[at(offset::ETH_SRC)..at(offset::ETH_SRC) + 6].copy_from_slice(&self.eth_src);
        b[at(offset::EGRESS_PORT)..at(offset::EGRESS_PORT) + 2]
            .copy_from_slice(&self.egress_port.to_ne_bytes());
        b[at(offset::CLIENT_MAC)..at(offset::CLIENT_MAC) + 6].copy_from_slice(&self.client_mac);
        if let Some(t) = self.synproxy {
            b[at(offset::SYNPROXY)] = SYNPROXY_TRANSLATE;
            b[at(offset::SEQ_ADD)..at(offset::SEQ_ADD) + 4]
                .copy_from_slice(&t.seq_add.to_ne_bytes());
            b[at(offset::TS_ADD)..at(offset::TS_ADD) + 4].copy_from_slice(&t.ts_add.to_ne_bytes());
            b[at(offset::WSCALE_BACKEND)] = t.wscale_backend;
            b[at(offset::WSCALE_CLIENT)] = t.wscale_client;
        }
        b
    }

    /// [`Self::field_bytes`] as the entry's words 1 to 11.
    pub fn field_words(&self) -> [u64; (WRITTEN_END - offset::KEY) / 8] {
        let b = self.field_bytes();
        let mut w = [0u64; (WRITTEN_END - offset::KEY) / 8];
        for (word, chunk) in w.iter_mut().zip(b.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            *word = u64::from_ne_bytes(bytes);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::FrameBuilder;
    use crate::wire::{parse, rewrite, v4_mapped};

    const HEADER: &str = include_str!("../../bpf/flowgate_fastpath.h");

    /// `#define NAME VALUE` of the header.
    fn define(name: &str) -> u64 {
        HEADER
            .lines()
            .find_map(|line| {
                let mut w = line.split_whitespace();
                (w.next()? == "#define" && w.next()? == name).then(|| w.next())?
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no #define {name}"))
    }

    /// The offset the header's comment gives a field of `struct
    /// fast_entry` (`... name; // OFFSET: ...`, or for a field whose
    /// comment stands on the lines above, that comment's number).
    fn c_offset(field: &str) -> usize {
        let body = HEADER.split("struct fast_entry {").nth(1).unwrap();
        let body = body.split("};").next().unwrap();
        let mut pending: Option<usize> = None;
        for line in body.lines() {
            let line = line.trim();
            if let Some(comment) = line.strip_prefix("// ") {
                if let Some((n, _)) = comment.split_once(':') {
                    if let Ok(n) = n.parse() {
                        pending = Some(n);
                    }
                }
                continue;
            }
            let (decl, comment) = line.split_once("//").unwrap_or((line, ""));
            let name = decl
                .trim()
                .trim_end_matches(';')
                .split_whitespace()
                .last()
                .unwrap_or("");
            let name = name.split('[').next().unwrap();
            let at = comment
                .trim()
                .split(':')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .or(pending.take());
            if name == field {
                return at.unwrap_or_else(|| panic!("{field}: no offset comment"));
            }
        }
        panic!("struct fast_entry has no field {field}")
    }

    #[test]
    fn offsets_and_constants_match_the_c_header() {
        assert_eq!(define("FLOWGATE_FAST_ENTRY_SIZE") as usize, ENTRY_SIZE);
        assert_eq!(define("FLOWGATE_FAST_PROBES") as u32, PROBES);
        assert_eq!(define("FAST_EMPTY") as u32, STATE_EMPTY);
        assert_eq!(define("FAST_LIVE") as u32, STATE_LIVE);
        assert_eq!(define("FAST_FREED") as u32, STATE_FREED);
        assert_eq!(define("FAST_REWRITE_SRC") as u8, REWRITE_SRC);
        assert_eq!(define("FAST_REWRITE_DST") as u8, REWRITE_DST);
        assert_eq!(define("FAST_SYNPROXY_NONE") as u8, SYNPROXY_NONE);
        assert_eq!(define("FAST_SYNPROXY_TRANSLATE") as u8, SYNPROXY_TRANSLATE);
        for (field, rust) in [
            ("seq", offset::SEQ),
            ("state", offset::STATE),
            ("key", offset::KEY),
            ("new_addr", offset::NEW_ADDR),
            ("new_port", offset::NEW_PORT),
            ("l3_delta", offset::L3_DELTA),
            ("l4_delta", offset::L4_DELTA),
            ("rewrite", offset::REWRITE),
            ("eth_dst", offset::ETH_DST),
            ("eth_src", offset::ETH_SRC),
            ("egress_port", offset::EGRESS_PORT),
            ("client_mac", offset::CLIENT_MAC),
            ("seq_add", offset::SEQ_ADD),
            ("ts_add", offset::TS_ADD),
            ("wscale_backend", offset::WSCALE_BACKEND),
            ("wscale_client", offset::WSCALE_CLIENT),
            ("last_seen_ns", offset::LAST_SEEN_NS),
            ("packets", offset::PACKETS),
            ("bytes", offset::BYTES),
        ] {
            assert_eq!(c_offset(field), rust, "{field}");
        }
    }

    #[test]
    fn each_process_draws_its_own_owner_seed_and_gives_it_to_the_programs() {
        let seed = owner_seed();
        if std::env::var_os("FLOWGATE_PRINT_OWNER_SEED").is_some() {
            println!("owner_seed={seed}");
            return;
        }
        assert_eq!(owner_seed(), seed, "one seed for the process's life");
        let config = FastConfig {
            partitions: 2,
            slot_mask: 255,
            port_index: 0,
            egress_ready: 0,
        };
        let bytes = config.to_bytes();
        assert_eq!(bytes[24..32], seed.to_ne_bytes());
        // This test again in two processes of its own: three seeds.
        let other = || {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "fastpath::layout::tests::each_process_draws_its_own_owner_seed_and_gives_it_to_the_programs",
                    "--nocapture",
                ])
                .env("FLOWGATE_PRINT_OWNER_SEED", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace()
                .find_map(|w| w.strip_prefix("owner_seed="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no seed in {text:?}"))
        };
        let (a, b) = (other(), other());
        assert!(a != b && a != seed && b != seed, "{seed} {a} {b}");
    }

    #[test]
    fn the_owner_spreads_clients_over_partitions() {
        let mut seen = [0u32; 4];
        for i in 0..4000u32 {
            let addr = v4_mapped([198, 18, (i >> 8) as u8, i as u8]);
            let p = owner(&addr, 40000 + (i % 7) as u16, 4);
            seen[p as usize] += 1;
        }
        for n in seen {
            assert!((800..1200).contains(&n), "{seen:?}");
        }
        assert_eq!(owner(&v4_mapped([198, 18, 0, 1]), 1, 1), 0);
        assert_eq!(owner(&v4_mapped([198, 18, 0, 1]), 1, 0), 0);
    }

    /// Applies an entry's rewrite to a frame the way the program does.
    fn apply_like_the_program(frame: &mut [u8], r: &DirectionRewrite) {
        let meta = parse(frame).unwrap();
        let patch = |c: u16, d: u16| -> u16 {
            let mut s = u32::from(!c) + u32::from(d);
            s = (s & 0xffff) + (s >> 16);
            s = (s & 0xffff) + (s >> 16);
            !(s as u16)
        };
        frame[0..6].copy_from_slice(&r.eth_dst);
        frame[6..12].copy_from_slice(&r.eth_src);
        let l3 = usize::from(meta.l3_offset);
        let l4 = usize::from(meta.l4_offset);
        let dst = r.rewrite == REWRITE_DST;
        if meta.l3 == crate::wire::L3::Ipv4 {
            let at = l3 + if dst { 16 } else { 12 };
            frame[at..at + 4].copy_from_slice(&r.new_addr[12..]);
            frame[l3 + 8] -= 1;
            let c = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
            frame[l3 + 10..l3 + 12].copy_from_slice(&patch(c, r.l3_delta).to_be_bytes());
        } else {
            let at = l3 + if dst { 24 } else { 8 };
            frame[at..at + 16].copy_from_slice(&r.new_addr);
            frame[l3 + 7] -= 1;
        }
        let port_at = l4 + if dst { 2 } else { 0 };
        frame[port_at..port_at + 2].copy_from_slice(&r.new_port.to_be_bytes());
        let check_at = l4 + if meta.tuple.protocol == 6 { 16 } else { 6 };
        let c = u16::from_be_bytes([frame[check_at], frame[check_at + 1]]);
        if meta.tuple.protocol == 6 || c != 0 {
            let mut n = patch(c, r.l4_delta);
            if meta.tuple.protocol == 17 && n == 0 {
                n = 0xffff;
            }
            frame[check_at..check_at + 2].copy_from_slice(&n.to_be_bytes());
        }
    }

    #[test]
    fn precomputed_deltas_give_the_pipelines_bytes() {
        let sock = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let frames = [
            FrameBuilder::tcp(sock("198.18.0.2:40000"), sock("198.18.100.10:80"), 0x10)
                .payload(b"data"),
            FrameBuilder::udp(sock("198.18.0.2:5000"), sock("198.18.100.10:53")).payload(b"q"),
            FrameBuilder::udp(sock("198.18.0.2:5000"), sock("198.18.100.10:53"))
                .udp_zero_checksum(),
            FrameBuilder::tcp(sock("[2001:2::2]:1"), sock("[2001:2:0:100::10]:80"), 0x10),
            FrameBuilder::udp(sock("[2001:2::2]:1"), sock("[2001:2:0:100::10]:53")),
        ];
        let backends = [
            (
                crate::wire::addr_to_bytes("198.18.1.11".parse().unwrap()),
                8080,
            ),
            (
                crate::wire::addr_to_bytes("2001:2:0:1::11".parse().unwrap()),
                8080,
            ),
        ];
        for (i, builder) in frames.into_iter().enumerate() {
            for ttl in [2, 64, 255] {
                let input = builder.clone().ttl(ttl).build();
                let meta = parse(&input).unwrap();
                let (addr, port) = backends[usize::from(meta.l3 != crate::wire::L3::Ipv4)];
                for rewrite_dst in [true, false] {
                    let d = Direction {
                        tuple: meta.tuple,
                        ingress_port: 0,
                        rewrite_dst,
                        new_addr: addr,
                        new_port: port,
                        eth_dst: [2, 0, 0, 0, 0, 9],
                        eth_src: [2, 0, 0, 0, 0, 8],
                        egress_port: 1,
                        client_mac: [0; 6],
                    };
                    let r = DirectionRewrite::new(&d);
                    let mut pipeline = input.clone();
                    rewrite::set_macs(&mut pipeline, d.eth_src, d.eth_dst);
                    if rewrite_dst {
                        rewrite::rewrite_dst(&mut pipeline, &meta, &addr, port);
                    } else {
                        rewrite::rewrite_src(&mut pipeline, &meta, &addr, port);
                    }
                    rewrite::decrement_ttl(&mut pipeline, &meta);
                    let mut fast = input.clone();
                    apply_like_the_program(&mut fast, &r);
                    assert_eq!(fast, pipeline, "frame {i}, ttl {ttl}, dst {rewrite_dst}");
                }
            }
        }
    }

    #[test]
    fn field_words_put_each_field_at_its_offset() {
        let t = FiveTuple::v4([198, 18, 0, 2], [198, 18, 100, 10], 40000, 80, 6);
        let r = DirectionRewrite::new(&Direction {
            tuple: t,
            ingress_port: 0,
            rewrite_dst: true,
            new_addr: v4_mapped([198, 18, 1, 11]),
            new_port: 8080,
            eth_dst: [2, 1, 1, 1, 1, 1],
            eth_src: [2, 2, 2, 2, 2, 2],
            egress_port: 1,
            client_mac: [2, 3, 3, 3, 3, 3],
        });
        let b = r.field_bytes();
        let at = |o: usize| o - offset::KEY;
        assert_eq!(&b[..16], &t.src);
        assert_eq!(&b[32..34], &40000u16.to_be_bytes());
        assert_eq!(b[36], 6);
        assert_eq!(
            &b[at(offset::NEW_ADDR) + 12..at(offset::NEW_PORT)],
            &[198, 18, 1, 11]
        );
        assert_eq!(
            &b[at(offset::NEW_PORT)..at(offset::NEW_PORT) + 2],
            &8080u16.to_be_bytes()
        );
        assert_eq!(b[at(offset::REWRITE)], REWRITE_DST);
        assert_eq!(
            &b[at(offset::ETH_DST)..at(offset::ETH_SRC)],
            &[2, 1, 1, 1, 1, 1]
        );
        assert_eq!(
            &b[at(offset::CLIENT_MAC)..at(offset::CLIENT_MAC) + 6],
            &[2, 3, 3, 3, 3, 3]
        );
        let words = r.field_words();
        assert_eq!(words[0].to_ne_bytes(), b[..8]);
        assert_eq!(words[..5], r.key.words());
    }
}
