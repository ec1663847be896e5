//! The one-command demo: runs `guest-heartbeat-demo` and checks that its
//! timeline shows heartbeats, the miss, the loss alarm with the guest's
//! repair action, the ill-health alarm and the rejected vote, and that it
//! leaves nothing behind.

use std::process::{Command, Stdio};

#[test]
fn demo_timeline_shows_loss_alarm_and_reject_and_cleans_up() {
    let child = Command::new(env!("CARGO_BIN_EXE_guest-heartbeat-demo"))
        .args(["--duration", "18"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "service status enabled",
        "Heartbeat Miss 1 of 1",
        "compute-0/vm-1: ALARM heartbeat failed -> repair-action reboot",
        "compute-1/vm-1: ALARM heartbeat unhealthy -> repair-action stop",
        "compute-0/vm-2: vote result for stop: guest-response reject",
        "compute-1/vm-0: vote result for stop: guest-response allow",
        "guestAgent exited with 0",
    ] {
        assert!(text.contains(needle), "timeline lacks {needle:?}:\n{text}");
    }
    // Everything it made is gone: its temp dir is named after its pid.
    assert!(!std::env::temp_dir().join(format!("guest-heartbeat-demo-{pid}")).exists());
}
