//! The daemon's log file. Logging must never take the daemon down: a write
//! that fails (a full disk) is dropped, not reported, and the file is
//! reopened later. The file is rotated past [`MAX_BYTES`] (one old file kept,
//! `daemon.log.1`), and a message repeated back to back is written once, then
//! counted.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Past this size the log is rotated.
pub const MAX_BYTES: u64 = 10 << 20;
/// A message repeated this long is counted in the log at least this often.
const REPEAT_SUMMARY: Duration = Duration::from_secs(60);

struct State {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    /// The last message, without its time stamp.
    last: Vec<u8>,
    repeats: u64,
    since: Instant,
    also_stderr: bool,
}

/// A `MakeWriter` for tracing: one event per write, written whole.
#[derive(Clone)]
pub struct LogFile(Arc<Mutex<State>>);

impl LogFile {
    /// Appends to `path`; `also_stderr` copies every line to stderr (a
    /// daemon in the foreground).
    pub fn new(path: PathBuf, also_stderr: bool) -> LogFile {
        LogFile(Arc::new(Mutex::new(State {
            path,
            file: None,
            size: 0,
            last: Vec::new(),
            repeats: 0,
            since: Instant::now(),
            also_stderr,
        })))
    }

    fn line(&self, line: &[u8]) {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // "2026-12-03T10:01:31.123Z  WARN target: message": compare from the level on.
        let body = line.splitn(2, |b| *b == b' ').nth(1).unwrap_or(line).to_vec();
        if body == st.last {
            st.repeats += 1;
            if st.since.elapsed() < REPEAT_SUMMARY {
                return;
            }
        }
        if st.repeats > 0 {
            let n = st.repeats;
            st.repeats = 0;
            st.emit(format!("(the message above was repeated {n} more times)\n").as_bytes());
        }
        st.since = Instant::now();
        if body != st.last {
            st.last = body;
            st.emit(line);
        }
    }
}

impl State {
    fn emit(&mut self, bytes: &[u8]) {
        if self.also_stderr {
            let _ = io::stderr().write_all(bytes);
        }
        if self.file.is_none() {
            self.file = OpenOptions::new().create(true).append(true).open(&self.path).ok();
            self.size = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
        }
        let Some(f) = self.file.as_mut() else { return };
        if f.write_all(bytes).is_err() {
            // A full disk or a vanished file: try again with the next line.
            self.file = None;
            return;
        }
        self.size += bytes.len() as u64;
        if self.size > MAX_BYTES {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
            self.file = None;
        }
    }
}

/// One event's bytes, written as one line when tracing is done with them.
pub struct Event {
    log: LogFile,
    buf: Vec<u8>,
}

impl Write for Event {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.log.line(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = Event;
    fn make_writer(&'a self) -> Event {
        Event {
            log: self.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_the_file_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.log");
        let log = LogFile::new(p.clone(), false);
        for i in 0..1000 {
            log.line(format!("2026-01-01T00:00:{i:02}Z ERROR x: the same failure\n").as_bytes());
        }
        log.line(b"2026-01-01T00:01:00Z INFO x: something else\n");
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("the same failure").count(), 1, "{text}");
        assert!(text.contains("repeated 999 more times"), "{text}");
        let big = "y".repeat(1 << 20);
        for i in 0..12 {
            log.line(format!("2026 INFO x: {i} {big}\n").as_bytes());
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= MAX_BYTES + (2 << 20));
        assert!(dir.path().join("daemon.log.1").exists());
    }
}
