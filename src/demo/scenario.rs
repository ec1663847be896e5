//! The demo scenario: lay out the temp dir and configs, start the sims, the
//! daemons and the VIM stand-in, provision hosts and instances through the
//! agent's VIM API, then play the script against the clock.
//!
//! Runs on the demo's main thread.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::http::call;
use super::procs::{sibling_binary, Daemon};
use super::timeline::{self, Outcome};
use super::vim::{serve, VimInstance};
use super::{DemoError, Note};
use crate::sim::{Behaviour, GuestPlan, Sim, SimConfig, SimEventKind, SimHandle, Vote};
use crate::wire::vocab::CorrectiveAction;

/// Demo options.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to run before tearing down.
    pub duration: Duration,
}

const HOSTS: [(&str, &str); 2] =
    [("compute-0", "c0c0c0c0-0000-4000-8000-000000000000"), ("compute-1", "c1c1c1c1-0000-4000-8000-000000000001")];
/// Guests per host.
const GUESTS: usize = 3;

/// The script: (seconds after start, what happens).
#[derive(Debug, Clone, Copy)]
enum Act {
    Unhealthy { host: usize, guest: usize },
    Silent { host: usize, guest: usize },
    Vote { host: usize, guest: usize },
}

const SCRIPT: [(u64, Act); 4] = [
    (7, Act::Unhealthy { host: 1, guest: 1 }),
    (9, Act::Silent { host: 0, guest: 1 }),
    (13, Act::Vote { host: 0, guest: 2 }),
    (16, Act::Vote { host: 1, guest: 0 }),
];

fn free_tcp() -> Result<u16, DemoError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| DemoError::Setup("a TCP port".into(), e))?;
    l.local_addr().map(|a| a.port()).map_err(|e| DemoError::Setup("a TCP port".into(), e))
}

fn free_udp() -> Result<u16, DemoError> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| DemoError::Setup("a UDP port".into(), e))?;
    s.local_addr().map(|a| a.port()).map_err(|e| DemoError::Setup("a UDP port".into(), e))
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|e| DemoError::Setup(path.display().to_string(), e))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Removes the temp dir on every exit path.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Serialize)]
struct HostBody<'a> {
    uuid: &'a str,
    hostname: &'a str,
}

#[derive(Serialize)]
struct CreateBody<'a> {
    uuid: &'a str,
    hostname: &'a str,
    services: [&'static str; 1],
}

#[derive(Serialize)]
struct SetBody<'a> {
    uuid: &'a str,
    hostname: &'a str,
    services: [SetService; 1],
}

#[derive(Serialize)]
struct SetService {
    service: &'static str,
    state: &'static str,
}

#[derive(Serialize)]
struct VoteBody<'a> {
    uuid: &'a str,
    hostname: &'a str,
    action: &'a str,
}

