//! Test support for the guestAgent integration tests: the real binary on
//! loopback with explicit free ports and a unique temp dir, a VIM-like HTTP
//! client, a fake guestServer and a fake mtcAgent (UDP sockets), and a fake
//! VIM event server. Every wait has a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(10);
pub const HOST_UUID: &str = "010e7741-1173-4a3b-88fa-c4e5905500ca";
pub const INST_A: &str = "8d80875b-fa73-4ccb-bce3-1cd4df104400";
pub const INST_B: &str = "8d80875b-fa73-4ccb-bce3-1cd4df104401";

pub mod cmd {
    pub const ADD_HOST: u32 = 0x1111_0010;
    pub const DEL_HOST: u32 = 0x1111_0011;
    pub const MOD_HOST: u32 = 0x1111_0012;
    pub const ADD_INST: u32 = 0x1111_0020;
    pub const DEL_INST: u32 = 0x1111_0021;
    pub const MOD_INST: u32 = 0x1111_0022;
    pub const QRY_INST: u32 = 0x1111_0023;
    pub const VOTE_INST: u32 = 0x1111_0024;
    pub const NOTIFY_INST: u32 = 0x1111_0025;
    pub const READY: u32 = 0xF0F0_F0F0;
    pub const LOSS: u32 = 0x0000_FEAD;
    pub const ILLHEALTH: u32 = 0x0001_FEAD;
    pub const STOPPED: u32 = 0x0100_FEAD;
    pub const RUNNING: u32 = 0x0110_FEAD;
    pub const VOTE_NOTIFY: u32 = 0xFEED_FEED;
}

