//! guestServer: the compute-host guest heartbeat daemon.
//!
//! Main thread: parse settings, daemonise, set up logging and the pid file,
//! spawn the I/O threads (signals, timer, watcher, UDP receiver, optional
//! HTTP status, state saver), then run the dispatcher on this thread until
//! SIGTERM/SIGINT or a fatal thread exit, and join everything.
//! Exit codes: 0 clean stop, 1 runtime failure, 2 bad command line or config.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Instant;

use gh_threads::http::GateLimits;
use guest_heartbeat::daemon::{self, LogTarget, PidFile};
use guest_heartbeat::rng::Rng;
use guest_heartbeat::server::config::{load_ini, Flags, Settings, HELP};
use guest_heartbeat::server::dispatcher::{Dispatcher, Event, Exit, Io, INBOX};
use guest_heartbeat::server::{statefile, status};
use guest_heartbeat::wire::auth::SEALED_LEN;
use guest_heartbeat::wire::envelope::ENVELOPE_LEN;
use guest_heartbeat::wire::vim::Fail;

/// The status API is GET-only; a body is never needed.
const STATUS_BODY_LIMIT: usize = 4096;

/// Receive buffer for agent commands: a READY replay or QRY audit of
/// thousands of instances arrives as a burst.
const UDP_RCVBUF: usize = 4 << 20;

fn main() -> ExitCode {
    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("guestServer: {e}");
            return ExitCode::from(2);
        }
    };
    if flags.help {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if flags.version {
        println!("guestServer {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let settings = match load_ini(&flags).and_then(|ini| Settings::resolve(&flags, &ini)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guestServer: {e}");
            return ExitCode::from(2);
        }
    };
    if !settings.foreground {
        if let Err(e) = daemon::daemonize() {
            eprintln!("guestServer: {e}");
            return ExitCode::from(1);
        }
    }
    let target = match (&settings.foreground, &settings.syslog_socket) {
        (true, _) => LogTarget::Stderr,
        (false, Some(path)) => LogTarget::SyslogAt(path.clone()),
        (false, None) => LogTarget::Syslog,
    };
    if let Err(e) = daemon::init_logging("guestServer", &target, settings.log_level) {
        eprintln!("guestServer: {e}");
        return ExitCode::from(1);
    }
    match run(settings) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(settings: Settings) -> Result<ExitCode, String> {
    let _pidfile = PidFile::create(&settings.pidfile).map_err(|e| e.to_string())?;
    if let Err(e) = daemon::write_health_file(&settings.health_file, "guestServer") {
        log::warn!("cannot write health file {}: {e}", settings.health_file.display());
    }
    log::info!(
        "starting: host {}, channels in {}, commands on {}, agent {}, state in {}",
        settings.hostname,
        settings.channel_dir.display(),
        settings.listen,
        settings.agent,
        settings.state_dir.display()
    );
    if let Some(key) = &settings.hmac_key {
        log::info!("UDP link to guestAgent authenticated with HMAC-SHA256 ({}-byte key)", key.len());
    }
    let saved = match statefile::load(&settings.state_dir) {
        Ok(saved) => saved,
        Err(e) => {
            log::warn!("{e}");
            None
        }
    };

    let (tx, rx) = crossbeam_channel::bounded::<Event>(INBOX);
    let rx_sock = UdpSocket::bind(settings.listen).map_err(|e| format!("cannot bind UDP {}: {e}", settings.listen))?;
    if let Err(e) = gh_threads::udp::raise_recv_buffer(&rx_sock, UDP_RCVBUF) {
        log::warn!("cannot raise the UDP receive buffer: {e}");
    }
    let any: SocketAddr = match settings.agent_addr() {
        Some(SocketAddr::V6(_)) => "[::]:0".parse().map_err(|_| "bad address")?,
        _ => "0.0.0.0:0".parse().map_err(|_| "bad address")?,
    };
    let udp_tx = UdpSocket::bind(any).map_err(|e| format!("cannot bind UDP send socket: {e}"))?;
    udp_tx.set_nonblocking(true).map_err(|e| e.to_string())?;

    let signals = gh_threads::signals::spawn_signals(
        &[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2],
        tx.clone(),
        Event::Signal,
        Event::ThreadExit,
    )
    .map_err(|e| format!("cannot start signal thread: {e}"))?;
    let timer = gh_threads::timer::spawn_timer(tx.clone(), Event::Tick, Event::ThreadExit)
        .map_err(|e| format!("cannot start timer thread: {e}"))?;
    let watcher =
        gh_threads::watcher::spawn_watcher(settings.channel_dir.clone(), tx.clone(), Event::Watch, Event::ThreadExit)
            .map_err(|e| format!("cannot watch {}: {e}", settings.channel_dir.display()))?;
    // With the key on, datagrams are the envelope plus its tag.
    let max_len = if settings.hmac_key.is_some() { SEALED_LEN } else { ENVELOPE_LEN };
    let udp =
        gh_threads::udp::spawn_udp_receiver("udp-rx", rx_sock, max_len, tx.clone(), Event::Udp, Event::ThreadExit)
            .map_err(|e| format!("cannot start UDP thread: {e}"))?;
    let http = match settings.http {
        Some(addr) => Some(
            gh_threads::http::spawn_http(
                "http",
                addr,
                GateLimits::new(STATUS_BODY_LIMIT, Fail::gate_body),
                status::handler(tx.clone()),
                tx.clone(),
                Event::ThreadExit,
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    if let Some(h) = &http {
        log::info!("status API on http://{}", h.local_addr);
    }
    let saver = statefile::spawn_saver(settings.state_dir.clone(), tx.clone(), Event::ThreadExit)
        .map_err(|e| format!("cannot start state saver: {e}"))?;

    let io = Io { tx, timer, udp_tx, saver };
    let mut dispatcher = Dispatcher::new(settings, io, Rng::from_entropy());
    let now = Instant::now();
    if let Some(saved) = saved {
        dispatcher.restore(saved, now);
    }
    dispatcher.start(now);
    let exit = dispatcher.run(&rx);

    // Shutdown by disconnection: dropping the inbox makes every blocked
    // sender fail, so the joins below cannot deadlock.
    drop(rx);
    drop(dispatcher);
    drop(http);
    drop(udp);
    drop(watcher);
    drop(signals);
    log::info!("stopped: {exit:?}");
    Ok(match exit {
        Exit::Signal(_) => ExitCode::SUCCESS,
        Exit::ThreadDied(_) | Exit::Disconnected => ExitCode::from(1),
    })
}
