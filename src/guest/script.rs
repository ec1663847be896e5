//! Running the health-check and event-handling scripts (spec guest-side
//! §6.1, §7.2): the dispatcher calls `start`, which forks the script in its
//! own process group and hands the child to a waiter thread ("script-<n>")
//! that drains stdout to EOF (keeping the first 256 bytes, fix Q8), reaps
//! the child and sends `Event::ScriptDone`. `kill` SIGKILLs the whole group
//! (fix Q4), so a script's own children do not survive it.

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crossbeam_channel::Sender;
use gh_threads::guard::spawn_named;

use super::events::Event;

/// Bytes of stdout kept.
pub const CAPTURE: usize = 256;
/// Waiter threads only read and wait; a small stack is plenty.
const STACK: usize = 64 * 1024;

/// A running script, as the dispatcher knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptRun {
    pub run: u64,
    pub pid: i32,
}

impl ScriptRun {
    /// SIGKILLs the script's process group; its result will be ignored.
    pub fn kill(&self) {
        // SAFETY: killpg only sends a signal; the group id is the child's pid
        // because it was started with process_group(0).
        let r = unsafe { libc::killpg(self.pid, libc::SIGKILL) };
        if r != 0 {
            log::debug!("killpg {}: {}", self.pid, io::Error::last_os_error());
        }
    }
}

/// Checks the script (exists, executable, non-empty), then starts it with
/// `args`; stdin and stderr are /dev/null.
pub fn start(run: u64, path: &Path, args: &[&str], tx: &Sender<Event>) -> io::Result<ScriptRun> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() == 0 || meta.permissions().mode() & 0o111 == 0 {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "not an executable, non-empty file"));
    }
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
    let mut stdout = child.stdout.take();
    let done_tx = tx.clone();
    let name = format!("script-{run}");
    spawn_named(&name, Some(STACK), tx.clone(), Event::ThreadExited, move || {
        let mut output = Vec::with_capacity(CAPTURE);
        if let Some(out) = stdout.as_mut() {
            let mut buf = [0u8; 1024];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = CAPTURE.saturating_sub(output.len());
                        output.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        drop(stdout);
        let exit_code = child.wait().map_err(|e| e.to_string())?.code();
        let _ = done_tx.send(Event::ScriptDone { run, exit_code, output });
        Ok(())
    })?;
    Ok(ScriptRun { run, pid })
}
