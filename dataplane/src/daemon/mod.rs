//! `flowgate run`: the gateway daemon.
pub mod error;
mod kernel_path;
pub mod worker_thread;

pub use error::{DaemonError, EXIT_CONFIG, EXIT_ENVIRONMENT, EXIT_RUNTIME};
pub use kernel_path::UnreachableKernelPath;
