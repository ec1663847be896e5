//! guestAgent configuration in two stages (house rule 13): `parse_args` turns
//! the command line into raw `Args`; `settings` combines them with the three
//! INI files of agent spec §2.3 (guestAgent.ini, /etc/mtc.conf, the NFV plugin
//! config.ini) into validated `Settings`. Flags win over files, files over
//! the originals' defaults. A missing file at its default path means "use the
//! defaults"; a file named on the command line must exist.
//!
//! Runs on the main thread at start-up and on the dispatcher at SIGHUP.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::daemon::parse_level;
use crate::ini::{ConfigError, Ini};
use crate::wire::auth::HmacKey;

use super::vim_client::VimUrl;

pub const DEFAULT_CONFIG: &str = "/etc/mtc/guestAgent.ini";
pub const DEFAULT_MTC_CONF: &str = "/etc/mtc.conf";
pub const DEFAULT_NFV_CONF: &str = "/etc/nfv/nfv_plugins/nfvi_plugins/config.ini";

/// The command line, unvalidated beyond syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub help: bool,
    pub foreground: bool,
    pub config: Option<PathBuf>,
    pub mtc_conf: Option<PathBuf>,
    pub nfv_conf: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub health_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub http: Option<String>,
    pub listen: Vec<String>,
    pub vim_url: Option<String>,
    pub mtc_listen: Option<String>,
    pub mtc_addr: Option<String>,
    pub source: Option<String>,
    pub hosts: Vec<String>,
    pub self_register: bool,
    pub log_level: Option<String>,
    pub hmac_key_file: Option<PathBuf>,
}

/// A host given by `[hosts]` or `--host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticHost {
    pub hostname: String,
    pub uuid: String,
    pub ip: String,
    pub port: u16,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub foreground: bool,
    pub pidfile: PathBuf,
    pub health_file: PathBuf,
    pub state_dir: PathBuf,
    pub http: SocketAddr,
    /// guestServer → agent sockets; empty means floating + local address.
    pub listen: Vec<SocketAddr>,
    pub rx_port: u16,
    /// mtcAgent → agent socket; `None` means floating address.
    pub mtc_listen: Option<SocketAddr>,
    pub mtc_cmd_port: u16,
    /// Where READY goes; `None` means floating address.
    pub mtc_addr: Option<SocketAddr>,
    pub mtc_event_port: u16,
    /// Name whose address is the floating address.
    pub controller_name: String,
    /// The IP written as `source` in every command; `None`: first listen IP.
    pub source: Option<String>,
    /// guestServer port.
    pub client_port: u16,
    pub vim_url: VimUrl,
    pub vim_timeout: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub outbox_max: usize,
    pub audit_start: Duration,
    pub audit_interval: Duration,
    pub mtc_ready_interval: Duration,
    pub hosts: Vec<StaticHost>,
    /// Accept guestServer datagrams from any address (issue 6; default:
    /// only known hosts' addresses and loopback, plus READY when
    /// self-registering).
    pub accept_any_source: bool,
    pub self_register: bool,
    pub log_level: LevelFilter,
    pub body_limit: usize,
    pub api_timeout: Duration,
    /// The shared key of the UDP link to guestServers (issue 6); `None` is
    /// the originals' unauthenticated envelope. mtcAgent traffic is never
    /// signed.
    pub hmac_key: Option<HmacKey>,
}

pub const USAGE: &str = "\
Usage: guestAgent [OPTIONS]

The controller-side guest heartbeat broker between the NFV VIM and the
guestServers (StarlingX guestAgent, re-implemented).

