//! Who is connected to the control socket, and whether one more may be.
//!
//! Every client of the socket is root (it is mode 0600), so permissions
//! cannot tell a script stuck in a reconnect loop from the operator who
//! needs `status` now. What can tell them apart is the process: the kernel
//! gives the PID of the process that connected with every connection
//! (`SO_PEERCRED`). So the limits are per process, and one over all:
//!
//! - **a budget of new connections**: at most `connects_per_second` a
//!   second per process, of which all may come at once (a token bucket of
//!   one second's worth). A process reconnecting in a loop is refused each
//!   connection past its budget, at the cost of an accept and a write,
//!   without a thread;
//! - **a cap on connections at once** per process, so a process that holds
//!   connections open cannot take every place; past it, the process's
//!   newest connection is refused;
//! - **a cap over all**, at which the client that has been idle (waiting
//!   for its next request) the longest is closed to make room, as nginx
//!   closes its idle keep-alive connections when it runs short: idle
//!   clients, however many processes hold them, cannot shut out one with a
//!   request. Only when every client is in the middle of a request is the
//!   newcomer refused (`busy`).
//!
//! Every refusal and every such closing is one response line that names the
//! limit (docs/operations.md lists them). The table does no I/O: the
//! caller passes the time, and closing a client is shutting down the
//! reading side of its socket, which wakes its thread.

use std::collections::HashMap;
use std::fmt;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use flowgate_api::{ApiError, ErrorCode};
use nix::errno::Errno;
use nix::sys::socket::{getsockopt, recv, sockopt::PeerCredentials, MsgFlags};

/// Once this many processes are known, those that hold no connection and
/// whose budget is full again are forgotten (they are as if new); the next
/// sweep waits until the table has doubled, so sweeps cost O(1) a
/// connection however many processes come and go.
const FORGET_ABOVE: usize = 256;

/// The process at the other end of a connection, as the kernel saw it when
/// it connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Peer {
    /// Its PID.
    Process(i32),
    /// A process whose PID the kernel did not give (one in a PID namespace
    /// this one cannot see into): all such count as one.
    Unknown,
}

impl Peer {
    /// The process that connected `stream`.
    pub(super) fn of(stream: &UnixStream) -> Peer {
        match getsockopt(stream, PeerCredentials) {
            Ok(credentials) if credentials.pid() > 0 => Peer::Process(credentials.pid()),
            _ => Peer::Unknown,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Process(pid) => write!(f, "process {pid}"),
            Peer::Unknown => f.write_str("a process of another PID namespace (all count as one)"),
        }
    }
}

/// What the table allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PeerLimits {
    /// Clients served at once, over all.
    pub max_clients: usize,
    /// Clients served at once per process.
    pub max_per_peer: usize,
    /// New connections a process may open per second.
    pub connects_per_second: u32,
}

/// The clients being served, per process, with each process's budget.
#[derive(Debug)]
pub(super) struct Clients {
    limits: PeerLimits,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// Clients being served, oldest first; closed ones are taken out.
    served: Vec<Arc<Client>>,
    peers: HashMap<Peer, PeerState>,
    /// Sweep the processes once more than this many are known.
    sweep_above: usize,
    next_id: u64,
}

#[derive(Debug)]
struct PeerState {
    /// Clients of the process being served.
    served: usize,
    budget: Budget,
}

/// A token bucket kept as the instant at which it is full again (GCRA):
/// each connection moves that instant on by one interval, and a
/// connection that would move it more than a second past now is refused.
#[derive(Debug)]
struct Budget {
    full_at: Instant,
}

impl Budget {
    /// Takes one connection's worth if there is one.
    fn take(&mut self, now: Instant, per_second: u32) -> bool {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let next = self.full_at.max(now) + interval;
        if next.saturating_duration_since(now) > Duration::from_secs(1) {
            return false;
        }
        self.full_at = next;
        true
    }

    fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }
}

/// One client being served, shared by its thread and the table.
#[derive(Debug)]
pub(super) struct Client {
    id: u64,
    peer: Peer,
    /// A handle on its socket, to wake its thread when it is closed.
    socket: UnixStream,
    phase: Mutex<Phase>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for a request, since then.
    Idle(Instant),
    /// Reading, answering or writing a request.
    Busy,
    /// Closed by the server; its thread is to say why (if anything) and
    /// end.
    Closed(Closing),
}

