//! Fake-time tests of every transition of the instance state machine
//! (connection, heartbeat, loss, reporting, votes).

use std::time::{Duration, Instant};

use super::*;
use crate::wire::guest::{ActionResponse, ChallengeResponse, Exit, GuestMsg, HostMsg, Init};
use crate::wire::vocab::{EventType, NotificationType};

const UUID: &str = "0123456789ab-cdef-0123-456789abcdef0";

struct Harness {
    inst: Instance,
    cfg: HbConfig,
    rng: Rng,
    now: Instant,
    host_reporting: bool,
}

impl Harness {
    fn new() -> Self {
        Self {
            inst: Instance::new(UUID, Some(format!("cgcs.heartbeat.{UUID}.sock"))),
            cfg: HbConfig::default(),
            rng: Rng::seeded(1),
            now: Instant::now(),
            host_reporting: true,
        }
    }

    fn run(&mut self, f: impl FnOnce(&mut Instance, &mut Ctx<'_>, &mut Vec<Effect>)) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut ctx = Ctx { now: self.now, host_reporting: self.host_reporting, cfg: &self.cfg, rng: &mut self.rng };
        f(&mut self.inst, &mut ctx, &mut out);
        out
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    fn connected(mut self) -> Self {
        self.run(|i, c, o| i.on_connect(ConnectOutcome::Connected, c, o));
        self
    }

    fn heartbeating(mut self) -> Self {
        self.run(|i, c, o| i.on_guest(GuestMsg::Init(init(1000)), c, o));
        self.answer("healthy", "none");
        self
    }

    fn guest(&mut self, msg: GuestMsg) -> Vec<Effect> {
        self.run(|i, c, o| i.on_guest(msg, c, o))
    }

    fn answer(&mut self, health: &str, action: &str) -> Vec<Effect> {
        let challenge = self.inst.challenge;
        self.guest(GuestMsg::ChallengeResponse(ChallengeResponse {
            heartbeat_response: challenge,
            heartbeat_health: health.into(),
            corrective_action: action.into(),
            log_msg: "msg".into(),
        }))
    }

    fn timer(&mut self, kind: TimerKind) -> Vec<Effect> {
        self.run(|i, c, o| i.on_timer(kind, c, o))
    }
}

fn init(interval: u32) -> Init {
    Init {
        invocation_id: 42,
        name: "vm1".into(),
        heartbeat_interval_ms: interval,
        vote_secs: 9,
        shutdown_notice_secs: 8,
        suspend_notice_secs: 7,
        resume_notice_secs: 14,
        restart_secs: 601,
        corrective_action: "reboot".into(),
    }
}

fn agent_events(out: &[Effect]) -> Vec<AgentEvent> {
    out.iter().filter_map(|e| if let Effect::Agent(a) = e { Some(a.clone()) } else { None }).collect()
}

fn guest_msgs(out: &[Effect]) -> Vec<HostMsg> {
    out.iter().filter_map(|e| if let Effect::Guest(m) = e { Some(m.clone()) } else { None }).collect()
}

fn armed(out: &[Effect], kind: TimerKind) -> Option<Instant> {
    out.iter().rev().find_map(|e| match e {
        Effect::Arm(k, at) if *k == kind => Some(*at),
        _ => None,
    })
}

#[test]
fn connect_backoff_doubles_to_sixty_seconds_and_resets_on_success() {
    let mut h = Harness::new();
    let mut waits = Vec::new();
    for _ in 0..9 {
        let out = h.run(|i, c, o| i.on_connect(ConnectOutcome::Failed, c, o));
        waits.push((armed(&out, TimerKind::Connect).unwrap() - h.now).as_secs());
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(h.timer(TimerKind::Connect), vec![Effect::Connect]);
    let out = h.run(|i, c, o| i.on_connect(ConnectOutcome::Connected, c, o));
    assert_eq!(h.inst.link, Link::Up);
    assert_eq!(h.inst.backoff_secs, 1);
    assert_eq!(armed(&out, TimerKind::Reconnect), Some(h.now + RECONNECT_AUDIT));
}

#[test]
fn init_is_acked_and_challenged_at_once() {
    let mut h = Harness::new().connected();
    let out = h.guest(GuestMsg::Init(init(1000)));
    let msgs = guest_msgs(&out);
    assert_eq!(msgs[0], HostMsg::InitAck(crate::wire::guest::InitAck { invocation_id: 42 }));
    let HostMsg::Challenge(c) = &msgs[1] else { panic!("no challenge: {msgs:?}") };
    assert_eq!(c.heartbeat_challenge, h.inst.challenge);
    assert!(c.heartbeat_challenge <= 0x7fff_ffff);
    assert_eq!(h.inst.hb, HbState::WaitingResponse);
    assert_eq!(armed(&out, TimerKind::Monitor), Some(h.now + Duration::from_millis(1000)));
    assert_eq!(h.inst.params.name, "vm1");
    assert!(agent_events(&out).is_empty(), "init alone does not start heartbeating");
}

#[test]
fn healthy_response_starts_heartbeating_once_and_period_follows_interval() {
    let mut h = Harness::new().connected();
    h.guest(GuestMsg::Init(init(1000)));
    let out = h.answer("healthy", "reboot");
    assert_eq!(agent_events(&out), vec![AgentEvent::Running]);
    assert_eq!(h.inst.hb, HbState::WaitingChallenge);
    h.advance(1000);
    let out = h.timer(TimerKind::Monitor);
    assert!(matches!(guest_msgs(&out)[..], [HostMsg::Challenge(_)]));
    assert_eq!(armed(&out, TimerKind::Monitor), Some(h.now + Duration::from_millis(1000)));
    let out = h.answer("healthy", "reboot");
    assert!(agent_events(&out).is_empty(), "no second RUNNING");
}

#[test]
fn interval_is_clamped_to_pulse_period_and_ceiling_and_secs_to_range() {
    let mut h = Harness::new().connected();
    let out = h.guest(GuestMsg::Init(init(100)));
    assert_eq!(h.inst.params.heartbeat_interval_ms, 400);
    assert!(out.iter().any(|e| matches!(e, Effect::Warn(w) if w.contains("clamped"))));
    h.inst.hb = HbState::WaitingInit;
    let mut big = init(u32::MAX);
    big.vote_secs = 0;
    big.restart_secs = 1_000_000;
    h.guest(GuestMsg::Init(big));
    assert_eq!(h.inst.params.heartbeat_interval_ms, 60_000);
    assert_eq!(h.inst.params.vote_secs, 1);
    assert_eq!(h.inst.params.restart_secs, 3600);
}

#[test]
fn loss_after_more_than_threshold_misses_timed_from_first_unanswered_challenge() {
    let mut h = Harness::new().connected().heartbeating();
    h.inst.reporting = true;
    h.advance(1000);
    h.timer(TimerKind::Monitor); // challenge c0 at t0, never answered
    let t0 = h.now;
    h.advance(1000);
    let out = h.timer(TimerKind::Monitor);
    assert_eq!(h.inst.b2b_misses, 1);
    assert!(matches!(guest_msgs(&out)[..], [HostMsg::Challenge(_)]), "miss 1 of 1: challenge again");
    assert!(agent_events(&out).is_empty());
    h.advance(1000);
    let out = h.timer(TimerKind::Monitor);
    assert_eq!(h.now - t0, Duration::from_millis(2000), "(threshold + 1) x interval");
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped, AgentEvent::Loss]);
    assert!(h.inst.failed && !h.inst.heartbeating);
    assert_eq!(h.inst.hb, HbState::WaitingInit);
    assert_eq!(h.inst.failures, 1);
    assert!(armed(&out, TimerKind::Monitor).is_none(), "challenges stop after a loss");
}

#[test]
fn threshold_zero_makes_the_first_miss_a_loss() {
    let mut h = Harness::new().connected().heartbeating();
    h.cfg.failure_threshold = 0;
    h.inst.reporting = true;
    h.timer(TimerKind::Monitor);
    let out = h.timer(TimerKind::Monitor);
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped, AgentEvent::Loss]);
}