Options:
  -f, --foreground          stay in the foreground, log to stderr
      --config FILE         guestAgent INI file [default: /etc/mtc/guestAgent.ini]
      --mtc-conf FILE       maintenance config [default: /etc/mtc.conf]
      --nfv-config FILE     NFV plugin config [default: /etc/nfv/nfv_plugins/nfvi_plugins/config.ini]
      --pidfile FILE        [default: /var/run/guestAgent.pid]
      --health-file FILE    rewritten on SIGUSR1 [default: /var/run/guestAgent.info]
      --state-dir DIR       hosts, instances and the VIM outbox [default: /var/lib/guestAgent]
      --http ADDR:PORT      VIM command API [default: 127.0.0.1:<[agent] vim_cmd_port>]
      --listen ADDR:PORT    guestServer events (repeatable) [default: controller and own
                            hostname addresses, port [agent] rx_port]
      --vim-url URL         VIM event listener [default: [vim] event_url, else
                            http://127.0.0.1:<[guest-rest-api] port>]
      --mtc-listen ADDR:PORT  mtcAgent commands [default: controller:<mtc_to_guest_cmd_port>]
      --mtc-addr ADDR:PORT  where READY goes [default: controller:<hbs_to_mtc_event_port>]
      --source IP           address written as \"source\" in commands [default: first --listen IP]
      --host NAME=UUID,IP[:PORT]  a static host (repeatable); PORT defaults to [client] rx_port
      --self-register       learn hosts from guestServer READY ([agent] self_register)
      --log-level LEVEL     error, warn, info, debug or trace [default: info]
      --hmac-key-file FILE  shared key ([agent] hmac_key_file): sign every command to
                            guestServers with HMAC-SHA256 and drop their datagrams
                            without a valid tag [default: off, byte-compatible with
                            the C++ peers]. Mode 0600 or 0640; one trailing newline
                            is ignored
  -l, --log                 accepted and ignored (the init script passes it)
  -h, --help                print this help

Signals: SIGUSR1 rewrites the health file, SIGHUP re-reads the configuration,
SIGTERM and SIGINT exit cleanly. A bad configuration exits with code 2.
";

fn bad_flag(flag: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadFlag { flag: flag.to_string(), reason: reason.into() }
}

/// Stage 1: the command line (without argv[0]).
pub fn parse_args<I: IntoIterator<Item = String>>(argv: I) -> Result<Args, ConfigError> {
    let mut a = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value =
            |it: &mut I::IntoIter| inline.clone().or_else(|| it.next()).ok_or_else(|| bad_flag(&flag, "needs a value"));
        match flag.as_str() {
            "-h" | "--help" => a.help = true,
            "-f" | "--foreground" => a.foreground = true,
            "-l" | "--log" => {}
            "--self-register" => a.self_register = true,
            "--config" => a.config = Some(value(&mut it)?.into()),
            "--mtc-conf" => a.mtc_conf = Some(value(&mut it)?.into()),
            "--nfv-config" => a.nfv_conf = Some(value(&mut it)?.into()),
            "--pidfile" => a.pidfile = Some(value(&mut it)?.into()),
            "--health-file" => a.health_file = Some(value(&mut it)?.into()),
            "--state-dir" => a.state_dir = Some(value(&mut it)?.into()),
            "--http" => a.http = Some(value(&mut it)?),
            "--listen" => a.listen.push(value(&mut it)?),
            "--vim-url" => a.vim_url = Some(value(&mut it)?),
            "--mtc-listen" => a.mtc_listen = Some(value(&mut it)?),
            "--mtc-addr" => a.mtc_addr = Some(value(&mut it)?),
            "--source" => a.source = Some(value(&mut it)?),
            "--host" => a.hosts.push(value(&mut it)?),
            "--log-level" => a.log_level = Some(value(&mut it)?),
            "--hmac-key-file" => a.hmac_key_file = Some(value(&mut it)?.into()),
            _ => return Err(bad_flag(&arg, "unknown option (see --help)")),
        }
    }
    Ok(a)
}

/// Loads a file; a missing file at its default path is `None`.
fn load_ini(given: &Option<PathBuf>, default: &str) -> Result<Option<Ini>, ConfigError> {
    match given {
        Some(p) => Ini::load(p).map(Some),
        None if Path::new(default).exists() => Ini::load(Path::new(default)).map(Some),
        None => Ok(None),
    }
}

/// Stage 2 from files on disk.
pub fn load(args: &Args) -> Result<Settings, ConfigError> {
    let agent = load_ini(&args.config, DEFAULT_CONFIG)?;
    let mtc = load_ini(&args.mtc_conf, DEFAULT_MTC_CONF)?;
    let nfv = load_ini(&args.nfv_conf, DEFAULT_NFV_CONF)?;
    settings(args, agent.as_ref(), mtc.as_ref(), nfv.as_ref())
}

fn port(ini: Option<&Ini>, section: &str, key: &str, default: u16) -> Result<u16, ConfigError> {
    Ok(match ini {
        Some(i) => i.num(section, key, 1u16, 65535)?.unwrap_or(default),
        None => default,
    })
}

fn millis(ini: Option<&Ini>, key: &str, section: &str, default: u64) -> Result<Duration, ConfigError> {
    let v = match ini {
        Some(i) => i.num(section, key, 1u64, 86_400_000)?.unwrap_or(default),
        None => default,
    };
    Ok(Duration::from_millis(v))
}

fn sock(flag: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| bad_flag(flag, format!("{v:?} is not ADDR:PORT")))
}

/// Parses `UUID,IP[:PORT]` (the value of `NAME=`).
pub fn parse_host(name: &str, spec: &str, client_port: u16) -> Result<StaticHost, String> {
    let (uuid, addr) = spec.split_once(',').ok_or_else(|| format!("{spec:?} is not UUID,IP[:PORT]"))?;
    let (ip, port) = if let Ok(sa) = addr.trim().parse::<SocketAddr>() {
        (sa.ip(), sa.port())
    } else {
        let ip: IpAddr = addr.trim().parse().map_err(|_| format!("{addr:?} is not IP[:PORT]"))?;
        (ip, client_port)
    };
    if name.is_empty() || uuid.trim().is_empty() {
        return Err("empty host name or uuid".into());
    }
    Ok(StaticHost { hostname: name.to_string(), uuid: uuid.trim().to_string(), ip: ip.to_string(), port })
}

