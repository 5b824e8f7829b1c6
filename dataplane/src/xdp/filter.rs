//! One instance of the XDP program on one interface, and its maps.

use std::collections::HashSet;
use std::fmt;
use std::os::fd::RawFd;

use aya::maps::{Array, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, Xdp, XdpFlags};
use aya::{Ebpf, EbpfLoader};

use super::key_set::{map_error, KeySet};
use super::owned::{OwnedTraffic, TrafficKey};
use super::program::{counter, map, traffic_key, KEY_LEN, OBJECT, PROGRAM};
use super::stale::remove_stale_programs;
use super::{XdpCounters, XdpError};
use crate::neigh::{self, NeighError};

/// How to attach the program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// Native if the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// In the driver (`XDP_FLAGS_DRV_MODE`): fast; veth and most NICs.
    Native,
    /// On the kernel's socket buffers (`XDP_FLAGS_SKB_MODE`): works on
    /// every interface, slower.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Our XDP program attached to one interface, with its maps.
///
/// Attached through a bpf_link: if the process dies, the kernel detaches
/// the program with it. Dropping the filter (or [`XdpFilter::detach`])
/// detaches it too and leaves the interface with no XDP program.
pub struct XdpFilter {
    interface: String,
    mode: XdpMode,
    /// Declared before `ebpf`: dropped (detached) before the program.
    link: Option<XdpLink>,
    sockets: XskMap<MapData>,
    services: KeySet<TrafficKey, [u8; KEY_LEN]>,
    reply_sources: KeySet<TrafficKey, [u8; KEY_LEN]>,
    vip_addresses: KeySet<[u8; 16], [u8; 16]>,
    local_addresses: KeySet<[u8; 16], [u8; 16]>,
    config: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// Holds the loaded program.
    _ebpf: Ebpf,
}

impl fmt::Debug for XdpFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpFilter")
            .field("interface", &self.interface)
            .field("mode", &self.mode)
            .field("services", &self.services.held().len())
            .field("reply_sources", &self.reply_sources.held().len())
            .field("local_addresses", &self.local_addresses.held().len())
            .finish_non_exhaustive()
    }
}

