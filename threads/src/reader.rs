//! Per-instance UNIX socket reader: one blocking thread per connected guest
//! channel, named by the caller (e.g. `reader-<uuid>`). The nonblocking
//! writer for the same socket lives in `reader/writer.rs` and runs on the
//! dispatcher thread.
//!
//! The reader frames the byte stream into lines, applies per-socket rate
//! limits and sends each message into the caller's channel. That channel is
//! meant to be bounded: when the dispatcher falls behind, a blocking send
//! stops this thread from reading, the kernel socket buffer fills and the
//! guest is throttled, instead of us buffering a flood in memory.

mod writer;

pub use writer::{connect_unix, ChannelWriter, WriteError};

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::{Builder, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::framer::{Frame, LineFramer};
use crate::guard::panic_message;
use crate::ratelimit::TokenBucket;

/// Readers are many and do little, so they get a small stack.
const READER_STACK: usize = 64 * 1024;
const READ_BUF: usize = 4096;
/// Drops are summarised at most this often, so a flood cannot turn into a
/// flood of `RateLimited` messages.
const REPORT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    Eof,
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderMsg {
    Line(Vec<u8>),
    TooLong {
        len: usize,
    },
    /// lines dropped by the per-socket message/byte rate limits since the last report
    RateLimited {
        dropped_lines: u64,
    },
    /// always the last message a reader sends, exactly once
    Closed(CloseReason),
}

/// Per-socket limits; 0 means unlimited for the two rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    pub max_line: usize,
    pub max_msgs_per_sec: u32,
    pub max_bytes_per_sec: u32,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits { max_line: 4096, max_msgs_per_sec: 100, max_bytes_per_sec: 64 * 1024 }
    }
}

/// Handle of a reader thread.
///
/// Dropping it DETACHES the thread rather than joining it: the reader may be
/// blocked sending into the dispatcher's full bounded channel, so a dispatcher
/// joining it would deadlock. To stop a reader, shut the socket down
/// (`ChannelWriter::shutdown`); it then sends `Closed` and exits on its own.
#[derive(Debug)]
pub struct ReaderHandle {
    thread: JoinHandle<()>,
}

impl ReaderHandle {
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread; only safe where nobody needs to drain its channel.
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
}

/// Paces raw socket reads at `READ_PACE` × `max_bytes_per_sec` (a GCRA with
/// a one-second burst). Bytes that never become a line — an endless line,
/// 1 MiB lines — are not charged by `Limiter`, and without this the reader
/// would read and discard them as fast as a guest can write, burning a host
/// core. Sleeping here is back-pressure: the kernel buffer fills and the
/// guest's writes block. Time is an input so tests can drive it.
struct ReadPacer {
    per_sec: u64,
    paid_until: Option<Instant>,
}

/// Raw reads may run at this multiple of the line byte rate, so that the
/// line limits (which count and report drops) act first.
const READ_PACE: u64 = 2;
const READ_BURST: Duration = Duration::from_secs(1);

impl ReadPacer {
    fn new(limits: &ReaderLimits) -> Self {
        ReadPacer { per_sec: u64::from(limits.max_bytes_per_sec) * READ_PACE, paid_until: None }
    }

    /// Charges `n` bytes read at `now`; returns how long to wait before the
    /// next read.
    fn charge(&mut self, n: usize, now: Instant) -> Duration {
        if self.per_sec == 0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_nanos((n as u64).saturating_mul(1_000_000_000) / self.per_sec);
        let base = self.paid_until.map_or(now, |t| t.max(now));
        let paid = base + cost;
        self.paid_until = Some(paid);
        paid.saturating_duration_since(now).saturating_sub(READ_BURST)
    }
}

/// Message and byte buckets plus the count of lines they dropped.
struct Limiter {
    msgs: TokenBucket,
    bytes: TokenBucket,
    dropped: u64,
    last_report: Option<Instant>,
}

impl Limiter {
    fn new(limits: &ReaderLimits) -> Self {
        // Burst is one second's worth. The byte burst is at least one maximal
        // line, otherwise a low byte rate would reject long lines forever.
        let max_line = u32::try_from(limits.max_line).unwrap_or(u32::MAX);
        Limiter {
            msgs: TokenBucket::new(limits.max_msgs_per_sec, limits.max_msgs_per_sec),
            bytes: TokenBucket::new(limits.max_bytes_per_sec, limits.max_bytes_per_sec.max(max_line)),
            dropped: 0,
            last_report: None,
        }
    }

