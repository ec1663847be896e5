//! guestServer settings in two stages (house rule 13): the command line and
//! the INI file are read into raw values, then `Settings::resolve` checks
//! types and ranges and fills defaults. Only `Settings` leaves this module.
//!
//! Precedence: flag, then ini key, then the original's default. Runs on the
//! main thread at start-up and on the dispatcher at SIGHUP.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use gh_threads::reader::ReaderLimits;
use log::LevelFilter;

use super::instance::HbConfig;
use crate::daemon::parse_level;
use crate::ini::{ConfigError, Ini};
use crate::wire::auth::HmacKey;

/// Default config file.
pub const DEFAULT_CONFIG: &str = "/etc/mtc/guestServer.ini";

pub const HELP: &str = "\
guestServer: the compute-host guest heartbeat daemon (drop-in for StarlingX guestServer).

Watches the channel directory for cgcs.heartbeat.<uuid>.sock, heartbeats every guest,
and reports to guestAgent over UDP.

Usage: guestServer [OPTIONS]

Options (each also an ini key of section [server], same name with '_' for '-'):
  -f, --foreground          stay in the foreground and log to stderr
      --config FILE         ini file (default /etc/mtc/guestServer.ini; a missing
                            default file means built-in defaults)
      --channel-dir DIR     where QEMU creates the sockets (default /var/lib/libvirt/qemu)
      --pidfile FILE        (default /var/run/guestServer.pid)
      --health-file FILE    rewritten at start and on SIGUSR1 (default /var/run/guestServer.info)
      --state-dir DIR       restart state (default /var/lib/guestServer)
      --hostname NAME       name reported to guestAgent (default: this host's name)
      --listen ADDR:PORT    UDP commands from guestAgent (default 0.0.0.0:<[client] rx_port>)
      --agent HOST:PORT     where events go until guestAgent writes to us
                            (default controller:<[agent] rx_port>)
      --agent-allow ADDR    accept commands only from this address; repeatable
                            (default: the addresses of --agent's host, plus loopback)
      --http ADDR:PORT      read-only status and /metrics (default: off)
      --log-level LEVEL     error, warn, info, debug or trace (default info)
      --syslog-socket PATH  syslog datagram socket (default /dev/log)
      --hmac-key-file FILE  shared key: sign every datagram to guestAgent with
                            HMAC-SHA256 and drop commands without a valid tag
                            (default: off, byte-compatible with the C++ peers).
                            Mode 0600 or 0640; one trailing newline is ignored
  -l                        accepted for the init script; ignored
  -h, --help                print this help
  -V, --version             print the version

Heartbeat keys: [client] hbs_pulse_period (400 ms), hbs_failure_threshold (1),
hbs_max_interval (60000 ms), rx_port (2411); [agent] rx_port (2401).
Guest limits: [limits] max_line (4096), max_msgs_per_sec (100), max_bytes_per_sec (65536),
max_instances (10000).

Signals: TERM/INT exit, HUP reloads the ini, USR1 rewrites the health file,
USR2 dumps every instance to the log. Exit codes: 0 ok, 1 runtime failure,
2 bad command line or configuration.
";

/// What the command line asked for, before validation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    pub foreground: bool,
    pub help: bool,
    pub version: bool,
    pub config: Option<PathBuf>,
    pub channel_dir: Option<String>,
    pub pidfile: Option<String>,
    pub health_file: Option<String>,
    pub state_dir: Option<String>,
    pub hostname: Option<String>,
    pub listen: Option<String>,
    pub agent: Option<String>,
    pub agent_allow: Vec<String>,
    pub http: Option<String>,
    pub log_level: Option<String>,
    pub syslog_socket: Option<String>,
    pub hmac_key_file: Option<String>,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub foreground: bool,
    pub config: Option<PathBuf>,
    pub channel_dir: PathBuf,
    pub pidfile: PathBuf,
    pub health_file: PathBuf,
    pub state_dir: PathBuf,
    pub hostname: String,
    pub listen: SocketAddr,
    /// `host:port` of guestAgent before it has written to us.
    pub agent: String,
    /// Port events go to once the agent's address is learned.
    pub agent_port: u16,
    /// Names or addresses allowed to send commands (resolved at use).
    pub agent_allow: Vec<String>,
    pub http: Option<SocketAddr>,
    pub log_level: LevelFilter,
    pub syslog_socket: Option<PathBuf>,
    pub hb: HbConfig,
    pub limits: ReaderLimits,
    pub max_instances: usize,
    /// The shared key of the UDP link to guestAgent (issue 6); `None` is
    /// the originals' unauthenticated envelope.
    pub hmac_key: Option<HmacKey>,
}

fn flag_err(flag: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadFlag { flag: flag.to_string(), reason: reason.into() }
}

impl Flags {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        let mut f = Flags::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |flag: &str| -> Result<String, ConfigError> {
                inline.clone().or_else(|| args.next()).ok_or_else(|| flag_err(flag, "needs a value"))
            };
            match name.as_str() {
                "-f" | "--foreground" => f.foreground = true,
                "-h" | "--help" => f.help = true,
                "-V" | "--version" => f.version = true,
                "-l" | "--log" => {}
                "--config" => f.config = Some(PathBuf::from(value("--config")?)),
                "--channel-dir" => f.channel_dir = Some(value("--channel-dir")?),
                "--pidfile" => f.pidfile = Some(value("--pidfile")?),
                "--health-file" => f.health_file = Some(value("--health-file")?),
                "--state-dir" => f.state_dir = Some(value("--state-dir")?),
                "--hostname" => f.hostname = Some(value("--hostname")?),
                "--listen" => f.listen = Some(value("--listen")?),
                "--agent" => f.agent = Some(value("--agent")?),
                "--agent-allow" => f.agent_allow.push(value("--agent-allow")?),
                "--http" => f.http = Some(value("--http")?),
                "--log-level" => f.log_level = Some(value("--log-level")?),
                "--syslog-socket" => f.syslog_socket = Some(value("--syslog-socket")?),
                "--hmac-key-file" => f.hmac_key_file = Some(value("--hmac-key-file")?),
                other => return Err(flag_err(other, "unknown option (see --help)")),
            }
        }
        Ok(f)
    }
}

