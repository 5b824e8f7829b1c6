//! What an AF_XDP port is built with: frame memory and ring sizes, bind
//! mode, wakeups, huge pages, and whose XDP program steers packets.

use super::error::XskError;

/// Frame sizes the kernel accepts for an aligned UMEM that we support.
pub const FRAME_SIZES: [u32; 2] = [2048, 4096];

/// Smallest ring size accepted: below this a batch no longer fits.
pub const MIN_RING: u32 = 64;

/// Largest ring size accepted.
pub const MAX_RING: u32 = 1 << 16;

/// Most frames one UMEM may have (2^22 frames of 4 KiB is 16 GiB).
pub const MAX_FRAMES: u32 = 1 << 22;

/// How a socket asks the kernel to move packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy where the driver supports it, copy mode otherwise (the
    /// kernel falls back by itself when neither is forced).
    #[default]
    Auto,
    /// Zero-copy or fail: opening the socket fails on a driver without it.
    ZeroCopy,
    /// Copy mode even where zero-copy would work.
    Copy,
}

/// Settings of the shared UMEM and of each AF_XDP socket on it.
///
/// The UMEM is one per gateway, so the frame and fill/completion ring
/// settings are read once, by
/// [`SharedUmem::new`](super::SharedUmem::new). On a shared UMEM the
/// kernel takes the bind mode and the wakeup setting from the first
/// socket bound; later sockets inherit them (see
/// [`XskPort::open`](super::XskPort::open)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XskSettings {
    /// Bytes per frame: 2048 or 4096. The first 256 bytes of each frame
    /// are the kernel's XDP headroom, so a frame holds
    /// `frame_size - 256` bytes of packet.
    pub frame_size: u32,
    /// Frames in the UMEM, shared by every socket of the gateway. Enough
    /// for every socket's fill ring, receive and transmit rings, plus
    /// what the workers hold in flight.
    pub frame_count: u32,
    /// Receive ring entries per socket (a power of two).
    pub rx_ring: u32,
    /// Transmit ring entries per socket (a power of two).
    pub tx_ring: u32,
    /// Fill ring entries per (interface, queue) (a power of two). Read
    /// once, by [`SharedUmem::new`](super::SharedUmem::new): libxdp sizes
    /// every fill ring of a UMEM alike.
    pub fill_ring: u32,
    /// Completion ring entries per (interface, queue) (a power of two).
    /// Read once, like `fill_ring`.
    pub completion_ring: u32,
    /// Zero-copy, copy, or whichever the driver offers.
    pub bind_mode: BindMode,
    /// Ask the kernel to flag when it needs a wakeup, and make system
    /// calls only then (the recommended mode, and the default).
    pub need_wakeup: bool,
    /// Back the UMEM with huge pages if the system has them free;
    /// ordinary pages otherwise.
    pub huge_pages: bool,
    /// Let libxdp attach its own program, which sends every packet of
    /// the queue to the socket. Off by default: the gateway attaches its
    /// own program and puts each socket into its XSKMAP. Tests and tools
    /// without a program of their own turn it on.
    pub libxdp_default_program: bool,
}

impl Default for XskSettings {
    fn default() -> Self {
        XskSettings {
            frame_size: 2048,
            frame_count: 16_384,
            rx_ring: 2048,
            tx_ring: 2048,
            fill_ring: 2048,
            completion_ring: 2048,
            bind_mode: BindMode::Auto,
            need_wakeup: true,
            huge_pages: true,
            libxdp_default_program: false,
        }
    }
}

impl XskSettings {
    /// Checks every field; the error names the field, its value and what
    /// it must be.
    pub fn validate(&self) -> Result<(), XskError> {
        if !FRAME_SIZES.contains(&self.frame_size) {
            return Err(bad(format!(
                "frame_size = {} must be 2048 or 4096",
                self.frame_size
            )));
        }
        if self.frame_count == 0 || self.frame_count > MAX_FRAMES {
            return Err(bad(format!(
                "frame_count = {} must be between 1 and {MAX_FRAMES}",
                self.frame_count
            )));
        }
        for (name, size) in [
            ("rx_ring", self.rx_ring),
            ("tx_ring", self.tx_ring),
            ("fill_ring", self.fill_ring),
            ("completion_ring", self.completion_ring),
        ] {
            if !size.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&size) {
                return Err(bad(format!(
                    "{name} = {size} must be a power of two between {MIN_RING} and {MAX_RING}"
                )));
            }
        }
        Ok(())
    }

    /// Bytes of the UMEM.
    pub fn umem_bytes(&self) -> u64 {
        u64::from(self.frame_count) * u64::from(self.frame_size)
    }
}

fn bad(reason: String) -> XskError {
    XskError::BadSettings { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(settings: &XskSettings) -> String {
        match settings.validate() {
            Err(XskError::BadSettings { reason }) => reason,
            other => panic!("expected bad settings, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        XskSettings::default().validate().unwrap();
    }

    #[test]
    fn frame_size_must_be_2048_or_4096() {
        for ok in [2048, 4096] {
            let s = XskSettings {
                frame_size: ok,
                ..XskSettings::default()
            };
            s.validate().unwrap();
        }
        for wrong in [0, 1024, 3000, 8192] {
            let s = XskSettings {
                frame_size: wrong,
                ..XskSettings::default()
            };
            let why = reason(&s);
            assert!(
                why.contains("frame_size") && why.contains(&wrong.to_string()),
                "{why}"
            );
        }
    }

    #[test]
    fn frame_count_must_be_positive_and_bounded() {
        for wrong in [0, MAX_FRAMES + 1] {
            let s = XskSettings {
                frame_count: wrong,
                ..XskSettings::default()
            };
            assert!(reason(&s).contains("frame_count"));
        }
        let s = XskSettings {
            frame_count: 1,
            ..XskSettings::default()
        };
        s.validate().unwrap();
    }

    #[test]
    fn every_ring_must_be_a_bounded_power_of_two() {
        type Set = fn(&mut XskSettings, u32);
        let rings: [(&str, Set); 4] = [
            ("rx_ring", |s, v| s.rx_ring = v),
            ("tx_ring", |s, v| s.tx_ring = v),
            ("fill_ring", |s, v| s.fill_ring = v),
            ("completion_ring", |s, v| s.completion_ring = v),
        ];
        for (name, set) in rings {
            for wrong in [0, 1000, 32, MAX_RING * 2, 3 << 10] {
                let mut s = XskSettings::default();
                set(&mut s, wrong);
                let why = reason(&s);
                assert!(why.starts_with(name), "{why}");
                assert!(why.contains(&wrong.to_string()), "{why}");
            }
            for ok in [MIN_RING, 4096, MAX_RING] {
                let mut s = XskSettings::default();
                set(&mut s, ok);
                s.validate().unwrap();
            }
        }
    }

    #[test]
    fn bad_settings_read_as_one_line() {
        let s = XskSettings {
            rx_ring: 1000,
            ..XskSettings::default()
        };
        let msg = s.validate().unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid AF_XDP settings: rx_ring = 1000 must be a power of two between 64 and 65536"
        );
    }

    #[test]
    fn umem_bytes_does_not_overflow() {
        let s = XskSettings {
            frame_size: 4096,
            frame_count: MAX_FRAMES,
            ..XskSettings::default()
        };
        assert_eq!(s.umem_bytes(), 1 << 34);
    }
}
