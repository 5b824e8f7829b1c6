use super::*;
use crate::rules::{Backend, Canary, Protocol, Service};
use std::net::IpAddr;

/// A backend at 198.18.1.`host`:8080 with these labels.
fn backend(host: u8, set: Option<&str>, zone: Option<&str>, group: Option<&str>) -> Backend {
    Backend {
        set: set.map(Into::into),
        zone: zone.map(Into::into),
        group: group.map(Into::into),
        ..Backend::new(IpAddr::from([198, 18, 1, host]), 8080)
    }
}

fn service(backends: Vec<Backend>) -> Service {
    Service {
        limits: Default::default(),

        announce: Default::default(),
        name: "orders".into(),
        protocol: Protocol::Tcp,
        vip: IpAddr::from([198, 18, 100, 10]),
        port: 80,
        scheduler: Scheduler::Maglev,
        maglev_table_size: 251,
        failover: Default::default(),
        backends,
        routing: Default::default(),
        health: Default::default(),
    }
}

#[test]
fn a_set_client_uses_its_set_then_its_area_then_no_set_and_never_another() {
    let s = service(vec![
        backend(1, Some("shop.sh.g1"), None, None),
        backend(2, Some("shop.sh.g2"), None, None),
        backend(3, Some("shop.sh.*"), None, None),
        backend(4, None, None, None),
        backend(5, Some("bank.bj.g1"), None, None),
    ]);
    assert_eq!(
        set_candidates(&s, Some("shop.sh.g1")),
        (SetStage::Own, vec![0])
    );
    // No backend of g9: the area's `*` backends.
    assert_eq!(
        set_candidates(&s, Some("shop.sh.g9")),
        (SetStage::Area, vec![2])
    );
    // An area-wide client takes every group of its area, `*` included.
    assert_eq!(
        set_candidates(&s, Some("shop.sh.*")),
        (SetStage::Own, vec![0, 1, 2])
    );
    // Another area: the backends of no SET.
    assert_eq!(
        set_candidates(&s, Some("shop.gz.g1")),
        (SetStage::Unset, vec![3])
    );
    // No SET: everything.
    assert_eq!(
        set_candidates(&s, None),
        (SetStage::None, vec![0, 1, 2, 3, 4])
    );
    let no_unset = service(vec![backend(1, Some("bank.bj.g1"), None, None)]);
    assert_eq!(
        set_candidates(&no_unset, Some("shop.sh.g1")),
        (SetStage::Closed, vec![])
    );
    // A service whose backends have no SET ignores the client's.
    let plain = service(vec![backend(1, None, None, None)]);
    assert_eq!(
        set_candidates(&plain, Some("shop.sh.g1")),
        (SetStage::None, vec![0])
    );
}

#[test]
fn zones_fall_back_in_priority_order_then_no_zone_then_any() {
    let s = service(vec![
        backend(1, None, Some("a"), None),
        backend(2, None, Some("b"), None),
        backend(3, None, Some("c"), None),
        backend(4, None, None, None),
    ]);
    let all = [0, 1, 2, 3];
    let priority = vec!["c".to_string(), "b".to_string()];
    let steps = zone_steps(&s, &all, Some("a"), &priority);
    let got: Vec<(Vec<u32>, ZoneStep)> = steps;
    assert_eq!(
        got,
        vec![
            (vec![0], ZoneStep::Local),
            (vec![2], ZoneStep::Next(0)),
            (vec![1], ZoneStep::Next(1)),
            (vec![3], ZoneStep::NoZone),
            (vec![0, 1, 2, 3], ZoneStep::Any),
        ]
    );
    // A zone of the list is skipped where it comes again.
    let steps = zone_steps(&s, &all, Some("c"), &priority);
    assert_eq!(steps[0], (vec![2], ZoneStep::Local));
    assert_eq!(steps[1], (vec![1], ZoneStep::Next(1)));
    // No zone: the members whole.
    assert_eq!(
        zone_steps(&s, &all, None, &priority),
        vec![(all.to_vec(), ZoneStep::All)]
    );
}

#[test]
fn a_canary_splits_each_plan_and_subsets_are_shared() {
    let mut s = service(vec![
        backend(1, None, Some("a"), None),
        backend(2, None, Some("a"), Some("v2")),
        backend(3, None, Some("b"), None),
    ]);
    s.routing.canary = Some(Canary {
        group: "v2".into(),
        share_bp: 100,
        clients: Vec::new(),
    });
    let profiles = [
        Profile::default(),
        Profile {
            set: None,
            zone: Some("a"),
        },
    ];
    let subsets = service_subsets(&s, &profiles, &[]).unwrap();
    let plan = subsets.plan_of(1).unwrap();
    let members = |step: &Step| subsets.subsets[step.subset as usize].clone();
    // Stable side first, in zone order (no priority list: own zone,
    // then any), then the canary side.
    let stable: Vec<Vec<u32>> = plan.stable.iter().map(members).collect();
    assert_eq!(stable, vec![vec![0], vec![0, 2], vec![1]]);
    let canary: Vec<Vec<u32>> = plan.canary.as_ref().unwrap().iter().map(members).collect();
    assert_eq!(canary[0], vec![1]);
    assert_eq!(plan.canary.as_ref().unwrap()[0].side, Side::Canary);
    // No zone: the sides whole.
    let plan = subsets.plan_of(0).unwrap();
    let stable: Vec<Vec<u32>> = plan.stable.iter().map(members).collect();
    assert_eq!(stable, vec![vec![0, 2], vec![1]]);
    // Each distinct member set is one subset.
    let mut seen = subsets.subsets.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), subsets.subsets.len());
}

#[test]
fn a_service_without_labels_or_canary_has_no_subsets() {
    let s = service(vec![backend(1, None, None, None)]);
    assert_eq!(service_subsets(&s, &[Profile::default()], &[]), None);
}

#[test]
fn subset_memory_is_a_table_per_proper_subset() {
    let s = service(vec![
        backend(1, None, Some("a"), None),
        backend(2, None, Some("b"), None),
    ]);
    assert_eq!(
        subset_bytes(&s, &[0, 1]),
        0,
        "the whole service is its own table"
    );
    assert_eq!(subset_bytes(&s, &[0]), 4 * 251 + 12);
    let mut wrr = s.clone();
    wrr.scheduler = Scheduler::Wrr;
    wrr.backends[0].weight = 6;
    assert_eq!(
        subset_bytes(&wrr, &[0]),
        4 + 12,
        "a cycle of 6/6 is one entry"
    );
    assert_eq!(wrr_cycle_bound(&[4, 6]), 5);
    assert_eq!(wrr_cycle_bound(&[60_000, 60_000, 1]), MAX_WRR_CYCLE as u64);
}
