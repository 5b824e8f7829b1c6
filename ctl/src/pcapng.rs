//! A pcapng writer (draft-ietf-opsawg-pcapng): one section, an interface
//! description per interface as it first appears, and an enhanced packet
//! block per frame whose comment says what the gateway decided. tcpdump,
//! Wireshark and tshark read it; Wireshark and tshark show the comments
//! (`frame.comment`).

use std::io::{self, Write};

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE_DESCRIPTION: u32 = 0x0000_0001;
const ENHANCED_PACKET: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u16 = 1;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

/// Which way a frame went, as `epb_flags` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received and not sent on (dropped, or passed to the kernel).
    Inbound,
    /// Sent out (transmitted), as it left.
    Outbound,
}

/// Writes frames into a pcapng stream (the stream is passed to each call,
/// so that it can be stdout, borrowed, as well as a file).
#[derive(Debug)]
pub struct PcapngWriter {
    /// Interfaces described so far; a frame's interface id is its index.
    interfaces: Vec<String>,
    snap: u32,
}

impl PcapngWriter {
    /// Starts a stream on `out` (its section header) for frames of at most
    /// `snap` bytes.
    pub fn new(out: &mut (impl Write + ?Sized), snap: u32) -> io::Result<PcapngWriter> {
        let mut body = Vec::with_capacity(40);
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        // Section length not given.
        body.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut body, SHB_USERAPPL, b"flowgatectl capture");
        option_end(&mut body);
        write_block(out, SECTION_HEADER, &body)?;
        out.flush()?;
        Ok(PcapngWriter {
            interfaces: Vec::new(),
            snap,
        })
    }

    /// Writes one frame seen on `interface` at `time_ns` (since the Unix
    /// epoch), `length` bytes long on the wire, of which `data` were kept,
    /// with `comment`; and flushes, so that what was written stays whole
    /// if the capture is interrupted.
    #[allow(clippy::too_many_arguments)]
    pub fn frame(
        &mut self,
        out: &mut (impl Write + ?Sized),
        interface: &str,
        time_ns: u64,
        length: u32,
        data: &[u8],
        comment: &str,
        direction: Direction,
    ) -> io::Result<()> {
        let id = self.interface_id(out, interface)?;
        let captured = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let mut body = Vec::with_capacity(data.len() + comment.len() + 48);
        body.extend_from_slice(&id.to_le_bytes());
        // Timestamps in nanoseconds (if_tsresol 9), high word first.
        body.extend_from_slice(&((time_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(time_ns as u32).to_le_bytes());
        body.extend_from_slice(&captured.to_le_bytes());
        body.extend_from_slice(&length.max(captured).to_le_bytes());
        body.extend_from_slice(data);
        pad(&mut body);
        option(&mut body, OPT_COMMENT, comment.as_bytes());
        let flags: u32 = match direction {
            Direction::Inbound => 0b01,
            Direction::Outbound => 0b10,
        };
        option(&mut body, EPB_FLAGS, &flags.to_le_bytes());
        option_end(&mut body);
        write_block(out, ENHANCED_PACKET, &body)?;
        out.flush()
    }

    /// The id of `interface`, describing it first if it is new.
    fn interface_id(
        &mut self,
        out: &mut (impl Write + ?Sized),
        interface: &str,
    ) -> io::Result<u32> {
        if let Some(i) = self.interfaces.iter().position(|n| n == interface) {
            return Ok(u32::try_from(i).unwrap_or(u32::MAX));
        }
        let mut body = Vec::with_capacity(32 + interface.len());
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&self.snap.to_le_bytes());
        option(&mut body, IF_NAME, interface.as_bytes());
        option(&mut body, IF_TSRESOL, &[9]);
        option_end(&mut body);
        write_block(out, INTERFACE_DESCRIPTION, &body)?;
        self.interfaces.push(interface.to_owned());
        Ok(u32::try_from(self.interfaces.len() - 1).unwrap_or(u32::MAX))
    }
}

/// Pads `body` with zeros to a multiple of 4 bytes.
fn pad(body: &mut Vec<u8>) {
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

/// Appends an option (values longer than an option holds are cut).
fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    let value = value.get(..usize::from(u16::MAX)).unwrap_or(value);
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    pad(body);
}

