//! Hitless updates: while a worker forwards established and new flows,
//! 10 000 rule changes arrive over the control socket. No packet of an
//! established connection is dropped or sent to another backend, and every
//! new flow follows the rules of the snapshot it met.

mod control_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use control_support::*;
use flowgate_api::{
    BackendAdd, BackendEdit, BackendKey, BackendSpec, Reply, Request, ServiceEdit, ServiceName,
    ServiceSpec,
};

/// Updates applied while traffic runs.
const UPDATES: usize = 10_000;
/// Churn services `churn-1` ... `churn-8` at 198.18.101.K:80.
const CHURN_SERVICES: u8 = 8;

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn weight(&mut self, not: u32) -> u32 {
        let w = 1 + self.below(10) as u32;
        if w == not {
            w % 10 + 1
        } else {
            w
        }
    }
}

/// What the test believes runs, to make only valid changes, each of which
/// changes something.
struct Mirror {
    /// Weights of web's .11, .12, .13 (the established connections' backends).
    core: [u32; 3],
    /// web's other backends: host → weight (0: drained).
    extra: BTreeMap<u8, u32>,
    /// Churn services: K → (scheduler, host → weight).
    churn: BTreeMap<u8, (&'static str, BTreeMap<u8, u32>)>,
}

const SCHEDULERS: [&str; 3] = ["maglev", "sh", "wrr"];

fn backend_key(service: &str, host: u8, port: u16) -> BackendKey {
    BackendKey {
        service: service.into(),
        address: format!("198.18.1.{host}"),
        port,
    }
}

fn backend_edit(service: &str, host: u8, port: u16, weight: u32) -> Request {
    Request::BackendEdit(BackendEdit {
        service: service.into(),
        address: format!("198.18.1.{host}"),
        port,
        weight: Some(weight),
        zone: None,
        set: None,
        group: None,
    })
}

fn backend_add(service: &str, host: u8, port: u16, weight: u32) -> Request {
    Request::BackendAdd(BackendAdd {
        service: service.into(),
        backend: BackendSpec {
            weight: Some(weight),
            ..BackendSpec::new(format!("198.18.1.{host}"), port)
        },
    })
}

impl Mirror {
    fn new() -> Mirror {
        Mirror {
            core: [1, 1, 2],
            extra: BTreeMap::new(),
            churn: BTreeMap::new(),
        }
    }

    fn next_update(&mut self, rng: &mut Rng) -> Request {
        match rng.below(8) {
            0 => {
                let i = rng.below(3) as usize;
                self.core[i] = rng.weight(self.core[i]);
                backend_edit("web", 11 + i as u8, 8080, self.core[i])
            }
            1 | 7 => self.toggle_extra(rng),
            2 => {
                let present: Vec<u8> = self.extra.keys().copied().collect();
                if present.is_empty() {
                    return self.toggle_extra(rng);
                }
                let host = present[rng.below(present.len() as u64) as usize];
                let weight = self.extra.get_mut(&host).unwrap();
                if *weight > 0 {
                    *weight = 0;
                    Request::BackendDrain(backend_key("web", host, 8080))
                } else {
                    *weight = 3;
                    backend_edit("web", host, 8080, 3)
                }
            }
            3 => self.toggle_service(rng),
            r => {
                let present: Vec<u8> = self.churn.keys().copied().collect();
                if present.is_empty() {
                    return self.toggle_service(rng);
                }
                let k = present[rng.below(present.len() as u64) as usize];
                let name = format!("churn-{k}");
                let port = 9000 + u16::from(k);
                let (scheduler, backends) = self.churn.get_mut(&k).unwrap();
                match r {
                    4 => {
                        let host = 41 + rng.below(34) as u8;
                        match backends.get(&host) {
                            Some(_) if backends.len() > 1 => {
                                backends.remove(&host);
                                Request::BackendDel(backend_key(&name, host, port))
                            }
                            Some(&w) => {
                                let w = rng.weight(w);
                                backends.insert(host, w);
                                backend_edit(&name, host, port, w)
                            }
                            None => {
                                let w = rng.weight(0);
                                backends.insert(host, w);
                                backend_add(&name, host, port, w)
                            }
                        }
                    }
                    5 => {
                        let now = *scheduler;
                        let next = SCHEDULERS[(SCHEDULERS.iter().position(|s| *s == now).unwrap()
                            + 1
                            + rng.below(2) as usize)
                            % 3];
                        *scheduler = next;
                        Request::ServiceEdit(ServiceEdit {
                            service: name,
                            scheduler: Some(next.into()),
                            maglev_table_size: None,
                        })
                    }
                    _ => {
                        let hosts: Vec<u8> = backends.keys().copied().collect();
                        let host = hosts[rng.below(hosts.len() as u64) as usize];
                        let w = rng.weight(backends[&host]);
                        backends.insert(host, w);
                        backend_edit(&name, host, port, w)
                    }
                }
            }
        }
    }