/// Runs the demo; returns what the timeline saw.
pub fn run(opts: &Options, stop: &Receiver<()>) -> Result<Outcome, DemoError> {
    let start = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!("guest-heartbeat-demo-{}", std::process::id())));
    let d = dir.0.clone();
    std::fs::create_dir_all(&d).map_err(|e| DemoError::Setup(d.display().to_string(), e))?;
    let agent_bin = sibling_binary("guestAgent")?;
    let server_bin = sibling_binary("guestServer")?;

    let (tx, rx) = crossbeam_channel::unbounded::<Note>();
    // Guests: simulated in-process, one sim (one "QEMU") per host.
    let mut sims = Vec::new();
    let mut names = HashMap::new();
    let mut instances = Vec::new();
    for (h, (host, host_uuid)) in HOSTS.iter().enumerate() {
        let ch = d.join(format!("ch{h}"));
        std::fs::create_dir_all(&ch).map_err(|e| DemoError::Setup(ch.display().to_string(), e))?;
        let mut cfg = SimConfig::new(&ch, GUESTS);
        cfg.seed = 100 + h as u64;
        cfg.events = true;
        cfg.plans.push((2, GuestPlan { vote: Vote::Reject, ..Default::default() }));
        let sim = Sim::start(cfg)?;
        for g in 0..GUESTS {
            let label = format!("{host}/vm-{g}");
            names.insert(sim.uuid(g).to_string(), label);
            instances.push(VimInstance {
                uuid: sim.uuid(g).to_string(),
                host_uuid: host_uuid.to_string(),
                hostname: host.to_string(),
            });
        }
        sims.push(sim);
    }
    let names_for_print = names.clone();
    let printer = std::thread::Builder::new()
        .name("timeline".into())
        .spawn(move || timeline::print(rx, names_for_print, start))
        .map_err(|e| DemoError::Spawn("timeline thread".into(), e))?;
    for (h, sim) in sims.iter().enumerate() {
        forward_sim(sim, h, tx.clone())?;
    }

    // The VIM stand-in.
    let vim = TcpListener::bind("127.0.0.1:0").map_err(|e| DemoError::Setup("VIM listener".into(), e))?;
    let vim_addr = vim.local_addr().map_err(|e| DemoError::Setup("VIM listener".into(), e))?;
    let instances = Arc::new(instances);
    let hosts: HashMap<String, String> = HOSTS.iter().map(|(n, u)| (u.to_string(), n.to_string())).collect();
    let (vim_tx, vim_instances) = (tx.clone(), Arc::clone(&instances));
    std::thread::Builder::new()
        .name("vim".into())
        .spawn(move || serve(vim, vim_instances, hosts, vim_tx))
        .map_err(|e| DemoError::Spawn("VIM thread".into(), e))?;

    // guestAgent.
    let (http_port, agent_port, mtc_port, mtc_ready) = (free_tcp()?, free_udp()?, free_udp()?, free_udp()?);
    let server_ports = [free_udp()?, free_udp()?];
    write(&d.join("guestAgent.ini"), &format!("[agent]\nrx_port = {agent_port}\n"))?;
    write(&d.join("mtc.conf"), "")?;
    write(&d.join("nfv.ini"), "")?;
    let agent_http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut agent_args = vec![
        "-f".to_string(),
        "--config".into(),
        d.join("guestAgent.ini").display().to_string(),
        "--mtc-conf".into(),
        d.join("mtc.conf").display().to_string(),
        "--nfv-config".into(),
        d.join("nfv.ini").display().to_string(),
        "--pidfile".into(),
        d.join("guestAgent.pid").display().to_string(),
        "--health-file".into(),
        d.join("guestAgent.info").display().to_string(),
        "--state-dir".into(),
        d.join("agent-state").display().to_string(),
        "--http".into(),
        agent_http.to_string(),
        "--listen".into(),
        format!("127.0.0.1:{agent_port}"),
        "--vim-url".into(),
        format!("http://{vim_addr}"),
        "--mtc-listen".into(),
        format!("127.0.0.1:{mtc_port}"),
        "--mtc-addr".into(),
        format!("127.0.0.1:{mtc_ready}"),
        "--source".into(),
        "127.0.0.1".into(),
    ];
    for ((host, uuid), port) in HOSTS.iter().zip(server_ports) {
        agent_args.push("--host".into());
        agent_args.push(format!("{host}={uuid},127.0.0.1:{port}"));
    }
    tx.send(Note::Step(format!("starting guestAgent (VIM API {agent_http}, events to VIM stand-in {vim_addr})"))).ok();
    let mut daemons = vec![Daemon::start("guestAgent", &agent_bin, &agent_args, &[], tx.clone())?];
    // Two guestServers, one per "compute host".
    for (h, ((host, _), port)) in HOSTS.iter().zip(server_ports).enumerate() {
        let ini = d.join(format!("guestServer-{h}.ini"));
        write(
            &ini,
            &format!("[agent]\nrx_port = {agent_port}\n[client]\nhbs_pulse_period = 400\nhbs_failure_threshold = 1\n"),
        )?;
        let sd = |n: &str| d.join(format!("{n}-{h}")).display().to_string();
        let a = args(&[
            "-f",
            "--config",
            &ini.display().to_string(),
            "--channel-dir",
            &d.join(format!("ch{h}")).display().to_string(),
            "--pidfile",
            &sd("guestServer.pid"),
            "--health-file",
            &sd("guestServer.info"),
            "--state-dir",
            &sd("server-state"),
            "--hostname",
            host,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--agent",
            &format!("127.0.0.1:{agent_port}"),
        ]);
        tx.send(Note::Step(format!("starting guestServer for {host} (commands on 127.0.0.1:{port})"))).ok();
        const KEEP: &[&str] = &["-> agent", "Heartbeat Miss"];
        daemons.push(Daemon::start(&format!("guestServer@{h}"), &server_bin, &a, KEEP, tx.clone())?);
    }

    let result = provision(agent_http, &instances, &tx)
        .and_then(|()| play(opts, start, &sims, &instances, agent_http, stop, &tx));
    tx.send(Note::Step("tearing down".into())).ok();
    for daemon in daemons.into_iter().rev() {
        let name = daemon.name.clone();
        let code = daemon.stop();
        tx.send(Note::Step(format!("{name} exited with {}", code.map_or("a signal".into(), |c| c.to_string())))).ok();
    }
    for sim in sims {
        let _ = sim.stop();
    }
    tx.send(Note::Done).ok();
    let outcome = printer.join().unwrap_or_default();
    result.map(|()| outcome)
}

