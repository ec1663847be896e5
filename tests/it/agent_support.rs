//! Test support for the guestAgent integration tests: the real binary on
//! loopback with explicit free ports and a unique temp dir, a VIM-like HTTP
//! client, a fake guestServer and a fake mtcAgent (UDP sockets), and a fake
//! VIM event server. Every wait has a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub use crate::agent_fakes::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// The controller address the agent listens on for guestServers and
    /// mtcAgent and sends from (another loopback address plays the other
    /// controller in a failover).
    pub ip: String,
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
            ip: "127.0.0.1".into(),
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
        self.arg("--host").arg(&format!("{name}={uuid},127.0.0.1:{port}"))
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
    std::fs::write(&mtc_conf, "[agent]\nhbs_to_mtc_event_port = 2107\nmtc_to_guest_cmd_port = 2108\n").unwrap();
    let nfv_conf = cfg.dir.join("config.ini");
    std::fs::write(&nfv_conf, format!("[guest-rest-api]\nhost=127.0.0.1\nport={}\n", cfg.vim)).unwrap();
    let log = cfg.dir.join(format!(
        "agent-{}.log",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
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
        .arg(format!("{}:{}", cfg.ip, cfg.listen))
        .arg("--vim-url")
        .arg(format!("http://127.0.0.1:{}", cfg.vim))
        .arg("--mtc-listen")
        .arg(format!("{}:{}", cfg.ip, cfg.mtc_listen))
        .arg("--log-level")
        .arg("debug")
        .args(&cfg.extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let child = c.spawn().unwrap();
    let mut agent = Agent {
        child: Some(child),
        http: cfg.http,
        listen: format!("{}:{}", cfg.ip, cfg.listen).parse().unwrap(),
        mtc_listen: format!("{}:{}", cfg.ip, cfg.mtc_listen).parse().unwrap(),
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
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
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
            &[("User-Agent", "vim/1.0"), ("X-Auth-Token", "gAAAAABtoken"), ("Accept", "application/json")],
        )
    }

    /// What the VIM does to turn heartbeat reporting on for `uuid` on
    /// compute-0: host enabled, instance created, heartbeat service enabled;
    /// each call must answer 200.
    pub fn vim_enable(&self, uuid: &str) {
        assert_eq!(self.vim("PUT", &format!("/v1/hosts/{HOST_UUID}/enable"), Some(&host_body())).0, 200);
        assert_eq!(self.vim("POST", &format!("/v1/instances/{uuid}"), Some(&create_body(uuid))).0, 200);
        assert_eq!(self.vim("PATCH", &format!("/v1/instances/{uuid}"), Some(&service_body(uuid, "enabled"))).0, 200);
    }
}

/// The VIM's body for compute-0's host calls.
pub fn host_body() -> String {
    format!(r#"{{"uuid":"{HOST_UUID}","hostname":"compute-0"}}"#)
}

/// The VIM's body creating `uuid` on compute-0.
pub fn create_body(uuid: &str) -> String {
    format!(r#"{{"uuid":"{uuid}","hostname":"compute-0","services":["heartbeat"]}}"#)
}

/// The VIM's body setting `uuid`'s heartbeat service to `state`.
pub fn service_body(uuid: &str, state: &str) -> String {
    format!(r#"{{"uuid":"{uuid}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"{state}"}}]}}"#)
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
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nContent-Type: application/json\r\n"
    );
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
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

/// Parses a 2xx body as JSON (the VIM's `json.loads`).
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}
