//! Heartbeat-TTL registration: backends that are alive only while
//! heartbeats arrive.
//!
//! - [`HeartbeatListener`]: the network endpoint for agents on other hosts,
//!   UDP on the management address, one datagram per heartbeat
//!   ([`message`] has the format). UDP because an agent needs nothing but a
//!   socket and fires and forgets, as with statsd; because there is no
//!   connection for a slow or hostile client to hold open; and because a
//!   lost datagram costs nothing when the TTL spans a few heartbeats.
//!   Authenticated by a per-service token (constant-time comparison),
//!   rate-limited per source in fixed memory.
//!
//! A good heartbeat moves its endpoint's deadline in the one liveness table,
//! [`crate::liveness::Liveness`] ([`Liveness::heartbeat`]), where a worker
//! reads it with one atomic load to expire the backend itself.
//!
//! [`Liveness::heartbeat`]: crate::liveness::Liveness::heartbeat

mod listener;
pub mod message;
mod rate_limit;
mod token;

pub use listener::{
    Heartbeat, HeartbeatCounters, HeartbeatListener, HeartbeatOptions, HeartbeatSink,
    UnknownBackend,
};
pub use message::{HeartbeatMessage, MessageError};
pub use rate_limit::{RateLimit, SourceRateLimiter};
pub use token::{HeartbeatToken, HeartbeatTokens, TokenError, MAX_TOKEN_LEN, MIN_TOKEN_LEN};

#[cfg(test)]
mod tests;
