//! The Debian package: `packaging/deb.sh` builds it with cargo-deb; it is
//! installed into a fresh Debian root (debootstrap's minimal base, in a
//! chroot: no container runtime here), where apt brings fuse3 and the
//! installed binary mounts; and with `dpkg -i` on this machine, where its man
//! page, completion and user unit are where Debian puts them, and `dpkg -r`
//! takes it all away.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn run_long(script: &str) -> Out {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(workspace());
    run(&mut cmd, Duration::from_secs(3600))
}

#[test]
fn the_deb_builds_installs_mounts_and_removes_cleanly() {
    let built = run_long("bash packaging/deb.sh");
    assert!(built.ok(), "building the .deb: {}", built.describe());
    let deb = built.stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).exists(),
        "no .deb: {}",
        built.describe()
    );
    let info = run_long(&format!("dpkg-deb --info {deb}; dpkg-deb --contents {deb}"));
    assert!(info.ok(), "{}", info.describe());
    assert!(info.stdout.contains("Depends: fuse3"), "{}", info.stdout);

    in_a_fresh_root(&deb);

    let installed = run_long(&format!("dpkg -i {deb}"));
    assert!(installed.ok(), "dpkg -i: {}", installed.describe());
    let removed = || run_long("dpkg -r lattice");
    for f in [
        "/usr/bin/mountctl",
        "/usr/share/man/man1/mountctl.1.gz",
        "/usr/share/bash-completion/completions/mountctl",
        "/usr/lib/systemd/user/lattice@.service",
    ] {
        if !Path::new(f).exists() {
            removed();
            panic!("{f} is not installed");
        }
    }
    // The installed binary, not the test build, makes a node and mounts.
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let used = run_long(&format!(
        "m=/usr/bin/mountctl; h={h}; d={d}
         $m --home $h init
         LATTICE_RELAY=off LATTICE_DNS=off LATTICE_LAN=off LATTICE_API=off $m --home $h mount $d --bind 127.0.0.1:0
         echo from-the-package > $d/x && cat $d/x
         $m --home $h unmount $d
         grep -q ExecStart=/usr/bin/mountctl /usr/lib/systemd/user/lattice@.service",
        h = home.path().display(),
        d = dir.path().display()
    ));
    let gone = removed();
    assert!(
        used.ok() && used.stdout.contains("from-the-package"),
        "the installed mountctl: {}",
        used.describe()
    );
    assert!(gone.ok(), "dpkg -r: {}", gone.describe());
    assert!(!Path::new("/usr/bin/mountctl").exists(), "dpkg -r left the binary");
}

/// A pristine minimal Debian root, made once per machine (about 25 s and
/// 200 MiB from the apt mirror), copied afresh for each run.
fn pristine_root() -> std::path::PathBuf {
    let root = std::path::PathBuf::from("/var/tmp/lattice-pristine-bookworm");
    if !root.join("ready").exists() {
        let made = run_long(&format!(
            "rm -rf {r}.tmp && debootstrap --variant=minbase bookworm {r}.tmp http://deb.debian.org/debian >/dev/null \
             && rm -rf {r} && mv {r}.tmp {r} && touch {r}/ready",
            r = root.display()
        ));
        assert!(made.ok(), "debootstrap: {}", made.describe());
    }
    root
}

/// `apt-get install ./lattice.deb` in a fresh root (fuse3 comes from the
/// mirror as its dependency), then init, mount, write, read, unmount there.
///
/// Nothing of the host is bound into the root (a bound /dev would be
/// deleted with the root's folder): it gets its own /dev/fuse node and its
/// own /proc, both let go before the folder is removed, and the folder is
/// kept (and the test fails) if anything is still mounted in it.
fn in_a_fresh_root(deb: &str) {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = work.path().join("root");
    let r = root.display();
    let setup = run_long(&format!(
        "cp -a {p} {r} && cp {deb} {r}/tmp/lattice.deb && cp /etc/resolv.conf {r}/etc/resolv.conf
         [ -e {r}/dev/fuse ] || mknod -m 666 {r}/dev/fuse c 10 229
         mount -t proc proc {r}/proc",
        p = pristine_root().display()
    ));
    let used = setup.ok().then(|| {
        run_long(&format!(
            "chroot {r} /bin/bash -euo pipefail -c '
               export DEBIAN_FRONTEND=noninteractive
               apt-get update -qq && apt-get install -y -qq /tmp/lattice.deb >/dev/null
               test -x /usr/bin/fusermount3
               mountctl init && mkdir /mnt/l
               LATTICE_RELAY=off LATTICE_DNS=off LATTICE_LAN=off LATTICE_API=off mountctl mount /mnt/l --bind 127.0.0.1:0
               echo in-a-fresh-root > /mnt/l/x && cat /mnt/l/x
               mountctl unmount /mnt/l'"
        ))
    });
    let mounted_in_root = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1).is_some_and(|m| m.starts_with(&r.to_string())))
    };
    for m in ["mnt/l", "proc"] {
        let p = root.join(m);
        if is_mountpoint(&p) {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
    if mounted_in_root() {
        let kept = work.keep();
        panic!("something is still mounted in {}: left in place", kept.display());
    }
    assert!(setup.ok(), "preparing the fresh root: {}", setup.describe());
    let used = used.unwrap();
    assert!(
        used.ok() && used.stdout.contains("in-a-fresh-root"),
        "the package in a fresh root: {}",
        used.describe()
    );
}