#[test]
fn loss_is_not_reported_when_either_gate_is_off() {
    let mut h = Harness::new().connected().heartbeating();
    h.inst.reporting = true;
    h.host_reporting = false;
    h.timer(TimerKind::Monitor);
    h.timer(TimerKind::Monitor);
    let out = h.timer(TimerKind::Monitor);
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped]);
    assert!(h.inst.failed);
    assert_eq!(h.inst.failures, 0);
}

#[test]
fn with_instance_reporting_off_one_miss_stops_heartbeating_quietly() {
    let mut h = Harness::new().connected().heartbeating();
    h.timer(TimerKind::Monitor);
    let out = h.timer(TimerKind::Monitor);
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped]);
    assert!(!h.inst.failed);
    assert_eq!(h.inst.hb, HbState::WaitingInit);
}

#[test]
fn mismatched_response_is_a_miss_at_the_deadline_and_late_response_is_ignored() {
    let mut h = Harness::new().connected().heartbeating();
    h.inst.reporting = true;
    h.timer(TimerKind::Monitor);
    let wrong = h.inst.challenge.wrapping_add(1);
    let out = h.guest(GuestMsg::ChallengeResponse(ChallengeResponse {
        heartbeat_response: wrong,
        heartbeat_health: "healthy".into(),
        corrective_action: "none".into(),
        log_msg: String::new(),
    }));
    assert!(out.iter().any(|e| matches!(e, Effect::Warn(w) if w.contains("mismatch"))));
    assert_eq!(h.inst.hb, HbState::WaitingResponse);
    h.timer(TimerKind::Monitor);
    assert_eq!(h.inst.b2b_misses, 1);
    h.answer("healthy", "none");
    let out = h.answer("healthy", "none");
    assert!(out.iter().any(|e| matches!(e, Effect::Warn(w) if w.contains("late"))));
    h.timer(TimerKind::Monitor);
    assert_eq!(h.inst.b2b_misses, 0, "a good interval resets the miss count");
}

