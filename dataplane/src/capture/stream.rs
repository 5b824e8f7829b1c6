//! The control socket's side of `capture`: from the request to the
//! frames on the client's connection.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use flowgate_api::capture::to_hex;
use flowgate_api::framing::write_response;
use flowgate_api::{
    ApiError, CaptureEnd, CaptureQuery, CapturedFrame, ErrorCode, Reply, Response,
    MAX_CAPTURE_COUNT, MAX_CAPTURE_SAMPLE, MAX_CAPTURE_SNAP,
};
use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};

use super::filter::{CaptureFilter, ServiceKey};
use super::hub::{CaptureSession, Captured};
use crate::control::ControlState;
use crate::pipeline::{DropReason, Verdict};
use crate::wire::addr_to_bytes;

/// How long the control side sleeps when the rings are empty.
const DRAIN_POLL: Duration = Duration::from_millis(1);
/// Frames taken from the rings between two looks at the client.
const DRAIN_BATCH: usize = 256;

/// The filter a query asks for, checked against the running rules: an
/// unknown service or reason, or a count, sampling or snap length out of
/// range, is refused with what is allowed.
pub fn filter_for(query: &CaptureQuery, state: &ControlState) -> Result<CaptureFilter, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::Invalid, message);
    if query.count == 0 || query.count > MAX_CAPTURE_COUNT {
        return Err(invalid(format!(
            "count {} is out of range: a capture takes 1 to {MAX_CAPTURE_COUNT} frames",
            query.count
        )));
    }
    let sample = query.sample.unwrap_or(1);
    if sample == 0 || sample > MAX_CAPTURE_SAMPLE {
        return Err(invalid(format!(
            "sample {sample} is out of range: 1 (every frame) to {MAX_CAPTURE_SAMPLE}"
        )));
    }
    let snap = query.snap.unwrap_or(MAX_CAPTURE_SNAP);
    if snap == 0 || snap > MAX_CAPTURE_SNAP {
        return Err(invalid(format!(
            "snap length {snap} is out of range: 1 to {MAX_CAPTURE_SNAP} bytes"
        )));
    }
    let reason = match &query.reason {
        None => None,
        Some(name) => Some(
            DropReason::all()
                .find(|r| r.name() == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = DropReason::all().map(DropReason::name).collect();
                    invalid(format!(
                        "unknown drop reason {name:?}; the reasons are: {}",
                        names.join(", ")
                    ))
                })?,
        ),
    };
    let keys = match &query.service {
        None => Vec::new(),
        Some(name) => {
            let config = state.config();
            let service = config.service(name).ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("unknown service {name:?}"))
            })?;
            let protocol = service.protocol.number();
            std::iter::once((service.vip, service.port))
                .chain(service.backends.iter().map(|b| (b.address, b.port)))
                .map(|(address, port)| ServiceKey {
                    protocol,
                    address: addr_to_bytes(address),
                    port,
                })
                .collect()
        }
    };
    Ok(CaptureFilter {
        drops_only: query.drops || reason.is_some(),
        reason,
        keys,
        sample_every: sample,
        snap: usize::try_from(snap).unwrap_or(usize::MAX),
    })
}

