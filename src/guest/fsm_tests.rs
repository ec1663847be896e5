//! Fake-time tests of every transition of the guest heartbeat machine.

use super::*;

fn params() -> HbParams {
    HbParams {
        init: Init {
            invocation_id: 0,
            name: "vm1".into(),
            heartbeat_interval_ms: 1000,
            vote_secs: 9,
            shutdown_notice_secs: 9,
            suspend_notice_secs: 9,
            resume_notice_secs: 14,
            restart_secs: 601,
            corrective_action: "reboot".into(),
        },
        init_retry: Duration::from_secs(5),
        challenge_timeout: Duration::from_secs(5),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn inits(out: &[Output]) -> Vec<u32> {
    out.iter()
        .filter_map(|o| match o {
            Output::SendInit(i) => Some(i.invocation_id),
            _ => None,
        })
        .collect()
}

/// Advances in 100 ms ticks (as the dispatcher does) up to `to`.
fn run(hb: &mut Heartbeat, from: Instant, to: Instant) -> Vec<Output> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        t = (t + ms(100)).min(to);
        out.extend(hb.tick(t));
    }
    out
}

fn enabled(t0: Instant) -> Heartbeat {
    let mut hb = Heartbeat::new(params(), Rng::seeded(7), t0);
    let out = run(&mut hb, t0, t0 + ms(1000));
    let id = inits(&out)[0];
    hb.handle(Input::InitAck(id), t0 + ms(1000));
    assert_eq!(hb.state(), HbState::Enabled);
    hb
}

#[test]
fn release_sends_first_init_after_one_second() {
    let t0 = Instant::now();
    let mut hb = Heartbeat::new(params(), Rng::seeded(7), t0);
    assert!(run(&mut hb, t0, t0 + ms(900)).is_empty());
    let out = run(&mut hb, t0 + ms(900), t0 + ms(1000));
    assert_eq!(inits(&out).len(), 1);
    assert_eq!(hb.state(), HbState::Enabling);
    let Output::SendInit(init) = &out[1] else { panic!("{out:?}") };
    assert_eq!(init.name, "vm1");
    assert_eq!(init.invocation_id, hb.invocation_id());
}

#[test]
fn init_retries_with_fresh_ids_and_accepts_current_or_previous() {
    let t0 = Instant::now();
    let mut hb = Heartbeat::new(params(), Rng::seeded(7), t0);
    let first = inits(&run(&mut hb, t0, t0 + ms(1000)));
    let later = inits(&run(&mut hb, t0 + ms(1000), t0 + ms(11_000)));
    assert_eq!(later.len(), 2, "retries at 6 s and 11 s");
    assert!(first[0] != later[0] && later[0] != later[1]);
    // An ack for an older id is ignored.
    hb.handle(Input::InitAck(first[0]), t0 + ms(11_000));
    assert_eq!(hb.state(), HbState::Enabling);
    // A challenge before the ack gets no answer.
    assert!(hb.handle(Input::Challenge(5), t0 + ms(11_000)).is_empty());
    // The immediately previous id is accepted.
    let out = hb.handle(Input::InitAck(later[0]), t0 + ms(11_000));
    assert_eq!(hb.state(), HbState::Enabled);
    assert!(matches!(out[0], Output::Transition { event: "init-ack", .. }));
    // No more inits once enabled (until the challenge timeout).
    assert!(inits(&run(&mut hb, t0 + ms(11_000), t0 + ms(15_900))).is_empty());
}

#[test]
fn challenges_are_echoed_and_silence_falls_back_to_enabling() {
    let t0 = Instant::now();
    let mut hb = enabled(t0);
    let out = hb.handle(Input::Challenge(1_576_872_650), t0 + ms(1500));
    assert_eq!(out, vec![Output::AnswerChallenge(1_576_872_650)]);
    // 5 s after the last challenge: back to enabling, init at once.
    assert!(run(&mut hb, t0 + ms(1500), t0 + ms(6400)).is_empty());
    let out = run(&mut hb, t0 + ms(6400), t0 + ms(6500));
    assert_eq!(hb.state(), HbState::Enabling);
    assert_eq!(inits(&out).len(), 1);
    // Then every 5 s.
    assert_eq!(inits(&run(&mut hb, t0 + ms(6500), t0 + ms(11_500))).len(), 1);
}

