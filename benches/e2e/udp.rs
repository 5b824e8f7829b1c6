//! The end-to-end harness's UDP tool (`scripts/bench-e2e.sh`): an echo
//! server for the backends and a round-trip latency client.
//!
//! ```text
//! e2e_udp echo ADDR:PORT [ADDR:PORT ...] [--seconds N]
//! e2e_udp rtt --to ADDR:PORT [--count N] [--warmup N] [--timeout-ms N] [--seconds N]
//! ```
//!
//! `echo` binds every address given (one thread each) and sends every
//! datagram back to where it came from, from the address it was sent to:
//! bind the backends' own addresses, not 0.0.0.0, so that a reply leaves
//! from the address the gateway expects. It stops after `--seconds`
//! (default one hour), or when killed.
//!
//! `rtt` sends one request at a time on one connected socket (one flow
//! through the gateway), waits for its echo, and prints one line:
//!
//! ```text
//! rtt sent=20000 received=20000 lost=0 min_us=31.2 p50_us=45.0 p90_us=52.1 p99_us=80.3 max_us=412.0
//! ```
//!
//! A request that gets no echo within `--timeout-ms` counts as lost and is
//! left out of the percentiles; an echo that is not the one awaited
//! (a late one) is skipped. The run ends after `--count` requests or
//! `--seconds`, whichever comes first. Exit code 1 if more than 1 % was
//! lost, 2 on a usage or socket error.
//!
//! `cargo bench` runs this binary with `--bench` and no command; it then
//! says it is a tool and exits 0.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// Bytes of a request: a sequence number and padding, a small RPC.
const REQUEST_LEN: usize = 32;
/// Longest `echo` run unless told otherwise.
const DEFAULT_ECHO_SECONDS: u64 = 3600;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo") => echo(&args[1..]),
        Some("rtt") => rtt(&args[1..]),
        Some("--bench") | None => {
            println!("e2e_udp: a tool of scripts/bench-e2e.sh (echo | rtt); nothing to run here");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command {other:?}: echo | rtt")),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("e2e_udp: {message}");
            ExitCode::from(2)
        }
    }
}

/// Reads the value after a flag.
fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn number(text: &str, flag: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("{flag}: not a number: {text:?}"))
}

fn address(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("not an ADDR:PORT: {text:?}"))
}

fn echo(args: &[String]) -> Result<ExitCode, String> {
    let mut binds = Vec::new();
    let mut seconds = DEFAULT_ECHO_SECONDS;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--seconds" => seconds = number(value(args, &mut i, "--seconds")?, "--seconds")?,
            other => binds.push(address(other)?),
        }
        i += 1;
    }
    if binds.is_empty() {
        return Err("echo needs at least one ADDR:PORT".into());
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut sockets = Vec::new();
    for bind in &binds {
        let socket = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
        // Wake up now and then to see the deadline.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| format!("{bind}: {e}"))?;
        sockets.push(socket);
    }
    eprintln!("e2e_udp echo: serving {binds:?} for at most {seconds} s");
    let workers: Vec<_> = sockets
        .into_iter()
        .map(|socket| thread::spawn(move || serve(&socket, deadline)))
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(ExitCode::SUCCESS)
}

/// Echoes datagrams on one socket until the deadline.
fn serve(socket: &UdpSocket, deadline: Instant) {
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => {
                let _ = socket.send_to(&buf[..len.min(buf.len())], peer);
            }
            // Timeouts (to look at the deadline) and transient errors.
            Err(_) => continue,
        }
    }
}

/// What `rtt` was asked to do.
struct RttPlan {
    to: SocketAddr,
    count: u64,
    warmup: u64,
    timeout: Duration,
    seconds: u64,
}

fn rtt_plan(args: &[String]) -> Result<RttPlan, String> {
    let mut to = None;
    let mut plan = RttPlan {
        to: SocketAddr::from(([0, 0, 0, 0], 0)),
        count: 10_000,
        warmup: 100,
        timeout: Duration::from_millis(200),
        seconds: 60,
    };
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--to" => to = Some(address(value(args, &mut i, flag)?)?),
            "--count" => plan.count = number(value(args, &mut i, flag)?, flag)?,
            "--warmup" => plan.warmup = number(value(args, &mut i, flag)?, flag)?,
            "--timeout-ms" => {
                plan.timeout = Duration::from_millis(number(value(args, &mut i, flag)?, flag)?)
            }
            "--seconds" => plan.seconds = number(value(args, &mut i, flag)?, flag)?,
            _ => return Err(format!("rtt: unknown argument {flag:?}")),
        }
        i += 1;
    }
    plan.to = to.ok_or("rtt needs --to ADDR:PORT")?;
    if plan.count == 0 || plan.timeout.is_zero() {
        return Err("rtt: --count and --timeout-ms must be above 0".into());
    }
    Ok(plan)
}

fn rtt(args: &[String]) -> Result<ExitCode, String> {
    let plan = rtt_plan(args)?;
    let local = if plan.to.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(plan.to)
        .map_err(|e| format!("connect {}: {e}", plan.to))?;
    let deadline = Instant::now() + Duration::from_secs(plan.seconds);
    let mut samples = Vec::with_capacity(usize::try_from(plan.count).unwrap_or(0));
    let (mut sent, mut lost) = (0u64, 0u64);
    let total = plan.warmup.saturating_add(plan.count);
    for seq in 0..total {
        if Instant::now() >= deadline {
            break;
        }
        let measured = seq >= plan.warmup;
        match round_trip(&socket, seq, plan.timeout) {
            Ok(Some(took)) if measured => samples.push(took),
            Ok(Some(_)) => {}
            Ok(None) if measured => lost += 1,
            Ok(None) => {}
            Err(e) => return Err(format!("round trip to {}: {e}", plan.to)),
        }
        if measured {
            sent += 1;
        }
    }
    samples.sort_unstable();
    println!("{}", summary(&samples, sent, lost));
    // More than 1 % lost is a broken path, not a latency.
    let too_many_lost = lost.saturating_mul(100) > sent || samples.is_empty();
    Ok(if too_many_lost {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Sends request `seq` and waits for its echo: `Some(round trip)`, or
/// `None` when none came within `timeout`.
fn round_trip(
    socket: &UdpSocket,
    seq: u64,
    timeout: Duration,
) -> std::io::Result<Option<Duration>> {
    let mut request = [0u8; REQUEST_LEN];
    request[..8].copy_from_slice(&seq.to_be_bytes());
    let start = Instant::now();
    socket.send(&request)?;
    let mut reply = [0u8; 2048];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut reply) {
            Ok(len) if len >= 8 && reply[..8] == request[..8] => {
                return Ok(Some(start.elapsed()));
            }
            // A late echo of an earlier request: keep waiting for ours.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            // An ICMP error from an earlier send (port unreachable while the
            // path came up): that request is lost, not the run.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// The sample at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn micros(d: Option<Duration>) -> String {
    d.map_or_else(
        || "nan".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1e6),
    )
}

fn summary(sorted: &[Duration], sent: u64, lost: u64) -> String {
    format!(
        "rtt sent={sent} received={} lost={lost} min_us={} p50_us={} p90_us={} p99_us={} max_us={}",
        sorted.len(),
        micros(sorted.first().copied()),
        micros(quantile(sorted, 0.50)),
        micros(quantile(sorted, 0.90)),
        micros(quantile(sorted, 0.99)),
        micros(sorted.last().copied()),
    )
}
