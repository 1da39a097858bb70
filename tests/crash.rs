//! SIGKILL in the middle of mixed writes, again and again: after each restart
//! every byte that fsync acknowledged is there, the mount shows what its store
//! holds, and every chain verifies. `LATTICE_KILL_CYCLES` makes it longer
//! (`bench/soak.sh kill`).

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Mixed work until the mount goes away: new files fsync'd (and recorded,
/// never touched again), saves by rename, deletes, directories.
fn churn(root: std::path::PathBuf, tag: String, seed: u64, acked: Acked, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    let dev = fs::metadata(&root).unwrap().dev();
    // Paths through an open handle of the mount's root: once the dead mount
    // is detached they fail, instead of naming the folder beneath it.
    let Ok(handle) = File::open(&root) else { return };
    let root = std::path::PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let r: std::io::Result<()> = (|| match rng.below(4) {
            0 => {
                let name = format!("{tag}-durable-{i}");
                let n = 1 + rng.below(200_000) as usize;
                let data = rng.bytes(n);
                let mut f = File::create(root.join(&name))?;
                f.write_all(&data)?;
                f.sync_all()?;
                // Only what reached the mount counts (after the dead mount
                // is detached, a path would name the folder beneath it).
                if f.metadata()?.dev() == dev {
                    acked.lock().unwrap().push((name, data));
                }
                Ok(())
            }
            1 => {
                let tmp = root.join(format!("{tag}-save.tmp"));
                let n = rng.below(50_000) as usize;
                fs::write(&tmp, rng.bytes(n))?;
                fs::rename(&tmp, root.join(format!("{tag}-saved")))
            }
            2 => {
                let p = root.join(format!("{tag}-scratch-{}", rng.below(5)));
                fs::write(&p, rng.bytes(100))?;
                fs::remove_file(&p)
            }
            _ => {
                let d = root.join(format!("{tag}-dir-{}", rng.below(3)));
                let _ = fs::create_dir(&d);
                fs::write(d.join("f"), rng.bytes(1000))
            }
        })();
        if let Err(e) = r
            && (e.raw_os_error() == Some(libc::ENOTCONN) || !root.exists())
        {
            return; // the daemon is gone
        }
    }
}

#[test]
fn sigkill_during_mixed_writes_keeps_every_fsynced_byte() {
    let cycles: u64 = std::env::var("LATTICE_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut m = Mount::new();
    let mut durable: Vec<(String, Vec<u8>)> = Vec::new();
    let mut rng = Rng::new(0xdead);
    for cycle in 0..cycles {
        eprintln!("cycle {cycle}: writing");
        // The user's `mountctl unmount`, started before any writer opens a
        // file: a process forked while files are open on the dead mount
        // would block in exec, flushing them (a test artifact; a user's
        // shell holds no such files).
        let mut clear = Command::new("bash")
            .args(["-c", "read _; exec \"$0\" --home \"$1\" unmount \"$2\""])
            .arg(bin())
            .arg(&m.home)
            .arg(&m.dir)
            .env_remove("LATTICE_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = m.daemon_pid();
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|t| {
                let (root, acked, stop) = (m.dir.clone(), acked.clone(), stop.clone());
                std::thread::spawn(move || churn(root, format!("c{cycle}t{t}"), cycle * 10 + t, acked, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        kill(pid, libc::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        // What a user does next: clear the dead mount. Processes that were
        // blocked on it fail then, instead of hanging for ever.
        m.mark_unmounted();
        clear.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let t = std::time::Instant::now();
        while clear.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(120) {
                let _ = clear.kill();
                panic!("cycle {cycle}: `mountctl unmount` of the dead mount did not finish in 120 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = clear.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "clearing the dead mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("cycle {cycle}: killed, mount cleared");
        for w in workers {
            w.join().unwrap();
        }
        eprintln!("cycle {cycle}: writers stopped");
        m.mount();
        eprintln!("cycle {cycle}: mounted again");
        durable.extend(acked.lock().unwrap().drain(..));
        for (name, data) in &durable {
            assert_bytes_eq(&format!("cycle {cycle}: fsynced {name}"), data, &read(&m.p(name)));
        }
        eprintln!("cycle {cycle}: fsynced files intact");
        check(&m);
        let out = mountctl_s(&m.home, &["check", "--content", m.dir.to_str().unwrap()]);
        assert!(out.ok(), "cycle {cycle}: {}", out.describe());
    }
    eprintln!("{cycles} kills, {} fsynced files intact", durable.len());
}
