//! Fan-out services in the snapshot: who receives a client's datagram, and
//! which service a backend's reply belongs to.
//!
//! A fan-out service (`scheduler = "fanout"`, UDP only) sends every
//! datagram to every backend that takes datagrams: weight > 0 (a draining
//! backend gets none: a fan-out datagram is a request of its own, with no
//! connection to finish), a known next hop, and alive by the service's
//! mode. Routing by client narrows the receivers as it narrows a
//! scheduler's candidates: the first step of the client's plan (its SET,
//! then its zones in order) with a receiver decides; a SET client with none
//! fails closed. Distribution paths and a canary choose one backend and are
//! refused on a fan-out service by the validator.
//!
//! Replies come back from the backends' addresses, to the client: the
//! [`FanoutIndex`] maps a backend's (protocol, address, port) to the
//! fan-out services it serves, so that the worker can find the client's
//! fan-out flow under the service's VIP.

use hashbrown::HashMap;

use super::{CompiledService, EndpointId, Mode, ServiceId, Snapshot};
use crate::route::ClientAddr;
use crate::rules::WhenAllDown;

/// A backend of a fan-out service: its service and endpoint.
pub type FanoutMember = (ServiceId, EndpointId);

/// The backends of fan-out services by (protocol, address, port), weight
/// 0 included (a draining backend's late replies still find their way).
#[derive(Clone, Debug, Default)]
pub struct FanoutIndex {
    by_source: HashMap<(u8, u128, u16), Vec<FanoutMember>>,
}

impl FanoutIndex {
    /// The index of `snapshot`'s fan-out services.
    pub(super) fn of(snapshot: &Snapshot) -> FanoutIndex {
        let mut index = FanoutIndex::default();
        let fanout = snapshot
            .services()
            .filter(|(_, s)| s.scheduler().fanout().is_some());
        for (service, compiled) in fanout {
            for &id in compiled.endpoints() {
                let Some(e) = snapshot.endpoint(id) else {
                    continue;
                };
                let key = (compiled.protocol(), u128::from_be_bytes(e.address), e.port);
                index.by_source.entry(key).or_default().push((service, id));
            }
        }
        index
    }

    /// Whether no fan-out service exists: then nothing else here is
    /// looked at.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    /// The fan-out services (and endpoints) whose backend is at `address`
    /// and `port` for `protocol`; empty if none.
    #[inline]
    pub fn members(&self, protocol: u8, address: &[u8; 16], port: u16) -> &[FanoutMember] {
        let key = (protocol, u128::from_be_bytes(*address), port);
        self.by_source.get(&key).map_or(&[], Vec::as_slice)
    }
}

/// The endpoints a client's datagram of a fan-out service may go to, and
/// whether their liveness is looked at.
#[derive(Clone, Copy, Debug)]
pub struct FanoutTargets<'a> {
    list: &'a [EndpointId],
    health: bool,
}

impl<'a> FanoutTargets<'a> {
    /// The candidate endpoints, in identity order.
    #[inline]
    pub fn list(&self) -> &'a [EndpointId] {
        self.list
    }

    /// Whether endpoint `id` takes this datagram: weight > 0, a next hop,
    /// and alive (when health counts).
    #[inline]
    pub fn takes(&self, snapshot: &Snapshot, id: EndpointId, now_ns: u64) -> bool {
        snapshot
            .endpoint(id)
            .is_some_and(|e| e.weight > 0 && e.next_hop_mac.is_some())
            && (!self.health || snapshot.liveness().is_alive(id, now_ns))
    }

    /// The position in [`list`](Self::list) of the first endpoint that
    /// takes the datagram.
    #[inline]
    pub fn first(&self, snapshot: &Snapshot, now_ns: u64) -> Option<usize> {
        self.list
            .iter()
            .position(|&id| self.takes(snapshot, id, now_ns))
    }
}

/// Why a fan-out datagram has no receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoReceiver {
    /// No backend alive and the service fails closed, or the client's SET
    /// has no backend alive (isolation fails closed).
    AllDown,
    /// No backend takes datagrams at all (no weight, or no next hop).
    None,
}

impl Snapshot {
    /// The fan-out services' backends by source, for replies.
    #[inline]
    pub fn fanout_index(&self) -> &FanoutIndex {
        &self.fanout
    }

    /// Who receives a datagram of `client` to fan-out service `service`
    /// at `now_ns` (see the module documentation).
    pub fn fanout_targets<'a>(
        &self,
        service: &'a CompiledService,
        client: ClientAddr,
        now_ns: u64,
    ) -> Result<FanoutTargets<'a>, NoReceiver> {
        let healthy = service.mode() == Mode::Healthy;
        if let Some(routes) = service.routes() {
            let (_, profile) = self.client_routing().classify(client);
            if let Some(plan) = routes.plan(profile).filter(|p| !p.plain) {
                for step in plan.stable.iter() {
                    let Some(subset) = routes.subset(step.subset) else {
                        continue;
                    };
                    let targets = FanoutTargets {
                        list: subset.members(),
                        health: healthy,
                    };
                    if targets.first(self, now_ns).is_some() {
                        return Ok(targets);
                    }
                }
                if plan.restricted {
                    return Err(NoReceiver::AllDown);
                }
            }
        }
        let whole = |health| FanoutTargets {
            list: service.weighted(),
            health,
        };
        match service.mode() {
            Mode::AllDownClosed => Err(NoReceiver::AllDown),
            Mode::Panic | Mode::AllDownOpen => Ok(whole(false)),
            Mode::Healthy => {
                let alive = whole(true);
                if alive.first(self, now_ns).is_some() {
                    return Ok(alive);
                }
                // Every backend died since the build.
                match service.failover().when_all_down {
                    WhenAllDown::Open => Ok(whole(false)),
                    WhenAllDown::Closed => Err(NoReceiver::AllDown),
                }
            }
        }
        .and_then(|targets| match targets.first(self, now_ns) {
            Some(_) => Ok(targets),
            None => Err(NoReceiver::None),
        })
    }
}
