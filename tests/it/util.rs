//! Test support: temporary directories, a scripted fake host that plays
//! guestServer on a UNIX socket, and child-process helpers. Every wait has
//! a timeout.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use guest_heartbeat::wire::guest::{decode_guest, encode_host, Decoded, GuestMsg, HostMsg};

pub const WAIT: Duration = Duration::from_secs(10);

/// A unique directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p =
            std::env::temp_dir().join(format!("gh-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes an executable shell script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One accepted connection of the fake host: decoded guest messages arrive
/// on `rx` from a reader thread.
pub struct HostConn {
    stream: UnixStream,
    rx: Receiver<GuestMsg>,
    seq: u32,
    pub raw: Receiver<Vec<u8>>,
}

impl HostConn {
    pub fn new(stream: UnixStream) -> Self {
        let (tx, rx) = unbounded();
        let (raw_tx, raw) = unbounded();
        let mut r = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    let line = &line[..line.len() - 1];
                    if line.is_empty() {
                        continue;
                    }
                    let _ = raw_tx.send(line.to_vec());
                    if let Decoded::Msg(_, m) = decode_guest(line) {
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        HostConn { stream, rx, seq: 0, raw }
    }

    pub fn send(&mut self, m: HostMsg) {
        self.seq += 1;
        self.stream.write_all(&encode_host(self.seq, &m)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next message matching `f`, skipping others; panics after WAIT.
    pub fn expect<T>(&self, what: &str, mut f: impl FnMut(&GuestMsg) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.rx.recv_deadline(deadline).unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            if let Some(t) = f(&m) {
                return t;
            }
        }
    }

    /// The next message, whatever it is, within `d`.
    pub fn next_within(&self, d: Duration) -> Option<GuestMsg> {
        self.rx.recv_timeout(d).ok()
    }

    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Accepts one connection within WAIT.
pub fn accept(l: &UnixListener) -> HostConn {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return HostConn::new(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection within {WAIT:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A child killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Self {
        Proc(cmd.spawn().unwrap())
    }
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `f` holds, polling every 20 ms; panics after WAIT.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
