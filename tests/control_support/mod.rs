//! Shared fixtures of the control-plane tests: a gateway whose control
//! socket is served from a temporary directory over an in-memory data
//! plane, and a forwarding loop — a real `Worker` over in-memory ports,
//! loading the published snapshot once per poll — that sends established
//! and new flows and checks every frame that comes out.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_api::ControlClient;
use flowgate_dataplane::control::{
    ControlServer, ControlState, Dataplane, MemoryDataplane, ServerLimits, StopHandle,
};
use flowgate_dataplane::flow::{FlowTable, FlowTimeouts};
use flowgate_dataplane::hash::{flow_hash, source_hash};
use flowgate_dataplane::port::{MemoryFrames, MemoryPort};
use flowgate_dataplane::rules::{self, Config, Scheduler};
use flowgate_dataplane::table::{Snapshot, SnapshotReader};
use flowgate_dataplane::wire::builder::FrameBuilder;
use flowgate_dataplane::wire::{self, bytes_to_addr, tcp_flags, FiveTuple};
use flowgate_dataplane::worker::{KernelPath, Worker};

/// MAC of the gateway's client side (port 0).
pub const GW_CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x01];
/// The client's MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 0x02];
/// MAC of the gateway's backend side (port 1).
pub const GW_BACKEND_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0x01, 0x01];
/// The VIP of `web`.
pub const WEB_VIP: &str = "198.18.100.10";
/// The client whose connections are established before updates start.
pub const CLIENT: &str = "198.18.0.2";

