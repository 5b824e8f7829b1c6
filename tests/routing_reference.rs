//! The compiled routing decision against a small, obviously correct
//! reference of the policies (SET, canary, zone, over what is alive), over
//! random services, client profiles, liveness and flows: the backend the
//! snapshot picks is an alive one of the first tier the reference says
//! has one, and a flow fails closed, or falls to the service's own
//! fallback, exactly when the reference says so. Both ways a backend can
//! be down are run: died since the build (the skip rule and the next steps
//! at packet time) and down at the build (the tables leave it out).

use std::net::IpAddr;

use flowgate_dataplane::route::ClientAddr;
use flowgate_dataplane::rules::{
    Backend, Canary, ClientClass, ClientPrefix, Config, Protocol, Scheduler, Service,
};
use flowgate_dataplane::table::{EndpointId, RouteQuery, Routed, Snapshot};
use flowgate_dataplane::wire::{addr_to_bytes, bytes_to_addr};
use proptest::prelude::*;

const SETS: [Option<&str>; 5] = [
    None,
    Some("shop.sh.g1"),
    Some("shop.sh.g2"),
    Some("shop.sh.*"),
    Some("pay.gz.g1"),
];
const CLIENT_SETS: [Option<&str>; 5] = [
    None,
    Some("shop.sh.g1"),
    Some("shop.sh.g3"),
    Some("shop.sh.*"),
    Some("bank.bj.g1"),
];
const ZONES: [Option<&str>; 4] = [None, Some("a"), Some("b"), Some("c")];

#[derive(Clone, Debug)]
struct B {
    set: Option<&'static str>,
    zone: Option<&'static str>,
    canary: bool,
    weight: u32,
    up: bool,
}

#[derive(Clone, Debug)]
struct Case {
    backends: Vec<B>,
    client_set: Option<&'static str>,
    client_zone: Option<&'static str>,
    priority: Vec<&'static str>,
    /// A canary's share, and whether the client is one of its prefixes.
    canary: Option<(u32, bool)>,
    scheduler: Scheduler,
    hash: u64,
}

