//! `explain`: the decision a new flow would get, read from a snapshot by
//! the same code the data path runs ([`Snapshot::route_new_flow`]), with a
//! recorder in place of the data path's empty trace. The control API
//! answers it from the live snapshot; `flowgate explain --config` from a
//! snapshot built from a file.

use std::net::{IpAddr, SocketAddr};

use flowgate_api::{
    ApiError, ErrorCode, ExplainCanary, ExplainClass, ExplainPath, ExplainQuery, ExplainReply,
    ExplainStep,
};

use crate::hash::{flow_hash, source_hash};
use crate::route::{ClientAddr, PathTarget, PathView};
use crate::rules::routing::{Side, ZoneStep};
use crate::rules::{Protocol, Scheduler, WhenAllDown};
use crate::table::{
    CompiledService, EndpointId, Mode, RouteQuery, RouteStep, RouteTrace, Routed, ServiceRoutes,
    Snapshot,
};
use crate::wire::{addr_to_bytes, bytes_to_addr, FiveTuple};

/// What the decision went through, recorded.
#[derive(Default)]
struct Recorder {
    class: Option<u32>,
    profile: u32,
    canary: Option<(u32, Option<bool>)>,
    steps: Vec<(RouteStep, Option<EndpointId>, Option<EndpointId>)>,
}

impl RouteTrace for Recorder {
    fn class(&mut self, class: Option<u32>, profile: u32) {
        self.class = class;
        self.profile = profile;
    }

    fn canary(&mut self, draw: u32, drawn: Option<bool>) {
        self.canary = Some((draw, drawn));
    }

    fn step(&mut self, step: &RouteStep, pick: Option<EndpointId>, chosen: Option<EndpointId>) {
        self.steps.push((*step, pick, chosen));
    }
}

/// Reads `query` into a 5-tuple.
fn tuple(query: &ExplainQuery) -> Result<FiveTuple, ApiError> {
    let bad = |message: String| ApiError::new(ErrorCode::BadRequest, message);
    let from: SocketAddr = match query.from.parse::<SocketAddr>() {
        Ok(sa) => sa,
        Err(_) => match query.from.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 0),
            Err(_) => {
                return Err(bad(format!(
                    "--from {:?} is not an address or ADDR:PORT",
                    query.from
                )))
            }
        },
    };
    let to: SocketAddr = query
        .to
        .parse()
        .map_err(|_| bad(format!("--to {:?} is not VIP:PORT", query.to)))?;
    let name = query.protocol.as_deref().unwrap_or("tcp");
    let protocol = Protocol::from_name(name)
        .ok_or_else(|| bad(format!("protocol {name:?} is not tcp or udp")))?;
    Ok(FiveTuple {
        src: addr_to_bytes(from.ip()),
        dst: addr_to_bytes(to.ip()),
        src_port: from.port(),
        dst_port: to.port(),
        protocol: protocol.number(),
    })
}

/// `ADDR:PORT` of endpoint `id`.
fn shown(snapshot: &Snapshot, id: EndpointId) -> String {
    match snapshot.endpoint(id) {
        Some(e) => SocketAddr::new(bytes_to_addr(&e.address), e.port).to_string(),
        None => format!("endpoint #{id}"),
    }
}

