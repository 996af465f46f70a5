//! What a subject mapping costs on the publish path: `Mappings::map` for
//! each kind of destination, and one core's publish (map, match, write
//! the MSG for one local subscriber) without the map call (the path before
//! mappings), with no mappings, with mappings that do not take the
//! subject, and with one that does.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use petrel::auth::accounts::AccountTable;
use petrel::auth::config::{AccountConfig, MapDest, MappingConfig, GLOBAL_ACCOUNT};
use petrel::core::imports::Imports;
use petrel::core::{CoreConfig, ShardCore};
use petrel::ids::{ConnId, ShardId};
use petrel::mapping::{Mapping, Mappings};

fn one(source: &str, dests: &[MapDest]) -> Mappings {
    let mut m = Mappings::default();
    m.add(Mapping::new(source, dests).unwrap());
    m
}

fn weighted(subject: &str, weight: u8) -> MapDest {
    MapDest {
        subject: subject.into(),
        weight,
        cluster: String::new(),
    }
}

fn map_alone(c: &mut Criterion) {
    let cases: [(&str, Mappings, &[u8]); 5] = [
        ("literal", one("orders", &[MapDest::all("orders.v2")]), b"orders"),
        (
            "wildcards",
            one("orders.*.*", &[MapDest::all("orders.v2.$2.$1")]),
            b"orders.eu.42",
        ),
        (
            "partition",
            one("orders.*", &[MapDest::all("orders.{{partition(10,1)}}.$1")]),
            b"orders.42",
        ),
        (
            "weighted",
            one("orders.*", &[weighted("a.$1", 20), weighted("b.$1", 30)]),
            b"orders.42",
        ),
        ("no match", one("orders.*", &[MapDest::all("x.$1")]), b"invoices.42"),
    ];
    let mut rng = fastrand::Rng::with_seed(1);
    for (name, m, subject) in cases {
        c.bench_function(&format!("map {name}"), |b| {
            b.iter(|| black_box(m.map(black_box(subject), None, &mut rng)))
        });
    }
}

fn core_with(mappings: Vec<MappingConfig>) -> ShardCore {
    let mut core = ShardCore::new(ShardId(0), 1, CoreConfig::default(), std::time::Instant::now());
    if !mappings.is_empty() {
        let table = AccountTable::new(None);
        table.get_or_create(GLOBAL_ACCOUNT);
        let (imports, _) = Imports::build(
            &table,
            &[AccountConfig {
                name: GLOBAL_ACCOUNT.into(),
                exports: Vec::new(),
                imports: Vec::new(),
                mappings,
                trace_dest: None,
                limits: Default::default(),
            }],
        );
        core.set_imports(Arc::new(imports));
    }
    core.add_conn(ConnId(1));
    core.add_conn(ConnId(2));
    core.subscribe(ConnId(2), b"orders.>", None, b"1").unwrap();
    core
}

fn publish(c: &mut Criterion) {
    let mapping = |source: &str, dest: &str| MappingConfig {
        source: source.into(),
        dests: vec![MapDest::all(dest)],
    };
    let cases = [
        ("publish, no mappings", Vec::new()),
        ("publish, mappings not taking it", vec![mapping("invoices.*", "inv.$1")]),
        ("publish, mapped", vec![mapping("orders.*", "orders.v2.$1")]),
    ];
    // The path before mappings existed: no map call at all.
    let mut core = core_with(Vec::new());
    c.bench_function("publish, without the map call", |b| {
        b.iter(|| {
            black_box(core.publish(ConnId(1), b"orders.42", None, None, b"hello"));
            if let Some(c) = core.conn_mut(ConnId(2)) {
                c.out.take_bytes();
            }
        })
    });
    for (name, mappings) in cases {
        let mut core = core_with(mappings);
        c.bench_function(name, |b| {
            b.iter(|| {
                let mapped = core.map_subject(ConnId(1), b"orders.42");
                let subject = mapped.as_deref().unwrap_or(b"orders.42");
                black_box(core.publish(ConnId(1), subject, None, None, b"hello"));
                if let Some(c) = core.conn_mut(ConnId(2)) {
                    c.out.take_bytes();
                }
            })
        });
    }
}

criterion_group!(benches, map_alone, publish);
criterion_main!(benches);
