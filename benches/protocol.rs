//! Parser and encoder micro-benchmarks (ns per operation).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use petrel::proto::encode;
use petrel::proto::parser::{parse, ParseLimits, Parsed};

fn parse_all(buf: &[u8], limits: &ParseLimits) -> usize {
    let mut used = 0;
    let mut n = 0;
    while let Ok(Parsed::Op(_, k)) = parse(&buf[used..], limits) {
        used += k;
        n += 1;
    }
    n
}

fn parser(c: &mut Criterion) {
    let limits = ParseLimits::default();
    let mut g = c.benchmark_group("parse");
    for (name, one) in [
        ("pub_16b", b"PUB bench.subject 16\r\n0123456789abcdef\r\n".to_vec()),
        (
            "pub_reply_16b",
            b"PUB bench.subject _INBOX.abcdef.1 16\r\n0123456789abcdef\r\n".to_vec(),
        ),
        (
            "hpub_16b",
            b"HPUB bench.subject 12 28\r\nNATS/1.0\r\n\r\n0123456789abcdef\r\n".to_vec(),
        ),
        ("sub", b"SUB bench.subject.> queue 12345\r\n".to_vec()),
        ("ping", b"PING\r\n".to_vec()),
    ] {
        let buf: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        g.throughput(Throughput::Elements(1000));
        g.bench_function(name, |b| b.iter(|| parse_all(black_box(&buf), &limits)));
    }
    g.finish();
}

fn encoder(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let payload = [7u8; 16];
    let mut out = Vec::with_capacity(1 << 20);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("msg_16b", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..1000 {
                encode::msg(&mut out, b"bench.subject", b"12", None, black_box(&payload));
            }
        })
    });
    g.bench_function("hmsg_16b_reply", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..1000 {
                encode::hmsg(
                    &mut out,
                    b"bench.subject",
                    b"12",
                    Some(b"_INBOX.x.1"),
                    12,
                    black_box(&payload),
                );
            }
        })
    });
    g.finish();
}

/// What reading a header block for a trace request costs a message with
/// headers that asks for none (every HPUB pays it), and one that asks.
fn trace_headers(c: &mut Criterion) {
    let plain: &[u8] = b"NATS/1.0\r\nNats-Msg-Id: 5b7e0c2a-1c1f\r\nContent-Type: application/json\r\n\r\n";
    let traced: &[u8] = b"NATS/1.0\r\nNats-Trace-Dest: trace.x\r\nContent-Type: application/json\r\n\r\n";
    let mut g = c.benchmark_group("trace_read");
    g.bench_function("no_request", |b| {
        b.iter(|| black_box(petrel::proto::trace::read(black_box(plain))))
    });
    g.bench_function("request", |b| {
        b.iter(|| black_box(petrel::proto::trace::read(black_box(traced))))
    });
    g.finish();
}

criterion_group!(benches, parser, encoder, trace_headers);
criterion_main!(benches);
