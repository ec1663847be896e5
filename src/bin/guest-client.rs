//! guest-client: the in-VM heartbeat daemon (spec guest-side.md). This file
//! is the main thread: arguments, logging, config, opening the channel and
//! the API socket, spawning the IO threads, running the dispatcher, and the
//! one place that maps errors to exit codes (§1.3).

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use guest_heartbeat::daemon::{self, LogTarget};
use guest_heartbeat::guest::channel::{spawn_channel, ChannelMode};
use guest_heartbeat::guest::config::{self, Settings};
use guest_heartbeat::guest::dispatcher::{self, Ended, State};
use guest_heartbeat::guest::events::Event;
use guest_heartbeat::guest::{api_server, api_wire};

const IDENT: &str = "Guest-Client";

const HELP: &str = "\
guest-client: StarlingX guest heartbeat daemon (runs inside the VM)

USAGE: guest-client [OPTIONS]

  --device PATH       host channel: the virtio-serial char device, or a UNIX
                      socket to connect to as a client (tests)
                      [default: /dev/vport1p1]
  --listen            create PATH as a listening UNIX socket and wait for the
                      host to connect (stands in for QEMU; tests and demos)
  --name NAME         instance name sent in init [default: hostname]
  --config FILE       [default: /etc/guest-client/heartbeat/guest_heartbeat.conf]
  --api-socket PATH   app API socket [default: /var/run/.guest_heartbeat_api]
  -f, --foreground    log to stderr instead of syslog (ident Guest-Client)
  --log-level LEVEL   error, warn, info, debug or trace [default: info]
  --fail-delay SECS   sleep before exit 1 on start-up failures [default: 20]
  -h, --help          this text

Exit codes: 0 after SIGTERM/SIGINT/SIGQUIT; 6 when the device path does not
exist (not with --listen); 1 on any other start-up failure, after the
--fail-delay sleep so that systemd does not restart us in a tight loop.
";

#[derive(Debug)]
struct Args {
    device: PathBuf,
    listen: bool,
    name: String,
    config: PathBuf,
    api_socket: PathBuf,
    foreground: bool,
    level: log::LevelFilter,
    fail_delay: Duration,
}

/// Why start-up failed; mapped to an exit code in `main` only.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Usage(String),
    #[error("channel device {0} not configured")]
    NoDevice(PathBuf),
    #[error("config {path}: {source}")]
    Config { path: PathBuf, source: config::ConfigError },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Fatal(String),
}

fn parse_args() -> Result<Option<Args>, StartError> {
    let mut a = Args {
        device: PathBuf::from("/dev/vport1p1"),
        listen: false,
        name: hostname(),
        config: PathBuf::from(config::DEFAULT_PATH),
        api_socket: PathBuf::from(api_wire::DEFAULT_SOCKET),
        foreground: false,
        level: log::LevelFilter::Info,
        fail_delay: Duration::from_secs(20),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| StartError::Usage(format!("{flag} needs a value")));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--device" => a.device = PathBuf::from(value()?),
            "--listen" => a.listen = true,
            "--name" => a.name = truncate(value()?, 63),
            "--config" => a.config = PathBuf::from(value()?),
            "--api-socket" => a.api_socket = PathBuf::from(value()?),
            "-f" | "--foreground" => a.foreground = true,
            "--log-level" => a.level = daemon::parse_level(&value()?).map_err(StartError::Usage)?,
            "--fail-delay" => {
                let v = value()?;
                let secs =
                    v.parse::<u64>().map_err(|_| StartError::Usage(format!("--fail-delay: bad number {v:?}")))?;
                a.fail_delay = Duration::from_secs(secs);
            }
            other => return Err(StartError::Usage(format!("unknown argument {other}"))),
        }
    }
    Ok(Some(a))
}

