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
use std::net::SocketAddr;
use std::time::Duration;

use crate::directory::ShareDirectory;
use crate::home::{Home, ShareDir, absolute, is_mounted};
use crate::progress::{Renderer, Step};

/// Checks a mount point the way a user needs to hear about it.
pub(crate) fn check_mountpoint(dir: &Path) -> Result<()> {
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

/// How a daemon starts: a share to mount (new or existing), or one to join.
#[derive(Clone, Debug)]
pub struct Launch {
    pub share: String,
    /// None: the share's kept port on all interfaces (see [`ShareDir::port_file`]).
    pub bind: Option<SocketAddr>,
    pub ticket: Option<String>,
    pub sync_interval: Duration,
    pub reach: net::endpoint::Reach,
    /// Every local user may use the mount (modes checked by the kernel).
    pub allow_other: bool,
    /// The HTTP API's address (port 0: the share's kept API port); None: off.
    pub api: Option<SocketAddr>,
    /// A join replays every entry instead of taking a snapshot.
    pub full_history: bool,
}

impl Launch {
    /// The daemon's arguments for this launch.
    fn args(&self, cmd: &mut Command) {
        cmd.arg("--share").arg(&self.share);
        if let Some(b) = self.bind {
            cmd.arg("--bind").arg(b.to_string());
        }
        cmd.arg("--sync-interval-ms")
            .arg(self.sync_interval.as_millis().to_string())
            .arg("--relay")
            .arg(match &self.reach.relay {
                net::endpoint::Relay::Off => "off".to_string(),
                net::endpoint::Relay::Public => "public".to_string(),
                net::endpoint::Relay::Custom(urls) => urls.join(","),
            })
            .arg("--dns")
            .arg(if self.reach.dns { "on" } else { "off" })
            .arg("--lan")
            .arg(if self.reach.lan { "on" } else { "off" });
        cmd.arg("--allow-other")
            .arg(if self.allow_other { "on" } else { "off" });
        if !self.reach.direct {
            cmd.arg("--no-direct");
        }
        if let Some(a) = self.api {
            cmd.arg("--api").arg(a.to_string());
        }
        if let Some(t) = &self.ticket {
            cmd.arg("--ticket").arg(t);
        }
        if self.full_history {
            cmd.arg("--full-history");
        }
    }
}

/// `mountctl mount DIR` / `mountctl join TICKET DIR`: start the daemon in the
/// background and return once mounted.
pub fn mount(home: &Home, dir: &Path, l: &Launch, foreground: bool) -> Result<()> {
    home.identity()?;
    let dir = absolute(dir)?;
    check_mountpoint(&dir)?;
    let sd = home.share(&l.share);
    let mut l = l.clone();
    if let Some(t) = &l.ticket {
        net::Ticket::decode(t).map_err(|e| anyhow!("{e}"))?;
        if sd.store().exists() && !sd.join_file().exists() {
            bail!(
                "this home already holds a share named {:?}; pick another with --share NAME",
                l.share
            );
        }
    } else if let Ok(t) = std::fs::read_to_string(sd.join_file()) {
        eprintln!("mountctl: carrying on with the unfinished join of share {:?}", l.share);
        l.ticket = Some(t.trim().to_string());
    }
    let l = &l;
    if foreground {
        return run(home, &sd, &dir, l, false);
    }
    drop(lock(&sd)?); // fail here, with the message, rather than in the child
    let log = std::fs::OpenOptions::new().create(true).append(true).open(sd.log())?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--home").arg(&home.dir).arg("daemon").arg(&dir);
    l.args(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the daemon")?;
    // Join progress lines until the daemon says it is ready (or not).
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut bar: Option<(Renderer, Step)> = None;
    loop {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let line = line.trim_end();
        if let Some(step) = Step::parse(line) {
            let (r, last) = bar.get_or_insert_with(|| (Renderer::new(), step));
            r.show(step);
            *last = step;
            continue;
        }
        let ok = line == "ready";
        if let Some((r, last)) = bar {
            r.finish(ok.then_some(last));
        }
        return match line.strip_prefix("error: ") {
            None if ok => Ok(()),
            Some(msg) => Err(anyhow!("{msg}")),
            None => {
                let _ = child.wait();
                bail!("the daemon exited before mounting; see {}", sd.log().display())
            }
        };
    }
}

/// Everything a running daemon owns.
pub struct Daemon {
    pub dir: PathBuf,
    pub name: String,
    pub store: Arc<store::Store>,
    /// The store's file, for its size in `status`.
    pub store_file: PathBuf,
    pub directory: Arc<ShareDirectory>,
    pub net: net::Net,
    pub fs: fs::FsView,
    /// The HTTP API's URL, or why there is none (for `status`).
    pub api: std::sync::OnceLock<String>,
    /// The last space report and the disk watch (`space.rs`).
    pub space: crate::space::Watch,
    /// Read-only mounts of the share as it was (`past.rs`).
    pub past: std::sync::Mutex<Vec<crate::past::PastMount>>,
}

/// The daemon: `ready` tells it to report on stdout and then let go of it.
pub fn run(home: &Home, sd: &ShareDir, dir: &Path, l: &Launch, ready: bool) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Join progress goes to the `mountctl join` waiting on stdout, or is
    // drawn here in the foreground.
    let report: Box<dyn Fn(Step) + Send + Sync> = if ready {
        Box::new(|s: Step| {
            println!("{}", s.to_line());
            let _ = std::io::stdout().flush();
        })
    } else {
        let r = std::sync::Mutex::new(Renderer::new());
        Box::new(move |s: Step| r.lock().unwrap().show(s))
    };
    let started = rt.block_on(start(home, sd, dir, l, report.as_ref()));
    let (lock_file, daemon, fs_handle, session) = match started {
        Ok(x) => x,
        Err(e) => {
            if ready {
                println!("error: {e:#}");
            }
            return Err(e);
        }
    };
    std::fs::write(sd.mountpoint_file(), format!("{}\n", dir.display()))?;
    tracing::info!(dir = %dir.display(), share = %daemon.store.share_id(), "mounted");
    if ready {
        println!("ready");
        std::io::stdout().flush()?;
        // Let go of the caller's pipe: nothing more is said on stdout.
        let null = File::open("/dev/null")?;
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let api = match l.api {
        None => {
            let _ = daemon.api.set("off".into());
            None
        }
        Some(want) => {
            let api = crate::api::Api::new(
                home.dir.clone(),
                sd.name.clone(),
                daemon.store.share_id().to_string(),
                dir.to_path_buf(),
            );
            match rt.block_on(crate::api::Server::open(api, want, &sd.api_port_file())) {
                Ok(s) => {
                    let _ = daemon.api.set(format!("http://{}", s.addr));
                    Some(s)
                }
                Err(e) => {
                    // The mount works without it; status and the log say why.
                    tracing::warn!("no HTTP API: cannot listen on {want}: {e:#}");
                    let _ = daemon.api.set(format!("off: cannot listen on {want}: {e}"));
                    None
                }
            }
        }
    };
    let daemon = Arc::new(daemon);
    let (outcome, waiter) = rt.block_on(crate::serve::serve(sd.socket(), daemon.clone()));
    if let Some(api) = api {
        rt.block_on(api.stop());
    }
    tracing::info!("unmounting: {outcome}");
    for p in std::mem::take(&mut *daemon.past.lock().unwrap()) {
        crate::past::release(p);
    }
    // The kernel lets go first, so that every close it still holds reaches us
    // and is committed below; then nothing more can arrive.
    release_mount(dir, session);
    let mut fs_handle = fs_handle;
    let committed = fs_handle.shutdown();
    match &committed {
        Ok(()) => tracing::info!("every change is written; unmounted"),
        Err(e) => tracing::error!("unmounted, but {e}"),
    }
    rt.block_on(daemon.net.shutdown());
    let _ = std::fs::remove_file(sd.socket());
    let _ = std::fs::remove_file(sd.mountpoint_file());
    if let Some(w) = waiter {
        let reply = match &committed {
            Ok(()) => serde_json::json!({ "ok": true }),
            Err(e) => serde_json::json!({ "error": e }),
        };
        let _ = rt.block_on(crate::serve::reply(w, reply));
    }
    drop(daemon);
    drop(lock_file);
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    committed.map_err(|e| anyhow!(e))
}

/// Unmounts `dir` and waits for the kernel to close the FUSE connection. A
/// busy mount (a process still has a file or its directory there) is
/// detached: it leaves the namespace at once, and the session ends when the
/// last user lets go.
pub(crate) fn release_mount(dir: &Path, session: fuser::BackgroundSession) {
    let c = match std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
        Ok(c) => c,
        Err(_) => return,
    };
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EBUSY) {
            tracing::warn!(
                "{} is busy; detached it, and the daemon finishes once every process using it lets go",
                dir.display()
            );
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        } else if e.raw_os_error() != Some(libc::EINVAL) {
            tracing::warn!("unmount failed ({e}); detaching the mount");
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    if let Err(e) = session.join() {
        tracing::warn!("the FUSE session ended with an error: {e}");
    }
}

type Started = (File, Daemon, fs::FsHandle, fuser::BackgroundSession);

/// Starts the network on the share's kept port (chosen at the first start and
/// stored), unless `--bind` says otherwise. A kept port that another program
/// took meanwhile is replaced by a new one, said in the log.
async fn start_net(
    sd: &ShareDir,
    l: &Launch,
    me: &store::Identity,
    store: &Arc<store::Store>,
    directory: &Arc<ShareDirectory>,
) -> Result<net::Net> {
    let kept: Option<u16> = std::fs::read_to_string(sd.port_file())
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
    let bind = l.bind.unwrap_or_else(|| any(kept.unwrap_or(0)));
    let cfg = |bind| net::Config {
        bind,
        anti_entropy: l.sync_interval,
        max_drift: Duration::from_millis(store.config().max_drift_ms),
        reach: l.reach.clone(),
        // A test hook, like LATTICE_TEST_CLOCK_OFFSET_MS: never on for real use.
        faults: std::env::var("LATTICE_TEST_FAULTS").is_ok_and(|v| v == "1"),
        join_snapshot: !l.full_history,
        ..net::Config::default()
    };
    let go = |bind| net::Net::start(me.secret_bytes(), store.clone(), directory.clone(), cfg(bind));
    let net = match go(bind).await {
        Err(e) if l.bind.is_none() && kept.is_some() => {
            tracing::warn!(
                "cannot take this share's port again ({e:#}); taking a new one (peers learn it when they next meet this node)"
            );
            go(any(0)).await?
        }
        r => r?,
    };
    if l.bind.is_none()
        && let Some(port) = net.bound().iter().map(|a| a.port()).find(|p| *p != 0)
        && kept != Some(port)
    {
        std::fs::write(sd.port_file(), format!("{port}\n"))
            .with_context(|| format!("cannot write {}", sd.port_file().display()))?;
    }
    Ok(net)
}

async fn start(
    home: &Home,
    sd: &ShareDir,
    dir: &Path,
    l: &Launch,
    report: &(dyn Fn(Step) + Send + Sync),
) -> Result<Started> {
    let me = home.identity()?;
    let mut lock_file = lock(sd)?;
    lock_file.set_len(0)?;
    write!(lock_file, "{}", std::process::id())?;
    let cfg = store::Config {
        enforce_membership: true,
        ..store::Config::default()
    };
    let ticket = match &l.ticket {
        Some(t) => Some((t, net::Ticket::decode(t).map_err(|e| anyhow!("{e}"))?)),
        None => None,
    };
    // Until admission and backfill are done, `join` or `mount` carries on
    // from the ticket kept here: written before the store is created (a cut
    // right after creation must still be carried on), and for a store that
    // exists only once it is known to be the ticket's share.
    let mark_joining = |t: &str| {
        std::fs::write(sd.join_file(), format!("{t}\n"))
            .with_context(|| format!("cannot write {}", sd.join_file().display()))
    };
    let store = if sd.store().exists() {
        let store = store::Store::open(&sd.store(), me.clone(), cfg)?;
        if let Some((raw, t)) = &ticket {
            if store.share_id().0 != t.share {
                bail!(
                    "the unfinished join in {} is for another share than this ticket's; move that folder away to join this one",
                    sd.dir.display()
                );
            }
            mark_joining(raw)?;
        }
        store
    } else if let Some((raw, t)) = &ticket {
        mark_joining(raw)?;
        store::Store::create_for_share(
            store::Location::File(&sd.store()),
            me.clone(),
            store::ShareId(t.share),
            cfg,
        )?
    } else if sd.id_file().exists() || sd.dir.join("inodes.redb").exists() {
        bail!(
            "the share folder {} has lost its store (store.redb is missing); refusing to start a new, empty share in its place: restore store.redb, or move the folder away to start afresh",
            sd.dir.display()
        );
    } else {
        let owner = store::Op::put(store::membership::peer_key(&me.author()), "owner");
        store::Store::create_share(store::Location::File(&sd.store()), me.clone(), cfg, vec![owner])?
    };
    let ticket = ticket.map(|(_, t)| t);
    if !sd.id_file().exists() {
        std::fs::write(sd.id_file(), format!("{}\n", store.share_id()))
            .with_context(|| format!("cannot write {}", sd.id_file().display()))?;
    }
    let store = Arc::new(store);
    let directory = Arc::new(ShareDirectory(store.clone()));
    let net = start_net(sd, l, &me, &store, &directory).await?;
    if let Some(t) = &ticket {
        let joined = {
            let progress = async {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let p = net.progress();
                    report(Step {
                        entries: p.entries,
                        total: p.entries.saturating_add(p.behind),
                        bytes: p.bytes,
                    });
                }
            };
            tokio::select! {
                r = net.join(t) => r,
                () = progress => unreachable!("the progress loop never ends"),
            }
        };
        let p = net.progress();
        report(Step {
            entries: p.entries,
            total: p.entries.saturating_add(p.behind),
            bytes: p.bytes,
        });
        if let Err(e) = joined {
            net.shutdown().await;
            let member = net::Directory::role(directory.as_ref(), &me.author()).is_some();
            if e.downcast_ref::<net::Refused>().is_some() && !member {
                // The share said no (a used, expired or unknown ticket) and
                // nothing of it is here: leave no half-joined share behind.
                drop(directory);
                drop(store);
                let _ = std::fs::remove_file(sd.store());
                let _ = std::fs::remove_file(sd.id_file());
                let _ = std::fs::remove_file(sd.join_file());
                bail!("cannot join: {e:#}");
            }
            bail!(
                "cannot join: {e:#}. Nothing is lost: run the same `mountctl join` again, or `mountctl mount {}`, to carry on",
                dir.display()
            );
        }
        let _ = std::fs::remove_file(sd.join_file());
        tracing::info!(
            entries = p.entries,
            chunks = p.chunks,
            bytes = p.bytes,
            "joined the share"
        );
    }
    if let Err(e) = directory.publish(&net.addrs()) {
        tracing::warn!("cannot publish this node's addresses: {e}");
    }
    // A reader's writes, or a removed node's, would be refused by every peer:
    // say so at once (EROFS).
    let read_only = net::Directory::role(directory.as_ref(), &me.author()) != Some(store::Role::Writer)
        && net::Directory::role(directory.as_ref(), &me.author()) != Some(store::Role::Owner);
    let (fs, mut fs_handle) = fs::open(store.clone(), &sd.dir)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(sd.mount_source()),
        fuser::MountOption::Subtype("lattice".into()),
        fuser::MountOption::DefaultPermissions,
        // Any member can write any node: a device node or a set-user-id
        // file from a peer must not open a disk or run as its owner here.
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if l.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    if read_only {
        // A reader's writes would be refused by every peer: say so at once (EROFS).
        config.mount_options.push(fuser::MountOption::RO);
    }
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
    fs_handle.attach(session.notifier());
    let daemon = Daemon {
        dir: dir.to_path_buf(),
        name: sd.name.clone(),
        store,
        store_file: sd.store(),
        directory,
        net,
        fs: fs_handle.view(),
        api: std::sync::OnceLock::new(),
        space: Default::default(),
        past: Default::default(),
    };
    Ok((lock_file, daemon, fs_handle, session))
}
