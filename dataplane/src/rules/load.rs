//! Reading a config: file → text → TOML → model and provenance → the one
//! validator.

use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::decode::decode;
use super::error::{ConfigError, ConfigProblem};
use super::file::{FileProvenance, LineIndex};
use super::provenance::{Location, Provenance};
use super::raw::RawConfig;
use super::reader;
use super::split;
use super::validate;
use super::Config;

/// The largest config file read: 256 MiB.
///
/// An entry of a config (a service, a backend, a neighbour) takes about 45
/// bytes written inline and 60 to 150 as a table of its own with labels
/// and a comment, so a config of a million entries fits with room to
/// spare. The limit is there so that a mistaken path (a log, a disk image)
/// is refused at once instead of read into memory.
pub const MAX_CONFIG_BYTES: u64 = 256 << 20;

/// Loads and validates the config file at `path`. Problems are reported
/// against the path as given.
///
/// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: a FIFO, a
/// device, a socket or a directory is refused without reading from it.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    match read_config_file(path, MAX_CONFIG_BYTES) {
        Ok(text) => load_str(&text, &file),
        Err(error) => Err(ConfigError::Io { file, error }),
    }
}

/// [`load_file`], also returning the file's `[etcd]` table as written,
/// which is not rules (`fleet::settings::from_etcd_table` reads it), so
/// that whoever needs both parses the file once.
pub fn load_file_with_etcd(path: &Path) -> Result<(Config, Option<toml::Table>), ConfigError> {
    let file = path.display().to_string();
    match read_config_file(path, MAX_CONFIG_BYTES) {
        Ok(text) => load_text(&text, &file, true).map(|(config, _, etcd)| (config, etcd)),
        Err(error) => Err(ConfigError::Io { file, error }),
    }
}

/// The text of the regular file at `path`, if it holds at most `limit`
/// bytes of UTF-8.
///
/// The file's type is looked at before it is opened (opening a FIFO waits
/// for a writer, opening a device can act on it), and again on the open
/// file, which is opened without waiting, in case the path changed in
/// between. The read stops one byte past `limit`, so a file that grows
/// while it is read cannot pass it either.
fn read_config_file(path: &Path, limit: u64) -> io::Result<String> {
    regular_within(&std::fs::metadata(path)?, limit)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    regular_within(&file.metadata()?, limit)?;
    let bytes = read_at_most(file, limit)?;
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// Refuses anything but a regular file of at most `limit` bytes.
fn regular_within(metadata: &Metadata, limit: u64) -> io::Result<()> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    };
    if let Some(what) = what {
        let message = format!("it is {what}, not a regular file");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    if metadata.len() > limit {
        return Err(too_large(Some(metadata.len()), limit));
    }
    Ok(())
}

/// All of `reader`, or an error as soon as it gives more than `limit`
/// bytes.
fn read_at_most(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(None, limit));
    }
    Ok(bytes)
}

/// A file over the limit: how large it is, when known, and the limit.
fn too_large(size: Option<u64>, limit: u64) -> io::Error {
    let limit = if limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{limit} bytes")
    };
    let message = match size {
        Some(size) => format!("it holds {size} bytes; a config file holds at most {limit}"),
        None => {
            format!("it grew past {limit} while being read; a config file holds at most {limit}")
        }
    };
    io::Error::new(io::ErrorKind::FileTooLarge, message)
}

/// Loads and validates a config from its text; `origin` names it in
/// problems (a path, or e.g. `<api>`).
///
/// A TOML syntax or type error (including an unknown key) stops reading
/// and is reported alone; otherwise every problem is reported, sorted by
/// position.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    load_str_with_provenance(text, origin).map(|(config, _)| config)
}

/// [`load_str`], also returning where each part of the config is in
/// `text`.
pub fn load_str_with_provenance<'t>(
    text: &'t str,
    origin: &str,
) -> Result<(Config, FileProvenance<'t>), ConfigError> {
    load_text(text, origin, false).map(|(config, provenance, _)| (config, provenance))
}

/// [`load_str_with_provenance`], also returning the `[etcd]` table.
/// `gateway_file`: the text is a gateway's own config file, where a
/// service whose health comes from etcd needs the `[etcd]` table (a
/// service's value in etcd is read without it).
fn load_text<'t>(
    text: &'t str,
    origin: &str,
    gateway_file: bool,
) -> Result<(Config, FileProvenance<'t>, Option<toml::Table>), ConfigError> {
    // The plain TOML configs are written in is read fast; anything else,
    // and every error, by the `toml` crate (the same result either way).
    let mut raw: RawConfig = match reader::read(text) {
        Some(raw) => raw,
        None => split::read(text).map_err(|error| ConfigError::Invalid {
            problems: vec![toml_problem(&error, text, origin)],
        })?,
    };
    let etcd = raw._etcd.take();
    let decoded = decode(&raw);
    let provenance = FileProvenance::new(text, origin, raw, decoded.stand_ins);
    let mut problems: Vec<ConfigProblem> = decoded
        .problems
        .into_iter()
        .map(|(place, message)| ConfigProblem::new(provenance.locate(place), message))
        .collect();
    problems.extend(validate::problems(&decoded.config, &provenance));
    if gateway_file && etcd.is_none() {
        for (i, service) in decoded.config.services.iter().enumerate() {
            if service.health.source == super::HealthSource::Etcd {
                let place = super::place::Place::service(i, "health.source");
                let message = format!(
                    "health of service {:?}: source = \"etcd\" needs an [etcd] table, \
                     where the health keys are read",
                    service.name
                );
                problems.push(ConfigProblem::new(provenance.locate(place), message));
            }
        }
    }
    if problems.is_empty() {
        return Ok((decoded.config, provenance, etcd));
    }
    // Stable: problems at one position keep the order they were found.
    problems.sort_by_key(ConfigProblem::position);
    Err(ConfigError::Invalid { problems })
}

