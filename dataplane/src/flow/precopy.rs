//! A pre-copy's import, on the side that takes over: where each connection
//! of the first copy went, so that the delta handed over at the switch
//! (`handover.rs`) is applied to the right records.
//!
//! The first copy is taken while the old workers forward, a bounded step
//! per poll, so a connection may be in it twice (copied at one record,
//! moved to another before the walk got there): the later one replaces
//! the earlier here, as an insert of the same client tuple does. Each
//! record this side filled remembers the origin it holds, and an origin is
//! only acted on through a record that still holds it.
//!
//! At the switch, in two passes: first every origin the delta frees is
//! removed and every changed connection that still has its record is
//! brought up to date in place ([`FlowTable::refresh_handed`]: no hashing,
//! no insert) or, if it became another connection, removed; then the
//! connections new since the copy are inserted. Removing first means an
//! insert never meets a connection the delta has already done with (a
//! client tuple that moved from one record to another, say).

use std::collections::HashMap;

use super::connection::ConnId;
use super::handover::{HandedConnection, Origin};
use super::table::FlowTable;

/// Where the connections of a first copy went in this process's tables.
#[derive(Debug, Default)]
pub struct Placements {
    /// Origin → (worker, record) it went to.
    placed: HashMap<Origin, (usize, ConnId)>,
    /// (worker, record) → the origin it holds.
    holds: HashMap<(usize, u32), Origin>,
}

/// What applying a delta did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaApplied {
    /// Connections brought up to date in their records.
    pub updated: usize,
    /// Connections inserted (new since the copy, or changed into another).
    pub inserted: usize,
    /// Connections removed (gone since the copy, or changed into another).
    pub removed: usize,
    /// Connections the tables refused (full of established ones).
    pub refused: usize,
}

impl Placements {
    /// An empty record of placements.
    pub fn new() -> Placements {
        Placements::default()
    }

    /// Notes that `origin` went to record `id` of worker `worker`'s table.
    pub fn note(&mut self, origin: Origin, worker: usize, id: ConnId) {
        if id.is_none() {
            return;
        }
        self.placed.insert(origin, (worker, id));
        self.holds.insert((worker, id.0), origin);
    }

    /// How many origins have a record.
    pub fn len(&self) -> usize {
        self.placed.len()
    }

    /// Whether no origin has a record.
    pub fn is_empty(&self) -> bool {
        self.placed.is_empty()
    }

    /// Where `origin` is, if its record still holds it.
    fn find(&self, origin: Origin) -> Option<(usize, ConnId)> {
        let (worker, id) = *self.placed.get(&origin)?;
        (self.holds.get(&(worker, id.0)) == Some(&origin)).then_some((worker, id))
    }

    /// Forgets `origin` and removes its connection, if its record still
    /// holds it. Whether one was removed.
    fn remove(&mut self, tables: &mut [&mut FlowTable], origin: Origin) -> bool {
        let found = self.find(origin);
        self.placed.remove(&origin);
        let Some((worker, id)) = found else {
            return false;
        };
        self.holds.remove(&(worker, id.0));
        match tables.get_mut(worker) {
            Some(table) => {
                let live = table.len();
                table.remove(id);
                table.len() < live
            }
            None => false,
        }
    }

