//! Fake-time tests of the app registry: registration, challenges,
//! timeouts, votes, eviction.

use super::*;
use crate::wire::vocab::CorrectiveAction;

fn init(name: &str, interval: u32, action: CorrectiveAction) -> ApiMsg {
    ApiMsg::Init(AppInit {
        name: name.into(),
        heartbeat_interval_ms: interval,
        vote_secs: 8,
        shutdown_notice_secs: 5,
        suspend_notice_secs: 5,
        resume_notice_secs: 5,
        corrective_action: action,
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn challenge_of(out: &[AppOut]) -> u32 {
    out.iter()
        .find_map(|o| match o {
            AppOut::Send { msg: ApiMsg::Challenge { value }, .. } => Some(*value),
            _ => None,
        })
        .expect("a challenge")
}

fn notify(n: NotificationType) -> ActionNotify {
    ActionNotify { invocation_id: 1, event_type: EventType::Stop, notification_type: n, timeout_ms: 9000 }
}

#[test]
fn register_challenge_respond_and_time_out() {
    let t0 = Instant::now();
    let g = Guard::default();
    let mut apps = Apps::new(Rng::seeded(3));
    assert!(apps.connected(1).is_empty());
    let out = apps.message(1, init("app", 1000, CorrectiveAction::Log), t0);
    assert_eq!(out, vec![AppOut::Send { conn: 1, msg: ApiMsg::InitAck { accepted: true } }]);
    assert!(apps.tick(t0 + ms(999), &g).is_empty());
    let c = challenge_of(&apps.tick(t0 + ms(1000), &g));
    apps.message(
        1,
        ApiMsg::ChallengeResponse { value: c, healthy: true, action: CorrectiveAction::None, log_msg: String::new() },
        t0 + ms(1001),
    );
    challenge_of(&apps.tick(t0 + ms(2000), &g));
    // Unanswered: no new challenge, then the timeout 2 s after the answer.
    assert!(apps.tick(t0 + ms(3000), &g).is_empty());
    assert!(apps.health().healthy);
    apps.tick(t0 + ms(3001), &g);
    let h = apps.health();
    assert!(!h.healthy);
    assert_eq!(h.action, CorrectiveAction::Log);
    assert_eq!(h.text, "Application app heartbeat timeout 2000 ms.");
}

#[test]
fn low_interval_is_refused_and_final_stops_challenges() {
    let t0 = Instant::now();
    let g = Guard::default();
    let mut apps = Apps::new(Rng::seeded(3));
    apps.connected(1);
    let out = apps.message(1, init("app", 300, CorrectiveAction::Log), t0);
    assert_eq!(out, vec![AppOut::Send { conn: 1, msg: ApiMsg::InitAck { accepted: false } }]);
    assert_eq!(apps.registered_count(), 0);
    apps.message(1, init("app", 1000, CorrectiveAction::Log), t0);
    apps.message(1, ApiMsg::Final { log_msg: "bye".into() }, t0);
    assert!(apps.tick(t0 + ms(5000), &g).is_empty());
    assert!(apps.health().healthy);
}

#[test]
fn votes_reject_wins_timeouts_ignored_and_death_rechecks() {
    let t0 = Instant::now();
    let g = Guard::default();
    let mut apps = Apps::new(Rng::seeded(3));
    for c in 1..=3 {
        apps.connected(c);
        apps.message(c, init("a", 1000, CorrectiveAction::Log), t0);
    }
    let (out, any) = apps.start_action(&notify(NotificationType::Revocable), t0);
    assert!(any);
    let ids: Vec<(u64, u32)> = out
        .iter()
        .filter_map(|o| match o {
            AppOut::Send { conn, msg: ApiMsg::ActionNotify { invocation_id, .. } } => Some((*conn, *invocation_id)),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 3);
    let vote = |apps: &mut Apps, (conn, id): (u64, u32), v: VoteResult, text: &str| {
        apps.message(
            conn,
            ApiMsg::ActionResponse {
                invocation_id: id,
                event: EventType::Stop,
                notify: NotificationType::Revocable,
                vote: v,
                log_msg: text.into(),
            },
            t0,
        );
    };
    vote(&mut apps, (1, ids[0].1 + 1), VoteResult::Reject, "wrong id");
    vote(&mut apps, ids[0], VoteResult::Accept, "yes");
    assert_eq!(apps.outcome(), Outcome::Running);
    vote(&mut apps, ids[1], VoteResult::Reject, "no");
    assert_eq!(apps.outcome(), Outcome::Running);
    // App 3 dies: completion is re-checked at once.
    apps.closed(3);
    assert_eq!(apps.outcome(), Outcome::Vote(VoteResult::Reject, "no".into()));
    // Timeouts produce no usable vote.
    apps.abort_action();
    apps.start_action(&notify(NotificationType::Irrevocable), t0);
    apps.tick(t0 + ms(5000), &g);
    assert_eq!(apps.outcome(), Outcome::NoVote);
}

#[test]
fn at_most_sixteen_connections_unregistered_evicted_first() {
    let t0 = Instant::now();
    let mut apps = Apps::new(Rng::seeded(3));
    for c in 0..MAX_APPS as u64 {
        assert!(apps.connected(c).is_empty());
        if c != 5 {
            apps.message(c, init("a", 1000, CorrectiveAction::Log), t0);
        }
    }
    assert_eq!(apps.connected(100), vec![AppOut::Close { conn: 5 }]);
    apps.message(100, init("a", 1000, CorrectiveAction::Log), t0);
    assert_eq!(apps.connected(101), vec![AppOut::Close { conn: 101 }]);
}
