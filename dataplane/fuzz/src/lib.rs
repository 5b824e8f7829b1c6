//! Fuzz harnesses for flowgate's data plane.
//!
//! The targets in `fuzz_targets/` are thin: each calls one function of
//! [`check`], which holds the properties, so that the same checks also run
//! in this crate's unit tests over the seed corpus. See docs/fuzzing.md.
//!
//! - [`check::parse_frame`]: `wire::parse` on arbitrary bytes.
//! - [`check::pipeline_script`]: a [`script`] of frames through the
//!   pipeline, a small connection table and the [`fixture`]'s snapshots,
//!   in [`batch`]es and frame by frame side by side.
//! - `xdp::fast_path_script` (feature `xdp`): a script through the XDP
//!   program and the pipeline, the fast path off and on.
//! - [`seeds`]: the starting corpora, built with the wire builder.
//! - [`repair`]: checksum recomputation, so that mutated frames can still
//!   test the checksum property.

pub mod batch;
pub mod check;
pub mod fixture;
pub mod repair;
pub mod script;
pub mod seeds;
#[cfg(feature = "xdp")]
pub mod xdp;
