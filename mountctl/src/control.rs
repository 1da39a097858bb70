//! The daemon's control socket: one request line, one JSON reply line.
//! Requests: `status`, `unmount`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

/// Sends `req` to the daemon listening on `sock` and returns its reply.
pub fn request(sock: &Path, req: &str, timeout: Duration) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("no daemon answers on {}", sock.display()))?;
    s.set_read_timeout(Some(timeout))?;
    writeln!(s, "{req}")?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .context("the daemon did not answer")?;
    serde_json::from_str(&line).context("the daemon's answer is not JSON")
}