/// A free loopback port (bound once to port 0, then released).
pub fn free_port() -> u16 {
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = t.local_addr().unwrap().port();
    // Also free for UDP? Check, and retry otherwise.
    match UdpSocket::bind(("127.0.0.1", port)) {
        Ok(_) => port,
        Err(_) => free_port(),
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gh-agent-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Ports and paths of one agent.
pub struct AgentCfg {
    pub dir: PathBuf,
    pub http: u16,
    pub listen: u16,
    pub vim: u16,
    pub mtc_listen: u16,
    pub extra: Vec<String>,
    pub ini: String,
    /// Holds the VIM port until a `FakeVim` takes it, so that no outgoing
    /// connection grabs it as its ephemeral port meanwhile.
    pub vim_listener: Option<TcpListener>,
}

impl AgentCfg {
    pub fn new(tag: &str) -> Self {
        let vim_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            dir: temp_dir(tag),
            http: free_port(),
            listen: free_port(),
            vim: vim_listener.local_addr().unwrap().port(),
            mtc_listen: free_port(),
            extra: Vec::new(),
            ini: String::new(),
            vim_listener: Some(vim_listener),
        }
    }

    /// Starts the fake VIM on the reserved port.
    pub fn vim(&mut self) -> FakeVim {
        FakeVim::serve(self.vim_listener.take().expect("VIM already started"))
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    pub fn host(self, name: &str, uuid: &str, port: u16) -> Self {
        self.arg("--host")
            .arg(&format!("{name}={uuid},127.0.0.1:{port}"))
    }

    pub fn ini(mut self, text: &str) -> Self {
        self.ini.push_str(text);
        self
    }
}

/// A running guestAgent; SIGTERM + wait on drop.
pub struct Agent {
    pub child: Option<Child>,
    pub http: u16,
    pub listen: SocketAddr,
    pub mtc_listen: SocketAddr,
    pub dir: PathBuf,
    pub log: PathBuf,
}

pub fn start(cfg: &AgentCfg) -> Agent {
    let ini = cfg.dir.join("guestAgent.ini");
    std::fs::write(&ini, &cfg.ini).unwrap();
    let mtc_conf = cfg.dir.join("mtc.conf");
    std::fs::write(
        &mtc_conf,
        "[agent]\nhbs_to_mtc_event_port = 2107\nmtc_to_guest_cmd_port = 2108\n",
    )
    .unwrap();
    let nfv_conf = cfg.dir.join("config.ini");
    std::fs::write(
        &nfv_conf,
        format!("[guest-rest-api]\nhost=127.0.0.1\nport={}\n", cfg.vim),
    )
    .unwrap();
    let log = cfg.dir.join(format!(
        "agent-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut c = Command::new(env!("CARGO_BIN_EXE_guestAgent"));
    c.arg("-f")
        .arg("--config")
        .arg(&ini)
        .arg("--mtc-conf")
        .arg(&mtc_conf)
        .arg("--nfv-config")
        .arg(&nfv_conf)
        .arg("--state-dir")
        .arg(cfg.dir.join("state"))
        .arg("--pidfile")
        .arg(cfg.dir.join("guestAgent.pid"))
        .arg("--health-file")
        .arg(cfg.dir.join("guestAgent.info"))
        .arg("--http")
        .arg(format!("127.0.0.1:{}", cfg.http))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", cfg.listen))
        .arg("--vim-url")
        .arg(format!("http://127.0.0.1:{}", cfg.vim))
        .arg("--mtc-listen")
        .arg(format!("127.0.0.1:{}", cfg.mtc_listen))
        .arg("--log-level")
        .arg("debug")
        .args(&cfg.extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let child = c.spawn().unwrap();
    let mut agent = Agent {
        child: Some(child),
        http: cfg.http,
        listen: format!("127.0.0.1:{}", cfg.listen).parse().unwrap(),
        mtc_listen: format!("127.0.0.1:{}", cfg.mtc_listen).parse().unwrap(),
        dir: cfg.dir.clone(),
        log,
    };
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", cfg.http)).is_err() {
        let exited = agent.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "agent did not start ({exited:?}):\n{}",
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
    agent
}

impl Agent {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not stop on SIGTERM:\n{}", self.log_text());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A VIM request with the VIM's own headers.
    pub fn vim(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http_request(
            self.http,
            method,
            path,
            body,
            &[
                ("User-Agent", "vim/1.0"),
                ("X-Auth-Token", "gAAAAABtoken"),
                ("Accept", "application/json"),
            ],
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw HTTP/1.1 request; returns the status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nContent-Type: application/json\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Parses a 2xx body as JSON (the VIM's `json.loads`).
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// A fake guestServer or mtcAgent: one UDP socket.
pub struct FakeUdp {
    pub sock: UdpSocket,
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
        Self { sock }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// The next datagram of any kind.
    pub fn recv_any(&self) -> Msg {
        self.try_recv(WAIT)
            .expect("no datagram within the deadline")
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
        self.sock.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        let b = &buf[..n];
        let end = b[100..].iter().position(|c| *c == 0).map_or(n, |p| 100 + p);
        Some(Msg {
            len: n,
            hdr: b[..64].to_vec(),
            cmd: u32::from_le_bytes(b[72..76].try_into().unwrap()),
            payload: String::from_utf8_lossy(&b[100..end]).to_string(),
            from,
        })
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
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
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
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(VimReq {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

impl FakeVim {
    /// Binds `port` again (after an outage), retrying while it is in use.
    pub fn start_on(port: u16) -> Self {
        let deadline = Instant::now() + WAIT;
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => return Self::serve(l),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "cannot rebind VIM port {port}: {e}"
                ),
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn serve(listener: TcpListener) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mode = Arc::new(Mutex::new(VimMode::Close));
        let host_state = Arc::new(Mutex::new(
            r#"{"uuid":"x","hostname":"x","state":"enabled"}"#.to_string(),
        ));
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
                    let _ = write!(
                        s,
                        "HTTP/1.0 {code} X\r\nContent-Type: application/json\r\n\r\n{body}"
                    );
                }
            }
        });
        Self {
            rx,
            mode,
            host_state,
            instances,
        }
    }

    pub fn next(&self) -> VimReq {
        self.rx.recv_timeout(WAIT).expect("no VIM request in time")
    }

    /// The next PATCH (skipping audit GETs).
    pub fn next_event(&self) -> VimReq {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self
                .rx
                .recv_deadline(deadline)
                .expect("no VIM event in time");
            if r.method == "PATCH" {
                return r;
            }
        }
    }
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}
