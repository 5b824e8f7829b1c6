// SPDX-License-Identifier: Apache-2.0
//
// How many keys each hash map of flowgate's XDP program holds: the one
// place these numbers are written. flowgate_xdp.c sizes its maps with
// them, and build.rs reads them into Rust (`xdp::XdpCapacity::PROGRAM`),
// where the control side refuses rules that need more keys than a map
// holds, before anything is published or programmed.
//
// build.rs reads this file line by line: keep each limit a
// `#define FLOWGATE_MAX_... <decimal>` on a line of its own.

#ifndef FLOWGATE_LIMITS_H
#define FLOWGATE_LIMITS_H

// `services`: (protocol, VIP, port), one per service.
#define FLOWGATE_MAX_SERVICE_KEYS 131072

// `reply_sources`: (protocol, backend address, backend port), one per
// distinct backend of all services.
#define FLOWGATE_MAX_REPLY_SOURCES 262144

// `vip_addrs`: VIP addresses alone. At least FLOWGATE_MAX_SERVICE_KEYS, so
// rules that fit `services` always fit here (flowgate_xdp.c asserts it).
#define FLOWGATE_MAX_VIP_ADDRESSES 131072

// `local_addrs`: the box's own addresses (every interface's).
#define FLOWGATE_MAX_LOCAL_ADDRESSES 65536

// `announce_addrs`: VIP addresses the program answers ARP and neighbour
// solicitations for (services with `announce = "arp"`). Smaller than
// `vip_addrs`: a segment on which so many addresses are answered for is
// one no router's neighbour table holds anyway.
#define FLOWGATE_MAX_ANNOUNCED_ADDRESSES 65536

#endif
