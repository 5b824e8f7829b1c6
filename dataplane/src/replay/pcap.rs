//! Classic pcap files (Ethernet link type), read and written.
//!
//! The format is small enough that a dependency would cost more than it
//! saves: a 24-byte file header, then records of a 16-byte header and the
//! captured bytes. Both byte orders and both microsecond and nanosecond
//! timestamps are read; files are written little-endian with nanoseconds.

use std::io::{self, Read, Write};

/// Link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest record accepted (the libpcap maximum snapshot length).
pub const MAX_RECORD: u32 = 262_144;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The file holds nothing at all.
    #[error("empty file: a pcap file starts with a 24-byte header")]
    Empty,
    /// The file ends inside the 24-byte file header.
    #[error("the file ends inside its 24-byte pcap header, after {0} bytes")]
    ShortHeader(usize),
    /// Not a pcap file (pcapng is not read: convert with `editcap -F pcap`).
    #[error(
        "not a pcap file (magic {0:#010x}); pcapng files need converting with `editcap -F pcap`"
    )]
    BadMagic(u32),
    /// Frames of a link type other than Ethernet.
    #[error("link type {0} is not Ethernet (1)")]
    UnsupportedLinkType(u32),
    /// The file ends inside a record.
    #[error("record {0} is cut short: the file ends inside it")]
    Truncated(u64),
    /// A record claims more bytes than any capture holds.
    #[error("record {index} claims {len} bytes (more than {MAX_RECORD}): the file is corrupt")]
    RecordTooLarge {
        /// Record number (0-based).
        index: u64,
        /// Its claimed length.
        len: u32,
    },
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Capture time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The frame's bytes as captured.
    pub data: Vec<u8>,
    /// The frame's length on the wire (≥ `data.len()` if cut by snaplen).
    pub orig_len: u32,
}

/// Reads records from a pcap stream.
#[derive(Debug)]
pub struct PcapReader<R> {
    inner: R,
    swapped: bool,
    nanos: bool,
    index: u64,
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut inner: R) -> Result<Self, PcapError> {
        let mut header = [0u8; 24];
        let got = read_full(&mut inner, &mut header)?;
        if got == 0 {
            return Err(PcapError::Empty);
        }
        // Fewer than 4 bytes cannot even say what the file is.
        if got < 4 {
            return Err(PcapError::ShortHeader(got));
        }
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let (swapped, nanos) = match magic {
            MAGIC_MICROS => (false, false),
            MAGIC_NANOS => (false, true),
            m if m.swap_bytes() == MAGIC_MICROS => (true, false),
            m if m.swap_bytes() == MAGIC_NANOS => (true, true),
            m => return Err(PcapError::BadMagic(m)),
        };
        if got < header.len() {
            return Err(PcapError::ShortHeader(got));
        }
        let reader = PcapReader {
            inner,
            swapped,
            nanos,
            index: 0,
        };
        let linktype = reader.u32_at(&header, 20);
        if linktype & 0x0fff_ffff != LINKTYPE_ETHERNET {
            return Err(PcapError::UnsupportedLinkType(linktype));
        }
        Ok(reader)
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        if self.swapped {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    }

    /// The next record, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut header = [0u8; 16];
        match read_full(&mut self.inner, &mut header)? {
            0 => return Ok(None),
            16 => {}
            _ => return Err(PcapError::Truncated(self.index)),
        }
        let secs = u64::from(self.u32_at(&header, 0));
        let frac = u64::from(self.u32_at(&header, 4));
        let incl_len = self.u32_at(&header, 8);
        let orig_len = self.u32_at(&header, 12);
        if incl_len > MAX_RECORD {
            return Err(PcapError::RecordTooLarge {
                index: self.index,
                len: incl_len,
            });
        }
        let mut data = vec![0u8; incl_len as usize];
        if read_full(&mut self.inner, &mut data)? != data.len() {
            return Err(PcapError::Truncated(self.index));
        }
        self.index += 1;
        let frac_ns = if self.nanos { frac } else { frac * 1_000 };
        Ok(Some(Record {
            timestamp_ns: secs * 1_000_000_000 + frac_ns,
            data,
            orig_len,
        }))
    }
}