/// Reads the ini file named by the flags (or the default, if present).
pub fn load_ini(flags: &Flags) -> Result<Ini, ConfigError> {
    match &flags.config {
        Some(path) => Ini::load(path),
        None if Path::new(DEFAULT_CONFIG).exists() => Ini::load(Path::new(DEFAULT_CONFIG)),
        None => Ok(Ini { source: "(built-in defaults)".to_string(), entries: Vec::new() }),
    }
}

impl Settings {
    /// Validates flags and ini into settings.
    pub fn resolve(flags: &Flags, ini: &Ini) -> Result<Self, ConfigError> {
        let s = "server";
        let text = |flag: &Option<String>, key: &str, default: &str| -> String {
            flag.clone().or_else(|| ini.get(s, key).map(|e| e.value.clone())).unwrap_or_else(|| default.to_string())
        };
        let agent_port: u16 = ini.num("agent", "rx_port", 1, 65535)?.unwrap_or(2401);
        let client_port: u16 = ini.num("client", "rx_port", 1, 65535)?.unwrap_or(2411);
        let hb = HbConfig {
            pulse_period_ms: ini.num("client", "hbs_pulse_period", 0, 3_600_000)?.unwrap_or(400),
            max_interval_ms: ini.num("client", "hbs_max_interval", 1, 3_600_000)?.unwrap_or(60_000),
            failure_threshold: ini.num("client", "hbs_failure_threshold", 0, 1000)?.unwrap_or(1),
        };
        let limits = ReaderLimits {
            max_line: ini.num("limits", "max_line", 1100, 1 << 20)?.unwrap_or(4096),
            max_msgs_per_sec: ini.num("limits", "max_msgs_per_sec", 0, 1_000_000)?.unwrap_or(100),
            max_bytes_per_sec: ini.num("limits", "max_bytes_per_sec", 0, 1 << 30)?.unwrap_or(65_536),
        };
        let max_instances = ini.num("limits", "max_instances", 1, 1_000_000)?.unwrap_or(10_000);

        let listen_text = text(&flags.listen, "listen", &format!("0.0.0.0:{client_port}"));
        let listen = parse_addr(&listen_text).map_err(|r| bad(flags.listen.is_some(), ini, "listen", "--listen", r))?;
        let agent = text(&flags.agent, "agent", &format!("controller:{agent_port}"));
        if agent.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
            return Err(bad(flags.agent.is_some(), ini, "agent", "--agent", "expected HOST:PORT".into()));
        }
        let http_text = text(&flags.http, "http", "");
        let http = if http_text.is_empty() || http_text == "off" {
            None
        } else {
            Some(parse_addr(&http_text).map_err(|r| bad(flags.http.is_some(), ini, "http", "--http", r))?)
        };
        let level_text = text(&flags.log_level, "log_level", "info");
        let log_level =
            parse_level(&level_text).map_err(|r| bad(flags.log_level.is_some(), ini, "log_level", "--log-level", r))?;
        let mut agent_allow = flags.agent_allow.clone();
        if agent_allow.is_empty() {
            if let Some(e) = ini.get(s, "agent_allow") {
                agent_allow = e.value.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            }
        }
        let hostname = flags
            .hostname
            .clone()
            .or_else(|| ini.get(s, "hostname").map(|e| e.value.clone()))
            .unwrap_or_else(local_hostname);
        let syslog = text(&flags.syslog_socket, "syslog_socket", "");
        let key_file = text(&flags.hmac_key_file, "hmac_key_file", "");
        let hmac_key = crate::keyfile::from_setting(Some(Path::new(&key_file)))?;
        Ok(Settings {
            foreground: flags.foreground,
            config: flags.config.clone(),
            channel_dir: PathBuf::from(text(&flags.channel_dir, "channel_dir", "/var/lib/libvirt/qemu")),
            pidfile: PathBuf::from(text(&flags.pidfile, "pidfile", "/var/run/guestServer.pid")),
            health_file: PathBuf::from(text(&flags.health_file, "health_file", "/var/run/guestServer.info")),
            state_dir: PathBuf::from(text(&flags.state_dir, "state_dir", "/var/lib/guestServer")),
            hostname,
            listen,
            agent,
            agent_port,
            agent_allow,
            http,
            log_level,
            syslog_socket: (!syslog.is_empty()).then(|| PathBuf::from(syslog)),
            hb,
            limits,
            max_instances,
            hmac_key,
        })
    }

    /// The agent's configured address, resolved now (None while unresolvable).
    pub fn agent_addr(&self) -> Option<SocketAddr> {
        self.agent.to_socket_addrs().ok().and_then(|mut a| a.next())
    }

    /// Addresses allowed to send commands: the configured list, or the agent
    /// host's addresses; loopback always.
    pub fn allowed_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])];
        let names: Vec<String> = if self.agent_allow.is_empty() {
            vec![self.agent.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default()]
        } else {
            self.agent_allow.clone()
        };
        for name in names {
            let host = name.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = host.parse::<IpAddr>() {
                ips.push(ip);
            } else if let Ok(addrs) = (host, 0).to_socket_addrs() {
                ips.extend(addrs.map(|a| a.ip()));
            }
        }
        ips.sort();
        ips.dedup();
        ips
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| format!("{text:?} is not ADDR:PORT (e.g. 127.0.0.1:2411 or [::1]:2411)"))
}

