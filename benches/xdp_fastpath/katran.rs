//! Katran's XDP balancer (facebookincubator/katran, `balancer.bpf.o`),
//! loaded and configured the way Katran's own tester and its user-space
//! library do, to be measured beside flowgate's XDP program in the same
//! run. The object is built outside this repository by
//! scripts/katran-build.sh; flowgate carries none of Katran's code.
//!
//! Loading goes through `bpftool prog load ... pinmaps` (libbpf: Katran's
//! maps include an array of maps, which aya does not create), the pins
//! are opened and removed at once, and the maps are filled over `bpf(2)`:
//! one VIP (`vip_map`), one real (`reals`), the VIP's consistent-hash ring
//! pointing at it (`ch_rings`), the default router's MAC (`ctl_array[0]`),
//! and a connection table (`lru_mapping[cpu]`) as Katran makes one per
//! forwarding core; here one LRU shared by every CPU, so that a flow
//! remembered on one core is found on the other (the bench thread may
//! move).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_LOOKUP_ELEM: i64 = 1;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_DELETE_ELEM: i64 = 3;
const BPF_OBJ_GET: i64 = 7;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// Katran's ring size per VIP (balancer_consts.h `RING_SIZE`).
const RING_SIZE: u32 = 65_537;
/// `lru_mapping`'s size (balancer_consts.h `MAX_SUPPORTED_CPUS`).
const MAX_SUPPORTED_CPUS: u32 = 128;
/// `struct flow_key`: src[16], dst[16], ports, proto, padded to 40.
const FLOW_KEY_LEN: usize = 40;
/// `struct real_pos_lru`: pos, atime (u64-aligned).
const REAL_POS_LRU_LEN: u32 = 16;
/// The real's id: Katran's ids start at 1 (0 means an empty ring slot).
const REAL_ID: u32 = 1;

/// Katran's balancer, loaded and configured with one TCP VIP.
pub struct Katran {
    program: OwnedFd,
    lru: OwnedFd,
    _maps: Vec<OwnedFd>,
}

/// The VIP and the real Katran balances it to.
pub struct KatranSetup {
    /// The VIP's address.
    pub vip: [u8; 4],
    /// The VIP's TCP port.
    pub port: u16,
    /// The one real's address.
    pub real: [u8; 4],
    /// The default router's MAC, the encapsulated packets' destination.
    pub router_mac: [u8; 6],
    /// Entries of the connection table.
    pub lru_entries: u32,
}

