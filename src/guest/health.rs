//! Building `challenge_response` (spec guest-side §6.3) from the health
//! script's cached result and the app aggregate, with the 60 s repeat rule
//! of §6.4. Also the text clean-up shared with votes (newlines → spaces, cut
//! to 191 bytes at a UTF-8 boundary; escaping is serde's job, fix Q1).
//!
//! Pure; owned by the guest-client dispatcher (and used by the simulator).

use std::time::{Duration, Instant};

use crate::wire::guest::ChallengeResponse;
use crate::wire::vocab::{CorrectiveAction, Health};

/// Longest health or action text on the wire.
pub const MAX_TEXT: usize = 191;
/// A repeated unhealthy action is re-sent after this long.
pub const REPEAT_AFTER: Duration = Duration::from_millis(60_000);

/// Newlines become spaces; the result is cut to 191 bytes without
/// splitting a character. Invalid UTF-8 is replaced.
pub fn clean_text(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw).replace(['\n', '\r'], " ");
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// One party's health: the script's or the app aggregate's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub healthy: bool,
    pub action: CorrectiveAction,
    pub text: String,
}

impl Report {
    pub fn healthy() -> Self {
        Report { healthy: true, action: CorrectiveAction::None, text: String::new() }
    }
}

fn severity(a: CorrectiveAction) -> u8 {
    match a {
        CorrectiveAction::Stop => 3,
        CorrectiveAction::Reboot => 2,
        CorrectiveAction::Log => 1,
        CorrectiveAction::None | CorrectiveAction::Unknown => 0,
    }
}

/// The more severe of two actions: stop > reboot > log > none.
pub fn merge(a: CorrectiveAction, b: CorrectiveAction) -> CorrectiveAction {
    if severity(b) > severity(a) {
        b
    } else {
        a
    }
}

/// Folds unhealthy app reports in slot order (§6.2): most severe wins, a
/// tie goes to the later slot.
pub fn aggregate<'a>(apps: impl IntoIterator<Item = &'a Report>) -> Report {
    let mut agg = Report::healthy();
    for app in apps.into_iter().filter(|a| !a.healthy) {
        let merged = merge(agg.action, app.action);
        if merged == app.action {
            agg = Report { healthy: false, action: app.action, text: app.text.clone() };
        }
    }
    agg
}

/// The script's cached result plus the repeat-suppression record.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub configured: CorrectiveAction,
    pub script_healthy: bool,
    pub script_text: String,
    /// Last unhealthy action sent as something other than `none`, and when.
    last_sent: Option<(CorrectiveAction, Instant)>,
}

impl HealthState {
    pub fn new(configured: CorrectiveAction) -> Self {
        HealthState { configured, script_healthy: true, script_text: String::new(), last_sent: None }
    }

    /// Records a script run: only exit status 1 is unhealthy (K5).
    pub fn script_done(&mut self, exit_code: Option<i32>, output: &[u8]) {
        self.script_healthy = exit_code != Some(1);
        self.script_text = clean_text(output);
    }

    /// The body of a `challenge_response` for `challenge` (§6.3, §6.4).
    pub fn respond(&mut self, challenge: u32, apps: &Report, now: Instant) -> ChallengeResponse {
        let (healthy, action, text) = match (apps.healthy, self.script_healthy) {
            (true, true) => (true, self.configured, self.script_text.clone()),
            (true, false) => (false, self.configured, self.script_text.clone()),
            (false, true) => (false, apps.action, apps.text.clone()),
            (false, false) => {
                let m = merge(apps.action, self.configured);
                let text = if m == self.configured { self.script_text.clone() } else { apps.text.clone() };
                (false, m, text)
            }
        };
        let action = if healthy {
            self.last_sent = None;
            action
        } else {
            match self.last_sent {
                Some((a, t)) if a == action && now.saturating_duration_since(t) < REPEAT_AFTER => {
                    CorrectiveAction::None
                }
                _ => {
                    self.last_sent = Some((action, now));
                    action
                }
            }
        };
        ChallengeResponse {
            heartbeat_response: challenge,
            heartbeat_health: if healthy { Health::Healthy } else { Health::Unhealthy }.as_str().to_string(),
            corrective_action: action.as_str().to_string(),
            log_msg: text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhealthy(action: CorrectiveAction, text: &str) -> Report {
        Report { healthy: false, action, text: text.into() }
    }

    #[test]
    fn text_is_cleaned_and_cut_at_a_char_boundary() {
        assert_eq!(clean_text(b"a\nb\n"), "a b ");
        assert_eq!(clean_text(&[b'x'; 300]).len(), 191);
        let s = "é".repeat(150); // 300 bytes, 2 per char
        let c = clean_text(s.as_bytes());
        assert_eq!(c.len(), 190);
        assert_eq!(clean_text(b"say \"q\" \\"), "say \"q\" \\");
    }

    #[test]
    fn healthy_carries_configured_action_and_script_text() {
        let mut h = HealthState::new(CorrectiveAction::Reboot);
        h.script_done(Some(2), b"ok\n");
        let r = h.respond(1000, &Report::healthy(), Instant::now());
        assert_eq!(r.heartbeat_health, "healthy");
        assert_eq!(r.corrective_action, "reboot");
        assert_eq!(r.log_msg, "ok ");
        assert_eq!(r.heartbeat_response, 1000);
    }

    #[test]
    fn sixty_second_rule_repeats_and_resets() {
        let t0 = Instant::now();
        let mut h = HealthState::new(CorrectiveAction::Reboot);
        h.script_done(Some(1), b"bad");
        let apps = Report::healthy();
        let at = |h: &mut HealthState, s: u64| h.respond(1, &apps, t0 + Duration::from_secs(s)).corrective_action;
        assert_eq!(at(&mut h, 0), "reboot");
        assert_eq!(at(&mut h, 1), "none");
        assert_eq!(at(&mut h, 59), "none");
        assert_eq!(at(&mut h, 60), "reboot");
        assert_eq!(at(&mut h, 61), "none");
        // A more severe app action goes out at once.
        let stop = unhealthy(CorrectiveAction::Stop, "app down");
        let r = h.respond(1, &stop, t0 + Duration::from_secs(62));
        assert_eq!((r.heartbeat_health.as_str(), r.corrective_action.as_str()), ("unhealthy", "stop"));
        assert_eq!(r.log_msg, "app down");
        // Healthy clears the record.
        h.script_done(Some(0), b"");
        assert_eq!(h.respond(1, &apps, t0 + Duration::from_secs(63)).corrective_action, "reboot");
        h.script_done(Some(1), b"bad");
        assert_eq!(at(&mut h, 64), "reboot");
    }

    #[test]
    fn merge_table_and_aggregate() {
        let mut h = HealthState::new(CorrectiveAction::Reboot);
        h.script_done(Some(1), b"script");
        let log = unhealthy(CorrectiveAction::Log, "app");
        let r = h.respond(1, &log, Instant::now());
        assert_eq!((r.corrective_action.as_str(), r.log_msg.as_str()), ("reboot", "script"));
        let apps = [
            unhealthy(CorrectiveAction::Log, "a"),
            Report::healthy(),
            unhealthy(CorrectiveAction::Stop, "b"),
            unhealthy(CorrectiveAction::Stop, "c"),
            unhealthy(CorrectiveAction::Reboot, "d"),
        ];
        let agg = aggregate(&apps);
        assert_eq!((agg.action, agg.text.as_str()), (CorrectiveAction::Stop, "c"));
        assert!(aggregate(&[Report::healthy()]).healthy);
    }
}
