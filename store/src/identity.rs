//! A node's Ed25519 key. The same key signs entries and (in `net`) is the
//! iroh endpoint id, so a peer is one identity everywhere.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};

use crate::error::{Error, Result};
use crate::ids::AuthorId;

#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    pub fn generate() -> Self {
        Self::from_secret(rand::random())
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn author(&self) -> AuthorId {
        AuthorId(self.key.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// Creates a new key file (mode 0600). Refuses to overwrite an existing one:
    /// losing a key means losing the right to extend this node's chain.
    pub fn create(path: &Path) -> Result<Self> {
        let id = Self::generate();
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::IdentityExists(path.to_owned())
                } else {
                    io(e)
                }
            })?;
        f.write_all(hex::encode(id.secret_bytes()).as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(io)?;
        Ok(id)
    }

    /// Loads a key file written by [`Identity::create`]: 64 hex digits.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::BadIdentity {
            path: path.to_owned(),
            why,
        };
        let meta = fs::metadata(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        if meta.len() > 1024 {
            return Err(bad(format!("{} bytes is too long for a key", meta.len())));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "identity file is readable by others; it should be mode 0600");
        }
        let text = fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|e| bad(format!("expected 64 hex digits ({e})")))?;
        Ok(Self::from_secret(secret))
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.author())
    }
}