fn option_end(body: &mut Vec<u8>) {
    body.extend_from_slice(&OPT_END.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
}

/// Writes a block: type, total length, body (padded), total length again.
fn write_block(out: &mut (impl Write + ?Sized), kind: u32, body: &[u8]) -> io::Result<()> {
    let total = u32::try_from(body.len() + 12).unwrap_or(u32::MAX);
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks of a little-endian pcapng stream: (type, body).
    fn blocks(mut bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (kind, total) = (word(bytes, 0), word(bytes, 4) as usize);
            assert_eq!(total % 4, 0, "blocks are 32-bit aligned");
            assert_eq!(word(bytes, total - 4) as usize, total, "trailing length");
            out.push((kind, bytes[8..total - 4].to_vec()));
            bytes = &bytes[total..];
        }
        out
    }

    /// Options from `at` in `body`: (code, value).
    fn options(body: &[u8], mut at: usize) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let code = u16::from_le_bytes([body[at], body[at + 1]]);
            let len = usize::from(u16::from_le_bytes([body[at + 2], body[at + 3]]));
            if code == 0 {
                return out;
            }
            out.push((code, body[at + 4..at + 4 + len].to_vec()));
            at += 4 + len.div_ceil(4) * 4;
        }
    }

    #[test]
    fn frames_are_written_with_their_interface_time_and_comment() {
        let mut bytes = Vec::new();
        let mut w = PcapngWriter::new(&mut bytes, 2048).unwrap();
        let frame: Vec<u8> = (0..61).collect();
        let t = 1_765_000_000_123_456_789u64;
        w.frame(
            &mut bytes,
            "fg-client",
            t,
            61,
            &frame,
            "verdict=drop reason=ttl_expired",
            Direction::Inbound,
        )
        .unwrap();
        w.frame(
            &mut bytes,
            "fg-backend",
            t + 1,
            1500,
            &frame[..14],
            "verdict=transmit",
            Direction::Outbound,
        )
        .unwrap();
        w.frame(
            &mut bytes,
            "fg-client",
            t + 2,
            61,
            &frame,
            "x",
            Direction::Inbound,
        )
        .unwrap();
        let blocks = blocks(&bytes);
        let kinds: Vec<u32> = blocks.iter().map(|b| b.0).collect();
        assert_eq!(
            kinds,
            vec![SECTION_HEADER, 1, 6, 1, 6, 6],
            "an IDB per new interface"
        );

        let shb = &blocks[0].1;
        assert_eq!(&shb[..4], &BYTE_ORDER_MAGIC.to_le_bytes());
        assert_eq!(&shb[4..8], &[1, 0, 0, 0], "version 1.0");
        let idb = &blocks[1].1;
        assert_eq!(&idb[..2], &1u16.to_le_bytes(), "Ethernet");
        assert_eq!(&idb[4..8], &2048u32.to_le_bytes());
        assert_eq!(
            options(idb, 8),
            vec![(IF_NAME, b"fg-client".to_vec()), (IF_TSRESOL, vec![9])]
        );
        assert_eq!(options(&blocks[3].1, 8)[0].1, b"fg-backend");

        let epb = &blocks[2].1;
        let word = |at: usize| u32::from_le_bytes(epb[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), 0, "interface 0");
        assert_eq!((u64::from(word(4)) << 32) | u64::from(word(8)), t);
        assert_eq!((word(12), word(16)), (61, 61));
        assert_eq!(&epb[20..81], frame.as_slice());
        let opts = options(epb, 20 + 64);
        assert_eq!(
            opts[0],
            (OPT_COMMENT, b"verdict=drop reason=ttl_expired".to_vec())
        );
        assert_eq!(opts[1], (EPB_FLAGS, 1u32.to_le_bytes().to_vec()));

        let cut = &blocks[4].1;
        let word = |at: usize| u32::from_le_bytes(cut[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), 1, "interface 1");
        assert_eq!((word(12), word(16)), (14, 1500), "captured, on the wire");
        assert_eq!(options(cut, 20 + 16)[1].1, 2u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(blocks[5].1[..4].try_into().unwrap()), 0);
    }

    #[test]
    fn an_empty_capture_is_a_valid_stream() {
        let mut bytes = Vec::new();
        PcapngWriter::new(&mut bytes, 64).unwrap();
        assert_eq!(blocks(&bytes).len(), 1);
        assert_eq!(bytes.len() % 4, 0);
    }
}
