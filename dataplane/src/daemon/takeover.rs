//! `flowgate run --takeover`: a new process takes over from the running
//! one without losing a connection, in the manner of Envoy's hot restart
//! and HAProxy's socket transfer.
//!
//! Every running daemon listens on a Unix socket beside its control socket
//! ([`socket_path`]: the control socket's path with `.takeover` appended,
//! mode 0600). The exchange, one line each way plus one descriptor:
//!
//! 1. new → old: `TAKEOVER <state version> <pid> links`. The old process
//!    refuses (`REFUSED <why>`) a state version it does not write, before
//!    it changes anything: it keeps serving. (`links` asks for the XDP
//!    links; a request without it, from an earlier build, gets none.)
//! 2. old: closes its control, metrics and heartbeat endpoints (its
//!    workers still forward), stops its workers, then, on threads of their
//!    own, closes its AF_XDP sockets (their statistics readers' descriptors
//!    and the UMEM's too, so that the kernel frees the queues) while it
//!    writes its connection tables ([`crate::flow::handover`]) into a memfd
//!    and sends `STATE <bytes> links <interface>…` with the memfd and, per
//!    interface named, the descriptor of the bpf_link its XDP program is
//!    attached through (all in one message, SCM_RIGHTS). Its programs stay
//!    attached, with their maps: the kernel fast path goes on forwarding
//!    the established connections it carries. If it cannot hand every
//!    link over, it hands none and detaches its programs first (`STATE
//!    <bytes>`), and the new process attaches its own.
//! 3. new: (it prepared its programs, rules, UMEM and empty tables before
//!    asking) imports the connections into its workers' tables (each to
//!    the worker that owns it) while it binds its sockets (trying again
//!    while the kernel still holds a queue) in its own programs' socket
//!    maps and in the old programs' (which send it what only a worker can
//!    answer from then on), starts the workers, opens its endpoints, tells
//!    systemd `MAINPID=` and `READY=1`, and answers `SERVING`; then it
//!    replaces each old program with its own through the handed link
//!    (BPF_LINK_UPDATE: atomic, the interface never without a program;
//!    where that fails, the link is closed and its own attached). If
//!    anything failed before `SERVING`, it closes what it was handed,
//!    answers `FAILED <why>` and exits.
//! 4. old: on `SERVING` it exits. On `FAILED`, on the connection closing,
//!    or after [`VERDICT_TIMEOUT`], it starts again from the state it
//!    handed over and keeps serving, and logs why.
//!
//! The kernel keeps the interfaces' other traffic flowing meanwhile. What
//! the workers carry (new flows) is dark from the old workers' stop to the
//! new workers' first poll; what the kernel fast path carries is not dark
//! at all (docs/benchmarks.md has the measured timeline).

use std::fs::File;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::flow::handover::{self, HandedState, VERSION};

/// How long the old process waits for the new one's verdict before it
/// takes its state back and serves again.
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long either side waits for one line of the other's.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest line either side sends.
const MAX_LINE: u64 = 4096;
/// The most XDP links handed over (one per interface).
pub const MAX_LINKS: usize = 64;

/// XDP links handed over, each with the interface its program is on: the
/// descriptor of the bpf_link (see [`crate::xdp::XdpFilter::link_descriptor`]).
pub type HandedLinks = Vec<(String, OwnedFd)>;

/// The SYN cookies' keys of the old programs, each with its interface
/// (see [`crate::xdp::XdpFilter::cookie_key`]): the new programs take
/// them, so that cookies the old ones gave out still validate.
pub type CookieKeys = Vec<(String, [u8; 16])>;

/// CLOCK_MONOTONIC now, in µs: the clock both processes share.
pub fn mono_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000
        })
        .unwrap_or(0)
}

/// Logs a step of a takeover, on either side, at CLOCK_MONOTONIC `at_us`
/// (see [`mono_us`]): since both processes share that clock, the two logs
/// merge into one timeline of the switch (docs/benchmarks.md has one).
pub fn mark_at(step: &'static str, at_us: u64) {
    tracing::info!(step, mono_us = at_us, "takeover step");
}

/// [`mark_at`] now.
pub fn mark(step: &'static str) {
    mark_at(step, mono_us());
}

/// The takeover socket of a daemon whose control socket is `control`.
pub fn socket_path(control: &Path) -> PathBuf {
    let mut path = control.as_os_str().to_owned();
    path.push(".takeover");
    PathBuf::from(path)
}

