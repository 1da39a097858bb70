//! Writers on every node while the network and the daemons misbehave at
//! random: cuts between pairs and their heals, gossip that loses, repeats,
//! reorders and delays, SIGKILLs and restarts. Once the faults stop, every
//! node shows the same tree, and every write a node fsynced to a file only
//! it writes is there, on every node.
//!
//! In CI it runs 4 nodes for 20 s. `bash bench/soak.sh cluster [NODES] [SECS]`
//! runs it long (`LATTICE_SOAK_NODES`, `LATTICE_SOAK_SECS`) and prints figures.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;

const ARGS: [&str; 2] = ["--sync-interval", "2"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes `data` to `path` and fsyncs it; false if any step failed.
fn write_synced(path: &std::path::Path, data: &[u8]) -> bool {
    (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = fs::File::create(path)?;
        f.write_all(data)?;
        f.sync_all()
    })()
    .is_ok()
}

#[derive(Default)]
struct Counts {
    writes: AtomicUsize,
    failed_writes: AtomicUsize,
    kills: AtomicUsize,
    cuts: AtomicUsize,
    heals: AtomicUsize,
    gossip_faults: AtomicUsize,
}

#[test]
fn writers_under_random_faults_end_identical_with_every_fsynced_write() {
    let n = env_or("LATTICE_SOAK_NODES", 4) as usize;
    let secs = env_or("LATTICE_SOAK_SECS", 20);
    let mut all = vec![node(&ARGS)];
    for _ in 1..n {
        let m = member(&all[0], &ARGS);
        all.push(m);
    }
    converged(&all.iter().collect::<Vec<_>>());
    let ids: Vec<String> = all.iter().map(id).collect();
    let nodes: Vec<Mutex<Mount>> = all.into_iter().map(Mutex::new).collect();
    let ledgers: Vec<Mutex<Ledger>> = (0..n).map(|_| Mutex::new(Ledger::default())).collect();
    let counts = Counts::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let lock = |i: usize| nodes[i].lock().unwrap_or_else(|p| p.into_inner());

    std::thread::scope(|s| {
        for i in 0..n {
            let (lock, ledgers, counts) = (&lock, &ledgers, &counts);
            s.spawn(move || {
                let mut rng = rand::rng();
                let mut k = 0u64;
                while Instant::now() < deadline {
                    k += 1;
                    let shared = rng.random_ratio(1, 5);
                    let path = if shared {
                        format!("shared/{}.txt", k % 3)
                    } else {
                        format!("w{i}/{}.txt", k % 40)
                    };
                    let data = format!("node {i} write {k}").into_bytes();
                    let ok = write_synced(&lock(i).p(&path), &data);
                    let mut l = ledgers[i].lock().unwrap();
                    // Only a file no other node writes has one right answer.
                    if !shared {
                        l.forget(&path);
                        if ok {
                            l.0.push((path, data));
                        }
                    }
                    let c = if ok { &counts.writes } else { &counts.failed_writes };
                    c.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(rng.random_range(5..40)));
                }
            });
        }
        // The chaos: one fault at a time, every 0.3-1.5 s.
        s.spawn(|| {
            let mut rng = rand::rng();
            let mut cut: BTreeSet<(usize, usize)> = BTreeSet::new();
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
                let i = rng.random_range(0..n);
                let j = (i + rng.random_range(1..n)) % n;
                let pair = (i.min(j), i.max(j));
                match rng.random_range(0..10) {
                    0..=2 => {
                        let _ = ctl(&lock(pair.0), &["net", "cut", &ids[pair.1]]);
                        let _ = ctl(&lock(pair.1), &["net", "cut", &ids[pair.0]]);
                        cut.insert(pair);
                        counts.cuts.fetch_add(1, Ordering::Relaxed);
                    }
                    3..=5 => {
                        if let Some(&(a, b)) = cut.iter().nth(rng.random_range(0..cut.len().max(1))) {
                            let _ = ctl(&lock(a), &["net", "heal", &ids[b]]);
                            let _ = ctl(&lock(b), &["net", "heal", &ids[a]]);
                            cut.remove(&(a, b));
                            counts.heals.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    6..=7 => {
                        let g = format!(
                            "loss={} dup={} reorder={} delay={}",
                            rng.random_range(0..60),
                            rng.random_range(0..30),
                            rng.random_range(0..30),
                            rng.random_range(0..20)
                        );
                        let words: Vec<&str> = ["net", "gossip"].into_iter().chain(g.split(' ')).collect();
                        let _ = ctl(&lock(i), &words);
                        counts.gossip_faults.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        // SIGKILL and restart; a restarted daemon forgets its
                        // cuts, so their other sides are healed too.
                        let mut m = lock(i);
                        m.kill_daemon();
                        let mut args = vec!["mount"];
                        args.extend(ARGS);
                        m.mount_with(&args);
                        drop(m);
                        for &(a, b) in cut.iter().filter(|(a, b)| *a == i || *b == i) {
                            let other = if a == i { b } else { a };
                            let _ = ctl(&lock(other), &["net", "heal", &ids[i]]);
                        }
                        cut.retain(|(a, b)| *a != i && *b != i);
                        counts.kills.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    });

    // The faults stop: every node heals everything.
    let healed = Instant::now();
    for i in 0..n {
        ctl_ok(&lock(i), &["net", "heal"]);
    }
    let guards: Vec<_> = (0..n).map(lock).collect();
    let refs: Vec<&Mount> = guards.iter().map(|g| &**g).collect();
    converged(&refs);
    let settle = healed.elapsed();
    for m in &refs {
        for l in &ledgers {
            l.lock().unwrap().nothing_lost(m);
        }
        check(m);
    }
    let c = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    eprintln!(
        "soak: {n} nodes, {secs} s: {} fsynced writes ({} failed), {} SIGKILLs, {} cuts, {} heals, {} gossip faults; identical {:.1} s after the faults stopped",
        c(&counts.writes),
        c(&counts.failed_writes),
        c(&counts.kills),
        c(&counts.cuts),
        c(&counts.heals),
        c(&counts.gossip_faults),
        settle.as_secs_f64()
    );
    assert!(
        c(&counts.writes) > 0 && c(&counts.kills) + c(&counts.cuts) > 0,
        "the soak did nothing"
    );
}