impl XdpFilter {
    /// Loads an instance of the program for `interface` (in the calling
    /// thread's network namespace) and attaches it in `mode`. With
    /// [`XdpMode::Auto`] it tries native first and falls back to generic,
    /// logging which it got. A program someone else attached through
    /// netlink (a crashed loader, `ip link`, libxdp's dispatcher) is
    /// replaced, with a warning.
    ///
    /// The new program owns no traffic yet: everything passes to the
    /// kernel until [`Self::update`] or [`Self::set_redirect_all`].
    pub fn attach(interface: &str, mode: XdpMode) -> Result<XdpFilter, XdpError> {
        let link = neigh::link_info(interface).map_err(|e| match e {
            NeighError::NoSuchInterface(name) => XdpError::NoSuchInterface(name),
            other => XdpError::Other(format!("reading {interface}: {other}")),
        })?;
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(map::SOCKETS, link.rx_queues.max(1))
            .load(OBJECT)
            .map_err(|e| XdpError::from_load(&e))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Other(format!("the XDP object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::from_program("loading the XDP program", &e))?;
        program
            .load()
            .map_err(|e| XdpError::from_program("loading the XDP program", &e))?;

        if !link.xdp.is_empty() {
            remove_stale_programs(&link)?;
        }
        let (xdp_link, attached) = attach_program(program, &link, mode)?;

        Ok(XdpFilter {
            interface: interface.to_string(),
            mode: attached,
            link: Some(xdp_link),
            sockets: take_map(&mut ebpf, map::SOCKETS)?,
            services: KeySet::new(
                take_map(&mut ebpf, map::SERVICES)?,
                map::SERVICES,
                key_bytes,
            ),
            reply_sources: KeySet::new(
                take_map(&mut ebpf, map::REPLY_SOURCES)?,
                map::REPLY_SOURCES,
                key_bytes,
            ),
            vip_addresses: KeySet::new(
                take_map(&mut ebpf, map::VIP_ADDRESSES)?,
                map::VIP_ADDRESSES,
                |address| *address,
            ),
            local_addresses: KeySet::new(
                take_map(&mut ebpf, map::LOCAL_ADDRESSES)?,
                map::LOCAL_ADDRESSES,
                |address| *address,
            ),
            config: take_map(&mut ebpf, map::CONFIG)?,
            counters: take_map(&mut ebpf, map::COUNTERS)?,
            _ebpf: ebpf,
        })
    }

    /// The mode the program is attached in: [`XdpMode::Native`] or
    /// [`XdpMode::Generic`], never `Auto`.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface it is attached to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Puts the AF_XDP socket `fd` (bound to `queue` of this interface) in
    /// the program's socket map: frames the gateway owns that arrive on
    /// `queue` go to it. The map holds its own reference to the socket.
    pub fn set_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let queues = self.sockets.len();
        self.sockets.set(queue, fd, 0).map_err(|e| match e {
            MapError::OutOfBounds { .. } => XdpError::Other(format!(
                "queue {queue} is past {}'s {queues} receive queues",
                self.interface
            )),
            e => map_error(
                &format!("putting the socket of queue {queue} in the XSKMAP"),
                e,
            ),
        })
    }

    /// Makes the program own exactly `owned`: new keys are added before
    /// keys no longer owned are removed, so a key owned before and after is
    /// never missing, not even for a moment.
    pub fn update(&mut self, owned: &OwnedTraffic) -> Result<(), XdpError> {
        let vips = owned.vip_addresses();
        self.services.add_missing(&owned.services)?;
        self.reply_sources.add_missing(&owned.reply_sources)?;
        self.vip_addresses.add_missing(&vips)?;
        self.services.remove_unwanted(&owned.services)?;
        self.reply_sources.remove_unwanted(&owned.reply_sources)?;
        self.vip_addresses.remove_unwanted(&vips)
    }

    /// What the program owns now.
    pub fn owned(&self) -> OwnedTraffic {
        OwnedTraffic {
            services: self.services.held().clone(),
            reply_sources: self.reply_sources.held().clone(),
        }
    }

    /// Makes the program's set of the box's own addresses (16 bytes each,
    /// IPv4-mapped for IPv4; see [`crate::wire::addr_to_bytes`]) exactly
    /// `addresses`: new ones are added before gone ones are removed. A
    /// frame from a backend's (protocol, address, port) to one of them is
    /// the box's own connection, not a reply of the gateway's, and passes
    /// to the kernel. Only the difference with the last call touches the
    /// map, so calling it often with the same set is cheap.
    pub fn set_local_addresses(&mut self, addresses: &HashSet<[u8; 16]>) -> Result<(), XdpError> {
        self.local_addresses.add_missing(addresses)?;
        self.local_addresses.remove_unwanted(addresses)
    }

    /// The box's own addresses the program knows now.
    pub fn local_addresses(&self) -> &HashSet<[u8; 16]> {
        self.local_addresses.held()
    }

    /// Forward-only mode: with `true` every IPv4 and IPv6 frame (except
    /// NDP and MLD) is redirected, owned or not; with `false` only owned
    /// traffic is.
    pub fn set_redirect_all(&mut self, on: bool) -> Result<(), XdpError> {
        self.config
            .set(0, u32::from(on), 0)
            .map_err(|e| map_error("setting redirect-all", e))
    }

    /// The program's counters, summed over CPUs. A counter that cannot be
    /// read (which the kernel has no reason to refuse) reads as 0.
    pub fn counters(&self) -> XdpCounters {
        let totals: Vec<u64> = (0..counter::COUNT)
            .map(|index| match self.counters.get(&index, 0) {
                Ok(per_cpu) => per_cpu.iter().fold(0u64, |sum, &v| sum.saturating_add(v)),
                Err(e) => {
                    tracing::debug!(index, error = %e, "cannot read an XDP counter");
                    0
                }
            })
            .collect();
        XdpCounters::from_totals(&totals)
    }

    /// Detaches the program now (dropping the filter does the same,
    /// ignoring errors).
    pub fn detach(mut self) -> Result<(), XdpError> {
        // Closing the link's descriptor detaches the program.
        drop(self.link.take());
        Ok(())
    }
}

/// Attaches `program` to `link` in `mode`; returns the link and the mode
/// it got.
fn attach_program(
    program: &mut Xdp,
    link: &neigh::LinkInfo,
    mode: XdpMode,
) -> Result<(XdpLink, XdpMode), XdpError> {
    let mut attach_in = |mode: XdpMode| -> Result<XdpLink, ProgramError> {
        let flags = match mode {
            XdpMode::Generic => XdpFlags::SKB_MODE,
            XdpMode::Native | XdpMode::Auto => XdpFlags::DRV_MODE,
        };
        let id = program.attach_to_if_index(link.ifindex, flags)?;
        program.take_link(id)
    };
    let described = |mode: XdpMode, e: &ProgramError| {
        if XdpError::is_attach_conflict(e) {
            XdpError::Other(format!(
                "attaching in {mode} mode to {}: another XDP program was attached meanwhile",
                link.name
            ))
        } else {
            XdpError::from_program(&format!("attaching in {mode} mode to {}", link.name), e)
        }
    };
    match mode {
        XdpMode::Native | XdpMode::Generic => attach_in(mode)
            .map(|l| (l, mode))
            .map_err(|e| described(mode, &e)),
        XdpMode::Auto => match attach_in(XdpMode::Native) {
            Ok(l) => {
                tracing::info!(interface = %link.name, "XDP program attached in native mode");
                Ok((l, XdpMode::Native))
            }
            Err(native) => {
                let why = described(XdpMode::Native, &native);
                if matches!(why, XdpError::Permission(_)) {
                    return Err(why);
                }
                let l = attach_in(XdpMode::Generic).map_err(|e| described(XdpMode::Generic, &e))?;
                tracing::info!(
                    interface = %link.name,
                    native_error = %why,
                    "XDP program attached in generic mode (native failed)"
                );
                Ok((l, XdpMode::Generic))
            }
        },
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, XdpError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| XdpError::Other(format!("the XDP object has no map {name}")))?;
    T::try_from(map).map_err(|e| map_error(&format!("opening map {name}"), e))
}

fn key_bytes(key: &TrafficKey) -> [u8; KEY_LEN] {
    traffic_key(key.protocol, &key.address, key.port)
}
