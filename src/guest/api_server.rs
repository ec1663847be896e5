//! The app API socket threads (spec guest-side §8.1): thread "api-accept"
//! accepts connections on the listening socket and starts one reader
//! thread ("app-<n>") per connection, which reassembles 228-byte frames and
//! sends `Event::App`. The dispatcher owns the write halves and closes a
//! connection with `shutdown`, which ends its reader.
//!
//! Both kinds of thread poll with a 250 ms tick to notice the stop signal.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use gh_threads::guard::spawn_named;

use super::api_wire::Reassembler;
use super::events::Event;

const STACK: usize = 64 * 1024;

/// Binds the API socket, replacing a stale socket file.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// Dropping it stops the accept thread (and, through the same stop
/// channel, every reader) and joins the accept thread.
#[derive(Debug)]
pub struct ApiHandle {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ApiHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Spawns thread "api-accept" on `listener`.
pub fn spawn_api(listener: UnixListener, tx: Sender<Event>) -> io::Result<ApiHandle> {
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let exit_tx = tx.clone();
    let thread = spawn_named("api-accept", None, exit_tx, Event::ThreadExited, move || {
        let mut next_conn = 1u64;
        loop {
            let ready = poll_in(listener.as_raw_fd()).map_err(|e| e.to_string())?;
            if stopped(&stop_rx) {
                return Ok(());
            }
            if !ready {
                continue;
            }
            let (stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("api accept failed: {e}");
                    continue;
                }
            };
            let conn = next_conn;
            next_conn += 1;
            let writer = match stream.try_clone() {
                Ok(w) => w,
                Err(e) => {
                    log::warn!("api connection clone failed: {e}");
                    continue;
                }
            };
            if let Err(e) = spawn_reader(conn, stream, tx.clone(), stop_rx.clone()) {
                log::warn!("cannot start app reader: {e}");
                continue;
            }
            if tx.send(Event::AppConnected { conn, stream: writer }).is_err() {
                return Ok(());
            }
        }
    })?;
    Ok(ApiHandle { stop: Some(stop_tx), thread: Some(thread) })
}

fn spawn_reader(conn: u64, mut stream: UnixStream, tx: Sender<Event>, stop: Receiver<()>) -> io::Result<()> {
    let name = format!("app-{conn}");
    spawn_named(&name, Some(STACK), tx.clone(), Event::ThreadExited, move || {
        let mut reasm = Reassembler::default();
        let mut buf = [0u8; 4096];
        let mut msgs = Vec::new();
        loop {
            let ready = poll_in(stream.as_raw_fd()).map_err(|e| e.to_string())?;
            if stopped(&stop) {
                return Ok(());
            }
            if !ready {
                continue;
            }
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            reasm.push(&buf[..n], &mut msgs);
            for msg in msgs.drain(..) {
                if tx.send(Event::App { conn, msg }).is_err() {
                    return Ok(());
                }
            }
        }
        let _ = tx.send(Event::AppClosed { conn });
        Ok(())
    })?;
    Ok(())
}

fn stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

/// True when `fd` is readable (or hung up) within 250 ms.
fn poll_in(fd: RawFd) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: `p` is one valid pollfd living across the call.
    let r = unsafe { libc::poll(&mut p, 1, 250) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(r > 0)
}
