//! `flowgatectl capture`: receives the frames the daemon streams and
//! writes them as pcapng (`-w FILE`, `-w -`), as one line each, or, with
//! `-o json`, as one document at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flowgate_api::capture::from_hex;
use flowgate_api::framing::request_line;
use flowgate_api::{
    CaptureEnd, CaptureQuery, CapturedFrame, ClientError, ControlClient, Reply, Request,
};
use serde::Serialize;

use crate::cli::Format;
use crate::failure::Failure;
use crate::pcapng::{Direction, PcapngWriter};

/// `-o json`'s document: how the capture ended, and its frames.
#[derive(Serialize)]
struct CaptureDocument {
    /// The pcapng file written, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    captured: u64,
    lost: u64,
    stopped: String,
    frames: Vec<CapturedFrame>,
}

/// Where frames go.
enum Sink {
    /// Not opened yet: opened at the daemon's first answer, so that a
    /// refused capture creates no file.
    Pending,
    File(BufWriter<File>, PcapngWriter),
    Stdout(PcapngWriter),
    /// One line each on stdout (text), or kept for the document (JSON).
    Lines,
}

/// Runs the capture `query` on `client`, writing to `write` (a file, or
/// `-` for stdout) or to `out`.
pub fn run(
    client: &mut ControlClient,
    query: CaptureQuery,
    write: Option<PathBuf>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    // Frames may be long in coming: wait as long as it takes (the daemon
    // ends a capture that has a duration).
    client.set_timeout(None)?;
    let snap = query.snap.unwrap_or(flowgate_api::MAX_CAPTURE_SNAP);
    let line = request_line(Request::Capture(query))
        .map_err(|e| Failure::protocol(format!("cannot encode the request: {e}")))?;
    let to_stdout = write.as_deref() == Some(Path::new("-"));
    let mut frames = Vec::new();
    let mut response = client.call_raw(&line)?;
    let mut sink = Sink::Pending;
    let end = loop {
        let reply = response.into_result().map_err(ClientError::Rejected)?;
        if let Sink::Pending = sink {
            sink = match &write {
                None => Sink::Lines,
                Some(_) if to_stdout => Sink::Stdout(PcapngWriter::new(out, snap).map_err(output)?),
                Some(path) => {
                    let (file, writer) = create(path, snap)?;
                    Sink::File(file, writer)
                }
            };
        }
        match reply {
            Reply::CaptureFrame(frame) => {
                let data = from_hex(&frame.data).ok_or_else(|| {
                    Failure::protocol("a captured frame's data is not hex".to_owned())
                })?;
                match &mut sink {
                    Sink::File(file, w) => record(w, file, &frame, &data).map_err(output)?,
                    Sink::Stdout(w) => record(w, out, &frame, &data).map_err(output)?,
                    Sink::Lines | Sink::Pending => {
                        if format == Format::Text {
                            out.write_all(line_of(&frame).as_bytes())
                                .and_then(|()| out.flush())
                                .map_err(output)?;
                        }
                    }
                }
                if format == Format::Json {
                    frames.push(frame);
                }
            }
            Reply::CaptureEnd(end) => break end,
            other => {
                return Err(Failure::protocol(format!(
                    "expected a captured frame, got {other:?}"
                )))
            }
        }
        response = client.read_response()?;
    };
    if let Sink::File(mut file, _) = sink {
        file.flush().map_err(output)?;
    }
    let file = write
        .filter(|_| !to_stdout)
        .map(|p| p.display().to_string());
    match format {
        Format::Json => {
            let document = CaptureDocument {
                file,
                captured: end.captured,
                lost: end.lost,
                stopped: end.stopped,
                frames,
            };
            let mut text = serde_json::to_string(&document)
                .map_err(|e| Failure::output(format!("cannot encode the output: {e}")))?;
            text.push('\n');
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(output)
        }
        // The pcapng stream is the whole of stdout.
        Format::Text if to_stdout => Ok(()),
        Format::Text => {
            let text = end_line(&end, file.as_deref());
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(output)
        }
    }
}

fn output(e: std::io::Error) -> Failure {
    Failure::output(format!("cannot write the capture: {e}"))
}

/// Creates (or empties) the pcapng file.
fn create(path: &Path, snap: u32) -> Result<(BufWriter<File>, PcapngWriter), Failure> {
    let file = File::create(path)
        .map_err(|e| Failure::output(format!("cannot create {}: {e}", path.display())))?;
    let mut file = BufWriter::new(file);
    let writer = PcapngWriter::new(&mut file, snap)
        .map_err(|e| Failure::output(format!("cannot write {}: {e}", path.display())))?;
    Ok((file, writer))
}

