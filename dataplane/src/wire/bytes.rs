//! Field types and big-endian accessors shared by the packet views.
//!
//! The views call these only after their checked constructor has proved the
//! buffer long enough, so the indexing here cannot panic for them.

use std::ops::{Range, RangeFrom};

/// A fixed-size field: a byte range inside a header.
pub(crate) type Field = Range<usize>;

/// Everything from an offset to the end of the buffer.
pub(crate) type Rest = RangeFrom<usize>;

/// The big-endian `u16` at `at`.
#[inline(always)]
pub(crate) fn get_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// The big-endian `u32` at `at`.
#[inline(always)]
pub(crate) fn get_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Writes `value` big-endian at `at`.
#[inline(always)]
pub(crate) fn put_u16(data: &mut [u8], at: usize, value: u16) {
    let [hi, lo] = value.to_be_bytes();
    data[at] = hi;
    data[at + 1] = lo;
}

/// Writes `value` big-endian at `at`.
#[inline(always)]
pub(crate) fn put_u32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// The `N` bytes of `field` as an array.
#[inline(always)]
pub(crate) fn get_array<const N: usize>(data: &[u8], field: Field) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&data[field]);
    out
}
