//! The HTTP gate in front of rouille. Thread `<name>-gate` accepts
//! connections on the public address; each connection gets a short-lived
//! thread `<name>-conn` that reads the whole request (head, then its
//! Content-Length body) under one deadline, relays it to rouille on a private
//! loopback port and copies the answer back.
//!
//! Why: rouille hands requests to a small worker pool and its handlers read
//! the body from the client socket, which has no read deadline. A few clients
//! that stall in the middle of a body used to hold every worker, and the VIM's
//! requests waited behind them. Behind the gate, rouille only ever sees
//! complete requests from the gate itself; a stalled or trickling client holds
//! only its own connection thread until its deadline, and at most `max_conns`
//! connection threads exist (more connections are answered 503 at once).
//!
//! The gate makes no API decision. Its own refusals (400, 408, 411, 413, 431,
//! 503) carry a body made by the caller's `reject` function, so they look like
//! the API's own errors.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Builder;
use std::time::{Duration, Instant};

use crate::http_head::{self, Refusal};
use crate::wake_addr;

/// What the gate allows a client; see `GateLimits::new` for the defaults.
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// Connections being read or answered at once; more get 503.
    pub max_conns: usize,
    /// The whole request (head and body) must arrive within this.
    pub deadline: Duration,
    /// Longest request head, in bytes.
    pub max_head: usize,
    /// Longest request body, in bytes (413 above it).
    pub max_body: usize,
    /// How long rouille may take to answer one relayed request.
    pub reply_timeout: Duration,
    /// Makes the body (JSON for our APIs) of the gate's own refusals.
    pub reject: fn(u16, &str) -> Vec<u8>,
}

impl GateLimits {
    /// Defaults for a control-plane API: 64 connections, 10 s to send a
    /// request, 16 KiB heads, `max_body`-byte bodies, 30 s to answer.
    pub fn new(max_body: usize, reject: fn(u16, &str) -> Vec<u8>) -> Self {
        Self {
            max_conns: 64,
            deadline: Duration::from_secs(10),
            max_head: 16 * 1024,
            max_body,
            reply_timeout: Duration::from_secs(30),
            reject,
        }
    }
}

/// Writes to a client may block this long (a client that does not read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a refusal, unread request bytes are drained for at most this long so
/// that closing does not reset the connection before the client reads the
/// answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1 << 20;
/// Largest answer relayed from rouille (our APIs answer a few KiB).
const MAX_REPLY: u64 = 16 << 20;
const CONN_STACK: usize = 128 * 1024;

/// Shared by the accept loop and the handle that stops it.
#[derive(Debug)]
pub(crate) struct GateStop {
    flag: AtomicBool,
    wake: SocketAddr,
}

impl GateStop {
    /// Stops the accept loop: raises the flag, then wakes `accept` with a
    /// connection of its own.
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
    }
}

pub(crate) fn stop_for(listener: &TcpListener) -> std::io::Result<Arc<GateStop>> {
    Ok(Arc::new(GateStop { flag: AtomicBool::new(false), wake: wake_addr(listener.local_addr()?) }))
}

/// The accept loop; runs on the gate thread until `stop` is raised.
pub(crate) fn accept_loop(
    name: &str,
    listener: TcpListener,
    backend: SocketAddr,
    limits: GateLimits,
    stop: Arc<GateStop>,
) -> Result<(), String> {
    let live = Arc::new(AtomicUsize::new(0));
    let mut refused_logged: Option<Instant> = None;
    loop {
        let accepted = listener.accept();
        if stop.flag.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (client, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: pause so the loop does not spin.
                log::warn!("http accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if live.load(Ordering::SeqCst) >= limits.max_conns {
            if refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                log::warn!("http: {} connections open, refusing {peer} (503)", limits.max_conns);
                refused_logged = Some(Instant::now());
            }
            // Answered here, on the accept thread, so it must be quick: a
            // short write, then a short drain of the request so that the
            // close does not reset the answer away.
            let _ = client.set_write_timeout(Some(Duration::from_millis(100)));
            if write_refusal(&client, limits.reject, BUSY).is_ok() {
                linger(client, BUSY_LINGER);
            }
            continue;
        }
        let slot = Slot::take(&live);
        let spawned = Builder::new().name(format!("{name}-conn")).stack_size(CONN_STACK).spawn(move || {
            let _slot = slot;
            serve(client, backend, &limits);
        });
        if let Err(e) = spawned {
            log::warn!("http: cannot start a connection thread: {e}");
        }
    }
}

/// One counted connection; the count drops with it.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Slot(Arc::clone(live))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

enum ReadErr {
    Closed,
    Timeout,
    Io,
}

/// Reads some bytes into `buf` before `deadline`.
fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), ReadErr> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadErr::Timeout);
    }
    s.set_read_timeout(Some(left)).map_err(|_| ReadErr::Io)?;
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk) {
        Ok(0) => Err(ReadErr::Closed),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(ReadErr::Timeout),
        Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
        Err(_) => Err(ReadErr::Io),
    }
}

