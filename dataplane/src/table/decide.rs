//! The routing decision for one new flow of a routed service: its class,
//! its plan, the canary draw, then the plan's steps in order until one
//! has an alive pick (see [`super::subset`]).
//!
//! One function serves the data path and `explain`: the data path passes
//! `()` as its [`RouteTrace`] (every hook compiles to nothing), `explain`
//! a recorder.

use super::subset::{RoutePlan, RouteStep, ServiceRoutes};
use super::{CompiledService, EndpointId, Mode, Snapshot};
use crate::route::ClientAddr;
use crate::rules::routing::{SetStage, Side, ZoneStep};

/// What the decision is asked about.
#[derive(Clone, Copy, Debug)]
pub struct RouteQuery {
    /// The client's address.
    pub client: ClientAddr,
    /// The flow hash (the canary draw, and the pick of `maglev`, `wrr`).
    pub hash: u64,
    /// The hash the scheduler picks by: the flow hash, or the source hash
    /// for `sh`.
    pub pick_hash: u64,
    /// Now, for liveness: ns after the liveness table's epoch.
    pub now_ns: u64,
}

/// Where the decision placed a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// On `endpoint`, by a step of the plan.
    Placed {
        /// The endpoint.
        endpoint: EndpointId,
        /// How the SET stage chose.
        set: SetStage,
        /// The side of the step.
        side: Side,
        /// The step's place in the zone order.
        zone: ZoneStep,
        /// The step's position in the plan (0: the first choice).
        step: u8,
        /// Whether the step's pick was down and the skip rule chose.
        skipped: bool,
        /// Whether the flow was drawn for the canary.
        canary: bool,
    },
    /// No candidate alive and the candidates leave out some backends (a
    /// SET): the flow fails closed rather than leave its SET.
    Closed {
        /// How the SET stage chose.
        set: SetStage,
    },
    /// No candidate alive, none left out: the service's own
    /// `when_all_down` decides.
    Unplaced,
    /// The client's plan is the whole service with no canary (a client
    /// with no class, or whose SET and zone the service does not use):
    /// the service's own scheduler decides, as if it did not route by
    /// client.
    Plain,
}

/// Hooks that see each stage of a decision; `()` sees nothing.
pub trait RouteTrace {
    /// The client's class (index among the configured classes) and
    /// profile.
    #[inline(always)]
    fn class(&mut self, _class: Option<u32>, _profile: u32) {}
    /// The canary: the flow's draw, and whether it goes to the canary
    /// (`Some(true)` by its prefix, `Some(false)` by the draw).
    #[inline(always)]
    fn canary(&mut self, _draw: u32, _drawn: Option<bool>) {}
    /// A step tried: its pick, and the endpoint it gave (`None`: nothing
    /// alive in it).
    #[inline(always)]
    fn step(&mut self, _step: &RouteStep, _pick: Option<EndpointId>, _chosen: Option<EndpointId>) {}
}

impl RouteTrace for () {}

impl Snapshot {
    /// The routing decision for a new flow of `service`, whose compiled
    /// routing is `routes` (see the module documentation).
    #[inline]
    pub fn route_new_flow(
        &self,
        service: &CompiledService,
        routes: &ServiceRoutes,
        query: &RouteQuery,
        trace: &mut impl RouteTrace,
    ) -> Routed {
        let (class, profile) = self.client_routing().classify(query.client);
        trace.class(class, profile);
        let Some(plan) = routes.plan(profile) else {
            return Routed::Unplaced;
        };
        if plan.plain {
            return Routed::Plain;
        }
        let (steps, canary) = canary_steps(plan, routes, query, trace);
        let healthy = service.mode() == Mode::Healthy;
        let liveness = self.liveness();
        let alive = |id: EndpointId| liveness.is_alive(id, query.now_ns);
        for (k, step) in steps.iter().enumerate() {
            let Some(subset) = routes.subset(step.subset) else {
                continue;
            };
            let pick = subset.pick(query.pick_hash);
            let chosen = match pick {
                None => None,
                Some(pick) if !healthy || alive(pick) => Some((pick, false)),
                Some(_) => subset
                    .next_alive(query.pick_hash, alive)
                    .map(|id| (id, true)),
            };
            trace.step(step, pick, chosen.map(|(id, _)| id));
            if let Some((endpoint, skipped)) = chosen {
                return Routed::Placed {
                    endpoint,
                    set: plan.set,
                    side: step.side,
                    zone: step.zone,
                    step: u8::try_from(k).unwrap_or(u8::MAX),
                    skipped,
                    canary,
                };
            }
        }
        if plan.restricted {
            Routed::Closed { set: plan.set }
        } else {
            Routed::Unplaced
        }
    }
}

/// The steps a flow walks: the canary's if it is drawn, else the stable
/// ones; and whether it was drawn.
#[inline]
fn canary_steps<'p>(
    plan: &'p RoutePlan,
    routes: &ServiceRoutes,
    query: &RouteQuery,
    trace: &mut impl RouteTrace,
) -> (&'p [RouteStep], bool) {
    if let (Some(canary_steps), Some(canary)) = (&plan.canary, routes.canary()) {
        let drawn = canary.drawn(query.client, query.hash);
        trace.canary(super::subset::CanaryDraw::draw(query.hash), drawn);
        if drawn.is_some() {
            return (canary_steps, true);
        }
    }
    (&plan.stable, false)
}
