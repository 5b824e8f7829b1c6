//! docs/operations.md's "Your first gateway in ten minutes", run verbatim:
//! every `sh` block of that section, in order, in the demo's namespaces
//! (tests/netns/) — the gateway's blocks in the gateway's namespace, those
//! marked `# walkthrough: on a client` in the client's — with the
//! walk-through's variables set to this topology. The block marked
//! `# walkthrough: once per box` (build and install) is skipped: the
//! binaries under test are the ones this test was built with.
//!
//! Run as root; FLOWGATE_SKIP_NETNS=1 skips elsewhere. Needs the binaries
//! built first (scripts/test.sh does it).

mod netns;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowgate_dataplane::testnet::{self, NetNs};
use netns::*;

const SECTION: &str = "## Your first gateway in ten minutes";
/// The longest a block may run (the client's blocks wait for TCP to retry
/// a SYN while the gateway resolves a backend's MAC).
const BLOCK_BUDGET: Duration = Duration::from_secs(60);

/// Where a block runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Gateway,
    Client,
    /// Build and install: not run here.
    OncePerBox,
}

/// The section's `sh` blocks, in order, with where each runs.
fn blocks(doc: &str) -> Vec<(Place, String)> {
    let start = doc.find(SECTION).expect("the walk-through section");
    let rest = &doc[start + SECTION.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let place = match body.first().map(|l| l.trim()) {
            Some("# walkthrough: on a client") => Place::Client,
            Some("# walkthrough: once per box") => Place::OncePerBox,
            _ => Place::Gateway,
        };
        out.push((place, body.join("\n") + "\n"));
    }
    out
}

/// Stops whatever flowgate the walk-through started, even when a block
/// failed part way.
struct StopFlowgate(PathBuf);

impl Drop for StopFlowgate {
    fn drop(&mut self) {
        let pattern = format!("flowgate run --config {}", self.0.display());
        let _ = Command::new("pkill")
            .args(["-TERM", "-f", &pattern])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && Command::new("pgrep")
                .args(["-f", &pattern])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &pattern])
            .status();
    }
}

/// What a block printed, and whether it succeeded.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `script` with bash in `ns` with `env`, bounded in time. Its output
/// goes to files, not pipes: a program the block leaves running in the
/// background (flowgate) must not hold a pipe open.
fn run(ns: &NetNs, script: &str, env: &[(&str, String)], scratch: &Path, n: usize) -> Ran {
    let out = scratch.join(format!("block{n}.out"));
    let err = scratch.join(format!("block{n}.err"));
    let mut cmd = ns.command("bash", &["-euo", "pipefail", "-c", script]);
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + BLOCK_BUDGET;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ran {
        ok: status.is_some_and(|s| s.success()),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

#[test]
fn the_first_gateway_walkthrough_works_verbatim() {
    let doc =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let blocks = blocks(&doc);
    let places: Vec<Place> = blocks.iter().map(|(p, _)| *p).collect();
    use Place::*;
    assert_eq!(
        places,
        [Gateway, OncePerBox, Gateway, Gateway, Gateway, Client, Gateway, Client, Gateway],
        "the walk-through's blocks changed: update this test with them"
    );
    if !privileged() {
        return;
    }
    let _one = one_gateway_at_a_time();
    let topo = Topology::new(1);
    let conf = topo.scratch.path("flowgate.toml");
    let _stop = StopFlowgate(conf.clone());
    let bin = testnet::workspace_binary("flowgate").unwrap();
    let bin_dir = bin.parent().unwrap().display().to_string();
    let env: Vec<(&str, String)> = vec![
        ("CLIENT_IF", "fg-client".into()),
        ("BACKEND_IF", "fg-backend".into()),
        ("GW_CLIENT_ADDR", "198.18.0.1/24".into()),
        ("GW_BACKEND_ADDR", "198.18.1.1/24".into()),
        ("VIP", WEB_VIP.to_string()),
        ("BACKEND_A", backend_v4(1).to_string()),
        ("BACKEND_B", backend_v4(2).to_string()),
        ("BACKEND_PORT", "8080".into()),
        ("CONF", conf.display().to_string()),
        (
            "LOG",
            topo.scratch.path("flowgate.log").display().to_string(),
        ),
        (
            "PIDFILE",
            topo.scratch.path("flowgate.pid").display().to_string(),
        ),
        (
            "PATH",
            format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default()),
        ),
    ];
    let log = || fs::read_to_string(topo.scratch.path("flowgate.log")).unwrap_or_default();
    let mut outputs = Vec::new();
    for (n, (place, script)) in blocks.iter().enumerate() {
        let ns = match place {
            Gateway => &topo.gateway,
            Client => &topo.client,
            OncePerBox => continue,
        };
        let ran = run(ns, script, &env, &topo.scratch.path(""), n);
        assert!(
            ran.ok,
            "block {n} ({place:?}) failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}\n--- flowgate log\n{}",
            ran.stdout,
            ran.stderr,
            log()
        );
        outputs.push((n, ran.stdout));
    }
    let output = |n: usize| &outputs.iter().find(|(i, _)| *i == n).unwrap().1;
    // Blocks 0 (variables), 2 (the box) and 3 (config and check) have
    // nothing to show but success. 4: the daemon runs the service.
    let status = output(4);
    assert!(
        status.contains("1 service, 1 backend") && status.contains("198.18.1.11:8080  1"),
        "status and list:\n{status}"
    );
    // 5: backend A answered through the VIP.
    assert_eq!(output(5).trim(), "b1", "the client's first request");
    // 6 changed the rules; 7: after the change every answer came from B.
    let tally: Vec<&str> = output(7).lines().map(str::trim).collect();
    assert_eq!(tally, ["10 b2"], "the client's requests after the change");
    // 8: the stop block checked that flowgate is gone; the XDP program
    // went with it.
    let links = topo
        .gateway
        .exec("ip", &["-d", "link", "show", "fg-client"])
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("prog/xdp"), "XDP left attached:\n{links}");
}
