//! The last good state, kept on disk: a gateway that restarts while etcd
//! cannot be reached starts from the rules it last ran.
//!
//! One JSON file: the format, the prefix it mirrors, the revision its
//! rules came from, and every running key with its value and the revision
//! that value was written at. Written whole to a temporary file beside it,
//! flushed, then renamed over it, so a crash leaves the old file or the
//! new one, never half of one. Only good values are saved (their keys and
//! values are UTF-8: anything else is refused before it runs), so the file
//! is plain JSON an operator can read.
//!
//! The write (JSON of every key, a flush to disk) happens on a thread of
//! its own ([`Saver`]), off the road from a watch reply to the rules
//! running: the gateway hands over the state and goes on to the next
//! revision. A state handed over while one is being written waits, and a
//! newer one replaces it, so the file follows the rules as fast as the
//! disk allows and never holds them back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::mirror::{Mirror, Stored};

/// The saved file's format.
pub const SAVED_FORMAT: u32 = 1;

/// The last good state of a mirror.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// [`SAVED_FORMAT`].
    pub format: u32,
    /// The prefix the state mirrors (the configured one, without the
    /// layout's version).
    pub prefix: String,
    /// The revision the rules came from.
    pub revision: i64,
    /// Every running key, in key order.
    pub entries: Vec<SavedEntry>,
}

/// One running key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedEntry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// The revision the value was written at.
    pub mod_revision: i64,
}

/// Why a saved state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file is not a saved state this gateway reads.
    #[error("{path}: not a saved etcd state: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file mirrors another prefix.
    #[error(
        "{path}: the saved state is of etcd prefix {saved:?}, not the configured {configured:?}"
    )]
    Prefix {
        /// The file.
        path: PathBuf,
        /// The prefix in the file.
        saved: String,
        /// The configured prefix.
        configured: String,
    },
}

impl SavedState {
    /// The running state of `mirror`.
    pub fn of(mirror: &Mirror) -> SavedState {
        SavedState {
            format: SAVED_FORMAT,
            prefix: mirror.layout().prefix().to_owned(),
            revision: mirror.applied_revision(),
            entries: mirror
                .good_entries()
                .map(|(key, stored)| SavedEntry {
                    key: String::from_utf8_lossy(key).into_owned(),
                    value: String::from_utf8_lossy(&stored.value).into_owned(),
                    mod_revision: stored.mod_revision,
                })
                .collect(),
        }
    }

    /// The entries as a mirror takes them.
    pub fn into_entries(self) -> impl Iterator<Item = (Vec<u8>, Stored)> {
        self.entries.into_iter().map(|e| {
            (
                e.key.into_bytes(),
                Stored {
                    value: e.value.into_bytes(),
                    mod_revision: e.mod_revision,
                },
            )
        })
    }