/// Where a new flow of `query` would go in `snapshot`, and why; with
/// `paths`, its distribution path first.
pub fn explain(
    snapshot: &Snapshot,
    paths: Option<&PathView>,
    query: &ExplainQuery,
) -> Result<ExplainReply, ApiError> {
    let t = tuple(query)?;
    let to = SocketAddr::new(bytes_to_addr(&t.dst), t.dst_port);
    let Some((service_id, service)) = snapshot.lookup_service(t.protocol, &t.dst, t.dst_port)
    else {
        let protocol = query.protocol.as_deref().unwrap_or("tcp");
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no service at {protocol} {to}"),
        ));
    };
    let hash = flow_hash(&t);
    let pick_hash = match service.scheduler() {
        Scheduler::Sh => source_hash(&t.src),
        Scheduler::Maglev | Scheduler::Wrr | Scheduler::Fanout(_) => hash,
    };
    let now_ns = snapshot.liveness().now_ns();
    let mut reply = ExplainReply {
        generation: snapshot.generation(),
        service: service.name().to_owned(),
        scheduler: service.scheduler().name().to_owned(),
        client: SocketAddr::new(bytes_to_addr(&t.src), t.src_port).to_string(),
        class: None,
        path: None,
        routed: service.routes().is_some(),
        set: None,
        canary: None,
        steps: Vec::new(),
        outcome: "none".into(),
        backend: None,
        notes: Vec::new(),
    };
    let client = ClientAddr::from_bytes(&t.src);
    let (class, _) = snapshot.client_routing().classify(client);
    reply.class = class.and_then(|c| class_of(snapshot, c));
    if let Some(target) = paths.and_then(|view| view.lookup(service_id, client)) {
        let chosen = path_choice(snapshot, service, &target, hash, now_ns);
        let names = snapshot
            .backend_names()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reply.path = Some(ExplainPath {
            backends: target
                .backends()
                .into_iter()
                .map(|b| names.name(b).unwrap_or("?").to_owned())
                .collect(),
            chosen: chosen.map(|id| shown(snapshot, id)),
        });
        if let Some(id) = chosen {
            reply.outcome = "placed".into();
            reply.backend = Some(shown(snapshot, id));
            return Ok(reply);
        }
    }
    let Some(routes) = service.routes() else {
        scheduled(snapshot, service, pick_hash, now_ns, &mut reply);
        return Ok(reply);
    };
    let route_query = RouteQuery {
        client,
        hash,
        pick_hash,
        now_ns,
    };
    let mut record = Recorder::default();
    let routed = snapshot.route_new_flow(service, routes, &route_query, &mut record);
    describe(snapshot, routes, &record, &mut reply);
    match routed {
        Routed::Placed { endpoint, set, .. } => {
            reply.set = Some(set.name().to_owned());
            reply.outcome = "placed".into();
            reply.backend = Some(shown(snapshot, endpoint));
        }
        Routed::Closed { set } => {
            reply.set = Some(set.name().to_owned());
            reply.outcome = "closed".into();
            reply.notes.push(
                "nothing the client's SET may use is alive: its new flows are dropped \
                 rather than sent to another SET"
                    .into(),
            );
        }
        Routed::Plain => {
            reply.set = Some("none".into());
            scheduled(snapshot, service, pick_hash, now_ns, &mut reply);
        }
        Routed::Unplaced => {
            scheduled(snapshot, service, pick_hash, now_ns, &mut reply);
            if reply.outcome == "placed" {
                reply.outcome = "fallback".into();
            }
        }
    }
    if service.scheduler() == Scheduler::Wrr {
        reply.notes.push(
            "wrr within a routed subset picks by flow hash over the subset's weighted cycle".into(),
        );
    }
    Ok(reply)
}

/// The endpoint a path gives a flow, as the data path chooses it: the
/// flow's pick if alive and weighted, else the first such of the others
/// from it.
fn path_choice(
    snapshot: &Snapshot,
    service: &CompiledService,
    target: &PathTarget<'_>,
    hash: u64,
    now_ns: u64,
) -> Option<EndpointId> {
    let takes = |backend| {
        let id = service.path_backend(backend)?;
        let weighted = snapshot.endpoint(id).is_some_and(|e| e.weight > 0);
        (weighted && snapshot.liveness().is_alive(id, now_ns)).then_some(id)
    };
    let all = target.backends();
    let start = ((u128::from(hash) * all.len() as u128) >> 64) as usize;
    let first = takes(target.pick(hash));
    first.or_else(|| {
        let (head, tail) = all.split_at(start.min(all.len()));
        tail.iter().chain(head).find_map(|&b| takes(b))
    })
}