fn backend() -> impl Strategy<Value = B> {
    (
        0..5usize,
        0..4usize,
        any::<bool>(),
        prop_oneof![Just(0u32), Just(1), Just(3)],
        any::<bool>(),
    )
        .prop_map(|(s, z, canary, weight, up)| B {
            set: SETS[s],
            zone: ZONES[z],
            canary,
            weight,
            up,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(backend(), 1..9),
        0..5usize,
        0..4usize,
        Just(vec!["a", "b", "c"]).prop_shuffle(),
        0..4usize,
        prop::option::of((0..=10_000u32, any::<bool>())),
        prop_oneof![
            Just(Scheduler::Maglev),
            Just(Scheduler::Wrr),
            Just(Scheduler::Sh)
        ],
        any::<u64>(),
    )
        .prop_map(
            |(mut backends, s, z, mut priority, keep, canary, scheduler, hash)| {
                if backends.iter().all(|b| b.weight == 0) {
                    backends[0].weight = 1;
                }
                priority.truncate(keep);
                Case {
                    backends,
                    client_set: CLIENT_SETS[s],
                    client_zone: ZONES[z],
                    priority,
                    canary,
                    scheduler,
                    hash,
                }
            },
        )
}

const CLIENT: [u8; 4] = [198, 18, 5, 5];

fn address(j: usize) -> IpAddr {
    IpAddr::from([198, 18, 1, 10 + j as u8])
}

fn config(case: &Case) -> Config {
    let backends = case
        .backends
        .iter()
        .enumerate()
        .map(|(j, b)| Backend {
            weight: b.weight,
            set: b.set.map(Into::into),
            zone: b.zone.map(Into::into),
            group: b.canary.then(|| "v2".into()),
            ..Backend::new(address(j), 8080)
        })
        .collect();
    let mut service = Service {
        limits: Default::default(),

        announce: Default::default(),
        name: "svc".into(),
        protocol: Protocol::Tcp,
        vip: IpAddr::from([198, 18, 100, 10]),
        port: 80,
        scheduler: case.scheduler,
        maglev_table_size: 251,
        failover: Default::default(),
        backends,
        routing: Default::default(),
        health: Default::default(),
    };
    if let Some((share, by_prefix)) = case.canary {
        let prefix = if by_prefix {
            [198, 18, 5, 0]
        } else {
            [198, 18, 200, 0]
        };
        service.routing.canary = Some(Canary {
            group: "v2".into(),
            share_bp: share,
            clients: vec![ClientPrefix::new(IpAddr::from(prefix), 24)],
        });
    }
    let mut config = Config {
        services: vec![service].into(),
        ..Config::default()
    };
    config.routing.zone_priority = case.priority.iter().map(|z| z.to_string()).collect();
    if case.client_set.is_some() || case.client_zone.is_some() {
        config.routing.classes.push(ClientClass {
            prefix: ClientPrefix::new(IpAddr::from([198, 18, 0, 0]), 16),
            set: case.client_set.map(Into::into),
            zone: case.client_zone.map(Into::into),
        });
    }
    config
}

/// `name.area.group` split, `None` for the group `*`.
fn parts(set: &str) -> (&str, &str, Option<&str>) {
    let mut p = set.split('.');
    let (n, a, g) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
    (n, a, (g != "*").then_some(g))
}

/// The reference's answer.
#[derive(Debug, PartialEq)]
enum Expected {
    /// One of these (backend indices).
    OneOf(Vec<usize>),
    /// Dropped: the client's SET has nothing alive.
    Closed,
    /// Nothing alive and nothing left out: the service's fallback.
    Unplaced,
    /// The service whole, by its own scheduler.
    Plain,
}

/// The policies as the issue states them, over indices into the backends.
fn reference(case: &Case, ignore_health: bool) -> Expected {
    let all: Vec<usize> = (0..case.backends.len()).collect();
    let b = &case.backends;
    let any_set = b.iter().any(|x| x.set.is_some());
    // SET.
    let candidates: Vec<usize> = match case.client_set.filter(|_| any_set) {
        None => all.clone(),
        Some(client) => {
            let (n, a, g) = parts(client);
            let same_area = |x: &B| x.set.is_some_and(|s| parts(s).0 == n && parts(s).1 == a);
            let own: Vec<usize> = match g {
                Some(_) => all
                    .iter()
                    .copied()
                    .filter(|&j| b[j].set == Some(client))
                    .collect(),
                None => all.iter().copied().filter(|&j| same_area(&b[j])).collect(),
            };
            let area: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&j| same_area(&b[j]) && parts(b[j].set.unwrap()).2.is_none())
                .collect();
            let unset: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&j| b[j].set.is_none())
                .collect();
            if !own.is_empty() {
                own
            } else if g.is_some() && !area.is_empty() {
                area
            } else {
                unset
            }
        }
    };
    // Canary (the group matters only with one): the drawn side first.
    let in_canary = |j: usize| case.canary.is_some() && b[j].canary;
    let canary_side: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&j| in_canary(j))
        .collect();
    let stable_side: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&j| !in_canary(j))
        .collect();
    let drawn = case.canary.is_some_and(|(share, by_prefix)| {
        by_prefix || ((((case.hash & 0xFFFF_FFFF) * 10_000) >> 32) as u32) < share
    });
    let sides = if drawn && !canary_side.is_empty() {
        [canary_side, stable_side]
    } else {
        [stable_side, canary_side]
    };
    // Zones within each side.
    let any_zone = b.iter().any(|x| x.zone.is_some());
    let mut tiers: Vec<Vec<usize>> = Vec::new();
    for side in sides {
        match case.client_zone.filter(|_| any_zone) {
            None => tiers.push(side),
            Some(z) => {
                let in_zone = |zone: Option<&str>| {
                    side.iter()
                        .copied()
                        .filter(|&j| b[j].zone == zone)
                        .collect()
                };
                tiers.push(in_zone(Some(z)));
                for &next in &case.priority {
                    tiers.push(in_zone(Some(next)));
                }
                tiers.push(in_zone(None));
                tiers.push(side.clone());
            }
        }
    }
    let takes = |j: usize| b[j].weight > 0 && (ignore_health || b[j].up);
    for tier in tiers {
        let alive: Vec<usize> = tier.into_iter().filter(|&j| takes(j)).collect();
        if !alive.is_empty() {
            return Expected::OneOf(alive);
        }
    }
    if candidates.len() != all.len() {
        Expected::Closed
    } else {
        Expected::Unplaced
    }
}

