//! The README's first session, run as written (the block after
//! `<!-- walkthrough -->`), with this build's `mountctl` first on PATH: a
//! newcomer's path through mount, invite, join, log, restore, dag and gc.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let block = readme
        .split("<!-- walkthrough -->")
        .nth(1)
        .and_then(|r| r.split("```sh\n").nth(1))
        .and_then(|r| r.split("```").next())
        .expect("the README has a walkthrough block");
    let script = format!("set -euxo pipefail\n{block}\necho \"$W\" > walkthrough-dir\n");
    let dir = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .env("PATH", path),
        Duration::from_secs(120),
    );
    let w = std::fs::read_to_string(dir.path().join("walkthrough-dir")).ok();
    let w = w.as_deref().map(str::trim);
    // Leave no mount behind, whatever happened.
    if let Some(w) = w {
        for m in ["ma", "mb"] {
            let p = std::path::Path::new(w).join(m);
            if is_mountpoint(&p) {
                let _ = std::process::Command::new("umount").arg("-l").arg(&p).status();
            }
        }
    }
    assert!(out.ok(), "the walkthrough failed:\n{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.contains(&"first draft"), "{}", out.stdout);
    assert!(lines.contains(&"second draft"), "{}", out.stdout);
    assert!(out.stdout.contains("freed"), "{}", out.stdout);
    let w = std::path::Path::new(w.unwrap());
    assert!(std::fs::read_to_string(w.join("dag.svg")).unwrap().contains("<svg"));
}