/// Why the server closed a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closing {
    /// It was the one idle longest when the server was full and another
    /// client came.
    ForNewcomer {
        /// How long it had been idle.
        idle: Duration,
        /// How many clients the server serves at once.
        max_clients: usize,
    },
    /// The server stops.
    Stopped,
}

impl Closing {
    /// What the client is told, if anything.
    pub(super) fn message(self) -> Option<ApiError> {
        match self {
            Closing::ForNewcomer { idle, max_clients } => Some(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "closed after {} ms without a request: the server serves at most \
                     {max_clients} clients at once and another one needed the place; \
                     connect again to send a request",
                    idle.as_millis()
                ),
            )),
            Closing::Stopped => None,
        }
    }
}

impl Client {
    /// Whether the process at the other end has closed the connection
    /// and its thread has not noticed yet: a peek that finds the end of
    /// the stream (or an error), without waiting and without taking a
    /// byte.
    fn closed_by_peer(&self) -> bool {
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        match recv(self.socket.as_raw_fd(), &mut byte, flags) {
            Ok(0) => true,
            Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => false,
            Err(_) => true,
        }
    }

    /// It waits for its next request from `now`; or it was closed.
    pub(super) fn idle(&self, now: Instant) -> Result<(), Closing> {
        self.set(Phase::Idle(now))
    }

    /// It has a request to work on; or it was closed while it waited.
    pub(super) fn busy(&self) -> Result<(), Closing> {
        self.set(Phase::Busy)
    }

    fn set(&self, to: Phase) -> Result<(), Closing> {
        let mut phase = lock(&self.phase);
        match *phase {
            Phase::Closed(why) => Err(why),
            _ => {
                *phase = to;
                Ok(())
            }
        }
    }

    /// Closes it for `why` if it is idle (or whatever it is doing, with
    /// `even_busy`): marks it and wakes its thread. Whether it did.
    fn close(&self, why: Closing, even_busy: bool) -> bool {
        let mut phase = lock(&self.phase);
        let idle = matches!(*phase, Phase::Idle(_));
        if !(idle || even_busy && matches!(*phase, Phase::Busy)) {
            return false;
        }
        *phase = Phase::Closed(why);
        if idle {
            // Its thread waits to read: this ends the wait at once.
            let _ = self.socket.shutdown(Shutdown::Read);
        }
        true
    }

    /// Since when it has been idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        match *lock(&self.phase) {
            Phase::Idle(since) => Some(since),
            _ => None,
        }
    }
}

/// Whether a new connection is served.
#[derive(Debug)]
pub(super) enum Admission {
    /// It is; it counts as served until the ticket is dropped.
    Served(Ticket),
    /// It is not, for this reason (to send it).
    Refused(ApiError),
}

/// A client's place in the table, given back when dropped.
#[derive(Debug)]
pub(super) struct Ticket {
    clients: Arc<Clients>,
    client: Arc<Client>,
}

impl Ticket {
    /// The client it is for.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.clients.leave(self.client.id);
    }
}

impl Clients {
    /// An empty table.
    pub(super) fn new(limits: PeerLimits) -> Clients {
        Clients {
            limits,
            table: Mutex::default(),
        }
    }

    /// Decides on a connection from `peer` at `now`; `socket` is a handle on
    /// it (to close it while it is idle, for a newcomer or at stop).
    pub(super) fn admit(
        self: &Arc<Self>,
        peer: Peer,
        socket: UnixStream,
        now: Instant,
    ) -> Admission {
        let limits = self.limits;
        let mut table = lock(&self.table);
        table.forget_idle_peers(now);
        let state = table.peers.entry(peer).or_insert(PeerState {
            served: 0,
            budget: Budget { full_at: now },
        });
        if !state.budget.take(now, limits.connects_per_second) {
            return Admission::Refused(ApiError::new(
                ErrorCode::Busy,
                format!(
                    "{peer} opened more than {} connections in the last second (the most one \
                     process may open); send several requests on one connection, or wait",
                    limits.connects_per_second
                ),
            ));
        }
        let max_per_peer = limits.max_per_peer.max(1);
        // A connection the process closed holds no place, though its
        // thread may not have seen the end yet (a reconnect loop closes
        // and connects faster than a loaded server's threads wake).
        if state.served >= max_per_peer {
            let held = table.forget_closed(Some(peer));
            if held >= max_per_peer {
                return Admission::Refused(ApiError::new(
                    ErrorCode::Busy,
                    format!(
                        "{peer} has {held} connections open already (the most one process may \
                         hold); close one, or send requests on one it has"
                    ),
                ));
            }
        }
        if table.served.len() >= limits.max_clients {
            table.forget_closed(None);
        }
        if table.served.len() >= limits.max_clients && !table.close_idlest(now, limits.max_clients)
        {
            return Admission::Refused(ApiError::new(
                ErrorCode::Busy,
                format!(
                    "server busy: {} clients are connected already (the most it serves at once), \
                     each in the middle of a request; try again",
                    table.served.len()
                ),
            ));
        }
        let id = table.next_id;
        table.next_id += 1;
        let client = Arc::new(Client {
            id,
            peer,
            socket,
            phase: Mutex::new(Phase::Busy),
        });
        table.served.push(Arc::clone(&client));
        if let Some(state) = table.peers.get_mut(&peer) {
            state.served += 1;
        }
        Admission::Served(Ticket {
            clients: Arc::clone(self),
            client,
        })
    }

