//! The systemd user unit (packaging/lattice@.service) under a real systemd
//! user manager: it mounts, a daemon killed with SIGKILL is restarted (the
//! stale mount cleared first), and a stop unmounts.
//!
//! This machine's PID 1 is not systemd, so the test starts `systemd --user`
//! itself, with its own runtime and config folders. systemd refuses to run
//! unless `/run/systemd/system` exists (its "booted with systemd" mark): the
//! test makes it for the run and removes it after, if it was not there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Manager {
    child: Child,
    runtime: PathBuf,
    made_mark: bool,
}

impl Manager {
    fn start(runtime: &Path, config: &Path) -> Manager {
        let mark = Path::new("/run/systemd/system");
        let made_mark = !mark.exists();
        if made_mark {
            std::fs::create_dir_all(mark).unwrap();
        }
        let child = Command::new("/lib/systemd/systemd")
            .arg("--user")
            .env("XDG_RUNTIME_DIR", runtime)
            .env("XDG_CONFIG_HOME", config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd --user starts");
        let m = Manager {
            child,
            runtime: runtime.to_path_buf(),
            made_mark,
        };
        let t = Instant::now();
        loop {
            let out = m.ctl(&["is-system-running"]);
            if matches!(out.stdout.trim(), "running" | "degraded") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "systemd --user never ran: {}",
                out.describe()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    fn ctl(&self, args: &[&str]) -> Out {
        run(
            Command::new("systemctl")
                .arg("--user")
                .args(args)
                .env("XDG_RUNTIME_DIR", &self.runtime),
            Duration::from_secs(150),
        )
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.made_mark {
            let _ = std::fs::remove_dir("/run/systemd/system");
        }
    }
}

fn daemon_pid(home: &Path) -> Option<u64> {
    status_json(home)["mounts"][0]["pid"].as_u64()
}

#[test]
fn the_user_unit_mounts_restarts_a_killed_daemon_and_unmounts() {
    let work = tempfile::tempdir().unwrap();
    let (runtime, config, home, mnt) = (
        work.path().join("run"),
        work.path().join("config"),
        work.path().join("home"),
        work.path().join("mnt"),
    );
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(config.join("systemd/user")).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    // The packaged unit, with this build's binary where it installs one.
    let unit = std::fs::read_to_string(workspace().join("packaging/lattice@.service"))
        .unwrap()
        .replace("/usr/local/bin/mountctl", bin().to_str().unwrap());
    std::fs::write(config.join("systemd/user/lattice@.service"), unit).unwrap();
    assert!(mountctl_s(&home, &["init"]).ok());

    let m = Manager::start(&runtime, &config);
    let home_env = format!("LATTICE_HOME={}", home.display());
    let out = m.ctl(&[
        "set-environment",
        &home_env,
        "LATTICE_RELAY=off",
        "LATTICE_DNS=off",
        "LATTICE_LAN=off",
        "LATTICE_BIND=127.0.0.1:0",
    ]);
    assert!(out.ok(), "{}", out.describe());
    let esc = run(
        Command::new("systemd-escape").arg("--path").arg(&mnt),
        Duration::from_secs(10),
    );
    let instance = format!("lattice@{}.service", esc.stdout.trim());
    let out = m.ctl(&["start", &instance]);
    assert!(out.ok(), "{}", out.describe());
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !ok() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "not within 60 s: {what}\n{}\n{}",
                m.ctl(&["status", &instance]).describe(),
                log_tails(&home)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("mounted by the unit", &|| {
        is_mountpoint(&mnt) && daemon_pid(&home).is_some()
    });
    std::fs::write(mnt.join("kept.txt"), b"across a crash").unwrap();
    let f = std::fs::File::open(mnt.join("kept.txt")).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // SIGKILL: the unit clears the stale mount and mounts again.
    let pid = daemon_pid(&home).unwrap();
    kill(pid as u32, libc::SIGKILL);
    wait("a new daemon after the kill", &|| {
        daemon_pid(&home).is_some_and(|p| p != pid) && is_mountpoint(&mnt)
    });
    assert_eq!(std::fs::read(mnt.join("kept.txt")).unwrap(), b"across a crash");
    let restarts = m.ctl(&["show", &instance, "-p", "NRestarts"]);
    assert_eq!(restarts.stdout.trim(), "NRestarts=1", "{}", restarts.describe());

    let out = m.ctl(&["stop", &instance]);
    assert!(out.ok(), "{}", out.describe());
    assert!(!is_mountpoint(&mnt), "the stop left the mount");
    assert!(daemon_pid(&home).is_none());
}
