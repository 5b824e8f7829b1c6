//! A takeover's first copy of the connection tables, taken by the workers
//! while they forward (`flowgate run --takeover`'s pre-copy; see
//! [`super::takeover`]).
//!
//! A worker's table is its own, so, as for a `flows` listing
//! ([`super::flow_query`]), the copy is made on the worker's thread a
//! bounded step per poll: a [`CopyChunk`] the control side allocated
//! travels to the worker and back through two bounded lock-free queues,
//! and after each poll the worker looks at no more than
//! [`SCAN_PER_POLL`] records ([`FlowTable::hand_over_step`]), each live
//! one copied with its origin into the chunk until it holds
//! [`CHUNK_CONNECTIONS`]. No lock, no allocation and no system call on
//! the worker's side. What changes in the table meanwhile is found at the
//! switch by comparing against the copy ([`FlowTable::hand_over_changes`]),
//! so nothing is kept per packet for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;

use crate::flow::{FlowTable, HandedConnection};

/// Connections a chunk holds: the most a worker copies for one round trip.
pub const CHUNK_CONNECTIONS: usize = 2048;
/// Records a worker looks at per poll for the copy (each live one copied
/// with the fast path's view of it: a few tens of nanoseconds each in a
/// release build).
pub const SCAN_PER_POLL: usize = 256;
/// Chunks one worker may have outstanding: the copy's own, and one a copy
/// before it gave up on.
const IN_FLIGHT: usize = 2;
/// How long the control side sleeps between looks at its answer queues.
const ANSWER_POLL: Duration = Duration::from_micros(100);

/// One round trip of a first copy: where it is in the table, and the
/// connections copied in this step.
#[derive(Debug)]
pub struct CopyChunk {
    ticket: u64,
    worker: u16,
    epoch_mono_ns: u64,
    cursor: usize,
    done: bool,
    connections: Vec<HandedConnection>,
}

/// A pair of ends over one worker: the control side's and the worker's.
pub fn copy_channel() -> (CopyClient, CopyServer) {
    let to_worker = Arc::new(ArrayQueue::new(IN_FLIGHT));
    let to_control = Arc::new(ArrayQueue::new(IN_FLIGHT));
    (
        CopyClient {
            to_worker: Arc::clone(&to_worker),
            to_control: Arc::clone(&to_control),
        },
        CopyServer {
            to_worker,
            to_control,
            current: None,
        },
    )
}

/// The control side's end.
#[derive(Debug)]
pub struct CopyClient {
    to_worker: Arc<ArrayQueue<CopyChunk>>,
    to_control: Arc<ArrayQueue<CopyChunk>>,
}

/// The worker's end.
#[derive(Debug)]
pub struct CopyServer {
    to_worker: Arc<ArrayQueue<CopyChunk>>,
    to_control: Arc<ArrayQueue<CopyChunk>>,
    current: Option<CopyChunk>,
}

impl CopyServer {
    /// One bounded step of the copy in progress, if any: call after each
    /// poll. A full chunk, or the table's end, goes back to the control
    /// side.
    pub fn serve(&mut self, flows: &FlowTable) {
        if self.current.is_none() {
            self.current = self.to_worker.pop();
        }
        let Some(chunk) = self.current.as_mut() else {
            return;
        };
        chunk.done = flows.hand_over_step(
            chunk.worker,
            chunk.epoch_mono_ns,
            &mut chunk.cursor,
            SCAN_PER_POLL,
            &mut chunk.connections,
        );
        if chunk.done || chunk.connections.len() >= chunk.connections.capacity() {
            if let Some(chunk) = self.current.take() {
                // The control side never has more than the queue holds
                // outstanding; a chunk that finds it full is dropped.
                let _ = self.to_control.push(chunk);
            }
        }
    }

    /// Whether a copy is in progress (the worker polls at full speed).
    pub fn is_busy(&self) -> bool {
        self.current.is_some() || !self.to_worker.is_empty()
    }
}

