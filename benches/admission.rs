//! The cost of one admission decision, for each limiter.
//!
//! Each case is a [`Decide`] that makes one decision per step on a
//! simulated clock; criterion times steps (`ns/iter` is nanoseconds per
//! decision), and `admission count CASE N` runs N steps inside
//! `measured_decisions`, which callgrind collects alone
//! (`scripts/admission-instructions.sh` prints instructions per decision).
//! A step includes its few instructions of loop and clock (and, for the
//! flood cases, of the random source).
//!
//! - `service_admitted`: a service budget far from empty; a worker spends
//!   its chunk, one CAS per 64 decisions.
//! - `service_refused`: an empty budget: a relaxed load and a compare.
//! - `service_single_draw`: a draw of one token, a CAS, per decision (a
//!   worker without local tokens for the service).
//! - `client_known`: 1 000 clients over and over in a 4 096-entry table
//!   (in cache).
//! - `client_flood_1mib` / `client_flood_8mib`: a fresh random source per
//!   decision in a table of 65 536 / 524 288 entries (every decision
//!   claims an entry, mostly evicting; the larger table does not fit L2).
//! - `backend_open_close`: a new flow to one of 1 024 capped backends and
//!   its close (two workers' lanes).
//! - `backend_refused`: a backend over its cap.
//! - `reset_ipv4` / `reset_ipv6`: writing the RST for a refused SYN.
//! - `worker_new_flow`: all three checks through `WorkerAdmission` for a
//!   flow that passes them, and its close.
//!
//! Criterion only: `service_admitted_contended` and
//! `backend_open_close_contended` run the same step while a second thread
//! does the same on the same budget, or on the same single backend (so the
//! backend's line moves between the cores on every decision).

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use flowgate_dataplane::admission::{
    write_reset, BackendConnections, ClientRateLimit, ClientRateParams, ClientRateTable,
    ConnectionCap, LocalTokens, RefusedSegment, ServiceLimits, ServiceRateBudget, ServiceRateLimit,
    WorkerAdmission, WorkerConnections,
};
use flowgate_dataplane::wire::{builder::FrameBuilder, parse, tcp_flags};

/// One decision per step.
trait Decide {
    fn step(&mut self);
}

/// xorshift64*.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn v4(n: u32) -> [u8; 16] {
    (0xffffu128 << 32 | u128::from(n)).to_be_bytes()
}

struct ServiceAdmitted {
    budget: Arc<ServiceRateBudget>,
    local: LocalTokens,
    now: u64,
}

impl ServiceAdmitted {
    fn new(budget: Arc<ServiceRateBudget>) -> Self {
        ServiceAdmitted {
            budget,
            local: LocalTokens::default(),
            now: 0,
        }
    }
}

impl Decide for ServiceAdmitted {
    #[inline(always)]
    fn step(&mut self) {
        // 10⁸/s: the clock moves 10 ns a decision, so the pool keeps up.
        self.now += 10;
        black_box(self.budget.admit(&mut self.local, black_box(self.now)));
    }
}

fn fast_budget() -> Arc<ServiceRateBudget> {
    Arc::new(ServiceRateBudget::new(
        ServiceRateLimit::new(100_000_000, Some(1_000_000)).unwrap(),
    ))
}

struct ServiceRefused {
    budget: ServiceRateBudget,
    local: LocalTokens,
}

impl Decide for ServiceRefused {
    #[inline(always)]
    fn step(&mut self) {
        black_box(self.budget.admit(&mut self.local, black_box(1)));
    }
}

struct ServiceSingleDraw {
    budget: Arc<ServiceRateBudget>,
    now: u64,
}

impl Decide for ServiceSingleDraw {
    #[inline(always)]
    fn step(&mut self) {
        self.now += 10;
        black_box(self.budget.admit_one(black_box(self.now)));
    }
}

struct ClientKnown {
    table: ClientRateTable,
    params: ClientRateParams,
    clients: Vec<[u8; 16]>,
    i: usize,
    now: u64,
}

impl Decide for ClientKnown {
    #[inline(always)]
    fn step(&mut self) {
        self.now += 1_000;
        self.i += 1;
        if self.i == self.clients.len() {
            self.i = 0;
        }
        let src = &self.clients[self.i];
        black_box(self.table.admit(0, src, &self.params, black_box(self.now)));
    }
}

struct ClientFlood {
    table: ClientRateTable,
    params: ClientRateParams,
    rng: u64,
    now: u64,
}

