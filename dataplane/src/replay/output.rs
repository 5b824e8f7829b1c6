//! The files of a replay: outputs that never write over an input or over
//! each other, and that appear whole or not at all.
//!
//! [`refuse_overlaps`] compares files by device and inode, so an output
//! that reaches an input through a symbolic or a hard link is caught as
//! surely as one that repeats its path; an output that does not exist yet
//! is compared by the path it would be created at, links followed.
//!
//! An [`Output`] is written to a temporary file beside its destination (in
//! the same directory, so on the same file system) and renamed over it by
//! [`Output::commit`] once the replay has succeeded. Dropped uncommitted —
//! the replay failed — it removes its temporary file, so a failed run
//! leaves a previous output as it was. A destination that is a device or a
//! pipe (`/dev/null`, `/dev/stdout`, a FIFO) cannot be renamed over and
//! holds nothing to keep: it is written directly.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Symbolic links followed to find where a new output goes, as the
/// kernel's own limit (ELOOP).
const MAX_LINKS: usize = 40;

/// A file a replay reads or writes, with the option that named it.
#[derive(Clone, Copy, Debug)]
pub struct Named<'a> {
    /// The option, as the operator typed it: `--in`, `--out`, `--config`.
    pub option: &'static str,
    /// The path given.
    pub path: &'a Path,
}

impl<'a> Named<'a> {
    /// `path`, given with `option`.
    pub fn new(option: &'static str, path: &'a Path) -> Named<'a> {
        Named { option, path }
    }
}

impl std::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.option, self.path.display())
    }
}

/// Why a replay's files were refused, or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// An output is one of the inputs.
    #[error("{output} names the same file as {input}: replay never writes over its input")]
    OutputIsInput {
        /// The output, as given.
        output: String,
        /// The input it names.
        input: String,
    },
    /// Two outputs are one file.
    #[error("{second} names the same file as {first}: give each output its own file")]
    SameOutput {
        /// The first output, as given.
        first: String,
        /// The second.
        second: String,
    },
    /// An output is a directory.
    #[error("{0}: it is a directory; name a file")]
    Directory(String),
    /// The file system refused something.
    #[error("{path}: {doing}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// What was being done.
        doing: &'static str,
        /// What the OS said.
        source: io::Error,
    },
}

impl OutputError {
    /// Whether the operator named the files wrongly (nothing was done), as
    /// opposed to the file system failing.
    pub fn is_usage(&self) -> bool {
        !matches!(self, OutputError::Io { .. })
    }
}

/// An OS error about `path`, while `doing` something.
fn io_error(path: &Path, doing: &'static str) -> impl FnOnce(io::Error) -> OutputError {
    let path = path.display().to_string();
    move |source| OutputError::Io {
        path,
        doing,
        source,
    }
}

/// What a path is, for telling whether two name one file.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    /// An existing file: its device and inode.
    File { device: u64, inode: u64 },
    /// Nothing yet: where it would be created.
    New(PathBuf),
}

fn identity(path: &Path) -> Result<Identity, OutputError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Identity::File {
            device: m.dev(),
            inode: m.ino(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Where a new file would go, as far as it can be told; a path
            // that cannot be resolved is compared as given.
            Ok(Identity::New(
                new_file_path(path).unwrap_or_else(|_| path.to_path_buf()),
            ))
        }
        Err(e) => Err(io_error(path, "cannot look at it")(e)),
    }
}

/// Refuses `outputs` that name one of `inputs` or one another.
pub fn refuse_overlaps(inputs: &[Named<'_>], outputs: &[Named<'_>]) -> Result<(), OutputError> {
    let inputs: Vec<(Named<'_>, Identity)> = inputs
        .iter()
        .map(|n| identity(n.path).map(|id| (*n, id)))
        .collect::<Result<_, _>>()?;
    let mut seen: Vec<(Named<'_>, Identity)> = Vec::with_capacity(outputs.len());
    for output in outputs {
        let id = identity(output.path)?;
        if let Some((input, _)) = inputs
            .iter()
            .find(|(n, i)| *i == id || n.path == output.path)
        {
            return Err(OutputError::OutputIsInput {
                output: output.to_string(),
                input: input.to_string(),
            });
        }
        if let Some((first, _)) = seen.iter().find(|(n, i)| *i == id || n.path == output.path) {
            return Err(OutputError::SameOutput {
                first: first.to_string(),
                second: output.to_string(),
            });
        }
        seen.push((*output, id));
    }
    Ok(())
}

/// Where a file that does not exist yet at `path` would be created: the
/// last link of a chain of symbolic links followed, in its directory's
/// real path.
fn new_file_path(path: &Path) -> io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                }
            }
            // Not a link, or nothing there: the end of the chain.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::NotFound
                ) =>
            {
                let name = path.file_name().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "the path names no file")
                })?;
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                return Ok(fs::canonicalize(dir)?.join(name));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "too many levels of symbolic links",
    ))
}

