//! Blocking UDP receiver thread (named by the caller, e.g. "udp-agent"): one
//! `recv_from` per datagram, forwarded as a typed `Datagram`. Whether the
//! bytes are a valid message is the dispatcher's decision.
//!
//! There are no read timeouts: to stop, the handle sets a flag and sends an
//! empty datagram to the socket itself, which wakes the blocked `recv_from`.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::guard::{spawn_named, ThreadExit};
use crate::wake_addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddr,
    /// Up to `max_len + 1` bytes; longer than `max_len` means the datagram
    /// was oversized (and truncated by the kernel).
    pub bytes: Vec<u8>,
}

/// Dropping it sets the stop flag, wakes the thread with an empty datagram to
/// the socket's own address and joins.
#[derive(Debug)]
pub struct UdpHandle {
    stop: Arc<AtomicBool>,
    wake_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl UdpHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.wake_addr
    }
}

impl Drop for UdpHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return;
        };
        if thread.is_finished() {
            let _ = thread.join();
            return;
        }
        let bind: SocketAddr = match self.wake_addr {
            SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let woken = UdpSocket::bind(bind).and_then(|s| s.send_to(&[], self.wake_addr));
        match woken {
            Ok(_) => {
                if thread.join().is_err() {
                    log::error!("udp thread panicked outside its guard");
                }
            }
            // Joining now could hang forever; a detached thread is the lesser evil.
            Err(e) => log::warn!("cannot wake udp thread, detaching it: {e}"),
        }
    }
}

/// Spawns thread `name`; see the module doc. The buffer is `max_len + 1`
/// bytes so the receiver can tell an oversized datagram. `map` runs on the
/// thread (a decoder, possibly holding read-only configuration such as a key).
pub fn spawn_udp_receiver<E: Send + 'static>(
    name: &str,
    socket: UdpSocket,
    max_len: usize,
    tx: Sender<E>,
    map: impl Fn(Datagram) -> E + Send + 'static,
    on_exit: fn(ThreadExit) -> E,
) -> std::io::Result<UdpHandle> {
    let wake = wake_addr(socket.local_addr()?);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = spawn_named(name, None, tx.clone(), on_exit, move || {
        let mut buf = vec![0u8; max_len.saturating_add(1)];
        loop {
            let received = socket.recv_from(&mut buf);
            if thread_stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match received {
                Ok((n, from)) => {
                    let msg = Datagram { from, bytes: buf[..n].to_vec() };
                    if tx.send(map(msg)).is_err() {
                        return Ok(());
                    }
                }
                // ICMP errors from earlier sends surface here on Linux; they
                // say nothing about this socket's ability to receive.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => return Err(format!("udp receive failed: {e}")),
            }
        }
    })?;
    Ok(UdpHandle { stop, wake_addr: wake, thread: Some(thread) })
}

/// Raises the socket's receive buffer to `bytes` (as root beyond
/// `net.core.rmem_max`), so a burst of datagrams (a READY replay, a fleet's
/// events) waits in the kernel instead of being dropped while the receiver
/// thread is not scheduled.
pub fn raise_recv_buffer(sock: &UdpSocket, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let mut last = std::io::Error::from_raw_os_error(libc::EINVAL);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket fd and a pointer to an int of the given size.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        last = std::io::Error::last_os_error();
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::ExitReason;
    use crate::testutil::within;
    use crossbeam_channel::unbounded;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    #[derive(Debug, PartialEq)]
    enum Ev {
        D(Datagram),
        Exit(ThreadExit),
    }

    #[test]
    fn delivers_with_source_and_flags_oversize() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let (tx, rx) = unbounded();
        let h = spawn_udp_receiver("udp-test", sock, 8, tx, Ev::D, Ev::Exit).unwrap();
        assert_eq!(h.local_addr(), addr);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", addr).unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            Ev::D(Datagram { from: client.local_addr().unwrap(), bytes: b"hello".to_vec() })
        );
        client.send_to(&[b'x'; 100], addr).unwrap();
        match rx.recv_timeout(WAIT).unwrap() {
            Ev::D(d) => assert_eq!(d.bytes.len(), 9, "oversize shows as max_len + 1"),
            other => panic!("unexpected {other:?}"),
        }
        within(WAIT, move || drop(h));
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            Ev::Exit(ThreadExit { name: "udp-test".into(), reason: ExitReason::Finished })
        );
    }

    #[test]
    fn drop_wakes_unspecified_bind() {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let (tx, rx) = unbounded();
        let h = spawn_udp_receiver("udp-any", sock, 64, tx, Ev::D, Ev::Exit).unwrap();
        within(WAIT, move || drop(h));
        assert!(matches!(rx.recv_timeout(WAIT).unwrap(), Ev::Exit(ThreadExit { reason: ExitReason::Finished, .. })));
    }

    #[test]
    fn wake_addr_maps_unspecified_to_loopback() {
        let v6: SocketAddr = "[::]:99".parse().unwrap();
        assert_eq!(wake_addr(v6), "[::1]:99".parse().unwrap());
        let v4: SocketAddr = "10.0.0.1:5".parse().unwrap();
        assert_eq!(wake_addr(v4), v4);
    }

    #[test]
    fn receive_buffer_can_be_raised() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        // As root the forced size applies; otherwise the sysctl cap does,
        // and the call still succeeds.
        super::raise_recv_buffer(&sock, 1 << 20).unwrap();
    }
}
