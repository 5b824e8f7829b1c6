//! What the prober checks: an address and port with a check definition.

use std::fmt;
use std::net::SocketAddr;

use super::check::Check;

/// One thing to probe. A target is its own key: two services that name the
/// same backend with the same check definition hand in equal targets, and
/// the prober probes it once. Collect targets into a set (or hand in
/// duplicates: [`Prober::set_targets`](super::Prober::set_targets) drops
/// them) to deduplicate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The backend's address and port.
    pub address: SocketAddr,
    /// How it is checked.
    pub check: Check,
}

impl Target {
    /// `address` checked by `check`.
    pub fn new(address: SocketAddr, check: Check) -> Target {
        Target { address, check }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.address, self.check.kind().name())
    }
}
