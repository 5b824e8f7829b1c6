//! Writing the fleet's rules, and reading its status, from an operator's
//! side: one blocking client over etcd.
//!
//! A change is checked the way a gateway will check it, then written in one
//! etcd transaction that compares what it read with what is there: every
//! key the change writes must still be at the revision it was read at, and
//! no key under the rules prefix may have been written since the read. A
//! concurrent writer that got in between makes the transaction fail, and
//! the change is refused as [`StoreError::Lost`], naming the revisions, so
//! it is never applied on top of rules it was not checked against.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp,
};

use super::layout::KeyLayout;
use super::mirror::{Change, Mirror, Outcome, Stored};
use super::settings::EtcdSettings;
use super::source::{connect_options, prefix_end};
use super::status::{fleet_rows, FleetRow, GatewayStatus};
use crate::rules::Config;

/// Why a read or write of the fleet's store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd could not be reached or answered with an error.
    #[error("etcd: {0}")]
    Etcd(String),
    /// The change would be refused by the gateways; nothing was written.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// Another writer changed the rules between the read and the write;
    /// nothing was written.
    #[error(
        "another writer changed the rules after revision {read} (now at {now}): \
         nothing was written; read them again and retry"
    )]
    Lost {
        /// The revision the change was checked against.
        read: i64,
        /// The revision etcd is at now.
        now: i64,
    },
}

/// The rules in etcd at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RulesRead {
    /// The revision read at.
    pub revision: i64,
    /// Every key under the rules prefix and its value.
    pub entries: BTreeMap<Vec<u8>, Stored>,
}

/// One key a change writes: its new value, or `None` to delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The key.
    pub key: String,
    /// The new value; `None` deletes the key.
    pub value: Option<Vec<u8>>,
}

/// A blocking client of the fleet's etcd.
pub struct FleetStore {
    runtime: tokio::runtime::Runtime,
    client: Client,
    layout: KeyLayout,
}

impl std::fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetStore")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn etcd(e: etcd_client::Error) -> StoreError {
    StoreError::Etcd(e.to_string())
}

