//! What the program's maps hold, read back from the kernel: those of a
//! filter of ours ([`super::XdpFilter::read_maps`]), or those of the
//! flowgate program attached to an interface by another process, such as a
//! running daemon ([`read_attached_maps`], [`read_attached_counters`]).
//! For diagnostics and tests: the filters keep their own mirror of the
//! maps and never read them back.

use std::collections::HashSet;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, XskMap};
use aya::programs::loaded_programs;
use aya::Pod;

use super::filter::key_of_bytes;
use super::key_set::{map_error, read_keys};
use super::owned::{OwnedTraffic, TrafficKey};
use super::program::{counter, map, PROGRAM};
use super::{XdpCounters, XdpError};
use crate::neigh::{self, NeighError};

/// Every key of the program's hash maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpMapKeys {
    /// `services`.
    pub services: HashSet<TrafficKey>,
    /// `reply_sources`.
    pub reply_sources: HashSet<TrafficKey>,
    /// `vip_addrs`.
    pub vip_addresses: HashSet<[u8; 16]>,
    /// `local_addrs`.
    pub local_addresses: HashSet<[u8; 16]>,
    /// `announce_addrs`.
    pub announced_addresses: HashSet<[u8; 16]>,
}

impl XdpMapKeys {
    /// The traffic these maps make the program own.
    pub fn owned(&self) -> OwnedTraffic {
        OwnedTraffic {
            services: self.services.clone(),
            reply_sources: self.reply_sources.clone(),
            announced: self.announced_addresses.clone(),
        }
    }

    /// Whether the maps hold exactly the keys of `owned`: its services,
    /// its reply sources and its VIP addresses, nothing more or less (the
    /// box's own addresses and the announced addresses, which only the
    /// client-facing interface holds, are not compared).
    pub fn hold_exactly(&self, owned: &OwnedTraffic) -> bool {
        self.services == owned.services
            && self.reply_sources == owned.reply_sources
            && self.vip_addresses == owned.vip_addresses()
    }
}

/// Reads the maps of the flowgate XDP program attached to `interface` (in
/// the calling thread's network namespace), whoever attached it.
pub fn read_attached_maps(interface: &str) -> Result<XdpMapKeys, XdpError> {
    let mut keys = XdpMapKeys::default();
    for (name, data) in attached_maps(interface)? {
        match name.as_str() {
            map::SERVICES => keys.services = read(data, map::SERVICES, key_of_bytes)?,
            map::REPLY_SOURCES => {
                keys.reply_sources = read(data, map::REPLY_SOURCES, key_of_bytes)?
            }
            map::VIP_ADDRESSES => {
                keys.vip_addresses = read(data, map::VIP_ADDRESSES, |a: &[u8; 16]| *a)?
            }
            map::LOCAL_ADDRESSES => {
                keys.local_addresses = read(data, map::LOCAL_ADDRESSES, |a: &[u8; 16]| *a)?
            }
            map::ANNOUNCED_ADDRESSES => {
                keys.announced_addresses = read(data, map::ANNOUNCED_ADDRESSES, |a: &[u8; 16]| *a)?
            }
            _ => {}
        }
    }
    Ok(keys)
}

/// Reads the counters of the flowgate XDP program attached to `interface`
/// (in the calling thread's network namespace), whoever attached it,
/// summed over CPUs.
pub fn read_attached_counters(interface: &str) -> Result<XdpCounters, XdpError> {
    let (_, data) = attached_maps(interface)?
        .into_iter()
        .find(|(name, _)| name == map::COUNTERS)
        .ok_or_else(|| XdpError::Other(format!("the program on {interface} has no counters")))?;
    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(data))
        .map_err(|e| map_error("opening map counters", e))?;
    let mut totals = Vec::with_capacity(counter::COUNT as usize);
    for index in 0..counter::COUNT {
        let per_cpu = counters
            .get(&index, 0)
            .map_err(|e| map_error("reading map counters", e))?;
        totals.push(per_cpu.iter().fold(0u64, |sum, &v| sum.saturating_add(v)));
    }
    Ok(XdpCounters::from_totals(&totals))
}

/// Puts the AF_XDP socket `fd` (bound to `queue` of `interface`) in the
/// socket map of the flowgate program attached to `interface` now,
/// whoever attached it: what a process taking over does with the program
/// the old one handed over, so that what that program sends up reaches the
/// new workers at once, before the new program replaces it.
pub fn set_attached_socket(
    interface: &str,
    queue: u32,
    fd: std::os::fd::RawFd,
) -> Result<(), XdpError> {
    let (_, data) = attached_maps(interface)?
        .into_iter()
        .find(|(name, _)| name == map::SOCKETS)
        .ok_or_else(|| XdpError::Other(format!("the program on {interface} has no socket map")))?;
    let mut sockets: XskMap<MapData> = XskMap::try_from(Map::XskMap(data))
        .map_err(|e| map_error(&format!("opening map {}", map::SOCKETS), e))?;
    sockets.set(queue, fd, 0).map_err(|e| {
        map_error(
            &format!("putting the socket of queue {queue} in the XSKMAP"),
            e,
        )
    })
}

/// The maps, by name, of the flowgate XDP program attached to `interface`.
fn attached_maps(interface: &str) -> Result<Vec<(String, MapData)>, XdpError> {
    let link = neigh::link_info(interface).map_err(|e| match e {
        NeighError::NoSuchInterface(name) => XdpError::NoSuchInterface(name),
        other => XdpError::Other(format!("reading {interface}: {other}")),
    })?;
    let id = link
        .xdp
        .native
        .or(link.xdp.generic)
        .ok_or_else(|| XdpError::Other(format!("{interface} has no XDP program attached")))?;
    let program = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .ok_or_else(|| XdpError::Other(format!("XDP program {id} is gone")))?;
    if program.name_as_str() != Some(PROGRAM) {
        return Err(XdpError::Other(format!(
            "the XDP program on {interface} is {:?}, not flowgate's",
            program.name_as_str().unwrap_or("unnamed")
        )));
    }
    let map_ids = program
        .map_ids()
        .map_err(|e| XdpError::Other(format!("listing the maps of XDP program {id}: {e}")))?
        .unwrap_or_default();
    let mut maps = Vec::with_capacity(map_ids.len());
    for map_id in map_ids {
        let data =
            MapData::from_id(map_id).map_err(|e| map_error(&format!("opening map {map_id}"), e))?;
        let name = data
            .info()
            .map_err(|e| map_error(&format!("reading map {map_id}"), e))?
            .name_as_str()
            .unwrap_or_default()
            .to_owned();
        maps.push((name, data));
    }
    Ok(maps)
}

/// The keys of the hash map `data` (called `name`), `decode`d.
fn read<K, B>(
    data: MapData,
    name: &'static str,
    decode: fn(&B) -> K,
) -> Result<HashSet<K>, XdpError>
where
    K: Eq + std::hash::Hash,
    B: Pod,
{
    let map: BpfHashMap<MapData, B, u8> = BpfHashMap::try_from(Map::HashMap(data))
        .map_err(|e| map_error(&format!("opening map {name}"), e))?;
    read_keys(&map, name, decode)
}
