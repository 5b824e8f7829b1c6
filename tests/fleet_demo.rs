//! The fleet demo (scripts/fleet-demo.sh) runs as the README says: a real
//! etcd, real BIRDs on a router and two gateways, two flowgate gateways
//! and nginx backends in namespaces; it writes the rules with
//! `flowgatectl --etcd`, kills one gateway in the middle of long transfers
//! and brings it back, checks every claim itself (it exits non-zero if a
//! request or transfer fails or the route is not withdrawn within 3 s),
//! and leaves nothing behind, also when it is stopped in its middle (its
//! trap). Run with the workspace's own binaries and a short `--duration`;
//! as root (set FLOWGATE_SKIP_NETNS=1 to skip elsewhere).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fleet-demo.sh");
/// The whole run's bound: setup, two rounds of 6 s transfers, teardown.
const LIMIT: Duration = Duration::from_secs(240);

/// What a run named `name` left: its namespaces, its work dir, and any
/// process whose command line names the work dir (etcd, BIRD, nginx and
/// flowgate all do).
fn leftovers(name: &str) -> Vec<String> {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let work = format!("/tmp/{name}-demo");
    let mut left: Vec<String> = names("/run/netns")
        .into_iter()
        .filter(|n| n.starts_with(&format!("{name}-")))
        .collect();
    if Path::new(&work).exists() {
        left.push(work.clone());
    }
    for pid in names("/proc") {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&work) {
            left.push(format!("process {pid}: {cmdline}"));
        }
    }
    left
}

/// The demo as this test runs it: named `name`, the workspace's binaries,
/// each transfer 6 s; its output piped.
fn demo(name: &str) -> Child {
    let flowgate = testnet::workspace_binary("flowgate").unwrap();
    Command::new("bash")
        .arg(SCRIPT)
        .args(["--duration", "6"])
        .env("FG_FLEET", name)
        .env("FLOWGATE", &flowgate)
        .env("FLOWGATECTL", env!("CARGO_BIN_EXE_flowgatectl"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads `pipe` to its end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// SIGTERM to the script (its trap tears everything down); its status.
fn terminate(child: &mut Child) -> ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap()
}

/// One demo at a time: each one's two gateways poll both cores.
fn one_demo_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The number of seconds in `line` just before `before` (`0.12` in
/// "withdrew gw1 0.12 s after the kill", before " s after").
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
    let _alone = one_demo_at_a_time();
    let name = format!("fgfd{}", std::process::id());
    let mut child = demo(&name);
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            terminate(&mut child);
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

#[test]
fn a_demo_stopped_in_its_middle_leaves_nothing_behind() {
    if !testnet::privileged() {
        return;
    }
    let _alone = one_demo_at_a_time();
    let name = format!("fgfs{}", std::process::id());
    let mut child = demo(&name);
    let stderr = drain(child.stderr.take().unwrap());
    // Each line of its output as it comes.
    let (lines, seen) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // Stopped when everything runs: etcd, the BIRDs, nginx, both gateways.
    let deadline = Instant::now() + LIMIT;
    let mut out = String::new();
    let running = loop {
        let Ok(line) = seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            break false;
        };
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("the router's multipath route over both gateways") {
            break true;
        }
    };
    let status = terminate(&mut child);
    let err = stderr.join().unwrap();
    assert_eq!(leftovers(&name), [] as [String; 0], "left behind");
    assert!(running, "the gateways never ran:\n{out}\n{err}");
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(
        err.contains("fleet demo failed (exit 143); torn down"),
        "{err}"
    );
}
