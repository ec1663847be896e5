//! Process start-up and shutdown for the guestAgent binary (main thread):
//! configuration, daemonising, logging, pid and health files, the default
//! addresses, spawning every thread, running the dispatcher on the main
//! thread, then joining everything. `MainError::exit_code` is the one place
//! errors become exit codes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use gh_threads::http::{spawn_http, GateLimits, HttpError};
use gh_threads::signals::spawn_signals;
use gh_threads::timer::spawn_timer;
use gh_threads::udp::spawn_udp_receiver;
use thiserror::Error;

use crate::daemon::{self, DaemonError, LogTarget, PidFile};
use crate::ini::ConfigError;
use crate::wire::auth::SEALED_LEN;
use crate::wire::envelope::ENVELOPE_LEN;
use crate::wire::vim::Fail;

use super::api::{self, ApiContext};
use super::config::{self, Settings, USAGE};
use super::dispatcher::{Dispatcher, Event, Stop, EVENT_QUEUE};
use super::metrics::HttpCounters;
use super::state::{Io, State};
use super::vim_sender::{job_channel, spawn_vim_sender};
use super::{link, mtc, persist};

/// Why the daemon could not run.
#[derive(Debug, Error)]
pub enum MainError {
    #[error("configuration")]
    Config(#[from] ConfigError),
    #[error("start-up")]
    Daemon(#[from] DaemonError),
    #[error("cannot use {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http server")]
    Http(#[from] HttpError),
    #[error("state directory")]
    Persist(#[from] persist::PersistError),
    #[error("thread {0} died")]
    ThreadDied(String),
}

impl MainError {
    /// The one mapping to exit codes: 2 for configuration errors, 0 for a
    /// refused duplicate (as the original), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            MainError::Config(_) => 2,
            MainError::Daemon(DaemonError::AlreadyRunning { .. }) => 0,
            _ => 1,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MainError {
    let what = what.into();
    move |source| MainError::Io { what, source }
}

/// Formats an error with its sources, for the one line printed at exit.
pub fn report(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

/// Entry point of the binary; returns the exit code.
pub fn main() -> i32 {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => 0,
        Err(e) => {
            let text = report(&e);
            log::error!("{text}");
            eprintln!("guestAgent: {text}");
            e.exit_code()
        }
    }
}

/// Resolves `name`, retrying every 3 s as the original does.
fn resolve_blocking(name: &str) -> IpAddr {
    loop {
        match (name, 0).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => return a.ip(),
            _ => {
                log::warn!("cannot resolve {name:?}; retrying in 3 s");
                std::thread::sleep(Duration::from_secs(3));
            }
        }
    }
}

fn own_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Fills in the addresses that default to the floating and local IPs.
fn resolve_defaults(s: &mut Settings) {
    let need_floating = s.listen.is_empty() || (s.mtc_listen.is_none() && s.mtc_addr.is_none());
    let floating = need_floating.then(|| resolve_blocking(&s.controller_name));
    if s.listen.is_empty() {
        let local = resolve_blocking(&own_hostname());
        if let Some(f) = floating {
            s.listen.push(SocketAddr::new(f, s.rx_port));
            if local != f {
                s.listen.push(SocketAddr::new(local, s.rx_port));
            }
        }
    }
    let base = s.mtc_listen.map(|a| a.ip()).or(floating).or(s.mtc_addr.map(|a| a.ip()));
    if let Some(ip) = base {
        s.mtc_listen.get_or_insert(SocketAddr::new(ip, s.mtc_cmd_port));
        s.mtc_addr.get_or_insert(SocketAddr::new(ip, s.mtc_event_port));
    }
}

fn run(argv: Vec<String>) -> Result<(), MainError> {
    let args = config::parse_args(argv)?;
    if args.help {
        print!("{USAGE}");
        return Ok(());
    }
    let mut settings = config::load(&args)?;
    if !settings.foreground {
        daemon::daemonize()?;
    }
    let target = if settings.foreground { LogTarget::Stderr } else { LogTarget::Syslog };
    if let Err(e) = daemon::init_logging("guestAgent", &target, settings.log_level) {
        // No syslog (a container without /dev/log): keep running rather than
        // die silently after daemonising; stderr is all there is then.
        daemon::init_logging("guestAgent", &LogTarget::Stderr, settings.log_level)?;
        log::warn!("syslog unavailable ({}); logging to stderr", report(&e));
    }
    if let Err(e) = daemon::write_health_file(&settings.health_file, "guestAgent") {
        log::warn!("cannot write {}: {e}", settings.health_file.display());
    }
    let _pidfile = PidFile::create(&settings.pidfile)?;
    resolve_defaults(&mut settings);
    let source = settings
        .source
        .clone()
        .or_else(|| settings.listen.first().map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "127.0.0.1".into());
    let persisted = persist::load(&settings.state_dir)?;

    let (ev_tx, ev_rx) = bounded::<Event>(EVENT_QUEUE);
    let (ctl_tx, ctl_rx) = bounded::<Event>(64);
    let signals = spawn_signals(
        &[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2],
        ctl_tx,
        Event::Signal,
        Event::ThreadExited,
    )
    .map_err(io_err("signal thread"))?;

    let bind_ip: IpAddr = source.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let udp_tx = UdpSocket::bind((bind_ip, 0)).map_err(io_err(format!("UDP send socket on {bind_ip}")))?;
    let mut receivers = Vec::new();
    for (i, addr) in settings.listen.iter().enumerate() {
        let sock = UdpSocket::bind(addr).map_err(io_err(format!("guestServer socket {addr}")))?;
        // Every guestServer's events (and query replies) land here in bursts.
        if let Err(e) = gh_threads::udp::raise_recv_buffer(&sock, 4 << 20) {
            log::warn!("cannot raise the receive buffer of {addr}: {e}");
        }
        let name = format!("udp-server-{i}");
        // With the key on, datagrams are the envelope plus stamp and tag.
        let max_len = if settings.hmac_key.is_some() { SEALED_LEN } else { ENVELOPE_LEN };
        let decoder = link::decoder(settings.hmac_key.clone());
        let spawned = spawn_udp_receiver(&name, sock, max_len, ev_tx.clone(), decoder, Event::ThreadExited);
        receivers.push(spawned.map_err(io_err(name))?);
        log::info!("listening for guestServers on {addr}");
    }
    if let Some(addr) = settings.mtc_listen {
        let sock = UdpSocket::bind(addr).map_err(io_err(format!("mtcAgent socket {addr}")))?;
        receivers.push(
            spawn_udp_receiver("udp-mtc", sock, ENVELOPE_LEN, ev_tx.clone(), mtc::decode_datagram, Event::ThreadExited)
                .map_err(io_err("udp-mtc"))?,
        );
        log::info!("listening for mtcAgent on {addr}");
    }
    let timer = spawn_timer(ev_tx.clone(), Event::Tick, Event::ThreadExited).map_err(io_err("timer thread"))?;
    let (events_tx, events_rx) = job_channel();
    let (query_tx, query_rx) = job_channel();
    let vim_events = spawn_vim_sender("vim-events", events_rx, ev_tx.clone(), Event::Vim, Event::ThreadExited)
        .map_err(io_err("vim-events thread"))?;
    let vim_query = spawn_vim_sender("vim-query", query_rx, ev_tx.clone(), Event::Vim, Event::ThreadExited)
        .map_err(io_err("vim-query thread"))?;
    let ctx = ApiContext {
        tx: ev_tx.clone(),
        counters: Arc::new(HttpCounters::default()),
        timeout: settings.api_timeout,
        body_limit: settings.body_limit,
    };
    let limits = GateLimits::new(settings.body_limit, Fail::gate_body);
    let http = spawn_http(
        "http",
        settings.http,
        limits,
        move |req| api::handle(req, &ctx),
        ev_tx.clone(),
        Event::ThreadExited,
    )?;
    log::info!(
        "guestAgent up: VIM API on {}, events to {}, source {source}, {} static host(s)",
        http.local_addr,
        settings.vim_url,
        settings.hosts.len()
    );
    if let Some(key) = &settings.hmac_key {
        log::info!("UDP link to guestServers authenticated with HMAC-SHA256 ({}-byte key)", key.len());
    }
    drop(ev_tx);

    let io = Io { udp: udp_tx, events_tx, query_tx, waker: Box::new(timer) };
    let state = State::new(settings, source, io, persisted, Instant::now());
    let dispatcher = Dispatcher::new(state, ev_rx, ctl_rx, args);
    let (stop, state) = dispatcher.run();
    // The receivers are gone now, so every thread's last send fails at once
    // instead of blocking; dropping the handles joins the threads.
    drop(state);
    drop(http);
    drop(receivers);
    drop(signals);
    vim_events.join_within(Duration::from_secs(2));
    vim_query.join_within(Duration::from_secs(2));
    match stop {
        Stop::Clean => {
            log::info!("guestAgent stopped");
            Ok(())
        }
        Stop::ThreadDied(name) => Err(MainError::ThreadDied(name)),
    }
}
