//! The timer thread ("timer"): it only sleeps until the instants the
//! dispatcher asked for and then sends one tick. Which timers are due is
//! decided by the dispatcher's `TimerWheel`, not here.
//!
//! The request channel is unbounded so that `wake_at` never blocks the
//! dispatcher; it carries at most one instant per dispatcher decision and the
//! timer thread drains it continuously, so it cannot grow without bound in
//! practice. Ticks go into the caller's event channel.

use std::collections::BTreeSet;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{unbounded, RecvTimeoutError, Sender};

use crate::guard::{spawn_named, ThreadExit};

/// Dropping it disconnects the request channel, which ends the thread, and
/// then joins it. Field order matters: the sender must go before the join.
#[derive(Debug)]
pub struct TimerHandle {
    tx: Option<Sender<Instant>>,
    thread: Option<JoinHandle<()>>,
}

impl TimerHandle {
    /// Asks for a tick at (or soon after) `at`. Never blocks.
    pub fn wake_at(&self, at: Instant) {
        if let Some(tx) = &self.tx {
            // Fails only when the timer thread is gone, which the dispatcher
            // learns from its ThreadExit event.
            if tx.send(at).is_err() {
                log::warn!("timer thread is gone; wake-up request dropped");
            }
        }
    }
}

impl Drop for TimerHandle {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("timer thread panicked outside its guard");
            }
        }
    }
}

/// Spawns thread "timer". See the module doc. An idle daemon uses no CPU here:
/// with nothing requested the thread blocks in `recv()`.
pub fn spawn_timer<E: Send + 'static>(
    tx: Sender<E>,
    on_tick: fn(Instant) -> E,
    on_exit: fn(ThreadExit) -> E,
) -> std::io::Result<TimerHandle> {
    let (req_tx, req_rx) = unbounded::<Instant>();
    let exit_tx = tx.clone();
    let thread = spawn_named("timer", None, exit_tx, on_exit, move || {
        let mut pending: BTreeSet<Instant> = BTreeSet::new();
        loop {
            let received = match pending.first() {
                None => req_rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(&earliest) => req_rx.recv_deadline(earliest),
            };
            match received {
                Ok(at) => {
                    pending.insert(at);
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    // Everything requested up to now is served by this one tick.
                    pending = pending.split_off(&now);
                    pending.remove(&now);
                    if tx.send(on_tick(now)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
    })?;
    Ok(TimerHandle {
        tx: Some(req_tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::ExitReason;
    use crate::testutil::within;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    #[derive(Debug, PartialEq)]
    enum Ev {
        Tick(Instant),
        Exit(ThreadExit),
    }

    #[test]
    fn past_instant_ticks_at_once() {
        let (tx, rx) = unbounded();
        let t = spawn_timer(tx, Ev::Tick, Ev::Exit).unwrap();
        let asked = Instant::now();
        t.wake_at(asked.checked_sub(Duration::from_secs(1)).unwrap_or(asked));
        match rx.recv_timeout(WAIT).unwrap() {
            Ev::Tick(now) => assert!(now >= asked),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn requests_coalesce_into_one_tick() {
        let (tx, rx) = unbounded();
        let t = spawn_timer(tx, Ev::Tick, Ev::Exit).unwrap();
        let at = Instant::now() + Duration::from_millis(50);
        t.wake_at(at);
        t.wake_at(at);
        match rx.recv_timeout(WAIT).unwrap() {
            Ev::Tick(now) => assert!(now >= at),
            other => panic!("unexpected {other:?}"),
        }
        // A later request proves the thread moved on; had the two requests
        // produced several ticks, they would arrive before this one.
        let later = Instant::now() + Duration::from_millis(100);
        t.wake_at(later);
        match rx.recv_timeout(WAIT).unwrap() {
            Ev::Tick(now) => assert!(now >= later, "extra tick before the later one"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn earlier_request_preempts_later() {
        let (tx, rx) = unbounded();
        let t = spawn_timer(tx, Ev::Tick, Ev::Exit).unwrap();
        let start = Instant::now();
        t.wake_at(start + Duration::from_secs(3600));
        t.wake_at(start + Duration::from_millis(20));
        match rx.recv_timeout(WAIT).unwrap() {
            Ev::Tick(now) => assert!(now < start + Duration::from_secs(3600)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn drop_joins_and_reports_finished() {
        let (tx, rx) = unbounded();
        let t = spawn_timer(tx, Ev::Tick, Ev::Exit).unwrap();
        t.wake_at(Instant::now() + Duration::from_secs(3600));
        within(WAIT, move || drop(t));
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap(),
            Ev::Exit(ThreadExit {
                name: "timer".into(),
                reason: ExitReason::Finished
            })
        );
    }
}
