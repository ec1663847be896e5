//! The guestServer under test: a child process in a scratch directory with
//! its stderr log in a file (the log is read afterwards to count heartbeat
//! misses). Main thread. Dropping it sends SIGTERM, waits briefly, then kills.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;

pub struct ServerProc {
    child: Child,
    pub listen: SocketAddr,
    pub log: PathBuf,
}

/// Heartbeat settings written to the ini.
pub const PULSE_PERIOD_MS: u32 = 400;
pub const FAILURE_THRESHOLD: u32 = 1;

impl ServerProc {
    /// Starts `bin` with channels in `channels` and events to `sink`.
    /// `cpus`: pin the process to these CPUs.
    pub fn start(
        bin: &Path,
        dir: &Path,
        channels: &Path,
        sink: SocketAddr,
        cpus: Option<std::ops::Range<usize>>,
    ) -> Result<Self, BenchError> {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| BenchError::Io("pick a UDP port".into(), e))?
            .port();
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let ini = dir.join("guestServer.ini");
        let text = format!(
            "[agent]\nrx_port = {}\n[client]\nhbs_pulse_period = {PULSE_PERIOD_MS}\nhbs_failure_threshold = {FAILURE_THRESHOLD}\n",
            sink.port()
        );
        std::fs::write(&ini, text).map_err(|e| BenchError::Io(ini.display().to_string(), e))?;
        let log = dir.join("guestServer.log");
        let log_file = std::fs::File::create(&log).map_err(|e| BenchError::Io(log.display().to_string(), e))?;
        let mut cmd = Command::new(bin);
        if let Some(cpus) = cpus {
            // SAFETY: the closure only calls sched_setaffinity (async-signal-safe)
            // on a stack-allocated cpu set; it allocates nothing.
            unsafe {
                cmd.pre_exec(move || pin_current(cpus.clone()));
            }
        }
        let child = cmd
            .arg("-f")
            .arg("--config")
            .arg(&ini)
            .arg("--channel-dir")
            .arg(channels)
            .arg("--pidfile")
            .arg(dir.join("guestServer.pid"))
            .arg("--health-file")
            .arg(dir.join("guestServer.info"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--hostname")
            .arg("bench")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--agent")
            .arg(sink.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|e| BenchError::Io(format!("start {}", bin.display()), e))?;
        Ok(ServerProc { child, listen, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(0);
        if pid > 0 {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts log lines containing `needle` whose text does not contain any of `exclude`.
pub fn count_log(log: &Path, needle: &str, exclude: &[String]) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.contains(needle) && !exclude.iter().any(|x| l.contains(x.as_str()))).count() as u64
}

/// Pins the calling thread (and the threads it spawns later) to `cpus`.
pub fn pin_current(cpus: std::ops::Range<usize>) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus {
        // SAFETY: CPU_SET writes inside `set` for cpu < CPU_SETSIZE, checked here.
        if cpu < libc::CPU_SETSIZE as usize {
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    // SAFETY: a valid cpu set of the size passed; pid 0 = the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