const TIMEOUT: Refusal = Refusal { status: 408, reason: "request not received in time" };
const BUSY: Refusal = Refusal { status: 503, reason: "too many connections" };
const BUSY_LINGER: Duration = Duration::from_millis(20);
const NOT_READY: Refusal = Refusal { status: 503, reason: "server not ready" };
const NO_ANSWER: Refusal = Refusal { status: 502, reason: "no answer from the request handler" };

/// Reads one request from `client`, relays it and copies the answer back.
/// Runs on a `<name>-conn` thread.
fn serve(mut client: TcpStream, backend: SocketAddr, limits: &GateLimits) {
    let deadline = Instant::now() + limits.deadline;
    let _ = client.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf = Vec::with_capacity(2048);
    let end = loop {
        if let Some(end) = http_head::head_end(&buf) {
            break end;
        }
        if buf.len() > limits.max_head + 4 {
            return refuse(client, limits, http_head::HEAD_TOO_LARGE);
        }
        match read_some(&mut client, &mut buf, deadline) {
            Ok(()) => {}
            // An idle connection that never sent a byte is just closed.
            Err(ReadErr::Timeout) if buf.is_empty() => return,
            Err(ReadErr::Timeout) => return refuse(client, limits, TIMEOUT),
            Err(ReadErr::Closed | ReadErr::Io) => return,
        }
    };
    let head = match http_head::parse(&buf[..end], limits.max_head, limits.max_body) {
        Ok(h) => h,
        Err(r) => return refuse(client, limits, r),
    };
    let mut body = buf.split_off(end);
    if head.expect_continue
        && body.len() < head.content_length
        && client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
    {
        return;
    }
    while body.len() < head.content_length {
        match read_some(&mut client, &mut body, deadline) {
            Ok(()) => {}
            Err(ReadErr::Timeout) => return refuse(client, limits, TIMEOUT),
            Err(ReadErr::Closed | ReadErr::Io) => return,
        }
    }
    // Anything past the body (a pipelined request) is not served: one
    // request per connection, and the answer says `Connection: close`.
    body.truncate(head.content_length);

    let answer = match relay(backend, &head.relay, &body, limits.reply_timeout) {
        Ok(a) if !a.is_empty() => a,
        // rouille's parser closed without answering: the request was one it
        // cannot read even though the gate could.
        Ok(_) => return refuse(client, limits, Refusal { status: 400, reason: "malformed request" }),
        Err(RelayErr::Connect) => return refuse(client, limits, NOT_READY),
        Err(RelayErr::Io) => return refuse(client, limits, NO_ANSWER),
    };
    let _ = client.write_all(&http_head::close_answer(answer));
    let _ = client.shutdown(Shutdown::Both);
}

enum RelayErr {
    Connect,
    Io,
}

/// Sends the request to rouille and reads its whole answer (rouille closes
/// after it, as the head asks).
fn relay(backend: SocketAddr, head: &[u8], body: &[u8], timeout: Duration) -> Result<Vec<u8>, RelayErr> {
    let mut s = TcpStream::connect_timeout(&backend, Duration::from_secs(1)).map_err(|_| RelayErr::Connect)?;
    s.set_write_timeout(Some(timeout)).map_err(|_| RelayErr::Io)?;
    s.set_read_timeout(Some(timeout)).map_err(|_| RelayErr::Io)?;
    s.write_all(head).map_err(|_| RelayErr::Io)?;
    s.write_all(body).map_err(|_| RelayErr::Io)?;
    let mut answer = Vec::new();
    match s.take(MAX_REPLY).read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        // A reset after a complete answer still leaves a usable answer.
        Err(_) if !answer.is_empty() => Ok(answer),
        Err(_) => Err(RelayErr::Io),
    }
}

/// Answers with the gate's own refusal, then closes without resetting.
fn refuse(client: TcpStream, limits: &GateLimits, r: Refusal) {
    log::debug!("http: refused a request: {} {}", r.status, r.reason);
    if write_refusal(&client, limits.reject, r).is_err() {
        return;
    }
    linger(client, LINGER);
}

fn write_refusal(mut client: &TcpStream, reject: fn(u16, &str) -> Vec<u8>, r: Refusal) -> std::io::Result<()> {
    let body = reject(r.status, r.reason);
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason_phrase(r.status),
        body.len()
    );
    client.write_all(head.as_bytes())?;
    client.write_all(&body)
}

/// Half-closes, then reads and discards what the client still sends (at most
/// `LINGER_BYTES`, for at most `limit`), so that unread request bytes do not
/// turn the close into a reset that destroys the answer in flight.
fn linger(mut client: TcpStream, limit: Duration) {
    let _ = client.shutdown(Shutdown::Write);
    let until = Instant::now() + limit;
    let mut drained = 0;
    let mut sink = Vec::new();
    while drained < LINGER_BYTES {
        sink.clear();
        match read_some(&mut client, &mut sink, until) {
            Ok(()) => drained += sink.len(),
            Err(_) => break,
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