impl Decide for ClientFlood {
    #[inline(always)]
    fn step(&mut self) {
        self.now += 100;
        let src = v4(next(&mut self.rng) as u32);
        black_box(self.table.admit(0, &src, &self.params, black_box(self.now)));
    }
}

fn client_params(per_s: i64) -> ClientRateParams {
    ClientRateParams::new(
        ClientRateLimit::new(per_s, Some(10), None, None).unwrap(),
        2,
    )
}

struct BackendOpenClose {
    worker: WorkerConnections,
    cap: ConnectionCap,
    backend: u32,
    /// Backends cycled over, less one (a power of two less one).
    mask: u32,
}

impl Decide for BackendOpenClose {
    #[inline(always)]
    fn step(&mut self) {
        self.backend = (self.backend + 1) & self.mask;
        if self.worker.try_open(black_box(self.backend), &self.cap) {
            self.worker.close(self.backend);
        }
    }
}

fn backends() -> (Arc<BackendConnections>, Vec<WorkerConnections>) {
    let (table, workers) = BackendConnections::new(2, 1024);
    table.reserve(1024);
    (table, workers)
}

struct BackendRefused {
    worker: WorkerConnections,
    cap: ConnectionCap,
}

impl Decide for BackendRefused {
    #[inline(always)]
    fn step(&mut self) {
        black_box(self.worker.try_open(black_box(7), &self.cap));
    }
}

struct Reset {
    segment: RefusedSegment,
    out: [u8; 128],
}

impl Reset {
    fn new(client: &str, vip: &str) -> Self {
        let syn = FrameBuilder::tcp(
            client.parse().unwrap(),
            vip.parse().unwrap(),
            tcp_flags::SYN,
        )
        .tcp_options(&[2, 4, 0x05, 0xb4])
        .build();
        let segment = RefusedSegment::from_frame(&syn, &parse(&syn).unwrap()).unwrap();
        Reset {
            segment,
            out: [0; 128],
        }
    }
}

impl Decide for Reset {
    #[inline(always)]
    fn step(&mut self) {
        black_box(write_reset(black_box(&self.segment), &mut self.out).ok());
    }
}

struct WorkerNewFlow {
    worker: WorkerAdmission,
    budget: ServiceRateBudget,
    client: ClientRateParams,
    cap: ConnectionCap,
    clients: Vec<[u8; 16]>,
    i: usize,
    now: u64,
}

impl Decide for WorkerNewFlow {
    #[inline(always)]
    fn step(&mut self) {
        self.now += 10;
        self.i += 1;
        if self.i == self.clients.len() {
            self.i = 0;
        }
        let limits = ServiceLimits {
            rate: Some(&self.budget),
            client: Some(&self.client),
        };
        let backend = (self.i & 1023) as u32;
        if let Ok(flow) = self
            .worker
            .admit_flow(3, &self.clients[self.i], limits, self.now)
        {
            if self
                .worker
                .admit_backend(flow, limits, backend, Some(&self.cap))
                .is_ok()
            {
                self.worker.connection_closed(backend);
            }
        }
    }
}

/// Every case by name.
const CASES: [&str; 11] = [
    "service_admitted",
    "service_refused",
    "service_single_draw",
    "client_known",
    "client_flood_1mib",
    "client_flood_8mib",
    "backend_open_close",
    "backend_refused",
    "reset_ipv4",
    "reset_ipv6",
    "worker_new_flow",
];

