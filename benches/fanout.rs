//! In-process cross-shard fan-out: one publisher on shard 0, subscribers
//! spread over four shards; measures publish + batch hand-off + delivery
//! per message, without sockets.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use petrel::core::{BufferPools, CoreConfig, ShardCore};
use petrel::ids::{ConnId, ShardId};

fn setup(shards: usize, subs: usize) -> Vec<ShardCore> {
    let cfg = CoreConfig {
        max_pending: usize::MAX,
        ..Default::default()
    };
    let pools = std::sync::Arc::new(BufferPools::new(shards));
    let mut cores: Vec<ShardCore> = (0..shards)
        .map(|i| {
            ShardCore::with_pools(
                ShardId(i as u16),
                shards,
                cfg.clone(),
                pools.clone(),
                std::time::Instant::now(),
            )
        })
        .collect();
    for i in 0..subs {
        let s = i % shards;
        let cid = ConnId(100 + i as u64);
        cores[s].add_conn(cid);
        cores[s].subscribe(cid, b"fan.out", None, b"1").unwrap();
    }
    cores[0].add_conn(ConnId(1));
    pump(&mut cores);
    cores
}

fn pump(cores: &mut [ShardCore]) {
    loop {
        let mut moved = false;
        for i in 0..cores.len() {
            for (d, b) in cores[i].take_batches() {
                cores[d.index()].apply_batch(b);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
}

fn drain(cores: &mut [ShardCore], subs: usize) {
    for i in 0..subs {
        let cid = ConnId(100 + i as u64);
        if let Some(c) = cores[i % cores.len()].conn_mut(cid) {
            c.out.take_bytes();
        }
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for subs in [1usize, 8, 64] {
        let mut cores = setup(4, subs);
        let batch = 100;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("1_to_{subs}_over_4_shards_16b"), |b| {
            b.iter(|| {
                for _ in 0..batch {
                    cores[0].publish(ConnId(1), b"fan.out", None, None, b"0123456789abcdef");
                }
                pump(&mut cores);
                drain(&mut cores, subs);
            })
        });
    }
    g.finish();
}

/// SUB + UNSUB on one shard, replayed on the three other replicas, while a
/// 1:8 fan-out keeps the match caches warm.
fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    let mut cores = setup(4, 8);
    let cid = ConnId(1);
    for (name, subject) in [("literal", &b"churn.a.b"[..]), ("wildcard", &b"fan.*"[..])] {
        g.bench_function(format!("sub_unsub_{name}_over_4_shards"), |b| {
            b.iter(|| {
                cores[0].subscribe(cid, subject, None, b"99").unwrap();
                cores[0].publish(cid, b"fan.out", None, None, b"0123456789abcdef");
                cores[0].unsubscribe(cid, b"99", None);
                pump(&mut cores);
                drain(&mut cores, 8);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout, churn);
criterion_main!(benches);
