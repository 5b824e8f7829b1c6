//! Carrying out an [`Invocation`] against the daemon.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowgate_api::{
    ApiError, ApplyConfig, BackendAdd, BackendEdit, BackendKey, ControlClient, ErrorCode, Reply,
    Request, ServiceEdit, ServiceName, ServiceSpec, ServiceView, ServicesReply, StatsReport,
};
use serde::Serialize;

use crate::cli::{listener_name, Action, Format, Invocation, Listener, ListenerChange};
use crate::failure::Failure;
use crate::{generate, show};

/// Longest wait for an answer: a change of 100 000 backends takes about a
/// second; anything much slower means the daemon is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the invocation, writing its output to `out`.
pub fn run(
    invocation: Invocation,
    version: &'static str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let Invocation {
        socket,
        etcd,
        format,
        action,
    } = invocation;
    if let Some(target) = &etcd {
        return on_etcd(target, action, format, out);
    }
    // Read the file before connecting: a missing file is the operator's
    // mistake, not the daemon's. Completions and man pages need no daemon.
    let action = match action {
        Action::Capture(_, Some(ref file)) if format == Format::Json && file.as_os_str() == "-" => {
            return Err(Failure::usage(
                "capture -w - writes pcapng to stdout, which -o json needs for its document: \
                 write to a file, or leave out -o json",
            ));
        }
        Action::Completions(_) | Action::Man(_) if format == Format::Json => {
            return Err(Failure::usage(
                "completions and man write a shell script and man pages, not JSON: leave out -o json",
            ));
        }
        Action::Completions(shell) => {
            let mut command = crate::cli::command(version);
            generate::completions(&mut command, shell, out);
            return out
                .flush()
                .map_err(|e| Failure::output(format!("cannot write the output: {e}")));
        }
        Action::Man(dir) => {
            let written =
                generate::man_pages(crate::cli::command(version), "1", &dir).map_err(|e| {
                    Failure::output(format!("cannot write man pages to {}: {e}", dir.display()))
                })?;
            return writeln!(
                out,
                "wrote {} man pages to {}",
                written.len(),
                dir.display()
            )
            .map_err(|e| Failure::output(format!("cannot write the output: {e}")));
        }
        Action::Apply { file, dry_run } => {
            let config = read_config(&file)
                .map_err(|e| Failure::file(format!("cannot read {}: {e}", file.display())))?;
            Action::Change(Request::Apply(ApplyConfig {
                config,
                origin: Some(file.display().to_string()),
                dry_run,
            }))
        }
        other => other,
    };
    let client = connect(&socket)?;
    let mut session = Session {
        client,
        socket,
        format,
        out,
    };
    match action {
        Action::Status => session.read(Request::Status {}),
        Action::Fleet => Err(Failure::usage("fleet needs --etcd")),
        Action::FleetDrain => session.read(Request::FleetDrain {}),
        Action::FleetUndrain => session.read(Request::FleetUndrain {}),
        Action::ServiceList => session.read(Request::ServiceList {}),
        Action::BackendList(service) => session.read(Request::BackendList(ServiceName { service })),
        Action::Flows(query) => session.read(Request::Flows(query)),
        Action::Heartbeat(key) => session.read(Request::BackendHeartbeat(key)),
        Action::Explain(query) => session.read(Request::Explain(query)),
        Action::PathList(service) => session.read(Request::PathList(ServiceName { service })),
        Action::Capture(query, write) => {
            crate::capture::run(&mut session.client, query, write, format, session.out)
        }
        Action::ClassList => session.read(Request::ClassList {}),
        Action::Change(Request::BackendDel(key)) => {
            let remove_service = format!("flowgatectl service del {}", key.service);
            session.delete_backend(key, remove_service)
        }
        Action::Change(request) => session.change(request),
        Action::Apply { .. } | Action::Completions(_) | Action::Man(_) => Err(Failure::protocol(
            "this command is carried out before connecting",
        )),
        Action::Stats {
            watch,
            interval,
            count,
        } => {
            if watch {
                session.watch(interval, count)
            } else {
                session.read(Request::Stats {})
            }
        }
        Action::List(filter) => session.ipvs_list(filter.as_ref()),
        Action::AtListener(listener, change) => session.at_listener(&listener, change),
    }
}

/// `--etcd`: the change made to the fleet's rules in etcd (the file to
/// apply read first, as for a gateway).
fn on_etcd(
    target: &crate::etcd::EtcdTarget,
    action: Action,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let text = match &action {
        Action::Apply { file, .. } => {
            let config = read_config(file)
                .map_err(|e| Failure::file(format!("cannot read {}: {e}", file.display())))?;
            Some((config, file.display().to_string()))
        }
        _ => None,
    };
    crate::etcd::run(target, action, text, format, out)
}

/// The most `apply -f` reads: the daemon's limit for a config file
/// (`rules::MAX_CONFIG_BYTES`, docs/config.md).
const MAX_CONFIG_BYTES: u64 = 256 << 20;