/// An output capture being written.
#[derive(Debug)]
pub struct Output {
    /// The path given, for messages.
    given: PathBuf,
    writer: BufWriter<File>,
    /// For a file: the temporary file and the destination it is renamed
    /// to. `None` for a device or a pipe, written directly.
    replace: Option<(PathBuf, PathBuf)>,
}

impl Output {
    /// Starts writing the output `named`: a temporary file beside its
    /// destination, or the device or pipe itself.
    pub fn create(named: Named<'_>) -> Result<Output, OutputError> {
        let path = named.path;
        let (destination, permissions) = match fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(OutputError::Directory(named.to_string())),
            Ok(m) if m.is_file() => {
                let real = fs::canonicalize(path).map_err(io_error(path, "cannot resolve it"))?;
                (real, Some(m.permissions()))
            }
            Ok(_) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_error(path, "cannot open it"))?;
                return Ok(Output {
                    given: path.to_path_buf(),
                    writer: BufWriter::new(file),
                    replace: None,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let at = new_file_path(path).map_err(io_error(path, "cannot create it"))?;
                (at, None)
            }
            Err(e) => return Err(io_error(path, "cannot look at it")(e)),
        };
        let (temporary, file) = create_temporary(&destination, permissions)
            .map_err(io_error(path, "cannot create a temporary file beside it"))?;
        Ok(Output {
            given: path.to_path_buf(),
            writer: BufWriter::new(file),
            replace: Some((temporary, destination)),
        })
    }

    /// The path this output was named by.
    pub fn path(&self) -> &Path {
        &self.given
    }

    /// Ends the output: everything written reaches the disk, then the
    /// temporary file takes the destination's name in one step.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let given = self.given.clone();
        self.writer
            .flush()
            .map_err(io_error(&given, "cannot write it"))?;
        if let Some((temporary, destination)) = &self.replace {
            self.writer
                .get_ref()
                .sync_all()
                .map_err(io_error(&given, "cannot write it"))?;
            fs::rename(temporary, destination).map_err(io_error(&given, "cannot replace it"))?;
        }
        self.replace = None;
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some((temporary, _)) = self.replace.take() {
            let _ = fs::remove_file(temporary);
        }
    }
}

