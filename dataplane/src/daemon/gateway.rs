//! The gateway's control-side state: the operator's rules, the neighbours
//! the kernel taught us, the published snapshot and the XDP filters — and
//! the one place that turns them into a new generation.
//!
//! Two threads change it: the control API (rule changes, reloads) and the
//! daemon's main loop (neighbour changes). A mutex orders them; workers
//! never take it — they only load the published snapshot.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::neigh::{merge_neighbours, KernelNeighbour};
use crate::rules::Config;
use crate::table::{Snapshot, SnapshotPublisher};
use crate::xdp::{OwnedTraffic, XdpFilter};

/// What the control API and the main loop share.
pub struct Gateway {
    inner: Mutex<Inner>,
    publisher: SnapshotPublisher,
    /// ifindex of each configured interface, in port order.
    port_ifindex: Vec<u32>,
}

struct Inner {
    /// The rules as the operator wrote them (no learned neighbours).
    config: Config,
    /// What the kernel's neighbour table holds for our interfaces, by
    /// (ifindex, address).
    learned: HashMap<(u32, IpAddr), KernelNeighbour>,
    /// One per interface, in port order.
    filters: Vec<XdpFilter>,
}

impl Gateway {
    /// Builds the first snapshot from `config` and what the kernel already
    /// knows, publishes it and programs the filters.
    pub fn start(
        config: Config,
        learned: Vec<KernelNeighbour>,
        filters: Vec<XdpFilter>,
        port_ifindex: Vec<u32>,
    ) -> Result<Gateway, String> {
        let mut inner = Inner {
            config,
            learned: learned
                .into_iter()
                .map(|n| ((n.ifindex, n.address), n))
                .collect(),
            filters,
        };
        let effective = effective_config(&inner, &port_ifindex);
        let snapshot = Snapshot::build(&effective, None);
        program_filters(&mut inner.filters, &OwnedTraffic::from_snapshot(&snapshot))?;
        Ok(Gateway {
            inner: Mutex::new(inner),
            publisher: SnapshotPublisher::new(snapshot),
            port_ifindex,
        })
    }

    /// The publisher, for readers.
    pub fn publisher(&self) -> &SnapshotPublisher {
        &self.publisher
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }

    /// ifindex of each configured interface, in port order.
    pub fn port_ifindex(&self) -> &[u32] {
        &self.port_ifindex
    }

    /// The operator's rules now running.
    pub fn config(&self) -> Config {
        self.lock().config.clone()
    }

    /// Makes `config` (already validated) the running rules; returns the
    /// new generation.
    pub fn apply(&self, config: Config) -> Result<u64, String> {
        let mut inner = self.lock();
        let previous = std::mem::replace(&mut inner.config, config);
        match self.rebuild(&mut inner) {
            Ok(generation) => Ok(generation),
            Err(e) => {
                inner.config = previous;
                Err(e)
            }
        }
    }

    /// Records neighbour changes; rebuilds if any changed a backend's
    /// next hop (clients' entries come and go with their traffic and are
    /// kept, but change nothing the snapshot uses). Returns the new
    /// generation, if any.
    pub fn neighbours_changed(
        &self,
        changes: impl IntoIterator<Item = (KernelNeighbour, bool)>,
    ) -> Result<Option<u64>, String> {
        let mut inner = self.lock();
        let backends: HashSet<IpAddr> = backend_addresses(&inner.config).collect();
        let mut changed = false;
        for (neighbour, present) in changes {
            if !self.port_ifindex.contains(&neighbour.ifindex) {
                continue;
            }
            let key = (neighbour.ifindex, neighbour.address);
            let is_backend = backends.contains(&neighbour.address);
            let before = inner.learned.get(&key).map(|n| (n.mac, n.is_usable()));
            if present {
                let after = Some((neighbour.mac, neighbour.is_usable()));
                changed |= is_backend && before != after;
                inner.learned.insert(key, neighbour);
            } else if inner.learned.remove(&key).is_some() {
                changed |= is_backend;
            }
        }
        if changed {
            self.rebuild(&mut inner).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Backend addresses with no static or usable learned next hop.
    pub fn unresolved_backends(&self) -> Vec<IpAddr> {
        let inner = self.lock();
        let usable: HashSet<IpAddr> = inner
            .learned
            .values()
            .filter(|n| n.is_usable())
            .map(|n| n.address)
            .collect();
        let mut missing: Vec<IpAddr> = backend_addresses(&inner.config)
            .filter(|addr| inner.config.neighbour(*addr).is_none() && !usable.contains(addr))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Learned entries for backend addresses (to keep them fresh).
    pub fn learned_backend_entries(&self) -> Vec<(u32, IpAddr)> {
        let inner = self.lock();
        let backends: HashSet<IpAddr> = backend_addresses(&inner.config).collect();
        inner
            .learned
            .keys()
            .filter(|(_, address)| backends.contains(address))
            .copied()
            .collect()
    }

    /// Tells every filter the box's own addresses (replies from a backend
    /// to one of them are the box's own connections: the kernel's).
    /// Returns whether anything changed.
    pub fn set_local_addresses(&self, addresses: &HashSet<[u8; 16]>) -> Result<bool, String> {
        let mut inner = self.lock();
        let mut changed = false;
        for filter in inner.filters.iter_mut() {
            if filter.local_addresses() != addresses {
                filter
                    .set_local_addresses(addresses)
                    .map_err(|e| format!("updating the box's own addresses: {e}"))?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Runs `f` with the XDP filters (e.g. to read their counters).
    pub fn with_filters<T>(&self, f: impl FnOnce(&mut [XdpFilter]) -> T) -> T {
        f(&mut self.lock().filters)
    }

    /// Takes the filters out (at shutdown, to detach them in order).
    pub fn take_filters(&self) -> Vec<XdpFilter> {
        std::mem::take(&mut self.lock().filters)
    }

    fn rebuild(&self, inner: &mut Inner) -> Result<u64, String> {
        let effective = effective_config(inner, &self.port_ifindex);
        let previous = self.publisher.current();
        let snapshot = Snapshot::build(&effective, Some(&previous));
        let generation = snapshot.generation();
        // Publish first, then widen or narrow the filter: a new VIP's
        // first packets find their service, a removed one's last packets
        // find none and are counted, never sent to a stale backend.
        let owned = OwnedTraffic::from_snapshot(&snapshot);
        self.publisher.publish(snapshot);
        program_filters(&mut inner.filters, &owned)?;
        Ok(generation)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // change is a whole replacement), so a poisoned lock is still
        // usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn effective_config(inner: &Inner, port_ifindex: &[u32]) -> Config {
    let learned: Vec<KernelNeighbour> = inner.learned.values().cloned().collect();
    let mut effective = inner.config.clone();
    effective.neighbours = merge_neighbours(&inner.config, &learned, port_ifindex);
    effective
}

/// Makes every filter's maps equal to `owned`.
fn program_filters(filters: &mut [XdpFilter], owned: &OwnedTraffic) -> Result<(), String> {
    for filter in filters.iter_mut() {
        filter
            .update(owned)
            .map_err(|e| format!("updating the XDP filter: {e}"))?;
    }
    Ok(())
}

/// Every backend address of every service (with repeats).
fn backend_addresses(config: &Config) -> impl Iterator<Item = IpAddr> + '_ {
    config
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
}
