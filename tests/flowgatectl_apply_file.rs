//! `flowgatectl apply -f` reads its file as the daemon reads a config file:
//! a FIFO, a device, a socket or a directory is refused at once instead of
//! read forever, and a file over the size limit is refused by its size.
//! The file is read before the client connects, so no daemon is needed:
//! the socket named here does not exist.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fg-ctl-apply-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `flowgatectl apply -f file` (10 s at most: a hung read is killed
/// and fails the test) and returns its exit code and stderr.
fn apply(scratch: &Scratch, file: &Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowgatectl"))
        .arg("--socket")
        .arg(scratch.path("no-daemon.sock"))
        .arg("apply")
        .arg("-f")
        .arg(file)
        .env_remove("FLOWGATE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowgatectl apply -f {} did not return", file.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn what_is_not_a_regular_file_is_refused_without_reading_it() {
    let scratch = Scratch::new("kinds");
    let fifo = scratch.path("rules.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let socket = scratch.path("some.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    for (file, what) in [
        (fifo, "a FIFO"),
        (PathBuf::from("/dev/zero"), "a character device"),
        (PathBuf::from("/dev/urandom"), "a character device"),
        (scratch.0.clone(), "a directory"),
        (socket, "a socket"),
    ] {
        let (code, stderr) = apply(&scratch, &file);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(
            stderr,
            format!(
                "flowgatectl: cannot read {}: it is {what}, not a regular file\n",
                file.display()
            )
        );
    }
}

#[test]
fn a_file_over_the_limit_is_refused_by_its_size() {
    let scratch = Scratch::new("large");
    let file = scratch.path("rules.toml");
    // Sparse: 256 MiB and one byte that take no disk.
    std::fs::File::create(&file)
        .unwrap()
        .set_len((256 << 20) + 1)
        .unwrap();
    let (code, stderr) = apply(&scratch, &file);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "flowgatectl: cannot read {}: it holds 268435457 bytes; a config file holds at most 256 MiB\n",
            file.display()
        )
    );
}

#[test]
fn a_regular_file_and_a_link_to_one_are_read_and_sent() {
    let scratch = Scratch::new("regular");
    let file = scratch.path("rules.toml");
    std::fs::write(&file, "[flows]\ncapacity = 1024\n").unwrap();
    let link = scratch.path("current.toml");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    for path in [&file, &link] {
        // Read, then refused only for want of a daemon to send it to.
        let (code, stderr) = apply(&scratch, path);
        assert_ne!(code, 0);
        assert!(!stderr.contains("cannot read"), "{stderr}");
        assert!(stderr.contains("no-daemon.sock"), "{stderr}");
    }
}
