//! The restart state of guestServer (issue "restart without loss"): known
//! instances with their reporting gates and what their guests announced, the
//! host gate, and the failure and vote events guestAgent has not yet
//! acknowledged (issue 6: they are retransmitted after a restart). JSON,
//! written atomically (temp file, fsync, rename).
//!
//! The dispatcher builds a snapshot and hands the bytes to the "state-saver"
//! thread, so a slow disk never blocks the dispatcher; the file is read once
//! on the main thread at start-up.

use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, Sender};
use gh_threads::guard::{spawn_named, ThreadExit};
use serde::{Deserialize, Serialize};

use super::instance::GuestParams;
use crate::daemon::write_atomic;

/// File name under `--state-dir`.
pub const FILE_NAME: &str = "guestServer.state.json";
/// Format version of the file.
pub const FORMAT: u32 = 1;

/// One instance as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedInstance {
    pub uuid: String,
    pub chan: Option<String>,
    pub reporting: bool,
    pub heartbeating: bool,
    pub params: GuestParams,
}

/// One unacknowledged LOSS, ILLHEALTH or VOTE_NOTIFY (`retransmit.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedEvent {
    pub event_id: u64,
    /// The envelope's command code.
    pub code: u32,
    /// The payload exactly as first sent (JSON text).
    pub payload: String,
    /// Sends so far.
    pub attempts: u32,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub format: u32,
    pub host_reporting: bool,
    pub instances: Vec<SavedInstance>,
    /// Absent (empty) in files written before events were persisted.
    #[serde(default)]
    pub pending_events: Vec<SavedEvent>,
    /// The next event id to allocate (absent: 0, the clock decides).
    #[serde(default)]
    pub next_event_id: u64,
}

/// Path of the state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the state file; `Ok(None)` when there is none.
pub fn load(dir: &Path) -> Result<Option<Saved>, String> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: unreadable state file ({e}); starting without it", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Handle of the saver thread: drop disconnects, then joins.
pub struct Saver {
    tx: Option<Sender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Saver {
    /// Queues bytes to be written (never blocks: unbounded, and the thread
    /// only ever writes the newest snapshot it has).
    pub fn save(&self, bytes: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(bytes);
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Spawns thread "state-saver" writing snapshots to `dir`.
pub fn spawn_saver<E: Send + 'static>(
    dir: PathBuf,
    exit_tx: Sender<E>,
    on_exit: fn(ThreadExit) -> E,
) -> std::io::Result<Saver> {
    let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = crossbeam_channel::unbounded();
    let thread = spawn_named("state-saver", None, exit_tx, on_exit, move || {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let target = path(&dir);
        while let Ok(mut bytes) = rx.recv() {
            // Only the newest snapshot matters.
            while let Ok(newer) = rx.try_recv() {
                bytes = newer;
            }
            if let Err(e) = write_atomic(&target, &bytes) {
                log::error!("cannot write {}: {e}", target.display());
            }
        }
        Ok(())
    })?;
    Ok(Saver { tx: Some(tx), thread: Some(thread) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saver_writes_the_newest_snapshot_and_load_reads_it_back() {
        let dir = std::env::temp_dir().join(format!("gh-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir), Ok(None));
        let (tx, _rx) = crossbeam_channel::unbounded::<ThreadExit>();
        let saver = spawn_saver(dir.clone(), tx, |e| e).unwrap();
        let saved = Saved {
            format: FORMAT,
            host_reporting: false,
            instances: vec![SavedInstance {
                uuid: "u".repeat(36),
                chan: None,
                reporting: true,
                heartbeating: true,
                params: GuestParams::default(),
            }],
            pending_events: vec![SavedEvent {
                event_id: 7,
                code: 0xFEAD,
                payload: r#"{"uuid":"u","event_id":7}"#.into(),
                attempts: 3,
            }],
            next_event_id: 8,
        };
        saver.save(b"junk".to_vec());
        saver.save(serde_json::to_vec(&saved).unwrap());
        drop(saver); // joins after writing everything queued
        assert_eq!(load(&dir), Ok(Some(saved.clone())));
        // A file from before pending events were persisted still loads.
        std::fs::write(path(&dir), br#"{"format":1,"host_reporting":true,"instances":[]}"#).unwrap();
        assert_eq!(load(&dir).unwrap().map(|s| s.pending_events.len()), Some(0));
        std::fs::write(path(&dir), b"{not json").unwrap();
        assert!(load(&dir).unwrap_err().contains("unreadable state file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