    /// Clients being served now.
    pub(super) fn served(&self) -> usize {
        lock(&self.table).served.len()
    }

    /// Of the clients served now, those waiting for a request.
    pub(super) fn waiting(&self) -> usize {
        let table = lock(&self.table);
        table
            .served
            .iter()
            .filter(|c| c.idle_since().is_some())
            .count()
    }

    /// Closes every client: idle ones at once, the others once they have
    /// answered the request they are on.
    pub(super) fn close_all(&self) {
        let mut table = lock(&self.table);
        for client in std::mem::take(&mut table.served) {
            client.close(Closing::Stopped, true);
            if let Some(state) = table.peers.get_mut(&client.peer) {
                state.served = state.served.saturating_sub(1);
            }
        }
    }

    /// Takes a client out when its thread ends (unless it was closed, and
    /// taken out, already).
    fn leave(&self, id: u64) {
        let mut table = lock(&self.table);
        table.remove(id);
    }
}

impl Table {
    /// Closes the client idle longest, if any is idle: whether one was.
    fn close_idlest(&mut self, now: Instant, max_clients: usize) -> bool {
        let idlest = self
            .served
            .iter()
            .filter_map(|c| Some((c.idle_since()?, c.id)))
            .min();
        let Some((since, id)) = idlest else {
            return false;
        };
        let Some(client) = self.served.iter().find(|c| c.id == id).cloned() else {
            return false;
        };
        let why = Closing::ForNewcomer {
            idle: now.saturating_duration_since(since),
            max_clients,
        };
        // It may have started a request since it was looked at.
        if !client.close(why, false) {
            return false;
        }
        tracing::debug!(peer = %client.peer, "control socket: closed the client idle longest for a newcomer");
        self.remove(id);
        true
    }

