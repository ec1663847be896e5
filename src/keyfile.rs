//! Reading the shared HMAC key file of guestServer and guestAgent (issue 6,
//! `wire::auth`). Runs on the main thread at start-up (and on the dispatcher
//! when a SIGHUP re-validates the configuration; the key in use is not
//! replaced then).
//!
//! The key is the file's bytes, less one trailing newline (`\n` or `\r\n`),
//! so `echo`-made files work. The file must be a regular file, readable, not
//! empty, and neither writable by its group nor accessible at all by others
//! (0600 or 0640): a key anyone on the host can read protects nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::wire::auth::HmacKey;

/// Mode bits a key file must not have: group write, and anything for others.
const FORBIDDEN_MODE: u32 = 0o027;

/// Why a key file cannot be used. Every message names the file.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("HMAC key file {}: cannot read", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HMAC key file {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("HMAC key file {}: empty", path.display())]
    Empty { path: PathBuf },
    #[error(
        "HMAC key file {}: mode {mode:04o} lets others read it or its group change it (use chmod 600 or 640)",
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
}

/// The `hmac_key_file` setting of either daemon: unset, empty or `off` is
/// no key (the originals' unauthenticated envelope); anything else is a
/// key file to load.
pub fn from_setting(setting: Option<&Path>) -> Result<Option<HmacKey>, KeyFileError> {
    match setting {
        Some(p) if !p.as_os_str().is_empty() && p != Path::new("off") => load(p).map(Some),
        _ => Ok(None),
    }
}

/// Loads and checks the key file at `path`.
pub fn load(path: &Path) -> Result<HmacKey, KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile { path: path.to_path_buf() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & FORBIDDEN_MODE != 0 {
        return Err(KeyFileError::Permissions { path: path.to_path_buf(), mode });
    }
    let mut bytes = std::fs::read(path).map_err(io)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    HmacKey::new(bytes).map_err(|_| KeyFileError::Empty { path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "gh-keyfile-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(d: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn unset_empty_or_off_is_no_key() {
        for off in [None, Some(Path::new("")), Some(Path::new("off"))] {
            assert_eq!(from_setting(off).unwrap(), None);
        }
        let d = dir();
        let p = write(&d, "k", b"secret", 0o600);
        assert_eq!(from_setting(Some(&p)).unwrap(), Some(HmacKey::new(b"secret".to_vec()).unwrap()));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn one_trailing_newline_is_stripped() {
        let d = dir();
        let k = HmacKey::new(b"secret".to_vec()).unwrap();
        assert_eq!(load(&write(&d, "a", b"secret\n", 0o600)).unwrap(), k);
        assert_eq!(load(&write(&d, "b", b"secret\r\n", 0o640)).unwrap(), k);
        assert_eq!(load(&write(&d, "c", b"secret", 0o400)).unwrap(), k);
        let two = load(&write(&d, "d", b"secret\n\n", 0o600)).unwrap();
        assert_eq!(two, HmacKey::new(b"secret\n".to_vec()).unwrap());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let d = dir();
        let missing = d.join("missing");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, KeyFileError::Io { .. }) && e.to_string().contains("missing"), "{e}");
        for (name, bytes) in [("empty", &b""[..]), ("newline", &b"\n"[..])] {
            let e = load(&write(&d, name, bytes, 0o600)).unwrap_err();
            assert_eq!(e.to_string(), format!("HMAC key file {}: empty", d.join(name).display()));
        }
        for mode in [0o644, 0o604, 0o660, 0o601] {
            let e = load(&write(&d, "open", b"k", mode)).unwrap_err();
            assert!(matches!(e, KeyFileError::Permissions { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains(&d.join("open").display().to_string()), "{e}");
        }
        assert!(matches!(load(&d).unwrap_err(), KeyFileError::NotAFile { .. }));
        let _ = std::fs::remove_dir_all(d);
    }
}