    /// Applies a delta: `changed[w]` are the connections worker `w` owns
    /// that were created or changed since the copy (each with its origin,
    /// numbered by this process's rules), `freed` the origins gone; the
    /// worker clock's 0 is `epoch_mono_ns`. See the module doc.
    pub fn apply(
        &mut self,
        tables: &mut [&mut FlowTable],
        changed: Vec<Vec<HandedConnection>>,
        freed: &[Origin],
        epoch_mono_ns: u64,
    ) -> DeltaApplied {
        let mut done = DeltaApplied::default();
        for &origin in freed {
            done.removed += usize::from(self.remove(tables, origin));
        }
        let mut inserts = Vec::with_capacity(changed.len());
        for (worker, connections) in changed.into_iter().enumerate() {
            let mut new = Vec::new();
            for handed in connections {
                let Some(origin) = handed.origin else {
                    new.push(handed);
                    continue;
                };
                let refreshed = match (self.find(origin), tables.get_mut(worker)) {
                    (Some((at, id)), Some(table)) if at == worker => {
                        table.refresh_handed(id, &handed, epoch_mono_ns)
                    }
                    _ => false,
                };
                if refreshed {
                    done.updated += 1;
                } else {
                    done.removed += usize::from(self.remove(tables, origin));
                    new.push(handed);
                }
            }
            inserts.push(new);
        }
        for (worker, connections) in inserts.into_iter().enumerate() {
            let Some(table) = tables.get_mut(worker) else {
                done.refused += connections.len();
                continue;
            };
            for handed in connections {
                let id = table.take_over_at(&handed, epoch_mono_ns);
                if id.is_none() {
                    done.refused += 1;
                    continue;
                }
                done.inserted += 1;
                if let Some(origin) = handed.origin {
                    self.note(origin, worker, id);
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::handover::{decode, encode, encode_delta};
    use crate::flow::{Connection, Direction, FlowState, FlowTimeouts};
    use crate::hash::table_hash;
    use crate::wire::{ip_proto, tcp_flags, v4_mapped, FiveTuple};

    const TIMEOUTS: FlowTimeouts = FlowTimeouts {
        tcp_syn_ns: 1_000_000,
        tcp_established_ns: 1_000_000,
        tcp_closing_ns: 1_000_000,
        udp_ns: 1_000_000,
        other_ns: 1_000_000,
    };

    fn conn(port: u16, backend: u8, state: FlowState) -> Connection {
        let protocol = match state {
            FlowState::Udp => ip_proto::UDP,
            _ => ip_proto::TCP,
        };
        Connection {
            client: FiveTuple::v4([198, 18, 0, 2], [198, 18, 100, 10], port, 80, protocol),
            backend_addr: v4_mapped([198, 18, 1, backend]),
            backend_port: 8080,
            endpoint: u32::from(backend),
            client_mac: [2, 0, 0, 0, 0, 1],
            client_ingress: 0,
            state,
            last_seen_ns: 10,
        }
    }

    fn insert(table: &mut FlowTable, c: Connection) -> ConnId {
        let (ch, rh) = (table_hash(&c.client), table_hash(&c.reply_tuple()));
        table.insert(c, ch, rh, 10)
    }

    fn find(table: &mut FlowTable, port: u16, state: FlowState) -> ConnId {
        let c = conn(port, 0, state);
        table
            .lookup(&c.client, table_hash(&c.client), 20)
            .map(|(id, _)| id)
            .unwrap_or(ConnId::NONE)
    }

    /// A connection as [`contents`] lists it: client port, backend, state,
    /// whether its backend answered, client MAC.
    type Held = (u16, [u8; 16], String, bool, [u8; 6]);

    /// What a table holds, as a process taking over needs it, in a
    /// comparable order and without the origins and last-seen times.
    fn contents(table: &FlowTable) -> Vec<Held> {
        let mut handed = Vec::new();
        table.hand_over(0, &mut handed);
        let mut all: Vec<_> = handed
            .into_iter()
            .map(|h| {
                let c = h.connection;
                (
                    c.client.src_port,
                    c.backend_addr,
                    format!("{:?}", c.state),
                    h.backend_replied,
                    c.client_mac,
                )
            })
            .collect();
        all.sort_unstable();
        all
    }

    /// The old table's first copy, taken in steps of a few records while
    /// `between` changes the table after each step, as a forwarding worker
    /// does.
    fn first_copy(
        old: &mut FlowTable,
        mut between: impl FnMut(&mut FlowTable, usize),
    ) -> Vec<HandedConnection> {
        let mut copy = Vec::new();
        let mut cursor = 0;
        for step in 0.. {
            let mut chunk = Vec::with_capacity(3);
            let done = old.hand_over_step(0, 0, &mut cursor, 4, &mut chunk);
            copy.extend(chunk);
            if done {
                break;
            }
            between(old, step);
        }
        copy
    }

    #[test]
    fn created_changed_freed_and_reused_records_all_end_up_right() {
        let mut old = FlowTable::new(64, TIMEOUTS);
        for port in 0..20 {
            let state = if port < 10 {
                FlowState::TcpSyn
            } else {
                FlowState::Udp
            };
            insert(&mut old, conn(1000 + port, 1 + (port % 3) as u8, state));
        }
        // While the copy is taken: port 1000 (copied first) closes and its
        // record is reused at once by a new connection the walk has passed;
        // port 1019 (not yet copied) moves to another backend.
        let copy = first_copy(&mut old, |old, step| {
            if step == 1 {
                let id = find(old, 1000, FlowState::TcpSyn);
                old.remove(id);
                insert(old, conn(2000, 2, FlowState::TcpSyn));
                let id = find(old, 1019, FlowState::Udp);
                old.remove(id);
            }
        });
        let image = decode(&encode(0, &copy)).unwrap();
        let mut new = FlowTable::new(64, TIMEOUTS);
        let mut placements = Placements::new();
        for handed in &image.connections {
            let id = new.take_over_at(handed, 0);
            placements.note(handed.origin.unwrap(), 0, id);
        }

        // Between the copy and the switch: created, changed (a handshake
        // done, a UDP flow answered, a client's MAC), freed, and freed then
        // reused by another connection.
        insert(&mut old, conn(3000, 1, FlowState::Udp));
        let id = find(&mut old, 1001, FlowState::TcpSyn);
        old.observe(
            id,
            Direction::FromBackend,
            tcp_flags::SYN | tcp_flags::ACK,
            30,
        );
        old.observe(id, Direction::FromClient, tcp_flags::ACK, 30);
        assert_eq!(old.get(id).state, FlowState::TcpEstablished);
        let id = find(&mut old, 1011, FlowState::Udp);
        let reply = old.get(id).reply_tuple();
        let (id, direction) = old.lookup(&reply, table_hash(&reply), 30).unwrap();
        old.observe(id, direction, 0, 30);
        let id = find(&mut old, 1012, FlowState::Udp);
        old.get_mut(id).client_mac = [2, 0, 0, 0, 0, 9];
        let id = find(&mut old, 1002, FlowState::TcpSyn);
        old.remove(id);
        let id = find(&mut old, 1013, FlowState::Udp);
        old.remove(id);
        insert(&mut old, conn(4000, 3, FlowState::TcpSyn));
        // Only seen again: not in the delta.
        let id = find(&mut old, 1014, FlowState::Udp);
        old.observe(id, Direction::FromClient, 0, 40);

        let (mut changed, mut freed) = (Vec::new(), Vec::new());
        old.hand_over_changes(0, 0, &copy, &mut changed, &mut freed);
        let delta = decode(&encode_delta(0, &changed, &freed)).unwrap();
        assert!(delta.delta);
        let ports = |list: &[HandedConnection]| {
            let mut ports: Vec<u16> = list.iter().map(|h| h.connection.client.src_port).collect();
            ports.sort_unstable();
            ports
        };
        // 1001, 1011 and 1012 changed; 2000 took 1000's record after the
        // walk passed it, 3000 took 1019's before the walk reached it, and
        // 4000 took 1013's: each is new where its record was copied with
        // another connection or none. 1002's record alone is freed.
        assert_eq!(
            ports(&delta.connections),
            [1001, 1011, 1012, 2000, 3000, 4000]
        );
        let freed: Vec<u32> = delta.freed.iter().map(|o| o.record).collect();
        assert_eq!(freed, [2]);

        let done = placements.apply(&mut [&mut new], vec![delta.connections], &delta.freed, 0);
        assert_eq!(
            done,
            DeltaApplied {
                updated: 3,
                inserted: 3,
                removed: 3,
                refused: 0
            }
        );
        assert_eq!(contents(&new), contents(&old));
        new.audit();
    }

    #[test]
    fn a_connection_copied_twice_is_removed_through_its_latest_record_only() {
        let mut old = FlowTable::new(8, TIMEOUTS);
        for port in 0..6 {
            insert(&mut old, conn(1000 + port, 1, FlowState::Udp));
        }
        // Port 1000 is copied in record 0, then moves to the last record
        // the walk reaches (its client began again, to another backend).
        let copy = first_copy(&mut old, |old, step| {
            if step == 0 {
                let id = find(old, 1000, FlowState::Udp);
                old.remove(id);
                for port in [1100, 1101] {
                    insert(old, conn(port, 1, FlowState::Udp));
                }
                insert(old, conn(1000, 2, FlowState::Udp));
            }
        });
        let copied_1000 = copy
            .iter()
            .filter(|h| h.connection.client.src_port == 1000)
            .count();
        assert_eq!(copied_1000, 2, "{copy:?}");
        let mut new = FlowTable::new(8, TIMEOUTS);
        let mut placements = Placements::new();
        for handed in &copy {
            let id = new.take_over_at(handed, 0);
            placements.note(handed.origin.unwrap(), 0, id);
        }
        let (mut changed, mut freed) = (Vec::new(), Vec::new());
        old.hand_over_changes(0, 0, &copy, &mut changed, &mut freed);
        placements.apply(&mut [&mut new], vec![changed], &freed, 0);
        assert_eq!(contents(&new), contents(&old));
        let backend_of_1000 = new
            .iter()
            .find(|c| c.client.src_port == 1000)
            .map(|c| c.backend_addr);
        assert_eq!(backend_of_1000, Some(v4_mapped([198, 18, 1, 2])));
        new.audit();
    }
}
