//! Telling systemd how the daemon is doing (sd_notify, for a unit with
//! `Type=notify`): `READY=1` once it forwards (with `MAINPID=` when it
//! took over from the main process: `flowgate run --takeover`), `RELOADING=1` and `READY=1`
//! around a SIGHUP reload, `STOPPING=1` at shutdown, each with a `STATUS=`
//! line that `systemctl status` shows.
//!
//! The protocol is one datagram per message to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket): a few
//! lines of `KEY=VALUE`. It is small enough to write here rather than to
//! depend on a crate for it. Without `$NOTIFY_SOCKET` (not under systemd,
//! or a unit of another type) every call does nothing; a failure to send
//! is logged once per message and never stops the daemon.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; one that sends nothing when it
    /// is unset or unusable (which is logged).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os(NOTIFY_SOCKET).filter(|v| !v.is_empty()) else {
            return Notifier { target: None };
        };
        let name = name.to_string_lossy().into_owned();
        match open(&name) {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(e) => {
                tracing::warn!("{NOTIFY_SOCKET}={name}: {e}; systemd will not hear from flowgate");
                Notifier { target: None }
            }
        }
    }

    /// Forwarding has started.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// This process took over from the one systemd started: it is the
    /// service's main process now, and forwards. systemd takes `MAINPID=`
    /// from a process other than the main one only with
    /// `NotifyAccess=all` in the unit (configs/flowgate.service).
    pub fn took_over(&self, status: &str) {
        let pid = std::process::id();
        self.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS={status}"));
    }

    /// A reload begins (`READY=1` follows when it is over, whatever its
    /// outcome: the old rules or the new ones run).
    pub fn reloading(&self) {
        let usec = monotonic_usec();
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the config"
        ));
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&self, message: &str) {
        if let Some((socket, address)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), address) {
                let first = message.lines().next().unwrap_or_default();
                tracing::warn!("telling systemd {first}: {e}");
            }
        }
    }
}

/// An unbound datagram socket and the address of `name`: a path, or
/// `@name` for a socket in the abstract namespace.
fn open(name: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let address = match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        }
        None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an absolute path or an @abstract name",
            ))
        }
    };
    Ok((UnixDatagram::unbound()?, address))
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants it with
/// `RELOADING=1`.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_each_state_as_one_datagram() {
        let dir = std::env::temp_dir().join(format!("fg-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier {
            target: Some(open(path.to_str().unwrap()).unwrap()),
        };
        notifier.ready("forwarding");
        assert_eq!(receive(&systemd), "READY=1\nSTATUS=forwarding");
        notifier.reloading();
        let reloading = receive(&systemd);
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        let usec: u64 = reloading.lines().nth(1).unwrap()[15..].parse().unwrap();
        assert!(usec > 0);
        notifier.stopping();
        assert_eq!(receive(&systemd), "STOPPING=1\nSTATUS=stopping");
        notifier.took_over("forwarding");
        assert_eq!(
            receive(&systemd),
            format!("MAINPID={}\nREADY=1\nSTATUS=forwarding", std::process::id())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_names_and_bad_names() {
        assert!(open("@flowgate-test-notify").is_ok());
        assert!(open("relative/notify.sock").is_err());
        // No socket: nothing is sent, nothing fails.
        Notifier { target: None }.ready("x");
    }
}