/// The configured class `class`, shown.
fn class_of(snapshot: &Snapshot, class: u32) -> Option<ExplainClass> {
    let routing = snapshot.client_routing();
    let prefix = routing.prefix(class)?;
    let (_, profile) = routing.classify(ClientAddr::from(prefix.address));
    let (set, zone) = routing.profile(profile).unwrap_or((None, None));
    Some(ExplainClass {
        prefix: prefix.to_string(),
        set: set.map(String::from),
        zone: zone.map(String::from),
    })
}

/// The canary stage and the steps, from what was recorded.
fn describe(
    snapshot: &Snapshot,
    routes: &ServiceRoutes,
    record: &Recorder,
    reply: &mut ExplainReply,
) {
    if let (Some(canary), Some((draw, drawn))) = (routes.canary(), record.canary) {
        reply.canary = Some(ExplainCanary {
            group: canary.group.clone(),
            share_bp: canary.share_bp,
            draw,
            drawn: match drawn {
                Some(true) => "client",
                Some(false) => "share",
                None => "no",
            }
            .into(),
        });
    }
    let priority = routes.zone_priority();
    for (step, pick, chosen) in &record.steps {
        let members = routes
            .subset(step.subset)
            .map(|s| s.members().iter().map(|&id| shown(snapshot, id)).collect())
            .unwrap_or_default();
        reply.steps.push(ExplainStep {
            side: match step.side {
                Side::Stable => "stable",
                Side::Canary => "canary",
            }
            .into(),
            zone: match step.zone {
                ZoneStep::All => "all".into(),
                ZoneStep::Local => "local".into(),
                ZoneStep::Next(k) => match priority.get(usize::from(k)) {
                    Some(zone) => format!("next:{zone}"),
                    None => format!("next:#{k}"),
                },
                ZoneStep::NoZone => "no_zone".into(),
                ZoneStep::Any => "any".into(),
            },
            members,
            pick: pick.map(|id| shown(snapshot, id)),
            chosen: chosen.map(|id| shown(snapshot, id)),
        });
    }
}

/// The service's own choice over all its backends, as the data path
/// makes it for a service that does not route by client.
fn scheduled(
    snapshot: &Snapshot,
    service: &CompiledService,
    pick_hash: u64,
    now_ns: u64,
    reply: &mut ExplainReply,
) {
    let pick = match service.scheduler() {
        Scheduler::Maglev | Scheduler::Sh => service.maglev_lookup(pick_hash),
        Scheduler::Fanout(replies) => {
            reply.notes.push(format!(
                "fanout: every alive weighted backend gets each datagram (replies: {replies}); \
                 shown: the backend the original frame goes to"
            ));
            service.weighted().first().copied()
        }
        Scheduler::Wrr => {
            reply.notes.push(
                "wrr: each worker takes the next backend of its weighted cycle; shown: \
                 the backend the cycle holds at the flow hash"
                    .into(),
            );
            let cycle = service.wrr_schedule();
            let at = ((u128::from(pick_hash) * cycle.len() as u128) >> 64) as usize;
            cycle.get(at).copied()
        }
    };
    let Some(pick) = pick else {
        return;
    };
    let liveness = snapshot.liveness();
    let chosen = match service.mode() {
        Mode::Healthy if liveness.is_alive(pick, now_ns) => Some(pick),
        Mode::Healthy => service
            .next_alive(pick_hash, |id| liveness.is_alive(id, now_ns))
            .or(match service.failover().when_all_down {
                WhenAllDown::Open => Some(pick),
                WhenAllDown::Closed => None,
            }),
        Mode::Panic | Mode::AllDownOpen => Some(pick),
        Mode::AllDownClosed => None,
    };
    if let Some(id) = chosen {
        reply.outcome = "placed".into();
        reply.backend = Some(shown(snapshot, id));
    }
}
