//! Rules from etcd: a fleet of gateways reading one store.
//!
//! - [`gateway`] (feature `etcd`, which `daemon` turns on): the source wired to the running
//!   gateway's control state.
//! - [`health`]: the health keys, the liveness of services whose health
//!   comes from etcd.
//! - [`layout`]: where each part of the rules lives in etcd (key layout v1).
//! - [`value`]: what each key's value holds (value format 1) and how it
//!   becomes the model.
//! - [`mirror`]: the gateway's view of the rules in etcd, sans-IO: which
//!   value of each key runs, which keys are held back and why, and the
//!   whole config each revision gives.
//! - [`saved`]: the last good state on disk.
//! - [`settings`]: how a gateway reaches etcd.
//! - [`source`] (feature `etcd`): the etcd client that loads, watches,
//!   reconnects and keeps the status key alive.
//! - [`store`] (feature `etcd`): the operator's side — changes checked
//!   as a gateway checks them and written in one compare-and-swap
//!   transaction; the fleet's statuses.
//! - [`status`]: each gateway's status key, and the fleet's listing.
//! - [`provenance`]: which etcd key and revision each part came from, so
//!   the one validator names them.

#[cfg(feature = "etcd")]
pub mod gateway;
pub mod health;
pub mod layout;
pub mod mirror;
pub mod provenance;
pub mod saved;
pub mod settings;
#[cfg(feature = "etcd")]
pub mod source;
pub mod status;
#[cfg(feature = "etcd")]
pub mod store;
pub mod value;
