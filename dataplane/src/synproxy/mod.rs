//! The SYN proxy (`syn_proxy` on a TCP service): SYNs to the VIP are
//! answered with SYN cookies by the XDP program (bpf/flowgate_synproxy.h),
//! and a connection reaches a worker and a backend only after the
//! client's valid ACK; from then on its sequence numbers are translated
//! for its life, since the client got the gateway's initial sequence
//! number (the cookie) and the backend picks its own.
//!
//! - [`mode`]: the setting (`off`, `on`, `auto` above a SYN rate).
//! - [`handshake`]: what the XDP program tells a worker through the
//!   cookie-valid ACK (its mark, and the client's MSS, window scale and
//!   SACK carried in the timestamp echo).
//! - [`seq`]: the translation of a proxied connection's sequence and
//!   acknowledgement numbers, SACK blocks and timestamps.
//! - [`proxy`]: the worker's half: the backend handshake a cookie-valid
//!   ACK opens, and what a proxied connection keeps beside its record.
//! - `xdp` (with `daemon`): the program's maps and counters as userspace
//!   sees them.

mod counters;
pub mod handshake;
pub mod mode;
pub mod proxy;
pub mod seq;
#[cfg(feature = "daemon")]
pub(crate) mod xdp;

pub use counters::SynProxyCounters;
pub use handshake::{CookieAck, HandshakeOptions};
pub use mode::SynProxy;
pub use proxy::ProxiedConnection;
pub use seq::SeqOffset;
