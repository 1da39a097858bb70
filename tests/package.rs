//! The Debian package: `packaging/deb.sh` builds it with cargo-deb, `dpkg -i`
//! installs it on this machine (the nearest thing to a fresh container CI
//! has), the installed binary runs and mounts, its man page, completion and
//! user unit are where Debian puts them, and `dpkg -r` takes it all away.

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
