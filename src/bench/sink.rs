//! The UDP sink standing in for guestAgent. Thread "bench-sink" only
//! receives datagrams from guestServer, timestamps and decodes them
//! (command code and `uuid`) and sends a [`SinkEvent`] on an unbounded
//! channel. Unbounded on purpose: the thread must drain the socket at once
//! (4,000 RUNNING events arrive in a burst), and the main thread reads the
//! channel often. The main thread sends commands (MOD_INST enable) through
//! a clone of the same socket, so the server sees one agent address.

use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};

use super::BenchError;
use crate::wire::envelope::{cmd, Envelope, SIG_GUEST};
use crate::wire::payload::InstCmd;

/// The kernel receive buffer asked for (the burst of RUNNING events is 4 MiB at 4,000 guests).
const RCVBUF: libc::c_int = 8 << 20;

/// One datagram from guestServer.
#[derive(Debug, Clone)]
pub struct SinkEvent {
    pub at: Instant,
    pub cmd: u32,
    pub uuid: Option<String>,
}

/// The sink: its socket (for sending) and its thread. Dropping it stops the
/// thread (a zero-length datagram to itself wakes it), then joins.
pub struct Sink {
    sock: UdpSocket,
    pub events: Receiver<SinkEvent>,
    thread: Option<JoinHandle<()>>,
}

#[derive(serde::Deserialize)]
struct WithUuid {
    #[serde(default)]
    uuid: Option<String>,
}

impl Sink {
    pub fn start() -> Result<Self, BenchError> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| BenchError::Io("bind sink".into(), e))?;
        set_rcvbuf(&sock);
        let rx_sock = sock.try_clone().map_err(|e| BenchError::Io("clone sink".into(), e))?;
        let (tx, events) = unbounded();
        let thread = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                loop {
                    let Ok((n, _)) = rx_sock.recv_from(&mut buf) else {
                        return;
                    };
                    let at = Instant::now();
                    if n == 0 {
                        return; // our own stop datagram
                    }
                    let Ok(env) = Envelope::decode(&buf[..n]) else {
                        continue;
                    };
                    let uuid = serde_json::from_slice::<WithUuid>(&env.payload).ok().and_then(|w| w.uuid);
                    if tx.send(SinkEvent { at, cmd: env.cmd, uuid }).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| BenchError::Io("spawn sink".into(), e))?;
        Ok(Sink { sock, events, thread: Some(thread) })
    }

    pub fn addr(&self) -> Result<SocketAddr, BenchError> {
        self.sock.local_addr().map_err(|e| BenchError::Io("sink address".into(), e))
    }

    /// MOD_INST "enabled" for `uuid`, so losses are reported.
    pub fn enable(&self, server: SocketAddr, uuid: &str) -> Result<(), BenchError> {
        let c = InstCmd {
            source: "127.0.0.1".into(),
            uuid: Some(uuid.into()),
            service: "heartbeat".into(),
            state: Some("enabled".into()),
        };
        let json = serde_json::to_vec(&c).map_err(|e| BenchError::Other(e.to_string()))?;
        let bytes = Envelope::signed(SIG_GUEST, cmd::MOD_INST, json)
            .encode_short()
            .map_err(|e| BenchError::Other(e.to_string()))?;
        self.sock.send_to(&bytes, server).map_err(|e| BenchError::Io("send MOD_INST".into(), e))?;
        Ok(())
    }

    /// Events received so far, waiting up to `wait` for the first.
    pub fn poll(&self, wait: Duration) -> Vec<SinkEvent> {
        let mut got: Vec<SinkEvent> = self.events.recv_timeout(wait).into_iter().collect();
        got.extend(self.events.try_iter());
        got
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Ok(me) = self.sock.local_addr() {
            let _ = self.sock.send_to(&[], me);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_rcvbuf(sock: &UdpSocket) {
    if gh_threads::udp::raise_recv_buffer(sock, RCVBUF as usize).is_err() {
        log::warn!("cannot raise the sink's SO_RCVBUF; a burst of events may be dropped");
    }
}
