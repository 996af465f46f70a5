//! The sampling allocator's cost on the unsampled path: an allocation and
//! a free through `SamplingAlloc<MiMalloc>` against mimalloc alone (called
//! directly, not as the global allocator), at 64 B and 8 KiB.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mimalloc::MiMalloc;
use petrel::profile::heap::SamplingAlloc;

static SAMPLING: SamplingAlloc<MiMalloc> = SamplingAlloc::new(MiMalloc);

fn bench(c: &mut Criterion) {
    for size in [64usize, 8192] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        c.bench_function(&format!("mimalloc alloc+free {size} B"), |b| {
            b.iter(|| unsafe {
                let p = MiMalloc.alloc(layout);
                black_box(p);
                MiMalloc.dealloc(p, layout);
            })
        });
        c.bench_function(&format!("sampling alloc+free {size} B"), |b| {
            b.iter(|| unsafe {
                let p = SAMPLING.alloc(layout);
                black_box(p);
                SAMPLING.dealloc(p, layout);
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