/// The text of a config file to apply, refused as the daemon refuses a
/// config file: anything but a regular file (a FIFO, a device, a socket, a
/// directory) before it is opened, and more than [`MAX_CONFIG_BYTES`],
/// stopping the read one byte past the limit.
fn read_config(file: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::FileTypeExt;
    let limit = format!("{} MiB", MAX_CONFIG_BYTES >> 20);
    let too_large = |held: String| {
        let message = format!("it {held}; a config file holds at most {limit}");
        Error::new(ErrorKind::FileTooLarge, message)
    };
    let regular = |metadata: std::fs::Metadata| {
        let kind = metadata.file_type();
        let what = [
            (kind.is_dir(), "a directory"),
            (kind.is_fifo(), "a FIFO"),
            (kind.is_char_device(), "a character device"),
            (kind.is_block_device(), "a block device"),
            (kind.is_socket(), "a socket"),
            (!kind.is_file(), "not a file"),
        ];
        if let Some((_, what)) = what.iter().find(|(is, _)| *is) {
            let message = format!("it is {what}, not a regular file");
            return Err(Error::new(ErrorKind::InvalidInput, message));
        }
        match metadata.len() {
            n if n > MAX_CONFIG_BYTES => Err(too_large(format!("holds {n} bytes"))),
            _ => Ok(()),
        }
    };
    regular(std::fs::metadata(file)?)?;
    let opened = std::fs::File::open(file)?;
    regular(opened.metadata()?)?;
    let mut bytes = Vec::new();
    opened.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(format!("grew past {limit} while being read")));
    }
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// A connection and where its output goes.
struct Session<'a> {
    client: ControlClient,
    socket: PathBuf,
    format: Format,
    out: &'a mut dyn Write,
}

