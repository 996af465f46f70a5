//! Subscription index micro-benchmarks under high subject cardinality:
//! match (cached and uncached), insert and remove churn.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use petrel::ids::{ConnId, ShardId, SubKey};
use petrel::index::{SubIndex, SubRef};

fn subject(i: usize) -> Vec<u8> {
    format!("tenant{}.device{}.metric{}", i % 100, (i / 100) % 1000, i % 7).into_bytes()
}

fn build(n: usize, cache: bool) -> SubIndex {
    let mut ix = SubIndex::new(cache);
    for i in 0..n {
        ix.insert(
            &subject(i),
            None,
            SubRef {
                key: SubKey::new(ShardId(0), i as u64),
                conn: ConnId(i as u64),
            },
        );
    }
    for t in 0..100 {
        ix.insert(
            format!("tenant{t}.*.metric1").as_bytes(),
            None,
            SubRef {
                key: SubKey::new(ShardId(1), t),
                conn: ConnId(1),
            },
        );
    }
    ix.insert(
        b">",
        Some(b"audit"),
        SubRef {
            key: SubKey::new(ShardId(1), 999_999),
            conn: ConnId(2),
        },
    );
    ix
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_match");
    for n in [1_000usize, 100_000] {
        let subjects: Vec<Vec<u8>> = (0..4096).map(|i| subject(i * 37 % n)).collect();
        let mut cached = build(n, true);
        g.bench_function(format!("cached_{n}_subs"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % 64; // a small hot set: stays in the cache
                black_box(cached.matches(&subjects[i]));
            })
        });
        let mut uncached = build(n, false);
        g.bench_function(format!("uncached_{n}_subs"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % subjects.len();
                black_box(uncached.matches(&subjects[i]));
            })
        });
    }
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_churn");
    let n = 100_000;
    g.bench_function("insert_remove_literal_100k", |b| {
        let mut ix = build(n, true);
        let mut k = 10_000_000u64;
        b.iter(|| {
            k += 1;
            let s = subject(k as usize);
            let r = SubRef {
                key: SubKey::new(ShardId(0), k),
                conn: ConnId(k),
            };
            ix.insert(&s, None, r);
            ix.remove(&s, None, r.key);
        })
    });
    g.bench_function("insert_remove_wildcard_with_warm_cache", |b| {
        b.iter_batched(
            || {
                let mut ix = build(10_000, true);
                for i in 0..1000 {
                    ix.matches(&subject(i));
                }
                ix
            },
            |mut ix| {
                let r = SubRef {
                    key: SubKey::new(ShardId(0), 77),
                    conn: ConnId(77),
                };
                ix.insert(b"tenant3.*.metric2", None, r);
                ix.remove(b"tenant3.*.metric2", None, r.key);
                ix
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, matching, churn);
criterion_main!(benches);