impl FleetStore {
    /// Connects to `endpoints`, for the fleet under `layout`.
    pub fn connect(endpoints: &[String], layout: KeyLayout) -> Result<FleetStore, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        Self::connect_options(endpoints, layout, options)
    }

    /// Connects as `settings` say (endpoints, prefix, credentials, TLS).
    pub fn connect_with(settings: &EtcdSettings) -> Result<FleetStore, StoreError> {
        let layout = settings
            .layout()
            .map_err(|e| StoreError::Etcd(e.to_string()))?;
        let options = connect_options(settings).map_err(StoreError::Etcd)?;
        Self::connect_options(&settings.endpoints, layout, options)
    }

    fn connect_options(
        endpoints: &[String],
        layout: KeyLayout,
        options: ConnectOptions,
    ) -> Result<FleetStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd(format!("cannot start a runtime: {e}")))?;
        let client = runtime
            .block_on(Client::connect(endpoints, Some(options)))
            .map_err(etcd)?;
        Ok(FleetStore {
            runtime,
            client,
            layout,
        })
    }

    /// The key layout.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// Every key under the rules prefix but the health keys (liveness,
    /// not rules: see [`super::health`]), at one revision.
    pub fn read(&mut self) -> Result<RulesRead, StoreError> {
        let prefix = self.layout.rules().as_bytes().to_vec();
        let options = GetOptions::new().with_range(prefix_end(&prefix));
        let mut reply = self
            .runtime
            .block_on(self.client.get(prefix, Some(options)))
            .map_err(etcd)?;
        let revision = reply.header().map_or(0, |h| h.revision());
        let layout = &self.layout;
        let entries = reply
            .take_kvs()
            .into_iter()
            .filter(|kv| !layout.is_health(kv.key()))
            .map(|kv| {
                let mod_revision = kv.mod_revision();
                let (key, value) = kv.into_key_value();
                (
                    key,
                    Stored {
                        value,
                        mod_revision,
                    },
                )
            })
            .collect();
        Ok(RulesRead { revision, entries })
    }

    /// Checks `writes` against the rules in `read` (with `base`, the
    /// file's config the gateways run beside etcd's parts, usually empty)
    /// as a gateway would: the problems, in the gateways' words, or none.
    pub fn check(
        read: &RulesRead,
        base: Config,
        layout: &KeyLayout,
        writes: &[Write],
    ) -> Vec<String> {
        let mut mirror = Mirror::new(layout.clone(), base);
        let entries = read
            .entries
            .iter()
            .map(|(key, stored)| Change {
                key: key.clone(),
                value: Some(stored.clone()),
            })
            .collect();
        // The rules as they are: keys already held stay held, as on the
        // gateways, and are not this change's fault.
        let _ = mirror.load(read.revision, entries);
        let next = read.revision + 1;
        let changes = writes
            .iter()
            .map(|w| Change {
                key: w.key.clone().into_bytes(),
                value: w.value.clone().map(|value| Stored {
                    value,
                    mod_revision: next,
                }),
            })
            .collect();
        match mirror.apply(next, changes) {
            Outcome::Applied(_) => Vec::new(),
            Outcome::Refused(refusal) => refusal
                .problems
                .iter()
                .flat_map(|held| {
                    held.problems
                        .iter()
                        .map(move |p| format!("etcd key {}: {p}", held.key))
                })
                .collect(),
        }
    }

    /// Writes `writes` in one transaction if nothing under the rules
    /// prefix changed since `read`; returns the revision written at.
    pub fn commit(&mut self, read: &RulesRead, writes: &[Write]) -> Result<i64, StoreError> {
        let prefix = self.layout.rules().as_bytes().to_vec();
        let health = self.layout.health().into_bytes();
        // Nothing under the prefix written since the read, health keys
        // aside (reporters write them all the time; they are not rules) ...
        let mut compares = vec![
            Compare::mod_revision(prefix.clone(), CompareOp::Less, read.revision + 1)
                .with_range(health.clone()),
            Compare::mod_revision(prefix_end(&health), CompareOp::Less, read.revision + 1)
                .with_range(prefix_end(&prefix)),
        ];
        // ... and every key written still as read (absent is revision 0),
        // which also catches a deletion.
        for write in writes {
            let key = write.key.as_bytes();
            let at = read.entries.get(key).map_or(0, |s| s.mod_revision);
            compares.push(Compare::mod_revision(key.to_vec(), CompareOp::Equal, at));
        }
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match &w.value {
                Some(value) => TxnOp::put(w.key.clone(), value.clone(), None),
                None => TxnOp::delete(w.key.clone(), None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let reply = self.runtime.block_on(self.client.txn(txn)).map_err(etcd)?;
        let now = reply.header().map_or(0, |h| h.revision());
        if reply.succeeded() {
            Ok(now)
        } else {
            Err(StoreError::Lost {
                read: read.revision,
                now,
            })
        }
    }

    /// Reads the rules, checks `writes` against them and commits them:
    /// [`FleetStore::check`] then [`FleetStore::commit`]. With `dry_run`,
    /// only checks; returns the revision read (dry run) or written.
    pub fn change(&mut self, writes: &[Write], dry_run: bool) -> Result<i64, StoreError> {
        let read = self.read()?;
        let problems = Self::check(&read, Config::default(), &self.layout, writes);
        if !problems.is_empty() {
            return Err(StoreError::Invalid(problems));
        }
        if dry_run {
            return Ok(read.revision);
        }
        self.commit(&read, writes)
    }

    /// Writes `writes` in one transaction, unchecked and unconditional:
    /// for tests and tools that mean to write what they write.
    pub fn write_unchecked(&mut self, writes: &[Write]) -> Result<i64, StoreError> {
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match &w.value {
                Some(value) => TxnOp::put(w.key.clone(), value.clone(), None),
                None => TxnOp::delete(w.key.clone(), None),
            })
            .collect();
        let reply = self
            .runtime
            .block_on(self.client.txn(Txn::new().and_then(ops)))
            .map_err(etcd)?;
        Ok(reply.header().map_or(0, |h| h.revision()))
    }

    /// Compacts etcd's history up to `revision`.
    pub fn compact(&mut self, revision: i64) -> Result<(), StoreError> {
        self.runtime
            .block_on(
                self.client
                    .compact(revision, Some(CompactionOptions::new().with_physical())),
            )
            .map(|_| ())
            .map_err(etcd)
    }

    /// Every gateway's status, by id; a value that is not a status is
    /// skipped with a warning.
    pub fn statuses(&mut self) -> Result<Vec<GatewayStatus>, StoreError> {
        let prefix = self.layout.status().into_bytes();
        let options = GetOptions::new().with_range(prefix_end(&prefix));
        let reply = self
            .runtime
            .block_on(self.client.get(prefix, Some(options)))
            .map_err(etcd)?;
        let mut statuses = Vec::new();
        for kv in reply.kvs() {
            match serde_json::from_slice::<GatewayStatus>(kv.value()) {
                Ok(status) => statuses.push(status),
                Err(e) => tracing::warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    "not a gateway status: {e}"
                ),
            }
        }
        Ok(statuses)
    }

    /// The fleet: every gateway's status and how far it lags behind the
    /// last write under the rules prefix (the highest `mod_revision`
    /// there; a deletion since is not seen, so the lag is a lower bound).
    pub fn fleet(&mut self) -> Result<Vec<FleetRow>, StoreError> {
        let read = self.read()?;
        let last = read
            .entries
            .values()
            .map(|s| s.mod_revision)
            .max()
            .unwrap_or(0);
        Ok(fleet_rows(self.statuses()?, last))
    }
}
