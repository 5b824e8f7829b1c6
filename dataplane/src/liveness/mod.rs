//! One liveness per endpoint, defined once and read by everything that
//! places a flow.
//!
//! An endpoint (one backend of one service, by its snapshot endpoint id) is
//! *alive* when its health is up, its heartbeat deadline (if it was
//! registered with a TTL) has not passed, and its weight is above 0. The
//! first two change at any moment — a check fails, heartbeats stop — and
//! live here, in one [`Word`] per endpoint of a [`Liveness`] table; the
//! weight is the rules', compiled into the snapshot (a drained endpoint is
//! in no scheduler table).
//!
//! - Writers are the control side: the thread that takes check
//!   transitions sets health, the heartbeat listener and the control API
//!   move deadlines, a snapshot build resets the word of an id it hands to
//!   a new backend. They use compare-and-swap loops, so two writers never
//!   undo each other.
//! - Readers are the workers, when they place a *new* flow, and on an
//!   established flow only where the snapshot flags its endpoint
//!   (`table::Endpoint::if_dead`). A read is one relaxed load and one
//!   compare against the worker's clock: a backend whose heartbeats stop
//!   expires on time, from the workers' own clock, with no control action
//!   and however busy the control thread is.
//! - The table is shared by every snapshot generation (each holds an `Arc`
//!   to it), so a write is seen by the workers' next poll whatever
//!   snapshot they run.
//!
//! Operators see four states ([`Status`]): up, down, draining, expired.

mod table;
mod word;

pub use table::{Liveness, OutOfRange, CHUNK_ENDPOINTS, MAX_CHUNKS, MAX_ENDPOINTS};
pub use word::{Status, Word};