#[test]
fn unhealthy_response_reports_illhealth_with_the_guests_action() {
    let mut h = Harness::new().connected();
    h.guest(GuestMsg::Init(init(1000)));
    let out = h.answer("unhealthy", "stop");
    assert_eq!(agent_events(&out), vec![AgentEvent::Running, AgentEvent::IllHealth { action: "stop".into() }]);
    assert_eq!(h.inst.unhealthy_action, "stop");
    assert_eq!(h.inst.info("h", Some("stop")).repair_action, "stop");
    assert_eq!(h.inst.info("h", None).repair_action, "reboot");
    h.timer(TimerKind::Monitor);
    let out = h.answer("unhealthy", "none");
    assert!(agent_events(&out).is_empty(), "action none is not reported");
    h.timer(TimerKind::Monitor);
    let out = h.answer("sick", "reboot");
    assert!(out.iter().any(|e| matches!(e, Effect::Warn(w) if w.contains("Invalid health"))));
    assert_eq!(agent_events(&out), vec![AgentEvent::IllHealth { action: "reboot".into() }]);
}

#[test]
fn unexpected_init_is_dropped_and_the_retry_is_accepted() {
    let mut h = Harness::new().connected().heartbeating();
    let out = h.guest(GuestMsg::Init(init(1000)));
    assert!(guest_msgs(&out).is_empty());
    assert_eq!(h.inst.hb, HbState::WaitingInit);
    let out = h.guest(GuestMsg::Init(init(1000)));
    assert_eq!(guest_msgs(&out).len(), 2);
}

#[test]
fn exit_stops_heartbeating() {
    let mut h = Harness::new().connected().heartbeating();
    let out = h.guest(GuestMsg::Exit(Exit { log_msg: "Exiting...".into() }));
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped]);
    assert_eq!(h.inst.hb, HbState::WaitingInit);
    assert!(out.contains(&Effect::Cancel(TimerKind::Monitor)));
}

#[test]
fn channel_close_emits_stopped_and_reconnects_after_one_second() {
    let mut h = Harness::new().connected().heartbeating();
    let out = h.run(|i, c, o| i.on_closed(c, o));
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped]);
    assert_eq!(armed(&out, TimerKind::Connect), Some(h.now + Duration::from_secs(1)));
    assert_eq!(h.inst.link, Link::Connecting);
}

