//! The local HTTP API on real daemons, driven with curl: tokens with each
//! permission, revoked and expired tokens, the rate limit, paths that try to
//! leave the share, and a write through the API reaching another node's mount.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

fn token(m: &Mount, args: &[&str]) -> String {
    let mut a = vec!["token", "create"];
    a.extend(args);
    let out = ctl(m, &a);
    assert!(out.ok(), "{}", out.describe());
    out.stdout.trim().to_string()
}

fn api_url(m: &Mount) -> String {
    let s = status_mount(&m.home, &m.dir).unwrap();
    let url = s["api"].as_str().unwrap_or_default().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "status gives no API address: {s}");
    url
}

/// `curl` with the method and token; returns (HTTP status, body).
fn curl(method: &str, url: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let mut args = vec![
        "-s".to_string(),
        "-o".into(),
        "/dev/stdout".into(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        method.into(),
        "-H".into(),
        format!("Authorization: Bearer {token}"),
    ];
    if let Some(b) = body {
        args.extend(["--data-binary".into(), b.into()]);
    }
    args.push(url.into());
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_api_reads_and_writes_with_tokens_and_its_writes_replicate() {
    let a = Mount::new();
    let b = join(&a);
    let base = api_url(&a);
    let files = format!("{base}/shares/default/files");
    let (r, w, rw) = (
        token(&a, &["--perm", "r"]),
        token(&a, &["--perm", "w"]),
        token(&a, &["--perm", "rw"]),
    );

    // A write through the API is a write like any other: it reaches B's mount.
    assert_eq!(
        curl("PUT", &format!("{files}/notes/api.txt"), &rw, Some("through the api")).0,
        200
    );
    eventually("B's mount shows the API's write", || {
        fs::read(b.p("notes/api.txt")).is_ok_and(|d| d == b"through the api")
    });
    write(&a.p("notes/mount.txt"), b"through the mount");
    assert_eq!(
        curl("GET", &format!("{files}/notes/mount.txt"), &r, None),
        (200, "through the mount".into())
    );
    let (code, listed) = curl("GET", &format!("{files}?prefix=notes/"), &r, None);
    assert_eq!(code, 200, "{listed}");
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let paths: Vec<_> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["notes/api.txt", "notes/mount.txt"]);

    // Permissions: a reader cannot write, a writer cannot read.
    assert_eq!(curl("PUT", &format!("{files}/x.txt"), &r, Some("x")).0, 403);
    assert_eq!(curl("GET", &format!("{files}/notes/api.txt"), &w, None).0, 403);
    assert_eq!(curl("DELETE", &format!("{files}/notes/mount.txt"), &w, None).0, 200);
    eventually("B's mount shows the API's delete", || !b.p("notes/mount.txt").exists());
    assert_eq!(curl("GET", &format!("{files}/notes/mount.txt"), &r, None).0, 404);
    // No token, a wrong one, a path that leaves the share, another share.
    assert_eq!(curl("GET", &format!("{files}/notes/api.txt"), "", None).0, 401);
    assert_eq!(
        curl("GET", &format!("{files}/notes/api.txt"), "lattice_00000000_nope", None).0,
        401
    );
    assert_eq!(curl("GET", &format!("{files}/..%2F..%2Fetc%2Fpasswd"), &r, None).0, 400);
    assert_eq!(curl("GET", &format!("{base}/shares/other/files/x"), &r, None).0, 404);
    // A member can make a link point anywhere on this machine: the API
    // never follows one, to read or to write.
    std::os::unix::fs::symlink("/etc", a.p("etc-link")).unwrap();
    assert_eq!(curl("GET", &format!("{files}/etc-link/hostname"), &r, None).0, 403);
    assert_eq!(
        curl("PUT", &format!("{files}/etc-link/lattice-was-here"), &w, Some("x")).0,
        403
    );
    assert!(!std::path::Path::new("/etc/lattice-was-here").exists());

    // Revoked: refused at once. Expired: refused once its time is up.
    let id = rw.split('_').nth(1).unwrap().to_string();
    let out = ctl(&a, &["token", "revoke", &id]);
    assert!(out.ok(), "{}", out.describe());
    assert_eq!(curl("GET", &format!("{files}/notes/api.txt"), &rw, None).0, 401);
    let short = token(&a, &["--perm", "r", "--expires", "1s"]);
    assert_eq!(curl("GET", &format!("{files}/notes/api.txt"), &short, None).0, 200);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(curl("GET", &format!("{files}/notes/api.txt"), &short, None).0, 401);
    let listed = ctl(&a, &["token", "list", "--json"]).stdout;
    assert!(!listed.contains(&id), "a revoked token is still listed: {listed}");
    assert!(
        !listed.contains(rw.rsplit('_').next().unwrap()),
        "a secret is shown: {listed}"
    );
    let kept = fs::read_to_string(a.home.join("tokens.json")).unwrap();
    assert!(
        !kept.contains(r.rsplit('_').next().unwrap()),
        "a secret is stored in the clear"
    );

    // The rate limit: a burst past it gets 429s, one token's burst only.
    let url = format!("{files}/notes/api.txt");
    let args: Vec<String> = (0..600)
        .flat_map(|_| ["-o".to_string(), "/dev/null".into(), url.clone()])
        .collect();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            "50",
            "-w",
            "%{http_code}\n",
        ])
        .args(["-H", &format!("Authorization: Bearer {r}")])
        .args(&args)
        .output()
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let limited = codes.lines().filter(|c| *c == "429").count();
    assert!(
        limited > 0 && codes.lines().filter(|c| *c == "200").count() >= 100,
        "300 requests at once: {limited} got 429:\n{codes}"
    );
    let other = token(&a, &["--perm", "r"]);
    assert_eq!(curl("GET", &url, &other, None).0, 200, "another token is limited too");
    check(&a);
    converged(&[&a, &b]);
}
