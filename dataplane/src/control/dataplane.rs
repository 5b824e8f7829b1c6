//! What the control API needs from the running gateway.

use super::report::{FlowEntry, StatsReport, StatusReport};
use crate::rules::Config;

/// The running gateway as the control API sees it. The daemon implements
/// it over its workers; [`super::MemoryDataplane`] implements it in memory
/// for tests, benches and tools.
///
/// Calls come from the control server's connection threads. `apply` is
/// only ever called with the [`super::ControlState`] lock held, so applies
/// never overlap one another; the read calls may run beside them.
pub trait Dataplane: Send + Sync {
    /// Compiles `config` (already validated in full) into a snapshot built
    /// on the current one, publishes it, and returns its generation. On
    /// `Err` nothing may have changed: the old rules keep running, and the
    /// message (one line) is shown to the operator.
    fn apply(&self, config: &Config) -> Result<u64, String>;

    /// Version, generation, uptime, workers with their cores, interfaces
    /// with the modes they got.
    fn status(&self) -> StatusReport;

    /// Counters per service, backend and worker.
    fn stats(&self) -> StatsReport;

    /// Up to `limit` live connections, only those of `service` if given.
    fn flows(&self, service: Option<&str>, limit: usize) -> Vec<FlowEntry>;

    /// The generation of the snapshot published last. The default asks
    /// [`Dataplane::status`]; override it if that is costly.
    fn generation(&self) -> u64 {
        self.status().generation
    }
}
