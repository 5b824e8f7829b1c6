//! The health prober in a network namespace of its own, against 50
//! healthy TCP servers, a blackholed address (an nftables rule drops
//! everything sent to it: SYNs and datagrams vanish) and a slow HTTP server
//! (accepts, never answers). The dead ones must not delay the checks of
//! the healthy ones: each healthy target's probes stay one jittered
//! interval apart. Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowgate_dataplane::health::{
    Check, CheckKind, CheckResult, FailureReason, Health, HttpCheck, Prober, ProberOptions,
    StatusRange, Target, Timing, UdpCheck,
};
use flowgate_dataplane::testnet::{self, NetNs};

const HEALTHY: &str = "198.18.50.1";
const SLOW: &str = "198.18.50.2";
const BLACKHOLE: &str = "198.18.50.99";
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 150;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A namespace whose loopback holds the three addresses, with everything
/// to the blackhole address dropped on input.
fn namespace() -> NetNs {
    let ns = NetNs::new("fgh").unwrap();
    for a in [HEALTHY, SLOW, BLACKHOLE] {
        ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])
            .unwrap();
    }
    ns.exec("nft", &["add", "table", "inet", "fgh"]).unwrap();
    ns.exec(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "fgh",
            "input",
            "{ type filter hook input priority 0 ; policy accept ; }",
        ],
    )
    .unwrap();
    ns.exec(
        "nft",
        &[
            "add", "rule", "inet", "fgh", "input", "ip", "daddr", BLACKHOLE, "drop",
        ],
    )
    .unwrap();
    ns
}

/// Accepts on `listeners` until `stop`, at most 30 s; keeps what `keep`
/// says to keep (the slow server holds its connections open, unanswered).
fn serve(
    listeners: Vec<TcpListener>,
    keep: bool,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<TcpStream>> {
    for l in &listeners {
        l.set_nonblocking(true).unwrap();
    }
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            for l in &listeners {
                while let Ok((s, _)) = l.accept() {
                    if keep {
                        held.push(s);
                    }
                }
            }
            std::thread::sleep(ms(1));
        }
        held
    })
}

