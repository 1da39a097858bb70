//! How `mount` and `join` start a daemon: the options they share (address,
//! relays, discovery, who may use the mount, the HTTP API) and what they
//! turn into ([`daemon::Launch`]).

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::{daemon, home};

#[derive(clap::Args)]
pub struct MountOpts {
    #[arg(long, env = "LATTICE_SHARE", default_value = "default", value_parser = home::share_name)]
    pub share: String,
    /// Address of this node's peer endpoint (IP:PORT; port 0 picks one).
    /// Without it, the share listens on all interfaces on the port it took at
    /// its first start, so peers find it again after a restart.
    #[arg(long, env = "LATTICE_BIND")]
    pub bind: Option<std::net::SocketAddr>,
    /// Relay servers for peers that cannot reach each other directly (behind
    /// NAT or a firewall): `public` (iroh's), `off`, or relay URLs separated
    /// by commas.
    #[arg(long, env = "LATTICE_RELAY", default_value = "public")]
    pub relay: String,
    /// Publish this node's addresses to, and look peers up in, iroh's public
    /// DNS service (`on` or `off`), so that a peer whose address changed is
    /// found again.
    #[arg(long, env = "LATTICE_DNS", default_value = "on")]
    pub dns: String,
    /// Find members on the same local network by multicast DNS (`on` or `off`).
    #[arg(long, env = "LATTICE_LAN", default_value = "on")]
    pub lan: String,
    /// Let every local user use the mount, the kernel checking each file's
    /// mode for them (`auto`: on when run as root or when /etc/fuse.conf has
    /// `user_allow_other`; `on`; `off`: only the user who mounted it).
    #[arg(long, env = "LATTICE_ALLOW_OTHER", default_value = "auto")]
    pub allow_other: String,
    /// No direct paths: peers are reached through relays only (to try relays).
    #[arg(long, hide = true)]
    pub no_direct: bool,
    /// Seconds between anti-entropy rounds with a random member.
    #[arg(long, default_value_t = 30)]
    pub sync_interval: u64,
    /// The local HTTP API (see `mountctl token`): `on` (127.0.0.1, on the
    /// port the share took at its first start), `off`, or IP:PORT.
    #[arg(long, env = "LATTICE_API", default_value = "on")]
    pub api: String,
    /// Stay attached instead of running in the background.
    #[arg(long)]
    pub foreground: bool,
    /// With `join`: take every entry since the share began (its whole
    /// history, for `log`, `restore` and `mount --at` here), not a snapshot
    /// of its state now.
    #[arg(long)]
    pub full_history: bool,
}

impl MountOpts {
    pub fn launch(&self, ticket: Option<String>) -> Result<daemon::Launch> {
        Ok(daemon::Launch {
            share: self.share.clone(),
            bind: self.bind,
            ticket,
            sync_interval: Duration::from_secs(self.sync_interval.max(1)),
            reach: reach(&self.relay, &self.dns, &self.lan, !self.no_direct)?,
            allow_other: allow_other(&self.allow_other)?,
            api: api_addr(&self.api)?,
            full_history: self.full_history,
        })
    }
}

/// `--api`: None when off; port 0 means the share's kept API port.
fn api_addr(v: &str) -> Result<Option<std::net::SocketAddr>> {
    match v {
        "off" => Ok(None),
        "on" => Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))),
        a => a
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("--api {a:?}: expected on, off or IP:PORT")),
    }
}

/// Whether the mount serves every local user (`--allow-other`).
fn allow_other(v: &str) -> Result<bool> {
    let root = unsafe { libc::geteuid() } == 0;
    let permitted = root
        || std::fs::read_to_string("/etc/fuse.conf").is_ok_and(|c| c.lines().any(|l| l.trim() == "user_allow_other"));
    match v {
        "auto" => {
            if !permitted {
                eprintln!(
                    "note: only you can use this mount; to let other users (services, backups) in, add `user_allow_other` to /etc/fuse.conf and mount again"
                );
            }
            Ok(permitted)
        }
        "on" if !permitted => bail!("--allow-other on needs `user_allow_other` in /etc/fuse.conf (or running as root)"),
        "on" => Ok(true),
        "off" => Ok(false),
        other => bail!("--allow-other takes auto, on or off, not {other:?}"),
    }
}

/// `--relay` and `--dns` as the network layer takes them.
pub fn reach(relay: &str, dns: &str, lan: &str, direct: bool) -> Result<net::endpoint::Reach> {
    use net::endpoint::Relay;
    let relay = match relay {
        "public" | "on" => Relay::Public,
        "off" | "none" => Relay::Off,
        urls => Relay::Custom(urls.split(',').map(str::to_string).collect()),
    };
    let on_off = |flag: &str, x: &str| match x {
        "on" => Ok(true),
        "off" => Ok(false),
        x => Err(anyhow!("--{flag} takes on or off, not {x:?}")),
    };
    let dns = on_off("dns", dns)?;
    let lan = on_off("lan", lan)?;
    if !direct && relay == Relay::Off {
        bail!("with no direct paths and no relay, no peer can be reached");
    }
    Ok(net::endpoint::Reach {
        relay,
        dns,
        lan,
        direct,
    })
}
