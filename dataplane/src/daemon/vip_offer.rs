//! `announce = "bgp"` in the daemon: the host routes of the VIPs the
//! gateway offers its BGP daemon, kept equal to [`offered_vips`] of the
//! running snapshot and the backends' liveness.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::announce::bgp::offered_vips;
use crate::announce::VipRoutes;
use crate::table::Snapshot;

/// The device the routes are on.
pub const VIP_DEVICE: &str = "flowgate-vips";

/// How long after a failure the device is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The offer: the device (made when a `bgp` VIP first appears) and the
/// drain flag (the control state's: `flowgatectl fleet drain` sets it,
/// `fleet undrain` clears it).
pub struct VipOffer {
    routes: Option<VipRoutes>,
    drained: Arc<AtomicBool>,
    last_failure: Option<Instant>,
}

impl VipOffer {
    /// No device yet; `drained` is the drain flag.
    pub fn new(drained: Arc<AtomicBool>) -> VipOffer {
        VipOffer {
            routes: None,
            drained,
            last_failure: None,
        }
    }

    /// Brings the routes to what `snapshot` offers now (cheap when nothing
    /// changed: one pass over the services, no syscall).
    pub fn follow(&mut self, snapshot: &Snapshot) {
        if self.last_failure.is_some_and(|at| at.elapsed() < RETRY) {
            return;
        }
        let drained = self.drained.load(Ordering::Relaxed);
        let wanted = offered_vips(snapshot, snapshot.liveness().now_ns(), drained);
        let routes = match &mut self.routes {
            Some(routes) => routes,
            None if wanted.is_empty() => return,
            None => match VipRoutes::open(VIP_DEVICE) {
                Ok(routes) => {
                    tracing::info!(
                        device = VIP_DEVICE,
                        "device for the VIPs offered by BGP made"
                    );
                    self.routes.insert(routes)
                }
                Err(e) => {
                    tracing::error!(
                        device = VIP_DEVICE,
                        "cannot make the device for the VIPs offered by BGP: {e}; retrying"
                    );
                    self.last_failure = Some(Instant::now());
                    return;
                }
            },
        };
        if routes.installed() == &wanted {
            return;
        }
        let before: BTreeSet<IpAddr> = routes.installed().clone();
        match routes.set(&wanted) {
            Ok(()) => {
                let withdrawn: Vec<&IpAddr> = before.difference(&wanted).collect();
                let offered: Vec<&IpAddr> = wanted.difference(&before).collect();
                tracing::info!(
                    ?offered,
                    ?withdrawn,
                    drained,
                    "VIPs offered to the BGP daemon changed"
                );
                self.last_failure = None;
            }
            Err(e) => {
                tracing::error!("changing the routes of the VIPs offered by BGP: {e}; retrying");
                self.last_failure = Some(Instant::now());
            }
        }
    }

    /// Withdraws every VIP: the device goes, and its routes with it.
    pub fn withdraw_all(&mut self) {
        if let Some(routes) = self.routes.take() {
            tracing::info!(withdrawn = ?routes.installed(), "VIPs offered to the BGP daemon withdrawn");
        }
    }
}
