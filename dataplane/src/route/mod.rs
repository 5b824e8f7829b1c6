//! Lookup tables for routing by who is calling: client classes and
//! distribution paths, self-contained until the routing policies are wired
//! onto them.
//!
//! - [`prefix`]: client addresses and prefixes, IPv4 and IPv6 kept apart.
//! - [`classes`]: [`ClientClasses`], an immutable longest-prefix-match
//!   table from client prefixes to a class id, compiled into the snapshot
//!   and read once per new flow.
//! - [`paths`]: the distribution paths, per service client prefix →
//!   backend(s), in a concurrent structure beside the snapshot: the
//!   control thread edits it one entry at a time ([`PathTable`]) while
//!   workers read it without a lock ([`PathReader`]).
//! - [`backend_ref`]: [`BackendRef`], how a path names a backend by
//!   identity, and how a snapshot resolves it to an endpoint.

pub mod backend_ref;
pub mod classes;
pub mod paths;
pub mod prefix;

pub use backend_ref::{BackendIndex, BackendNames, BackendRef};
pub use classes::{ClassId, ClientClasses, DuplicatePrefix, DuplicatePrefixes};
pub use paths::{
    PathChange, PathCursor, PathEdit, PathEntry, PathError, PathErrors, PathPage, PathReader,
    PathTable, PathTarget, PathView, MAX_PATH_BACKENDS,
};
pub use prefix::{ClientAddr, Prefix, PrefixError};
