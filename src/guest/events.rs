//! The dispatcher's closed inbox (house rule 2): one variant per source.
//! Built on the IO threads, consumed only by the dispatcher thread.
//!
//! The event channel is unbounded: its producers are one host channel
//! (whose peer is the trusted host), at most 16 app readers, the signal
//! thread and script waiters; each of them sends at most one event per read
//! of at most 4096 bytes, and the dispatcher never blocks, so the queue
//! drains as fast as it fills.

use std::fs::File;
use std::os::unix::net::UnixStream;

use gh_threads::guard::ThreadExit;
use gh_threads::reader::ChannelWriter;

use super::api_wire::ApiMsg;
use crate::wire::guest::HostMsg;

/// The write half of the host channel.
#[derive(Debug)]
pub enum HostWriter {
    /// A UNIX stream socket (test and `--listen` modes); never blocks.
    Socket(ChannelWriter),
    /// The virtio-serial character device.
    Device(File),
}

#[derive(Debug)]
pub enum Event {
    /// The host channel is (again) connected. `initial` is true for the
    /// channel opened at start-up, which is not a *channel-up* event.
    ChannelUp { writer: HostWriter, initial: bool },
    /// The host went away (EOF, hang-up, reset).
    ChannelDown,
    /// A message from the host.
    Host(HostMsg),
    /// A line from the host we could not use, with the reason.
    HostBad(String),
    /// A new app connection; `stream` is the dispatcher's write half.
    AppConnected { conn: u64, stream: UnixStream },
    /// A message from an app.
    App { conn: u64, msg: ApiMsg },
    /// An app connection ended.
    AppClosed { conn: u64 },
    /// A script run ended: exit code (None if killed by a signal) and the
    /// first 256 bytes of its stdout.
    ScriptDone { run: u64, exit_code: Option<i32>, output: Vec<u8> },
    /// SIGTERM, SIGINT, SIGQUIT or SIGHUP.
    Signal(i32),
    /// A thread ended (normally only at shutdown).
    ThreadExited(ThreadExit),
}
