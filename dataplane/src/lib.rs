//! flowgate's data plane.
//!
//! Data flows one way through these modules: [`wire`] knows packets and
//! nothing of rules; [`rules`] is the model operators write; [`table`]
//! compiles rules into immutable snapshots; [`flow`] tracks connections per
//! worker; [`pipeline`] joins them into a pure batch function; [`port`]
//! moves frames in and out; [`replay`] drives the pipeline over a pcap file.
//! [`route`] holds the lookup tables of routing by client (client classes,
//! distribution paths).
//! [`admission`] holds the limits a new flow is checked against.

pub mod admission;
pub mod control;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod fastpath;
pub mod flow;
pub mod handoff;
pub mod hash;
pub mod health;
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
pub mod table;
pub mod testnet;
pub mod wire;
pub mod worker;
pub mod xdp;
