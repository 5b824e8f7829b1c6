//! Rules from etcd: a fleet of gateways reading one store.
//!
//! - [`layout`]: where each part of the rules lives in etcd (key layout v1).
//! - [`value`]: what each key's value holds (value format 1) and how it
//!   becomes the model.
//! - [`provenance`]: which etcd key and revision each part came from, so
//!   the one validator names them.

pub mod layout;
pub mod provenance;
pub mod value;