    /// Takes from both buckets only when both allow, so a line rejected by
    /// one limit does not eat into the other.
    fn admit(&mut self, len: usize, now: Instant) -> bool {
        let n = u32::try_from(len).unwrap_or(u32::MAX);
        if self.msgs.can_take(1, now) && self.bytes.can_take(n, now) {
            self.msgs.try_take(1, now);
            self.bytes.try_take(n, now);
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    fn report_due(&mut self, now: Instant) -> Option<u64> {
        if self.dropped == 0 {
            return None;
        }
        let due = match self.last_report {
            None => true,
            Some(t) => now.saturating_duration_since(t) >= REPORT_EVERY,
        };
        if !due {
            return None;
        }
        self.last_report = Some(now);
        Some(std::mem::take(&mut self.dropped))
    }

    /// Whatever is still unreported, so the count is not lost at close.
    fn flush(&mut self) -> Option<u64> {
        (self.dropped > 0).then(|| std::mem::take(&mut self.dropped))
    }
}

/// Spawns reader thread `name` (64 KiB stack). See the module doc; the last
/// message it sends is always exactly one `Closed`, unless the receiver is
/// gone, in which case it just exits.
pub fn spawn_reader<E, F>(
    name: String,
    stream: UnixStream,
    limits: ReaderLimits,
    tx: Sender<E>,
    map: F,
) -> std::io::Result<ReaderHandle>
where
    E: Send + 'static,
    F: Fn(ReaderMsg) -> E + Send + 'static,
{
    let thread_name = name.clone();
    let thread = Builder::new().name(name).stack_size(READER_STACK).spawn(move || {
        let outcome = catch_unwind(AssertUnwindSafe(|| read_loop(&stream, &limits, &tx, &map)));
        let reason = match outcome {
            Ok(Some(reason)) => reason,
            Ok(None) => {
                log::debug!("reader {thread_name}: receiver gone, exiting");
                return;
            }
            Err(payload) => CloseReason::Error(format!("reader panicked: {}", panic_message(payload.as_ref()))),
        };
        log::debug!("reader {thread_name} closed: {reason:?}");
        let _ = tx.send(map(ReaderMsg::Closed(reason)));
    })?;
    Ok(ReaderHandle { thread })
}

/// Returns why the stream closed, or `None` when the receiver went away.
fn read_loop<E, F>(mut stream: &UnixStream, limits: &ReaderLimits, tx: &Sender<E>, map: &F) -> Option<CloseReason>
where
    F: Fn(ReaderMsg) -> E,
{
    let mut framer = LineFramer::new(limits.max_line);
    let mut limiter = Limiter::new(limits);
    let mut pacer = ReadPacer::new(limits);
    // On the heap: the thread stack is deliberately small.
    let mut buf = vec![0u8; READ_BUF];
    let mut frames = Vec::new();
    let send = |msg: ReaderMsg| tx.send(map(msg)).ok();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                if let Some(dropped_lines) = limiter.flush() {
                    send(ReaderMsg::RateLimited { dropped_lines })?;
                }
                return Some(CloseReason::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                if let Some(dropped_lines) = limiter.flush() {
                    send(ReaderMsg::RateLimited { dropped_lines })?;
                }
                return Some(CloseReason::Error(e.to_string()));
            }
        };
        let pause = pacer.charge(n, Instant::now());
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        framer.push(&buf[..n], &mut frames);
        for frame in frames.drain(..) {
            // Re-read the clock per frame: a blocking send may have taken a while.
            let now = Instant::now();
            let msg = match frame {
                Frame::Line(line) => limiter.admit(line.len(), now).then_some(ReaderMsg::Line(line)),
                // An over-long line costs one message token; its bytes were never kept.
                Frame::TooLong { len } => limiter.admit(0, now).then_some(ReaderMsg::TooLong { len }),
            };
            if let Some(msg) = msg {
                send(msg)?;
            }
        }
        if let Some(dropped_lines) = limiter.report_due(Instant::now()) {
            send(ReaderMsg::RateLimited { dropped_lines })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::within;
    use crossbeam_channel::{unbounded, Receiver};
    use std::io::Write;
    use std::net::Shutdown;

    const WAIT: Duration = Duration::from_secs(5);

    fn collect_until_closed(rx: &Receiver<ReaderMsg>) -> Vec<ReaderMsg> {
        let mut got = Vec::new();
        loop {
            let m = rx.recv_timeout(WAIT).unwrap();
            let done = matches!(m, ReaderMsg::Closed(_));
            got.push(m);
            if done {
                return got;
            }
        }
    }

    fn unlimited(max_line: usize) -> ReaderLimits {
        ReaderLimits { max_line, max_msgs_per_sec: 0, max_bytes_per_sec: 0 }
    }

    #[test]
    fn raw_reads_are_paced_after_a_one_second_burst() {
        let limits = ReaderLimits { max_line: 64, max_msgs_per_sec: 10, max_bytes_per_sec: 500 };
        let mut p = ReadPacer::new(&limits);
        let t0 = Instant::now();
        assert_eq!(p.charge(1000, t0), Duration::ZERO, "one second's worth is free");
        assert_eq!(p.charge(1000, t0), Duration::from_secs(1));
        // After an idle gap the burst is available again.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(p.charge(1000, t1), Duration::ZERO);
        let unlimited = ReaderLimits { max_bytes_per_sec: 0, ..limits };
        assert_eq!(ReadPacer::new(&unlimited).charge(usize::MAX, t0), Duration::ZERO);
    }

    #[test]
    fn lines_then_eof_closed_last() {
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let (tx, rx) = unbounded();
        let h = spawn_reader("reader-test".into(), ours, unlimited(64), tx, |m| m).unwrap();
        guest.write_all(b"one\ntw").unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), ReaderMsg::Line(b"one".to_vec()));
        guest.write_all(b"o\n\nthree\n").unwrap();
        drop(guest);
        let got = collect_until_closed(&rx);
        assert_eq!(
            got,
            vec![
                ReaderMsg::Line(b"two".to_vec()),
                ReaderMsg::Line(b"three".to_vec()),
                ReaderMsg::Closed(CloseReason::Eof),
            ]
        );
        within(WAIT, move || h.join().unwrap());
        // Closed is sent exactly once: the channel is now disconnected and empty.
        assert!(rx.recv_timeout(WAIT).is_err());
    }

