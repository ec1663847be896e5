//! The signal thread ("signals"): signal-hook's self-pipe iterator turns
//! SIGTERM, SIGHUP and friends into ordinary channel messages, so shutdown
//! and reload are handled by the dispatcher like any other event and no
//! domain code ever runs in signal context.

use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use signal_hook::iterator::{Handle, Signals};

use crate::guard::{spawn_named, ThreadExit};

/// Dropping it closes the signal iterator, which ends the thread, then joins.
#[derive(Debug)]
pub struct SignalHandle {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SignalHandle {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("signal thread panicked outside its guard");
            }
        }
    }
}

/// Spawns thread "signals" forwarding each signal in `signals` as `map(sig)`.
/// The handlers are registered before this returns, so a signal raised
/// afterwards is never lost.
pub fn spawn_signals<E: Send + 'static>(
    signals: &[i32],
    tx: Sender<E>,
    map: fn(i32) -> E,
    on_exit: fn(ThreadExit) -> E,
) -> std::io::Result<SignalHandle> {
    let mut iter = Signals::new(signals)?;
    let handle = iter.handle();
    let thread = spawn_named("signals", None, tx.clone(), on_exit, move || {
        // `forever` ends once the handle is closed.
        for sig in iter.forever() {
            if tx.send(map(sig)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    })?;
    Ok(SignalHandle {
        handle,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::ExitReason;
    use crate::testutil::within;
    use crossbeam_channel::unbounded;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    #[derive(Debug, PartialEq)]
    enum Ev {
        Sig(i32),
        Exit(ThreadExit),
    }

    #[test]
    fn forwards_raised_signal_and_stops_on_drop() {
        let (tx, rx) = unbounded();
        let h = spawn_signals(&[libc::SIGUSR2], tx, Ev::Sig, Ev::Exit).unwrap();
        // SAFETY: raise only delivers SIGUSR2, whose handler signal-hook
        // installed above (so the default terminate action cannot happen).
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ev::Sig(libc::SIGUSR2));
        within(WAIT, move || drop(h));
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            Ev::Exit(ThreadExit {
                name: "signals".into(),
                reason: ExitReason::Finished
            })
        );
    }
}
