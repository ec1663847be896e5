//! The HTTP server threads (named by the caller, e.g. "http"): the gate
//! (`<name>-gate`, see `http_gate`) owns the public address and reads whole
//! requests under a deadline; thread `<name>` runs rouille's loop on a private
//! loopback port, and rouille's small worker pool runs the caller's (domain)
//! handler, which talks to the dispatcher through its own reply channels.
//!
//! rouille can only be stopped between `poll_timeout` calls (its own
//! `stoppable()` does the same, but on an unnamed thread), so the loop wakes
//! every `POLL` to check the stop channel. That bounds the stop latency; it is
//! the one timed wake-up in this crate.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TryRecvError};
use rouille::{Request, Response, Server};

use crate::guard::{spawn_named, ThreadExit};
pub use crate::http_gate::GateLimits;
use crate::http_gate::{accept_loop, stop_for, GateStop};

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
    gate_stop: Arc<GateStop>,
    gate: Option<JoinHandle<()>>,
}

impl Drop for HttpHandle {
    fn drop(&mut self) {
        self.gate_stop.stop();
        if let Some(gate) = self.gate.take() {
            if gate.join().is_err() {
                log::error!("http gate thread panicked outside its guard");
            }
        }
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

/// Binds `addr` (port 0 allowed), runs the gate on thread `<name>-gate` and
/// rouille on thread `name`.
pub fn spawn_http<E, F>(
    name: &str,
    addr: SocketAddr,
    limits: GateLimits,
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
    let listener = TcpListener::bind(addr).map_err(|e| HttpError::Bind { addr, msg: e.to_string() })?;
    let local_addr = listener.local_addr().map_err(|e| HttpError::Bind { addr, msg: e.to_string() })?;
    let private: SocketAddr = ([127, 0, 0, 1], 0).into();
    let server = Server::new(private, handler)
        .map_err(|e| HttpError::Bind { addr: private, msg: e.to_string() })?
        .pool_size(POOL_SIZE);
    let backend = server.server_addr();
    let gate_stop = stop_for(&listener).map_err(|e| HttpError::Bind { addr, msg: e.to_string() })?;
    let (stop_tx, stop_rx) = bounded::<()>(1);
    let gate_name = format!("{name}-gate");
    let stop = Arc::clone(&gate_stop);
    let conn_name = name.to_string();
    let gate = spawn_named(&gate_name, None, exit_tx.clone(), on_exit, move || {
        accept_loop(&conn_name, listener, backend, limits, stop)
    })
    .map_err(HttpError::Spawn)?;
    let thread = spawn_named(name, None, exit_tx, on_exit, move || {
        while let Err(TryRecvError::Empty) = stop_rx.try_recv() {
            server.poll_timeout(POLL);
        }
        // Let requests already being handled finish their replies.
        server.join();
        Ok(())
    })
    .map_err(|e| {
        gate_stop.stop();
        HttpError::Spawn(e)
    })?;
    log::info!("http server listening on {local_addr}");
    Ok(HttpHandle { local_addr, stop: Some(stop_tx), thread: Some(thread), gate_stop, gate: Some(gate) })
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

    fn reject(code: u16, reason: &str) -> Vec<u8> {
        format!("refused {code}: {reason}").into_bytes()
    }

    fn limits() -> GateLimits {
        GateLimits::new(1000, reject)
    }

    /// Echoes the method, URL and body length; reads the body as the
    /// agent's handler does.
    fn echo(req: &Request) -> Response {
        let mut body = Vec::new();
        if let Some(mut d) = req.data() {
            let _ = d.read_to_end(&mut body);
        }
        Response::text(format!("{} {} {}", req.method(), req.url(), body.len()))
    }

    fn start(limits: GateLimits) -> (HttpHandle, crossbeam_channel::Receiver<ThreadExit>) {
        let (tx, rx) = unbounded();
        let h = spawn_http("http-test", "127.0.0.1:0".parse().unwrap(), limits, echo, tx, |e| e).unwrap();
        (h, rx)
    }

    fn connect(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Sends `raw` and reads the whole answer.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = connect(addr);
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        exchange(addr, format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
    }

    #[test]
    fn answers_on_port_zero_and_stops_on_drop() {
        let (h, rx) = start(limits());
        assert_ne!(h.local_addr.port(), 0);
        let reply = get(h.local_addr, "/x");
        assert!(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"), "{reply}");
        assert!(reply.ends_with("GET /x 0"), "{reply}");

        within(WAIT, move || drop(h));
        let mut names: Vec<_> = (0..2).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            names,
            vec![
                ThreadExit { name: "http-test".into(), reason: ExitReason::Finished },
                ThreadExit { name: "http-test-gate".into(), reason: ExitReason::Finished },
            ]
        );
    }

    #[test]
    fn bind_error_is_typed() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let (tx, _rx) = unbounded::<ThreadExit>();
        match spawn_http("http-busy", addr, limits(), |_: &Request| Response::empty_404(), tx, |e| e) {
            Err(HttpError::Bind { addr: a, .. }) => assert_eq!(a, addr),
            other => panic!("unexpected {:?}", other.map(|h| h.local_addr)),
        }
    }

    #[test]
    fn bodies_keep_alive_and_continue_are_relayed_as_one_request() {
        let (h, _rx) = start(limits());
        let a = exchange(h.local_addr, b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        assert!(a.ends_with("POST /b 5"), "{a}");
        // Keep-alive is not kept: the answer closes the connection (read_to_end returned).
        let a = exchange(h.local_addr, b"GET /k HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
        assert!(a.to_ascii_lowercase().contains("connection: close"), "{a}");
        // Expect: 100-continue is answered by the gate before the body is sent.
        let mut s = connect(h.local_addr);
        s.write_all(b"PUT /c HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").unwrap();
        let mut first = [0u8; 25];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"abc").unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 200") && rest.ends_with("PUT /c 3"), "{rest}");
    }

    #[test]
    fn refusals_carry_the_callers_body() {
        let (h, _rx) = start(limits());
        let big = format!("POST /big HTTP/1.1\r\nContent-Length: 1001\r\n\r\n{}", "x".repeat(1001));
        let a = exchange(h.local_addr, big.as_bytes());
        assert!(a.starts_with("HTTP/1.1 413 "), "{a}");
        assert!(a.ends_with("refused 413: request body too large"), "{a}");
        let a = exchange(h.local_addr, b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 411 "), "{a}");
        let a = exchange(h.local_addr, b"BREW /\xff HTTP/1.1\r\n\r\n");
        assert!(a.starts_with("HTTP/1.1 400 ") && a.ends_with("malformed request line"), "{a}");
        let a = exchange(h.local_addr, format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(20_000)).as_bytes());
        assert!(a.starts_with("HTTP/1.1 431 "), "{a}");
        // Still serving.
        assert!(get(h.local_addr, "/after").ends_with("GET /after 0"));
    }

    #[test]
    fn a_client_that_stalls_gets_408_at_its_deadline() {
        let (h, _rx) = start(GateLimits { deadline: Duration::from_millis(300), ..limits() });
        let mut s = connect(h.local_addr);
        s.write_all(b"POST /slow HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 408 ") && out.ends_with("refused 408: request not received in time"),
            "{out}"
        );
        // A connection that never sends anything is closed without an answer.
        let mut idle = connect(h.local_addr);
        let mut out = Vec::new();
        idle.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn stalled_clients_do_not_hold_the_handlers() {
        // The deadline is far away, so the stalled clients stay stalled while
        // a well-behaved request is answered.
        let (h, _rx) = start(GateLimits { deadline: Duration::from_secs(60), ..limits() });
        let mut stalled = Vec::new();
        for i in 0..16 {
            let mut s = connect(h.local_addr);
            let part: &[u8] = if i % 2 == 0 {
                b"POST /stall HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly-part"
            } else {
                b"GET /stall HTTP/1.1\r\nHost: half-a-he"
            };
            s.write_all(part).unwrap();
            stalled.push(s);
        }
        let a = within(WAIT, move || exchange(h.local_addr, b"POST /ok HTTP/1.1\r\nContent-Length: 2\r\n\r\nok"));
        assert!(a.ends_with("POST /ok 2"), "{a}");
        // The stalled ones have had no answer: they are still waiting.
        for mut s in stalled {
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).map_err(|e| e.kind()), Err(std::io::ErrorKind::WouldBlock));
        }
    }

    #[test]
    fn connections_over_the_limit_get_503() {
        let (h, _rx) = start(GateLimits { max_conns: 2, deadline: Duration::from_secs(60), ..limits() });
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = connect(h.local_addr);
            s.write_all(b"GET /hold HTTP/1.1\r\n").unwrap();
            held.push(s);
        }
        // The gate counts a connection when it accepts it, so retry until
        // both held connections are counted (each try is one accept).
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let a = exchange(h.local_addr, b"GET /x HTTP/1.1\r\n\r\n");
            if a.starts_with("HTTP/1.1 503 ") {
                assert!(a.ends_with("refused 503: too many connections"), "{a}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never refused: {a}");
        }
        drop(held);
        // Slots are given back when the held connections end.
        let deadline = std::time::Instant::now() + WAIT;
        while !get(h.local_addr, "/y").ends_with("GET /y 0") {
            assert!(std::time::Instant::now() < deadline, "slots not given back");
        }
    }

    #[test]
    fn serves_ipv6_and_wildcard_addresses_and_stops() {
        // Decisions §5: IPv6 works wherever an address is accepted. A
        // wildcard bind is woken through loopback at stop.
        for addr in ["[::1]:0", "0.0.0.0:0"] {
            let (tx, _rx) = unbounded();
            let h = spawn_http("http-v6", addr.parse().unwrap(), limits(), echo, tx, |e| e).unwrap();
            let reach = if h.local_addr.is_ipv6() {
                h.local_addr
            } else {
                SocketAddr::from(([127, 0, 0, 1], h.local_addr.port()))
            };
            assert!(get(reach, "/six").ends_with("GET /six 0"), "{addr}");
            within(WAIT, move || drop(h));
        }
    }
}
