//! Panic-visible named threads: the wrapper every singleton thread of this
//! crate runs its body in. Runs on the spawned thread itself.
//!
//! A thread that dies silently is the worst failure a daemon can have: the
//! heartbeat would stop and nobody would notice. So every body's outcome,
//! including a panic, is turned into a `ThreadExit` and sent to the
//! dispatcher, which decides whether it is fatal.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::{Builder, JoinHandle};

use crossbeam_channel::Sender;

/// Why a thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The body returned `Ok(())`, normally because it was asked to stop.
    Finished,
    /// The body returned an error.
    Error(String),
    /// The body panicked; the payload is included when it was a string.
    Panicked(String),
}

/// The message a wrapped thread sends as its last act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadExit {
    pub name: String,
    pub reason: ExitReason,
}

/// Extracts the message from a panic payload; `panic!` produces either a
/// `&'static str` or a `String`, anything else is reported generically.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Formats an error with its `source()` chain, because error types here keep
/// the cause out of their own message (house rule 9) and a thread exit has
/// only one string to carry both.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        cur = inner.source();
    }
    out
}

/// Runs `body` and converts every way it can end into an `ExitReason`.
pub fn run_guarded<F>(body: F) -> ExitReason
where
    F: FnOnce() -> Result<(), String>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ExitReason::Finished,
        Ok(Err(e)) => ExitReason::Error(e),
        Err(payload) => ExitReason::Panicked(panic_message(payload.as_ref())),
    }
}

/// Spawns a named thread running `body`; when it returns Ok -> Finished,
/// Err(s) -> Error(s), panics -> Panicked(msg). Then sends `on_exit(exit)` on
/// `exit_tx`. A send error is ignored because at shutdown the dispatcher may
/// already be gone, and then nobody needs to know.
pub fn spawn_named<E, F>(
    name: &str,
    stack_size: Option<usize>,
    exit_tx: Sender<E>,
    on_exit: fn(ThreadExit) -> E,
    body: F,
) -> std::io::Result<JoinHandle<()>>
where
    E: Send + 'static,
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let mut builder = Builder::new().name(name.to_string());
    if let Some(size) = stack_size {
        builder = builder.stack_size(size);
    }
    let thread_name = name.to_string();
    builder.spawn(move || {
        let reason = run_guarded(body);
        match &reason {
            ExitReason::Finished => log::debug!("thread {thread_name} finished"),
            ExitReason::Error(e) => log::error!("thread {thread_name} failed: {e}"),
            ExitReason::Panicked(m) => log::error!("thread {thread_name} panicked: {m}"),
        }
        let exit = ThreadExit {
            name: thread_name,
            reason,
        };
        let _ = exit_tx.send(on_exit(exit));
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::within;
    use crossbeam_channel::unbounded;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    fn run(body: impl FnOnce() -> Result<(), String> + Send + 'static) -> ThreadExit {
        let (tx, rx) = unbounded();
        let h = spawn_named("guard-test", None, tx, |e| e, body).unwrap();
        let exit = rx.recv_timeout(WAIT).unwrap();
        within(WAIT, move || h.join().unwrap());
        exit
    }

    #[test]
    fn finished() {
        let exit = run(|| {
            assert_eq!(std::thread::current().name(), Some("guard-test"));
            Ok(())
        });
        assert_eq!(exit.name, "guard-test");
        assert_eq!(exit.reason, ExitReason::Finished);
    }

    #[test]
    fn error() {
        assert_eq!(
            run(|| Err("boom".into())).reason,
            ExitReason::Error("boom".into())
        );
    }

    #[test]
    fn panics_are_reported() {
        assert_eq!(
            run(|| panic!("static msg")).reason,
            ExitReason::Panicked("static msg".into())
        );
        let n = 7;
        assert_eq!(
            run(move || panic!("formatted {n}")).reason,
            ExitReason::Panicked("formatted 7".into())
        );
    }

    #[test]
    fn dropped_receiver_is_fine() {
        let (tx, rx) = unbounded::<ThreadExit>();
        drop(rx);
        let h = spawn_named("guard-drop", Some(64 * 1024), tx, |e| e, || Ok(())).unwrap();
        within(WAIT, move || h.join().unwrap());
    }
}
