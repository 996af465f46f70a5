//! The sampling allocator on its own, in this test binary: a heap profile
//! taken after allocating a known amount shows an in-use total within 20 %
//! of it, and freeing it takes it away again.

use std::alloc::System;

use petrel::profile::heap::{self, SamplingAlloc};
use petrel::profile::heap_profile;

#[global_allocator]
static GLOBAL: SamplingAlloc<System> = SamplingAlloc::new(System);

fn inuse() -> i64 {
    heap_profile(false).sample.iter().map(|s| s.value[3]).sum()
}

fn alloc_objects() -> i64 {
    heap_profile(true).sample.iter().map(|s| s.value[0]).sum()
}

/// One test only: the sampler's tables are process-wide.
#[test]
fn inuse_tracks_a_known_allocation() {
    heap::set_rate(64 * 1024);
    let before = inuse();
    let objects_before = alloc_objects();
    // 96 MiB in 12,288 blocks of 8 KiB.
    let blocks: Vec<Vec<u8>> = (0..12_288).map(|i| vec![(i % 251) as u8; 8 * 1024]).collect();
    let held = (blocks.len() * 8 * 1024) as f64;
    let grown = (inuse() - before) as f64;
    assert!(
        (grown - held).abs() < held * 0.2,
        "in-use grew by {grown:.0} for {held:.0}"
    );
    let counted = (alloc_objects() - objects_before) as f64;
    assert!(
        (counted - 12_288.0).abs() < 12_288.0 * 0.25,
        "allocations counted {counted:.0} for 12288"
    );
    drop(blocks);
    let after = (inuse() - before) as f64;
    assert!(
        after.abs() < held * 0.1,
        "freed memory leaves the in-use total: {after:.0}"
    );
}
