//! Network namespaces and veth pairs for tests, the demo's checks and the
//! end-to-end harness.
//!
//! Every [`NetNs`] is deleted when dropped, also when a test fails and
//! unwinds, so nothing is left behind to break the next run. Names carry
//! the process id and a counter, so tests running in parallel never meet.
//! Everything goes through `ip` (iproute2): the same commands an operator
//! would type, and their stderr in every error.

use std::fs::File;
use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Whether this process may create namespaces (root, and `ip` present).
/// The error says what is missing.
pub fn check_privileges() -> Result<(), String> {
    if !nix_is_root() {
        return Err("namespace tests need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("namespace tests need iproute2's `ip` (run scripts/install-deps.sh)".into()),
    }
}

/// For tests: true when namespaces can be made. When they cannot, panics
/// with what is missing — unless `FLOWGATE_SKIP_NETNS` is set, in which
/// case it prints "skipped" and returns false (the test then returns).
pub fn privileged() -> bool {
    match check_privileges() {
        Ok(()) => true,
        Err(why) if std::env::var_os("FLOWGATE_SKIP_NETNS").is_some() => {
            eprintln!("skipped: {why}");
            false
        }
        Err(why) => panic!("{why} (set FLOWGATE_SKIP_NETNS=1 to skip)"),
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A network namespace that lives as long as this value.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `<prefix>-<pid>-<n>` with its loopback up. `prefix` should be
    /// short: interface-free, but `ip netns` names show up in errors.
    pub fn new(prefix: &str) -> io::Result<NetNs> {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`; an error carries the command and its stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs a program inside the namespace and waits for it; an error
    /// carries the command and its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run(&mut self.command(program, args))
    }

    /// A command that will run inside the namespace (not started yet).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Starts a program inside the namespace in the background. The child
    /// is killed when the returned guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> io::Result<ChildGuard> {
        let child = self
            .command(program, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(ChildGuard(Some(child)))
    }

    /// Runs `f` on a new thread that has entered this namespace, and
    /// returns its result. Sockets the closure opens stay in the namespace
    /// and may be used from any thread afterwards.
    pub fn enter<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("thread in namespace panicked")))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth ends (and their peers).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A background process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// The process, for waiting on it or reading its output.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates a veth pair with end `a_name` in `a` and `b_name` in `b`, both
/// up, each with `queues` receive and transmit queues.
pub fn veth_pair(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str, queues: u32) -> io::Result<()> {
    let q = queues.max(1).to_string();
    a.ip(&[
        "link",
        "add",
        a_name,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        &b.name,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

/// The path of a workspace binary (`flowgate`, `flowgatectl`) built in
/// the same target directory and profile as the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
/// scripts/test.sh builds the binaries before the tests; the error says
/// so when one is missing.
pub fn workspace_binary(name: &str) -> io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| io::Error::other("test executable has no target directory"))?;
    let path = profile_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(io::Error::other(format!(
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            path.display()
        )))
    }
}

fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_talk_over_veth_and_vanish_on_drop() {
        if !privileged() {
            return;
        }
        let name;
        {
            let a = NetNs::new("fgt").unwrap();
            let b = NetNs::new("fgt").unwrap();
            name = a.name().to_string();
            veth_pair(&a, "va", &b, "vb", 2).unwrap();
            a.ip(&["addr", "add", "198.18.200.1/30", "dev", "va"])
                .unwrap();
            b.ip(&["addr", "add", "198.18.200.2/30", "dev", "vb"])
                .unwrap();
            a.exec("ping", &["-c", "1", "-W", "2", "198.18.200.2"])
                .unwrap();
            // A thread inside `b` sees `vb` and not `va`.
            let dev = b
                .enter(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
                .unwrap()
                .unwrap();
            assert!(dev.contains("vb:"), "{dev}");
            assert!(!dev.contains("va:"), "{dev}");
        }
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }
}