/// The error for a bad value that came from the flag or from the ini key.
fn bad(from_flag: bool, ini: &Ini, key: &str, flag: &str, reason: String) -> ConfigError {
    match ini.get("server", key) {
        Some(e) if !from_flag => ini.bad(e, &reason),
        _ => flag_err(flag, reason),
    }
}

/// This machine's host name.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn resolve(list: &[&str], ini_text: &str) -> Result<Settings, ConfigError> {
        let flags = Flags::parse(args(list))?;
        let ini = Ini::parse_reader(ini_text.as_bytes(), "t.ini")?;
        Settings::resolve(&flags, &ini)
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(s.channel_dir, PathBuf::from("/var/lib/libvirt/qemu"));
        assert_eq!(s.listen, "0.0.0.0:2411".parse().unwrap());
        assert_eq!(s.agent, "controller:2401");
        assert_eq!(s.hb, HbConfig { pulse_period_ms: 400, max_interval_ms: 60_000, failure_threshold: 1 });
        assert_eq!(s.http, None);
        assert_eq!(s.limits.max_line, 4096);
    }

    #[test]
    fn flags_beat_ini_which_beats_defaults() {
        let ini = "[server]\nchannel_dir = /ini/dir\nhttp = 127.0.0.1:9\n[client]\nrx_port = 3000\nhbs_failure_threshold = 2\n";
        let s = resolve(&["--channel-dir", "/flag/dir", "-f"], ini).unwrap();
        assert_eq!(s.channel_dir, PathBuf::from("/flag/dir"));
        assert_eq!(s.listen.port(), 3000);
        assert_eq!(s.http, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(s.hb.failure_threshold, 2);
        assert!(s.foreground);
        let s = resolve(&["--listen=127.0.0.1:5", "--agent", "[::1]:7"], ini).unwrap();
        assert_eq!(s.listen, "127.0.0.1:5".parse().unwrap());
        assert_eq!(s.agent_addr(), Some("[::1]:7".parse().unwrap()));
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = resolve(&[], "[client]\nhbs_pulse_period = fast\n").unwrap_err();
        assert_eq!(err.to_string(), "t.ini:2: [client] hbs_pulse_period = \"fast\": not a whole number");
        let err = resolve(&[], "[server]\nlisten = nowhere\n").unwrap_err();
        assert!(err.to_string().starts_with("t.ini:2: [server] listen"), "{err}");
        let err = resolve(&["--listen", "nowhere"], "").unwrap_err();
        assert!(err.to_string().starts_with("--listen: "), "{err}");
        let err = resolve(&["--bogus"], "").unwrap_err();
        assert_eq!(err.to_string(), "--bogus: unknown option (see --help)");
        let err = resolve(&["--pidfile"], "").unwrap_err();
        assert_eq!(err.to_string(), "--pidfile: needs a value");
        let err = resolve(&[], "[agent]\nrx_port = 70000\n").unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn hmac_key_file_from_flag_or_ini_and_off_by_default() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("gh-srv-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "s3cret\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = key.display().to_string();
        assert_eq!(resolve(&[], "").unwrap().hmac_key, None);
        let want = Some(HmacKey::new(b"s3cret".to_vec()).unwrap());
        assert_eq!(resolve(&["--hmac-key-file", &k], "").unwrap().hmac_key, want);
        assert_eq!(resolve(&[], &format!("[server]\nhmac_key_file = {k}\n")).unwrap().hmac_key, want);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve(&["--hmac-key-file", &k], "").unwrap_err();
        assert!(matches!(err, ConfigError::Key(_)) && err.to_string().contains(&k), "{err}");
        let missing = dir.join("nope").display().to_string();
        let err = resolve(&[], &format!("[server]\nhmac_key_file = {missing}\n")).unwrap_err();
        assert!(err.to_string().contains(&missing), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn allowed_ips_include_loopback_and_configured_addresses() {
        let s = resolve(&["--agent-allow", "10.0.0.5", "--agent-allow", "::1"], "").unwrap();
        let ips = s.allowed_ips();
        assert!(ips.contains(&"10.0.0.5".parse().unwrap()));
        assert!(ips.contains(&"127.0.0.1".parse().unwrap()));
        let s = resolve(&["--agent", "192.0.2.1:2401"], "").unwrap();
        assert!(s.allowed_ips().contains(&"192.0.2.1".parse().unwrap()));
    }
}