    /// Reads the state saved at `path` for `prefix`; `Ok(None)` if there
    /// is no file.
    pub fn read(path: &Path, prefix: &str) -> Result<Option<SavedState>, SavedError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(SavedError::Io {
                    path: path.to_owned(),
                    error,
                })
            }
        };
        let state: SavedState = serde_json::from_str(&text).map_err(|e| SavedError::Format {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        if state.format != SAVED_FORMAT {
            return Err(SavedError::Format {
                path: path.to_owned(),
                why: format!(
                    "format {} (this gateway reads {SAVED_FORMAT})",
                    state.format
                ),
            });
        }
        if state.prefix != prefix {
            return Err(SavedError::Prefix {
                path: path.to_owned(),
                saved: state.prefix,
                configured: prefix.to_owned(),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state to `path`, whole or not at all.
    pub fn write(&self, path: &Path) -> Result<(), SavedError> {
        let io = |error| SavedError::Io {
            path: path.to_owned(),
            error,
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let text = serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?;
        let mut file = fs::File::create(&temporary).map_err(io)?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        fs::rename(&temporary, path).map_err(io)
    }
}

/// Writes saved states on a thread of its own. See the module's
/// documentation.
pub struct Saver {
    shared: Arc<(Mutex<Slot>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// What the gateway and the writing thread share.
#[derive(Default)]
struct Slot {
    /// The state to write next.
    next: Option<SavedState>,
    /// A state is being written.
    writing: bool,
    /// A write failed since the last [`Saver::take_failed`].
    failed: bool,
    /// The thread is to end once nothing waits.
    stop: bool,
}

impl Saver {
    /// A saver writing to `path`; its thread starts now.
    pub fn new(path: PathBuf) -> std::io::Result<Saver> {
        let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("flowgate-etcd-save".into())
            .spawn(move || write_loop(&theirs, &path))?;
        Ok(Saver {
            shared,
            thread: Some(thread),
        })
    }

    /// Whether a state handed over is still waiting or being written.
    pub fn busy(&self) -> bool {
        let slot = self.lock();
        slot.next.is_some() || slot.writing
    }

    /// Whether a write failed since last asked (the state is then due
    /// again).
    pub fn take_failed(&self) -> bool {
        std::mem::take(&mut self.lock().failed)
    }

    /// Hands `state` over to be written; one still waiting is dropped
    /// for it.
    pub fn hand(&self, state: SavedState) {
        self.lock().next = Some(state);
        self.shared.1.notify_all();
    }

    /// Waits until every state handed over is written.
    pub fn flush(&self) {
        let mut slot = self.lock();
        while slot.next.is_some() || slot.writing {
            slot = self
                .shared
                .1
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.shared.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Saver {
    /// Writes what waits, then ends the thread.
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writing thread: each state handed over, the latest first, until
/// told to stop with nothing waiting.
fn write_loop(shared: &(Mutex<Slot>, Condvar), path: &Path) {
    let (slot, changed) = shared;
    let lock = || slot.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let state = {
            let mut slot = lock();
            while slot.next.is_none() && !slot.stop {
                slot = changed.wait(slot).unwrap_or_else(PoisonError::into_inner);
            }
            let Some(state) = slot.next.take() else {
                return;
            };
            slot.writing = true;
            state
        };
        let written = state.write(path);
        let mut slot = lock();
        slot.writing = false;
        if let Err(e) = written {
            tracing::error!("cannot save the etcd state: {e}");
            slot.failed = true;
        }
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::layout::KeyLayout;
    use crate::fleet::mirror::{Change, Outcome};
    use crate::rules::Config;

    fn mirror_with_a_service() -> Mirror {
        let layout = KeyLayout::new("/fg").unwrap();
        let mut mirror = Mirror::new(layout.clone(), Config::default());
        let value = br#"{"format":1,"protocol":"tcp","vip":"198.18.100.1","port":80,
            "backends":[{"address":"198.18.1.1","port":80}]}"#;
        let change = Change {
            key: layout.service_key("web").into_bytes(),
            value: Some(Stored {
                value: value.to_vec(),
                mod_revision: 4,
            }),
        };
        assert!(matches!(mirror.load(7, vec![change]), Outcome::Applied(_)));
        mirror
    }

    #[test]
    fn a_saved_state_restores_the_rules_it_ran() {
        let dir = std::env::temp_dir().join(format!("flowgate-saved-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("etcd-state.json");
        let mirror = mirror_with_a_service();
        SavedState::of(&mirror).write(&path).unwrap();
        assert!(!dir.join("etcd-state.json.tmp").exists());

        let saved = SavedState::read(&path, "/fg").unwrap().unwrap();
        assert_eq!(saved.revision, 7);
        let mut restored = Mirror::new(mirror.layout().clone(), Config::default());
        let Outcome::Applied(rules) = restored.restore(saved.revision, saved.into_entries()) else {
            panic!("refused");
        };
        assert_eq!(rules.revision, 7);
        assert_eq!(rules.config.services[0].name, "web");

        let other = SavedState::read(&path, "/other").unwrap_err().to_string();
        assert!(other
            .ends_with("the saved state is of etcd prefix \"/fg\", not the configured \"/other\""));
        assert!(SavedState::read(&dir.join("none"), "/fg")
            .unwrap()
            .is_none());
        fs::write(&path, "{").unwrap();
        assert!(SavedState::read(&path, "/fg")
            .unwrap_err()
            .to_string()
            .contains("not a saved etcd state"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_saver_writes_the_latest_state_handed_over() {
        let dir = std::env::temp_dir().join(format!("flowgate-saver-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("etcd-state.json");
        let mirror = mirror_with_a_service();
        let saver = Saver::new(path.clone()).unwrap();
        let mut state = SavedState::of(&mirror);
        for revision in 1..=20 {
            state.revision = revision;
            saver.hand(state.clone());
        }
        saver.flush();
        assert!(!saver.busy());
        assert!(!saver.take_failed());
        assert_eq!(
            SavedState::read(&path, "/fg").unwrap().unwrap().revision,
            20
        );
        // What waits when it is dropped is written.
        state.revision = 21;
        saver.hand(state);
        drop(saver);
        assert_eq!(
            SavedState::read(&path, "/fg").unwrap().unwrap().revision,
            21
        );
        // A write that fails is reported, and the saver goes on.
        let saver = Saver::new(dir.join("no-such-dir").join("state.json")).unwrap();
        saver.hand(SavedState::of(&mirror));
        saver.flush();
        assert!(saver.take_failed());
        assert!(!saver.take_failed());
        drop(saver);
        fs::remove_dir_all(&dir).unwrap();
    }
}