/// The running daemon's end: the socket a new process connects to.
#[derive(Debug)]
pub struct TakeoverListener {
    listener: UnixListener,
    path: PathBuf,
}

impl TakeoverListener {
    /// Listens at `path` (a stale socket file there is replaced), readable
    /// and writable by the owner only.
    pub fn bind(path: &Path) -> std::io::Result<TakeoverListener> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(TakeoverListener {
            listener,
            path: path.to_owned(),
        })
    }

    /// A new process asking to take over, if one connected; a request it
    /// could not read, or that this process cannot serve, is answered
    /// `REFUSED` here and never returned.
    pub fn poll(&self) -> Option<TakeoverRequest> {
        let (stream, _) = self.listener.accept().ok()?;
        let mut request = TakeoverRequest::read(stream)
            .map_err(|e| tracing::warn!("takeover request: {e}"))
            .ok()?;
        if request.version != VERSION {
            let why = format!(
                "this flowgate hands over connection state version {VERSION}, the new one \
                 reads version {}",
                request.version
            );
            tracing::warn!(pid = request.pid, "takeover refused: {why}");
            let _ = request.send_line(&format!("REFUSED {why}"));
            return None;
        }
        Some(request)
    }
}

impl Drop for TakeoverListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A new process's request, as the running one holds it.
#[derive(Debug)]
pub struct TakeoverRequest {
    reader: BufReader<UnixStream>,
    /// The state version the new process reads.
    pub version: u16,
    /// Its process id.
    pub pid: u32,
    /// Whether it takes the XDP links over (`links`).
    pub takes_links: bool,
    /// Whether it reads a first copy while this process forwards, then
    /// the difference at the switch (`precopy`).
    pub precopy: bool,
}

