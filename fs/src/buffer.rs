//! The content of a file being written: held in memory up to a bound, then
//! spilled to an unnamed temporary file, so a 1 GiB copy costs disk, not RAM.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Past this, a buffer moves to a temporary file.
pub const MEMORY_LIMIT: u64 = 8 << 20;

pub enum Buffer {
    Mem(Vec<u8>),
    File { file: File, len: u64 },
}

impl Buffer {
    pub fn new() -> Self {
        Buffer::Mem(Vec::new())
    }

    pub fn len(&self) -> u64 {
        match self {
            Buffer::Mem(v) => v.len() as u64,
            Buffer::File { len, .. } => *len,
        }
    }

    fn spill_if_needed(&mut self, new_len: u64, dir: &PathBuf) -> io::Result<()> {
        if let Buffer::Mem(v) = self {
            if new_len > MEMORY_LIMIT {
                let mut file = tempfile::tempfile_in(dir)?;
                file.write_all(v)?;
                *self = Buffer::File {
                    file,
                    len: v.len() as u64,
                };
            }
        }
        Ok(())
    }

    pub fn write_at(&mut self, off: u64, data: &[u8], spill_dir: &PathBuf) -> io::Result<()> {
        let end = off + data.len() as u64;
        self.spill_if_needed(end, spill_dir)?;
        match self {
            Buffer::Mem(v) => {
                if v.len() < end as usize {
                    v.resize(end as usize, 0);
                }
                v[off as usize..end as usize].copy_from_slice(data);
            }
            Buffer::File { file, len } => {
                file.write_all_at(data, off)?;
                *len = (*len).max(end);
            }
        }
        Ok(())
    }

    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.len();
        if off >= len {
            return Ok(0);
        }
        let n = ((len - off) as usize).min(buf.len());
        match self {
            Buffer::Mem(v) => buf[..n].copy_from_slice(&v[off as usize..off as usize + n]),
            Buffer::File { file, .. } => file.read_exact_at(&mut buf[..n], off)?,
        }
        Ok(n)
    }

    pub fn set_len(&mut self, new_len: u64, spill_dir: &PathBuf) -> io::Result<()> {
        self.spill_if_needed(new_len, spill_dir)?;
        match self {
            Buffer::Mem(v) => v.resize(new_len as usize, 0),
            Buffer::File { file, len } => {
                file.set_len(new_len)?;
                *len = new_len;
            }
        }
        Ok(())
    }

    /// Streams the whole content (for chunking at commit).
    pub fn reader(&mut self) -> io::Result<Box<dyn Read + '_>> {
        Ok(match self {
            Buffer::Mem(v) => Box::new(v.as_slice()),
            Buffer::File { file, len } => {
                file.seek(SeekFrom::Start(0))?;
                Box::new(Read::take(&*file, *len))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_the_limit_and_reads_back() {
        let dir = tempfile::tempdir().unwrap().keep();
        let mut b = Buffer::new();
        b.write_at(0, b"hello", &dir).unwrap();
        assert!(matches!(b, Buffer::Mem(_)));
        b.write_at(MEMORY_LIMIT, b"tail", &dir).unwrap();
        assert!(matches!(b, Buffer::File { .. }));
        assert_eq!(b.len(), MEMORY_LIMIT + 4);
        let mut buf = [0u8; 5];
        b.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        let mut all = Vec::new();
        b.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all.len() as u64, MEMORY_LIMIT + 4);
        assert_eq!(&all[all.len() - 4..], b"tail");
        b.set_len(3, &dir).unwrap();
        assert_eq!(b.len(), 3);
    }
}
