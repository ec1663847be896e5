//! The state directory: `agent-state.json` (hosts with their reporting gates,
//! instances with theirs) and `outbox.json` (VIM events not yet delivered,
//! and the guestServer event ids already taken, `dedup.rs`: one file, so
//! one atomic write covers both). Both are JSON through serde types and
//! written atomically (temp file, fsync, rename). Loaded by `main` at
//! start-up, written by the dispatcher after any event that changed them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::daemon::write_atomic;

use super::dedup::Dedup;
use super::inventory::{Host, Instance, Inventory};
use super::outbox::{OutEvent, Outbox};

pub const STATE_FILE: &str = "agent-state.json";
pub const OUTBOX_FILE: &str = "outbox.json";

/// Format of `agent-state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub hosts: Vec<Host>,
    pub instances: Vec<Instance>,
}

/// Acknowledged guestServer event ids of one host, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenIds {
    pub hostname: String,
    pub ids: Vec<u64>,
}

/// Format of `outbox.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxFile {
    pub events: Vec<OutEvent>,
    /// Absent in files written before the ids were persisted.
    #[serde(default)]
    pub seen: Vec<SeenIds>,
}

/// What a previous run left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persisted {
    pub hosts: Vec<Host>,
    pub instances: Vec<Instance>,
    pub outbox: Vec<OutEvent>,
    pub seen: Vec<(String, Vec<u64>)>,
}

#[derive(Debug, Error)]
pub enum PersistError {
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("cannot serialise {0}")]
    Json(PathBuf, #[source] serde_json::Error),
    #[error("cannot create state directory {0}")]
    Dir(PathBuf, #[source] io::Error),
}

fn save<T: Serialize>(path: PathBuf, value: &T) -> Result<(), PersistError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| PersistError::Json(path.clone(), e))?;
    write_atomic(&path, &bytes).map_err(|e| PersistError::Write(path, e))
}

pub fn save_state(dir: &Path, inv: &Inventory) -> Result<(), PersistError> {
    let file = StateFile { hosts: inv.hosts().cloned().collect(), instances: inv.instances().cloned().collect() };
    save(dir.join(STATE_FILE), &file)
}

pub fn save_outbox(dir: &Path, outbox: &Outbox, seen: &Dedup) -> Result<(), PersistError> {
    let seen = seen.snapshot().into_iter().map(|(hostname, ids)| SeenIds { hostname, ids }).collect();
    save(dir.join(OUTBOX_FILE), &OutboxFile { events: outbox.snapshot(), seen })
}

/// Reads one file; a missing file is the default, an unreadable or corrupt
/// one is logged and moved aside so that it is kept for inspection.
fn load_one<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> T {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return T::default(),
        Err(e) => {
            log::error!("cannot read {}: {e}; starting without it", path.display());
            return T::default();
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let aside = path.with_extension("json.corrupt");
            log::error!("{} is corrupt ({e}); moved to {}", path.display(), aside.display());
            let _ = fs::rename(path, &aside);
            T::default()
        }
    }
}

/// Creates the directory if needed and loads both files.
pub fn load(dir: &Path) -> Result<Persisted, PersistError> {
    fs::create_dir_all(dir).map_err(|e| PersistError::Dir(dir.to_path_buf(), e))?;
    let state: StateFile = load_one(&dir.join(STATE_FILE));
    let outbox: OutboxFile = load_one(&dir.join(OUTBOX_FILE));
    Ok(Persisted {
        hosts: state.hosts,
        instances: state.instances,
        outbox: outbox.events,
        seen: outbox.seen.into_iter().map(|s| (s.hostname, s.ids)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::inventory::Dest;
    use crate::agent::outbox::{Backoff, EventKind};
    use std::time::{Duration, Instant};

    #[test]
    fn round_trip_and_corrupt_file() {
        let dir = std::env::temp_dir().join(format!("gh-agent-persist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), Persisted::default());
        let mut inv = Inventory::default();
        inv.add_host("c0", "h0", Dest { ip: "10.0.0.1".into(), port: 2411 }).unwrap();
        inv.host_inst("c0", true).unwrap();
        inv.add_inst("c0", "i1", true).unwrap();
        save_state(&dir, &inv).unwrap();
        let backoff = Backoff { min: Duration::from_secs(1), max: Duration::from_secs(2) };
        let mut ob = Outbox::new(10, 1, backoff);
        ob.push("i1", EventKind::Alarm, "/p".into(), "{}".into(), Instant::now());
        let mut seen = Dedup::default();
        seen.first_time("h0", 42);
        save_outbox(&dir, &ob, &seen).unwrap();
        let back = load(&dir).unwrap();
        assert!(back.hosts[0].reporting);
        assert_eq!(back.instances[0].uuid, "i1");
        assert_eq!(back.outbox, ob.snapshot());
        assert_eq!(back.seen, vec![("h0".to_string(), vec![42])]);
        // An outbox file from before the ids were persisted still loads.
        fs::write(dir.join(OUTBOX_FILE), br#"{"events":[]}"#).unwrap();
        assert_eq!(load(&dir).unwrap().seen, vec![]);
        save_outbox(&dir, &ob, &seen).unwrap();
        fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
        let back = load(&dir).unwrap();
        assert!(back.hosts.is_empty());
        assert!(dir.join("agent-state.json.corrupt").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
