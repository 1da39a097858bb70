//! `mountctl`: the Lattice daemon and every user command.

mod control;
mod daemon;
mod home;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Parser, Subcommand};

use home::{Home, absolute, is_mounted};

#[derive(Parser)]
#[command(name = "mountctl", version, about = "Lattice: one folder, the same on every machine")]
struct Cli {
    /// This node's data folder.
    #[arg(long, global = true, env = "LATTICE_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create this machine's identity.
    Init,
    /// Mount a share at DIR (a new share if this home has none by that name).
    Mount {
        dir: PathBuf,
        #[arg(long, default_value = "default")]
        share: String,
        /// Stay attached instead of running in the background.
        #[arg(long)]
        foreground: bool,
    },
    /// Commit everything, unmount DIR and stop its daemon (or clear a stale mount).
    Unmount { dir: PathBuf },
    /// Mounts of this home and their state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The daemon itself (used by `mount`).
    #[command(hide = true)]
    Daemon {
        dir: PathBuf,
        #[arg(long)]
        share: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Daemon { .. } | Cmd::Mount { foreground: true, .. });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if daemon { "info" } else { "warn" }));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
        Cmd::Mount { dir, share, foreground } => daemon::mount(&home, &dir, &share, foreground),
        Cmd::Daemon { dir, share } => daemon::run(&home, &home.share(&share), &dir, true),
        Cmd::Unmount { dir } => unmount(&home, &dir),
        Cmd::Status { json } => status(&home, json),
    }
}

fn unmount(home: &Home, dir: &std::path::Path) -> Result<()> {
    let dir = absolute(dir)?;
    let share = home
        .shares()
        .into_iter()
        .find(|s| s.mountpoint().as_deref() == Some(dir.as_path()));
    let reply = share
        .as_ref()
        .and_then(|s| control::request(&s.socket(), "unmount", Duration::from_secs(10)).ok());
    match reply {
        Some(v) => {
            let pid = v["pid"].as_u64().unwrap_or(0) as i32;
            let start = Instant::now();
            while pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
                if start.elapsed() > Duration::from_secs(120) {
                    bail!(
                        "the daemon (pid {pid}) did not finish unmounting {} within 2 minutes",
                        dir.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }
        None if is_mounted(&dir) => {
            // No daemon answers: a stale mount left by one that died.
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                bail!(
                    "cannot clear the stale mount at {}: {}",
                    dir.display(),
                    std::io::Error::last_os_error()
                );
            }
            if let Some(s) = share {
                let _ = std::fs::remove_file(s.socket());
                let _ = std::fs::remove_file(s.mountpoint_file());
            }
            eprintln!(
                "mountctl: cleared a stale mount at {} (its daemon had died)",
                dir.display()
            );
            Ok(())
        }
        None => bail!("{} is not mounted", dir.display()),
    }
}

fn status(home: &Home, json: bool) -> Result<()> {
    let mut mounts = Vec::new();
    for s in home.shares() {
        if let Ok(v) = control::request(&s.socket(), "status", Duration::from_secs(5)) {
            mounts.push(v);
        }
    }
    if json {
        println!("{}", serde_json::json!({ "home": home.dir, "mounts": mounts }));
        return Ok(());
    }
    if mounts.is_empty() {
        println!("no mounts in {}", home.dir.display());
    }
    for m in &mounts {
        println!(
            "{}  share {} ({})  pid {}  entries {}  orphans {}  conflicts {}",
            m["dir"].as_str().unwrap_or("?"),
            &m["share"].as_str().unwrap_or("?")[..8.min(m["share"].as_str().unwrap_or("?").len())],
            m["share_name"].as_str().unwrap_or("?"),
            m["pid"],
            m["entries"],
            m["orphans"],
            m["conflicts"],
        );
    }
    Ok(())
}