/// The compiled decision, as backend indices.
fn decided(case: &Case, rebuilt: bool) -> (Expected, bool) {
    let config = config(case);
    let mut snapshot = Snapshot::build(&config, None);
    let (_, svc) = snapshot.services().next().unwrap();
    let id_of = |s: &Snapshot, j: usize| -> EndpointId {
        let want = addr_to_bytes(address(j));
        let (_, svc) = s.services().next().unwrap();
        *svc.endpoints()
            .iter()
            .find(|&&e| s.endpoint(e).unwrap().address == want)
            .unwrap()
    };
    assert!(svc.routes().is_some() || !routes_by_client(case));
    for (j, b) in case.backends.iter().enumerate() {
        snapshot
            .liveness()
            .set_up(id_of(&snapshot, j), b.up)
            .unwrap();
    }
    if rebuilt {
        snapshot = Snapshot::build(&config, Some(&snapshot));
    }
    let (_, svc) = snapshot.services().next().unwrap();
    let healthy = svc.mode() == flowgate_dataplane::table::Mode::Healthy;
    let Some(routes) = svc.routes() else {
        return (Expected::Unplaced, healthy);
    };
    let query = RouteQuery {
        client: ClientAddr::from(IpAddr::from(CLIENT)),
        hash: case.hash,
        pick_hash: case.hash.rotate_left(17),
        now_ns: snapshot.liveness().now_ns(),
    };
    let expected = match snapshot.route_new_flow(svc, routes, &query, &mut ()) {
        Routed::Placed { endpoint, .. } => {
            let e = snapshot.endpoint(endpoint).unwrap();
            let IpAddr::V4(a) = bytes_to_addr(&e.address) else {
                panic!("v6");
            };
            Expected::OneOf(vec![usize::from(a.octets()[3] - 10)])
        }
        Routed::Closed { .. } => Expected::Closed,
        Routed::Unplaced => Expected::Unplaced,
        Routed::Plain => Expected::Plain,
    };
    (expected, healthy)
}

fn routes_by_client(case: &Case) -> bool {
    case.canary.is_some()
        || case
            .backends
            .iter()
            .any(|b| b.set.is_some() || b.zone.is_some())
}

fn check(case: &Case, rebuilt: bool) -> Result<(), TestCaseError> {
    let (got, healthy) = decided(case, rebuilt);
    if !routes_by_client(case) {
        prop_assert_eq!(got, Expected::Unplaced);
        return Ok(());
    }
    let want = reference(case, !healthy);
    if got == Expected::Plain {
        // Only when the reference's first tier is the service whole (its
        // alive weighted backends), or nothing is alive and nothing is
        // left out; the service's own scheduler then picks among them.
        let takes = |j: usize| case.backends[j].weight > 0 && (!healthy || case.backends[j].up);
        let alive: Vec<usize> = (0..case.backends.len()).filter(|&j| takes(j)).collect();
        let whole = if alive.is_empty() {
            Expected::Unplaced
        } else {
            Expected::OneOf(alive)
        };
        prop_assert_eq!(want, whole);
        return Ok(());
    }
    match (&got, &want) {
        (Expected::OneOf(got), Expected::OneOf(allowed)) => {
            prop_assert!(
                allowed.contains(&got[0]),
                "picked {} of {:?}",
                got[0],
                allowed
            )
        }
        _ => prop_assert_eq!(got, want),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_decision_matches_the_reference_with_backends_dead_since_the_build(case in case()) {
        check(&case, false)?;
    }

    #[test]
    fn the_decision_matches_the_reference_with_backends_dead_at_the_build(case in case()) {
        check(&case, true)?;
    }
}
