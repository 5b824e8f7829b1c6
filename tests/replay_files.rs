//! `flowgate replay` never harms its input: an output naming the capture
//! or the config (by path, symbolic link or hard link), or two outputs
//! naming one file, are refused before anything is written; outputs appear
//! only when the run succeeds, so a failed run leaves a previous output
//! untouched and no temporary file behind; an empty, cut or foreign input
//! says which. Runs the real binary (build it first:
//! `cargo build --workspace --bins`) on the demo's rules and capture.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use flowgate_dataplane::replay::pcap::PcapReader;
use flowgate_dataplane::testnet;

/// A scratch directory removed on drop, holding a copy of the demo's
/// capture as `in.pcap` and of its rules as `gw.toml`.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fgt-replay-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        fs::copy(root.join("configs/demo-traffic.pcap"), dir.join("in.pcap")).unwrap();
        fs::copy(root.join("configs/demo.toml"), dir.join("gw.toml")).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// The names in the directory, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
    /// Every file's bytes, by name (links as their target).
    fn contents(&self) -> Vec<(String, Vec<u8>)> {
        self.names()
            .into_iter()
            .map(|n| {
                let bytes = fs::read(self.path(&n)).unwrap_or_default();
                (n, bytes)
            })
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `flowgate replay --config gw.toml` with `args` (paths in the scratch
/// directory): its exit code and stderr.
fn replay(scratch: &Scratch, args: &[&str]) -> (i32, String) {
    let bin = testnet::workspace_binary("flowgate").unwrap();
    let out = Command::new(bin)
        .current_dir(&scratch.0)
        .args(["replay", "--config", "gw.toml"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Frames in the capture at `path`.
fn frames(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap();
    let mut reader = PcapReader::new(&bytes[..]).unwrap();
    let mut n = 0;
    while reader.next_record().unwrap().is_some() {
        n += 1;
    }
    n
}

#[test]
fn an_output_naming_an_input_is_refused_and_nothing_is_written() {
    let scratch = Scratch::new();
    std::os::unix::fs::symlink("in.pcap", scratch.path("link.pcap")).unwrap();
    fs::hard_link(scratch.path("in.pcap"), scratch.path("hard.pcap")).unwrap();
    std::os::unix::fs::symlink("gw.toml", scratch.path("rules.pcap")).unwrap();
    let before = scratch.contents();
    let input = "names the same file as --in in.pcap: replay never writes over its input";
    let config = "names the same file as --config gw.toml: replay never writes over its input";
    let cases: [(&[&str], String); 8] = [
        (&["--in", "in.pcap", "--out", "in.pcap"], format!("--out in.pcap {input}")),
        (&["--in", "in.pcap", "--out", "./in.pcap"], format!("--out ./in.pcap {input}")),
        (&["--in", "in.pcap", "--out", "link.pcap"], format!("--out link.pcap {input}")),
        (&["--in", "link.pcap", "--out", "hard.pcap"], "--out hard.pcap names the same file as --in link.pcap".into()),
        (
            &["--in", "in.pcap", "--out", "new.pcap", "--passed", "hard.pcap"],
            format!("--passed hard.pcap {input}"),
        ),
        (&["--in", "in.pcap", "--out", "gw.toml"], format!("--out gw.toml {config}")),
        (&["--in", "in.pcap", "--out", "rules.pcap"], format!("--out rules.pcap {config}")),
        (
            &["--in", "in.pcap", "--out", "new.pcap", "--passed", "new.pcap"],
            "--passed new.pcap names the same file as --out new.pcap: give each output its own file".into(),
        ),
    ];
    for (args, says) in cases {
        let (code, stderr) = replay(&scratch, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("flowgate: {says}")),
            "{args:?}: expected {says:?}, got {stderr}"
        );
        assert_eq!(scratch.contents(), before, "{args:?} changed a file");
    }
}

#[test]
fn a_failed_run_leaves_a_previous_output_untouched_and_no_temporary_file() {
    let scratch = Scratch::new();
    let capture = fs::read(scratch.path("in.pcap")).unwrap();
    fs::write(scratch.path("empty.pcap"), b"").unwrap();
    // Cut inside the last record: the run fails after writing frames.
    fs::write(scratch.path("cut.pcap"), &capture[..capture.len() - 10]).unwrap();
    fs::write(scratch.path("short.pcap"), &capture[..10]).unwrap();
    fs::write(scratch.path("text.pcap"), b"not a capture at all\n").unwrap();
    fs::write(scratch.path("sent.pcap"), b"the previous run's output").unwrap();
    let before = scratch.contents();
    let records = frames(&scratch.path("in.pcap"));
    let cases = [
        (
            "empty.pcap",
            "flowgate: empty.pcap: input capture: empty file: a pcap file starts with a 24-byte header\n"
                .to_string(),
        ),
        (
            "cut.pcap",
            format!(
                "flowgate: cut.pcap: input capture: record {} is cut short: the file ends inside it\n",
                records - 1
            ),
        ),
        (
            "short.pcap",
            "flowgate: short.pcap: input capture: the file ends inside its 24-byte pcap header, after 10 bytes\n"
                .to_string(),
        ),
        (
            "text.pcap",
            "flowgate: text.pcap: input capture: not a pcap file (magic 0x20746f6e); pcapng files need converting with `editcap -F pcap`\n"
                .to_string(),
        ),
    ];
    for (input, says) in cases {
        let (code, stderr) = replay(
            &scratch,
            &[
                "--in",
                input,
                "--out",
                "sent.pcap",
                "--passed",
                "passed.pcap",
            ],
        );
        assert_eq!((code, stderr.as_str()), (1, says.as_str()), "{input}");
        assert_eq!(scratch.contents(), before, "{input} left a change");
    }
    // A run that succeeds replaces the output whole, and leaves nothing
    // else behind.
    let (code, stderr) = replay(
        &scratch,
        &[
            "--in",
            "in.pcap",
            "--out",
            "sent.pcap",
            "--passed",
            "passed.pcap",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let sent = frames(&scratch.path("sent.pcap"));
    let passed = frames(&scratch.path("passed.pcap"));
    assert!(sent > 0 && passed > 0, "{sent} sent, {passed} passed");
    let mut names = before.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    names.push("passed.pcap".into());
    names.sort();
    assert_eq!(scratch.names(), names);
}

#[test]
fn outputs_through_links_and_to_devices_are_written_where_they_lead() {
    let scratch = Scratch::new();
    fs::create_dir(scratch.path("out")).unwrap();
    fs::write(scratch.path("out/sent.pcap"), b"previous").unwrap();
    std::os::unix::fs::symlink("out/sent.pcap", scratch.path("sent.pcap")).unwrap();
    let (code, stderr) = replay(
        &scratch,
        &[
            "--in",
            "in.pcap",
            "--out",
            "sent.pcap",
            "--passed",
            "/dev/null",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(fs::symlink_metadata(scratch.path("sent.pcap"))
        .unwrap()
        .is_symlink());
    assert!(frames(&scratch.path("out/sent.pcap")) > 0);
    let (code, stderr) = replay(&scratch, &["--in", "in.pcap", "--out", "out"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr,
        "flowgate: --out out: it is a directory; name a file\n"
    );
}
