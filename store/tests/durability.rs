//! What a store acknowledged survives SIGKILL; a damaged tail is cut, not trusted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use store::{Config, Identity, Location, Op, Store};

const CHILD_ENV: &str = "LATTICE_STORE_CRASH_CHILD";

/// In the child: write forever, printing each key once its write returned.
fn child_writer(dir: &Path) -> ! {
    let id = Identity::load(&dir.join("key")).unwrap();
    let s = Store::open(&dir.join("s.redb"), id, Config::default()).unwrap();
    let start = s.frontier().unwrap()[&s.author()].0;
    let mut stdout = std::io::stdout();
    for i in start.. {
        // Every third write is a batch of several entries in one commit.
        let ids = if i % 3 == 0 {
            s.write_batches(
                (0..4)
                    .map(|j| vec![Op::put(format!("k{i}-{j}"), vec![7u8; 300])])
                    .collect(),
                true,
            )
            .unwrap()
            .len()
        } else {
            s.write(vec![Op::put(format!("k{i}-0"), vec![7u8; 300])]).unwrap();
            1
        };
        use std::io::Write;
        writeln!(stdout, "ack {i} {ids}").unwrap();
        stdout.flush().unwrap();
    }
    unreachable!()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_writer(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let id = Identity::create(&dir.path().join("key")).unwrap();
    drop(
        Store::create_share(
            Location::File(&dir.path().join("s.redb")),
            id.clone(),
            Config::default(),
            vec![],
        )
        .unwrap(),
    );

    let mut acked: Vec<(u64, usize)> = Vec::new();
    for round in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "acknowledged_writes_survive_sigkill", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let start = Instant::now();
        let mut this_round = 0;
        // Kill at a different moment each round, mid-write.
        while start.elapsed() < Duration::from_millis(150 + 100 * round) {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(rest) = line.strip_prefix("ack ") {
                let mut it = rest.split(' ');
                acked.push((it.next().unwrap().parse().unwrap(), it.next().unwrap().parse().unwrap()));
                this_round += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            this_round > 10,
            "the child wrote too little to test anything ({this_round})"
        );

        let s = Store::open(&dir.path().join("s.redb"), id.clone(), Config::default()).unwrap();
        assert_eq!(s.open_report().cut, 0, "an intact store has nothing to cut");
        let n = s.verify_all().expect("every chain verifies after SIGKILL");
        assert!(n as usize > acked.len());
        for &(i, parts) in &acked {
            for j in 0..parts {
                assert!(
                    s.get(format!("k{i}-{j}").as_bytes()).unwrap().is_some(),
                    "acknowledged write k{i}-{j} lost"
                );
            }
        }
    }
}

#[test]
fn a_damaged_tail_is_cut_and_reported() {
    use redb::ReadableTable;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let id = Identity::generate();
    let s = Store::create_share(Location::File(&path), id.clone(), Config::default(), vec![]).unwrap();
    for i in 0..10 {
        s.write(vec![Op::put(format!("k{i}"), "v")]).unwrap();
    }
    drop(s);
    // Rot one byte of the newest entry, below redb (as a bad sector or a bug would).
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let log = txn.open_table(store::tables::LOG).unwrap();
            let last = *log.last().unwrap().unwrap().1.value();
            let mut entries = txn.open_table(store::tables::ENTRIES).unwrap();
            let (pos, mut bytes) = {
                let v = entries.get(&last).unwrap().unwrap();
                (v.value().0, v.value().1.to_vec())
            };
            let n = bytes.len();
            bytes[n - 2] ^= 0x40;
            entries.insert(&last, (pos, bytes.as_slice())).unwrap();
        }
        txn.commit().unwrap();
    }
    let s = Store::open(&path, id, Config::default()).unwrap();
    assert_eq!(s.open_report().cut, 1);
    assert_eq!(s.verify_all().unwrap(), 10, "genesis + 9 intact entries remain");
    assert_eq!(s.get(b"k9").unwrap(), None, "the damaged entry is not trusted");
    assert!(s.get(b"k8").unwrap().is_some());
}
