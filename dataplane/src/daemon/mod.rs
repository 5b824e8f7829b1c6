//! `flowgate run`: the gateway daemon.
pub mod error;
pub mod worker_thread;

pub use error::{DaemonError, EXIT_CONFIG, EXIT_ENVIRONMENT, EXIT_RUNTIME};
