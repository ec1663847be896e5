//! Process plumbing shared by the daemons: logging set-up (syslog LOCAL5 in
//! daemon mode, stderr in the foreground), daemonising, the pid file with
//! duplicate refusal, the health file, and atomic state-file writes.
//!
//! Runs on the main thread at start-up (logging, daemonise, pid file) and on
//! the dispatcher (health file, state files).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use log::{LevelFilter, Log, Metadata, Record};
use thiserror::Error;

/// Start-up failures of the process plumbing.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("cannot connect to syslog")]
    Syslog(#[source] syslog::Error),
    #[error("a logger is already installed")]
    LoggerSet,
    #[error("refusing to start duplicate process: pid {pid} in {path} is alive")]
    AlreadyRunning { path: PathBuf, pid: i32 },
    #[error("cannot write pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot daemonise")]
    Fork(#[source] io::Error),
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Human-readable lines on stderr (`-f`).
    Stderr,
    /// syslog facility LOCAL5 through `/dev/log`.
    Syslog,
    /// syslog facility LOCAL5 through another datagram socket (tests).
    SyslogAt(PathBuf),
}

/// Parses a level name (error, warn, info, debug, trace, off).
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse::<LevelFilter>().map_err(|_| format!("unknown log level {s:?} (use error, warn, info, debug or trace)"))
}

/// Installs the process logger once.
pub fn init_logging(ident: &str, target: &LogTarget, level: LevelFilter) -> Result<(), DaemonError> {
    let logger: Box<dyn Log> = match target {
        LogTarget::Stderr => Box::new(StderrLogger { ident: ident.to_string() }),
        LogTarget::Syslog | LogTarget::SyslogAt(_) => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_LOCAL5,
                hostname: None,
                process: ident.to_string(),
                pid: std::process::id(),
            };
            let writer = match target {
                LogTarget::SyslogAt(path) => syslog::unix_custom(formatter, path),
                _ => syslog::unix(formatter),
            }
            .map_err(DaemonError::Syslog)?;
            Box::new(syslog::BasicLogger::new(writer))
        }
    };
    log::set_boxed_logger(logger).map_err(|_| DaemonError::LoggerSet)?;
    log::set_max_level(level);
    Ok(())
}

struct StderrLogger {
    ident: String,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let thread = std::thread::current();
        let line = format!(
            "{} {} [{}] {:<5} {}\n",
            utc_timestamp(),
            self.ident,
            thread.name().unwrap_or("?"),
            record.level(),
            record.args()
        );
        // One write per line so concurrent threads do not interleave.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = io::stderr().flush();
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from the system clock (log lines only).
pub fn utc_timestamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all dates after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Detaches from the terminal: fork, setsid, chdir /, stdio to /dev/null,
/// umask 022. The parent exits 0 once the child is running.
pub fn daemonize() -> Result<(), DaemonError> {
    // SAFETY: called from main before any thread is spawned, so fork() only
    // has to duplicate this one thread.
    match unsafe { libc::fork() } {
        -1 => return Err(DaemonError::Fork(io::Error::last_os_error())),
        0 => {}
        _ => std::process::exit(0),
    }
    // SAFETY: plain syscalls without pointers from Rust.
    unsafe {
        if libc::setsid() == -1 {
            return Err(DaemonError::Fork(io::Error::last_os_error()));
        }
        libc::umask(0o022);
    }
    std::env::set_current_dir("/").map_err(DaemonError::Fork)?;
    let devnull = fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(DaemonError::Fork)?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors with a valid open fd.
        if unsafe { libc::dup2(devnull.as_raw_fd(), fd) } == -1 {
            return Err(DaemonError::Fork(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// A pid file that is removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes our pid to `path`, refusing when it names another live process.
    pub fn create(path: &Path) -> Result<Self, DaemonError> {
        if let Ok(text) = fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                if pid > 0 && pid != std::process::id() as i32 && process_alive(pid) {
                    return Err(DaemonError::AlreadyRunning { path: path.to_path_buf(), pid });
                }
            }
        }
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        write_atomic(path, format!("{}\n", std::process::id()).as_bytes())
            .map_err(|e| DaemonError::PidFile { path: path.to_path_buf(), source: e })?;
        Ok(Self { path: path.to_path_buf() })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Writes `bytes` to `path` atomically: temp file in the same directory,
/// fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

/// The health file text the originals write at start and on SIGUSR1.
pub fn write_health_file(path: &Path, program: &str) -> io::Result<()> {
    let text = format!("{program}: I'm healthy (pid {}) at {}\n", std::process::id(), utc_timestamp());
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gh-daemon-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pid_file_refuses_a_live_duplicate_and_replaces_a_stale_one() {
        let dir = temp_dir("pid");
        let path = dir.join("x.pid");
        // pid 1 is always alive.
        fs::write(&path, "1\n").unwrap();
        assert!(matches!(PidFile::create(&path), Err(DaemonError::AlreadyRunning { pid: 1, .. })));
        // A pid that cannot exist is stale.
        fs::write(&path, "2147483000\n").unwrap();
        let pid = PidFile::create(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        drop(pid);
        assert!(!path.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = temp_dir("atomic");
        let path = dir.join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn timestamp_has_the_expected_shape() {
        let ts = utc_timestamp();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    }

    #[test]
    fn level_names_parse() {
        assert_eq!(parse_level("debug").unwrap(), LevelFilter::Debug);
        assert!(parse_level("loud").is_err());
    }
}
