//! guest-client configuration file (spec guest-side §2), in two stages:
//! `parse_reader` turns `KEY = value` lines into a raw map, `validate` turns
//! that into typed `Settings` with every error naming the key and line.
//!
//! Runs once, on the main thread, before any other thread starts.
//!
//! Unlike the C daemon (which cut a line at its first space, so `KEY = value`
//! was silently ignored), whitespace around `=` is trimmed, one pair of
//! surrounding quotes is stripped and a trailing ` # comment` is dropped
//! (fix Q10). Unknown keys are reported as warnings, not errors, because the
//! same file is shared with systemd's `EnvironmentFile`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Duration;

use crate::wire::vocab::CorrectiveAction;

/// Default conf path of the shipped build.
pub const DEFAULT_PATH: &str = "/etc/guest-client/heartbeat/guest_heartbeat.conf";
/// Longest line the C daemon read (1023 bytes).
const MAX_LINE: usize = 1023;
/// Longest script path (254 bytes).
const MAX_PATH: usize = 254;
/// Minimum heartbeat interval, host and apps.
pub const MIN_INTERVAL_MS: u32 = 400;

/// Errors of either stage; each names what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: &'static str },
    #[error("{key} (line {line}): {reason}: {value:?}")]
    Value { key: &'static str, line: usize, value: String, reason: &'static str },
}

/// One `KEY = value` entry with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    pub value: String,
    pub line: usize,
}

/// The file as read: the last value of every key, plus warnings.
#[derive(Debug, Default, Clone)]
pub struct RawConf {
    pub values: BTreeMap<String, RawValue>,
    pub warnings: Vec<String>,
}

/// Validated settings; the only thing that leaves this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub heartbeat_interval_ms: u32,
    pub init_retry: Duration,
    pub min_timeout: Duration,
    pub corrective_action: CorrectiveAction,
    pub vote_ms: u64,
    pub shutdown_notice_ms: u64,
    pub suspend_notice_ms: u64,
    pub resume_notice_ms: u64,
    pub restart_ms: u64,
    /// `None` when `HEALTH_CHECK_INTERVAL` is 0.
    pub health_check_interval: Option<Duration>,
    pub health_check_script: Option<PathBuf>,
    pub event_notification_script: Option<PathBuf>,
}

impl Default for Settings {
    /// The spec's defaults; equal to validating an empty file (tested).
    fn default() -> Self {
        Settings {
            heartbeat_interval_ms: 1000,
            init_retry: Duration::from_millis(5000),
            min_timeout: Duration::from_millis(5000),
            corrective_action: CorrectiveAction::Reboot,
            vote_ms: 10_000,
            shutdown_notice_ms: 10_000,
            suspend_notice_ms: 10_000,
            resume_notice_ms: 10_000,
            restart_ms: 120_000,
            health_check_interval: None,
            health_check_script: None,
            event_notification_script: None,
        }
    }
}

const KNOWN: &[&str] = &[
    "HB_INTERVAL",
    "HB_INIT_RETRY",
    "HB_MIN_TIMEOUT",
    "CORRECTIVE_ACTION",
    "VOTE",
    "SHUTDOWN_NOTICE",
    "SUSPEND_NOTICE",
    "RESUME_NOTICE",
    "RESTART",
    "HEALTH_CHECK_INTERVAL",
    "HEALTH_CHECK_SCRIPT",
    "EVENT_NOTIFICATION_SCRIPT",
];

/// Stage 1: reads `KEY = value` lines. Blank lines and `#` lines are skipped.
pub fn parse_reader(r: impl Read) -> Result<RawConf, ConfigError> {
    let mut raw = RawConf::default();
    for (i, line) in BufReader::new(r).lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        if line.len() > MAX_LINE {
            return Err(ConfigError::Syntax { line: line_no, reason: "line longer than 1023 bytes" });
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            return Err(ConfigError::Syntax { line: line_no, reason: "expected KEY = value" });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::Syntax { line: line_no, reason: "empty key" });
        }
        if !KNOWN.contains(&key) {
            raw.warnings.push(format!("line {line_no}: unknown key {key} ignored"));
        }
        raw.values.insert(key.to_string(), RawValue { value: clean_value(value), line: line_no });
    }
    Ok(raw)
}

