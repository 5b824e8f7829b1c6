//! The compiled XDP program and what userspace must agree on with it: map
//! names, the key layout and the counter indices
//! (dataplane/bpf/flowgate_xdp.c; change both together).

use aya::programs::{ProgramError, Xdp};
use aya::Ebpf;
use nix::libc::EAGAIN;

use super::XdpError;

/// The object file build.rs compiled from dataplane/bpf/flowgate_xdp.c.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowgate_xdp.o"));

/// The program's name (its function name in the C source).
pub(crate) const PROGRAM: &str = "flowgate_xdp";

/// How many times a load the verifier gave up on with `EAGAIN` is tried.
const LOAD_ATTEMPTS: usize = 5;

/// Loads the program of `ebpf` into the kernel.
///
/// The verifier returns `EAGAIN` when a signal reaches the loading thread
/// part way through (it checks for pending signals as it walks the program),
/// so such a load is tried again, as libbpf does; any other refusal is final.
pub(crate) fn load_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| XdpError::Other(format!("the XDP object has no program {PROGRAM}")))?
        .try_into()
        .map_err(|e: ProgramError| XdpError::from_program("loading the XDP program", &e))?;
    let mut attempt = 1;
    loop {
        match program.load() {
            Ok(()) => return Ok(program),
            Err(ProgramError::LoadError { ref io_error, .. })
                if io_error.raw_os_error() == Some(EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(e) => return Err(XdpError::from_program("loading the XDP program", &e)),
        }
    }
}

/// Map names.
pub(crate) mod map {
    /// AF_XDP sockets by receive queue (XSKMAP).
    pub(crate) const SOCKETS: &str = "xsks";
    /// Service keys: (protocol, VIP, port), valued by
    /// [`super::service_value`].
    pub(crate) const SERVICES: &str = "services";
    /// The prefilter of `services`' addresses (bpf/flowgate_xdp.c,
    /// `xdp::prefilter`).
    pub(crate) const VIP_FILTER: &str = "vip_filter";
    /// The prefilter of `reply_sources`' addresses.
    pub(crate) const BACKEND_FILTER: &str = "backend_filter";
    /// Backend keys: (protocol, backend address, backend port).
    pub(crate) const REPLY_SOURCES: &str = "reply_sources";
    /// VIP addresses alone, for fragments.
    pub(crate) const VIP_ADDRESSES: &str = "vip_addrs";
    /// The box's own addresses: replies addressed to them pass.
    pub(crate) const LOCAL_ADDRESSES: &str = "local_addrs";
    /// One `struct config`.
    pub(crate) const CONFIG: &str = "config";
    /// Per-CPU counters, indexed by [`super::counter`].
    pub(crate) const COUNTERS: &str = "counters";
    /// The fast path's connection cache (BPF_F_MMAPABLE array).
    pub(crate) const FAST_FLOWS: &str = "fast_flows";
    /// One `struct fast_config`.
    pub(crate) const FAST_CONFIG: &str = "fast_config";
    /// Egress interfaces by port index (DEVMAP).
    pub(crate) const FAST_TX_PORTS: &str = "fast_tx_ports";
    /// Announced VIP addresses: ARP and neighbour solicitations for them
    /// are answered (bpf/flowgate_announce.h).
    pub(crate) const ANNOUNCED_ADDRESSES: &str = "announce_addrs";
    /// One `struct announce_config`: the MAC the answers carry.
    pub(crate) const ANNOUNCE_MAC: &str = "announce_mac";
    /// One `struct ingress_config`: the interface's MAC and VLAN
    /// setting, for the ingress checks (bpf/flowgate_ingress.h).
    pub(crate) const INGRESS_CONFIG: &str = "ingress_config";

    /// The SYN proxy's client connections let through (LRU hash,
    /// bpf/flowgate_synproxy.h).
    pub(crate) const SYN_PROXY_CONNECTIONS: &str = "synproxy_conns";
}

/// A `services` value: always `SERVICE_OWNED`, and `SERVICE_SYNPROXY`
/// while the service has an entry in `synproxy_services` (the program runs
/// the SYN proxy's check only then).
pub(crate) fn service_value(syn_proxied: bool) -> u8 {
    const SERVICE_OWNED: u8 = 0x1;
    const SERVICE_SYNPROXY: u8 = 0x2;
    if syn_proxied {
        SERVICE_OWNED | SERVICE_SYNPROXY
    } else {
        SERVICE_OWNED
    }
}