/// A TOML error as a problem: its bare message (on one line) at the start
/// of its span, or at the top of the file when it has none.
fn toml_problem(error: &toml::de::Error, text: &str, origin: &str) -> ConfigProblem {
    let (line, column) = error
        .span()
        .map_or((1, 1), |span| LineIndex::new(text).position(span.start));
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let location = Location::File {
        file: origin.to_owned(),
        line,
        column,
    };
    ConfigProblem::new(location, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("flowgate-load-{name}-{}", std::process::id()));
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

    fn refusal(path: &Path) -> String {
        let started = Instant::now();
        let error = load_file(path).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "it waited");
        assert!(error.problems().is_empty());
        error.to_string()
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let scratch = Scratch::new("fifo");
        let path = scratch.path("gw.toml");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            refusal(&path),
            format!(
                "{}: cannot read config: it is a FIFO, not a regular file",
                path.display()
            )
        );
        // Opened without waiting too, as when the path is swapped for a
        // FIFO after its type was looked at.
        let started = Instant::now();
        let error = read_config_file(&path, MAX_CONFIG_BYTES).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let error = regular_within(&file.metadata().unwrap(), MAX_CONFIG_BYTES).unwrap_err();
        assert_eq!(error.to_string(), "it is a FIFO, not a regular file");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn devices_directories_and_sockets_are_refused() {
        let scratch = Scratch::new("kinds");
        let socket = scratch.path("control.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (path, what) in [
            (PathBuf::from("/dev/zero"), "a character device"),
            (PathBuf::from("/dev/null"), "a character device"),
            (scratch.0.clone(), "a directory"),
            (socket, "a socket"),
        ] {
            assert_eq!(
                refusal(&path),
                format!(
                    "{}: cannot read config: it is {what}, not a regular file",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let scratch = Scratch::new("large");
        let path = scratch.path("gw.toml");
        // Sparse: it takes no disk, and is refused by its size alone.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        assert_eq!(
            refusal(&path),
            format!(
                "{}: cannot read config: it holds 268435457 bytes; a config file holds at most 256 MiB",
                path.display()
            )
        );
        file.set_len(100).unwrap();
        let error = read_config_file(&path, 99).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            error.to_string(),
            "it holds 100 bytes; a config file holds at most 99 bytes"
        );
        // Exactly at the limit is read (as zero bytes, not a valid config).
        assert_eq!(read_config_file(&path, 100).unwrap().len(), 100);
    }

    #[test]
    fn a_read_stops_one_byte_past_the_limit_whatever_the_size_said() {
        // An endless source, as a file that grows while read would be.
        let error = read_at_most(io::repeat(b'#'), 4096).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(
            error.to_string(),
            "it grew past 4096 bytes while being read; a config file holds at most 4096 bytes"
        );
        assert_eq!(read_at_most(&b"0123"[..], 4).unwrap(), b"0123");
    }

    #[test]
    fn a_symlink_to_a_config_is_read_and_text_must_be_utf8() {
        let scratch = Scratch::new("link");
        let path = scratch.path("real.toml");
        std::fs::write(&path, "[flows]\ncapacity = 1024\n").unwrap();
        let link = scratch.path("gw.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(load_file(&link).unwrap().flows.capacity, 1024);
        std::fs::write(&path, b"# \xff\n").unwrap();
        assert_eq!(
            refusal(&link),
            format!(
                "{}: cannot read config: it is not UTF-8 text",
                link.display()
            )
        );
    }

    #[test]
    fn a_gateway_file_with_a_health_source_from_etcd_needs_an_etcd_table() {
        let dir = std::env::temp_dir().join(format!("fg-load-etcd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        let service = "[[services]]\nname = \"web\"\nprotocol = \"tcp\"\nvip = \"198.18.100.10\"\n\
                       port = 80\n[services.health]\nsource = \"etcd\"\n\
                       [[services.backends]]\naddress = \"198.18.1.11\"\nport = 8080\n";
        std::fs::write(&path, service).unwrap();
        let error = load_file_with_etcd(&path).unwrap_err();
        let shown = path.display().to_string();
        assert_eq!(
            error
                .problems()
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            vec![format!(
                "{shown}:7:10: health of service \"web\": source = \"etcd\" needs an [etcd] \
                 table, where the health keys are read"
            )]
        );
        let with_etcd = format!("[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n{service}");
        std::fs::write(&path, with_etcd).unwrap();
        assert!(load_file_with_etcd(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