/// One frame into the pcapng stream, its verdict in its comment.
fn record(
    w: &mut PcapngWriter,
    out: &mut (impl Write + ?Sized),
    frame: &CapturedFrame,
    data: &[u8],
) -> std::io::Result<()> {
    let direction = if frame.verdict == "transmit" {
        Direction::Outbound
    } else {
        Direction::Inbound
    };
    w.frame(
        out,
        &frame.interface,
        frame.time_ns,
        frame.length,
        data,
        &comment(frame),
        direction,
    )
}

/// What the gateway decided, as a packet comment:
/// `flowgate verdict=drop reason=ttl_expired worker=0`.
pub fn comment(frame: &CapturedFrame) -> String {
    let mut text = format!("flowgate verdict={}", frame.verdict);
    if let Some(reason) = &frame.reason {
        text.push_str(&format!(" reason={reason}"));
    }
    if let Some(egress) = &frame.egress {
        text.push_str(&format!(" egress={egress}"));
    }
    text.push_str(&format!(" worker={}", frame.worker));
    text
}

/// One frame as a line: time (UTC), interface, verdict, what it is.
fn line_of(frame: &CapturedFrame) -> String {
    let secs = frame.time_ns / 1_000_000_000;
    let micros = (frame.time_ns % 1_000_000_000) / 1_000;
    let day = secs % 86_400;
    let mut verdict = frame.verdict.clone();
    if let Some(reason) = &frame.reason {
        verdict.push(' ');
        verdict.push_str(reason);
    }
    if let Some(egress) = &frame.egress {
        verdict.push_str(&format!(" to {egress}"));
    }
    format!(
        "{:02}:{:02}:{:02}.{micros:06} {} {verdict}: {}, length {}\n",
        day / 3600,
        day / 60 % 60,
        day % 60,
        frame.interface,
        frame.summary,
        frame.length
    )
}

/// The closing line of a text capture.
fn end_line(end: &CaptureEnd, file: Option<&str>) -> String {
    let frames = if end.captured == 1 { "frame" } else { "frames" };
    let place = file.map(|f| format!(" written to {f}")).unwrap_or_default();
    let why = match end.stopped.as_str() {
        "duration" => "the duration ran out",
        _ => "the count was reached",
    };
    let lost = if end.lost > 0 {
        format!(
            "; {} more matched but found a worker's capture ring full (try --sample)",
            end.lost
        )
    } else {
        String::new()
    };
    format!("{} {frames}{place} ({why}){lost}\n", end.captured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(verdict: &str, reason: Option<&str>, egress: Option<&str>) -> CapturedFrame {
        CapturedFrame {
            time_ns: 1_765_000_000_000_000_000 + 3_723_000_456_000,
            worker: 1,
            interface: "fg-client".into(),
            verdict: verdict.into(),
            reason: reason.map(str::to_owned),
            egress: egress.map(str::to_owned),
            length: 60,
            data: String::new(),
            summary: "udp 198.18.0.2:4000 > 198.18.100.10:53 ttl 1".into(),
        }
    }

    #[test]
    fn a_frame_reads_as_a_line_and_a_comment() {
        let dropped = frame("drop", Some("ttl_expired"), None);
        assert_eq!(
            comment(&dropped),
            "flowgate verdict=drop reason=ttl_expired worker=1"
        );
        let line = line_of(&dropped);
        assert!(
            line.ends_with(
                " fg-client drop ttl_expired: udp 198.18.0.2:4000 > 198.18.100.10:53 ttl 1, length 60\n"
            ),
            "{line}"
        );
        assert!(line.starts_with("06:48:43.000456 "), "{line}");
        let sent = frame("transmit", None, Some("fg-backend"));
        assert_eq!(
            comment(&sent),
            "flowgate verdict=transmit egress=fg-backend worker=1"
        );
        assert!(line_of(&sent).contains(" transmit to fg-backend: "));
    }

    #[test]
    fn the_end_line_says_how_many_where_and_why() {
        let end = CaptureEnd {
            captured: 1,
            lost: 0,
            stopped: "count".into(),
        };
        assert_eq!(
            end_line(&end, Some("d.pcap")),
            "1 frame written to d.pcap (the count was reached)\n"
        );
        let end = CaptureEnd {
            captured: 0,
            lost: 3,
            stopped: "duration".into(),
        };
        assert!(end_line(&end, None).starts_with("0 frames (the duration ran out); 3 more"));
    }
}
