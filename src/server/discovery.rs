//! Channel discovery helpers (spec server §3.1, §3.6): which socket file
//! names are heartbeat channels, and the directory scan used at start-up, on
//! inotify overflow and by the 180 s audit.
//!
//! Pure name matching plus one blocking `read_dir`, run on the dispatcher
//! (a scan lists file names only; it never touches a socket).

use std::path::{Path, PathBuf};

use super::instance::UUID_LEN;

const PREFIX: &str = "cgcs.heartbeat.";
const SUFFIX: &str = ".sock";

/// The uuid in `cgcs.heartbeat.<uuid>.sock`, if `name` is a channel: the
/// middle is exactly 36 characters with no `.`, nothing after `sock`. The
/// alternate `wrs.heartbeat.agent.0.<uuid>.sock` form is not matched
/// (decisions §8).
pub fn channel_uuid(name: &str) -> Option<&str> {
    let uuid = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (uuid.len() == UUID_LEN && !uuid.contains('.') && !uuid.contains('/')).then_some(uuid)
}

/// The socket file name for `uuid`.
pub fn channel_name(uuid: &str) -> String {
    format!("{PREFIX}{uuid}{SUFFIX}")
}

/// The socket path for `uuid` (always rebuilt from the uuid, spec §3.1).
pub fn channel_path(dir: &Path, uuid: &str) -> PathBuf {
    dir.join(channel_name(uuid))
}

/// Every channel file name in `dir`, sorted (missing directory: none).
pub fn scan(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| channel_uuid(n).is_some())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8a4f7e52-1c3d-4b6a-9e0f-123456789abc";

    #[test]
    fn accepts_only_the_cgcs_form_with_a_36_character_id() {
        assert_eq!(channel_uuid(&format!("cgcs.heartbeat.{UUID}.sock")), Some(UUID));
        assert_eq!(channel_uuid(&channel_name(UUID)), Some(UUID));
        for bad in [
            format!("cgcs.heartbeat.{UUID}.sock.swp"),
            format!("cgcs.heartbeat.{UUID}x.sock"),
            format!("cgcs.heartbeat.{}.sock", &UUID[1..]),
            format!("wrs.heartbeat.agent.0.{UUID}.sock"),
            format!("cgcs.heartbeat.{}.x.sock", &UUID[2..]),
            "cgcs.heartbeat..sock".to_string(),
            "random".to_string(),
        ] {
            assert_eq!(channel_uuid(&bad), None, "{bad}");
        }
    }

    #[test]
    fn scan_lists_channels_only_and_tolerates_a_missing_dir() {
        let dir = std::env::temp_dir().join(format!("gh-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(scan(&dir).is_empty());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(channel_name(UUID)), b"").unwrap();
        std::fs::write(dir.join("other.sock"), b"").unwrap();
        assert_eq!(scan(&dir), vec![channel_name(UUID)]);
        assert_eq!(channel_path(&dir, UUID), dir.join(channel_name(UUID)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
