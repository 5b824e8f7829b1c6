//! What flowgatectl's end-to-end tests share: a control server (over an
//! in-memory data plane) on a socket in a temporary directory, and the
//! flowgatectl binary run against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flowgate_dataplane::control::{
    ControlServer, ControlState, Dataplane, MemoryDataplane, ServerLimits, StopHandle,
};
use flowgate_dataplane::rules;

pub const RULES: &str = r#"
[gateway]
maglev_table_size = 251

[[services]]
name = "web"
protocol = "tcp"
vip = "198.18.100.10"
port = 80
[[services.backends]]
address = "198.18.1.11"
port = 8080
[[services.backends]]
address = "198.18.1.12"
port = 8080
weight = 2
"#;

/// A control server on a socket of its own.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub dataplane: Arc<MemoryDataplane>,
    /// The served control state (a handle on the same rules).
    pub control: ControlState,
    stop: StopHandle,
    serving: Option<JoinHandle<()>>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(ServerLimits::default())
    }

    pub fn start_with(limits: ServerLimits) -> Daemon {
        Self::start_rules_with(RULES, limits)
    }

    /// A control server running `rules` (config text).
    pub fn start_rules(rules: &str) -> Daemon {
        Self::start_rules_with(rules, ServerLimits::default())
    }

    fn start_rules_with(rules: &str, limits: ServerLimits) -> Daemon {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fg-ctl-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = rules::load_str(rules, "gw.toml").unwrap();
        let dataplane = Arc::new(MemoryDataplane::with_config(&config));
        let shared: Arc<dyn Dataplane> = dataplane.clone();
        let control = ControlState::new(config, "gw.toml", shared);
        let state = Arc::new(Mutex::new(control.clone()));
        let socket = dir.join("control.sock");
        let server = ControlServer::bind_with(&socket, state, limits).unwrap();
        let stop = server.stop_handle();
        let serving = std::thread::spawn(move || server.serve());
        Daemon {
            dir,
            socket,
            dataplane,
            control,
            stop,
            serving: Some(serving),
        }
    }

    /// Runs flowgatectl with `--socket` and `args`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        let mut all = vec!["--socket", self.socket.to_str().unwrap()];
        all.extend_from_slice(args);
        flowgatectl(&all, None)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(s) = self.serving.take() {
            let _ = s.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a run printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        self.stdout
    }

    pub fn failed(self, code: i32) -> String {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        // Usage errors found by the argument parser read as its errors do.
        let clap_usage = code == 2 && self.stderr.starts_with("error: ");
        assert!(
            self.stderr.starts_with("flowgatectl: ") || clap_usage,
            "{}",
            self.stderr
        );
        self.stderr
    }
}

pub fn flowgatectl(args: &[&str], socket_env: Option<&Path>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowgatectl"));
    command.args(args).env_remove("FLOWGATE_SOCKET");
    if let Some(socket) = socket_env {
        command.env("FLOWGATE_SOCKET", socket);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}