#[test]
fn removal_closes_the_channel_and_emits_stopped() {
    let mut h = Harness::new().connected().heartbeating();
    let mut out = Vec::new();
    h.inst.on_removed(&mut out);
    assert!(out.contains(&Effect::Close));
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped]);
}

#[test]
fn disabling_reporting_stops_heartbeat_until_reinit() {
    let mut h = Harness::new().connected().heartbeating();
    let mut out = Vec::new();
    h.inst.set_reporting(true, &mut out);
    assert!(agent_events(&out).is_empty());
    out.clear();
    h.inst.set_reporting(false, &mut out);
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped]);
    assert_eq!(h.inst.hb, HbState::WaitingInit);
}

#[test]
fn reconnect_audit_reopens_a_connected_channel_that_is_not_heartbeating() {
    let mut h = Harness::new().connected();
    let out = h.timer(TimerKind::Reconnect);
    assert!(out.contains(&Effect::Close) && out.contains(&Effect::Connect));
    let mut h = Harness::new().connected().heartbeating();
    let out = h.timer(TimerKind::Reconnect);
    assert_eq!(armed(&out, TimerKind::Reconnect), Some(h.now + RECONNECT_AUDIT));
    assert!(!out.contains(&Effect::Close));
}

#[test]
fn vote_sends_action_notify_with_vote_timeout_and_forwards_the_reply() {
    let mut h = Harness::new().connected().heartbeating();
    let out = h.run(|i, c, o| i.start_action(NotificationType::Revocable, EventType::Stop, c, o));
    let HostMsg::ActionNotify(n) = &guest_msgs(&out)[0] else { panic!("{out:?}") };
    assert_eq!((n.invocation_id, n.timeout_ms), (42, 9000));
    assert_eq!(armed(&out, TimerKind::Vote), Some(h.now + Duration::from_millis(9000)));
    let out = h.guest(GuestMsg::ActionResponse(ActionResponse {
        invocation_id: 42,
        event_type: "stop".into(),
        notification_type: "revocable".into(),
        vote_result: "reject".into(),
        log_msg: "File exists.".into(),
    }));
    assert_eq!(
        agent_events(&out),
        vec![AgentEvent::VoteNotify {
            notification_type: "revocable".into(),
            event_type: "stop".into(),
            vote: "reject".into(),
            reason: "File exists.".into()
        }]
    );
    assert!(out.contains(&Effect::Cancel(TimerKind::Vote)));
    assert!(h.inst.vote.is_none());
}

#[test]
fn notification_timeouts_follow_the_event_and_the_timer_matches() {
    let mut h = Harness::new().connected().heartbeating();
    for (event, ms) in [
        (EventType::Reboot, 8000),
        (EventType::LiveMigrateBegin, 7000),
        (EventType::ColdMigrateEnd, 14_000),
        (EventType::Unknown, 9000),
    ] {
        let out = h.run(|i, c, o| i.start_action(NotificationType::Irrevocable, event, c, o));
        let HostMsg::ActionNotify(n) = &guest_msgs(&out)[0] else { panic!() };
        assert_eq!(n.timeout_ms, ms, "{event}");
        assert_eq!(armed(&out, TimerKind::Vote), Some(h.now + Duration::from_millis(ms.into())));
    }
}

#[test]
fn vote_timeout_sends_the_implied_result_every_time() {
    let mut h = Harness::new().connected().heartbeating();
    for (ntype, expect) in [(NotificationType::Revocable, "accept"), (NotificationType::Irrevocable, "complete")] {
        h.run(|i, c, o| i.start_action(ntype, EventType::Stop, c, o));
        h.timer(TimerKind::Monitor); // heartbeat traffic in between does not matter
        let out = h.timer(TimerKind::Vote);
        let events = agent_events(&out);
        assert!(
            matches!(&events[..], [AgentEvent::VoteNotify { vote, reason, .. }] if vote == expect && reason.is_empty()),
            "{events:?}"
        );
    }
    assert!(h.timer(TimerKind::Vote).is_empty(), "no vote pending, nothing sent");
}