/// Reads until `buf` is full or the stream ends; returns bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes records to a pcap stream (little-endian, nanosecond timestamps).
#[derive(Debug)]
pub struct PcapWriter<W> {
    inner: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut inner: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_NANOS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        header.extend_from_slice(&MAX_RECORD.to_le_bytes()); // snaplen
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        inner.write_all(&header)?;
        Ok(PcapWriter { inner })
    }

    /// Writes one frame captured at `timestamp_ns`.
    pub fn write(&mut self, timestamp_ns: u64, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        let secs = u32::try_from(timestamp_ns / 1_000_000_000).unwrap_or(u32::MAX);
        let nanos = (timestamp_ns % 1_000_000_000) as u32;
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&secs.to_le_bytes());
        header[4..8].copy_from_slice(&nanos.to_le_bytes());
        header[8..12].copy_from_slice(&len.to_le_bytes());
        header[12..16].copy_from_slice(&len.to_le_bytes());
        self.inner.write_all(&header)?;
        self.inner.write_all(frame)
    }

    /// Flushes and returns the stream.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(1_700_000_000_123_456_789, &[1, 2, 3]).unwrap();
        w.write(5, &[]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(a.timestamp_ns, 1_700_000_000_123_456_789);
        assert_eq!(a.data, vec![1, 2, 3]);
        assert_eq!(r.next_record().unwrap().unwrap().timestamp_ns, 5);
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn big_endian_microsecond_files_are_read() {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC_MICROS.to_be_bytes());
        f.extend_from_slice(&[
            0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1,
        ]);
        f.extend_from_slice(&7u32.to_be_bytes()); // secs
        f.extend_from_slice(&9u32.to_be_bytes()); // micros
        f.extend_from_slice(&2u32.to_be_bytes());
        f.extend_from_slice(&2u32.to_be_bytes());
        f.extend_from_slice(&[0xab, 0xcd]);
        let mut r = PcapReader::new(&f[..]).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.timestamp_ns, 7_000_009_000);
        assert_eq!(rec.data, vec![0xab, 0xcd]);
    }

    #[test]
    fn an_empty_or_cut_header_says_so() {
        let empty = PcapReader::new(&[][..]).unwrap_err();
        assert!(matches!(empty, PcapError::Empty));
        assert_eq!(
            empty.to_string(),
            "empty file: a pcap file starts with a 24-byte header"
        );
        let header = PcapWriter::new(Vec::new()).unwrap().finish().unwrap();
        for cut in [1, 3, 4, 23] {
            let error = PcapReader::new(&header[..cut]).unwrap_err();
            assert!(
                matches!(error, PcapError::ShortHeader(n) if n == cut),
                "{error}"
            );
            assert_eq!(
                error.to_string(),
                format!("the file ends inside its 24-byte pcap header, after {cut} bytes")
            );
        }
        // A short file that is not a capture at all says that first.
        assert!(matches!(
            PcapReader::new(&b"hello"[..]),
            Err(PcapError::BadMagic(0x6c6c_6568))
        ));
        // Only the header: a valid capture of no frames.
        let mut r = PcapReader::new(&header[..]).unwrap();
        assert!(r.next_record().unwrap().is_none());
    }

    #[test]
    fn damaged_files_give_typed_errors() {
        assert!(matches!(
            PcapReader::new(&[0u8; 3][..]),
            Err(PcapError::ShortHeader(3))
        ));
        assert!(matches!(
            PcapReader::new(&[0u8; 24][..]),
            Err(PcapError::BadMagic(0))
        ));
        let mut hdr = PcapWriter::new(Vec::new()).unwrap().finish().unwrap();
        hdr[20] = 101; // raw IP link type
        assert!(matches!(
            PcapReader::new(&hdr[..]),
            Err(PcapError::UnsupportedLinkType(101))
        ));

        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(1, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.finish().unwrap();
        bytes.truncate(bytes.len() - 1);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated(0))));

        let mut bytes = PcapWriter::new(Vec::new()).unwrap().finish().unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(
            r.next_record(),
            Err(PcapError::RecordTooLarge { .. })
        ));
    }
}