/// Trims, drops an unquoted trailing ` # comment`, strips one pair of quotes.
fn clean_value(v: &str) -> String {
    let v = v.trim();
    let quoted = |q: char| v.len() >= 2 && v.starts_with(q) && v.ends_with(q);
    if quoted('"') || quoted('\'') {
        return v[1..v.len() - 1].to_string();
    }
    let v = match v.find(" #").or_else(|| v.find("\t#")) {
        Some(i) => v[..i].trim_end(),
        None => v,
    };
    let quoted = |q: char| v.len() >= 2 && v.starts_with(q) && v.ends_with(q);
    if quoted('"') || quoted('\'') {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

impl RawConf {
    /// Stage 2: types, ranges, defaults and clamps (fix Q10).
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let interval = self.number("HB_INTERVAL", 1000)?;
        if interval < u64::from(MIN_INTERVAL_MS) {
            return Err(self.bad("HB_INTERVAL", "must be at least 400 ms"));
        }
        let interval = u32::try_from(interval).map_err(|_| self.bad("HB_INTERVAL", "larger than a 32-bit value"))?;
        // 0 used to flood init at the poll tick; clamp to 1 s.
        let init_retry = self.number("HB_INIT_RETRY", 5000)?.max(1000);
        let min_timeout = self.number("HB_MIN_TIMEOUT", 5000)?.max(u64::from(interval));
        let corrective_action = match self.values.get("CORRECTIVE_ACTION") {
            None => CorrectiveAction::Reboot,
            Some(v) => match v.value.as_str() {
                "reboot" => CorrectiveAction::Reboot,
                "stop" => CorrectiveAction::Stop,
                "log" => CorrectiveAction::Log,
                _ => return Err(self.bad("CORRECTIVE_ACTION", "must be reboot, stop or log")),
            },
        };
        let secs = |key: &'static str, default: u64| -> Result<u64, ConfigError> {
            let s = self.number(key, default)?;
            if s > 86_400 {
                return Err(self.bad(key, "more than a day"));
            }
            Ok(s * 1000)
        };
        let health_secs = secs("HEALTH_CHECK_INTERVAL", 0)?;
        Ok(Settings {
            heartbeat_interval_ms: interval,
            init_retry: Duration::from_millis(init_retry),
            min_timeout: Duration::from_millis(min_timeout),
            corrective_action,
            vote_ms: secs("VOTE", 10)?,
            shutdown_notice_ms: secs("SHUTDOWN_NOTICE", 10)?,
            suspend_notice_ms: secs("SUSPEND_NOTICE", 10)?,
            resume_notice_ms: secs("RESUME_NOTICE", 10)?,
            restart_ms: secs("RESTART", 120)?,
            health_check_interval: (health_secs > 0).then(|| Duration::from_millis(health_secs)),
            health_check_script: self.path("HEALTH_CHECK_SCRIPT")?,
            event_notification_script: self.path("EVENT_NOTIFICATION_SCRIPT")?,
        })
    }

    fn number(&self, key: &'static str, default: u64) -> Result<u64, ConfigError> {
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v.value.parse::<u64>().map_err(|_| self.bad(key, "not a non-negative integer")),
        }
    }

    fn path(&self, key: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) if v.value.is_empty() => Ok(None),
            Some(v) if v.value.len() > MAX_PATH => Err(self.bad(key, "longer than 254 bytes")),
            Some(v) => Ok(Some(PathBuf::from(&v.value))),
        }
    }

    fn bad(&self, key: &'static str, reason: &'static str) -> ConfigError {
        let (value, line) = self.values.get(key).map(|v| (v.value.clone(), v.line)).unwrap_or_default();
        ConfigError::Value { key, line, value, reason }
    }
}

impl Settings {
    /// The `*_secs` value announced in `init`: ms / 1000 + 1 (spec §2).
    pub fn announced_secs(ms: u64) -> u32 {
        u32::try_from(ms / 1000 + 1).unwrap_or(u32::MAX)
    }

    /// No-challenge timeout: max(2 × interval, HB_MIN_TIMEOUT).
    pub fn challenge_timeout(&self) -> Duration {
        Duration::from_millis(2 * u64::from(self.heartbeat_interval_ms)).max(self.min_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<Settings, ConfigError> {
        parse_reader(text.as_bytes())?.validate()
    }

    const SHIPPED: &str = "# shipped\nHB_INTERVAL=1000\nCORRECTIVE_ACTION=\"reboot\"\nVOTE=8\nSHUTDOWN_NOTICE=8\nSUSPEND_NOTICE=8\nRESUME_NOTICE=13\nRESTART=600\nHEALTH_CHECK_INTERVAL=30\nHEALTH_CHECK_SCRIPT=/etc/guest-client/heartbeat/sample_health_check_script\n";

    #[test]
    fn shipped_file_gives_the_observed_announced_values() {
        let s = settings(SHIPPED).unwrap();
        assert_eq!(s.heartbeat_interval_ms, 1000);
        assert_eq!(Settings::announced_secs(s.vote_ms), 9);
        assert_eq!(Settings::announced_secs(s.resume_notice_ms), 14);
        assert_eq!(Settings::announced_secs(s.restart_ms), 601);
        assert_eq!(s.health_check_interval, Some(Duration::from_secs(30)));
        assert_eq!(s.challenge_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let s = settings("").unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.vote_ms, 10_000);
        assert_eq!(s.restart_ms, 120_000);
        assert_eq!(s.corrective_action, CorrectiveAction::Reboot);
        assert_eq!(s.health_check_interval, None);
    }

    #[test]
    fn spaces_quotes_and_comments_are_handled() {
        let s =
            settings("HB_INTERVAL = 2000 # note\n  VOTE\t=  '4'\nEVENT_NOTIFICATION_SCRIPT = \"/a b/c\"\n").unwrap();
        assert_eq!(s.heartbeat_interval_ms, 2000);
        assert_eq!(s.vote_ms, 4000);
        assert_eq!(s.event_notification_script, Some(PathBuf::from("/a b/c")));
        assert_eq!(s.challenge_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = settings("\nHB_INTERVAL=300\n").unwrap_err().to_string();
        assert!(e.contains("HB_INTERVAL") && e.contains("line 2"), "{e}");
        let e = settings("VOTE=-1\n").unwrap_err().to_string();
        assert!(e.contains("VOTE") && e.contains("line 1"), "{e}");
        let e = settings("CORRECTIVE_ACTION=explode\n").unwrap_err().to_string();
        assert!(e.contains("CORRECTIVE_ACTION"), "{e}");
        let e = settings("a\nnot a pair\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn clamps_and_warnings() {
        let raw = parse_reader("HB_INIT_RETRY=0\nHB_MIN_TIMEOUT=100\nFOO=1\nVOTE=1\nVOTE=2\n".as_bytes()).unwrap();
        assert_eq!(raw.warnings.len(), 1);
        assert!(raw.warnings[0].contains("FOO"));
        let s = raw.validate().unwrap();
        assert_eq!(s.init_retry, Duration::from_secs(1));
        assert_eq!(s.min_timeout, Duration::from_millis(1000));
        assert_eq!(s.vote_ms, 2000, "last repeated key wins");
    }
}
