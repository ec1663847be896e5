//! Fakes for the guestAgent integration tests: a fake guestServer or
//! mtcAgent (one UDP socket speaking the 1060-byte envelope) and a fake VIM
//! guest REST server that records every request and answers as told
//! (including the real VIM's close-without-reply). Every wait has a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::agent_support::{cmd, WAIT};

/// A fake guestServer or mtcAgent: one UDP socket.
///
/// The agent greets every known guestServer at start (an `EVENT_ACK` with id
/// 0); receiving skips those, but returns the greeting that answers a READY
/// this fake sent.
pub struct FakeUdp {
    pub sock: UdpSocket,
    ready_sent: std::cell::Cell<bool>,
}

/// A received envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub len: usize,
    pub hdr: Vec<u8>,
    pub cmd: u32,
    pub payload: String,
    pub from: SocketAddr,
}

impl FakeUdp {
    pub fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Self { sock, ready_sent: std::cell::Cell::new(false) }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// The next datagram of any kind.
    pub fn recv_any(&self) -> Msg {
        self.try_recv(WAIT).expect("no datagram within the deadline")
    }

    /// The next datagram that is not an audit query.
    pub fn recv(&self) -> Msg {
        loop {
            let m = self.recv_any();
            if m.cmd != cmd::QRY_INST {
                return m;
            }
        }
    }

    pub fn try_recv(&self, within: Duration) -> Option<Msg> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            self.sock.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = self.sock.recv_from(&mut buf).ok()?;
            let b = &buf[..n];
            let end = b[100..].iter().position(|c| *c == 0).map_or(n, |p| 100 + p);
            let m = Msg {
                len: n,
                hdr: b[..64].to_vec(),
                cmd: u32::from_le_bytes(b[72..76].try_into().unwrap()),
                payload: String::from_utf8_lossy(&b[100..end]).to_string(),
                from,
            };
            let greeting =
                m.cmd == guest_heartbeat::wire::envelope::cmd::EVENT_ACK && m.payload.ends_with(r#""event_id":0}"#);
            // Unless it answers a READY we sent, it is the start-up greeting.
            if greeting && !self.ready_sent.replace(false) {
                continue;
            }
            return Some(m);
        }
    }

    /// Receives until a message with `cmd` arrives (skipping audit queries).
    pub fn recv_cmd(&self, cmd: u32) -> Msg {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .try_recv(left.max(Duration::from_millis(1)))
                .unwrap_or_else(|| panic!("no command {cmd:#x} in time"));
            if m.cmd == cmd {
                return m;
            }
        }
    }

    /// Sends a full 1060-byte envelope with `hdr` as signature.
    pub fn send(&self, to: SocketAddr, sig: &[u8], cmd: u32, payload: &str) {
        let mut b = vec![0u8; 1060];
        b[..sig.len()].copy_from_slice(sig);
        b[72..76].copy_from_slice(&cmd.to_le_bytes());
        b[100..100 + payload.len()].copy_from_slice(payload.as_bytes());
        if cmd == self::cmd::READY {
            self.ready_sent.set(true);
        }
        self.sock.send_to(&b, to).unwrap();
    }
}

/// One request the fake VIM received.
#[derive(Debug, Clone, PartialEq)]
pub struct VimReq {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl VimReq {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }
}

/// How the fake VIM answers.
#[derive(Debug, Clone)]
pub enum VimMode {
    /// Close without a byte (the real Python 3 VIM for events).
    Close,
    Status(u16, String),
}

/// A fake VIM guest REST server on a fixed port.
pub struct FakeVim {
    pub rx: crossbeam_channel::Receiver<VimReq>,
    pub mode: Arc<Mutex<VimMode>>,
    /// Answer to the host-state GET and instance-list GET.
    pub host_state: Arc<Mutex<String>>,
    pub instances: Arc<Mutex<String>>,
}

fn read_request(s: &mut TcpStream) -> Option<VimReq> {
    s.set_read_timeout(Some(WAIT)).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize =
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(VimReq { method, path, headers, body: String::from_utf8_lossy(&body).to_string() })
}

impl FakeVim {
    /// Binds `port` again (after an outage), retrying while it is in use.
    pub fn start_on(port: u16) -> Self {
        let deadline = Instant::now() + WAIT;
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => return Self::serve(l),
                Err(e) => assert!(Instant::now() < deadline, "cannot rebind VIM port {port}: {e}"),
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn serve(listener: TcpListener) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mode = Arc::new(Mutex::new(VimMode::Close));
        let host_state = Arc::new(Mutex::new(r#"{"uuid":"x","hostname":"x","state":"enabled"}"#.to_string()));
        let instances = Arc::new(Mutex::new(r#"{"instances":[]}"#.to_string()));
        let (m, hs, is) = (mode.clone(), host_state.clone(), instances.clone());
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let Some(req) = read_request(&mut s) else {
                    continue;
                };
                let reply = if req.method == "GET" && req.path.contains("/hosts/") {
                    Some((200, hs.lock().unwrap().clone()))
                } else if req.method == "GET" {
                    Some((200, is.lock().unwrap().clone()))
                } else {
                    match m.lock().unwrap().clone() {
                        VimMode::Close => None,
                        VimMode::Status(c, b) => Some((c, b)),
                    }
                };
                if tx.send(req).is_err() {
                    return;
                }
                if let Some((code, body)) = reply {
                    // HTTP/1.0 style, no Content-Length: ends at close.
                    let _ = write!(s, "HTTP/1.0 {code} X\r\nContent-Type: application/json\r\n\r\n{body}");
                }
            }
        });
        Self { rx, mode, host_state, instances }
    }

    pub fn next(&self) -> VimReq {
        self.rx.recv_timeout(WAIT).expect("no VIM request in time")
    }

    /// The next PATCH (skipping audit GETs).
    pub fn next_event(&self) -> VimReq {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.rx.recv_deadline(deadline).expect("no VIM event in time");
            if r.method == "PATCH" {
                return r;
            }
        }
    }
}
