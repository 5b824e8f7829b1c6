//! Control-plane update speed, end to end over the real control socket.
//!
//! - `bulk`: 100 000 backend changes in one `batch` request (add them, then
//!   reweight them, then remove them), timed from encoding the request to
//!   reading the answer; the share spent compiling and publishing the
//!   snapshot is reported beside it. Shapes: 100 services of 1 000
//!   backends (Maglev tables of 65 537), and one service of 100 000
//!   backends (10 000 019 slots, the recommended 100 per backend).
//! - `switch`: worker threads load the `SnapshotReader` once per simulated
//!   batch (a 10 µs spin, about 64 packets' work) and note when they first
//!   see each generation; 1 000 single-backend changes are made one after
//!   another. Reported: how long after the API answered the last worker
//!   used the new generation (0 when all had switched before the answer
//!   arrived), and how long after the publish. Then the same with idle
//!   workers, napping 50 µs between polls as the daemon's adaptive
//!   workers do (`park_timeout`, unparked by each publish).
//! - `one_service`: 1 000 services; changing one backend's weight rebuilds
//!   that service's Maglev table and no other (checked: every other table
//!   is the very same allocation), compared with compiling everything.
//!
//! Run: `cargo bench --bench control` (release build; about a minute).
//! Prints medians, p99 and maxima; docs/benchmarks.md keeps the results.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowgate_api::{
    BackendAdd, BackendEdit, BackendKey, BackendSpec, Batch, ConfigDiff, ControlClient, Edit,
    FlowEntry, Reply, Request, StatsReport, StatusReport,
};
use flowgate_dataplane::control::{
    Applied, ApplyError, ControlServer, ControlState, Dataplane, MemoryDataplane, ServerLimits,
    StopHandle,
};
use flowgate_dataplane::rules::{Backend, Config, Protocol, Scheduler, Service};
use flowgate_dataplane::table::{Snapshot, SnapshotReader};

/// Times each apply: how long the snapshot took to compile and publish,
/// and when it was published.
struct TimedDataplane {
    inner: MemoryDataplane,
    last: Mutex<Option<(Duration, Instant)>>,
}