/// Backends with static neighbours: 198.18.1.11 to 198.18.1.74.
pub const FIRST_BACKEND: u8 = 11;
/// How many backend addresses have neighbours.
pub const BACKENDS_WITH_NEIGHBOURS: u8 = 64;

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fg-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The rules the gateway starts with: `web` (tcp 198.18.100.10:80,
/// maglev) on .11, .12, .13 :8080 weighted 1, 1, 2, and neighbours for
/// every backend address the tests use.
pub fn base_rules() -> String {
    let mut text = String::from(
        "[gateway]\nmaglev_table_size = 251\n\n\
         [[interfaces]]\nname = \"fg-client\"\nmac = \"02:66:67:00:00:01\"\n\n\
         [[interfaces]]\nname = \"fg-backend\"\nmac = \"02:66:67:00:01:01\"\n\n\
         [[neighbours]]\naddress = \"198.18.0.2\"\nmac = \"02:66:67:00:00:02\"\ninterface = \"fg-client\"\n\n",
    );
    for i in 0..BACKENDS_WITH_NEIGHBOURS {
        let host = FIRST_BACKEND + i;
        text.push_str(&format!(
            "[[neighbours]]\naddress = \"198.18.1.{host}\"\nmac = \"02:66:67:00:01:{host:02x}\"\ninterface = \"fg-backend\"\n\n"
        ));
    }
    text.push_str(
        "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\nport = 80\n\
         [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\nweight = 1\n\
         [[services.backends]]\naddress = \"198.18.1.12\"\nport = 8080\nweight = 1\n\
         [[services.backends]]\naddress = \"198.18.1.13\"\nport = 8080\nweight = 2\n",
    );
    text
}

/// A running control plane: state, in-memory data plane, and the socket
/// served on a thread of its own.
pub struct Gateway {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub dataplane: Arc<MemoryDataplane>,
    pub state: Arc<Mutex<ControlState>>,
    server: Arc<ControlServer>,
    stop: StopHandle,
    serving: Option<JoinHandle<()>>,
}

impl Gateway {
    pub fn start(rules_text: &str) -> Gateway {
        Self::start_with(rules_text, ServerLimits::default())
    }

    pub fn start_with(rules_text: &str, limits: ServerLimits) -> Gateway {
        let config = rules::load_str(rules_text, "gw.toml").unwrap();
        let dataplane = Arc::new(MemoryDataplane::with_config(&config));
        let dyn_dataplane: Arc<dyn Dataplane> = dataplane.clone();
        let state = Arc::new(Mutex::new(ControlState::new(
            config,
            "gw.toml",
            dyn_dataplane,
        )));
        let dir = TempDir::new("ctl");
        let socket = dir.path().join("control.sock");
        let server =
            Arc::new(ControlServer::bind_with(&socket, Arc::clone(&state), limits).unwrap());
        let stop = server.stop_handle();
        let serving = {
            let server = Arc::clone(&server);
            std::thread::spawn(move || server.serve())
        };
        Gateway {
            dir,
            socket,
            dataplane,
            state,
            server,
            stop,
            serving: Some(serving),
        }
    }

    pub fn client(&self) -> ControlClient {
        let mut client = ControlClient::connect(&self.socket).unwrap();
        client.set_timeout(Some(Duration::from_secs(60))).unwrap();
        client
    }

    pub fn generation(&self) -> u64 {
        self.dataplane.current().generation()
    }

    /// Clients the server is serving now.
    pub fn active_clients(&self) -> usize {
        self.server.active_clients()
    }

    pub fn waiting_clients(&self) -> usize {
        self.server.waiting_clients()
    }

    pub fn config(&self) -> Config {
        Config::clone(&self.state.lock().unwrap().config())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(serving) = self.serving.take() {
            let _ = serving.join();
        }
    }
}

/// What the forwarding loop saw. Every count of a problem should be 0.
#[derive(Debug, Default, Clone)]
pub struct TrafficReport {
    pub polls: u64,
    /// Packets of the connections established before the updates.
    pub established_sent: u64,
    pub established_forwarded: u64,
    /// Forwarded to another backend than the connection's.
    pub established_misrouted: u64,
    /// Backend replies of those connections, and how many came back right.
    pub replies_sent: u64,
    pub replies_returned: u64,
    pub replies_wrong: u64,
    /// New flows, each checked against the snapshot of the poll it ran in.
    pub new_flows_sent: u64,
    pub new_flows_forwarded: u64,
    pub new_flows_passed: u64,
    pub new_flows_wrong: u64,
    /// New flows sent under the last generation seen.
    pub new_flows_in_last_generation: u64,
    /// Frames the pipeline dropped, for any reason.
    pub dropped: u64,
    /// Frames the port refused (no free frame): none should be.
    pub not_injected: u64,
    pub generations_seen: u64,
    pub first_generation: u64,
    pub last_generation: u64,
    /// The first few problems, described.
    pub problems: Vec<String>,
}

impl TrafficReport {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }

    /// Asserts nothing was dropped or misrouted.
    pub fn assert_clean(&self) {
        assert_eq!(self.established_misrouted, 0, "{self:#?}");
        assert_eq!(
            self.established_forwarded, self.established_sent,
            "{self:#?}"
        );
        assert_eq!(self.replies_wrong, 0, "{self:#?}");
        assert_eq!(self.replies_returned, self.replies_sent, "{self:#?}");
        assert_eq!(self.new_flows_wrong, 0, "{self:#?}");
        assert_eq!(
            self.new_flows_forwarded + self.new_flows_passed,
            self.new_flows_sent,
            "{self:#?}"
        );
        assert_eq!(self.dropped, 0, "{self:#?}");
        assert_eq!(self.not_injected, 0, "{self:#?}");
        assert!(self.problems.is_empty(), "{self:#?}");
    }
}

/// Where new flows go: (VIP, port) pairs, one after another.
#[derive(Clone, Debug)]
pub struct TrafficPlan {
    /// Connections to `web` established before anything else.
    pub established: u16,
    /// Established-flow packets sent per poll.
    pub established_per_poll: u16,
    /// Replies from backends per poll.
    pub replies_per_poll: u16,
    /// New-flow destinations, cycled; one new flow per poll.
    pub new_flow_targets: Vec<SocketAddr>,
    /// Stop on our own after this long, whatever happens.
    pub max_duration: Duration,
}

