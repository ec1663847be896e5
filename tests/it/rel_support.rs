//! Helpers of the reliability suites (issue 6, docs/RELIABILITY.md): a real
//! guestServer whose log goes to a file (so tests can count log lines), its
//! resident memory and `/metrics` counters, an agent-side collector thread,
//! and a fleet of healthy simulated guests.
//!
//! Deadline misses of the healthy fleet are judged by the daemon itself, on
//! the protocol's own deadlines: a "Heartbeat Miss" warning means one
//! challenge went unanswered for an interval, a HEARTBEAT_LOSS means
//! (threshold + 1) intervals. Never by a wall-clock window in the test.

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use guest_heartbeat::sim::{Sim, SimConfig, SimHandle};
use guest_heartbeat::wire::envelope::cmd;

use crate::support::*;

/// A guestServer with its stderr log in `log`.
pub struct LoggedServer {
    pub server: Server,
    pub log: PathBuf,
}

/// Starts guestServer with `ini` (after `[agent] rx_port`), `--http`, and
/// stderr to a file, on `udp_port`.
pub fn start_logged(dir: &TestDir, agent: &FakeAgent, ini: &str, udp_port: u16, http: SocketAddr) -> LoggedServer {
    let log = dir.path("guestServer.log");
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let server = Server::launch(dir, agent, ini, &[], udp_port, Some(http), Stdio::from(log_file));
    LoggedServer { server, log }
}

/// Resident set size of `pid` in KiB (from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One `guestserver_<name>` value from `/metrics`.
pub fn metric(server: &Server, name: &str) -> u64 {
    let (code, body) = server.get("/metrics");
    assert_eq!(code, 200, "metrics: {body}");
    let key = format!("guestserver_{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Log lines (whole file) containing every one of `needles`.
pub fn log_lines(log: &PathBuf, needles: &[&str]) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// Collects every envelope the fake agent receives, on its own thread, so
/// the socket buffer never overflows while a test is busy elsewhere.
pub struct Collector {
    pub got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    pub fn start(agent: &FakeAgent) -> Self {
        let sock = FakeAgent { sock: agent.sock.try_clone().unwrap() };
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(e) = sock.recv(Duration::from_millis(50)) {
                    g.lock().unwrap().push(e);
                }
            }
        });
        Self { got, stop, thread: Some(thread) }
    }

    /// Envelopes with `code` for a uuid in `uuids`.
    pub fn count(&self, code: u32, uuids: &HashSet<String>) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.cmd == code && g.json["uuid"].as_str().is_some_and(|u| uuids.contains(u)))
            .count()
    }

    /// Waits until `f(events)` holds. `f` runs under the collector's lock:
    /// it must use the slice, not call back into the collector.
    pub fn wait(&self, timeout: Duration, f: impl Fn(&[Got]) -> bool) -> bool {
        wait_for(timeout, || f(&self.got.lock().unwrap()).then_some(())).is_some()
    }

    pub fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `count` healthy simulated guests in the server's channel directory, all
/// with reporting enabled and heartbeating.
pub struct Fleet {
    pub sim: SimHandle,
    pub uuids: HashSet<String>,
}

impl Fleet {
    pub fn start(server: &Server, agent: &FakeAgent, col: &Collector, count: usize, interval_ms: u32) -> Self {
        let mut cfg = SimConfig::new(&server.channels, count);
        cfg.interval_ms = interval_ms;
        cfg.seed = 0x5EED;
        let sim = Sim::start(cfg).unwrap();
        let uuids: HashSet<String> = (0..count).map(|i| sim.uuid(i).to_string()).collect();
        for u in &uuids {
            agent.enable(server.udp, u);
        }
        let ok = col.wait(Duration::from_secs(30), |evs| {
            let running: HashSet<&str> = evs
                .iter()
                .filter(|g| g.cmd == cmd::HEARTBEAT_RUNNING)
                .filter_map(|g| g.json["uuid"].as_str())
                .filter(|u| uuids.contains(*u))
                .collect();
            running.len() == uuids.len()
        });
        if !ok {
            let running: HashSet<String> = col
                .got
                .lock()
                .unwrap()
                .iter()
                .filter(|g| g.cmd == cmd::HEARTBEAT_RUNNING)
                .filter_map(|g| g.json["uuid"].as_str().map(str::to_string))
                .collect();
            panic!("only {} of {} fleet guests reached RUNNING", running.len(), uuids.len());
        }
        Self { sim, uuids }
    }

    /// The tags under which the server logs fleet guests (uuid tails).
    pub fn tails(&self) -> Vec<String> {
        self.uuids.iter().map(|u| u[u.len() - 12..].to_string()).collect()
    }

    /// "Heartbeat Miss" warnings the server logged for fleet guests.
    pub fn misses(&self, log: &PathBuf) -> usize {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tails = self.tails();
        text.lines().filter(|l| l.contains("Heartbeat Miss") && tails.iter().any(|t| l.contains(t.as_str()))).count()
    }

