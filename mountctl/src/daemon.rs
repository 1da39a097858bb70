//! `mountctl mount`: checks, the background daemon, and its life until unmount.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::home::{Home, ShareDir, absolute, is_mounted};

/// Checks a mount point the way a user needs to hear about it.
fn check_mountpoint(dir: &Path) -> Result<()> {
    if is_mounted(dir) {
        if std::fs::metadata(dir).is_err() {
            bail!(
                "{} holds a stale mount of a daemon that died: run `mountctl unmount {}`",
                dir.display(),
                dir.display()
            );
        }
        bail!("{} is already mounted", dir.display());
    }
    let meta = std::fs::metadata(dir).map_err(|_| anyhow!("mount point {} does not exist", dir.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    if std::fs::read_dir(dir)?.next().is_some() {
        bail!("mount point {} is not empty", dir.display());
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3");
    }
    Ok(())
}

/// Takes the share's daemon lock, or says who holds it.
fn lock(share: &ShareDir) -> Result<File> {
    std::fs::create_dir_all(&share.dir).with_context(|| format!("cannot create {}", share.dir.display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(share.lock())?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(share.lock()).unwrap_or_default();
        bail!(
            "the data folder {} is in use by another daemon (pid {}); unmount it first",
            share.dir.display(),
            pid.trim()
        );
    }
    Ok(f)
}

/// `mountctl mount DIR`: start the daemon in the background and return once mounted.
pub fn mount(home: &Home, dir: &Path, share: &str, foreground: bool) -> Result<()> {
    home.identity()?;
    let dir = absolute(dir)?;
    check_mountpoint(&dir)?;
    let sd = home.share(share);
    if foreground {
        return run(home, &sd, &dir, false);
    }
    drop(lock(&sd)?); // fail here, with the message, rather than in the child
    let log = std::fs::OpenOptions::new().create(true).append(true).open(sd.log())?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--home")
        .arg(&home.dir)
        .arg("daemon")
        .arg(&dir)
        .arg("--share")
        .arg(share)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the daemon")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ready" => Ok(()),
        Some(msg) => Err(anyhow!("{msg}")),
        None => {
            let _ = child.wait();
            bail!("the daemon exited before mounting; see {}", sd.log().display())
        }
    }
}

/// The daemon: `ready` tells it to report on stdout and then let go of it.
pub fn run(home: &Home, sd: &ShareDir, dir: &Path, ready: bool) -> Result<()> {
    let result = start(home, sd, dir);
    let (lock_file, store, fs_handle, session) = match result {
        Ok(x) => x,
        Err(e) => {
            if ready {
                println!("error: {e:#}");
            }
            return Err(e);
        }
    };
    std::fs::write(sd.mountpoint_file(), format!("{}\n", dir.display()))?;
    tracing::info!(dir = %dir.display(), share = %store.share_id(), "mounted");
    if ready {
        println!("ready");
        std::io::stdout().flush()?;
        // Let go of the caller's pipe: nothing more is said on stdout.
        let null = File::open("/dev/null")?;
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let status = Status {
        dir: dir.to_path_buf(),
        share: store.share_id().to_string(),
        author: store.author().to_string(),
        name: sd.name.clone(),
    };
    let store_for_status = store.clone();
    let outcome = rt.block_on(serve(sd.socket(), status, store_for_status));
    tracing::info!("unmounting: {outcome}");
    let mut fs_handle = fs_handle;
    fs_handle.shutdown();
    if let Err(e) = session.umount_and_join() {
        tracing::warn!("unmount failed ({e}); detaching the mount");
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_file(sd.socket());
    let _ = std::fs::remove_file(sd.mountpoint_file());
    drop(store);
    drop(lock_file);
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

type Started = (File, Arc<store::Store>, fs::FsHandle, fuser::BackgroundSession);

fn start(home: &Home, sd: &ShareDir, dir: &Path) -> Result<Started> {
    let me = home.identity()?;
    let mut lock_file = lock(sd)?;
    lock_file.set_len(0)?;
    write!(lock_file, "{}", std::process::id())?;
    let cfg = store::Config::default();
    let store = if sd.store().exists() {
        store::Store::open(&sd.store(), me, cfg)?
    } else {
        let owner = store::Op::put(format!("peers/{}", me.author()), "owner");
        store::Store::create_share(store::Location::File(&sd.store()), me, cfg, vec![owner])?
    };
    let store = Arc::new(store);
    let (fs, fs_handle) = fs::open(store.clone(), &sd.dir)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("lattice:{}", sd.name)),
        fuser::MountOption::Subtype("lattice".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(
        std::env::var("LATTICE_FUSE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    );
    config.clone_fd = true;
    let session = fuser::Session::new(fs, dir, &config)
        .with_context(|| format!("cannot mount {}", dir.display()))?
        .spawn()
        .context("cannot start the FUSE session")?;
    Ok((lock_file, store, fs_handle, session))
}

#[derive(Clone)]
struct Status {
    dir: PathBuf,
    share: String,
    author: String,
    name: String,
}

/// Answers control requests until an unmount request or SIGTERM/SIGINT.
async fn serve(sock: PathBuf, status: Status, store: Arc<store::Store>) -> String {
    let _ = std::fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", sock.display());
            return "control socket failed".into();
        }
    };
    let (stop_tx, mut stop_rx) = mpsc::channel::<String>(4);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("signal handler");
    loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM".to_string(),
            _ = int.recv() => break "SIGINT".to_string(),
            Some(why) = stop_rx.recv() => break why,
            Ok((conn, _)) = listener.accept() => {
                let status = status.clone();
                let store = store.clone();
                let stop_tx = stop_tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = conn.into_split();
                    let mut line = String::new();
                    if TokioBufReader::new(r).read_line(&mut line).await.is_err() {
                        return;
                    }
                    match line.trim() {
                        "status" => {
                            let v = status_json(&status, &store);
                            let _ = w.write_all(format!("{v}\n").as_bytes()).await;
                        }
                        "unmount" => {
                            // The caller waits for this process to exit.
                            let v = serde_json::json!({"ok": true, "pid": std::process::id()});
                            let _ = w.write_all(format!("{v}\n").as_bytes()).await;
                            let _ = stop_tx.send("unmount requested".into()).await;
                        }
                        other => {
                            let v = serde_json::json!({"error": format!("unknown request {other:?}")});
                            let _ = w.write_all(format!("{v}\n").as_bytes()).await;
                        }
                    }
                });
            }
        }
    }
}

fn status_json(s: &Status, store: &store::Store) -> serde_json::Value {
    let frontier = store
        .frontier()
        .map(|f| f.values().map(|v| v.0).sum::<u64>())
        .unwrap_or(0);
    serde_json::json!({
        "dir": s.dir,
        "pid": std::process::id(),
        "share": s.share,
        "share_name": s.name,
        "author": s.author,
        "entries": frontier,
        "orphans": store.orphan_count().unwrap_or(0),
        "conflicts": store.multi_headed(b"n").map(|v| v.len()).unwrap_or(0),
        "peers": [],
    })
}
