//! `flowgatectl capture` against the real `flowgate` binary in the demo's
//! namespaces (tests/netns/): a datagram whose TTL has run out, sent to a
//! VIP, is captured with its reason into a pcapng file that tcpdump opens;
//! a capture interrupted (SIGINT) disarms, so the next one can start.
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod netns;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet;
use netns::*;

/// Sends one UDP datagram with TTL 1 from the client to `to`.
fn send_expired(topo: &Topology, to: SocketAddr) {
    topo.client
        .enter(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.set_ttl(1).unwrap();
            socket.send_to(b"expired", to).unwrap();
        })
        .unwrap();
}

fn flowgatectl(socket: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(testnet::workspace_binary("flowgatectl").unwrap());
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Sends datagrams whose TTL ran out until `child` (a capture) exits;
/// bounded in time.
fn feed_until_done(topo: &Topology, to: SocketAddr, child: Child) -> Output {
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the capture did not end within 20 s");
        }
        send_expired(topo, to);
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The enhanced packet blocks of a little-endian pcapng file: (packet
/// bytes, comment).
fn packets(bytes: &[u8]) -> Vec<(Vec<u8>, String)> {
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(word(0), 0x0A0D_0D0A, "a section header first");
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (kind, total) = (word(at), word(at + 4));
        if kind == 6 {
            let captured = word(at + 20);
            let data = bytes[at + 28..at + 28 + captured].to_vec();
            let mut option = at + 28 + captured.div_ceil(4) * 4;
            let mut comment = String::new();
            while option < at + total - 4 {
                let code = u16::from_le_bytes([bytes[option], bytes[option + 1]]);
                let len = usize::from(u16::from_le_bytes([bytes[option + 2], bytes[option + 3]]));
                if code == 0 {
                    break;
                }
                if code == 1 {
                    comment =
                        String::from_utf8(bytes[option + 4..option + 4 + len].to_vec()).unwrap();
                }
                option += 4 + len.div_ceil(4) * 4;
            }
            out.push((data, comment));
        }
        at += total;
    }
    out
}

#[test]
fn a_dropped_frame_is_captured_with_its_reason_and_opens_in_tcpdump() {
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let mut gw = topo.start_gateway(&topo.config(&[0]));
    let socket = topo.scratch.path("control.sock");
    let dns = SocketAddr::new(WEB_VIP.into(), 53);
    let file = topo.scratch.path("drops.pcap");

    let child = flowgatectl(
        &socket,
        &[
            "capture",
            "--drops",
            "-c",
            "1",
            "-w",
            file.to_str().unwrap(),
        ],
    )
    .spawn()
    .unwrap();
    let run = feed_until_done(&topo, dns, child);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout,
        format!(
            "1 frame written to {} (the count was reached)\n",
            file.display()
        )
    );
    check_capture_file(&file, dns);

    // -o json names the reason too, with the service filter.
    let child = flowgatectl(
        &socket,
        &[
            "capture",
            "--service",
            "dns",
            "--reason",
            "ttl_expired",
            "-c",
            "1",
            "-o",
            "json",
        ],
    )
    .spawn()
    .unwrap();
    let run = feed_until_done(&topo, dns, child);
    assert!(run.status.success());
    let document: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(document["frames"][0]["reason"], "ttl_expired", "{document}");
    assert_eq!(
        document["frames"][0]["interface"], "fg-client",
        "{document}"
    );

    an_interrupted_capture_disarms(&socket);
    gw.assert_running();
    gw.stop();
}

/// The file holds the one datagram, its reason in its comment, and
/// tcpdump opens it.
fn check_capture_file(file: &Path, dns: SocketAddr) {
    let bytes = std::fs::read(file).unwrap();
    let captured = packets(&bytes);
    assert_eq!(captured.len(), 1);
    let (frame, comment) = &captured[0];
    assert_eq!(comment, "flowgate verdict=drop reason=ttl_expired worker=0");
    let meta = flowgate_dataplane::wire::parse(frame).unwrap();
    assert_eq!(meta.ttl, 1);
    assert_eq!(
        SocketAddr::new(meta.tuple.dst_ip(), meta.tuple.dst_port),
        dns
    );
    assert_eq!(meta.tuple.src_ip(), std::net::IpAddr::from(CLIENT_V4));

    // tcpdump opens it and shows the datagram.
    let tcpdump = Command::new("tcpdump")
        .args(["-n", "-r", file.to_str().unwrap()])
        .output()
        .expect("tcpdump (scripts/install-deps.sh installs it)");
    let shown = String::from_utf8_lossy(&tcpdump.stdout);
    assert!(
        tcpdump.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&tcpdump.stderr)
    );
    assert_eq!(shown.lines().count(), 1, "{shown}");
    assert!(
        shown.contains("IP 198.18.0.2.") && shown.contains(" > 198.18.100.10.53: "),
        "{shown}"
    );
}

/// Interrupted (SIGINT), a capture disarms: the next one is not refused
/// as busy.
fn an_interrupted_capture_disarms(socket: &Path) {
    let mut endless = flowgatectl(socket, &["capture", "-c", "1000000"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(endless.try_wait().unwrap().is_none(), "still capturing");
    let interrupted = Command::new("kill")
        .args(["-INT", &endless.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    // Bounded: a flowgatectl started with SIGINT ignored (a test run in
    // the background of a shell) never sees it.
    let exited_by = Instant::now() + Duration::from_secs(10);
    while endless.try_wait().unwrap().is_none() {
        if Instant::now() > exited_by {
            let _ = endless.kill();
            let _ = endless.wait();
            panic!("flowgatectl capture did not exit within 10 s of SIGINT (ignored here?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let next = flowgatectl(socket, &["capture", "-c", "1", "--duration", "0.1"])
            .output()
            .unwrap();
        if next.status.success() {
            break;
        }
        let said = String::from_utf8_lossy(&next.stderr);
        assert!(said.contains("a capture is running already"), "{said}");
        assert!(
            Instant::now() < deadline,
            "the interrupted capture never disarmed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
