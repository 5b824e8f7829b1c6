//! Why the daemon could not start or had to stop, and the exit code each
//! reason maps to.

use thiserror::Error;

use crate::rules::ConfigError;

/// Exit code: the config or the command line is wrong. Nothing was done;
/// fix the input.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: the machine is not ready — a missing or down interface,
/// missing privileges, a kernel without AF_XDP or XDP. Restarting will not
/// help until that is fixed.
pub const EXIT_ENVIRONMENT: u8 = 3;
/// Exit code: anything else that failed at run time.
pub const EXIT_RUNTIME: u8 = 1;

/// A reason the daemon stopped, printed as one line.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The config is invalid (every problem, one per line).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A command-line value is wrong.
    #[error("{0}")]
    Usage(String),
    /// The config is valid, but its rules need more keys than the XDP
    /// program's maps hold (one line per map, with both numbers).
    #[error("{0}")]
    TooLarge(String),
    /// The machine is not ready for the gateway.
    #[error("{0}")]
    Environment(String),
    /// Something else failed.
    #[error("{0}")]
    Runtime(String),
}

impl DaemonError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Usage(_) | DaemonError::TooLarge(_) => {
                EXIT_CONFIG
            }
            DaemonError::Environment(_) => EXIT_ENVIRONMENT,
            DaemonError::Runtime(_) => EXIT_RUNTIME,
        }
    }
}