/// Forwards a sim's events to the timeline, one line per interesting moment.
fn forward_sim(sim: &SimHandle, host: usize, tx: Sender<Note>) -> Result<(), DemoError> {
    let Some(events) = sim.events().cloned() else { return Ok(()) };
    std::thread::Builder::new()
        .name(format!("sim-events-{host}"))
        .spawn(move || {
            let mut answered = std::collections::HashSet::new();
            for ev in events {
                let label = format!("{}/vm-{}", HOSTS[host].0, ev.guest);
                let text = match ev.kind {
                    SimEventKind::Connected => "guestServer connected to my channel".to_string(),
                    SimEventKind::InitAcked(id) => format!("init acked (invocation {id})"),
                    SimEventKind::ChallengeAnswered(_) if answered.insert(ev.guest) => {
                        "answering challenges (heartbeating)".to_string()
                    }
                    SimEventKind::Notify { event, notification, answered: Some(r) } => {
                        format!("{notification} {event} notice: I answer {r}")
                    }
                    _ => continue,
                };
                if tx.send(Note::Guest { label, text }).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| DemoError::Spawn("sim event thread".into(), e))
}

/// Provisions both hosts and every instance through the agent's VIM API, as
/// the VIM does, and enables reporting.
fn provision(agent: SocketAddr, instances: &[VimInstance], tx: &Sender<Note>) -> Result<(), DemoError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(agent, "GET", &format!("/v1/hosts/{}", HOSTS[0].1), None).map(|(c, _)| c == 0).unwrap_or(true) {
        if Instant::now() > deadline {
            return Err(DemoError::AgentDown(agent));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let vim = |method: &str, path: String, body: Vec<u8>| {
        let answer = call(agent, method, &path, Some(&body));
        let shown = match answer {
            Ok((code, _)) => format!("{method} {path} -> {code}"),
            Err(e) => format!("{method} {path} -> failed: {e}"),
        };
        tx.send(Note::VimCall(shown)).ok();
    };
    let json = |v: &dyn erased::Json| v.bytes();
    for (host, uuid) in HOSTS {
        let body = json(&HostBody { uuid, hostname: host });
        vim("POST", format!("/v1/hosts/{uuid}"), body.clone());
        vim("PUT", format!("/v1/hosts/{uuid}/enable"), body);
    }
    for i in instances {
        vim(
            "POST",
            format!("/v1/instances/{}", i.uuid),
            json(&CreateBody { uuid: &i.uuid, hostname: &i.hostname, services: ["heartbeat"] }),
        );
        vim(
            "PATCH",
            format!("/v1/instances/{}", i.uuid),
            json(&SetBody {
                uuid: &i.uuid,
                hostname: &i.hostname,
                services: [SetService { service: "heartbeat", state: "enabled" }],
            }),
        );
    }
    Ok(())
}

/// Small object-safe JSON helper so the closures above take any body type.
mod erased {
    pub trait Json {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn bytes(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// Plays the script until the duration ends or Ctrl-C.
fn play(
    opts: &Options,
    start: Instant,
    sims: &[SimHandle],
    instances: &[VimInstance],
    agent: SocketAddr,
    stop: &Receiver<()>,
    tx: &Sender<Note>,
) -> Result<(), DemoError> {
    let end = start + opts.duration;
    for (at, act) in SCRIPT {
        let when = start + Duration::from_secs(at);
        if when >= end || stop.recv_deadline(when).is_ok() {
            return Ok(());
        }
        match act {
            Act::Unhealthy { host, guest } => {
                tx.send(Note::Step(format!("{}/vm-{guest} turns unhealthy (asks for 'stop')", HOSTS[host].0))).ok();
                sims[host].set_behaviour(guest, Behaviour::Unhealthy(CorrectiveAction::Stop));
            }
            Act::Silent { host, guest } => {
                tx.send(Note::Step(format!("{}/vm-{guest} hangs: stops answering challenges", HOSTS[host].0))).ok();
                sims[host].set_behaviour(guest, Behaviour::Silent);
            }
            Act::Vote { host, guest } => {
                let Some(i) = instances.iter().find(|i| i.uuid == sims[host].uuid(guest)) else { continue };
                let body = serde_json::to_vec(&VoteBody { uuid: &i.uuid, hostname: &i.hostname, action: "stop" })
                    .unwrap_or_default();
                let path = format!("/v1/instances/{}/vote", i.uuid);
                let shown = match call(agent, "POST", &path, Some(&body)) {
                    Ok((code, answer)) => format!("POST {path} (stop) -> {code} {answer}"),
                    Err(e) => format!("POST {path} -> failed: {e}"),
                };
                tx.send(Note::VimCall(shown)).ok();
            }
        }
    }
    let _ = stop.recv_deadline(end);
    Ok(())
}