#[test]
fn blackholed_and_slow_targets_do_not_delay_the_checks_of_fifty_healthy_ones() {
    if !testnet::privileged() {
        return;
    }
    let ns = namespace();
    let timing = Timing::new(ms(INTERVAL_MS), ms(TIMEOUT_MS), 1, 1).unwrap();
    let http = |t: Timing| {
        Check::new(
            CheckKind::Http(HttpCheck::new("/", None, StatusRange::DEFAULT).unwrap()),
            t,
        )
    };
    // Listeners and the prober are made on a thread inside the namespace:
    // the sockets, and the prober's thread, stay there.
    let (healthy_listeners, slow_listener, prober) = ns
        .enter(|| {
            let healthy: Vec<TcpListener> = (0..50)
                .map(|_| TcpListener::bind((HEALTHY, 0)).unwrap())
                .collect();
            let slow = TcpListener::bind((SLOW, 0)).unwrap();
            (
                healthy,
                slow,
                Prober::start(ProberOptions::default()).unwrap(),
            )
        })
        .unwrap();
    let healthy: Vec<Target> = healthy_listeners
        .iter()
        .map(|l| Target::new(l.local_addr().unwrap(), Check::tcp(timing)))
        .collect();
    let blackhole = |port: u16| SocketAddr::new(BLACKHOLE.parse().unwrap(), port);
    let dead = vec![
        Target::new(blackhole(80), Check::tcp(timing)),
        Target::new(blackhole(8080), http(timing)),
        Target::new(
            blackhole(53),
            Check::new(
                CheckKind::Udp(UdpCheck::new(b"ping", None).unwrap()),
                timing,
            ),
        ),
        Target::new(slow_listener.local_addr().unwrap(), http(timing)),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let healthy_server = serve(healthy_listeners, false, Arc::clone(&stop));
    let slow_server = serve(vec![slow_listener], true, Arc::clone(&stop));

    let start = Instant::now();
    prober
        .set_targets(healthy.iter().chain(&dead).cloned())
        .unwrap();
    // Every probe's start, as the prober took it (sampled every 2 ms; a
    // start stays readable for a whole interval).
    let mut starts: HashMap<SocketAddr, Vec<Instant>> = HashMap::new();
    while start.elapsed() < ms(3000) {
        for status in prober.statuses() {
            if let Some((_, _, at)) = status.last_check {
                let times = starts.entry(status.target.address).or_default();
                if times.last() != Some(&at) {
                    times.push(at);
                }
            }
        }
        std::thread::sleep(ms(2));
    }

    // The dead ones are down, each for its own reason, and were probed on
    // their own schedule all along (one probe per interval at most).
    for target in &dead {
        let s = prober.status(target).unwrap();
        let (result, latency, _) = s.last_check.unwrap();
        assert_eq!(s.health, Health::Down, "{target}");
        assert_eq!(
            result,
            CheckResult::Failed(FailureReason::Timeout),
            "{target}"
        );
        assert!(latency >= ms(TIMEOUT_MS), "{target}: {latency:?}");
        assert!(
            (8..=17).contains(&s.checks),
            "{target}: {} checks in 3 s",
            s.checks
        );
    }
    // The healthy ones: all up, never failed, and their probes 180-220 ms
    // apart — never sooner; later only by the machine's own lateness
    // (shared with parallel builds), which the bulk of probes never see.
    let mut gaps = Vec::new();
    for target in &healthy {
        let s = prober.status(target).unwrap();
        assert_eq!((s.health, s.failures), (Health::Up, 0), "{target}");
        let times = &starts[&target.address];
        assert!(times.len() >= 12, "{target}: {} probes in 3 s", times.len());
        gaps.extend(times.windows(2).map(|w| w[1].duration_since(w[0])));
    }
    gaps.sort();
    let (min, max) = (gaps[0], gaps[gaps.len() - 1]);
    let p90 = gaps[gaps.len() * 9 / 10];
    assert!(min >= ms(INTERVAL_MS * 9 / 10), "shortest gap {min:?}");
    assert!(
        p90 <= ms(INTERVAL_MS * 11 / 10 + 5),
        "90th percentile gap {p90:?}"
    );
    assert!(max <= ms(INTERVAL_MS * 11 / 10 + 50), "longest gap {max:?}");
    // The dead ones held places of the cap in turn, never all of it.
    assert!(prober.counters().in_flight_peak.get() <= 54);
    assert_eq!(prober.counters().deferred.get(), 0);

    drop(prober);
    stop.store(true, Ordering::Relaxed);
    healthy_server.join().unwrap();
    let held = slow_server.join().unwrap();
    assert!(!held.is_empty(), "the slow server saw the http probes");
}

#[test]
fn a_capped_prober_lets_blackholed_targets_wait_their_turn_without_losing_any() {
    if !testnet::privileged() {
        return;
    }
    let ns = namespace();
    let timing = Timing::new(ms(INTERVAL_MS), ms(TIMEOUT_MS), 1, 2).unwrap();
    let prober = ns
        .enter(|| {
            Prober::start(ProberOptions {
                max_in_flight: 2,
                ..ProberOptions::default()
            })
            .unwrap()
        })
        .unwrap();
    let dead: Vec<Target> = (1..=6)
        .map(|p| {
            Target::new(
                SocketAddr::new(BLACKHOLE.parse().unwrap(), p),
                Check::tcp(timing),
            )
        })
        .collect();
    let transitions = prober.transitions();
    prober.set_targets(dead.clone()).unwrap();
    let seen = Mutex::new(Vec::new());
    let end = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < dead.len() && Instant::now() < end {
        if let Ok(t) = transitions.recv_timeout(ms(100)) {
            assert_eq!(t.to, Health::Down);
            assert_eq!(t.failures, 2);
            seen.lock().unwrap().push(t.target.address);
        }
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        dead.len(),
        "every target went down"
    );
    let c = prober.counters();
    assert_eq!(c.in_flight_peak.get(), 2);
    assert!(c.deferred.get() > 0);
}
