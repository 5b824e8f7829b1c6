//! The fleet demo (scripts/fleet-demo.sh) runs as the README says: a real
//! etcd, real BIRDs on a router and two gateways, two flowgate gateways
//! and nginx backends in namespaces; it writes the rules with
//! `flowgatectl --etcd`, kills one gateway in the middle of long transfers
//! and brings it back, checks every claim itself (it exits non-zero if a
//! request or transfer fails or the route is not withdrawn within 3 s),
//! and leaves nothing behind. Run with the workspace's own binaries and a
//! short `--duration`; as root (set FLOWGATE_SKIP_NETNS=1 to skip
//! elsewhere).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fleet-demo.sh");
/// The whole run's bound: setup, two rounds of 6 s transfers, teardown.
const LIMIT: Duration = Duration::from_secs(240);

/// The namespaces and work dir of a run named `name` that still exist.
fn leftovers(name: &str) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default();
    let work = format!("/tmp/{name}-demo");
    if Path::new(&work).exists() {
        left.push(work);
    }
    left
}

/// The seconds in `line` after `word` (e.g. "after 0.12 s").
fn seconds_in(line: &str, before: &str) -> f64 {
    let at = line
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} in {line:?}"));
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no seconds before {before:?} in {line:?}"))
}

#[test]
fn the_fleet_demo_fails_over_between_gateways_and_cleans_up() {
    if !testnet::privileged() {
        return;
    }
    let name = format!("fgfd{}", std::process::id());
    let flowgate = testnet::workspace_binary("flowgate").unwrap();
    let mut child = Command::new("bash")
        .arg(SCRIPT)
        .args(["--duration", "6"])
        .env("FG_FLEET", &name)
        .env("FLOWGATE", &flowgate)
        .env("FLOWGATECTL", env!("CARGO_BIN_EXE_flowgatectl"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads, so a full one never stalls the script.
    let pipe = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = p.read_to_string(&mut text);
            text
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            // SIGTERM: the script's trap tears everything down.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
    let took = started.elapsed();
    eprintln!("{out}\n{err}\n(the demo took {took:?})");
    assert_eq!(leftovers(&name), [] as [String; 0], "left behind");
    let status = status.unwrap_or_else(|| panic!("the demo ran over {LIMIT:?}"));
    assert!(status.success(), "the demo failed ({status}):\n{err}");

    // What the demo claims, as it prints it.
    let line = |starts: &str| {
        out.lines()
            .find(|l| l.starts_with(starts))
            .unwrap_or_else(|| panic!("no line starting {starts:?} in:\n{out}"))
    };
    assert!(out.contains("written 8 changes: etcd revision "), "{out}");
    assert!(line("the router's multipath route over both gateways, from BGP").ends_with(':'));
    for service in ["web   (maglev", "files (sh,"] {
        assert!(
            line(service).ends_with("200 requests, 200 answered, 0 failed"),
            "{out}"
        );
    }
    assert!(
        out.contains("\n  gw-1 ") && out.contains("\n  gw-2 "),
        "{out}"
    );
    let withdrawn = seconds_in(line("the router withdrew gw1 "), " s after the kill");
    assert!(withdrawn <= 3.0, "withdrawn after {withdrawn} s");
    assert_eq!(
        out.matches("16 of 16 transfers complete, every byte (786432 each)")
            .count(),
        2,
        "{out}"
    );
    assert!(line("gw2 picked up ").ends_with("every transfer completed through gw2"));
    assert!(line("gw1 picked up ").contains("mid-stream that ECMP hashed back to it"));
    assert!(out.contains("torn down: namespaces, processes and temporary state removed"));
}

#[test]
fn a_bad_duration_is_refused_before_anything_is_made() {
    for bad in ["0", "5", "301", "ten", ""] {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .args(["--duration", bad])
            .env("FG_FLEET", "fgfd-refused")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--duration {bad:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("--duration must be a whole number of seconds from 6 to 300, not \"{bad}\"\n")
        );
    }
    assert_eq!(leftovers("fgfd-refused"), [] as [String; 0]);
}