/// The case named `name`, ready to step.
fn case(name: &str) -> Option<Box<dyn Decide>> {
    Some(match name {
        "service_admitted" => Box::new(ServiceAdmitted::new(fast_budget())),
        "service_refused" => {
            let budget = ServiceRateBudget::new(ServiceRateLimit::new(1, Some(1)).unwrap());
            let mut local = LocalTokens::default();
            budget.admit(&mut local, 1);
            Box::new(ServiceRefused { budget, local })
        }
        "service_single_draw" => Box::new(ServiceSingleDraw {
            budget: fast_budget(),
            now: 0,
        }),
        "client_known" => Box::new(ClientKnown {
            table: ClientRateTable::new(4096, 1),
            params: client_params(100),
            clients: (0..1000).map(|i| v4(0xc612_0000 + i)).collect(),
            i: 0,
            now: 0,
        }),
        "client_flood_1mib" | "client_flood_8mib" => {
            let entries = if name == "client_flood_1mib" {
                1 << 16
            } else {
                1 << 19
            };
            Box::new(ClientFlood {
                table: ClientRateTable::new(entries, 1),
                params: client_params(10),
                rng: 0x1234_5678,
                now: 0,
            })
        }
        "backend_open_close" => {
            let (_, mut workers) = backends();
            Box::new(BackendOpenClose {
                worker: workers.remove(0),
                cap: ConnectionCap::new(1_000_000, None).unwrap(),
                backend: 0,
                mask: 1023,
            })
        }
        "backend_refused" => {
            let (_, mut workers) = backends();
            let worker = workers.remove(0);
            let cap = ConnectionCap::new(4, None).unwrap();
            while worker.try_open(7, &cap) {}
            Box::new(BackendRefused { worker, cap })
        }
        "reset_ipv4" => Box::new(Reset::new("198.18.0.2:40000", "198.18.100.10:80")),
        "reset_ipv6" => Box::new(Reset::new("[2001:2::2]:40000", "[2001:2:0:100::10]:80")),
        "worker_new_flow" => {
            let (_, mut workers) = backends();
            let mut worker = WorkerAdmission::new(ClientRateTable::new(4096, 1), workers.remove(0));
            worker.reserve_services(16);
            Box::new(WorkerNewFlow {
                worker,
                budget: ServiceRateBudget::new(
                    ServiceRateLimit::new(100_000_000, Some(1_000_000)).unwrap(),
                ),
                client: client_params(1_000_000),
                cap: ConnectionCap::new(1_000_000, None).unwrap(),
                clients: (0..1000).map(|i| v4(0xc612_0000 + i)).collect(),
                i: 0,
                now: 0,
            })
        }
        _ => return None,
    })
}

/// The steps callgrind counts.
#[inline(never)]
fn measured_decisions(case: &mut dyn Decide, steps: u64) {
    for _ in 0..steps {
        case.step();
    }
}

/// `admission count CASE [STEPS]`: warms the case up, then runs STEPS
/// (default 1 000 000) decisions in `measured_decisions`.
fn count(name: &str, steps: u64) -> ExitCode {
    let Some(mut c) = case(name) else {
        eprintln!("unknown case {name:?}; cases: {}", CASES.join(", "));
        return ExitCode::FAILURE;
    };
    // Fill the flood tables and warm the caches before counting.
    measured_warm_up(c.as_mut(), 1_000_000);
    let start = Instant::now();
    measured_decisions(c.as_mut(), steps);
    let ns = start.elapsed().as_nanos() as f64 / steps as f64;
    println!("{name}: {steps} decisions, {ns:.1} ns each (wall time; meaningless under valgrind)");
    ExitCode::SUCCESS
}

/// The warm-up steps (named apart so callgrind does not count them).
#[inline(never)]
fn measured_warm_up(case: &mut dyn Decide, steps: u64) {
    for _ in 0..steps {
        case.step();
    }
}

/// Times `step` while another thread runs `other` until told to stop.
fn contended(
    c: &mut Criterion,
    name: &str,
    mut step: impl Decide,
    mut other: impl Decide + Send + 'static,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            for _ in 0..64 {
                other.step();
            }
        }
    });
    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| b.iter(|| step.step()));
    group.finish();
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}

fn benches(c: &mut Criterion) {
    {
        let mut group = c.benchmark_group("admission");
        group.throughput(Throughput::Elements(1));
        for name in CASES {
            let mut decider = case(name).unwrap();
            for _ in 0..1_000_000 {
                decider.step();
            }
            group.bench_function(name, |b| b.iter(|| decider.step()));
        }
        group.finish();
    }
    let budget = fast_budget();
    contended(
        c,
        "service_admitted_contended",
        ServiceAdmitted::new(Arc::clone(&budget)),
        ServiceAdmitted::new(budget),
    );
    let (_, mut workers) = backends();
    let cap = ConnectionCap::new(1_000_000, None).unwrap();
    let second = workers.remove(1);
    let first = workers.remove(0);
    contended(
        c,
        "backend_open_close_contended",
        BackendOpenClose {
            worker: first,
            cap,
            backend: 0,
            mask: 0,
        },
        BackendOpenClose {
            worker: second,
            cap,
            backend: 0,
            mask: 0,
        },
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("count") {
        let Some(name) = args.get(1) else {
            eprintln!(
                "usage: admission count CASE [STEPS]; cases: {}",
                CASES.join(", ")
            );
            return ExitCode::FAILURE;
        };
        let steps = args
            .get(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        return count(name, steps);
    }
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    ExitCode::SUCCESS
}
