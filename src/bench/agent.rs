//! The guestAgent case: the real guestAgent with a VIM stand-in (HTTP
//! listener, thread "bench-vim", records each event PATCH with its arrival
//! time and answers 200), a fake guestServer (UDP socket playing the host
//! the agent knows) and 50 HTTP client threads ("bench-api-<i>") sending
//! VIM-API requests at a fixed total rate (open loop). Measures request
//! latency and achieved throughput, and the delivery latency from a
//! guestServer LOSS datagram to its PATCH at the VIM stand-in. The
//! orchestration runs on the bench's main thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use serde::Serialize;

use super::machine::LoadAvg;
use super::procstat::{sample, ProcDelta};
use super::stats::Summary;
use super::BenchError;
use crate::wire::envelope::{cmd, Envelope};

const HOST_UUID: &str = "010e7741-1173-4a3b-88fa-c4e5905500ca";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub agent_bin: PathBuf,
    pub scratch: PathBuf,
    pub clients: usize,
    pub rate_per_sec: u32,
    pub window: Duration,
    pub instances: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentResult {
    pub clients: usize,
    pub target_rate_per_sec: u32,
    pub achieved_rate_per_sec: f64,
    pub requests: u64,
    pub errors: u64,
    pub api_latency: Summary,
    pub events_sent: usize,
    pub events_delivered: usize,
    pub event_latency: Summary,
    pub agent_cpu_pct_of_core: f64,
    pub agent_rss_kib: u64,
    pub agent_threads: u64,
    pub load_avg_start: LoadAvg,
    pub load_avg_end: LoadAvg,
}

/// A PATCH the VIM stand-in received.
struct VimHit {
    at: Instant,
    path: String,
}

struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Io(what.to_string(), e)
}

fn free_port() -> Result<u16, BenchError> {
    Ok(TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(io("pick a port"))?.port())
}

/// One HTTP/1.1 request with `Connection: close`; returns the status code.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    Ok(text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
}

/// Thread "bench-vim": accepts, reads one request, answers 200, closes.
fn spawn_vim(listener: TcpListener) -> Result<(Receiver<VimHit>, JoinHandle<()>), BenchError> {
    let (tx, rx) = unbounded();
    let t = std::thread::Builder::new()
        .name("bench-vim".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut at = None;
                // Headers, then Content-Length bytes of body.
                let complete = loop {
                    let Ok(n) = s.read(&mut chunk) else { break false };
                    if n == 0 {
                        break false;
                    }
                    at.get_or_insert_with(Instant::now);
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break true;
                        }
                    }
                };
                let text = String::from_utf8_lossy(&buf).to_string();
                if text.starts_with("STOP") {
                    return;
                }
                // The agent's audit asks for the host state and the host's
                // instance list: say "enabled" and "none", as a VIM would
                // for a host the bench has just enabled.
                let body = if text.starts_with("GET") && text.contains("/hosts/") {
                    format!(r#"{{"uuid":"{HOST_UUID}","hostname":"bench","state":"enabled"}}"#)
                } else if text.starts_with("GET") {
                    r#"{"instances":[]}"#.to_string()
                } else {
                    String::new()
                };
                let reply =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(reply.as_bytes());
                if complete && text.starts_with("PATCH") {
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                    let _ = tx.send(VimHit { at: at.unwrap_or_else(Instant::now), path });
                }
            }
        })
        .map_err(io("spawn bench-vim"))?;
    Ok((rx, t))
}

fn instance_uuid(i: usize) -> String {
    format!("8d80875b-fa73-4ccb-bce3-{i:012x}")
}

