//! `flowgatectl flows` between the control side and a worker.
//!
//! A worker's connection table is its own, so a listing is made on the
//! worker's thread — but it must cost the worker's polls next to nothing
//! and never make it wait. A [`FlowQuery`] carries what the control side
//! wants (a [`FlowFilter`]), where the listing is in the table (an
//! [`ExportCursor`]) and a buffer of plain [`FlowRecord`]s the control side
//! allocated. It travels to the worker and back through two bounded
//! lock-free queues: no lock, no allocation, no system call on the worker's
//! side, and no waiting on either side (the control side polls its queue
//! with short sleeps rather than block in a way that would make the worker
//! wake it).
//!
//! After each poll the worker takes one bounded step
//! ([`FlowQueryServer::serve`]): it looks at no more than
//! [`SCAN_PER_POLL`] record positions and copies into the buffer no more
//! than it holds ([`CHUNK_RECORDS`]). A full buffer, or the end of the
//! table, sends the query back; the control side turns the records into
//! listing entries (names, strings, sorting) and, if it wants more, sends
//! the emptied query back for the next chunk.
//!
//! A control side that gives up (its deadline passed) leaves its query to
//! finish: the worker answers it as any other, and the next listing drops
//! the stale answer on the control side. At most [`IN_FLIGHT`] queries per
//! worker are ever outstanding, the queues hold that many, so the worker
//! never finds its answer queue full and nothing piles up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;

use crate::flow::{ExportCursor, FlowFilter, FlowRecord, FlowRecords, FlowTable};

/// Records a query's buffer holds: the most a worker copies for one
/// round trip.
pub const CHUNK_RECORDS: usize = 1024;
/// Record positions a worker looks at per poll for a listing, so also the
/// most it copies: a step reads 22 KiB of the table in order and writes at
/// most 18 KiB of records (a few microseconds; docs/benchmarks.md).
pub const SCAN_PER_POLL: usize = 128;
/// Queries one worker may have outstanding (sent, not yet taken back): a
/// listing's own, and one a listing before it gave up on.
pub const IN_FLIGHT: usize = 2;
/// How long the control side sleeps between looks at its answer queues.
const ANSWER_POLL: Duration = Duration::from_micros(100);

/// A listing's request and answer: what is wanted, where the listing is,
/// and the records of one chunk.
#[derive(Debug)]
pub struct FlowQuery {
    ticket: u64,
    filter: FlowFilter,
    cursor: ExportCursor,
    records: FlowRecords,
}

impl FlowQuery {
    /// Whether the worker has nothing more to add before sending it back:
    /// its buffer is full or the table has been looked at to its end.
    fn is_answered(&self) -> bool {
        self.records.is_full() || self.cursor.is_done()
    }
}

/// A pair of ends over one worker: the control side's and the worker's.
pub fn flow_queries() -> (FlowQueryClient, FlowQueryServer) {
    let to_worker = Arc::new(ArrayQueue::new(IN_FLIGHT));
    let to_control = Arc::new(ArrayQueue::new(IN_FLIGHT));
    (
        FlowQueryClient {
            to_worker: Arc::clone(&to_worker),
            to_control: Arc::clone(&to_control),
            in_flight: 0,
            next_ticket: 0,
        },
        FlowQueryServer {
            to_worker,
            to_control,
            current: None,
        },
    )
}

/// The worker's end: takes queries and answers them a step per poll.
#[derive(Debug)]
pub struct FlowQueryServer {
    to_worker: Arc<ArrayQueue<FlowQuery>>,
    to_control: Arc<ArrayQueue<FlowQuery>>,
    current: Option<FlowQuery>,
}

impl FlowQueryServer {
    /// One bounded step of the listing in progress (taking the next query
    /// if there is none): at most [`SCAN_PER_POLL`] records looked at and
    /// at most a buffer's worth copied. No lock, no allocation, no system
    /// call. The worker calls it once per poll.
    #[inline]
    pub fn serve(&mut self, flows: &FlowTable) {
        if self.current.is_none() {
            self.current = self.to_worker.pop();
        }
        let Some(query) = self.current.as_mut() else {
            return;
        };
        if !query.is_answered() {
            flows.export(
                &mut query.cursor,
                &query.filter,
                SCAN_PER_POLL,
                &mut query.records,
            );
        }
        if query.is_answered() {
            if let Some(answer) = self.current.take() {
                // The queue holds every query that can be outstanding, so
                // this does not fail; if it did, keep the answer and try
                // again at the next poll rather than drop (free) it here.
                if let Err(answer) = self.to_control.push(answer) {
                    self.current = Some(answer);
                }
            }
        }
    }

    /// Whether a listing is in progress (a worker should not nap then).
    pub fn is_busy(&self) -> bool {
        self.current.is_some() || !self.to_worker.is_empty()
    }
}

/// The control side's end over one worker.
#[derive(Debug)]
pub struct FlowQueryClient {
    to_worker: Arc<ArrayQueue<FlowQuery>>,
    to_control: Arc<ArrayQueue<FlowQuery>>,
    /// Queries sent and not yet taken back.
    in_flight: usize,
    next_ticket: u64,
}