/// Counter indices (`enum counter` in the C source).
pub(crate) mod counter {
    pub(crate) const REDIRECTED_VIP: u32 = 0;
    pub(crate) const REDIRECTED_VIP_FRAGMENT: u32 = 1;
    pub(crate) const REDIRECTED_REPLY: u32 = 2;
    pub(crate) const REDIRECTED_ALL: u32 = 3;
    pub(crate) const DROPPED_NO_SOCKET: u32 = 4;
    pub(crate) const PASSED_NO_SOCKET: u32 = 5;
    pub(crate) const PASSED_NOT_IP: u32 = 6;
    pub(crate) const PASSED_NOT_TCP_UDP: u32 = 7;
    pub(crate) const PASSED_NOT_OWNED: u32 = 8;
    pub(crate) const PASSED_FRAGMENT: u32 = 9;
    pub(crate) const PASSED_UNPARSED: u32 = 10;
    pub(crate) const PASSED_LOCAL: u32 = 11;
    pub(crate) const FAST_TX: u32 = 12;
    pub(crate) const FAST_REDIRECT: u32 = 13;
    pub(crate) const FAST_MISS: u32 = 14;
    pub(crate) const FAST_HANDED_UP: u32 = 15;
    pub(crate) const FAST_NO_EGRESS: u32 = 16;
    pub(crate) const ANSWERED_ARP: u32 = 17;
    pub(crate) const ANSWERED_NS: u32 = 18;
    pub(crate) const DROPPED_OTHER_HOST: u32 = 19;
    pub(crate) const DROPPED_BROADCAST: u32 = 20;
    pub(crate) const DROPPED_MULTICAST: u32 = 21;
    pub(crate) const DROPPED_BAD_IP_CHECKSUM: u32 = 22;
    pub(crate) const DROPPED_VLAN_NOT_CONFIGURED: u32 = 23;
    pub(crate) const FAST_BYTES: u32 = 24;
    pub(crate) const FAST_UP_SYN: u32 = 25;
    pub(crate) const FAST_UP_FIN_RST: u32 = 26;
    pub(crate) const FAST_UP_OPTIONS: u32 = 27;
    pub(crate) const FAST_UP_TTL: u32 = 28;
    pub(crate) const FAST_UP_LENGTH: u32 = 29;
    pub(crate) const FAST_UP_CLIENT_MAC: u32 = 30;
    pub(crate) const FAST_UP_FRAGMENT: u32 = 31;
    pub(crate) const FAST_UP_ICMP: u32 = 32;
    pub(crate) const FAST_UP_SYNPROXY: u32 = 33;
    /// How many there are.
    pub(crate) const COUNT: u32 = 34;
}

/// Size of `struct traffic_key`: 16 address bytes, the port in network
/// byte order, the protocol, one zero pad byte.
pub(crate) const KEY_LEN: usize = 20;

/// The map key of (protocol, address, port), as `struct traffic_key`.
pub(crate) fn traffic_key(protocol: u8, address: &[u8; 16], port: u16) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    let (addr, rest) = key.split_at_mut(16);
    addr.copy_from_slice(address);
    let [hi, lo] = port.to_be_bytes();
    if let [p0, p1, proto, _pad] = rest {
        *p0 = hi;
        *p1 = lo;
        *proto = protocol;
    }
    key
}

/// (protocol, address, port) of a `struct traffic_key`: the inverse of
/// [`traffic_key`].
pub(crate) fn traffic_key_parts(key: &[u8; KEY_LEN]) -> (u8, [u8; 16], u16) {
    let mut address = [0u8; 16];
    let (addr, rest) = key.split_at(16);
    address.copy_from_slice(addr);
    match rest {
        [p0, p1, protocol, _pad] => (*protocol, address, u16::from_be_bytes([*p0, *p1])),
        _ => (0, address, 0),
    }
}

/// Bytes of one `struct ingress_config` (bpf/flowgate_ingress.h).
pub(crate) const INGRESS_CONFIG_LEN: usize = 8 + 8 * crate::table::vlans::VLAN_ID_WORDS;

