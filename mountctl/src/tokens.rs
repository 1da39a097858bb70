//! API tokens: `HOME/tokens.json`, one record per token, holding only a
//! blake3 hash of each secret. A token is `lattice_<id>_<secret>`: the id
//! finds the record, the secret is checked against its hash. `mountctl token
//! create` prints a token once; `list` shows records; `revoke` deletes one.
//! The daemon looks at the file at every request (a `stat`, and a read when
//! it changed), so a revocation holds at once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    R,
    W,
    Rw,
}

impl Perm {
    pub fn parse(s: &str) -> Result<Perm> {
        match s {
            "r" => Ok(Perm::R),
            "w" => Ok(Perm::W),
            "rw" => Ok(Perm::Rw),
            _ => bail!("{s:?} is not a permission: r, w or rw"),
        }
    }

    pub fn reads(self) -> bool {
        self != Perm::W
    }

    pub fn writes(self) -> bool {
        self != Perm::R
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// The share's name in this home.
    pub share: String,
    pub perm: Perm,
    pub created_ms: u64,
    /// 0: never.
    pub expires_ms: u64,
    /// blake3 of the secret, hex.
    pub hash: String,
}

pub fn file(home: &Path) -> PathBuf {
    home.join("tokens.json")
}

/// Holds `HOME/tokens.lock` while a `create` or `revoke` reads, changes and
/// writes the file, so that two at once cannot undo each other (a revocation
/// written back by a concurrent create).
struct Locked {
    /// The lock is the open file's: it goes when this is dropped.
    _file: std::fs::File,
}

impl Locked {
    fn take(home: &Path) -> Result<Locked> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(home.join("tokens.lock"))?;
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot lock the token file");
        }
        Ok(Locked { _file: f })
    }
}

pub fn load(home: &Path) -> Result<Vec<Record>> {
    let p = file(home);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{} is malformed", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Writes the records by rename, mode 0600 (hashes only, but still a list of
/// who may do what).
fn save(home: &Path, records: &[Record]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = file(home);
    let tmp = p.with_extension(format!("json.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(records)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

fn hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Makes a token; returns it (the only time its secret is shown) and its record.
pub fn create(home: &Path, share: &str, perm: Perm, ttl_ms: Option<u64>) -> Result<(String, Record)> {
    let _lock = Locked::take(home)?;
    let mut records = load(home)?;
    let id = loop {
        let id = hex::encode(rand::random::<[u8; 4]>());
        if records.iter().all(|r| r.id != id) {
            break id;
        }
    };
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let now = store::hlc::wall_ms();
    let r = Record {
        id: id.clone(),
        share: share.to_string(),
        perm,
        created_ms: now,
        expires_ms: ttl_ms.map_or(0, |t| now + t),
        hash: hash(&secret),
    };
    records.push(r.clone());
    save(home, &records)?;
    Ok((format!("lattice_{id}_{secret}"), r))
}

pub fn revoke(home: &Path, id: &str) -> Result<()> {
    let _lock = Locked::take(home)?;
    let mut records = load(home)?;
    let before = records.len();
    records.retain(|r| r.id != id);
    if records.len() == before {
        bail!("no token {id:?} (see `mountctl token list`)");
    }
    save(home, &records)
}

/// The record of a presented token among `records`, or why it is not
/// accepted (all answer 401).
pub fn check(records: &[Record], presented: &str) -> Result<Record> {
    let rest = presented
        .strip_prefix("lattice_")
        .ok_or_else(|| anyhow!("not a Lattice token"))?;
    let (id, secret) = rest.split_once('_').ok_or_else(|| anyhow!("not a Lattice token"))?;
    let r = records
        .iter()
        .find(|r| r.id == id)
        .cloned()
        .ok_or_else(|| anyhow!("unknown or revoked token"))?;
    // Hashes of equal length, compared whole: no early exit on the secret.
    let (a, b) = (hash(secret), r.hash.clone());
    if a.len() != b.len() || a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0 {
        bail!("unknown or revoked token");
    }
    if r.expires_ms != 0 && store::hlc::wall_ms() >= r.expires_ms {
        bail!("the token expired");
    }
    Ok(r)
}

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Make a token and print it (the only time it is shown).
    Create {
        #[arg(long, default_value = "default", value_parser = crate::home::share_name)]
        share: String,
        /// r (read), w (write and delete) or rw.
        #[arg(long)]
        perm: String,
        /// How long it stays valid: 90s, 30m, 24h, 7d (default: until revoked).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Tokens of this home: id, share, permission, expiry (never secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token at once (its id, as `list` shows it).
    Revoke { id: String },
}

pub fn run(home: &crate::home::Home, cmd: TokenCmd, duration: fn(&str) -> Result<u64>) -> Result<()> {
    match cmd {
        TokenCmd::Create { share, perm, expires } => {
            if !home.share(&share).store().exists() {
                bail!("this home holds no share named {share:?}");
            }
            let ttl = expires.as_deref().map(duration).transpose()?;
            let (token, _) = create(&home.dir, &share, Perm::parse(&perm)?, ttl)?;
            println!("{token}");
            Ok(())
        }
        TokenCmd::List { json } => {
            let records = load(&home.dir)?;
            if json {
                let shown: Vec<_> = records
                    .iter()
                    .map(|r| serde_json::json!({ "id": r.id, "share": r.share, "perm": r.perm, "created_ms": r.created_ms, "expires_ms": r.expires_ms }))
                    .collect();
                println!("{}", serde_json::Value::Array(shown));
            } else {
                for r in &records {
                    let perm = serde_json::to_value(r.perm)?;
                    let expires = match r.expires_ms {
                        0 => "never expires".to_string(),
                        t => format!("expires in {} s", t.saturating_sub(store::hlc::wall_ms()) / 1000),
                    };
                    println!("{}\t{}\t{}\t{expires}", r.id, r.share, perm.as_str().unwrap_or("?"));
                }
            }
            Ok(())
        }
        TokenCmd::Revoke { id } => revoke(&home.dir, &id),
    }
}