/// Takes a first copy of every worker's table (`clients`, in worker
/// order; the worker clock's 0 is `epoch_mono_ns`): per worker, its live
/// connections in record order, each with its origin. Fails if a worker
/// has not finished by `deadline` or has a copy before this one still
/// outstanding.
pub fn first_copy(
    clients: &[CopyClient],
    epoch_mono_ns: u64,
    deadline: Instant,
) -> Result<Vec<Vec<HandedConnection>>, String> {
    let ticket = next_ticket();
    let mut copies: Vec<Vec<HandedConnection>> = clients.iter().map(|_| Vec::new()).collect();
    let mut done = vec![false; clients.len()];
    for (w, client) in clients.iter().enumerate() {
        let chunk = CopyChunk {
            ticket,
            worker: u16::try_from(w).unwrap_or(u16::MAX),
            epoch_mono_ns,
            cursor: 0,
            done: false,
            connections: Vec::with_capacity(CHUNK_CONNECTIONS),
        };
        client
            .to_worker
            .push(chunk)
            .map_err(|_| format!("worker {w} is still busy with an earlier copy"))?;
    }
    while done.iter().any(|d| !d) {
        let mut answered = false;
        for (w, client) in clients.iter().enumerate() {
            while let Some(mut chunk) = client.to_control.pop() {
                if chunk.ticket != ticket {
                    continue;
                }
                answered = true;
                if let Some(copy) = copies.get_mut(w) {
                    copy.append(&mut chunk.connections);
                }
                if chunk.done {
                    done[w] = true;
                } else if client.to_worker.push(chunk).is_err() {
                    return Err(format!("worker {w} is still busy with an earlier copy"));
                }
            }
        }
        if Instant::now() >= deadline {
            let left = done.iter().filter(|d| !**d).count();
            return Err(format!("{left} worker(s) did not finish the copy in time"));
        }
        if !answered {
            std::thread::sleep(ANSWER_POLL);
        }
    }
    Ok(copies)
}

fn next_ticket() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Connection, FlowState, FlowTimeouts};
    use crate::hash::table_hash;
    use crate::wire::{v4_mapped, FiveTuple};

    fn table(n: u16) -> FlowTable {
        let mut flows = FlowTable::new(8192, FlowTimeouts::default());
        for port in 0..n {
            let c = Connection {
                client: FiveTuple::v4([198, 18, 0, 2], [198, 18, 100, 10], port, 80, 17),
                backend_addr: v4_mapped([198, 18, 1, 11]),
                backend_port: 8080,
                endpoint: 0,
                client_mac: [2, 0, 0, 0, 0, 1],
                client_ingress: 0,
                state: FlowState::Udp,
                last_seen_ns: 0,
            };
            let (client, reply) = (table_hash(&c.client), table_hash(&c.reply_tuple()));
            flows.insert(c, client, reply, 0);
        }
        flows
    }

    #[test]
    fn a_copy_crosses_in_bounded_steps_with_every_origin_in_order() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (client, mut server) = copy_channel();
        let flows = table(5000);
        let stop = Arc::new(AtomicBool::new(false));
        let worker = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut steps = 0;
                while !stop.load(Ordering::Relaxed) {
                    if server.is_busy() {
                        steps += 1;
                    }
                    server.serve(&flows);
                }
                steps
            }
        });
        let copies = first_copy(
            std::slice::from_ref(&client),
            7,
            Instant::now() + Duration::from_secs(10),
        );
        stop.store(true, Ordering::Relaxed);
        let steps = worker.join().unwrap();
        let copies = copies.unwrap();
        assert!(steps > 0);
        let records: Vec<u32> = copies[0].iter().map(|h| h.origin.unwrap().record).collect();
        assert_eq!(records, (0..5000).collect::<Vec<u32>>());
        assert!(copies[0].iter().all(|h| h.origin.unwrap().worker == 0));
    }

    #[test]
    fn a_step_looks_at_no_more_than_its_share_of_records() {
        let (client, mut server) = copy_channel();
        let flows = table(1000);
        let chunk = CopyChunk {
            ticket: 0,
            worker: 3,
            epoch_mono_ns: 0,
            cursor: 0,
            done: false,
            connections: Vec::with_capacity(CHUNK_CONNECTIONS),
        };
        client.to_worker.push(chunk).unwrap();
        server.serve(&flows);
        let current = server.current.as_ref().unwrap();
        assert_eq!(current.cursor, SCAN_PER_POLL);
        assert_eq!(current.connections.len(), SCAN_PER_POLL);
        assert!(client.to_control.is_empty());
        for _ in 0..1000 / SCAN_PER_POLL {
            server.serve(&flows);
        }
        let answer = client.to_control.pop().unwrap();
        assert!(answer.done && !server.is_busy());
        assert_eq!(answer.connections.len(), 1000);
    }

    #[test]
    fn a_worker_that_does_not_answer_fails_the_copy_by_its_deadline() {
        let (client, _server) = copy_channel();
        let started = Instant::now();
        let why = first_copy(&[client], 0, started + Duration::from_millis(50)).unwrap_err();
        assert!(why.contains("did not finish"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