impl Session<'_> {
    fn write(&mut self, text: &str) -> Result<(), Failure> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| Failure::output(format!("cannot write the output: {e}")))
    }

    fn json(&mut self, value: &impl Serialize) -> Result<(), Failure> {
        let mut text = serde_json::to_string(value)
            .map_err(|e| Failure::output(format!("cannot encode the output: {e}")))?;
        text.push('\n');
        self.write(&text)
    }

    /// A read request: its reply as a table, or as JSON.
    fn read(&mut self, request: Request) -> Result<(), Failure> {
        let reply = self.client.call(request)?;
        if self.format == Format::Json {
            return self.json(&reply);
        }
        let text = match &reply {
            Reply::Status(s) => show::status(s),
            Reply::Services(s) => show::services(s),
            Reply::Backends(b) => show::backends(b),
            Reply::Flows(f) => show::flows(f),
            Reply::Stats(s) => show::stats(s),
            Reply::Changed(c) => show::change(c),
            Reply::Heartbeat(h) => show::heartbeat(h),
            Reply::Explain(e) => show::explain(e),
            Reply::Paths(p) => show::paths(p),
            Reply::CaptureFrame(_) | Reply::CaptureEnd(_) => {
                return Err(unexpected("a reply to a read", &reply))
            }
            Reply::Classes(c) => show::classes(c),
            Reply::Drain(d) => show::drain(d),
        };
        self.write(&text)
    }

    /// A change: what changed, and the generation now running. In JSON,
    /// the daemon's reply whole (`{"kind":"changed",...}`), as every
    /// other command prints its reply.
    fn change(&mut self, request: Request) -> Result<(), Failure> {
        match self.client.call(request)? {
            reply @ Reply::Changed(_) if self.format == Format::Json => self.json(&reply),
            Reply::Changed(report) => self.write(&show::change(&report)),
            other => Err(unexpected("a change", &other)),
        }
    }

    /// `stats --watch`: rates between successive samples.
    fn watch(&mut self, interval: Duration, count: Option<u64>) -> Result<(), Failure> {
        let mut before = self.sample()?;
        let mut taken = Instant::now();
        if self.format == Format::Json {
            self.json(&Reply::Stats(before.clone()))?;
        }
        let mut printed = 0u64;
        while count.is_none_or(|c| printed < c) {
            std::thread::sleep(interval);
            // A connection idle for longer than the daemon's idle timeout
            // is closed by it: take each sample on a fresh one.
            self.client = connect(&self.socket)?;
            let after = self.sample()?;
            let seconds = taken.elapsed().as_secs_f64();
            taken = Instant::now();
            match self.format {
                Format::Json => self.json(&Reply::Stats(after.clone()))?,
                Format::Text => {
                    let text = show::rates(&before, &after, seconds);
                    self.write(&format!("{}{text}", if printed > 0 { "\n" } else { "" }))?;
                }
            }
            before = after;
            printed += 1;
        }
        Ok(())
    }

    fn sample(&mut self) -> Result<StatsReport, Failure> {
        match self.client.call(Request::Stats {})? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected("stats", &other)),
        }
    }

    fn services(&mut self) -> Result<Vec<ServiceView>, Failure> {
        match self.client.call(Request::ServiceList {})? {
            Reply::Services(s) => Ok(s.services),
            other => Err(unexpected("service_list", &other)),
        }
    }

    /// The name of the service at `listener`.
    fn service_at(&mut self, listener: &Listener) -> Result<String, Failure> {
        let services = self.services()?;
        find(&services, listener)
            .map(|s| s.name.clone())
            .ok_or_else(|| no_service_at(listener))
    }

    /// `-L -n`: in JSON, a `services` reply, as `service list` prints.
    fn ipvs_list(&mut self, filter: Option<&Listener>) -> Result<(), Failure> {
        let mut services = self.services()?;
        if let Some(listener) = filter {
            services.retain(|s| matches(s, listener));
            if services.is_empty() {
                return Err(no_service_at(listener));
            }
        }
        match self.format {
            Format::Json => self.json(&Reply::Services(ServicesReply { services })),
            Format::Text => self.write(&show::ipvs_list(&services)),
        }
    }

    /// Removes a backend. When the daemon refuses because it is the
    /// service's last backend that takes new flows, the refusal says how
    /// to remove the service instead (`remove_service`).
    fn delete_backend(&mut self, key: BackendKey, remove_service: String) -> Result<(), Failure> {
        let (service, address, port) = (key.service.clone(), key.address.clone(), key.port);
        match self.change(Request::BackendDel(key)) {
            Err(refusal) if refusal.is_refusal(ErrorCode::Invalid) => {
                let services = self.services().unwrap_or_default();
                let last = services
                    .iter()
                    .find(|s| s.name == service)
                    .is_some_and(|s| is_last_weighted(s, &address, port));
                if last {
                    return Err(refusal.with_hint(format!(
                        "it is the last backend of {service:?} with weight > 0; \
                         to remove the service, use {remove_service}"
                    )));
                }
                Err(refusal)
            }
            other => other,
        }
    }

    fn at_listener(&mut self, listener: &Listener, change: ListenerChange) -> Result<(), Failure> {
        let request = match change {
            ListenerChange::AddService {
                name,
                scheduler,
                backends,
            } => Request::ServiceAdd(ServiceSpec {
                name: name.unwrap_or_else(|| listener_name(listener)),
                protocol: listener.protocol.into(),
                vip: listener.endpoint.address.clone(),
                port: listener.endpoint.port,
                scheduler,
                maglev_table_size: None,
                backends,
            }),
            ListenerChange::EditService { scheduler } => Request::ServiceEdit(ServiceEdit {
                service: self.service_at(listener)?,
                scheduler: Some(scheduler),
                maglev_table_size: None,
            }),
            ListenerChange::DeleteService => Request::ServiceDel(ServiceName {
                service: self.service_at(listener)?,
            }),
            ListenerChange::AddBackend(backend) => Request::BackendAdd(BackendAdd {
                service: self.service_at(listener)?,
                backend,
            }),
            ListenerChange::EditBackend(real, weight) => Request::BackendEdit(BackendEdit {
                service: self.service_at(listener)?,
                address: real.address,
                port: real.port,
                weight: Some(weight),
                zone: None,
                set: None,
                group: None,
                health: Default::default(),
                heartbeat_ttl: None,
            }),
            ListenerChange::DeleteBackend(real) => {
                let key = BackendKey {
                    service: self.service_at(listener)?,
                    address: real.address,
                    port: real.port,
                };
                let flag = if listener.protocol == "udp" {
                    "-u"
                } else {
                    "-t"
                };
                return self.delete_backend(key, format!("-D {flag} {}", listener.endpoint));
            }
        };
        self.change(request)
    }
}

/// A reply of the wrong kind.
fn unexpected(what: &str, reply: &Reply) -> Failure {
    Failure::protocol(format!("unexpected answer to {what}: {reply:?}"))
}

/// No service listens where the shorthand says: `not_found`, as the
/// daemon says of a name it does not know.
fn no_service_at(listener: &Listener) -> Failure {
    Failure::refused(ApiError::new(
        ErrorCode::NotFound,
        format!("no {listener} service"),
    ))
}

/// Whether removing `address`:`port` leaves `service` no backend with
/// weight > 0.
fn is_last_weighted(service: &ServiceView, address: &str, port: u16) -> bool {
    let target = address.parse::<std::net::IpAddr>().ok();
    service
        .backends
        .iter()
        .filter(|b| b.weight > 0)
        .all(|b| Some(b.address) == target && b.port == port)
}

/// A connection to the daemon, with the call timeout set.
fn connect(socket: &Path) -> Result<ControlClient, Failure> {
    let mut client = ControlClient::connect(socket)?;
    client.set_timeout(Some(CALL_TIMEOUT))?;
    Ok(client)
}

/// Whether `service` listens at `listener` (addresses compared as
/// addresses, so any spelling of an IPv6 address matches).
fn matches(service: &ServiceView, listener: &Listener) -> bool {
    service.protocol == listener.protocol
        && service.port == listener.endpoint.port
        && listener
            .endpoint
            .address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|vip| vip == service.vip)
}

fn find<'a>(services: &'a [ServiceView], listener: &Listener) -> Option<&'a ServiceView> {
    services.iter().find(|s| matches(s, listener))
}