    #[test]
    fn too_long_reported_then_next_line() {
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let (tx, rx) = unbounded();
        let _h = spawn_reader("reader-long".into(), ours, unlimited(8), tx, |m| m).unwrap();
        guest.write_all(&[b'x'; 10_000]).unwrap();
        guest.write_all(b"\nok\n").unwrap();
        guest.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            collect_until_closed(&rx),
            vec![ReaderMsg::TooLong { len: 9 }, ReaderMsg::Line(b"ok".to_vec()), ReaderMsg::Closed(CloseReason::Eof),]
        );
    }

    #[test]
    fn rate_limited_drops_are_counted_and_reported() {
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let (tx, rx) = unbounded();
        let limits = ReaderLimits { max_line: 64, max_msgs_per_sec: 5, max_bytes_per_sec: 0 };
        let _h = spawn_reader("reader-rate".into(), ours, limits, tx, |m| m).unwrap();
        let total = 200u64;
        for i in 0..total {
            guest.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guest);
        let got = collect_until_closed(&rx);
        let lines = got.iter().filter(|m| matches!(m, ReaderMsg::Line(_))).count() as u64;
        let reports: Vec<u64> = got
            .iter()
            .filter_map(|m| match m {
                ReaderMsg::RateLimited { dropped_lines } => Some(*dropped_lines),
                _ => None,
            })
            .collect();
        assert!(lines >= 5, "burst of 5 must pass, got {lines}");
        assert!(!reports.is_empty());
        // Summaries, not one report per line.
        assert!(reports.len() < 10, "too many reports: {reports:?}");
        assert_eq!(lines + reports.iter().sum::<u64>(), total);
        assert_eq!(got.last(), Some(&ReaderMsg::Closed(CloseReason::Eof)));
    }

    #[test]
    fn panic_in_map_becomes_closed_error() {
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let (tx, rx) = unbounded();
        let _h = spawn_reader("reader-panic".into(), ours, unlimited(64), tx, |m| {
            if m == ReaderMsg::Line(b"boom".to_vec()) {
                panic!("mapped boom");
            }
            m
        })
        .unwrap();
        guest.write_all(b"boom\n").unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            ReaderMsg::Closed(CloseReason::Error("reader panicked: mapped boom".into()))
        );
    }

    #[test]
    fn writer_shutdown_wakes_reader() {
        let (_guest, ours) = UnixStream::pair().unwrap();
        let writer = ChannelWriter::new(ours.try_clone().unwrap());
        let (tx, rx) = unbounded();
        let h = spawn_reader("reader-stop".into(), ours, unlimited(64), tx, |m| m).unwrap();
        writer.shutdown();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), ReaderMsg::Closed(CloseReason::Eof));
        within(WAIT, move || h.join().unwrap());
    }

    #[test]
    fn receiver_gone_just_exits() {
        let (mut guest, ours) = UnixStream::pair().unwrap();
        let (tx, rx) = unbounded::<ReaderMsg>();
        drop(rx);
        let h = spawn_reader("reader-gone".into(), ours, unlimited(64), tx, |m| m).unwrap();
        guest.write_all(b"x\n").unwrap();
        within(WAIT, move || h.join().unwrap());
    }
}
