//! Shared test support: unique temp dirs, free ports, the real guestServer
//! binary, a fake guestAgent (UDP) and fake guests (UNIX listeners playing
//! QEMU's side of the channel). Every wait takes a timeout.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guest_heartbeat::wire::envelope::{cmd, Envelope, SIG_GUEST};
use guest_heartbeat::wire::guest::{decode_host, encode_guest, ChallengeResponse, Decoded, GuestMsg, HostMsg, Init};
use serde_json::Value;

/// Where a daemon started by a test logs: nowhere, unless `GH_TEST_LOG` is
/// set (then to the test's own stderr), so that a passing run stays quiet.
pub fn child_stderr() -> Stdio {
    if std::env::var_os("GH_TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// A unique directory removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        // Short: UNIX socket paths are limited to 108 bytes.
        let dir = std::env::temp_dir().join(format!("gh{}-{tag}{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free TCP port on loopback.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A uuid of 36 characters derived from `n`.
pub fn uuid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-{:012x}", u64::from(n) * 7919)
}

/// Waits until `f` returns Some, up to `timeout`, checking every few ms.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The real guestServer in a temp dir.
pub struct Server {
    pub child: Child,
    pub channels: PathBuf,
    pub state: PathBuf,
    pub pidfile: PathBuf,
    pub health: PathBuf,
    pub config: PathBuf,
    pub udp: SocketAddr,
    pub http: Option<SocketAddr>,
}

/// How to start a server.
pub struct ServerOpts<'a> {
    pub ini: &'a str,
    pub args: Vec<String>,
    pub http: bool,
}

impl Default for ServerOpts<'_> {
    fn default() -> Self {
        // A short pulse period so tests can use short intervals.
        Self { ini: "[client]\nhbs_pulse_period = 50\nhbs_failure_threshold = 1\n", args: Vec::new(), http: false }
    }
}

impl Server {
    pub fn start(dir: &TestDir, agent: &FakeAgent, opts: ServerOpts<'_>) -> Self {
        let udp_port = free_udp_port();
        Self::start_on(dir, agent, opts, udp_port)
    }

    /// Starts on a given UDP port (restart tests reuse it).
    pub fn start_on(dir: &TestDir, agent: &FakeAgent, opts: ServerOpts<'_>, udp_port: u16) -> Self {
        let http = opts.http.then(|| SocketAddr::from(([127, 0, 0, 1], free_tcp_port())));
        let stderr = child_stderr();
        Self::launch(dir, agent, opts.ini, &opts.args, udp_port, http, stderr)
    }

    /// The one place that builds guestServer's command line for tests.
    pub fn launch(
        dir: &TestDir,
        agent: &FakeAgent,
        ini: &str,
        args: &[String],
        udp_port: u16,
        http: Option<SocketAddr>,
        stderr: Stdio,
    ) -> Self {
        let channels = dir.path("ch");
        std::fs::create_dir_all(&channels).unwrap();
        let config = dir.path("guestServer.ini");
        // Events go to the agent's address on [agent] rx_port once it has
        // written to us, as with the real daemons: point that at the fake.
        std::fs::write(&config, format!("[agent]\nrx_port = {}\n{ini}", agent.addr().port())).unwrap();
        let udp = SocketAddr::from(([127, 0, 0, 1], udp_port));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_guestServer"));
        cmd.arg("-f")
            .arg("--config")
            .arg(&config)
            .arg("--channel-dir")
            .arg(&channels)
            .arg("--pidfile")
            .arg(dir.path("guestServer.pid"))
            .arg("--health-file")
            .arg(dir.path("guestServer.info"))
            .arg("--state-dir")
            .arg(dir.path("state"))
            .arg("--hostname")
            .arg("compute-0")
            .arg("--listen")
            .arg(udp.to_string())
            .arg("--agent")
            .arg(agent.addr().to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(h) = http {
            cmd.arg("--http").arg(h.to_string());
        }
        let child = cmd.spawn().expect("start guestServer");
        Self {
            child,
            channels,
            state: dir.path("state"),
            pidfile: dir.path("guestServer.pid"),
            health: dir.path("guestServer.info"),
            config,
            udp,
            http,
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_for(timeout, || self.child.try_wait().ok().flatten()).map(|s| s.code().unwrap_or(-1))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// GET on the status API.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http.expect("started with http"), path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = wait_for(WAIT, || std::net::TcpStream::connect(addr).ok()).expect("connect to http");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// A UDP socket playing guestAgent.
pub struct FakeAgent {
    pub sock: UdpSocket,
}

/// A received envelope.
#[derive(Debug, Clone)]
pub struct Got {
    pub cmd: u32,
    pub json: Value,
    pub len: usize,
    pub at: Instant,
}

impl FakeAgent {
    pub fn new() -> Self {
        Self::bind("127.0.0.1:0")
    }

    pub fn bind(addr: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap();
        // Bursts (a fleet's RUNNING events) must not overflow the test's socket.
        let _ = gh_threads::udp::raise_recv_buffer(&sock, 8 << 20);
        Self { sock }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// The next envelope within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Got> {
        let mut buf = [0u8; 2048];
        self.sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).unwrap();
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        let env = Envelope::decode(&buf[..n]).unwrap();
        let json = serde_json::from_slice(&env.payload).unwrap_or(Value::Null);
        Some(Got { cmd: env.cmd, json, len: n, at: Instant::now() })
    }

    /// Skips envelopes until one with `code` (and matching `pred`) arrives.
    pub fn expect(&self, code: u32, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(g) if g.cmd == code && pred(&g.json) => return g,
                Some(_) => continue,
                None => panic!("no envelope 0x{code:08x} within {timeout:?}"),
            }
        }
    }

    /// Envelopes received within `window` (for "nothing else came" checks).
    pub fn drain(&self, window: Duration) -> Vec<Got> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(g) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            got.push(g);
        }
        got
    }

    /// Sends a command the way the C++ guestAgent does (100 + strlen bytes).
    pub fn send(&self, to: SocketAddr, code: u32, json: &str) {
        let bytes = Envelope::signed(SIG_GUEST, code, json.as_bytes().to_vec()).encode_short().unwrap();
        self.sock.send_to(&bytes, to).unwrap();
    }

    pub fn enable(&self, to: SocketAddr, uuid: &str) {
        self.send(
            to,
            cmd::MOD_INST,
            &format!(r#"{{"source":"127.0.0.1","uuid":"{uuid}","service":"heartbeat","state":"enabled"}}"#),
        );
    }
}

/// One guest: a listening socket where QEMU would have it.
pub struct FakeGuest {
    pub uuid: String,
    pub path: PathBuf,
    listener: Option<UnixListener>,
    stream: Option<UnixStream>,
    buf: Vec<u8>,
    seq: u32,
    pub invocation_id: u32,
}

impl FakeGuest {
    pub fn listen(dir: &Path, uuid: &str) -> Self {
        let path = dir.join(format!("cgcs.heartbeat.{uuid}.sock"));
        let listener = UnixListener::bind(&path).unwrap();
        Self {
            uuid: uuid.into(),
            path,
            listener: Some(listener),
            stream: None,
            buf: Vec::new(),
            seq: 0,
            invocation_id: 1000,
        }
    }

    /// Waits for the server to connect.
    pub fn accept(&mut self, timeout: Duration) -> bool {
        let listener = self.listener.as_ref().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stream = wait_for(timeout, || listener.accept().ok().map(|(s, _)| s));
        match stream {
            Some(s) => {
                s.set_nonblocking(false).unwrap();
                self.stream = Some(s);
                self.buf.clear();
                true
            }
            None => false,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.as_mut().unwrap().write_all(bytes).unwrap();
    }

    pub fn send(&mut self, msg: GuestMsg) {
        self.seq += 1;
        let bytes = encode_guest(self.seq, &msg);
        self.send_raw(&bytes);
    }

    pub fn init(&mut self, interval_ms: u32) {
        self.send(GuestMsg::Init(Init {
            invocation_id: self.invocation_id,
            name: format!("vm-{}", &self.uuid[..4]),
            heartbeat_interval_ms: interval_ms,
            vote_secs: 2,
            shutdown_notice_secs: 3,
            suspend_notice_secs: 4,
            resume_notice_secs: 5,
            restart_secs: 6,
            corrective_action: "reboot".into(),
        }));
    }

    pub fn respond(&mut self, challenge: u32, health: &str, action: &str) {
        self.send(GuestMsg::ChallengeResponse(ChallengeResponse {
            heartbeat_response: challenge,
            heartbeat_health: health.into(),
            corrective_action: action.into(),
            log_msg: String::new(),
        }));
    }

    /// The next host message within `timeout` (skipping undecodable lines).
    pub fn recv(&mut self, timeout: Duration) -> Option<HostMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue;
                }
                if let Decoded::Msg(_, m) = decode_host(line) {
                    return Some(m);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let s = self.stream.as_mut()?;
            s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Skips messages until a challenge arrives; returns its value.
    pub fn expect_challenge(&mut self, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Some(HostMsg::Challenge(c)) => return c.heartbeat_challenge,
                Some(_) => continue,
                None => panic!("no challenge for {} within {timeout:?}", self.uuid),
            }
        }
    }

    /// Accept, init, expect init_ack and the first challenge; answer it.
    pub fn handshake(&mut self, interval_ms: u32) {
        assert!(self.accept(WAIT), "server never connected to {}", self.uuid);
        self.init(interval_ms);
        match self.recv(WAIT) {
            Some(HostMsg::InitAck(a)) => assert_eq!(a.invocation_id, self.invocation_id),
            other => panic!("expected init_ack, got {other:?}"),
        }
        let c = self.expect_challenge(WAIT);
        self.respond(c, "healthy", "reboot");
    }

    /// Drops the connection (the server sees EOF).
    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    /// Removes the socket file (what QEMU does when the VM goes away).
    pub fn remove(&mut self) {
        self.stream = None;
        self.listener = None;
        let _ = std::fs::remove_file(&self.path);
    }
}
