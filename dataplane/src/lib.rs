//! flowgate's data plane.
//!
//! Data flows one way through these modules: [`wire`] knows packets and
//! nothing of rules; [`rules`] is the model operators write; [`table`]
//! compiles rules into immutable snapshots; [`flow`] tracks connections per
//! worker; [`pipeline`] joins them into a pure batch function; [`port`]
//! moves frames in and out; [`replay`] drives the pipeline over a pcap file.
//! [`route`] holds the lookup tables of routing by client (client classes,
//! distribution paths). [`liveness`] is every endpoint's health and
//! heartbeat deadline, written by the control side and read by the workers.
//! [`admission`] holds the limits a new flow is checked against.
//!
//! # Features
//!
//! - `daemon` (default): the live gateway — AF_XDP sockets, the XDP
//!   program and its loader, netlink, the metrics endpoint's server, the
//!   daemon. Without it the crate is the pure data path.
//! - `testkit`: what only tests, benches and fixtures use — the frame
//!   builder (`wire::builder`), `wire::frame_checksums_ok`, network
//!   namespaces (`testnet`), the in-memory control data plane
//!   (`control::MemoryDataplane`), XDP maps smaller than the program's
//!   (`xdp::XdpFilter::attach_with_capacity`). The `flowgate` binary is
//!   built without it; the crate's own unit tests have it through
//!   `cfg(test)`.

pub mod admission;
pub mod announce;
pub mod capture;
#[cfg(feature = "daemon")]
pub mod cli;
pub mod control;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod fastpath;
pub mod fleet;
pub mod flow;
pub mod handoff;
pub mod hash;
pub mod health;
pub mod liveness;
#[cfg(feature = "daemon")]
pub mod logging;
pub mod metrics;
#[cfg(feature = "daemon")]
pub mod neigh;
pub mod pipeline;
pub mod port;
pub mod replay;
pub mod route;
pub mod rules;
pub mod synproxy;
pub mod table;
#[cfg(any(test, feature = "testkit"))]
pub mod testnet;
pub mod wire;
pub mod worker;
pub mod xdp;
