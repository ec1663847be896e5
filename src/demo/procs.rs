//! Starting and stopping the demo's daemons: guestAgent and two guestServers
//! as real child processes on loopback, their stderr forwarded line by line
//! (filtered) into the timeline.
//!
//! Runs on the demo's main thread; one small thread per child drains its
//! stderr.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crossbeam_channel::Sender;

use super::{DemoError, Note};

/// A running daemon.
pub struct Daemon {
    pub name: String,
    child: Child,
}

impl Daemon {
    /// Starts `bin` with `args`; log lines containing any of `keep` go to the timeline.
    pub fn start(
        name: &str,
        bin: &Path,
        args: &[String],
        keep: &'static [&'static str],
        tx: Sender<Note>,
    ) -> Result<Self, DemoError> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DemoError::Spawn(bin.display().to_string(), e))?;
        if let Some(err) = child.stderr.take() {
            let who = name.to_string();
            let spawned = std::thread::Builder::new().name(format!("log-{name}")).spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let wanted =
                        line.contains(" WARN ") || line.contains(" ERROR ") || keep.iter().any(|k| line.contains(k));
                    if wanted {
                        // Drop the timestamp/ident prefix: the timeline has its own.
                        let text = line.split_once("] ").map(|(_, t)| t.trim().to_string()).unwrap_or(line);
                        let _ = tx.send(Note::Log { who: who.clone(), text });
                    }
                }
            });
            spawned.map_err(|e| DemoError::Spawn(format!("log thread for {name}"), e))?;
        }
        Ok(Self { name: name.to_string(), child })
    }

    /// SIGTERM, then wait (SIGKILL after 5 s).
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Finds `name` next to the running executable; when it is missing and we
/// were started by `cargo run`, builds it with the same profile first.
pub fn sibling_binary(name: &str) -> Result<PathBuf, DemoError> {
    let exe = std::env::current_exe().map_err(|e| DemoError::Spawn("current executable".into(), e))?;
    let dir = exe.parent().ok_or_else(|| DemoError::Missing(name.into()))?;
    let path = dir.join(name);
    if path.exists() {
        return Ok(path);
    }
    let Some(cargo) = std::env::var_os("CARGO") else { return Err(DemoError::Missing(path.display().to_string())) };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--bin", name]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| DemoError::Spawn("cargo build".into(), e))?;
    if status.success() && path.exists() {
        Ok(path)
    } else {
        Err(DemoError::Missing(path.display().to_string()))
    }
}
