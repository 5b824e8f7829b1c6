//! The rule model operators write: services, their backends and schedulers,
//! plus the gateway settings and static neighbours. Loaded from TOML and
//! validated in full before anything is used: an invalid config yields an
//! error naming the file, line and problem, and nothing of it is applied.
//!
//! [`load_file`] and [`load_str`] are the way in; docs/config.md describes
//! every key. Reading goes in two steps: raw structs take the TOML shape
//! (unknown keys and wrong types stop there), then validation checks every
//! value, collects all problems, and builds a [`Config`] only if there are
//! none. [`ConfigError`] lists the problems as `FILE:LINE:COL: message`.

mod check;
mod error;
mod load;
mod mac;
mod model;
mod prime;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

pub use check::{check, CheckError};
pub use error::{ConfigError, ConfigProblem};
pub use load::{load_file, load_str};
pub use mac::{format_mac, is_unicast_mac, parse_mac};
pub use model::*;
pub use prime::{is_prime, next_prime, prev_prime};
