//! The command line: every command and option, as clap reads them (the man
//! page and shell completions are generated from here too).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::home;
use crate::launch::MountOpts;

#[derive(Parser)]
#[command(name = "mountctl", version, about = "Lattice: one folder, the same on every machine")]
pub struct Cli {
    /// This node's data folder.
    #[arg(long, global = true, env = "LATTICE_HOME")]
    pub home: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create this machine's identity.
    Init,
    /// Mount a share at DIR (a new share if this home has none by that name).
    Mount {
        dir: PathBuf,
        /// Mount the share read-only as it was at TIME ("2026-12-04 10:00",
        /// "1 hour ago": what `date -d` reads) or at ENTRY (an id from `log`
        /// or `dag`). The share must be mounted (its daemon serves it).
        #[arg(long, value_name = "TIME|ENTRY")]
        at: Option<String>,
        #[command(flatten)]
        opts: MountOpts,
    },
    /// Join a share with an invite ticket, backfill it, and mount it at DIR.
    Join {
        ticket: String,
        dir: PathBuf,
        #[command(flatten)]
        opts: MountOpts,
    },
    /// Leave the share: this node stops being a member (and its mount turns read-only).
    Leave {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// After a damaged tail was cut, write again without the lost entries
    /// (only when no peer ever got them: one that did refuses what follows).
    ForgetLostEntries {
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// Print a ticket that lets one more machine join (once).
    Invite {
        /// The new member may read but not write.
        #[arg(long)]
        read_only: bool,
        /// How long the ticket stays valid: 90s, 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        expires: String,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// The share's members: role, online, last sync, pending entries.
    Peers {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
        #[command(subcommand)]
        cmd: Option<PeersCmd>,
    },
    /// Compare what the mount shows with what its store says; list every difference.
    Check {
        dir: Option<PathBuf>,
        /// Also verify every entry (chains, signatures) and every content chunk (hashes).
        #[arg(long)]
        content: bool,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// A file's versions (who wrote each, when, its size), oldest first;
    /// with --deleted, the files deleted from the folder PATH.
    Log {
        path: PathBuf,
        #[arg(long)]
        deleted: bool,
        #[arg(long)]
        json: bool,
    },
    /// Writes an old version of a file back (a new change, which reaches
    /// every member); brings a deleted file back. VERSION: an id from `log`.
    Restore {
        path: PathBuf,
        version: String,
        /// Write it to this new path instead of over the file.
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// The entry DAG (of the share, or of the file or folder PATH) for
    /// Graphviz: `mountctl dag --dot | dot -Tsvg > dag.svg`.
    Dag {
        path: Option<PathBuf>,
        /// The newest N entries.
        #[arg(long, default_value_t = 200)]
        last: usize,
        /// Print Graphviz DOT (the only form for now; kept for scripts).
        #[arg(long)]
        dot: bool,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// This node's retention policy: `keep-history` (30d: keep every version
    /// 30 days, then the latest of each file; `forever`; `0`) and `gc-below`
    /// (free disk space under which old versions are collected by themselves).
    Config {
        key: Option<String>,
        value: Option<String>,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// Free the space of old versions the retention policy no longer keeps.
    Gc {
        /// Only say what would be freed.
        #[arg(long)]
        dry_run: bool,
        /// Keep this much history this time instead of the policy's (0, 7d, forever).
        #[arg(long)]
        keep: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// Print a shell completion script: `mountctl completions bash >
    /// /etc/bash_completion.d/mountctl`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `mountctl man > mountctl.1`.
    Man,
    /// Write what a bug report needs into one .tar.gz: status, peers, the
    /// last log lines and file sizes of every share (no file contents, no
    /// keys, no tickets).
    DebugBundle {
        /// Where to write it (default: lattice-debug-TIME.tar.gz here).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Conflict copies shown in the mount (DIR, or the share's mount).
    Conflicts {
        dir: Option<PathBuf>,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// An anti-entropy round with every member, now.
    Sync {
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// Cut this node off the network, or plug it back (for partition tests):
    /// `off`, `on`; with LATTICE_TEST_FAULTS=1 also `cut ID`, `heal [ID]`,
    /// `gossip [ID] loss=PCT dup=PCT reorder=PCT delay=MS`.
    #[command(hide = true)]
    Net {
        #[arg(required = true, num_args = 1..)]
        state: Vec<String>,
        #[arg(long, default_value = "default", value_parser = home::share_name)]
        share: String,
    },
    /// Commit everything, unmount DIR and stop its daemon (or clear a stale mount).
    Unmount { dir: PathBuf },
    /// Mounts of this home and their state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The daemon itself (used by `mount` and `join`).
    #[command(hide = true)]
    Daemon {
        dir: PathBuf,
        #[arg(long, value_parser = home::share_name)]
        share: String,
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
        #[arg(long)]
        sync_interval_ms: u64,
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long)]
        relay: String,
        #[arg(long)]
        dns: String,
        #[arg(long)]
        lan: String,
        #[arg(long)]
        no_direct: bool,
        #[arg(long)]
        allow_other: String,
        #[arg(long)]
        api: Option<std::net::SocketAddr>,
        #[arg(long)]
        full_history: bool,
    },
    /// Tokens for the local HTTP API.
    Token {
        #[command(subcommand)]
        cmd: crate::tokens::TokenCmd,
    },
}

#[derive(Subcommand)]
pub enum PeersCmd {
    /// Remove a member (its id, or a unique start of it such as the 8
    /// characters messages print): it is disconnected and refused from now on.
    Remove { id: String },
}
