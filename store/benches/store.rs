//! `cargo bench -p store`: local puts, ingest of signed entries, chunking.
//! File-backed stores on the real disk, durable commits, as the daemon runs.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngCore, SeedableRng};
use store::{Config, Identity, Location, Op, Store};

fn file_store(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::create_share(
        Location::File(&dir.path().join(name)),
        Identity::generate(),
        Config::default(),
        vec![],
    )
    .unwrap()
}

fn puts(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let s = file_store(&dir, "puts.redb");
    let mut g = c.benchmark_group("local_put");
    let mut i = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("1 op per entry, durable", |b| {
        b.iter(|| {
            i += 1;
            s.write(vec![Op::put(format!("k/{i}"), vec![1u8; 64])]).unwrap()
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("100 ops per entry, durable", |b| {
        b.iter(|| {
            let ops = (0..100)
                .map(|_| {
                    i += 1;
                    Op::put(format!("k/{i}"), vec![1u8; 64])
                })
                .collect();
            s.write(ops).unwrap()
        })
    });
    g.throughput(Throughput::Elements(32));
    g.bench_function("32 entries of 1 op per group commit", |b| {
        b.iter(|| {
            let batches = (0..32)
                .map(|_| {
                    i += 1;
                    vec![Op::put(format!("k/{i}"), vec![1u8; 64])]
                })
                .collect();
            s.write_batches(batches, true).unwrap()
        })
    });
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let src = file_store(&dir, "src.redb");
    for i in 0..1000 {
        src.write(vec![Op::put(format!("k/{}", i % 50), vec![1u8; 64])])
            .unwrap();
    }
    let entries = src.entries_after(&BTreeMap::new(), usize::MAX).unwrap();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(entries.len() as u64));
    let mut n = 0;
    g.bench_function("1001 signed entries, batches of 100", |b| {
        b.iter_batched(
            || {
                n += 1;
                Store::create_for_share(
                    Location::File(&dir.path().join(format!("dst{n}.redb"))),
                    Identity::generate(),
                    src.share_id(),
                    Config::default(),
                )
                .unwrap()
            },
            |dst| {
                for batch in entries.chunks(100) {
                    black_box(dst.ingest(batch).unwrap());
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn chunking(c: &mut Criterion) {
    let mut data = vec![0u8; 64 << 20];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    let mut g = c.benchmark_group("chunking");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fastcdc + blake3, 64 MiB", |b| {
        b.iter(|| store::content::chunk_slice(black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, puts, ingest, chunking);
criterion_main!(benches);
