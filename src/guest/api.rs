//! The Rust client library for applications (spec guest-side §8.5): connect
//! to the daemon's API socket, `register`, then let `serve` answer each
//! heartbeat challenge with the app's health callback and each action
//! notify with its vote callback. Same 228-byte frames as the C library, so
//! one daemon serves both kinds of app.
//!
//! Runs on whatever thread the application calls it from; it is blocking
//! and has no threads of its own. One `ApiClient` is one registration.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::api_wire::{encode, Reassembler};
pub use super::api_wire::{ApiMsg, AppInit};
use crate::wire::vocab::{CorrectiveAction, EventType, NotificationType, VoteResult};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The daemon is not (yet) listening: try again later.
    #[error("guest-client not listening, try again")]
    TryAgain,
    #[error("registration refused by guest-client")]
    Rejected,
    #[error("no answer from guest-client in time")]
    Timeout,
    #[error("guest-client closed the connection")]
    Closed,
    #[error("api socket error")]
    Io(#[from] io::Error),
}

/// What the health callback returns; pre-filled healthy / none / "".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub healthy: bool,
    pub action: CorrectiveAction,
    pub log_msg: String,
}

impl Default for HealthReport {
    fn default() -> Self {
        HealthReport { healthy: true, action: CorrectiveAction::None, log_msg: String::new() }
    }
}

/// The application's callbacks.
pub trait AppHandler {
    /// Called for every heartbeat challenge; answer at once.
    fn health(&mut self) -> HealthReport {
        HealthReport::default()
    }
    /// Called for every action notify: accept, reject or complete, and a text.
    fn action(&mut self, event: EventType, notify: NotificationType) -> (VoteResult, String);
}

#[derive(Debug)]
pub struct ApiClient {
    stream: UnixStream,
    sequence: u32,
    reasm: Reassembler,
    inbox: VecDeque<ApiMsg>,
}

impl ApiClient {
    /// Connects; a missing socket or a refused connection is `TryAgain`.
    pub fn connect(path: &Path) -> Result<Self, ApiError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ApiError::TryAgain,
            _ => ApiError::Io(e),
        })?;
        Ok(ApiClient { stream, sequence: 0, reasm: Reassembler::default(), inbox: VecDeque::new() })
    }

    /// Connects, sends INIT and waits up to `timeout` for the INIT_ACK.
    pub fn register(path: &Path, init: &AppInit, timeout: Duration) -> Result<Self, ApiError> {
        let mut c = Self::connect(path)?;
        c.send(&ApiMsg::Init(init.clone()))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.recv(left)? {
                None => return Err(ApiError::Timeout),
                Some(ApiMsg::InitAck { accepted: true }) => return Ok(c),
                Some(ApiMsg::InitAck { accepted: false }) => return Err(ApiError::Rejected),
                Some(other) => c.inbox.push_back(other),
            }
        }
    }

    /// Sends one frame.
    pub fn send(&mut self, msg: &ApiMsg) -> Result<(), ApiError> {
        self.sequence = self.sequence.wrapping_add(1);
        self.stream.write_all(&encode(self.sequence, msg))?;
        Ok(())
    }

    /// Deregisters (FINAL); the connection stays open.
    pub fn deregister(&mut self, log_msg: &str) -> Result<(), ApiError> {
        self.send(&ApiMsg::Final { log_msg: log_msg.into() })
    }

    /// The next message from the daemon, or `None` after `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<ApiMsg>, ApiError> {
        if let Some(m) = self.inbox.pop_front() {
            return Ok(Some(m));
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1024];
        let mut msgs = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return Err(ApiError::Closed),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.reasm.push(&buf[..n], &mut msgs);
            self.inbox.extend(msgs.drain(..));
            if let Some(m) = self.inbox.pop_front() {
                return Ok(Some(m));
            }
        }
    }

    /// Waits up to `timeout` for one message and answers it through
    /// `handler`. Returns the message handled, if any.
    pub fn serve_one(&mut self, handler: &mut impl AppHandler, timeout: Duration) -> Result<Option<ApiMsg>, ApiError> {
        let Some(msg) = self.recv(timeout)? else {
            return Ok(None);
        };
        match &msg {
            ApiMsg::Challenge { value } => {
                let h = handler.health();
                self.send(&ApiMsg::ChallengeResponse {
                    value: *value,
                    healthy: h.healthy,
                    action: h.action,
                    log_msg: h.log_msg,
                })?;
            }
            ApiMsg::ActionNotify { invocation_id, event, notify } => {
                let (vote, log_msg) = handler.action(*event, *notify);
                self.send(&ApiMsg::ActionResponse {
                    invocation_id: *invocation_id,
                    event: *event,
                    notify: *notify,
                    vote,
                    log_msg,
                })?;
            }
            _ => {}
        }
        Ok(Some(msg))
    }

    /// Serves until `until` returns true for a handled message, or `timeout`.
    pub fn serve_until(
        &mut self,
        handler: &mut impl AppHandler,
        timeout: Duration,
        mut until: impl FnMut(&ApiMsg) -> bool,
    ) -> Result<bool, ApiError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            if let Some(m) = self.serve_one(handler, left)? {
                if until(&m) {
                    return Ok(true);
                }
            }
        }
    }
}
