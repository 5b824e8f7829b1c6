//! The rule model operators write: services, their backends and schedulers,
//! plus the gateway settings, static neighbours and routing by client, and
//! the one validator every source of rules goes through. [`routing`] says
//! what the routing policies mean over the model (which backends a client
//! can be placed on, in what order), for the validator and the snapshot.
//!
//! A source turns what it reads into the model, a [`Config`], and a
//! [`Provenance`]: a map from places in the model ([`Place`]) to where each
//! part came from ([`Location`]): `FILE:LINE:COL` for a file, the request
//! and field for a control API edit, and (later) an etcd key and revision.
//! Reading does only what must happen before a model exists — TOML syntax
//! and shape, unknown keys, values that do not parse into the model's types
//! ([`parse`]) — and then [`validate`] checks every rule over the model
//! and locates each problem through the provenance. So every source gives
//! the same message for the same fault, and nothing of an invalid config
//! is ever used.
//!
//! [`load_file`] and [`load_str`] read a config file; docs/config.md
//! describes every key. [`ConfigError`] lists the problems, each a
//! [`ConfigProblem`] that displays as `LOCATION: message`.

mod decode;
mod error;
mod file;
mod health;
mod limits;
mod load;
mod mac;
mod model;
pub mod parse;
mod paths;
mod place;
mod prime;
mod provenance;
mod raw;
mod reader;
pub mod routing;
mod shared_list;
mod split;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, ConfigProblem};
pub use file::FileProvenance;
pub use health::{
    check_of, format_duration, heartbeat_ttl_of, settings_of, BackendHealth, HealthSettings,
    HealthSource, Secret, ServiceHealth, MAX_HEARTBEAT_TTL, MIN_HEARTBEAT_TTL,
};
pub use limits::FlowLimits;
pub use load::{
    load_file, load_file_with_etcd, load_str, load_str_with_provenance, MAX_CONFIG_BYTES,
};
pub use mac::{format_mac, is_unicast_mac, parse_mac};
pub use model::*;
pub use paths::{Paths, PathsIter};
pub use place::{Item, Place};
pub use prime::{is_prime, next_prime, prev_prime};
pub use provenance::{Location, Provenance, RequestLocation, Unrecorded};
pub use shared_list::{Iter as SharedListIter, SharedList};
pub(crate) use validate::path_is_valid;
pub use validate::{validate, ServiceEdit, ServiceIndex};

/// Checks a config built in code, which has no record of where its parts
/// came from: [`validate`] with [`Unrecorded`] provenance, so problems
/// carry their message alone.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    validate(config, &Unrecorded)
}
