//! `mountctl`: the Lattice daemon and every user command.

mod api;
mod bundle;
mod cli;
mod control;
mod daemon;
mod dag;
mod directory;
mod history;
mod home;
mod launch;
mod log;
mod past;
mod progress;
mod serve;
mod show;
mod space;
mod stale;
mod tokens;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use clap::Parser;

use cli::{Cli, Cmd, PeersCmd};
use home::{Home, absolute, is_mounted};
use launch::reach;

/// `90s`, `30m`, `24h`, `7d` -> milliseconds.
fn parse_duration(s: &str) -> Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    let ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" | "" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{s:?} is not a duration like 90s, 30m, 24h or 7d"),
    };
    Ok(n * ms)
}

/// Sends a request to the daemon of `share`, turning its error into ours.
fn ask(home: &Home, share: &str, req: &str) -> Result<serde_json::Value> {
    let sd = home.share(share);
    if std::os::unix::net::UnixStream::connect(sd.socket()).is_err() {
        bail!(
            "share {share:?} is not mounted in {} (run `mountctl mount DIR` first)",
            home.dir.display()
        );
    }
    // `sync` may move a lot both ways (each member has up to 300 s).
    let wait = if req == "sync" { 330 } else { 120 };
    let v = control::request(&sd.socket(), req, Duration::from_secs(wait))
        .with_context(|| format!("the daemon of share {share:?} did not answer {req:?} within {wait} s"))?;
    if let Some(e) = v["error"].as_str() {
        bail!("{e}");
    }
    Ok(v)
}

