//! Reading a per-CPU array of `u64` counters, summed over CPUs, in one
//! `BPF_MAP_LOOKUP_BATCH` call instead of one lookup per counter: the
//! program's 34 counters cost one system call, not 34. The metrics
//! scrape reads them so, and the tester reads them around every test run
//! (the `xdp_fast_path` fuzz target runs three a frame). A kernel without
//! batch lookups for arrays (before 5.6) gets the lookups one by one.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{IterableMap, MapData, MapError, PerCpuArray};

use super::syscall::bpf;

const BPF_MAP_LOOKUP_BATCH: i64 = 24;

/// `union bpf_attr` for the batch commands (its `batch` member).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The totals over CPUs of the first `count` elements of `counters`
/// (0 for one that cannot be read), in index order.
pub(super) fn per_cpu_totals(counters: &PerCpuArray<MapData, u64>, count: u32) -> Vec<u64> {
    let cpus = aya::util::nr_cpus().unwrap_or(0);
    match batch_totals(counters.map(), count, cpus) {
        Ok(totals) => totals,
        Err(e) => {
            tracing::trace!(error = %e, "no batch lookup of the XDP counters; reading them one by one");
            one_by_one(counters, count)
        }
    }
}

/// Counter `index`'s total over CPUs, in one lookup.
pub(super) fn per_cpu_total(
    counters: &PerCpuArray<MapData, u64>,
    index: u32,
) -> Result<u64, MapError> {
    counters
        .get(&index, 0)
        .map(|per_cpu| per_cpu.iter().fold(0u64, |sum, &v| sum.saturating_add(v)))
}

fn one_by_one(counters: &PerCpuArray<MapData, u64>, count: u32) -> Vec<u64> {
    (0..count)
        .map(|index| match per_cpu_total(counters, index) {
            Ok(total) => total,
            Err(e) => {
                tracing::debug!(index, error = %e, "cannot read an XDP counter");
                0
            }
        })
        .collect()
}

/// One `BPF_MAP_LOOKUP_BATCH` from the first element: `count` keys and,
/// per key, one 8-byte value per possible CPU.
fn batch_totals(map: &MapData, count: u32, cpus: usize) -> io::Result<Vec<u64>> {
    if cpus == 0 || count == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut keys = vec![0u32; count as usize];
    let mut values = vec![0u64; count as usize * cpus];
    let mut next = 0u32;
    let fd = map.fd().as_fd().as_raw_fd();
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: std::ptr::addr_of_mut!(next) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd: u32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        elem_flags: 0,
        flags: 0,
    };
    // The kernel ends a batch that reaches the array's end with ENOENT,
    // `count` saying how many it filled.
    match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    if attr.count != count {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the batch returned {} of {count} counters", attr.count),
        ));
    }
    let mut totals = vec![0u64; count as usize];
    for (key, per_cpu) in keys.iter().zip(values.chunks_exact(cpus)) {
        if let Some(total) = totals.get_mut(*key as usize) {
            *total = per_cpu.iter().fold(0u64, |s, &v| s.saturating_add(v));
        }
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::CacheGeometry;
    use crate::xdp::program::counter;
    use crate::xdp::XdpTester;

    /// A frame of `ethertype` from `source` to `destination`, 60 bytes.
    fn frame(destination: [u8; 6], source: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&destination);
        f[6..12].copy_from_slice(&source);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    #[test]
    fn one_batch_reads_what_lookups_one_by_one_read() {
        let tester = match XdpTester::load(CacheGeometry::new(1, 1024)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipped: the XDP program cannot be loaded here ({e})");
                return;
            }
        };
        let host = [0x02, 0, 0, 0, 0, 1];
        let frames = [
            frame([0xff; 6], host, 0x0806),
            frame([0x02, 0, 0, 0, 0, 9], host, 0x0800),
            frame([0x01, 0, 0x5e, 0, 0, 1], host, 0x86dd),
            frame([0x02, 0, 0, 0, 0, 9], host, 0x88cc),
        ];
        for (n, f) in frames.iter().cycle().take(7).enumerate() {
            tester
                .run(f)
                .unwrap_or_else(|e| panic!("run {n}: BPF_PROG_TEST_RUN failed: {e}"));
        }
        // The last counters too, which no frame here moves.
        for index in [counter::FAST_UP_SYN, counter::COUNT - 1, counter::COUNT - 1] {
            tester.bump_counter(index);
        }
        let counters = tester.counters_map();
        let cpus = aya::util::nr_cpus().expect("the possible CPUs");
        let batch = batch_totals(counters.map(), counter::COUNT, cpus)
            .expect("a batch lookup of the counters");
        assert_eq!(batch, one_by_one(counters, counter::COUNT));
        assert_eq!(batch.len(), counter::COUNT as usize);
        assert!(
            batch.iter().sum::<u64>() >= 7,
            "seven runs counted nothing: {batch:?}"
        );
        assert_eq!(per_cpu_totals(counters, counter::COUNT), batch);
        assert_eq!(batch[counter::FAST_UP_SYN as usize], 1);
        assert_eq!(batch[(counter::COUNT - 1) as usize], 2);
    }
}
