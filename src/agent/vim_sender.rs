//! The VIM sender threads ("vim-events", "vim-query"): each takes one job at a
//! time from its channel, runs the blocking HTTP request and sends the raw
//! outcome back to the dispatcher. They make no domain decision; the
//! dispatcher classifies the outcome. Because these threads do the waiting,
//! the dispatcher never waits on the VIM.
//!
//! The job channel is bounded (the dispatcher `try_send`s and treats a full
//! channel as "not sent", which the outbox retries); the dispatcher keeps at
//! most a handful of jobs in flight, so it is never full in practice.

use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use gh_threads::guard::{spawn_named, ThreadExit};

use super::outbox::EventKind;
use super::vim_client::{self, Reply, SendError, VimUrl};

/// Capacity of each job channel.
pub const JOB_QUEUE: usize = 64;

/// What a job was for, handed back with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTag {
    /// An outbox event.
    Event { id: u64, kind: EventKind },
    /// The audit's host-state query.
    HostState { hostname: String },
    /// The audit's host instance-list query.
    InstanceList { hostname: String },
}

/// One request for the VIM.
#[derive(Debug, Clone)]
pub struct VimJob {
    pub tag: JobTag,
    pub url: VimUrl,
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// A finished job.
#[derive(Debug)]
pub struct VimDone {
    pub tag: JobTag,
    pub target: String,
    pub result: Result<Reply, SendError>,
}

/// Owns a sender thread. Dropping the dispatcher's job `Sender` ends it.
#[derive(Debug)]
pub struct VimSenderHandle {
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl VimSenderHandle {
    /// Joins the thread if it ends within `limit`; otherwise leaves it: it is
    /// inside a request whose event is still in the persisted outbox, so a
    /// restart re-sends it and nothing is lost by not waiting.
    pub fn join_within(mut self, limit: Duration) {
        match self.done.recv_timeout(limit) {
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            _ => log::warn!("VIM sender still busy at shutdown; not waiting for it"),
        }
    }
}

/// Spawns a sender thread named `name` that serves `jobs` until the channel
/// disconnects.
pub fn spawn_vim_sender<E: Send + 'static>(
    name: &str,
    jobs: Receiver<VimJob>,
    tx: Sender<E>,
    map: fn(VimDone) -> E,
    on_exit: fn(ThreadExit) -> E,
) -> std::io::Result<VimSenderHandle> {
    let (done_tx, done) = bounded::<()>(0);
    let exit_tx = tx.clone();
    let thread = spawn_named(name, None, exit_tx, on_exit, move || {
        let _done = done_tx;
        for job in jobs.iter() {
            let target = format!("{} {}{}", job.method, job.url, job.path);
            let result = vim_client::send(&job.url, job.method, &job.path, job.body.as_deref(), job.timeout);
            if tx.send(map(VimDone { tag: job.tag, target, result })).is_err() {
                break;
            }
        }
        Ok(())
    })?;
    Ok(VimSenderHandle { done, thread: Some(thread) })
}

/// A job channel pair of the standard capacity.
pub fn job_channel() -> (Sender<VimJob>, Receiver<VimJob>) {
    bounded(JOB_QUEUE)
}
