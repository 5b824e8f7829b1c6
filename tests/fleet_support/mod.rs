//! A real etcd for the fleet tests: the distribution's `etcd` on loopback,
//! with a temporary data dir and free ports, stopped and removed when the
//! test ends however it ends; and a TCP proxy in front of it that a test
//! can cut, to partition a gateway from etcd while etcd keeps running.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A port no one listens on now (the kernel's pick, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ready` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ready()
}

/// One etcd member on loopback.
pub struct Etcd {
    child: Option<Child>,
    /// The network namespace it runs in, if not the test's own.
    netns: Option<String>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd, or panics with its log if it does not answer in 15 s.
    pub fn start() -> Etcd {
        Etcd::start_in(None)
    }

    /// Starts etcd in the network namespace `netns` (on its loopback).
    pub fn start_in(netns: Option<&str>) -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "flowgate-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut etcd = Etcd {
            child: None,
            netns: netns.map(str::to_owned),
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.run();
        etcd
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address (for a proxy).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `program`, in the namespace if there is one.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                // `ip netns exec` execs the program: its pid is the child's.
                command.args(["netns", "exec", ns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    fn run(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = self
            .command("etcd")
            .args(["--name", "flowgate-test"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.endpoint()])
            .args(["--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("flowgate-test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian package etcd-server; scripts/install-deps.sh installs it)");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(15), || self.healthy());
        assert!(ready, "etcd did not start: {}", self.log());
    }

    fn healthy(&self) -> bool {
        self.command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint(), "--command-timeout=1s"])
            .args(["endpoint", "health"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (SIGKILL: as a crash), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data and port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Runs etcdctl with `args`; its output, or a panic with its error.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self
            .command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy to etcd that a test can cut (every connection closed, new
/// ones refused) and mend.
pub struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free loopback port to `target`.
    pub fn start(target: String) -> Proxy {
        Proxy::on(TcpListener::bind("127.0.0.1:0").unwrap(), target)
    }

    /// A proxy taking the connections of `listener` (a loopback socket,
    /// perhaps made in another namespace) to `target`.
    pub fn on(listener: TcpListener, target: String) -> Proxy {
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, d, o) = (Arc::clone(&cut), Arc::clone(&done), Arc::clone(&open));
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if c.load(Ordering::Relaxed) {
                    continue; // dropped: refused
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut open = o.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            port,
            cut,
            done,
            open,
            thread: Some(thread),
        }
    }

    /// The URL a client uses.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn mend(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies `from` to `to` on a thread until either closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