/// Stage 2: combines flags and parsed files. Pure, except that it reads the
/// HMAC key file when one is named.
pub fn settings(
    args: &Args,
    agent: Option<&Ini>,
    mtc: Option<&Ini>,
    nfv: Option<&Ini>,
) -> Result<Settings, ConfigError> {
    let rx_port = port(agent, "agent", "rx_port", 2401)?;
    let vim_cmd_port = port(agent, "agent", "vim_cmd_port", 2410)?;
    let client_port = port(agent, "client", "rx_port", 2411)?;
    let mtc_event_port = port(mtc, "agent", "hbs_to_mtc_event_port", 2107)?;
    let mtc_cmd_port = port(mtc, "agent", "mtc_to_guest_cmd_port", 2108)?;
    let vim_port = port(nfv, "guest-rest-api", "port", 30002)?;
    let text = |section: &str, key: &str| agent.and_then(|i| i.get(section, key)).map(|e| e.value.clone());

    let http = match &args.http {
        Some(v) => sock("--http", v)?,
        None => SocketAddr::from(([127, 0, 0, 1], vim_cmd_port)),
    };
    let listen = args.listen.iter().map(|v| sock("--listen", v)).collect::<Result<Vec<_>, _>>()?;
    let opt_sock = |flag: &str, v: &Option<String>| v.as_deref().map(|v| sock(flag, v)).transpose();
    let vim_url = match (&args.vim_url, agent.and_then(|i| i.get("vim", "event_url"))) {
        (Some(v), _) => VimUrl::parse(v).map_err(|r| bad_flag("--vim-url", r))?,
        (None, Some(e)) => VimUrl::parse(&e.value)
            .map_err(|r| agent.map_or_else(|| bad_flag("event_url", r.clone()), |i| i.bad(e, &r)))?,
        (None, None) => VimUrl { host: "127.0.0.1".into(), port: vim_port, prefix: String::new() },
    };
    let mut hosts = Vec::new();
    if let Some(ini) = agent {
        for e in ini.section("hosts") {
            hosts.push(parse_host(&e.key, &e.value, client_port).map_err(|r| ini.bad(e, &r))?);
        }
    }
    for h in &args.hosts {
        let (name, spec) =
            h.split_once('=').ok_or_else(|| bad_flag("--host", format!("{h:?} is not NAME=UUID,IP[:PORT]")))?;
        hosts.push(parse_host(name, spec, client_port).map_err(|r| bad_flag("--host", r))?);
    }
    let log_level = match (&args.log_level, text("agent", "log_level")) {
        (Some(v), _) => parse_level(v).map_err(|r| bad_flag("--log-level", r))?,
        (None, Some(_)) => match agent {
            Some(i) => i.parsed("agent", "log_level", parse_level)?.unwrap_or(LevelFilter::Info),
            None => LevelFilter::Info,
        },
        (None, None) => LevelFilter::Info,
    };
    let path = |flag: &Option<PathBuf>, key: &str, default: &str| {
        flag.clone().or_else(|| text("agent", key).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(default))
    };
    let retry_min = millis(agent, "retry_min_ms", "vim", 1000)?;
    let retry_max = millis(agent, "retry_max_ms", "vim", 30_000)?.max(retry_min);
    let key_file = args.hmac_key_file.clone().or_else(|| text("agent", "hmac_key_file").map(PathBuf::from));
    let hmac_key = crate::keyfile::from_setting(key_file.as_deref())?;
    let self_register = match agent {
        Some(i) => i.bool("agent", "self_register")?.unwrap_or(false),
        None => false,
    };
    Ok(Settings {
        foreground: args.foreground,
        pidfile: path(&args.pidfile, "pid_file", "/var/run/guestAgent.pid"),
        health_file: path(&args.health_file, "health_file", "/var/run/guestAgent.info"),
        state_dir: path(&args.state_dir, "state_dir", "/var/lib/guestAgent"),
        http,
        listen,
        rx_port,
        mtc_listen: opt_sock("--mtc-listen", &args.mtc_listen)?,
        mtc_cmd_port,
        mtc_addr: opt_sock("--mtc-addr", &args.mtc_addr)?,
        mtc_event_port,
        controller_name: text("agent", "controller_name").unwrap_or_else(|| "controller".into()),
        source: args.source.clone().or_else(|| text("agent", "source")),
        client_port,
        vim_url,
        vim_timeout: millis(agent, "timeout_ms", "vim", 20_000)?,
        retry_min,
        retry_max,
        outbox_max: match agent {
            Some(i) => i.num("vim", "outbox_max", 1usize, 10_000_000)?.unwrap_or(10_000),
            None => 10_000,
        },
        audit_start: millis(agent, "audit_start_ms", "agent", 2_000)?,
        audit_interval: millis(agent, "audit_interval_ms", "agent", 10_000)?,
        mtc_ready_interval: millis(agent, "mtc_ready_interval_ms", "agent", 30_000)?,
        hosts,
        self_register: args.self_register || self_register,
        accept_any_source: match agent {
            Some(i) => i.bool("agent", "accept_any_source")?.unwrap_or(false),
            None => false,
        },
        log_level,
        body_limit: 64 * 1024,
        api_timeout: millis(agent, "api_timeout_ms", "agent", 5_000)?,
        hmac_key,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
