//! Tests for the watcher thread, with real inotify in unique temp directories.

use super::*;
use crate::guard::ExitReason;
use crate::testutil::{within, TempDir};
use crossbeam_channel::{unbounded, Receiver};
use std::fs;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    W(WatchMsg),
    Exit(ThreadExit),
}

/// Receives until `want` returns true for the collected messages; fails the
/// test at the deadline.
fn until(rx: &Receiver<Ev>, mut want: impl FnMut(&[WatchMsg]) -> bool) -> Vec<WatchMsg> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !want(&got) {
        match rx.recv_deadline(deadline) {
            Ok(Ev::W(m)) => got.push(m),
            Ok(Ev::Exit(e)) => panic!("watcher exited: {e:?}"),
            Err(_) => panic!("timed out; got {got:?}"),
        }
    }
    got
}

fn has(msg: WatchMsg) -> impl FnMut(&[WatchMsg]) -> bool {
    move |got| got.contains(&msg)
}

fn created(n: &str) -> WatchMsg {
    WatchMsg::Created(n.into())
}

fn deleted(n: &str) -> WatchMsg {
    WatchMsg::Deleted(n.into())
}

fn start(dir: PathBuf) -> (WatcherHandle, Receiver<Ev>) {
    let (tx, rx) = unbounded();
    let h = spawn_watcher(dir, tx, Ev::W, Ev::Exit).unwrap();
    (h, rx)
}

#[test]
fn files_created_deleted_renamed_modified() {
    let tmp = TempDir::new("watch");
    let dir = tmp.path().join("sockets");
    fs::create_dir(&dir).unwrap();
    let (h, rx) = start(dir.clone());
    fs::write(dir.join("marker"), b"").unwrap();
    until(&rx, has(created("marker")));

    for i in 0..20 {
        fs::File::create(dir.join(format!("f{i}"))).unwrap();
    }
    let got = until(&rx, |g| {
        g.iter()
            .filter(|m| matches!(m, WatchMsg::Created(_)))
            .count()
            == 20
    });
    for i in 0..20 {
        assert!(got.contains(&created(&format!("f{i}"))), "missing f{i}");
    }

    fs::write(dir.join("f0"), b"data").unwrap();
    until(&rx, has(WatchMsg::Modified("f0".into())));
    fs::rename(dir.join("f1"), dir.join("g1")).unwrap();
    until(&rx, |g| {
        g.contains(&deleted("f1")) && g.contains(&created("g1"))
    });
    fs::remove_file(dir.join("f2")).unwrap();
    until(&rx, has(deleted("f2")));

    within(WAIT, move || drop(h));
    let exit = rx
        .iter()
        .find_map(|e| match e {
            Ev::Exit(x) => Some(x),
            Ev::W(_) => None,
        })
        .unwrap();
    assert_eq!(exit.name, "watcher");
    assert_eq!(exit.reason, ExitReason::Finished);
}

#[test]
fn dir_deleted_then_recreated() {
    let tmp = TempDir::new("watch-gone");
    let dir = tmp.path().join("sockets");
    fs::create_dir(&dir).unwrap();
    let (_h, rx) = start(dir.clone());
    fs::write(dir.join("marker"), b"").unwrap();
    until(&rx, has(created("marker")));

    fs::remove_dir_all(&dir).unwrap();
    until(&rx, has(WatchMsg::DirGone));
    fs::create_dir(&dir).unwrap();
    until(&rx, has(WatchMsg::DirBack));
    // Watched again: new files are reported.
    fs::write(dir.join("again"), b"").unwrap();
    until(&rx, has(created("again")));
}

#[test]
fn dir_moved_away_then_back() {
    let tmp = TempDir::new("watch-move");
    let dir = tmp.path().join("sockets");
    let aside = tmp.path().join("aside");
    fs::create_dir(&dir).unwrap();
    let (_h, rx) = start(dir.clone());
    fs::write(dir.join("marker"), b"").unwrap();
    until(&rx, has(created("marker")));

    fs::rename(&dir, &aside).unwrap();
    until(&rx, has(WatchMsg::DirGone));
    // Events in the moved-away directory must not be reported.
    fs::write(aside.join("ignored"), b"").unwrap();
    fs::rename(&aside, &dir).unwrap();
    let got = until(&rx, has(WatchMsg::DirBack));
    assert!(!got.contains(&created("ignored")), "{got:?}");
    fs::write(dir.join("after"), b"").unwrap();
    until(&rx, has(created("after")));
}

#[test]
fn missing_at_start_then_created() {
    let tmp = TempDir::new("watch-missing");
    let dir = tmp.path().join("later");
    let (_h, rx) = start(dir.clone());
    until(&rx, has(WatchMsg::DirGone));
    fs::create_dir(&dir).unwrap();
    until(&rx, has(WatchMsg::DirBack));
    fs::write(dir.join("x"), b"").unwrap();
    until(&rx, has(created("x")));
}

#[test]
fn missing_parent_is_an_error_exit() {
    let tmp = TempDir::new("watch-noparent");
    let (tx, rx) = unbounded();
    let _h = spawn_watcher(tmp.path().join("a/b"), tx, Ev::W, Ev::Exit).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ev::W(WatchMsg::DirGone));
    match rx.recv_timeout(WAIT).unwrap() {
        Ev::Exit(ThreadExit {
            reason: ExitReason::Error(msg),
            ..
        }) => assert!(msg.contains("cannot watch"), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
}