    /// LOSS + STOPPED events the server sent for fleet guests.
    pub fn failures(&self, col: &Collector) -> usize {
        col.count(cmd::HEARTBEAT_LOSS, &self.uuids) + col.count(cmd::HEARTBEAT_STOPPED, &self.uuids)
    }
}

/// A misbehaving guest: a listening socket where QEMU would have it, and raw
/// access to the accepted connection (writes never block for long).
pub struct Hostile {
    pub uuid: String,
    pub path: PathBuf,
    listener: Option<std::os::unix::net::UnixListener>,
    pub stream: Option<std::os::unix::net::UnixStream>,
    buf: Vec<u8>,
    seq: u32,
}

impl Hostile {
    pub fn listen(dir: &std::path::Path, uuid: &str) -> Self {
        let path = dir.join(format!("cgcs.heartbeat.{uuid}.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        Self { uuid: uuid.into(), path, listener: Some(listener), stream: None, buf: Vec::new(), seq: 0 }
    }

    pub fn accept(&mut self, timeout: Duration) -> bool {
        let l = self.listener.as_ref().unwrap();
        match wait_for(timeout, || l.accept().ok().map(|(s, _)| s)) {
            Some(s) => {
                s.set_nonblocking(false).unwrap();
                s.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
                self.stream = Some(s);
                self.buf.clear();
                true
            }
            None => false,
        }
    }

    /// Writes what the socket takes of `bytes`; never blocks more than 50 ms.
    pub fn write_some(&mut self, bytes: &[u8]) -> usize {
        use std::io::Write;
        match self.stream.as_mut().map(|s| s.write(bytes)) {
            Some(Ok(n)) => n,
            _ => 0,
        }
    }

    /// Writes `bytes` repeatedly for `dur`; returns the bytes accepted.
    pub fn flood(&mut self, dur: Duration, bytes: &[u8]) -> u64 {
        let end = std::time::Instant::now() + dur;
        let mut total = 0u64;
        let mut off = 0;
        while std::time::Instant::now() < end {
            let n = self.write_some(&bytes[off..]);
            total += n as u64;
            off = (off + n) % bytes.len();
        }
        total
    }

    /// Sends one line (`\n` + bytes + `\n`), best effort.
    pub fn line(&mut self, bytes: &[u8]) {
        let mut v = Vec::with_capacity(bytes.len() + 2);
        v.push(b'\n');
        v.extend_from_slice(bytes);
        v.push(b'\n');
        let end = std::time::Instant::now() + WAIT;
        let mut off = 0;
        while off < v.len() && std::time::Instant::now() < end {
            off += self.write_some(&v[off..]);
        }
    }

    pub fn send(&mut self, msg: guest_heartbeat::wire::guest::GuestMsg) {
        self.seq += 1;
        let bytes = guest_heartbeat::wire::guest::encode_guest(self.seq, &msg);
        let end = std::time::Instant::now() + WAIT;
        let mut off = 0;
        while off < bytes.len() && std::time::Instant::now() < end {
            off += self.write_some(&bytes[off..]);
        }
    }

    /// Host messages received within `window` (reads until it ends).
    pub fn recv_all(&mut self, window: Duration) -> Vec<guest_heartbeat::wire::guest::HostMsg> {
        use guest_heartbeat::wire::guest::{decode_host, Decoded};
        use std::io::Read;
        let end = std::time::Instant::now() + window;
        let mut out = Vec::new();
        let Some(s) = self.stream.as_mut() else { return out };
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if let Decoded::Msg(_, m) = decode_host(&line[..line.len() - 1]) {
                    out.push(m);
                }
            }
            let Some(left) = end.checked_duration_since(std::time::Instant::now()) else { return out };
            s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return out,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Waits for a nack with exactly `text`.
    pub fn expect_nack(&mut self, text: &str, timeout: Duration) -> bool {
        use guest_heartbeat::wire::guest::HostMsg;
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            for m in self.recv_all(Duration::from_millis(100)) {
                if let HostMsg::Nack(n) = m {
                    if n.log_msg == text {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Init with `interval_ms`; waits for the init_ack and returns the first
    /// challenge value.
    pub fn handshake(&mut self, invocation_id: u32, interval_ms: u32) -> u32 {
        use guest_heartbeat::wire::guest::{GuestMsg, HostMsg, Init};
        assert!(self.accept(WAIT), "server never connected to {}", self.uuid);
        self.send(GuestMsg::Init(Init {
            invocation_id,
            name: "hostile".into(),
            heartbeat_interval_ms: interval_ms,
            vote_secs: 2,
            shutdown_notice_secs: 3,
            suspend_notice_secs: 4,
            resume_notice_secs: 5,
            restart_secs: 6,
            corrective_action: "reboot".into(),
        }));
        let end = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < end {
            for m in self.recv_all(Duration::from_millis(100)) {
                if let HostMsg::Challenge(c) = m {
                    return c.heartbeat_challenge;
                }
            }
        }
        panic!("no challenge for hostile {}", self.uuid);
    }

    /// Closes the connection and removes the socket file.
    pub fn remove(&mut self) {
        self.stream = None;
        self.listener = None;
        let _ = std::fs::remove_file(&self.path);
    }
}