#[test]
fn wrong_invocation_id_is_nacked_and_not_forwarded() {
    let mut h = Harness::new().connected().heartbeating();
    h.run(|i, c, o| i.start_action(NotificationType::Revocable, EventType::Stop, c, o));
    let out = h.guest(GuestMsg::ActionResponse(ActionResponse {
        invocation_id: 7,
        event_type: "stop".into(),
        notification_type: "revocable".into(),
        vote_result: "accept".into(),
        log_msg: String::new(),
    }));
    assert!(agent_events(&out).is_empty());
    let HostMsg::Nack(n) = &guest_msgs(&out)[0] else { panic!() };
    assert_eq!(n.log_msg, "Invocation id mismatch. Received: 7 expect: 42");
    assert!(h.inst.vote.is_some());
}

#[test]
fn migration_and_reboot_silence_challenges_for_sixty_seconds() {
    let mut h = Harness::new().connected().heartbeating();
    h.run(|i, c, o| i.start_action(NotificationType::Irrevocable, EventType::LiveMigrateBegin, c, o));
    let out = h.timer(TimerKind::Vote);
    assert_eq!(armed(&out, TimerKind::Init), Some(h.now + INIT_WAIT));
    h.timer(TimerKind::Init);
    assert_eq!(h.inst.hb, HbState::WaitingInit);
    assert!(h.timer(TimerKind::Monitor).is_empty(), "no challenge, no miss");
    let out = h.guest(GuestMsg::Init(init(1000)));
    assert!(out.contains(&Effect::Cancel(TimerKind::Init)));
}

#[test]
fn pause_accept_stops_challenges_and_suspend_complete_reconnects() {
    let mut h = Harness::new().connected().heartbeating();
    let reply = |event: &str, result: &str| {
        GuestMsg::ActionResponse(ActionResponse {
            invocation_id: 42,
            event_type: event.into(),
            notification_type: "irrevocable".into(),
            vote_result: result.into(),
            log_msg: String::new(),
        })
    };
    h.guest(reply("pause", "accept"));
    assert_eq!(h.inst.hb, HbState::WaitingInit);
    let out = h.guest(reply("suspend", "complete"));
    assert!(out.contains(&Effect::Close) && out.contains(&Effect::Connect));
    assert_eq!(agent_events(&out)[0], AgentEvent::Stopped);
    assert_eq!(armed(&out, TimerKind::Init), Some(h.now + INIT_WAIT));
}

#[test]
fn resume_on_a_channel_that_is_not_heartbeating_reconnects_first() {
    let mut h = Harness::new().connected();
    let out = h.run(|i, c, o| i.start_action(NotificationType::Irrevocable, EventType::Resume, c, o));
    assert!(out.contains(&Effect::Connect));
    assert!(guest_msgs(&out).iter().any(|m| matches!(m, HostMsg::ActionNotify(_))));
}

#[test]
fn restored_heartbeating_guest_that_never_reinits_is_a_loss() {
    let mut h = Harness::new();
    h.inst.heartbeating = true;
    h.inst.reporting = true;
    let mut out = Vec::new();
    h.inst.restored(h.now + Duration::from_secs(8), &mut out);
    assert_eq!(armed(&out, TimerKind::Readopt), Some(h.now + Duration::from_secs(8)));
    h.run(|i, c, o| i.on_connect(ConnectOutcome::Connected, c, o));
    let out = h.timer(TimerKind::Readopt);
    assert_eq!(agent_events(&out), vec![AgentEvent::Stopped, AgentEvent::Loss]);
}

#[test]
fn restored_guest_that_reinits_is_not_a_loss() {
    let mut h = Harness::new().connected();
    h.inst.heartbeating = true;
    h.inst.reporting = true;
    let out = h.guest(GuestMsg::Init(init(1000)));
    assert!(out.contains(&Effect::Cancel(TimerKind::Readopt)));
    let out = h.answer("healthy", "none");
    assert!(agent_events(&out).is_empty(), "still heartbeating: no RUNNING flap");
}