/// The `struct ingress_config` of an interface whose MAC is `mac` (all
/// zeros: no MAC check) and whose VLAN setting is `vlan`: the MAC, whether
/// untagged frames are refused, the accepted ids' bitmap (native-endian
/// words, as the program reads them).
pub(crate) fn ingress_config_value(
    mac: [u8; 6],
    vlan: &crate::table::PortVlan,
) -> [u8; INGRESS_CONFIG_LEN] {
    let mut value = [0u8; INGRESS_CONFIG_LEN];
    value[..6].copy_from_slice(&mac);
    value[6] = u8::from(!vlan.untagged());
    for (chunk, word) in value[8..].chunks_exact_mut(8).zip(vlan.accepted_bits()) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::v4_mapped;

    #[test]
    fn the_key_matches_the_c_struct_layout() {
        let key = traffic_key(17, &v4_mapped([198, 18, 100, 10]), 53);
        assert_eq!(
            key,
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 100, 10, // address
                0, 53, // port, network byte order
                17, 0, // protocol, pad
            ]
        );
        assert_eq!(
            traffic_key_parts(&key),
            (17, v4_mapped([198, 18, 100, 10]), 53)
        );
    }

    /// The C source's `enum counter`, as (name, value) pairs.
    fn c_counters() -> Vec<(String, u32)> {
        let source = include_str!("../../bpf/flowgate_xdp.c");
        let body = source
            .split("enum counter {")
            .nth(1)
            .and_then(|rest| rest.split("};").next())
            .unwrap();
        body.lines()
            .filter_map(|line| {
                let (name, value) = line.trim().trim_end_matches(',').split_once(" = ")?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn counter_indices_match_the_c_source() {
        let rust = [
            ("REDIRECTED_VIP", counter::REDIRECTED_VIP),
            ("REDIRECTED_VIP_FRAGMENT", counter::REDIRECTED_VIP_FRAGMENT),
            ("REDIRECTED_REPLY", counter::REDIRECTED_REPLY),
            ("REDIRECTED_ALL", counter::REDIRECTED_ALL),
            ("DROPPED_NO_SOCKET", counter::DROPPED_NO_SOCKET),
            ("PASSED_NO_SOCKET", counter::PASSED_NO_SOCKET),
            ("PASSED_NOT_IP", counter::PASSED_NOT_IP),
            ("PASSED_NOT_TCP_UDP", counter::PASSED_NOT_TCP_UDP),
            ("PASSED_NOT_OWNED", counter::PASSED_NOT_OWNED),
            ("PASSED_FRAGMENT", counter::PASSED_FRAGMENT),
            ("PASSED_UNPARSED", counter::PASSED_UNPARSED),
            ("PASSED_LOCAL", counter::PASSED_LOCAL),
            ("FAST_TX", counter::FAST_TX),
            ("FAST_REDIRECT", counter::FAST_REDIRECT),
            ("FAST_MISS", counter::FAST_MISS),
            ("FAST_HANDED_UP", counter::FAST_HANDED_UP),
            ("FAST_NO_EGRESS", counter::FAST_NO_EGRESS),
            ("ANSWERED_ARP", counter::ANSWERED_ARP),
            ("ANSWERED_NS", counter::ANSWERED_NS),
            ("DROPPED_OTHER_HOST", counter::DROPPED_OTHER_HOST),
            ("DROPPED_BROADCAST", counter::DROPPED_BROADCAST),
            ("DROPPED_MULTICAST", counter::DROPPED_MULTICAST),
            ("DROPPED_BAD_IP_CHECKSUM", counter::DROPPED_BAD_IP_CHECKSUM),
            (
                "DROPPED_VLAN_NOT_CONFIGURED",
                counter::DROPPED_VLAN_NOT_CONFIGURED,
            ),
            ("FAST_BYTES", counter::FAST_BYTES),
            ("FAST_UP_SYN", counter::FAST_UP_SYN),
            ("FAST_UP_FIN_RST", counter::FAST_UP_FIN_RST),
            ("FAST_UP_OPTIONS", counter::FAST_UP_OPTIONS),
            ("FAST_UP_TTL", counter::FAST_UP_TTL),
            ("FAST_UP_LENGTH", counter::FAST_UP_LENGTH),
            ("FAST_UP_CLIENT_MAC", counter::FAST_UP_CLIENT_MAC),
            ("FAST_UP_FRAGMENT", counter::FAST_UP_FRAGMENT),
            ("FAST_UP_ICMP", counter::FAST_UP_ICMP),
            ("FAST_UP_SYNPROXY", counter::FAST_UP_SYNPROXY),
            ("COUNTER_COUNT", counter::COUNT),
        ];
        let c = c_counters();
        assert_eq!(c.len(), rust.len(), "{c:?}");
        for (name, value) in rust {
            assert!(
                c.contains(&(name.to_string(), value)),
                "{name} = {value} not in {c:?}"
            );
        }
    }

    #[test]
    fn service_values_match_the_c_source() {
        let source = include_str!("../../bpf/flowgate_xdp.c");
        let define = |name: &str| -> u8 {
            source
                .lines()
                .find_map(|line| {
                    let mut w = line.split_whitespace();
                    (w.next()? == "#define" && w.next()? == name).then(|| w.next())?
                })
                .and_then(|v| u8::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .unwrap_or_else(|| panic!("no #define {name}"))
        };
        let owned = define("SERVICE_OWNED");
        let proxied = define("SERVICE_SYNPROXY");
        assert_eq!(service_value(false), owned);
        assert_eq!(service_value(true), owned | proxied);
        assert_eq!(owned & proxied, 0);
    }

    #[test]
    fn the_object_is_an_elf_file_for_bpf() {
        // ELF magic, 64-bit, and e_machine EM_BPF (247).
        assert_eq!(OBJECT.get(0..5), Some(&[0x7f, b'E', b'L', b'F', 2][..]));
        assert_eq!(OBJECT.get(18..20), Some(&247u16.to_le_bytes()[..]));
    }
}