fn truncate(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it (or truncates), and we stop at the first NUL.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    truncate(String::from_utf8_lossy(&buf[..end]).into_owned(), 63)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("guest-client: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let logging = if args.foreground {
        daemon::init_logging(IDENT, &LogTarget::Stderr, args.level).map_err(|e| e.to_string())
    } else {
        init_syslog(args.level)
    };
    if let Err(e) = logging {
        eprintln!("guest-client: logging: {e}");
    }
    match start(&args) {
        Ok(Ended::Shutdown) => ExitCode::SUCCESS,
        Ok(Ended::ThreadDied(why)) => {
            log::error!("fatal: {why}");
            ExitCode::from(1)
        }
        Err(StartError::NoDevice(p)) => {
            log::error!("channel device {} not configured", p.display());
            ExitCode::from(6)
        }
        Err(e) => {
            log::error!("{e}");
            std::thread::sleep(args.fail_delay);
            ExitCode::from(1)
        }
    }
}

/// syslog: ident Guest-Client, facility daemon (spec §1.5).
fn init_syslog(level: log::LevelFilter) -> Result<(), String> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: IDENT.to_string(),
        pid: std::process::id(),
    };
    let writer = syslog::unix(formatter).map_err(|e| e.to_string())?;
    log::set_boxed_logger(Box::new(syslog::BasicLogger::new(writer))).map_err(|e| e.to_string())?;
    log::set_max_level(level);
    Ok(())
}

fn start(args: &Args) -> Result<Ended, StartError> {
    // The conf file is read before the channel is opened (§1.3).
    let settings = read_config(args)?;
    let io = |what, path: &PathBuf| {
        let path = path.clone();
        move |source| StartError::Io { what, path, source }
    };
    let mode = if args.listen {
        let _ = std::fs::remove_file(&args.device);
        let l = UnixListener::bind(&args.device).map_err(io("cannot listen on", &args.device))?;
        ChannelMode::Listen(l)
    } else {
        let meta = match std::fs::metadata(&args.device) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StartError::NoDevice(args.device.clone()))
            }
            r => r.map_err(io("cannot stat", &args.device))?,
        };
        if meta.file_type().is_char_device() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&args.device)
                .map_err(io("cannot open", &args.device))?;
            ChannelMode::Device(f)
        } else {
            let s = UnixStream::connect(&args.device).map_err(io("cannot connect", &args.device))?;
            ChannelMode::Connect { stream: s, path: args.device.clone() }
        }
    };
    let listener = api_server::bind(&args.api_socket).map_err(io("cannot bind", &args.api_socket))?;
    let (tx, rx) = crossbeam_channel::unbounded::<Event>();
    let retry = settings.init_retry;
    let state = State::new(settings, &args.name, tx.clone(), Instant::now());
    let spawn_err = |e: std::io::Error| StartError::Fatal(format!("cannot start thread: {e}"));
    let signals = gh_threads::signals::spawn_signals(
        &[libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP],
        tx.clone(),
        Event::Signal,
        Event::ThreadExited,
    )
    .map_err(spawn_err)?;
    let listen_mode = args.listen;
    let channel = spawn_channel(mode, retry, tx.clone()).map_err(spawn_err)?;
    let api = api_server::spawn_api(listener, tx.clone()).map_err(spawn_err)?;
    drop(tx);
    log::info!("guest-client started, name {}", args.name);
    let ended = dispatcher::run_with(state, &rx, listen_mode);
    // Drop order: the dispatcher is done; stop and join the threads.
    drop(api);
    drop(channel);
    drop(signals);
    Ok(ended)
}

fn read_config(args: &Args) -> Result<Settings, StartError> {
    let cfg_err = |source| StartError::Config { path: args.config.clone(), source };
    let f = std::fs::File::open(&args.config).map_err(|e| cfg_err(e.into()))?;
    let raw = config::parse_reader(f).map_err(cfg_err)?;
    for w in &raw.warnings {
        log::warn!("config {}: {w}", args.config.display());
    }
    raw.validate().map_err(cfg_err)
}