impl TakeoverRequest {
    fn read(stream: UnixStream) -> Result<TakeoverRequest, String> {
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(LINE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let line = read_line(&mut reader)?;
        let mut words = line.split_whitespace();
        let (Some("TAKEOVER"), Some(version), Some(pid)) =
            (words.next(), words.next(), words.next())
        else {
            return Err(format!("not a takeover request: {line:?}"));
        };
        let (mut takes_links, mut precopy) = (false, false);
        for word in words {
            match word {
                "links" if !takes_links => takes_links = true,
                "precopy" if !precopy => precopy = true,
                _ => return Err(format!("not a takeover request: {line:?}")),
            }
        }
        let version = version
            .parse()
            .map_err(|_| format!("bad version {version:?}"))?;
        let pid = pid.parse().map_err(|_| format!("bad pid {pid:?}"))?;
        Ok(TakeoverRequest {
            reader,
            version,
            pid,
            takes_links,
            precopy,
        })
    }

    /// Hands a pre-copy's first copy over (`image`: the tables as the
    /// workers, still forwarding, copied them) and waits for the new
    /// process to have imported it: `Ok` once it asks for the switch
    /// (`SWITCH`), the reason otherwise. Nothing was stopped here: on an
    /// error this process simply goes on.
    pub fn hand_over_copy(&mut self, image: &[u8], keys: &CookieKeys) -> Result<(), String> {
        let memfd = state_memfd(image).map_err(|e| format!("writing the first copy: {e}"))?;
        let mut header = format!("COPY {}", image.len());
        if !keys.is_empty() {
            header.push_str(" keys");
            for (interface, key) in keys.iter().take(MAX_LINKS) {
                header.push_str(&format!(" {interface}={}", hex(key)));
            }
        }
        header.push('\n');
        sendmsg::<()>(
            self.reader.get_ref().as_raw_fd(),
            &[IoSlice::new(header.as_bytes())],
            &[ControlMessage::ScmRights(&[memfd.as_raw_fd()])],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| format!("sending the first copy: {e}"))?;
        mark("old: first copy sent");
        drop(memfd);
        self.reader
            .get_ref()
            .set_read_timeout(Some(VERDICT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let line = read_line(&mut self.reader)
            .map_err(|e| format!("the new process gave no answer to the first copy ({e})"))?;
        match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("SWITCH", _) => Ok(()),
            ("FAILED", why) => Err(format!("the new process failed: {why}")),
            _ => Err(format!("the new process answered {line:?}")),
        }
    }

    /// Hands `image` (the encoded state) and `links` over (the links only
    /// if the new process [takes them](Self::takes_links); they are closed
    /// here once sent) and waits for the new process's verdict: `Ok` once
    /// it serves, the reason otherwise (then this process must serve
    /// again).
    pub fn hand_over(mut self, image: &[u8], links: HandedLinks) -> Result<(), String> {
        let memfd = state_memfd(image).map_err(|e| format!("writing the state: {e}"))?;
        let mut header = format!("STATE {}", image.len());
        let mut fds = vec![memfd.as_raw_fd()];
        if self.takes_links && !links.is_empty() {
            header.push_str(" links");
            for (interface, fd) in links.iter().take(MAX_LINKS) {
                header.push(' ');
                header.push_str(interface);
                fds.push(fd.as_raw_fd());
            }
        }
        header.push('\n');
        sendmsg::<()>(
            self.reader.get_ref().as_raw_fd(),
            &[IoSlice::new(header.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| format!("sending the state: {e}"))?;
        mark("old: state sent");
        drop(memfd);
        drop(links);
        self.reader
            .get_ref()
            .set_read_timeout(Some(VERDICT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let line = read_line(&mut self.reader)
            .map_err(|e| format!("the new process gave no answer ({e})"))?;
        match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("SERVING", _) => Ok(()),
            ("FAILED", why) => Err(format!("the new process failed: {why}")),
            _ => Err(format!("the new process answered {line:?}")),
        }
    }

    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(line.as_bytes())?;
        stream.write_all(b"\n")
    }
}

/// The new process's end, once it holds the old one's state.
#[derive(Debug)]
pub struct Takeover {
    stream: UnixStream,
}

/// What the running process offered first.
#[derive(Debug)]
pub enum Offer {
    /// A pre-copy's first copy, taken while it still forwards, and its
    /// programs' SYN cookie keys: import it, then ask for the switch
    /// ([`Takeover::switch`]).
    Copy(HandedState, CookieKeys),
    /// Its whole state and XDP links, its workers stopped (a process that
    /// could not copy first, or an earlier build).
    Whole(HandedState, HandedLinks),
}

/// Connects to the daemon listening at `path` and asks it to hand over,
/// a first copy first. Once this returns [`Offer::Whole`], the old
/// process's workers have stopped: answer it with [`Takeover::serving`]
/// or [`Takeover::failed`] (dropping the handle counts as failed; close
/// the links first). After [`Offer::Copy`] the old process still
/// forwards until [`Takeover::switch`]; a failure before then only tells
/// it to go on. A running process of an earlier build, which does not
/// know the pre-copy, closes the connection without a word: it is asked
/// again for its whole state.
pub fn take_over(path: &Path) -> Result<(Takeover, Offer), String> {
    match ask(path, true) {
        Err(Asked::Closed) => ask(path, false),
        other => other,
    }
    .map_err(|e| match e {
        Asked::Closed => "the running flowgate closed the connection".to_owned(),
        Asked::Failed(why) => why,
    })
}

/// Why [`ask`] got no offer.
enum Asked {
    /// The connection closed before any answer.
    Closed,
    /// Anything else.
    Failed(String),
}

fn ask(path: &Path, precopy: bool) -> Result<(Takeover, Offer), Asked> {
    let stream = UnixStream::connect(path).map_err(|e| {
        Asked::Failed(format!(
            "cannot reach the running flowgate at {}: {e} (is it running, with this \
             control_socket?)",
            path.display()
        ))
    })?;
    let fail =
        |e: std::io::Error| Asked::Failed(format!("takeover socket {}: {e}", path.display()));
    stream
        .set_read_timeout(Some(VERDICT_TIMEOUT))
        .map_err(fail)?;
    let words = if precopy { " links precopy" } else { " links" };
    (&stream)
        .write_all(format!("TAKEOVER {VERSION} {}{words}\n", std::process::id()).as_bytes())
        .map_err(fail)?;
    let (line, fds) = match receive_line_with_fds(&stream) {
        Ok(received) => received,
        Err(e) if e == CLOSED => return Err(Asked::Closed),
        Err(e) => return Err(Asked::Failed(e)),
    };
    let mut takeover = Takeover { stream };
    match line.split_once(' ') {
        Some(("COPY", rest)) => {
            let (len, keys) = copy_line(rest)
                .ok_or_else(|| Asked::Failed(format!("the running flowgate sent {line:?}")))?;
            let fd = fds
                .into_iter()
                .next()
                .ok_or_else(|| Asked::Failed("the running flowgate sent no first copy".into()))?;
            match read_state(fd, len) {
                Ok(state) => Ok((takeover, Offer::Copy(state, keys))),
                Err(why) => {
                    takeover.failed(&why);
                    Err(Asked::Failed(why))
                }
            }
        }
        _ => {
            let (state, links) = takeover.state_from(&line, fds).map_err(Asked::Failed)?;
            Ok((takeover, Offer::Whole(state, links)))
        }
    }
}

/// The rest of a `COPY` line: `<bytes> [keys <interface>=<32 hex digits>…]`.
fn copy_line(rest: &str) -> Option<(u64, CookieKeys)> {
    let mut words = rest.split_whitespace();
    let len = words.next()?.parse().ok()?;
    let mut keys = Vec::new();
    match words.next() {
        None => return Some((len, keys)),
        Some("keys") => {}
        Some(_) => return None,
    }
    for word in words {
        let (interface, key) = word.split_once('=')?;
        keys.push((interface.to_owned(), unhex(key)?));
    }
    Some((len, keys))
}

fn hex(key: &[u8; 16]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The error [`receive_line_with_fds`] gives for a closed connection.
const CLOSED: &str = "the running flowgate closed the connection";

/// Reads and decodes the image of `len` bytes in `fd`.
fn read_state(fd: OwnedFd, len: u64) -> Result<HandedState, String> {
    let mut file = File::from(fd);
    file.rewind()
        .map_err(|e| format!("reading the state: {e}"))?;
    let mut image = Vec::new();
    file.take(len)
        .read_to_end(&mut image)
        .map_err(|e| format!("reading the state: {e}"))?;
    handover::decode(&image).map_err(|e| e.to_string())
}

impl Takeover {
    /// After a first copy was imported: tells the old process to switch
    /// (it stops its workers) and returns the changes since the copy (a
    /// delta) and its XDP links. From here on answer it with
    /// [`Takeover::serving`] or [`Takeover::failed`].
    pub fn switch(&mut self) -> Result<(HandedState, HandedLinks), String> {
        self.stream
            .write_all(b"SWITCH\n")
            .map_err(|e| format!("asking the old process to switch: {e}"))?;
        let (line, fds) = receive_line_with_fds(&self.stream)?;
        self.state_from(&line, fds)
    }

    /// The state and links of a `STATE` answer (`line`, with `fds`); a
    /// refusal or anything else is the error. On an error in what was
    /// sent, the old process is told ([`Takeover::failed`]'s line).
    fn state_from(
        &mut self,
        line: &str,
        fds: Vec<OwnedFd>,
    ) -> Result<(HandedState, HandedLinks), String> {
        let (len, interfaces) = match line.split_once(' ') {
            Some(("STATE", rest)) => {
                let mut words = rest.split_whitespace();
                let len = words
                    .next()
                    .and_then(|len| len.parse::<u64>().ok())
                    .ok_or_else(|| format!("the running flowgate sent {line:?}"))?;
                let interfaces: Vec<String> = match words.next() {
                    None => Vec::new(),
                    Some("links") => words.map(str::to_owned).collect(),
                    Some(_) => return Err(format!("the running flowgate sent {line:?}")),
                };
                (len, interfaces)
            }
            Some(("REFUSED", why)) => return Err(format!("the running flowgate refused: {why}")),
            _ => return Err(format!("the running flowgate sent {line:?}")),
        };
        let mut fds = fds.into_iter();
        let fd = fds
            .next()
            .ok_or("the running flowgate sent no state descriptor")?;
        let named = interfaces.len();
        let links: HandedLinks = interfaces.into_iter().zip(fds.by_ref()).collect();
        if fds.next().is_some() || links.len() != named {
            let why = "the running flowgate sent a link for no interface, or an interface \
                       without its link";
            drop(links);
            self.tell_failed(why);
            return Err(why.into());
        }
        match read_state(fd, len) {
            Ok(state) => Ok((state, links)),
            Err(why) => {
                drop(links);
                self.tell_failed(&why);
                Err(why)
            }
        }
    }

    /// Tells the old process this one serves: it exits.
    pub fn serving(mut self) -> Result<(), String> {
        self.stream
            .write_all(b"SERVING\n")
            .map_err(|e| format!("telling the old process: {e}"))
    }

    /// Tells the old process this one could not start: it serves again
    /// (or, before the switch, goes on serving).
    pub fn failed(mut self, why: &str) {
        self.tell_failed(why);
    }

    fn tell_failed(&mut self, why: &str) {
        let line = format!("FAILED {}\n", why.replace('\n', "; "));
        let _ = self.stream.write_all(line.as_bytes());
    }
}

/// A sealed-size memfd holding `image`.
fn state_memfd(image: &[u8]) -> std::io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create("flowgate-state", MFdFlags::MFD_CLOEXEC)?;
    let mut file = File::from(fd);
    file.write_all(image)?;
    Ok(OwnedFd::from(file))
}

/// One line and its descriptors (at most 1 + [`MAX_LINKS`]), from one
/// message.
fn receive_line_with_fds(stream: &UnixStream) -> Result<(String, Vec<OwnedFd>), String> {
    let mut buffer = [0u8; MAX_LINE as usize];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1 + MAX_LINKS]);
    let (bytes, fds) = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receiving the state: {e}"))?;
        let mut fds = Vec::new();
        for cmsg in message.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        (message.bytes, fds)
    };
    let fds: Vec<OwnedFd> = fds
        .into_iter()
        .map(|fd| {
            // SAFETY: the kernel just installed this descriptor in this
            // process for this message (SCM_RIGHTS); nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    if bytes == 0 {
        return Err(CLOSED.into());
    }
    let text = String::from_utf8_lossy(&buffer[..bytes]);
    let line = text.lines().next().unwrap_or_default().to_owned();
    Ok((line, fds))
}

fn read_line(reader: &mut BufReader<UnixStream>) -> Result<String, String> {
    let mut line = String::new();
    match reader.by_ref().take(MAX_LINE).read_line(&mut line) {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(line.trim_end().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::handover::{encode, HandedConnection};
    use crate::flow::{Connection, FlowState};
    use crate::wire::{ip_proto, v4_mapped, FiveTuple};

    fn state(n: u16) -> Vec<HandedConnection> {
        (0..n)
            .map(|i| HandedConnection {
                connection: Connection {
                    client: FiveTuple::v4(
                        [198, 18, 0, 2],
                        [198, 18, 100, 10],
                        10_000 + i,
                        80,
                        ip_proto::TCP,
                    ),
                    backend_addr: v4_mapped([198, 18, 1, 13]),
                    backend_port: 8080,
                    endpoint: 1,
                    client_mac: [2, 0, 0, 0, 0, 1],
                    client_ingress: 0,
                    state: FlowState::TcpEstablished,
                    last_seen_ns: 0,
                },
                last_seen_mono_ns: 1_000 + u64::from(i),
                backend_replied: true,
                fast_path: false,
                syn_proxy: None,
                origin: None,
            })
            .collect()
    }

    fn socket(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fg-takeover-{}-{name}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        socket_path(&dir.join("control.sock"))
    }

    /// [`take_over`] from an old process that hands its whole state over.
    fn whole(path: &Path) -> (Takeover, HandedState, HandedLinks) {
        match take_over(path).unwrap() {
            (takeover, Offer::Whole(state, links)) => (takeover, state, links),
            (_, Offer::Copy(..)) => panic!("a first copy where the whole state was sent"),
        }
    }

    /// The listener's poll, for at most two seconds.
    fn accept(listener: &TakeoverListener) -> Option<TakeoverRequest> {
        for _ in 0..200 {
            if let Some(request) = listener.poll() {
                return Some(request);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn the_state_crosses_in_a_memfd_and_the_verdict_comes_back() {
        let path = socket("serving");
        let listener = TakeoverListener::bind(&path).unwrap();
        let handed = state(300);
        let image = encode(77, &handed);
        let new = std::thread::spawn({
            let path = path.clone();
            move || {
                let (takeover, state, links) = whole(&path);
                takeover.serving().unwrap();
                assert!(links.is_empty());
                state
            }
        });
        let request = accept(&listener).expect("a request");
        assert_eq!(request.version, VERSION);
        assert_eq!(request.pid, std::process::id());
        assert_eq!(request.hand_over(&image, Vec::new()), Ok(()));
        let state = new.join().unwrap();
        assert_eq!((state.exported_mono_ns, state.connections), (77, handed));
        drop(listener);
        assert!(!path.exists(), "the socket file goes with the listener");
    }

    #[test]
    fn a_first_copy_then_the_delta_cross_and_the_verdict_comes_back() {
        let path = socket("precopy");
        let listener = TakeoverListener::bind(&path).unwrap();
        let copy = state(300);
        let copy_image = encode(10, &copy);
        let freed = [crate::flow::Origin {
            worker: 1,
            record: 4,
        }];
        let delta_image = crate::flow::handover::encode_delta(20, &copy[..2], &freed);
        let new = std::thread::spawn({
            let path = path.clone();
            move || {
                let (mut takeover, offer) = take_over(&path).unwrap();
                let Offer::Copy(first, keys) = offer else {
                    panic!("no first copy");
                };
                let (delta, links) = takeover.switch().unwrap();
                takeover.serving().unwrap();
                assert!(links.is_empty());
                (first, keys, delta)
            }
        });
        let mut request = accept(&listener).expect("a request");
        assert!(request.precopy && request.takes_links);
        let keys = vec![
            ("veth-client".to_string(), [0xa5; 16]),
            ("veth-backend".to_string(), *b"0123456789abcdef"),
        ];
        assert_eq!(request.hand_over_copy(&copy_image, &keys), Ok(()));
        assert_eq!(request.hand_over(&delta_image, Vec::new()), Ok(()));
        let (first, handed_keys, delta) = new.join().unwrap();
        assert_eq!(handed_keys, keys);
        assert_eq!((first.connections, first.delta), (copy.clone(), false));
        assert!(delta.delta);
        assert_eq!(
            (delta.connections, delta.freed),
            (copy[..2].to_vec(), freed.to_vec())
        );
    }

    #[test]
    fn a_new_process_failing_after_the_first_copy_leaves_the_old_one_its_reason() {
        let path = socket("precopy-failed");
        let listener = TakeoverListener::bind(&path).unwrap();
        let new = std::thread::spawn({
            let path = path.clone();
            move || {
                let (takeover, _) = take_over(&path).unwrap();
                takeover.failed("the first copy does not fit");
            }
        });
        let mut request = accept(&listener).unwrap();
        let why = request
            .hand_over_copy(&encode(1, &state(3)), &Vec::new())
            .unwrap_err();
        assert!(why.contains("does not fit"), "{why}");
        new.join().unwrap();
    }

    #[test]
    fn an_earlier_build_that_knows_no_pre_copy_is_asked_again_for_the_whole_state() {
        let path = socket("earlier");
        let listener = UnixListener::bind(&path).unwrap();
        let image = encode(3, &state(2));
        let old = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let line = read_line(&mut reader).unwrap();
                lines.push(line.clone());
                if line.ends_with("precopy") {
                    // An earlier build: not a request it knows; closed.
                    continue;
                }
                let memfd = state_memfd(&image).unwrap();
                let header = format!("STATE {}\n", image.len());
                sendmsg::<()>(
                    reader.get_ref().as_raw_fd(),
                    &[IoSlice::new(header.as_bytes())],
                    &[ControlMessage::ScmRights(&[memfd.as_raw_fd()])],
                    MsgFlags::empty(),
                    None,
                )
                .unwrap();
                assert_eq!(read_line(&mut reader).unwrap(), "SERVING");
            }
            lines
        });
        let (takeover, state, _) = whole(&path);
        takeover.serving().unwrap();
        assert_eq!(state.connections.len(), 2);
        let lines = old.join().unwrap();
        assert!(lines[0].ends_with(" links precopy"), "{lines:?}");
        assert!(lines[1].ends_with(" links"), "{lines:?}");
    }

    #[test]
    fn a_failed_or_vanished_new_process_gives_the_old_one_its_reason() {
        let path = socket("failed");
        let listener = TakeoverListener::bind(&path).unwrap();
        let image = encode(1, &state(3));
        let new = std::thread::spawn({
            let path = path.clone();
            move || {
                let (takeover, _, _) = whole(&path);
                takeover.failed("interface veth0: no such device");
            }
        });
        let why = accept(&listener)
            .unwrap()
            .hand_over(&image, Vec::new())
            .unwrap_err();
        assert!(why.contains("no such device"), "{why}");
        new.join().unwrap();
        // One that takes the state and goes away without a word.
        let new = std::thread::spawn({
            let path = path.clone();
            move || drop(whole(&path))
        });
        let why = accept(&listener)
            .unwrap()
            .hand_over(&image, Vec::new())
            .unwrap_err();
        assert!(why.contains("no answer"), "{why}");
        new.join().unwrap();
    }

    /// A memfd holding `text`, standing for a link's descriptor.
    fn descriptor(text: &str) -> OwnedFd {
        state_memfd(text.as_bytes()).unwrap()
    }

    fn text_of(fd: OwnedFd) -> String {
        let mut file = File::from(fd);
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn the_links_cross_with_the_state_each_named_by_its_interface() {
        let path = socket("links");
        let listener = TakeoverListener::bind(&path).unwrap();
        let image = encode(5, &state(2));
        let new = std::thread::spawn({
            let path = path.clone();
            move || {
                let (takeover, state, links) = whole(&path);
                takeover.serving().unwrap();
                let links: Vec<(String, String)> = links
                    .into_iter()
                    .map(|(name, fd)| (name, text_of(fd)))
                    .collect();
                (state.connections.len(), links)
            }
        });
        let request = accept(&listener).unwrap();
        assert!(request.takes_links);
        let links = vec![
            ("veth-client".to_string(), descriptor("link of veth-client")),
            (
                "veth-backend".to_string(),
                descriptor("link of veth-backend"),
            ),
        ];
        assert_eq!(request.hand_over(&image, links), Ok(()));
        let (connections, links) = new.join().unwrap();
        assert_eq!(connections, 2);
        assert_eq!(
            links,
            [
                ("veth-client".into(), "link of veth-client".into()),
                ("veth-backend".into(), "link of veth-backend".into())
            ]
        );
    }

    #[test]
    fn a_request_without_links_from_an_earlier_build_gets_the_state_alone() {
        let path = socket("nolinks");
        let listener = TakeoverListener::bind(&path).unwrap();
        let image = encode(5, &state(1));
        let new = std::thread::spawn({
            let path = path.clone();
            move || {
                let stream = UnixStream::connect(&path).unwrap();
                (&stream)
                    .write_all(format!("TAKEOVER {VERSION} 1\n").as_bytes())
                    .unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let (line, fds) = receive_line_with_fds(&stream).unwrap();
                (&stream).write_all(b"SERVING\n").unwrap();
                (line, fds.len())
            }
        });
        let request = accept(&listener).unwrap();
        assert!(!request.takes_links);
        let links = vec![("veth0".to_string(), descriptor("a link"))];
        assert_eq!(request.hand_over(&image, links), Ok(()));
        let (line, fds) = new.join().unwrap();
        assert_eq!((line, fds), (format!("STATE {}", image.len()), 1));
    }

    #[test]
    fn another_state_version_is_refused_before_anything_is_handed_over() {
        let path = socket("version");
        let listener = TakeoverListener::bind(&path).unwrap();
        let new = std::thread::spawn({
            let path = path.clone();
            move || {
                let stream = UnixStream::connect(&path).unwrap();
                (&stream).write_all(b"TAKEOVER 99 1\n").unwrap();
                let mut answer = String::new();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                BufReader::new(stream).read_line(&mut answer).unwrap();
                answer
            }
        });
        // The listener answers and gives no request to serve.
        for _ in 0..100 {
            assert!(listener.poll().is_none());
            std::thread::sleep(Duration::from_millis(5));
        }
        let answer = new.join().unwrap();
        assert!(
            answer.starts_with("REFUSED") && answer.contains("version 99"),
            "{answer}"
        );
    }

    #[test]
    fn a_copy_line_reads_its_keys_and_refuses_a_bad_one() {
        let key = [7u8; 16];
        let line = format!("96 keys eth0={} eth1={}", hex(&key), hex(&[0xff; 16]));
        assert_eq!(
            copy_line(&line),
            Some((96, vec![("eth0".into(), key), ("eth1".into(), [0xff; 16])]))
        );
        assert_eq!(copy_line("48"), Some((48, Vec::new())));
        assert_eq!(copy_line("48 keys eth0=0011"), None);
        assert_eq!(copy_line("48 links eth0"), None);
        assert_eq!(copy_line("x"), None);
    }

    #[test]
    fn nothing_listening_is_a_clear_error() {
        let why = take_over(&socket("absent")).unwrap_err();
        assert!(why.contains("cannot reach the running flowgate"), "{why}");
    }
}
