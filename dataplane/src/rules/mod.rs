//! The rule model operators write: services, their backends and schedulers,
//! plus the gateway settings and static neighbours. Loaded from TOML and
//! validated in full before anything is used: an invalid config yields an
//! error naming the file, line and problem, and nothing of it is applied.

mod model;

pub use model::*;
