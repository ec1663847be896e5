//! The host channel thread ("channel"): opens or accepts the host link,
//! reads it, splits lines and decodes them into `Event::Host`, and reports
//! hang-ups and reconnections. No domain decisions.
//!
//! Three modes (spec guest-side §3): the virtio-serial character device
//! (hang-up is polled for, and the port is re-polled every second until the
//! host is back: §3.3 plus the optional retry of Q7); a UNIX socket the
//! daemon connects to as a client, re-connected every `retry` after a
//! hang-up (fix Q7); and `--listen`, where the daemon owns a listening
//! socket and the host connects to it, as guestServer does to QEMU's.
//!
//! The thread wakes every 250 ms to notice that its stop sender was dropped.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use gh_threads::framer::{Frame, LineFramer};
use gh_threads::guard::spawn_named;
use gh_threads::reader::ChannelWriter;

use super::events::{Event, HostWriter};
use crate::wire::guest::{decode_host, Decoded};

const READ_CHUNK: usize = 4096;
const MAX_LINE: usize = 4096;
const POLL_MS: i32 = 250;

/// How the host link is reached.
#[derive(Debug)]
pub enum ChannelMode {
    /// Connected at start-up by `main`; reconnect to `path` after hang-ups.
    Connect { stream: UnixStream, path: PathBuf },
    /// Wait for the host to connect to this listener.
    Listen(UnixListener),
    /// The character device.
    Device(File),
}

/// Dropping it stops the thread and joins it.
#[derive(Debug)]
pub struct ChannelHandle {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        // Disconnect first; the thread notices within one poll period.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Spawns thread "channel".
pub fn spawn_channel(mode: ChannelMode, retry: Duration, tx: Sender<Event>) -> io::Result<ChannelHandle> {
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let exit_tx = tx.clone();
    let thread = spawn_named("channel", None, exit_tx, Event::ThreadExited, move || {
        let ctx = Ctx { tx, stop: stop_rx };
        match mode {
            Mode::Connect { stream, path } => ctx.connect_loop(stream, path, retry),
            Mode::Listen(l) => ctx.listen_loop(l),
            Mode::Device(f) => ctx.device_loop(f),
        }
        .map_err(|e| e.to_string())
    })?;
    Ok(ChannelHandle { stop: Some(stop_tx), thread: Some(thread) })
}

use ChannelMode as Mode;

struct Ctx {
    tx: Sender<Event>,
    stop: Receiver<()>,
}

/// Why a read loop ended.
enum End {
    Stop,
    HangUp,
}

impl Ctx {
    fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps `d` unless stopped first; true when stopped.
    fn sleep(&self, d: Duration) -> bool {
        matches!(self.stop.recv_timeout(d), Err(crossbeam_channel::RecvTimeoutError::Disconnected))
    }

    fn send(&self, e: Event) -> bool {
        self.tx.send(e).is_ok()
    }

    fn connect_loop(self, first: UnixStream, path: PathBuf, retry: Duration) -> io::Result<()> {
        let mut stream = Some(first);
        let mut initial = true;
        loop {
            if let Some(s) = stream.take() {
                let writer = HostWriter::Socket(ChannelWriter::new(s.try_clone()?));
                if !self.send(Event::ChannelUp { writer, initial }) {
                    return Ok(());
                }
                initial = false;
                match self.read_loop(&s, s.as_raw_fd())? {
                    End::Stop => return Ok(()),
                    End::HangUp if !self.send(Event::ChannelDown) => return Ok(()),
                    End::HangUp => {}
                }
            }
            if self.sleep(retry) {
                return Ok(());
            }
            match UnixStream::connect(&path) {
                Ok(s) => stream = Some(s),
                Err(e) => log::debug!("reconnect to {} failed: {e}", path.display()),
            }
        }
    }

    fn listen_loop(self, listener: UnixListener) -> io::Result<()> {
        loop {
            match poll_in(listener.as_raw_fd())? {
                _ if self.stopped() => return Ok(()),
                Readiness::Idle => continue,
                Readiness::Ready | Readiness::HangUp => {}
            }
            let (s, _) = listener.accept()?;
            let writer = HostWriter::Socket(ChannelWriter::new(s.try_clone()?));
            if !self.send(Event::ChannelUp { writer, initial: false }) {
                return Ok(());
            }
            match self.read_loop(&s, s.as_raw_fd())? {
                End::Stop => return Ok(()),
                End::HangUp if !self.send(Event::ChannelDown) => return Ok(()),
                End::HangUp => {}
            }
        }
    }

    fn device_loop(self, dev: File) -> io::Result<()> {
        let mut initial = true;
        loop {
            let writer = HostWriter::Device(dev.try_clone()?);
            if !self.send(Event::ChannelUp { writer, initial }) {
                return Ok(());
            }
            initial = false;
            match self.read_loop(&dev, dev.as_raw_fd())? {
                End::Stop => return Ok(()),
                End::HangUp if !self.send(Event::ChannelDown) => return Ok(()),
                End::HangUp => {}
            }
            // The port reports POLLHUP until the host side connects again.
            loop {
                if self.sleep(Duration::from_secs(1)) {
                    return Ok(());
                }
                if poll_in(dev.as_raw_fd())? != Readiness::HangUp {
                    break;
                }
            }
        }
    }

    /// Reads until hang-up or stop, sending every decoded line.
    fn read_loop(&self, mut r: impl Read, fd: RawFd) -> io::Result<End> {
        let mut framer = LineFramer::new(MAX_LINE);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut frames = Vec::new();
        loop {
            let ready = poll_in(fd)?;
            if self.stopped() {
                return Ok(End::Stop);
            }
            match ready {
                Readiness::Idle => continue,
                Readiness::HangUp => return Ok(End::HangUp),
                Readiness::Ready => {}
            }
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(End::HangUp),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    log::warn!("host channel read failed: {e}");
                    return Ok(End::HangUp);
                }
            };
            framer.push(&buf[..n], &mut frames);
            for f in frames.drain(..) {
                let ev = match f {
                    Frame::Line(line) => match decode_host(&line) {
                        Decoded::Msg(_, m) => Event::Host(m),
                        Decoded::Nack(t) => Event::HostBad(t),
                        Decoded::Malformed(why) => Event::HostBad(why.to_string()),
                    },
                    Frame::TooLong { len } => Event::HostBad(format!("line over {len} bytes")),
                };
                if !self.send(ev) {
                    return Ok(End::Stop);
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    Idle,
    Ready,
    HangUp,
}

/// poll() one fd for input with the thread's tick as timeout. Data still
/// buffered wins over a hang-up so that a last message is not lost.
fn poll_in(fd: RawFd) -> io::Result<Readiness> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid pollfd living across the call.
    let r = unsafe { libc::poll(&mut p, 1, POLL_MS) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(Readiness::Idle) } else { Err(e) };
    }
    Ok(if r == 0 {
        Readiness::Idle
    } else if p.revents & libc::POLLIN != 0 {
        Readiness::Ready
    } else if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Readiness::HangUp
    } else {
        Readiness::Idle
    })
}