    /// Takes out the clients (of `peer`, or all) whose process closed
    /// the connection before their thread saw it, and returns how many
    /// clients `peer` (or the table) holds then. A thread that sees the
    /// end later finds its client gone, as after `close_idlest`.
    fn forget_closed(&mut self, peer: Option<Peer>) -> usize {
        let closed: Vec<u64> = self
            .served
            .iter()
            .filter(|c| peer.is_none_or(|p| c.peer == p) && c.closed_by_peer())
            .map(|c| c.id)
            .collect();
        for id in closed {
            self.remove(id);
        }
        match peer {
            Some(p) => self.peers.get(&p).map_or(0, |state| state.served),
            None => self.served.len(),
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(i) = self.served.iter().position(|c| c.id == id) else {
            return;
        };
        let client = self.served.remove(i);
        if let Some(state) = self.peers.get_mut(&client.peer) {
            state.served = state.served.saturating_sub(1);
        }
    }

    /// Forgets processes that hold no connection and have their whole
    /// budget again, once many are known.
    fn forget_idle_peers(&mut self, now: Instant) {
        if self.peers.len() > self.sweep_above.max(FORGET_ABOVE) {
            self.peers
                .retain(|_, state| state.served > 0 || !state.budget.is_full(now));
            self.sweep_above = 2 * self.peers.len();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PeerLimits = PeerLimits {
        max_clients: 4,
        max_per_peer: 2,
        connects_per_second: 5,
    };

    /// A connection whose other end stays open (a client that has not
    /// closed it), for the test process's life.
    fn socket() -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::mem::forget(theirs);
        ours
    }

    fn served(admission: Admission) -> Ticket {
        match admission {
            Admission::Served(ticket) => ticket,
            Admission::Refused(e) => panic!("refused: {e}"),
        }
    }

    fn refused(admission: Admission) -> ApiError {
        match admission {
            Admission::Served(_) => panic!("served"),
            Admission::Refused(e) => e,
        }
    }

    #[test]
    fn a_process_gets_its_budget_of_connections_a_second_and_no_more() {
        let clients = Arc::new(Clients::new(LIMITS));
        let t0 = Instant::now();
        let me = Peer::Process(100);
        // Five at once (the whole budget), each closed at once.
        for _ in 0..5 {
            drop(served(clients.admit(me, socket(), t0)));
        }
        let e = refused(clients.admit(me, socket(), t0));
        assert_eq!(e.code, ErrorCode::Busy);
        assert_eq!(
            e.message,
            "process 100 opened more than 5 connections in the last second (the most one \
             process may open); send several requests on one connection, or wait"
        );
        // Another process is not held to this one's budget.
        drop(served(clients.admit(Peer::Process(101), socket(), t0)));
        // A refused attempt spends nothing; the budget comes back at five
        // a second.
        let t = t0 + Duration::from_millis(199);
        refused(clients.admit(me, socket(), t));
        let t = t0 + Duration::from_millis(200);
        drop(served(clients.admit(me, socket(), t)));
        refused(clients.admit(me, socket(), t));
        let t = t0 + Duration::from_secs(2);
        for _ in 0..5 {
            drop(served(clients.admit(me, socket(), t)));
        }
        refused(clients.admit(me, socket(), t));
    }

    #[test]
    fn a_process_at_its_cap_has_its_newest_connection_refused() {
        let clients = Arc::new(Clients::new(LIMITS));
        let t = Instant::now();
        let me = Peer::Process(7);
        let held = [
            served(clients.admit(me, socket(), t)),
            served(clients.admit(me, socket(), t)),
        ];
        let e = refused(clients.admit(me, socket(), t));
        assert_eq!(
            e.message,
            "process 7 has 2 connections open already (the most one process may hold); \
             close one, or send requests on one it has"
        );
        assert_eq!(clients.served(), 2);
        // Once one ends, it may open another.
        let [a, _b] = held;
        drop(a);
        let _c = served(clients.admit(me, socket(), t));
        assert_eq!(clients.served(), 2);
    }

    #[test]
    fn connections_a_process_closed_hold_no_place_before_their_threads_see_it() {
        let clients = Arc::new(Clients::new(LIMITS));
        let t = Instant::now();
        let me = Peer::Process(8);
        let (ours_a, theirs_a) = UnixStream::pair().unwrap();
        let (ours_b, theirs_b) = UnixStream::pair().unwrap();
        let a = served(clients.admit(me, ours_a, t));
        let _b = served(clients.admit(me, ours_b, t));
        refused(clients.admit(me, socket(), t));
        // The process closes one; its ticket (its thread) is still there.
        drop(theirs_a);
        let _c = served(clients.admit(me, socket(), t));
        // The closed one was taken out, and its thread's end later
        // changes no count.
        assert_eq!(clients.served(), 2);
        drop(a);
        assert_eq!(clients.served(), 2);
        // b and c are open: the cap holds again, and says how many.
        let e = refused(clients.admit(me, socket(), t));
        assert!(e
            .message
            .starts_with("process 8 has 2 connections open already"));
        drop(theirs_b);
    }

    #[test]
    fn a_full_table_takes_out_clients_whose_process_closed_before_closing_an_idle_one() {
        let clients = Arc::new(Clients::new(LIMITS));
        let t = Instant::now();
        let mut tickets = Vec::new();
        let mut ends = Vec::new();
        for pid in 1..=4 {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let ticket = served(clients.admit(Peer::Process(pid), ours, t));
            ticket.client().idle(t).unwrap();
            tickets.push(ticket);
            ends.push(theirs);
        }
        // Process 3 closed its connection: the newcomer takes that place
        // and every idle client that is still open stays.
        drop(ends.remove(2));
        let _newcomer = served(clients.admit(Peer::Process(5), socket(), t));
        assert_eq!(clients.served(), 4);
        for (i, ticket) in tickets.iter().enumerate().filter(|&(i, _)| i != 2) {
            assert!(ticket.client().busy().is_ok(), "client {i} was closed");
        }
    }

    #[test]
    fn at_the_cap_the_client_idle_longest_is_closed_for_a_newcomer() {
        let clients = Arc::new(Clients::new(LIMITS));
        let t0 = Instant::now();
        let mut tickets = Vec::new();
        let mut ends = Vec::new();
        for pid in 1..=4 {
            let (ours, theirs) = UnixStream::pair().unwrap();
            tickets.push(served(clients.admit(Peer::Process(pid), ours, t0)));
            ends.push(theirs);
        }
        // 1 is busy; 2, 3, 4 became idle in the order 3, 2, 4.
        for (i, ms) in [(2, 10), (1, 20), (3, 30)] {
            tickets[i]
                .client()
                .idle(t0 + Duration::from_millis(ms))
                .unwrap();
        }
        let t = t0 + Duration::from_millis(100);
        let newcomer = served(clients.admit(Peer::Process(5), socket(), t));
        assert_eq!(clients.served(), 4);
        // 3 was closed: its thread's read ends, and it learns why.
        let closed = tickets[2].client();
        let mut byte = [0u8; 1];
        let got = nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&closed.socket),
            &mut byte,
            nix::sys::socket::MsgFlags::MSG_PEEK,
        );
        assert_eq!(got, Ok(0), "its reading side was shut down");
        let why = closed.busy().unwrap_err();
        assert_eq!(
            why,
            Closing::ForNewcomer {
                idle: Duration::from_millis(90),
                max_clients: 4
            }
        );
        assert_eq!(
            why.message().unwrap().message,
            "closed after 90 ms without a request: the server serves at most 4 clients at \
             once and another one needed the place; connect again to send a request"
        );
        // Its ticket ending later changes no count.
        tickets.remove(2);
        assert_eq!(clients.served(), 4);
        // The next newcomer closes 2, then 4; then every client is busy.
        for i in [1, 2] {
            tickets[i].client().busy().unwrap();
        }
        tickets[1]
            .client()
            .idle(t0 + Duration::from_millis(40))
            .unwrap();
        let _second = served(clients.admit(Peer::Process(6), socket(), t));
        assert!(tickets[1].client().busy().is_err());
        assert!(tickets[2].client().busy().is_ok());
        let e = refused(clients.admit(Peer::Process(7), socket(), t));
        assert_eq!(
            e.message,
            "server busy: 4 clients are connected already (the most it serves at once), \
             each in the middle of a request; try again"
        );
        drop(newcomer);
        let _third = served(clients.admit(Peer::Process(7), socket(), t));
    }

