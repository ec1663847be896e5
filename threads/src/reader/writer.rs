//! Nonblocking writer and nonblocking connect for instance UNIX sockets. Both
//! run on the dispatcher thread, which must never block on a guest.
//!
//! The socket is shared with a blocking reader thread through `try_clone()`,
//! and both clones share one open file description. Setting `O_NONBLOCK` on it
//! would therefore also make the reader nonblocking, so writes instead pass
//! `MSG_DONTWAIT` per call. `MSG_NOSIGNAL` turns a write to a closed peer into
//! `EPIPE` instead of a process-killing `SIGPIPE`.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("peer buffer full")]
    WouldBlock,
    #[error("partial write of {written} bytes")]
    Partial { written: usize },
    /// EPIPE, ECONNRESET or ENOTCONN: the guest side is gone.
    #[error("channel closed")]
    Closed,
    #[error("write failed")]
    Io(#[source] io::Error),
}

/// Owned by the dispatcher; `try_write` never blocks.
#[derive(Debug)]
pub struct ChannelWriter {
    stream: UnixStream,
}

impl ChannelWriter {
    /// Takes a `try_clone()` of the stream whose other clone went to the reader.
    pub fn new(stream: UnixStream) -> Self {
        ChannelWriter { stream }
    }

    /// Writes all of `bytes` or reports why not. A `Partial` write leaves the
    /// peer with a truncated message; the caller decides whether to close.
    pub fn try_write(&self, bytes: &[u8]) -> Result<(), WriteError> {
        loop {
            // SAFETY: the fd is owned by `self.stream` and stays open for the
            // call; the pointer and length describe the live `bytes` slice.
            let r = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                return Err(match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(code) if code == libc::EAGAIN || code == libc::EWOULDBLOCK => {
                        WriteError::WouldBlock
                    }
                    Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN) => WriteError::Closed,
                    _ => WriteError::Io(e),
                });
            }
            // r >= 0 was checked above, so the cast cannot wrap.
            let written = r as usize;
            return if written < bytes.len() {
                Err(WriteError::Partial { written })
            } else {
                Ok(())
            };
        }
    }

    /// shutdown(Both): wakes the reader, which sees EOF and sends `Closed`.
    pub fn shutdown(&self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Both) {
            // ENOTCONN when the peer already went away; nothing left to wake.
            log::debug!("shutdown of instance channel: {e}");
        }
    }
}

/// Connects without ever blocking: a nonblocking socket, `connect` (EAGAIN or
/// EINPROGRESS, i.e. a full listen backlog, gives an error of kind
/// `WouldBlock`), then back to blocking mode for the reader thread.
pub fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain integers and arrays; all-zero is valid and
    // also provides the NUL terminator after the path.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unusable unix socket path {}", path.display()),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }

    // SAFETY: plain syscall; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(code) if code == libc::EAGAIN || code == libc::EINPROGRESS => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("connect to {} would block", path.display()),
            ),
            _ => e,
        });
    }

    // SAFETY: fcntl on an fd we own; results are checked.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn write_reaches_peer() {
        let (mut peer, ours) = UnixStream::pair().unwrap();
        let w = ChannelWriter::new(ours);
        w.try_write(b"hello\n").unwrap();
        let mut buf = [0u8; 6];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello\n");
    }

    #[test]
    fn peer_closed_is_closed() {
        let (peer, ours) = UnixStream::pair().unwrap();
        drop(peer);
        let w = ChannelWriter::new(ours);
        assert!(matches!(w.try_write(b"x"), Err(WriteError::Closed)));
    }

    #[test]
    fn full_buffer_would_block_without_blocking() {
        let (_peer, ours) = UnixStream::pair().unwrap();
        let w = ChannelWriter::new(ours);
        let chunk = [b'x'; 4096];
        // The peer never reads; the kernel buffer is finite, so this must end
        // in WouldBlock (possibly after a partial write) rather than hang.
        let mut saw_would_block = false;
        for _ in 0..100_000 {
            match w.try_write(&chunk) {
                Ok(()) | Err(WriteError::Partial { .. }) => {}
                Err(WriteError::WouldBlock) => {
                    saw_would_block = true;
                    break;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(saw_would_block);
    }

    #[test]
    fn connect_to_listener() {
        let dir = TempDir::new("connect");
        let path = dir.path().join("sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut client = connect_unix(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        // Back in blocking mode: a read waits for data instead of EAGAIN.
        std::io::Write::write_all(&mut server, b"hi").unwrap();
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn connect_errors() {
        let dir = TempDir::new("connect-missing");
        let e = connect_unix(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let long = dir.path().join("x".repeat(200));
        assert_eq!(
            connect_unix(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