#[test]
fn guard_suppresses_challenge_timeout_after_a_stall() {
    let t0 = Instant::now();
    let mut hb = enabled(t0);
    hb.handle(Input::Challenge(1), t0 + ms(1000));
    // The VM is paused for 10 s: one tick, long after the previous one.
    let out = hb.tick(t0 + ms(11_000));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(hb.state(), HbState::Enabled);
    // Without challenges the timeout fires once the period is stall-free.
    let out = run(&mut hb, t0 + ms(11_000), t0 + ms(16_100));
    assert_eq!(hb.state(), HbState::Enabling);
    assert_eq!(inits(&out).len(), 1);
}

#[test]
fn channel_down_and_up_from_each_state() {
    let t0 = Instant::now();
    // initial -> disabled -> enabling (init at once)
    let mut hb = Heartbeat::new(params(), Rng::seeded(7), t0);
    hb.handle(Input::ChannelDown, t0);
    assert_eq!(hb.state(), HbState::Disabled);
    assert!(run(&mut hb, t0, t0 + ms(2000)).is_empty(), "release ignored");
    let out = hb.handle(Input::ChannelUp, t0 + ms(2000));
    assert_eq!(hb.state(), HbState::Enabling);
    assert_eq!(inits(&out).len(), 1);
    // enabling -> disabled: retries stop
    hb.handle(Input::ChannelDown, t0 + ms(2100));
    assert!(run(&mut hb, t0 + ms(2100), t0 + ms(9000)).is_empty());
    // enabled -> disabled: no challenge timeout while down
    let mut hb = enabled(t0);
    hb.handle(Input::ChannelDown, t0 + ms(1100));
    assert_eq!(hb.state(), HbState::Disabled);
    assert!(run(&mut hb, t0 + ms(1100), t0 + ms(9000)).is_empty());
    // initial + channel-up -> enabling at once
    let mut hb = Heartbeat::new(params(), Rng::seeded(7), t0);
    assert_eq!(inits(&hb.handle(Input::ChannelUp, t0)).len(), 1);
    // enabled ignores init-ack and channel-up
    let mut hb = enabled(t0);
    assert!(hb.handle(Input::ChannelUp, t0 + ms(1100)).is_empty());
    assert!(hb.handle(Input::InitAck(1), t0 + ms(1100)).is_empty());
}

#[test]
fn shutdown_sends_exit_only_when_enabled() {
    let t0 = Instant::now();
    let mut hb = enabled(t0);
    let out = hb.handle(Input::Shutdown, t0 + ms(1200));
    assert_eq!(out[0], Output::SendExit);
    assert_eq!(hb.state(), HbState::Initial);
    let mut hb = Heartbeat::new(params(), Rng::seeded(7), t0);
    run(&mut hb, t0, t0 + ms(1000));
    let out = hb.handle(Input::Shutdown, t0 + ms(1000));
    assert!(!out.contains(&Output::SendExit));
    assert_eq!(hb.state(), HbState::Initial);
    assert!(run(&mut hb, t0 + ms(1000), t0 + ms(9000)).is_empty());
    let mut hb = Heartbeat::new(params(), Rng::seeded(7), t0);
    hb.handle(Input::ChannelDown, t0);
    assert!(!hb.handle(Input::Shutdown, t0).contains(&Output::SendExit));
}

#[test]
fn guard_records_only_long_gaps() {
    let t0 = Instant::now();
    let mut g = Guard::default();
    g.observe(t0);
    g.observe(t0 + ms(700));
    assert!(g.allows(ms(5000), t0 + ms(700)));
    g.observe(t0 + ms(1500));
    assert!(!g.allows(ms(5000), t0 + ms(1600)));
    assert!(g.allows(ms(5000), t0 + ms(6500)));
}