fn main() {
    let cli = Cli::parse();
    // Generated from the definitions above, so they never go stale.
    match &cli.cmd {
        Cmd::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "mountctl",
                &mut std::io::stdout(),
            );
            return;
        }
        Cmd::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            if let Err(e) = page.render(&mut std::io::stdout()) {
                eprintln!("mountctl: cannot write the man page: {e}");
                std::process::exit(1);
            }
            return;
        }
        _ => {}
    }
    // The daemon (and one in the foreground, which also copies to stderr)
    // logs to its share's daemon.log; every other command to stderr.
    let log_to = match &cli.cmd {
        Cmd::Daemon { share, .. } => Some((share.clone(), false)),
        Cmd::Mount { opts, .. } | Cmd::Join { opts, .. } if opts.foreground => Some((opts.share.clone(), true)),
        _ => None,
    };
    let log_file = log_to.and_then(|(share, fg)| {
        let sd = Home::resolve(cli.home.clone()).ok()?.share(&share);
        std::fs::create_dir_all(&sd.dir).ok()?;
        Some(log::LogFile::new(sd.log(), fg))
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if log_file.is_some() { "info" } else { "warn" }));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false);
    match log_file {
        Some(f) => {
            fmt.with_ansi(false).with_writer(f).init();
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                tracing::error!("the daemon panicked: {info}");
                default(info);
            }));
        }
        None => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    if let Err(e) = run(cli) {
        eprintln!("mountctl: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let home = Home::resolve(cli.home)?;
    match cli.cmd {
        Cmd::Init => {
            std::fs::create_dir_all(&home.dir)?;
            let id = store::Identity::create(&home.identity_path()).map_err(|e| match e {
                store::Error::IdentityExists(_) => {
                    anyhow!("this machine already has an identity in {}", home.dir.display())
                }
                e => e.into(),
            })?;
            println!("{}", id.author());
            Ok(())
        }
        Cmd::Mount { dir, opts, at: Some(w) } => past::mount(&home, &dir, &opts.share, &w),
        Cmd::Mount { dir, opts, at: None } => daemon::mount(&home, &dir, &opts.launch(None)?, opts.foreground),
        Cmd::Join { ticket, dir, opts } => daemon::mount(&home, &dir, &opts.launch(Some(ticket))?, opts.foreground),
        Cmd::Daemon {
            dir,
            share,
            bind,
            sync_interval_ms,
            ticket,
            relay,
            dns,
            lan,
            no_direct,
            allow_other,
            api,
            full_history,
        } => {
            let l = daemon::Launch {
                full_history,
                share: share.clone(),
                bind,
                ticket,
                sync_interval: Duration::from_millis(sync_interval_ms),
                reach: reach(&relay, &dns, &lan, !no_direct)?,
                allow_other: allow_other == "on",
                api,
            };
            daemon::run(&home, &home.share(&share), &dir, &l, true)
        }
        Cmd::Token { cmd } => tokens::run(&home, cmd, parse_duration),
        Cmd::Invite {
            read_only,
            expires,
            share,
        } => {
            let role = if read_only { "reader" } else { "writer" };
            let v = ask(&home, &share, &format!("invite {role} {}", parse_duration(&expires)?))?;
            println!("{}", v["ticket"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Peers { json, share, cmd } => match cmd {
            Some(PeersCmd::Remove { id }) => {
                ask(&home, &share, &format!("remove {id}"))?;
                Ok(())
            }
            None => {
                let v = ask(&home, &share, "peers")?;
                if json {
                    println!("{v}");
                } else {
                    for p in v["peers"].as_array().into_iter().flatten() {
                        println!("{}", show::peer_line(p));
                    }
                }
                Ok(())
            }
        },
        Cmd::Check { dir, share, content } => {
            let share = share_of(&home, dir, share)?;
            let v = ask(&home, &share, if content { "check content" } else { "check" })?;
            if content {
                println!("verified {} entries and {} content chunks", v["entries"], v["chunks"]);
            }
            let diffs = v["differences"].as_array().cloned().unwrap_or_default();
            for d in &diffs {
                println!("{}", d.as_str().unwrap_or("?"));
            }
            if !diffs.is_empty() {
                bail!(
                    "{} differences between the mount at {} and its store",
                    diffs.len(),
                    v["dir"].as_str().unwrap_or("?")
                );
            }
            println!(
                "{}: the mount shows exactly what the store holds",
                v["dir"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Cmd::Log { path, deleted, json } => history::log(&home, &path, deleted, json),
        Cmd::Restore { path, version, to } => history::restore(&home, &path, &version, to.as_deref()),
        Cmd::Completions { .. } | Cmd::Man => Ok(()),
        Cmd::Config { key, value, share } => space::config(&home, &share, key.as_deref(), value.as_deref()),
        Cmd::Gc {
            dry_run,
            keep,
            json,
            share,
        } => space::gc(&home, &share, dry_run, keep.as_deref(), json),
        Cmd::DebugBundle { out } => {
            let p = bundle::write(&home, out)?;
            println!("{}", p.display());
            Ok(())
        }
        Cmd::Dag {
            path,
            last,
            dot: _,
            share,
        } => history::dag(&home, path.as_deref(), last, share),
        Cmd::Conflicts { dir, share } => {
            let share = share_of(&home, dir, share)?;
            let v = ask(&home, &share, "conflicts")?;
            let root = v["dir"].as_str().unwrap_or("");
            for c in v["conflicts"].as_array().into_iter().flatten() {
                println!(
                    "{root}{}\t(a version of {root}{})",
                    c["copy"].as_str().unwrap_or("?"),
                    c["of"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        Cmd::Leave { yes, share } => {
            if !yes {
                eprint!("Leave share {share:?}? This node will no longer get or send its changes. [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("not leaving");
                }
            }
            ask(&home, &share, "leave")?;
            println!("left share {share:?}; its mount is read-only now (unmount it with `mountctl unmount DIR`)");
            Ok(())
        }
        Cmd::ForgetLostEntries { yes, share } => {
            if !yes {
                bail!("this can fork this node's chain if any peer has the lost entries; add --yes if none does");
            }
            ask(&home, &share, "forget-lost-entries")?;
            println!("this node writes again from the entries it has");
            Ok(())
        }
        Cmd::Sync { share } => {
            let v = ask(&home, &share, "sync")?;
            for r in v["synced"].as_array().into_iter().flatten() {
                match r["error"].as_str() {
                    Some(e) => println!("{}: {e}", r["peer"].as_str().unwrap_or("?")),
                    None => println!("{}: {} entries", r["peer"].as_str().unwrap_or("?"), r["applied"]),
                }
            }
            Ok(())
        }
        Cmd::Net { state, share } => {
            ask(&home, &share, &format!("net {}", state.join(" ")))?;
            Ok(())
        }
        Cmd::Unmount { dir } => unmount(&home, &dir),
        Cmd::Status { json } => show::status(&home, json),
    }
}

/// The share mounted at `dir`, or `share`.
fn share_of(home: &Home, dir: Option<PathBuf>, share: String) -> Result<String> {
    match dir {
        Some(d) => {
            let d = home::absolute(&d)?;
            home.shares()
                .into_iter()
                .find(|s| s.mountpoint().as_deref() == Some(d.as_path()))
                .map(|s| s.name)
                .ok_or_else(|| anyhow!("{} is not a mount of {}", d.display(), home.dir.display()))
        }
        None => Ok(share),
    }
}

/// How long `unmount` waits for the daemon to write everything and let go.
const UNMOUNT_WAIT: Duration = Duration::from_secs(600);

fn unmount(home: &Home, dir: &std::path::Path) -> Result<()> {
    let dir = absolute(dir)?;
    if let Some(share) = past::share_of_past(&dir) {
        return past::unmount(home, &dir, &share);
    }
    let share = home
        .shares()
        .into_iter()
        .find(|s| s.mountpoint().as_deref() == Some(dir.as_path()));
    let pid: i32 = share
        .as_ref()
        .and_then(|s| std::fs::read_to_string(s.lock()).ok())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    // The daemon answers once it has unmounted and written every change. A
    // dead or dying one is not asked: its socket may still accept, but
    // nobody would answer.
    let gone = pid > 0 && (stale::daemon_gone(pid) || share.as_ref().is_some_and(|s| stale::lock_free(&s.lock())));
    let reply = share
        .as_ref()
        .filter(|s| s.socket().exists() && !gone)
        .map(|s| control::request(&s.socket(), "unmount", UNMOUNT_WAIT));
    match reply {
        Some(Ok(v)) => {
            if let Some(e) = v["error"].as_str() {
                bail!(
                    "{} is unmounted, but {e}; see {}",
                    dir.display(),
                    share.map(|s| s.log().display().to_string()).unwrap_or_default()
                );
            }
            // A daemon that exited is gone even while nobody has reaped it
            // (a zombie still answers kill(pid, 0)).
            let start = Instant::now();
            while pid > 0 && !stale::daemon_gone(pid) {
                if start.elapsed() > Duration::from_secs(60) {
                    bail!("the daemon (pid {pid}) wrote everything but did not exit");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }
        Some(Err(e)) if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 && !is_mounted(&dir) => bail!(
            "{} is detached, but the daemon (pid {pid}) is still finishing: a process still uses the mount ({e:#})",
            dir.display()
        ),
        Some(Err(_)) | None if is_mounted(&dir) => {
            // No daemon answers. Only a stale mount of this home's own share
            // is cleared; anything else at DIR is someone else's.
            let ours = share.as_ref().is_some_and(|s| {
                home::mount_entry(&dir).is_some_and(|(fstype, source)| {
                    (fstype == "fuse" || fstype.starts_with("fuse.")) && source == s.mount_source()
                })
            });
            if !ours {
                let what = home::mount_entry(&dir).map_or("something".into(), |(t, s)| format!("a {t} mount of {s}"));
                bail!(
                    "{} is not a mount of {} ({what} is there); not touching it",
                    dir.display(),
                    home.dir.display()
                );
            }
            if pid > 0 && !gone {
                bail!(
                    "the daemon of {} (pid {pid}) is running but does not answer; not touching its mount",
                    dir.display()
                );
            }
            // Processes blocked on the dead mount fail now instead of never.
            if let Err(e) = stale::abort_connection(&dir) {
                eprintln!("mountctl: {e:#}; detaching the mount anyway");
            }
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                bail!(
                    "cannot clear the stale mount at {}: {}",
                    dir.display(),
                    std::io::Error::last_os_error()
                );
            }
            if let Some(s) = share {
                // The dying daemon lets go of its lock once the abort has
                // freed its last thread: wait, so that `mount` works next.
                let start = Instant::now();
                while !stale::lock_free(&s.lock()) && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = std::fs::remove_file(s.socket());
                let _ = std::fs::remove_file(s.mountpoint_file());
            }
            eprintln!(
                "mountctl: cleared a stale mount at {} (its daemon had died)",
                dir.display()
            );
            Ok(())
        }
        Some(Err(_)) | None => bail!("{} is not mounted", dir.display()),
    }
}
