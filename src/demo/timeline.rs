//! The demo's timeline printer: one line per note, with the time since the
//! demo started, a source column and readable guest names instead of uuids.
//! It also remembers whether the scenario's key moments happened.
//!
//! Runs on thread "timeline".

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::Note;

/// What the demo set out to show, and whether it did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub heartbeating: bool,
    pub miss: bool,
    pub loss_alarm: bool,
    pub unhealthy_alarm: bool,
    pub reject: bool,
}

impl Outcome {
    pub fn all(&self) -> bool {
        self.heartbeating && self.miss && self.loss_alarm && self.unhealthy_alarm && self.reject
    }
}

/// Prints notes until every sender is gone; returns the outcome.
pub fn print(rx: Receiver<Note>, names: HashMap<String, String>, start: Instant) -> Outcome {
    let mut out = Outcome::default();
    let stdout = std::io::stdout();
    let name = |uuid: &str| names.get(uuid).cloned().unwrap_or_else(|| uuid.to_string());
    let rename = |text: &str| names.iter().fold(text.to_string(), |t, (u, n)| t.replace(u.as_str(), n));
    for note in rx {
        let (who, text) = match note {
            Note::Done => break,
            Note::Step(t) => ("demo".to_string(), t),
            Note::Log { who, text } => {
                if text.contains("Heartbeat Miss") {
                    out.miss = true;
                }
                (who, rename(&text))
            }
            Note::Guest { label, text } => (label, text),
            Note::VimCall(t) => ("vim->agent".to_string(), rename(&t)),
            Note::Vim { uuid, text } => {
                if text.contains("status enabled") {
                    out.heartbeating = true;
                }
                if text.contains("ALARM heartbeat failed") {
                    out.loss_alarm = true;
                }
                if text.contains("ALARM heartbeat unhealthy") {
                    out.unhealthy_alarm = true;
                }
                if text.contains("guest-response reject") {
                    out.reject = true;
                }
                ("VIM".to_string(), format!("{}: {text}", name(&uuid)))
            }
        };
        let secs = start.elapsed().as_secs_f64();
        let _ = writeln!(stdout.lock(), "{secs:6.2}s  {who:<14} {text}");
    }
    out
}
