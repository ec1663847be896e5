//! Unit tests of the outbox with fake time.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn outbox(max: usize, in_flight: usize) -> Outbox {
    Outbox::new(max, in_flight, Backoff { min: 100 * MS, max: 1000 * MS })
}

fn push(o: &mut Outbox, inst: &str, kind: EventKind, body: &str, now: Instant) {
    o.push(inst, kind, format!("/p/{inst}"), body.to_string(), now);
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let b = Backoff { min: 100 * MS, max: 1000 * MS };
    let delays: Vec<u128> = (1..7).map(|a| b.delay(a).as_millis()).collect();
    assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
}

#[test]
fn per_instance_order_survives_an_outage() {
    let t0 = Instant::now();
    let mut o = outbox(100, 8);
    push(&mut o, "a", EventKind::Alarm, "a1", t0);
    push(&mut o, "b", EventKind::Action, "b1", t0);
    push(&mut o, "a", EventKind::Action, "a2", t0);
    // VIM down: every attempt fails, only heads are ever in flight.
    let mut now = t0;
    for _ in 0..5 {
        let mut sent = Vec::new();
        while let Some(j) = o.next_job(now) {
            sent.push(j.body.clone());
            o.complete(j.id, Delivery::Retry, now);
        }
        assert!(!sent.contains(&"a2".to_string()), "{sent:?}");
        now = o.next_due().unwrap();
    }
    assert_eq!(o.stats.retried, 10);
    // VIM back.
    let mut got = Vec::new();
    while !o.is_empty() {
        now = o.next_due().unwrap().max(now);
        while let Some(j) = o.next_job(now) {
            got.push(j.body.clone());
            o.complete(j.id, Delivery::Delivered, now);
        }
    }
    let a: Vec<&String> = got.iter().filter(|b| b.starts_with('a')).collect();
    assert_eq!(a, vec!["a1", "a2"]);
    assert_eq!(got.len(), 3);
    assert_eq!(o.stats.delivered, 3);
    assert!(o.next_due().is_none());
}

#[test]
fn retry_waits_for_its_back_off() {
    let t0 = Instant::now();
    let mut o = outbox(10, 1);
    push(&mut o, "a", EventKind::Alarm, "x", t0);
    let j = o.next_job(t0).unwrap();
    assert!(o.next_job(t0).is_none());
    o.complete(j.id, Delivery::Retry, t0);
    assert_eq!(o.next_due(), Some(t0 + 100 * MS));
    assert!(o.next_job(t0 + 99 * MS).is_none());
    let j = o.next_job(t0 + 100 * MS).unwrap();
    assert_eq!(j.attempts, 1);
    o.complete(j.id, Delivery::Rejected, t0 + 100 * MS);
    assert!(o.is_empty());
    assert_eq!(o.stats.rejected, 1);
}

#[test]
fn in_flight_limit_is_respected() {
    let t0 = Instant::now();
    let mut o = outbox(10, 2);
    for i in ["a", "b", "c"] {
        push(&mut o, i, EventKind::Service, i, t0);
    }
    let j1 = o.next_job(t0).unwrap();
    let _j2 = o.next_job(t0).unwrap();
    assert!(o.next_job(t0).is_none());
    assert!(o.next_due().is_none());
    o.complete(j1.id, Delivery::Delivered, t0);
    assert_eq!(o.next_job(t0).unwrap().body, "c");
}

#[test]
fn overflow_drops_oldest_service_never_alarms() {
    let t0 = Instant::now();
    let mut o = outbox(3, 1);
    push(&mut o, "a", EventKind::Alarm, "alarm", t0);
    push(&mut o, "a", EventKind::Service, "s1", t0);
    push(&mut o, "b", EventKind::Service, "s2", t0);
    let dropped = o.push("c", EventKind::Action, "/p".into(), "vote".into(), t0);
    assert_eq!(dropped.unwrap().body, "s1");
    let dropped = o.push("c", EventKind::Action, "/p".into(), "vote2".into(), t0);
    assert_eq!(dropped.unwrap().body, "s2");
    // Only alarms and votes left: nothing can be dropped, the queue grows.
    let dropped = o.push("d", EventKind::Alarm, "/p".into(), "alarm2".into(), t0);
    assert!(dropped.is_none());
    assert_eq!(o.len(), 4);
    assert_eq!(o.stats.overflowed, 2);
    let bodies: Vec<String> = o.snapshot().into_iter().map(|e| e.body).collect();
    assert_eq!(bodies, vec!["alarm", "vote", "vote2", "alarm2"]);
}

#[test]
fn restore_keeps_ids_and_order() {
    let t0 = Instant::now();
    let mut o = outbox(10, 4);
    push(&mut o, "a", EventKind::Alarm, "1", t0);
    push(&mut o, "a", EventKind::Action, "2", t0);
    push(&mut o, "b", EventKind::Alarm, "3", t0);
    let snap = o.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let mut back = outbox(10, 4);
    back.restore(serde_json::from_str(&json).unwrap(), t0);
    assert_eq!(back.snapshot(), snap);
    let next = back.push("a", EventKind::Alarm, "/p".into(), "4".into(), t0);
    assert!(next.is_none());
    assert_eq!(back.snapshot().last().unwrap().id, 4);
    let first = back.next_job(t0).unwrap();
    assert_eq!(first.body, "1");
}
