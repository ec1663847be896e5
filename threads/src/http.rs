//! The HTTP server thread (named by the caller, e.g. "http"): runs rouille's
//! accept loop; requests are handled on rouille's small worker pool by the
//! caller's (domain) handler, which talks to the dispatcher through its own
//! reply channels.
//!
//! rouille can only be stopped between `poll_timeout` calls (its own
//! `stoppable()` does the same, but on an unnamed thread), so the loop wakes
//! every `POLL` to check the stop channel. That bounds the stop latency; it is
//! the one timed wake-up in this crate.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TryRecvError};
use rouille::{Request, Response, Server};

use crate::guard::{spawn_named, ThreadExit};

/// How long one accept wait may last before the stop channel is checked.
const POLL: Duration = Duration::from_millis(500);
/// Worker threads for handlers; requests are rare (control plane only).
const POOL_SIZE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {msg}")]
    Bind { addr: SocketAddr, msg: String },
    #[error("cannot start http thread")]
    Spawn(#[source] std::io::Error),
}

/// Dropping it tells the server loop to stop, then joins (within `POLL` plus
/// whatever in-flight handlers take).
#[derive(Debug)]
pub struct HttpHandle {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for HttpHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // A full or disconnected channel both mean "stop" to the loop.
            let _ = stop.try_send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("http thread panicked outside its guard");
            }
        }
    }
}

/// Binds `addr` (port 0 allowed) and runs the server on thread `name`.
pub fn spawn_http<E, F>(
    name: &str,
    addr: SocketAddr,
    handler: F,
    exit_tx: Sender<E>,
    on_exit: fn(ThreadExit) -> E,
) -> Result<HttpHandle, HttpError>
where
    E: Send + 'static,
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    // Bind here rather than on the thread so that a bad address is an
    // immediate, typed startup error instead of a thread exit.
    let server = Server::new(addr, handler)
        .map_err(|e| HttpError::Bind {
            addr,
            msg: e.to_string(),
        })?
        .pool_size(POOL_SIZE);
    let local_addr = server.server_addr();
    let (stop_tx, stop_rx) = bounded::<()>(1);
    let thread = spawn_named(name, None, exit_tx, on_exit, move || {
        while let Err(TryRecvError::Empty) = stop_rx.try_recv() {
            server.poll_timeout(POLL);
        }
        // Let requests already being handled finish their replies.
        server.join();
        Ok(())
    })
    .map_err(HttpError::Spawn)?;
    log::info!("http server listening on {local_addr}");
    Ok(HttpHandle {
        local_addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::ExitReason;
    use crate::testutil::within;
    use crossbeam_channel::unbounded;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    const WAIT: Duration = Duration::from_secs(5);

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_on_port_zero_and_stops_on_drop() {
        let (tx, rx) = unbounded();
        let h = spawn_http(
            "http-test",
            "127.0.0.1:0".parse().unwrap(),
            |req: &Request| Response::text(format!("hello {}", req.url())),
            tx,
            |e| e,
        )
        .unwrap();
        assert_ne!(h.local_addr.port(), 0);
        let reply = get(h.local_addr, "/x");
        assert!(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"));
        assert!(reply.ends_with("hello /x"), "{reply}");

        within(WAIT, move || drop(h));
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            ThreadExit {
                name: "http-test".into(),
                reason: ExitReason::Finished
            }
        );
    }

    #[test]
    fn bind_error_is_typed() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let (tx, _rx) = unbounded::<ThreadExit>();
        match spawn_http(
            "http-busy",
            addr,
            |_: &Request| Response::empty_404(),
            tx,
            |e| e,
        ) {
            Err(HttpError::Bind { addr: a, .. }) => assert_eq!(a, addr),
            other => panic!("unexpected {:?}", other.map(|h| h.local_addr)),
        }
    }
}
