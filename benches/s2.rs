//! What S2 costs a route or leaf connection per 64 KiB written and read
//! (the size of one write batch of small messages): framing and reading
//! back at each level, on NATS protocol text (RMSG lines with 8 KiB and
//! 16 B payloads).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use petrel::compress::{Deframer, Framer, Level};

fn batch(payload: usize) -> Vec<u8> {
    let body = "x".repeat(payload);
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < 64 * 1024 {
        out.extend_from_slice(format!("RMSG $G bench.{} {}\r\n{body}\r\n", i % 10, body.len()).as_bytes());
        i += 1;
    }
    out.truncate(64 * 1024);
    out
}

fn bench(c: &mut Criterion) {
    for payload in [16usize, 8192] {
        let plain = batch(payload);
        let mut g = c.benchmark_group(format!("s2 64 KiB of {payload} B messages"));
        g.throughput(Throughput::Bytes(plain.len() as u64));
        for level in [Level::Uncompressed, Level::Fast, Level::Better] {
            let mut f = Framer::default();
            let mut wire = Vec::new();
            f.frame(level, &plain, &mut wire);
            let mut framed = Vec::with_capacity(plain.len() + 64);
            g.bench_function(format!("frame {}", level.name()), |b| {
                b.iter(|| {
                    framed.clear();
                    f.frame(level, black_box(&plain), &mut framed);
                    black_box(framed.len())
                })
            });
            // One reader and one buffer for the run, as a connection has.
            let mut d = Deframer::default();
            let mut out = Vec::with_capacity(plain.len());
            g.bench_function(format!("read {}", level.name()), |b| {
                b.iter(|| {
                    out.clear();
                    d.push(black_box(&wire));
                    while d.decode(&mut out, 1 << 20).unwrap() {}
                    black_box(out.len())
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