impl Dataplane for TimedDataplane {
    fn apply(&self, config: &Config) -> Result<Applied, ApplyError> {
        let start = Instant::now();
        let applied = self.inner.apply(config)?;
        let published = Instant::now();
        *self.last.lock().unwrap() = Some((published - start, published));
        Ok(applied)
    }
    fn status(&self) -> StatusReport {
        self.inner.status()
    }
    fn stats(&self) -> StatsReport {
        self.inner.stats()
    }
    fn flows(&self, service: Option<&str>, limit: usize) -> Vec<FlowEntry> {
        self.inner.flows(service, limit)
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// A control server over a timed in-memory data plane.
struct Bench {
    _dir: TempDir,
    socket: PathBuf,
    dataplane: Arc<TimedDataplane>,
    stop: StopHandle,
    serving: Option<std::thread::JoinHandle<()>>,
}

impl Bench {
    fn start(config: Config) -> Bench {
        let dataplane = Arc::new(TimedDataplane {
            inner: MemoryDataplane::with_config(&config),
            last: Mutex::new(None),
        });
        let shared: Arc<dyn Dataplane> = dataplane.clone();
        let state = Arc::new(Mutex::new(ControlState::new(config, "bench", shared)));
        let dir = TempDir::new();
        let socket = dir.0.join("control.sock");
        // The bench's client waits between requests while it builds the
        // next one: longer than the default idle timeout allows.
        let limits = ServerLimits {
            idle_timeout: Duration::from_secs(600),
            ..ServerLimits::default()
        };
        let server = ControlServer::bind_with(&socket, state, limits).unwrap();
        let stop = server.stop_handle();
        let serving = std::thread::spawn(move || server.serve());
        Bench {
            _dir: dir,
            socket,
            dataplane,
            stop,
            serving: Some(serving),
        }
    }

    fn client(&self) -> ControlClient {
        let mut client = ControlClient::connect(&self.socket).unwrap();
        client.set_timeout(Some(Duration::from_secs(600))).unwrap();
        client
    }

    fn reader(&self) -> SnapshotReader {
        self.dataplane.inner.reader()
    }

    /// The last apply's compile-and-publish time and publish instant.
    fn last_apply(&self) -> (Duration, Instant) {
        self.last_apply_opt().expect("nothing was applied")
    }

    fn last_apply_opt(&self) -> Option<(Duration, Instant)> {
        *self.dataplane.last.lock().unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(s) = self.serving.take() {
            let _ = s.join();
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("fg-bench-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `services` services at 198.19.X.Y:80, each with `backends` backends
/// (distinct addresses in 198.18.0.0/15, port 8080).
fn config(services: usize, backends: usize, table_size: u32) -> Config {
    let services = (0..services)
        .map(|s| Service {
            limits: Default::default(),

            announce: Default::default(),
            name: format!("svc-{s}"),
            protocol: Protocol::Tcp,
            vip: vip(s),
            port: 80,
            scheduler: Scheduler::Maglev,
            maglev_table_size: table_size,
            failover: Default::default(),
            health: Default::default(),
            backends: (0..backends)
                .map(|b| Backend::new(backend_address(s, b), 8080))
                .collect(),
            routing: Default::default(),
        })
        .collect();
    let mut config = Config {
        services,
        ..Config::default()
    };
    config.gateway.maglev_table_size = table_size;
    config
}

fn vip(s: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(198, 19, (s >> 8) as u8, s as u8).into()
}

/// Backend `b` of service `s`: unique per (s, b) for b < 2^16... spread
/// over 198.18.0.0/16 and ports, so services do not share backends.
fn backend_address(s: usize, b: usize) -> std::net::IpAddr {
    let n = (s * 100_003 + b) as u32;
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) | (n & 0xffff))
        .into()
}

fn backend_port(s: usize, b: usize) -> u16 {
    9000 + (((s * 100_003 + b) >> 16) as u16)
}

/// Times one request end to end (encode, send, apply, answer, decode).
fn timed_call(client: &mut ControlClient, request: Request) -> (Duration, Reply) {
    let start = Instant::now();
    let reply = client.call(request).unwrap_or_else(|e| panic!("{e}"));
    (start.elapsed(), reply)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// One of the three bulk changes.
#[derive(Clone, Copy)]
enum BulkStage {
    Add,
    Reweight,
    Remove,
}

impl BulkStage {
    const ALL: [BulkStage; 3] = [BulkStage::Add, BulkStage::Reweight, BulkStage::Remove];

    fn name(self) -> &'static str {
        match self {
            BulkStage::Add => "add",
            BulkStage::Reweight => "reweight",
            BulkStage::Remove => "remove",
        }
    }

    /// The edit of backend `b` of service `s` (each service's backend 0
    /// is its own and stays).
    fn edit(self, s: usize, b: usize) -> Edit {
        let (service, address, port) = (
            format!("svc-{s}"),
            backend_address(s, b + 1).to_string(),
            backend_port(s, b + 1),
        );
        match self {
            BulkStage::Add => Edit::BackendAdd(BackendAdd {
                service,
                backend: BackendSpec {
                    weight: Some(1 + (b % 3) as u32),
                    ..BackendSpec::new(address, port)
                },
            }),
            BulkStage::Reweight => Edit::BackendEdit(BackendEdit {
                service,
                address,
                port,
                weight: Some(4 + (b % 5) as u32),
                zone: None,
                set: None,
                group: None,
                health: Default::default(),
                heartbeat_ttl: None,
            }),
            BulkStage::Remove => Edit::BackendDel(BackendKey {
                service,
                address,
                port,
            }),
        }
    }

    /// How many backends the change's diff reports for this stage.
    fn changed(self, diff: &ConfigDiff) -> usize {
        match self {
            BulkStage::Add => diff.backends_added.len(),
            BulkStage::Reweight => diff.backends_reweighted.len(),
            BulkStage::Remove => diff.backends_removed.len(),
        }
    }
}

/// 100 000 backend changes in one request: add, reweight, remove.
fn bulk(services: usize, per_service: usize, table_size: u32, rounds: usize) {
    let total = services * per_service;
    println!(
        "bulk: {total} backend changes in one request, {services} service(s) x {per_service}, tables of {table_size}"
    );
    // Each service starts with one backend of its own, which stays.
    let bench = Bench::start(config(services, 1, table_size));
    let mut client = bench.client();
    // Per stage: end-to-end times and compile + publish times.
    let mut times: [(Vec<Duration>, Vec<Duration>); 3] = Default::default();
    let mut bytes = 0;
    for round in 0..rounds {
        for (i, stage) in BulkStage::ALL.into_iter().enumerate() {
            let edits: Vec<Edit> = (0..services)
                .flat_map(|s| (0..per_service).map(move |b| stage.edit(s, b)))
                .collect();
            let request = Request::Batch(Batch {
                edits,
                dry_run: false,
            });
            if round == 0 && i == 0 {
                bytes = serde_json::to_vec(&request).unwrap().len();
            }
            let (t, reply) = timed_call(&mut client, request);
            let Reply::Changed(c) = reply else { panic!() };
            assert_eq!(stage.changed(&c.diff), total);
            times[i].0.push(t);
            times[i].1.push(bench.last_apply().0);
        }
    }
    println!(
        "  request size (add): {:.1} MiB",
        bytes as f64 / (1 << 20) as f64
    );
    for (stage, (all, apply)) in BulkStage::ALL.into_iter().zip(times) {
        println!(
            "  {:<9} end to end median {:>10} (max {:>10}); of which compile + publish {:>10}",
            stage.name(),
            ms(median(all.clone())),
            ms(*all.iter().max().unwrap()),
            ms(median(apply))
        );
    }
}

/// How soon after an answer every worker uses the new generation: busy
/// workers (a 10 µs batch per snapshot load), or idle ones napping as the
/// daemon's adaptive workers do (`park_timeout` of 50 µs between polls,
/// unparked by a publish).
fn switch(workers: usize, updates: usize, idle: bool) {
    let what = if idle {
        "idle, napping 50 µs between polls"
    } else {
        "loading the snapshot per 10 µs batch"
    };
    println!("switch: {workers} worker thread(s) {what}, {updates} one-backend changes");
    let bench = Bench::start(config(10, 10, 251));
    let stop = Arc::new(AtomicBool::new(false));
    let max_generation = updates + 10;
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let reader = bench.reader();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                if idle {
                    reader.wake_on_publish();
                }
                // first_seen[g] = when this worker first used generation g.
                let mut first_seen: Vec<Option<Instant>> = vec![None; max_generation + 1];
                let mut last = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = reader.load();
                    let g = snapshot.generation();
                    if g != last {
                        let now = Instant::now();
                        for slot in first_seen
                            .iter_mut()
                            .take(g as usize + 1)
                            .skip(last as usize + 1)
                        {
                            slot.get_or_insert(now);
                        }
                        last = g;
                    }
                    if idle {
                        // Nothing received: the daemon's idle nap.
                        std::thread::park_timeout(Duration::from_micros(50));
                        continue;
                    }
                    // A batch's worth of work with the snapshot held.
                    let until = Instant::now() + Duration::from_micros(10);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    drop(snapshot);
                }
                first_seen
            })
        })
        .collect();

    let mut client = bench.client();
    let mut answers: Vec<(u64, Instant, Instant)> = Vec::with_capacity(updates);
    for i in 0..updates {
        let request = Request::BackendEdit(BackendEdit {
            service: format!("svc-{}", i % 10),
            address: backend_address(i % 10, 0).to_string(),
            port: 8080,
            weight: Some(if (i / 10) % 2 == 0 { 5 } else { 1 }),
            zone: None,
            set: None,
            group: None,
            health: Default::default(),
            heartbeat_ttl: None,
        });
        let reply = client.call(request).unwrap();
        let answered = Instant::now();
        let Reply::Changed(c) = reply else { panic!() };
        assert!(c.applied);
        answers.push((c.generation, answered, bench.last_apply().1));
        // Let the workers run a few batches between changes.
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Vec<Option<Instant>>> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut after_answer = Vec::with_capacity(updates);
    let mut after_publish = Vec::with_capacity(updates);
    let mut before_answer = 0;
    for (generation, answered, published) in answers {
        let last = seen
            .iter()
            .map(|w| w[generation as usize].expect("a worker never saw a generation"))
            .max()
            .unwrap();
        if last <= answered {
            before_answer += 1;
        }
        after_answer.push(last.saturating_duration_since(answered));
        after_publish.push(last.saturating_duration_since(published));
    }
    after_answer.sort();
    after_publish.sort();
    println!("  all workers switched before the answer arrived: {before_answer} of {updates}");
    for (what, xs) in [
        ("after the answer", &after_answer),
        ("after the publish", &after_publish),
    ] {
        println!(
            "  last worker on the new generation {what:<17}: median {:>9}, p99 {:>9}, max {:>9}",
            us(percentile(xs, 0.5)),
            us(percentile(xs, 0.99)),
            us(*xs.last().unwrap())
        );
    }
}