/// A new file beside `destination`, hidden and named after it and this
/// process (`.sent.pcap.1234-0.tmp`), with `permissions` if given (those
/// of the file it will replace).
fn create_temporary(
    destination: &Path,
    permissions: Option<Permissions>,
) -> io::Result<(PathBuf, File)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = destination
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = destination.parent().unwrap_or(Path::new("."));
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        temporary_name.push(format!(".{}-{n}.tmp", std::process::id()));
        let temporary = dir.join(temporary_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
        {
            Ok(file) => {
                if let Some(permissions) = permissions {
                    if let Err(e) = file.set_permissions(permissions) {
                        let _ = fs::remove_file(&temporary);
                        return Err(e);
                    }
                }
                return Ok((temporary, file));
            }
            // Left by a process of the same id that was killed: next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("flowgate-output-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
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
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn named<'a>(list: &[(&'static str, &'a Path)]) -> Vec<Named<'a>> {
        list.iter().map(|(o, p)| Named::new(o, p)).collect()
    }

    fn overlap(inputs: &[(&'static str, &Path)], outputs: &[(&'static str, &Path)]) -> String {
        let error = refuse_overlaps(&named(inputs), &named(outputs)).unwrap_err();
        assert!(error.is_usage(), "{error}");
        error.to_string()
    }

    #[test]
    fn an_output_naming_an_input_by_any_path_is_refused() {
        let scratch = Scratch::new("input");
        let input = scratch.path("in.pcap");
        fs::write(&input, b"capture").unwrap();
        let symlink = scratch.path("link.pcap");
        std::os::unix::fs::symlink("in.pcap", &symlink).unwrap();
        let hard = scratch.path("hard.pcap");
        fs::hard_link(&input, &hard).unwrap();
        let dotted = scratch.0.join(".").join("in.pcap");
        for output in [&input, &symlink, &hard, &dotted] {
            assert_eq!(
                overlap(&[("--in", &input)], &[("--out", output)]),
                format!(
                    "--out {} names the same file as --in {}: replay never writes over its input",
                    output.display(),
                    input.display()
                )
            );
        }
        // Through --passed, and the config is an input too.
        let config = scratch.path("gw.toml");
        fs::write(&config, "").unwrap();
        let other = scratch.path("out.pcap");
        let message = overlap(
            &[("--in", &input), ("--config", &config)],
            &[("--out", &other), ("--passed", &config)],
        );
        assert!(message.starts_with("--passed "), "{message}");
        assert!(message.contains("as --config "), "{message}");
        assert_eq!(fs::read(&input).unwrap(), b"capture");
        assert_eq!(
            scratch.names(),
            ["gw.toml", "hard.pcap", "in.pcap", "link.pcap"]
        );
    }

    #[test]
    fn two_outputs_naming_one_file_are_refused_even_before_it_exists() {
        let scratch = Scratch::new("outputs");
        let input = scratch.path("in.pcap");
        fs::write(&input, b"capture").unwrap();
        let out = scratch.path("out.pcap");
        let dangling = scratch.path("passed.pcap");
        std::os::unix::fs::symlink("out.pcap", &dangling).unwrap();
        for passed in [&out, &dangling] {
            assert_eq!(
                overlap(
                    &[("--in", &input)],
                    &[("--out", &out), ("--passed", passed)]
                ),
                format!(
                    "--passed {} names the same file as --out {}: give each output its own file",
                    passed.display(),
                    out.display()
                )
            );
        }
        let passed = scratch.path("passed-too.pcap");
        let inputs = [Named::new("--in", &input)];
        let outputs = [Named::new("--out", &out), Named::new("--passed", &passed)];
        refuse_overlaps(&inputs, &outputs).unwrap();
    }

    #[test]
    fn an_output_appears_whole_on_commit_and_keeps_the_old_ones_mode() {
        let scratch = Scratch::new("commit");
        let path = scratch.path("out.pcap");
        fs::write(&path, b"previous").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let mut output = Output::create(Named::new("--out", &path)).unwrap();
        output.write_all(b"new contents").unwrap();
        output.flush().unwrap();
        // Until the commit, the old file is as it was, beside the new one.
        assert_eq!(fs::read(&path).unwrap(), b"previous");
        let names = scratch.names();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[0].starts_with(".out.pcap.") && names[0].ends_with(".tmp"));
        output.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_eq!(scratch.names(), ["out.pcap"]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn a_dropped_output_leaves_the_old_file_and_no_temporary_one() {
        let scratch = Scratch::new("drop");
        let path = scratch.path("out.pcap");
        fs::write(&path, b"previous").unwrap();
        let fresh = scratch.path("fresh.pcap");
        {
            let mut output = Output::create(Named::new("--out", &path)).unwrap();
            output.write_all(&[0u8; 100_000]).unwrap();
            let mut other = Output::create(Named::new("--passed", &fresh)).unwrap();
            other.write_all(b"half").unwrap();
            assert_eq!(scratch.names().len(), 3);
        }
        assert_eq!(fs::read(&path).unwrap(), b"previous");
        assert_eq!(scratch.names(), ["out.pcap"]);
    }

    #[test]
    fn a_link_to_an_output_is_kept_and_its_target_replaced() {
        let scratch = Scratch::new("link");
        fs::create_dir(scratch.path("real")).unwrap();
        let target = scratch.path("real/out.pcap");
        fs::write(&target, b"previous").unwrap();
        let link = scratch.path("out.pcap");
        std::os::unix::fs::symlink("real/out.pcap", &link).unwrap();
        let mut output = Output::create(Named::new("--out", &link)).unwrap();
        output.write_all(b"new").unwrap();
        output.commit().unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new");
        // A link to nothing yet: the file is made where it points.
        let dangling = scratch.path("later.pcap");
        std::os::unix::fs::symlink("real/later.pcap", &dangling).unwrap();
        let mut output = Output::create(Named::new("--out", &dangling)).unwrap();
        output.write_all(b"later").unwrap();
        output.commit().unwrap();
        assert_eq!(fs::read(scratch.path("real/later.pcap")).unwrap(), b"later");
        assert!(fs::symlink_metadata(&dangling).unwrap().is_symlink());
    }

    #[test]
    fn a_device_is_written_directly_and_a_directory_refused() {
        let mut output = Output::create(Named::new("--out", Path::new("/dev/null"))).unwrap();
        output.write_all(b"gone").unwrap();
        output.commit().unwrap();
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        let scratch = Scratch::new("dir");
        let error = Output::create(Named::new("--out", &scratch.0)).unwrap_err();
        assert!(error.is_usage());
        assert_eq!(
            error.to_string(),
            format!(
                "--out {}: it is a directory; name a file",
                scratch.0.display()
            )
        );
        let missing = scratch.path("no/such/dir/out.pcap");
        let error = Output::create(Named::new("--out", &missing)).unwrap_err();
        assert!(!error.is_usage());
        assert!(error.to_string().contains("cannot create it"), "{error}");
    }
}