/// Removes the pins of a load, also when it fails half way.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Katran {
    /// Loads `object` and configures it as `setup` says.
    pub fn load(object: &Path, setup: &KatranSetup) -> Result<Katran, String> {
        let pins = Pins(PathBuf::from(format!(
            "/sys/fs/bpf/flowgate-bench-katran-{}",
            std::process::id()
        )));
        let _ = std::fs::remove_dir_all(&pins.0);
        std::fs::create_dir_all(&pins.0)
            .map_err(|e| format!("creating {}: {e}", pins.0.display()))?;
        let prog_pin = pins.0.join("prog");
        let maps_pin = pins.0.join("maps");
        let out = Command::new("bpftool")
            .arg("prog")
            .arg("load")
            .arg(object)
            .arg(&prog_pin)
            .args(["type", "xdp", "pinmaps"])
            .arg(&maps_pin)
            .output()
            .map_err(|e| format!("running bpftool to load Katran's balancer: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "bpftool could not load {}: {}",
                object.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let program = obj_get(&prog_pin).map_err(|e| format!("opening the program: {e}"))?;
        let map = |name: &str| {
            obj_get(&maps_pin.join(name)).map_err(|e| format!("opening Katran's map {name}: {e}"))
        };
        let vip_map = map("vip_map")?;
        let reals = map("reals")?;
        let ch_rings = map("ch_rings")?;
        let ctl_array = map("ctl_array")?;
        let lru_mapping = map("lru_mapping")?;
        drop(pins);

        fn fail(what: &'static str) -> impl Fn(io::Error) -> String {
            move |e| format!("configuring Katran: {what}: {e}")
        }
        // struct vip_definition { vip[16]; port (network order); proto }
        // -> struct vip_meta { flags = 0; vip_num = 0 }.
        let mut vip = [0u8; 20];
        vip[..4].copy_from_slice(&setup.vip);
        vip[16..18].copy_from_slice(&setup.port.to_be_bytes());
        vip[18] = 6;
        update(&vip_map, &vip, &[0u8; 8]).map_err(fail("vip_map"))?;
        // struct real_definition { dst[16]; flags = 0 }.
        let mut real = [0u8; 20];
        real[..4].copy_from_slice(&setup.real);
        update(&reals, &REAL_ID.to_ne_bytes(), &real).map_err(fail("reals"))?;
        // VIP 0's ring: every position on the one real.
        for position in 0..RING_SIZE {
            update(&ch_rings, &position.to_ne_bytes(), &REAL_ID.to_ne_bytes())
                .map_err(fail("ch_rings"))?;
        }
        let mut ctl = [0u8; 8];
        ctl[..6].copy_from_slice(&setup.router_mac);
        update(&ctl_array, &0u32.to_ne_bytes(), &ctl).map_err(fail("ctl_array"))?;
        let lru = create_lru(setup.lru_entries).map_err(fail("creating the LRU"))?;
        let lru_fd = u32::try_from(lru.as_raw_fd()).unwrap_or(u32::MAX);
        for cpu in 0..MAX_SUPPORTED_CPUS {
            update(&lru_mapping, &cpu.to_ne_bytes(), &lru_fd.to_ne_bytes())
                .map_err(fail("lru_mapping"))?;
        }
        Ok(Katran {
            program,
            lru,
            _maps: vec![vip_map, reals, ch_rings, ctl_array, lru_mapping],
        })
    }

    /// The program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.program.as_fd()
    }

    /// Removes the connection of each frame (Ethernet, IPv4 without
    /// options, TCP) from the connection table; how many were there.
    pub fn forget(&self, frames: &[Vec<u8>]) -> usize {
        frames
            .iter()
            .filter(|f| delete(&self.lru, &flow_key(f)).is_ok())
            .count()
    }

    /// How many of the frames' connections the connection table holds.
    pub fn remembered(&self, frames: &[Vec<u8>]) -> usize {
        frames
            .iter()
            .filter(|f| lookup(&self.lru, &flow_key(f)).is_ok())
            .count()
    }
}

/// Katran's `struct flow_key` of an IPv4 TCP frame: source and destination
/// addresses, ports as on the wire, protocol.
fn flow_key(frame: &[u8]) -> [u8; FLOW_KEY_LEN] {
    let mut key = [0u8; FLOW_KEY_LEN];
    key[..4].copy_from_slice(&frame[26..30]);
    key[16..20].copy_from_slice(&frame[30..34]);
    key[32..36].copy_from_slice(&frame[34..38]);
    key[36] = frame[23];
    key
}

/// `bpf(command, attr, size_of(attr))`.
fn bpf<T>(command: i64, attr: &mut T) -> io::Result<i64> {
    // SAFETY: every caller passes a live `repr(C)` block laid out as the
    // kernel's `union bpf_attr` for `command`, its unused fields zero; the
    // pointers in it point at buffers alive for the call, of the sizes the
    // map or path needs.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: i64) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("a descriptor past i32"))?;
    // SAFETY: the kernel just returned this new descriptor; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..ObjAttr::default()
    };
    owned(bpf(BPF_OBJ_GET, &mut attr)?)
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX),
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

fn lookup(map: &OwnedFd, key: &[u8]) -> io::Result<()> {
    let mut value = [0u8; REAL_POS_LRU_LEN as usize];
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX),
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(|_| ())
}

fn delete(map: &OwnedFd, key: &[u8]) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX),
        key: key.as_ptr() as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| ())
}

#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// A connection table as Katran's library makes one per forwarding core
/// (`KatranLb::createLruMap`): an LRU hash of flow keys to real positions.
fn create_lru(entries: u32) -> io::Result<OwnedFd> {
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"katran_lru");
    let mut attr = CreateAttr {
        map_type: BPF_MAP_TYPE_LRU_HASH,
        key_size: FLOW_KEY_LEN as u32,
        value_size: REAL_POS_LRU_LEN,
        max_entries: entries,
        map_name: name,
        ..CreateAttr::default()
    };
    owned(bpf(BPF_MAP_CREATE, &mut attr)?)
}