/// One service changed among 1 000: only its table is rebuilt.
fn one_service(services: usize, rounds: usize) {
    println!("one_service: {services} services x 10 backends, tables of 65537; one backend reweighted per change");
    let base = config(services, 10, 65_537);
    let t = Instant::now();
    let full = Snapshot::build(&base, None);
    let full_build = t.elapsed();
    drop(full);
    let bench = Bench::start(base);
    let mut client = bench.client();
    let mut times = Vec::new();
    let mut applies = Vec::new();
    for round in 0..rounds {
        let s = (round * 37) % services;
        let before = bench.dataplane.inner.current();
        let (t, reply) = timed_call(
            &mut client,
            Request::BackendEdit(BackendEdit {
                service: format!("svc-{s}"),
                address: backend_address(s, 3).to_string(),
                port: 8080,
                weight: Some(2 + (round % 2) as u32),
                zone: None,
                set: None,
                group: None,
                health: Default::default(),
                heartbeat_ttl: None,
            }),
        );
        let Reply::Changed(c) = reply else { panic!() };
        assert!(c.applied);
        times.push(t);
        applies.push(bench.last_apply().0);
        let after = bench.dataplane.inner.current();
        let mut rebuilt = Vec::new();
        for (id, service) in after.services() {
            let old = before.service(id).unwrap();
            if !service.maglev_table().shares_slots_with(old.maglev_table()) {
                rebuilt.push(service.name().to_owned());
            }
        }
        assert_eq!(
            rebuilt,
            [format!("svc-{s}")],
            "exactly the changed service is rebuilt"
        );
    }
    println!(
        "  change end to end median {}, of which compile + publish {}; every other table reused ({} checked changes)",
        ms(median(times)),
        ms(median(applies)),
        rounds
    );
    println!(
        "  compiling all {services} services from nothing: {}",
        ms(full_build)
    );
}