    #[test]
    fn stopping_closes_idle_clients_at_once_and_busy_ones_after_their_request() {
        let clients = Arc::new(Clients::new(LIMITS));
        let t = Instant::now();
        let idle = served(clients.admit(Peer::Process(1), socket(), t));
        let busy = served(clients.admit(Peer::Process(2), socket(), t));
        idle.client().idle(t).unwrap();
        clients.close_all();
        assert_eq!(clients.served(), 0);
        assert_eq!(idle.client().busy(), Err(Closing::Stopped));
        assert_eq!(busy.client().idle(t), Err(Closing::Stopped));
        assert_eq!(Closing::Stopped.message(), None);
    }

    #[test]
    fn processes_that_come_and_go_are_forgotten() {
        let clients = Arc::new(Clients::new(LIMITS));
        let t = Instant::now();
        let known = || lock(&clients.table).peers.len();
        // Each keeps its budget for a second.
        for pid in 0..1000 {
            drop(served(clients.admit(Peer::Process(pid), socket(), t)));
        }
        assert_eq!(known(), 1000);
        // Once their budgets are full again they go, while others come.
        let later = t + Duration::from_secs(2);
        for pid in 1000..2000 {
            drop(served(clients.admit(Peer::Process(pid), socket(), later)));
            if known() < 1000 {
                break;
            }
        }
        assert!(known() < 1000, "{} processes kept", known());
        // One holding a connection is never forgotten.
        let held = served(clients.admit(Peer::Process(-5), socket(), later));
        for (i, pid) in (3000..6000).enumerate() {
            let at = later + Duration::from_secs(2 + u64::try_from(i).unwrap());
            drop(served(clients.admit(Peer::Process(pid), socket(), at)));
            assert!(
                known() <= 2 * FORGET_ABOVE + 2,
                "{} processes kept",
                known()
            );
        }
        assert_eq!(lock(&clients.table).peers[&Peer::Process(-5)].served, 1);
        drop(held);
    }

    #[test]
    fn the_peer_is_the_connecting_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(Peer::of(&a), Peer::Process(me));
        assert_eq!(Peer::Process(me).to_string(), format!("process {me}"));
    }
}