    fn toggle_extra(&mut self, rng: &mut Rng) -> Request {
        let host = 20 + rng.below(21) as u8;
        if self.extra.remove(&host).is_some() {
            Request::BackendDel(backend_key("web", host, 8080))
        } else {
            let w = rng.weight(0);
            self.extra.insert(host, w);
            backend_add("web", host, 8080, w)
        }
    }

    fn toggle_service(&mut self, rng: &mut Rng) -> Request {
        let k = 1 + rng.below(u64::from(CHURN_SERVICES)) as u8;
        let name = format!("churn-{k}");
        if self.churn.remove(&k).is_some() {
            return Request::ServiceDel(ServiceName { service: name });
        }
        let scheduler = SCHEDULERS[rng.below(3) as usize];
        let host = 41 + rng.below(34) as u8;
        let port = 9000 + u16::from(k);
        self.churn
            .insert(k, (scheduler, BTreeMap::from([(host, 1)])));
        Request::ServiceAdd(ServiceSpec {
            name,
            protocol: "tcp".into(),
            vip: format!("198.18.101.{k}"),
            port: 80,
            scheduler: Some(scheduler.into()),
            maglev_table_size: None,
            backends: vec![BackendSpec::new(format!("198.18.1.{host}"), port)],
        })
    }
}

#[test]
fn ten_thousand_updates_under_traffic_drop_and_misroute_nothing() {
    let gateway = Gateway::start(&base_rules());
    let mut targets = vec![SocketAddr::new(WEB_VIP.parse().unwrap(), 80)];
    targets.extend(
        (1..=CHURN_SERVICES)
            .map(|k| SocketAddr::new(format!("198.18.101.{k}").parse().unwrap(), 80)),
    );
    let traffic = Traffic::start(
        gateway.dataplane.reader(),
        &gateway.config(),
        TrafficPlan {
            new_flow_targets: targets,
            ..TrafficPlan::default()
        },
    );

    let mut client = gateway.client();
    let mut mirror = Mirror::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut generation = gateway.generation();
    let polls_before = traffic.polls();
    for i in 0..UPDATES {
        let request = mirror.next_update(&mut rng);
        let what = format!("{request:?}");
        let reply = client
            .call(request)
            .unwrap_or_else(|e| panic!("update {i} ({what}) refused: {e}"));
        let Reply::Changed(change) = reply else {
            panic!("update {i}: not a change report: {reply:?}")
        };
        assert!(change.applied, "update {i} ({what}) changed nothing");
        assert_eq!(
            change.generation,
            generation + 1,
            "update {i}: one generation per change"
        );
        assert!(change.diff.change_count() >= 1, "update {i}: empty diff");
        generation = change.generation;
    }
    // Let the worker run a while on the last rules, then stop it.
    traffic.wait_for(generation, 300);
    let polls_during = traffic.polls() - polls_before;
    let report = traffic.finish();

    println!("{UPDATES} updates under traffic: {report:#?}");
    report.assert_clean();
    assert_eq!(report.last_generation, generation);
    assert!(
        report.generations_seen > 100,
        "the worker should have switched snapshots many times under traffic: {report:#?}"
    );
    assert!(
        polls_during > 1_000,
        "traffic ran during the updates: {polls_during} polls"
    );
    assert!(report.established_sent > 10_000, "{report:#?}");
    assert!(
        report.new_flows_forwarded > 1_000 && report.new_flows_passed > 100,
        "{report:#?}"
    );
    assert!(report.new_flows_in_last_generation > 0, "{report:#?}");

    // What runs is what the test asked for.
    let config = gateway.config();
    let web = config.service("web").unwrap();
    let weights: Vec<u32> = web.backends[..3].iter().map(|b| b.weight).collect();
    assert_eq!(weights, mirror.core);
    assert_eq!(web.backends.len(), 3 + mirror.extra.len());
    let churn: Vec<&str> = config
        .services
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with("churn-"))
        .collect();
    assert_eq!(churn.len(), mirror.churn.len());
    for (k, (scheduler, backends)) in &mirror.churn {
        let s = config.service(&format!("churn-{k}")).unwrap();
        assert_eq!(s.scheduler.name(), *scheduler);
        let running: BTreeMap<u8, u32> = s
            .backends
            .iter()
            .map(|b| {
                (
                    b.address
                        .to_string()
                        .rsplit('.')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap(),
                    b.weight,
                )
            })
            .collect();
        assert_eq!(&running, backends);
    }
}