/// What a listing got from one worker.
#[derive(Debug, Default)]
pub struct Listed {
    /// The records, in the worker's table order, at most the limit.
    pub records: Vec<FlowRecord>,
    /// Whether the worker's part was finished (its table looked at to the
    /// end, or the limit reached) before the deadline.
    pub complete: bool,
}

/// One worker's part of a listing.
#[derive(Default)]
struct Walk {
    /// Whether its first query was sent.
    started: bool,
    /// The ticket of its query while one is out.
    ticket: Option<u64>,
    listed: Listed,
}

impl FlowQueryClient {
    /// Takes back answers to queries no listing waits for any more.
    /// Only called while no listing of this client is under way, so every
    /// answer waiting is stale; it is freed here, on the control side.
    fn drop_stale(&mut self) {
        while self.to_control.pop().is_some() {
            self.in_flight -= 1;
        }
    }

    /// Sends a first query, if the worker has room for one.
    fn start(&mut self, filter: FlowFilter, limit: usize) -> Option<u64> {
        if self.in_flight >= IN_FLIGHT {
            return None;
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let mut records = FlowRecords::with_capacity(limit.min(CHUNK_RECORDS));
        records.reset(limit);
        let query = FlowQuery {
            ticket,
            filter,
            cursor: ExportCursor::start(),
            records,
        };
        self.to_worker.push(query).ok()?;
        self.in_flight += 1;
        Some(ticket)
    }

    /// Takes in what the worker answered; true if anything came.
    fn collect(&mut self, walk: &mut Walk, limit: usize) -> bool {
        let mut progressed = false;
        while let Some(mut answer) = self.to_control.pop() {
            self.in_flight -= 1;
            if Some(answer.ticket) != walk.ticket {
                continue; // a listing before this one gave up on it
            }
            progressed = true;
            let listed = &mut walk.listed;
            listed.records.extend_from_slice(answer.records.as_slice());
            let wanted = limit.saturating_sub(listed.records.len());
            if answer.cursor.is_done() || wanted == 0 {
                listed.complete = true;
                walk.ticket = None;
                continue;
            }
            answer.records.reset(wanted);
            match self.to_worker.push(answer) {
                Ok(()) => self.in_flight += 1,
                // Cannot happen while `in_flight` is counted right; the
                // part ends incomplete rather than wait.
                Err(_) => walk.ticket = None,
            }
        }
        progressed
    }
}

/// Lists, from every worker at once, up to `limit` connections each that
/// `filter` keeps, waiting for the workers until `deadline` at most; a
/// worker's part not finished by then is returned as far as it got.
pub fn list(
    clients: &mut [FlowQueryClient],
    filter: FlowFilter,
    limit: usize,
    deadline: Instant,
) -> Vec<Listed> {
    let mut walks: Vec<Walk> = clients.iter().map(|_| Walk::default()).collect();
    if limit == 0 {
        for walk in &mut walks {
            walk.listed.complete = true;
        }
    }
    loop {
        let mut progressed = false;
        let mut waiting = false;
        for (client, walk) in clients.iter_mut().zip(&mut walks) {
            if walk.listed.complete {
                continue;
            }
            if !walk.started {
                // A worker still busy with queries given up on gets this
                // one once it hands one of them back.
                client.drop_stale();
                walk.ticket = client.start(filter, limit);
                walk.started = walk.ticket.is_some();
            }
            if walk.started {
                progressed |= client.collect(walk, limit);
            }
            waiting |= !walk.listed.complete && (walk.ticket.is_some() || !walk.started);
        }
        if !waiting || Instant::now() >= deadline {
            break;
        }
        if !progressed {
            std::thread::sleep(ANSWER_POLL);
        }
    }
    walks.into_iter().map(|w| w.listed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Connection, FlowState, FlowTimeouts};
    use crate::hash::table_hash;
    use crate::wire::{v4_mapped, FiveTuple};

    fn table(n: u32, capacity: usize) -> FlowTable {
        let mut t = FlowTable::new(capacity, FlowTimeouts::default());
        for i in 0..n {
            let [_, _, a, b] = i.to_be_bytes();
            let vip = if i % 2 == 0 { 10 } else { 11 };
            let c = Connection {
                client: FiveTuple::v4([198, 18, a, b], [198, 19, 0, vip], 40_000, 80, 6),
                backend_addr: v4_mapped([198, 19, 1, 1]),
                backend_port: 8080,
                endpoint: 0,
                client_mac: [2, 0, 0, 0, 0, 1],
                client_ingress: 0,
                state: FlowState::TcpEstablished,
                last_seen_ns: 0,
            };
            let (ch, rh) = (table_hash(&c.client), table_hash(&c.reply_tuple()));
            t.insert(c, ch, rh, 0);
        }
        t
    }

    /// Serves `server` from `flows` on this thread until `list` returns on
    /// another, as a worker would between its polls.
    fn list_while_serving(
        client: FlowQueryClient,
        server: &mut FlowQueryServer,
        flows: &FlowTable,
        filter: FlowFilter,
        limit: usize,
    ) -> (Listed, FlowQueryClient, usize) {
        let (client, listed, polls) = std::thread::scope(|s| {
            let lister = s.spawn(move || {
                let mut clients = [client];
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut listed = list(&mut clients, filter, limit, deadline);
                let [client] = clients;
                (client, listed.remove(0))
            });
            let mut polls = 0;
            while !lister.is_finished() {
                server.serve(flows);
                polls += 1;
                std::thread::yield_now();
            }
            let (client, listed) = lister.join().unwrap();
            (client, listed, polls)
        });
        (listed, client, polls)
    }

    #[test]
    fn a_listing_takes_every_matching_connection_in_chunks() {
        let flows = table(5_000, 8_192);
        let (client, mut server) = flow_queries();
        let (listed, client, polls) =
            list_while_serving(client, &mut server, &flows, FlowFilter::All, 100_000);
        assert!(listed.complete);
        assert_eq!(listed.records.len(), 5_000);
        let want: Vec<FlowRecord> = flows.iter().map(FlowRecord::of).collect();
        assert_eq!(listed.records, want);
        // 8 192 positions at SCAN_PER_POLL a poll.
        assert!(polls >= 8_192 / SCAN_PER_POLL, "{polls} polls");

        let vip11 = FlowFilter::To {
            protocol: 6,
            address: v4_mapped([198, 19, 0, 11]),
            port: 80,
        };
        let (listed, client, _) = list_while_serving(client, &mut server, &flows, vip11, 100);
        assert!(listed.complete);
        assert_eq!(listed.records.len(), 100, "the limit");
        assert!(listed.records.iter().all(|r| r.client.dst[15] == 11));
        assert_eq!(client.in_flight, 0);
        assert!(!server.is_busy());
    }

    #[test]
    fn a_step_looks_at_no_more_than_its_budget_and_copies_no_more_than_a_chunk() {
        let flows = table(8_000, 8_192);
        let (mut client, mut server) = flow_queries();
        let vip11 = FlowFilter::To {
            protocol: 6,
            address: v4_mapped([198, 19, 0, 11]),
            port: 80,
        };
        let ticket = client.start(vip11, 100_000).unwrap();
        // Every other connection matches: a chunk fills in this many steps.
        let steps = 2 * CHUNK_RECORDS / SCAN_PER_POLL;
        for step in 1..steps {
            server.serve(&flows);
            let query = server.current.as_ref().unwrap();
            assert_eq!(query.ticket, ticket);
            assert_eq!(query.cursor.position(), step * SCAN_PER_POLL);
            assert_eq!(query.records.len(), step * SCAN_PER_POLL / 2);
            assert!(client.to_control.is_empty(), "not full yet");
        }
        server.serve(&flows);
        // The buffer is full now: it went back to the control side.
        assert!(server.current.is_none());
        let answer = client.to_control.pop().unwrap();
        assert_eq!(answer.cursor.position(), steps * SCAN_PER_POLL);
        assert_eq!(answer.records.len(), CHUNK_RECORDS);
        assert_eq!(answer.records.capacity(), CHUNK_RECORDS);
    }

    #[test]
    fn an_abandoned_listing_leaks_nothing_and_does_not_hold_up_the_next() {
        let flows = table(20_000, 32_768);
        let (client, mut server) = flow_queries();
        let mut clients = [client];
        // Nobody serves: the listing gives up at its deadline.
        let listed = list(&mut clients, FlowFilter::All, 100_000, Instant::now());
        assert!(!listed[0].complete);
        assert_eq!(clients[0].in_flight, 1);
        // A second one gives up too, with two queries outstanding now.
        let listed = list(&mut clients, FlowFilter::All, 100_000, Instant::now());
        assert!(!listed[0].complete);
        assert_eq!(clients[0].in_flight, 2);
        // A third cannot even start until the worker hands one back.
        let listed = list(&mut clients, FlowFilter::All, 10, Instant::now());
        assert!(!listed[0].complete && listed[0].records.is_empty());
        assert_eq!(clients[0].in_flight, 2, "no more than IN_FLIGHT");
        // The worker answers both abandoned queries (a chunk each) without
        // ever finding its answer queue full.
        for _ in 0..64 {
            server.serve(&flows);
        }
        assert!(!server.is_busy());
        assert_eq!(server.to_control.len(), 2);
        // The next listing drops the stale answers and gets its own.
        let [client] = clients;
        let (listed, client, _) =
            list_while_serving(client, &mut server, &flows, FlowFilter::All, 1_500);
        assert!(listed.complete);
        assert_eq!(listed.records.len(), 1_500);
        let want: Vec<FlowRecord> = flows.iter().take(1_500).map(FlowRecord::of).collect();
        assert_eq!(listed.records, want, "no stale chunk mixed in");
        assert_eq!(client.in_flight, 0);
    }

    #[test]
    fn a_worker_that_never_answers_costs_the_listing_only_its_deadline() {
        let (client, _server) = flow_queries();
        let mut clients = [client];
        let started = Instant::now();
        let listed = list(
            &mut clients,
            FlowFilter::All,
            10,
            started + Duration::from_millis(50),
        );
        assert!(!listed[0].complete);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
