//! Unit tests of guestAgent configuration.

use super::*;

fn args(v: &[&str]) -> Args {
    parse_args(v.iter().map(|s| s.to_string())).unwrap()
}

fn ini(text: &str, name: &str) -> Ini {
    Ini::parse_reader(text.as_bytes(), name).unwrap()
}

#[test]
fn defaults_are_the_originals() {
    let s = settings(&Args::default(), None, None, None).unwrap();
    assert_eq!(s.http, "127.0.0.1:2410".parse().unwrap());
    assert_eq!((s.rx_port, s.client_port), (2401, 2411));
    assert_eq!((s.mtc_event_port, s.mtc_cmd_port), (2107, 2108));
    assert_eq!(s.vim_url.to_string(), "http://127.0.0.1:30002");
    assert_eq!(s.pidfile, PathBuf::from("/var/run/guestAgent.pid"));
    assert_eq!(s.health_file, PathBuf::from("/var/run/guestAgent.info"));
    assert_eq!(s.audit_start, Duration::from_secs(2));
    assert_eq!(s.audit_interval, Duration::from_secs(10));
    assert!(!s.self_register);
}

#[test]
fn files_then_flags() {
    let agent = ini(
        "[agent]\nrx_port = 3401\nvim_cmd_port = 3410\n[client]\nrx_port = 3411\n[hosts]\ncompute-0 = u0, 10.0.0.5\ncompute-1 = u1,10.0.0.6:4000\n",
        "guestAgent.ini",
    );
    let mtc = ini("[agent]\nhbs_to_mtc_event_port = 3107\nmtc_to_guest_cmd_port=3108\n", "mtc.conf");
    let nfv = ini("[guest-rest-api]\nhost=127.0.0.1\nport=31002\n", "config.ini");
    let s = settings(&Args::default(), Some(&agent), Some(&mtc), Some(&nfv)).unwrap();
    assert_eq!(s.http.port(), 3410);
    assert_eq!(s.vim_url.port, 31002);
    assert_eq!((s.mtc_event_port, s.mtc_cmd_port), (3107, 3108));
    assert_eq!(s.hosts[0].port, 3411);
    assert_eq!(s.hosts[0].ip, "10.0.0.5");
    assert_eq!(s.hosts[1].port, 4000);
    let a = args(&[
        "-f",
        "--http",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1:10",
        "--listen=127.0.0.2:11",
        "--vim-url",
        "http://127.0.0.1:12",
        "--host",
        "c2=u2,127.0.0.1:2411",
        "--log-level",
        "debug",
    ]);
    let s = settings(&a, Some(&agent), Some(&mtc), Some(&nfv)).unwrap();
    assert!(s.foreground);
    assert_eq!(s.http.port(), 9);
    assert_eq!(s.listen.len(), 2);
    assert_eq!(s.vim_url.port, 12);
    assert_eq!(s.hosts.len(), 3);
    assert_eq!(s.log_level, LevelFilter::Debug);
}

#[test]
fn bad_values_name_key_and_line() {
    let agent = ini("[agent]\n\nvim_cmd_port = http\n", "guestAgent.ini");
    let err = settings(&Args::default(), Some(&agent), None, None).unwrap_err();
    assert_eq!(err.to_string(), "guestAgent.ini:3: [agent] vim_cmd_port = \"http\": not a whole number");
    let agent = ini("[hosts]\ncompute-0 = nouuid\n", "g.ini");
    let err = settings(&Args::default(), Some(&agent), None, None).unwrap_err();
    assert!(err.to_string().starts_with("g.ini:2: [hosts] compute-0"), "{err}");
    let err = parse_args(["--bogus".to_string()]).unwrap_err();
    assert!(err.to_string().contains("--bogus"));
    let err = settings(&args(&["--http", "nope"]), None, None, None).unwrap_err();
    assert!(err.to_string().starts_with("--http"));
}

#[test]
fn explicit_missing_file_is_an_error() {
    let a = args(&["--config", "/nonexistent/guestAgent.ini"]);
    assert!(load(&a).is_err());
}

#[test]
fn hmac_key_file_from_flag_or_ini_and_off_by_default() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("gh-agent-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, "s3cret\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let k = key.display().to_string();
    assert_eq!(settings(&Args::default(), None, None, None).unwrap().hmac_key, None);
    let want = Some(HmacKey::new(b"s3cret".to_vec()).unwrap());
    assert_eq!(settings(&args(&["--hmac-key-file", &k]), None, None, None).unwrap().hmac_key, want);
    let file = ini(&format!("[agent]\nhmac_key_file = {k}\n"), "guestAgent.ini");
    assert_eq!(settings(&Args::default(), Some(&file), None, None).unwrap().hmac_key, want);
    std::fs::write(&key, "").unwrap();
    let err = settings(&args(&["--hmac-key-file", &k]), None, None, None).unwrap_err();
    assert_eq!(err.to_string(), format!("HMAC key file {k}: empty"));
    let _ = std::fs::remove_dir_all(dir);
}