/// Runs the capture `query` asks for, writing each frame to `writer` as a
/// response line and a [`CaptureEnd`] last, until the count, the
/// duration, the client hanging up on `client`, or `stopped()`. An error
/// means it could not start (nothing was armed), to be answered as any
/// other; a connection that fails mid-way just ends it.
pub fn serve(
    query: &CaptureQuery,
    state: &ControlState,
    writer: &mut impl Write,
    client: &UnixStream,
    stopped: &dyn Fn() -> bool,
) -> Result<(), ApiError> {
    let filter = filter_for(query, state)?;
    let hub = state.dataplane().capture_hub().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Invalid,
            "this data plane has no workers to capture from",
        )
    })?;
    let mut session = hub
        .start(filter)
        .map_err(|e| ApiError::new(ErrorCode::Busy, e.to_string()))?;
    let deadline = query
        .duration_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut captured = 0u64;
    let mut frames = Vec::with_capacity(DRAIN_BATCH);
    let stopped_by = loop {
        if stopped() || client_gone(client) {
            return Ok(());
        }
        frames.clear();
        let wanted = usize::try_from(query.count - captured).unwrap_or(DRAIN_BATCH);
        session.drain(wanted.min(DRAIN_BATCH), &mut frames);
        for frame in &frames {
            let line = Response::new(Ok(Reply::CaptureFrame(view(&session, frame))));
            if write_response(writer, &line).is_err() {
                return Ok(());
            }
            captured += 1;
        }
        if captured >= query.count {
            break "count";
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break "duration";
        }
        if frames.is_empty() {
            std::thread::sleep(DRAIN_POLL);
        }
    };
    let lost = session.lost();
    drop(session);
    let end = CaptureEnd {
        captured,
        lost,
        stopped: stopped_by.to_owned(),
    };
    let _ = write_response(writer, &Response::new(Ok(Reply::CaptureEnd(end))));
    Ok(())
}

/// Whether the client has hung up (a look that neither waits nor reads).
fn client_gone(client: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match recv(client.as_raw_fd(), &mut byte, flags) {
        Ok(0) => true,
        Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => false,
        Err(_) => true,
    }
}

/// A captured frame as the API shows it.
pub fn view(session: &CaptureSession, frame: &Captured) -> CapturedFrame {
    let hub = session.hub();
    let (verdict, reason, egress) = match frame.verdict {
        Verdict::Transmit(port) => ("transmit", None, Some(hub.interface(port))),
        Verdict::Pass => ("pass", None, None),
        Verdict::Drop(reason) => ("drop", Some(reason.name().to_owned()), None),
    };
    CapturedFrame {
        time_ns: session.unix_ns(frame.time_ns),
        worker: frame.worker,
        interface: hub.interface(frame.ingress),
        verdict: verdict.to_owned(),
        reason,
        egress,
        length: frame.length,
        data: to_hex(&frame.bytes),
        summary: summary(&frame.bytes),
    }
}

/// One line about a frame: protocol, source > destination, TTL; or why
/// it does not parse.
pub fn summary(bytes: &[u8]) -> String {
    let meta = match crate::wire::parse(bytes) {
        Ok(meta) => meta,
        Err(e) => return format!("not parsed: {}", e.name()),
    };
    if meta.l3 == crate::wire::L3::Arp {
        return "arp".to_owned();
    }
    let t = &meta.tuple;
    let (src, dst) = (t.src_ip(), t.dst_ip());
    match t.protocol {
        6 | 17 => {
            let name = if t.protocol == 6 { "tcp" } else { "udp" };
            let src = std::net::SocketAddr::new(src, t.src_port);
            let dst = std::net::SocketAddr::new(dst, t.dst_port);
            format!("{name} {src} > {dst} ttl {}", meta.ttl)
        }
        1 | 58 => format!("icmp {src} > {dst} ttl {}", meta.ttl),
        p => format!("proto {p} {src} > {dst} ttl {}", meta.ttl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::builder::FrameBuilder;

    #[test]
    fn a_summary_names_the_flow_or_why_it_did_not_parse() {
        let udp = FrameBuilder::udp(
            "198.18.0.2:4000".parse().unwrap(),
            "198.18.100.10:53".parse().unwrap(),
        )
        .ttl(1)
        .build();
        assert_eq!(
            summary(&udp),
            "udp 198.18.0.2:4000 > 198.18.100.10:53 ttl 1"
        );
        let v6 = FrameBuilder::tcp(
            "[2001:2::2]:4000".parse().unwrap(),
            "[2001:2::100:0:0:10]:80".parse().unwrap(),
            0x02,
        )
        .build();
        assert!(summary(&v6).starts_with("tcp [2001:2::2]:4000 > [2001:2::100:0:0:10]:80"));
        assert!(summary(&[0u8; 6]).starts_with("not parsed: "));
    }
}
