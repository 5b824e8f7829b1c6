//! Rules from etcd: a fleet of gateways reading one store.
//!
//! - [`layout`]: where each part of the rules lives in etcd (key layout v1).
//! - [`value`]: what each key's value holds (value format 1) and how it
//!   becomes the model.
//! - [`mirror`]: the gateway's view of the rules in etcd, sans-IO: which
//!   value of each key runs, which keys are held back and why, and the
//!   whole config each revision gives.
//! - [`provenance`]: which etcd key and revision each part came from, so
//!   the one validator names them.

pub mod layout;
pub mod mirror;
pub mod provenance;
pub mod value;
