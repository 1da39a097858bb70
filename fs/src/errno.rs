//! The error a file-system operation returns to its caller: a POSIX errno.
//! The model below the fuser adapter speaks only this.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const ENODEV: Errno = Errno(libc::ENODEV);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
}

impl std::fmt::Display for Errno {
    /// The C library's words for it ("No space left on device").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = std::io::Error::from_raw_os_error(self.0).to_string();
        // std appends " (os error N)"; the words are enough here.
        f.write_str(e.split(" (os error").next().unwrap_or(&e))
    }
}

pub type R<T> = Result<T, Errno>;

/// An I/O or store failure: logged here, EIO to the caller.
pub fn eio<E: std::fmt::Display>(e: E) -> Errno {
    tracing::error!("i/o error: {e}");
    Errno::EIO
}