/// Runs the guestAgent case.
pub fn run(spec: &AgentSpec) -> Result<AgentResult, BenchError> {
    let dir = spec.scratch.join("agent");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io("agent scratch dir"))?;
    let load_avg_start = LoadAvg::now();
    let vim_listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind VIM stand-in"))?;
    let vim_addr = vim_listener.local_addr().map_err(io("VIM address"))?;
    let (vim_rx, vim_thread) = spawn_vim(vim_listener)?;
    let gs = UdpSocket::bind("127.0.0.1:0").map_err(io("bind fake guestServer"))?;
    gs.set_nonblocking(true).map_err(io("fake guestServer"))?;
    let gs_port = gs.local_addr().map_err(io("fake guestServer"))?.port();
    let mtc = UdpSocket::bind("127.0.0.1:0").map_err(io("bind fake mtcAgent"))?;
    let mtc_port = mtc.local_addr().map_err(io("fake mtcAgent"))?.port();
    let (http_port, listen_port, mtc_listen) = (free_port()?, free_port()?, free_port()?);

    let write = |name: &str, text: String| -> Result<PathBuf, BenchError> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(io(name))?;
        Ok(p)
    };
    let ini = write("guestAgent.ini", String::new())?;
    let mtc_conf = write("mtc.conf", "[agent]\nhbs_to_mtc_event_port = 2107\nmtc_to_guest_cmd_port = 2108\n".into())?;
    let nfv = write("config.ini", format!("[guest-rest-api]\nhost=127.0.0.1\nport={}\n", vim_addr.port()))?;
    let log = std::fs::File::create(dir.join("guestAgent.log")).map_err(io("agent log"))?;
    let child = Command::new(&spec.agent_bin)
        .arg("-f")
        .args(["--config".as_ref(), ini.as_os_str(), "--mtc-conf".as_ref(), mtc_conf.as_os_str()])
        .args(["--nfv-config".as_ref(), nfv.as_os_str()])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--pidfile")
        .arg(dir.join("guestAgent.pid"))
        .arg("--health-file")
        .arg(dir.join("guestAgent.info"))
        .args(["--http", &format!("127.0.0.1:{http_port}"), "--listen", &format!("127.0.0.1:{listen_port}")])
        .args(["--vim-url", &format!("http://{vim_addr}"), "--mtc-listen", &format!("127.0.0.1:{mtc_listen}")])
        .args(["--mtc-addr", &format!("127.0.0.1:{mtc_port}")])
        .args(["--host", &format!("bench={HOST_UUID},127.0.0.1:{gs_port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(io("start guestAgent"))?;
    let agent = AgentProc(child);
    let up = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", http_port)).is_err() {
        if Instant::now() > up {
            return Err(BenchError::Other("guestAgent's HTTP API did not come up".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Provision: host reporting on, instances created and enabled.
    let hb = format!(r#"{{"uuid":"{HOST_UUID}","hostname":"bench"}}"#);
    expect_ok(http(http_port, "PUT", &format!("/v1/hosts/{HOST_UUID}/enable"), &hb), "host enable")?;
    for i in 0..spec.instances {
        let u = instance_uuid(i);
        let create = format!(r#"{{"uuid":"{u}","hostname":"bench","services":["heartbeat"]}}"#);
        expect_ok(http(http_port, "POST", &format!("/v1/instances/{u}"), &create), "instance create")?;
        let set =
            format!(r#"{{"uuid":"{u}","hostname":"bench","services":[{{"service":"heartbeat","state":"enabled"}}]}}"#);
        expect_ok(http(http_port, "PATCH", &format!("/v1/instances/{u}"), &set), "instance enable")?;
        drain(&gs);
    }

    // API load: open loop, each client at rate/clients per second.
    let pid = agent.0.id();
    let a0 = sample(pid)?;
    let per_client = Duration::from_secs_f64(spec.clients as f64 / f64::from(spec.rate_per_sec.max(1)));
    let start = Instant::now() + Duration::from_millis(100);
    let mut clients = Vec::new();
    for c in 0..spec.clients {
        let (window, instances, n) = (spec.window, spec.instances.max(1), spec.clients as f64);
        let t = std::thread::Builder::new()
            .name(format!("bench-api-{c}"))
            .spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                // Spread the clients' phases over one period.
                let mut next = start + per_client.mul_f64(c as f64 / n);
                let mut k = c;
                while next < start + window {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    let sent = Instant::now();
                    let path = format!("/v1/instances/{}", instance_uuid(k % instances));
                    match http(http_port, "GET", &path, "") {
                        Ok(200) => lat.push(sent.elapsed().as_secs_f64() * 1000.0),
                        _ => errors += 1,
                    }
                    k += 7;
                    next += per_client;
                }
                (lat, errors)
            })
            .map_err(io("spawn bench-api"))?;
        clients.push(t);
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in clients {
        if let Ok((l, e)) = t.join() {
            lat.extend(l);
            errors += e;
        }
    }
    let a1 = sample(pid)?;
    let requests = lat.len() as u64 + errors;

    // Event delivery: one LOSS per instance, 20 ms apart.
    let agent_addr = SocketAddr::from(([127, 0, 0, 1], listen_port));
    let mut sent_at = Vec::new();
    let events = spec.instances.min(200);
    for i in 0..events {
        let json = format!(r#"{{"hostname":"bench","uuid":"{}"}}"#, instance_uuid(i));
        let bytes = Envelope::new(cmd::HEARTBEAT_LOSS, json.into_bytes())
            .encode_full()
            .map_err(|e| BenchError::Other(e.to_string()))?;
        sent_at.push(Instant::now());
        gs.send_to(&bytes, agent_addr).map_err(io("send LOSS"))?;
        std::thread::sleep(Duration::from_millis(20));
        drain(&gs);
    }
    std::thread::sleep(Duration::from_secs(1));
    let hits: Vec<VimHit> = vim_rx.try_iter().collect();
    let mut event_lat = Vec::new();
    for (i, at) in sent_at.iter().enumerate() {
        let u = instance_uuid(i);
        if let Some(h) = hits.iter().filter(|h| h.at >= *at && h.path.contains(&u)).min_by_key(|h| h.at) {
            event_lat.push((h.at - *at).as_secs_f64() * 1000.0);
        }
    }
    let d = ProcDelta::between(&a0, &a1);
    drop(agent);
    // Stop the VIM stand-in: a request starting with STOP ends its loop.
    if let Ok(mut s) = TcpStream::connect(vim_addr) {
        let _ = s.write_all(b"STOP\r\n\r\n");
    }
    let _ = vim_thread.join();
    Ok(AgentResult {
        clients: spec.clients,
        target_rate_per_sec: spec.rate_per_sec,
        achieved_rate_per_sec: lat.len() as f64 / spec.window.as_secs_f64().max(1e-9),
        requests,
        errors,
        api_latency: Summary::of(lat),
        events_sent: events,
        events_delivered: event_lat.len(),
        event_latency: Summary::of(event_lat),
        agent_cpu_pct_of_core: 100.0 * d.sched_run_secs / d.secs.max(1e-9),
        agent_rss_kib: a1.rss_kib,
        agent_threads: a1.threads,
        load_avg_start,
        load_avg_end: LoadAvg::now(),
    })
}

fn expect_ok(r: std::io::Result<u16>, what: &str) -> Result<(), BenchError> {
    match r {
        Ok(200) => Ok(()),
        Ok(code) => Err(BenchError::Other(format!("{what}: HTTP {code}"))),
        Err(e) => Err(BenchError::Io(what.to_string(), e)),
    }
}

/// Discards what the agent sent to the fake guestServer.
fn drain(sock: &UdpSocket) {
    let mut buf = [0u8; 2048];
    while sock.recv_from(&mut buf).is_ok() {}
}

/// The guestAgent binary next to `server_bin`.
pub fn agent_bin_near(server_bin: &Path) -> PathBuf {
    server_bin.with_file_name("guestAgent")
}