impl Default for TrafficPlan {
    fn default() -> Self {
        TrafficPlan {
            established: 256,
            established_per_poll: 16,
            replies_per_poll: 4,
            new_flow_targets: vec![SocketAddr::new(WEB_VIP.parse().unwrap(), 80)],
            max_duration: Duration::from_secs(300),
        }
    }
}

/// A forwarding loop running on its own thread.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    /// The generation of the snapshot the worker's last poll used.
    generation: Arc<AtomicU64>,
    /// Polls done so far.
    polls: Arc<AtomicU64>,
    handle: Option<JoinHandle<TrafficReport>>,
}

impl Traffic {
    /// Starts the loop over `reader`'s snapshots; returns once the
    /// established connections are set up.
    pub fn start(reader: SnapshotReader, config: &Config, plan: TrafficPlan) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let polls = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let timeouts = FlowTimeouts::from(&config.flows);
        let handle = {
            let (stop, generation, polls, ready) = (
                stop.clone(),
                generation.clone(),
                polls.clone(),
                ready.clone(),
            );
            std::thread::spawn(move || {
                let mut lp = Loop::new(reader, timeouts, plan);
                lp.establish();
                ready.store(true, Ordering::Release);
                let started = Instant::now();
                while !stop.load(Ordering::Acquire) && started.elapsed() < lp.plan.max_duration {
                    lp.round();
                    generation.store(lp.report.last_generation, Ordering::Release);
                    polls.store(lp.report.polls, Ordering::Release);
                }
                lp.report
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.load(Ordering::Acquire) {
            if handle.is_finished() {
                let outcome = handle.join();
                panic!("the forwarding loop ended before it was ready: {outcome:?}");
            }
            assert!(
                Instant::now() < deadline,
                "connections not established in time"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Traffic {
            stop,
            generation,
            polls,
            handle: Some(handle),
        }
    }

    /// Waits until the worker has run `polls` more polls with a snapshot of
    /// generation `generation` or later.
    pub fn wait_for(&self, generation: u64, polls: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.generation.load(Ordering::Acquire) < generation {
            assert!(
                Instant::now() < deadline,
                "the worker never saw generation {generation}"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let from = self.polls.load(Ordering::Acquire);
        while self.polls.load(Ordering::Acquire) < from + polls {
            assert!(Instant::now() < deadline, "the worker stopped polling");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Polls done so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Acquire)
    }

    /// Stops the loop and returns what it saw.
    pub fn finish(mut self) -> TrafficReport {
        self.stop.store(true, Ordering::Release);
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("the forwarding loop panicked")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Records frames passed to the kernel, by client endpoint.
#[derive(Default)]
struct RecordingKernel {
    passed: Vec<(IpAddr, u16)>,
}

impl KernelPath for RecordingKernel {
    fn pass(&mut self, _ingress: u16, frame: &[u8]) {
        if let Ok(meta) = wire::parse(frame) {
            self.passed
                .push((bytes_to_addr(&meta.tuple.src), meta.tuple.src_port));
        }
    }
}

/// What a new flow sent in this poll must do.
enum Expect {
    /// Go to this backend.
    Backend(SocketAddr),
    /// Go to one of these (weighted round-robin: the cursor is the
    /// worker's).
    OneOf(Vec<SocketAddr>),
    /// Go to the kernel (no service there).
    Pass,
}

/// The forwarding loop's state (on its thread).
struct Loop {
    reader: SnapshotReader,
    plan: TrafficPlan,
    memory: MemoryFrames,
    ports: Vec<MemoryPort>,
    worker: Worker,
    kernel: RecordingKernel,
    now_ns: u64,
    /// Client port → backend, for the established connections.
    backends: Vec<SocketAddr>,
    next_established: usize,
    next_reply: usize,
    next_target: usize,
    new_flow_serial: u64,
    out: Vec<Vec<u8>>,
    report: TrafficReport,
}

const ESTABLISHED_BASE_PORT: u16 = 20_000;

impl Loop {
    fn new(reader: SnapshotReader, timeouts: FlowTimeouts, plan: TrafficPlan) -> Loop {
        let frames = 4096;
        let mut memory = MemoryFrames::new(frames, 2048);
        let pool = memory.pool();
        Loop {
            reader,
            plan,
            memory,
            ports: vec![
                MemoryPort::new("fg-client", 1024),
                MemoryPort::new("fg-backend", 1024),
            ],
            worker: Worker::new(FlowTable::new(1 << 18, timeouts), pool, 2, 256),
            kernel: RecordingKernel::default(),
            now_ns: 1_000_000_000,
            backends: Vec::new(),
            next_established: 0,
            next_reply: 0,
            next_target: 0,
            new_flow_serial: 0,
            out: Vec::new(),
            report: TrafficReport::default(),
        }
    }

    fn client(port: u16) -> SocketAddr {
        SocketAddr::new(CLIENT.parse().unwrap(), port)
    }

    fn web() -> SocketAddr {
        SocketAddr::new(WEB_VIP.parse().unwrap(), 80)
    }

    fn from_client(src: SocketAddr, dst: SocketAddr, flags: u8) -> Vec<u8> {
        FrameBuilder::tcp(src, dst, flags)
            .macs(CLIENT_MAC, GW_CLIENT_MAC)
            .payload(b"data")
            .build()
    }

    fn inject(&mut self, port: usize, frame: &[u8]) -> bool {
        let ok = self.ports[port].inject(&mut self.memory, frame);
        if !ok {
            self.report.not_injected += 1;
        }
        ok
    }

    /// One poll over whatever was injected; returns the snapshot used and
    /// what came out of each port.
    fn poll(&mut self) -> (Arc<Snapshot>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        // Kept past the poll to check its decisions: a test may pay for the
        // reference count a worker does not.
        let snapshot: Arc<Snapshot> = Arc::clone(&self.reader.load());
        let generation = snapshot.generation();
        if generation != self.report.last_generation || self.report.polls == 0 {
            if generation < self.report.last_generation {
                self.report.problem(format!(
                    "generation went back from {} to {generation}",
                    self.report.last_generation
                ));
            }
            if self.report.polls == 0 {
                self.report.first_generation = generation;
            }
            self.report.generations_seen += 1;
            self.report.last_generation = generation;
            self.report.new_flows_in_last_generation = 0;
        }
        self.worker.poll(
            &mut self.ports,
            &mut self.memory,
            &snapshot,
            &mut self.kernel,
            self.now_ns,
        );
        self.now_ns += 10_000;
        self.report.polls += 1;
        let mut to_client = Vec::new();
        let mut to_backends = Vec::new();
        self.ports[0].take_transmitted(&self.memory, &mut to_client);
        self.ports[1].take_transmitted(&self.memory, &mut to_backends);
        self.report.dropped = self.worker.pipeline().counters().dropped();
        (snapshot, to_client, to_backends)
    }

    /// Opens the established connections and learns their backends.
    fn establish(&mut self) {
        // The first poll hands the ports free frames to receive into.
        self.poll();
        let count = self.plan.established;
        let mut opened = 0u16;
        while opened < count {
            let batch = (count - opened).min(64);
            for i in opened..opened + batch {
                let f = Self::from_client(
                    Self::client(ESTABLISHED_BASE_PORT + i),
                    Self::web(),
                    tcp_flags::SYN,
                );
                assert!(self.inject(0, &f));
            }
            let (_, _, to_backends) = self.poll();
            assert_eq!(to_backends.len(), batch as usize, "SYNs not all forwarded");
            for frame in to_backends {
                let meta = wire::parse(&frame).unwrap();
                let (src, dst) = endpoints(&meta.tuple);
                assert_eq!(
                    src.port(),
                    ESTABLISHED_BASE_PORT + self.backends.len() as u16
                );
                self.backends.push(dst);
            }
            opened += batch;
        }
    }

    /// One poll's worth of traffic, checked.
    fn round(&mut self) {
        let expect_established = self.send_established();
        let expect_replies = self.send_replies();
        let new_flow = self.send_new_flow();

        self.kernel.passed.clear();
        let (snapshot, to_client, to_backends) = self.poll();

        let new_flow_out =
            self.check_to_backends(&snapshot, &to_backends, expect_established, new_flow);
        self.check_replies(&to_client, expect_replies);
        if let Some((src, target)) = new_flow {
            self.check_new_flow(&snapshot, src, target, new_flow_out);
        }
    }

    /// Injects this round's established-flow packets; returns each one's
    /// client port and the backend it must reach.
    fn send_established(&mut self) -> HashMap<u16, SocketAddr> {
        let n = self.backends.len();
        let mut expect_established: HashMap<u16, SocketAddr> = HashMap::new();
        for _ in 0..self.plan.established_per_poll.min(n as u16) {
            let i = self.next_established % n;
            self.next_established += 1;
            let port = ESTABLISHED_BASE_PORT + i as u16;
            let f = Self::from_client(Self::client(port), Self::web(), tcp_flags::ACK);
            if self.inject(0, &f) {
                self.report.established_sent += 1;
                expect_established.insert(port, self.backends[i]);
            }
        }
        expect_established
    }

    /// Injects this round's replies from the backends of established
    /// connections; returns the client ports they must reach.
    fn send_replies(&mut self) -> HashMap<u16, ()> {
        let n = self.backends.len();
        let mut expect_replies: HashMap<u16, ()> = HashMap::new();
        for _ in 0..self.plan.replies_per_poll.min(n as u16) {
            let i = self.next_reply % n;
            self.next_reply += 1;
            let port = ESTABLISHED_BASE_PORT + i as u16;
            if expect_replies.contains_key(&port) {
                continue;
            }
            let f = FrameBuilder::tcp(self.backends[i], Self::client(port), tcp_flags::ACK)
                .macs([0x02, 0x66, 0x67, 0, 0x01, 0x11], GW_BACKEND_MAC)
                .build();
            if self.inject(1, &f) {
                self.report.replies_sent += 1;
                expect_replies.insert(port, ());
            }
        }
        expect_replies
    }

    /// Injects one new flow, from a client never seen before; returns its
    /// client and target if it was injected.
    fn send_new_flow(&mut self) -> Option<(SocketAddr, SocketAddr)> {
        if self.plan.new_flow_targets.is_empty() {
            return None;
        }
        let target =
            self.plan.new_flow_targets[self.next_target % self.plan.new_flow_targets.len()];
        self.next_target += 1;
        let serial = self.new_flow_serial;
        self.new_flow_serial += 1;
        // 198.18.2.0 - 198.18.255.255, ports 1024..65024: never reused.
        let host = 2 * 256 + (serial / 64_000) as u32;
        let src = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(198, 18, 0, 0)) + host,
            )),
            1024 + (serial % 64_000) as u16,
        );
        let f = Self::from_client(src, target, tcp_flags::SYN);
        if self.inject(0, &f) {
            self.report.new_flows_sent += 1;
            return Some((src, target));
        }
        None
    }

    /// Checks the frames to backends: each established-flow packet went to
    /// its connection's backend, and none is missing. Returns where the new
    /// flow's frame went, if anywhere.
    fn check_to_backends(
        &mut self,
        snapshot: &Snapshot,
        to_backends: &[Vec<u8>],
        mut expect_established: HashMap<u16, SocketAddr>,
        new_flow: Option<(SocketAddr, SocketAddr)>,
    ) -> Option<SocketAddr> {
        let mut new_flow_out: Option<SocketAddr> = None;
        for frame in to_backends {
            let Ok(meta) = wire::parse(frame) else {
                self.report.problem("unparsable frame to a backend".into());
                continue;
            };
            let (src, dst) = endpoints(&meta.tuple);
            if let Some((nsrc, _)) = new_flow {
                if src == nsrc {
                    new_flow_out = Some(dst);
                    continue;
                }
            }
            match expect_established.remove(&src.port()) {
                Some(backend) if src.ip() == Self::client(0).ip() => {
                    self.report.established_forwarded += 1;
                    if dst != backend {
                        self.report.established_misrouted += 1;
                        self.report.problem(format!(
                            "connection from {src} went to {dst}, not its backend {backend} (generation {})",
                            snapshot.generation()
                        ));
                    }
                }
                _ => self
                    .report
                    .problem(format!("unexpected frame {src} -> {dst}")),
            }
        }
        for port in expect_established.keys() {
            self.report.problem(format!(
                "packet of the connection from port {port} was not forwarded (generation {})",
                snapshot.generation()
            ));
        }
        new_flow_out
    }

    /// Checks the frames to the client: each is an expected reply.
    fn check_replies(&mut self, to_client: &[Vec<u8>], mut expect_replies: HashMap<u16, ()>) {
        for frame in to_client {
            let Ok(meta) = wire::parse(frame) else {
                self.report.problem("unparsable frame to the client".into());
                continue;
            };
            let (src, dst) = endpoints(&meta.tuple);
            if expect_replies.remove(&dst.port()).is_some()
                && src == Self::web()
                && dst.ip() == Self::client(0).ip()
            {
                self.report.replies_returned += 1;
            } else {
                self.report.replies_wrong += 1;
                self.report.problem(format!("wrong reply {src} -> {dst}"));
            }
        }
    }

    /// Checks the new flow from `src` to `target`, which went to `out` (or
    /// nowhere), against the rules of this poll's snapshot.
    fn check_new_flow(
        &mut self,
        snapshot: &Snapshot,
        src: SocketAddr,
        target: SocketAddr,
        out: Option<SocketAddr>,
    ) {
        let expected = expect_new_flow(snapshot, src, target);
        let passed = self.kernel.passed.contains(&(src.ip(), src.port()));
        let ok = match (&expected, out) {
            (Expect::Backend(b), Some(out)) => *b == out,
            (Expect::OneOf(all), Some(out)) => all.contains(&out),
            (Expect::Pass, None) => passed,
            _ => false,
        };
        if out.is_some() {
            self.report.new_flows_forwarded += 1;
        } else if passed {
            self.report.new_flows_passed += 1;
        }
        if ok {
            self.report.new_flows_in_last_generation += 1;
        } else {
            self.report.new_flows_wrong += 1;
            self.report.problem(format!(
                "new flow {src} -> {target} went to {out:?} (passed: {passed}) under generation {}",
                snapshot.generation()
            ));
        }
    }
}

/// What a new flow from `src` to `target` must do under `snapshot`.
fn expect_new_flow(snapshot: &Snapshot, src: SocketAddr, target: SocketAddr) -> Expect {
    let tuple = FiveTuple::new(src.ip(), target.ip(), src.port(), target.port(), 6);
    let Some((_, service)) = snapshot.lookup_service(6, &tuple.dst, target.port()) else {
        return Expect::Pass;
    };
    let endpoint = |id| {
        let e = snapshot.endpoint(id).unwrap();
        SocketAddr::new(bytes_to_addr(&e.address), e.port)
    };
    match service.scheduler() {
        Scheduler::Maglev => {
            Expect::Backend(endpoint(service.maglev_lookup(flow_hash(&tuple)).unwrap()))
        }
        Scheduler::Sh => Expect::Backend(endpoint(
            service.maglev_lookup(source_hash(&tuple.src)).unwrap(),
        )),
        // TCP only here, and a fan-out service is UDP.
        Scheduler::Wrr | Scheduler::Fanout(_) => Expect::OneOf(
            service
                .wrr_schedule()
                .iter()
                .map(|&id| endpoint(id))
                .collect(),
        ),
    }
}

fn endpoints(t: &FiveTuple) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(bytes_to_addr(&t.src), t.src_port),
        SocketAddr::new(bytes_to_addr(&t.dst), t.dst_port),
    )
}