/// Where the time of a 100 000-change batch goes, stage by stage, in one
/// thread (no socket): decode the request, apply it to the state (edit,
/// check, diff, compile, publish), encode and decode the answer.
fn stages(services: usize, per_service: usize) {
    use flowgate_api::{parse_request, RequestEnvelope, Response};
    use flowgate_dataplane::control::diff;
    use flowgate_dataplane::rules::check;
    println!(
        "stages: {} backend adds in one batch, {services} services",
        services * per_service
    );
    let base = config(services, 1, 65_537);
    let dataplane = Arc::new(TimedDataplane {
        inner: MemoryDataplane::with_config(&base),
        last: Mutex::new(None),
    });
    let shared: Arc<dyn Dataplane> = dataplane.clone();
    let mut state = ControlState::new(base.clone(), "bench", shared);
    let edits: Vec<Edit> = (0..services)
        .flat_map(|s| (0..per_service).map(move |b| (s, b)))
        .map(|(s, b)| {
            Edit::BackendAdd(BackendAdd {
                service: format!("svc-{s}"),
                backend: BackendSpec::new(
                    backend_address(s, b + 1).to_string(),
                    backend_port(s, b + 1),
                ),
            })
        })
        .collect();
    let t = Instant::now();
    let line = serde_json::to_vec(&RequestEnvelope::new(Request::Batch(Batch {
        edits,
        dry_run: false,
    })))
    .unwrap();
    let encode = t.elapsed();
    let t = Instant::now();
    let request = parse_request(&line).unwrap();
    let decode = t.elapsed();
    let t = Instant::now();
    let reply = state.handle(request).unwrap();
    let handle = t.elapsed();
    let (apply, _) = dataplane.last.lock().unwrap().unwrap();
    let t = Instant::now();
    let response = serde_json::to_vec(&Response::new(Ok(reply))).unwrap();
    let answer = t.elapsed();
    let t = Instant::now();
    let _: Response = serde_json::from_slice(&response).unwrap();
    let read_answer = t.elapsed();
    let next = state.config();
    let t = Instant::now();
    check(&next).unwrap();
    let checked = t.elapsed();
    let t = Instant::now();
    let d = diff(&base, &next);
    let diffed = t.elapsed();
    assert_eq!(d.backends_added.len(), services * per_service);
    println!(
        "  client encodes the request ({:.1} MiB)  {}",
        line.len() as f64 / (1 << 20) as f64,
        ms(encode)
    );
    println!("  daemon decodes it                     {}", ms(decode));
    println!(
        "  daemon applies it                     {} (compile + publish {}, check {}, diff {})",
        ms(handle),
        ms(apply),
        ms(checked),
        ms(diffed)
    );
    println!(
        "  daemon encodes the answer ({:.1} MiB)  {}",
        response.len() as f64 / (1 << 20) as f64,
        ms(answer)
    );
    println!(
        "  client decodes the answer             {}",
        ms(read_answer)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter may follow.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let run = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if run("stages") {
        stages(100, 1_000);
    }
    if run("bulk") {
        bulk(100, 1_000, 65_537, 5);
        bulk(1, 100_000, 10_000_019, 3);
    }
    if run("switch") {
        switch(1, 1_000, false);
        switch(2, 1_000, false);
        switch(1, 1_000, true);
        switch(2, 1_000, true);
    }
    if run("one_service") {
        one_service(1_000, 20);
    }
}
