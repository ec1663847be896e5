//! Hostile-guest suite (issue 6): one guest misbehaves in each of the ways
//! the issue lists while 50 healthy simulated guests heartbeat at 400 ms.
//! For every case: the daemon stays up, its memory growth is measured, the
//! nack or drop is what spec server §4–§5 says, the log lines the guest
//! caused are bounded, and no healthy guest is reported lost or stopped
//! (the daemon's own deadline, (threshold + 1) × interval, is the judge).
//! A table of the figures is printed (`--nocapture`) for docs/RELIABILITY.md.

use std::time::Duration;

use guest_heartbeat::wire::envelope::cmd;
use guest_heartbeat::wire::guest::{ActionResponse, ChallengeResponse, GuestMsg};
use serde_json::{json, Value};

use crate::rel_support::*;
use crate::support::*;

const FLEET: usize = 50;
const INTERVAL: u32 = 400;
/// Log lines one hostile guest may cause in one case: the per-instance
/// limiter allows 10 a minute, plus state lines. The "added"/"removed"
/// lines of a socket file appearing or going are not counted: only the
/// host (QEMU) creates and deletes socket files.
const LOG_BOUND: usize = 30;

/// Lines about `tail` a guest can cause (see `LOG_BOUND`).
fn guest_lines(log: &std::path::Path, tail: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.contains(tail) && !l.ends_with(" added") && !l.ends_with(" removed")).count()
}

struct Ctx {
    ls: LoggedServer,
    agent: FakeAgent,
    col: Collector,
    n: u32,
}

impl Ctx {
    fn hostile(&mut self) -> Hostile {
        self.n += 1;
        Hostile::listen(&self.ls.server.channels, &uuid(0xBAD0_0000 + self.n))
    }

    fn m(&self, name: &str) -> u64 {
        metric(&self.ls.server, name)
    }

    /// Waits until metric `name` exceeds `before`.
    fn grew(&self, name: &str, before: u64) -> bool {
        wait_for(WAIT, || (self.m(name) > before).then_some(())).is_some()
    }
}

/// A guest message with the common header and `extra` keys.
fn msg(msg_type: &str, extra: Value) -> Vec<u8> {
    let mut v = json!({"version": 3, "revision": 1, "msg_type": msg_type, "sequence": 1});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    serde_json::to_vec(&v).unwrap()
}

fn init_fields() -> Value {
    json!({"invocation_id": 7, "name": "h", "heartbeat_interval_ms": 1000, "vote_secs": 2,
           "shutdown_notice_secs": 3, "suspend_notice_secs": 4, "resume_notice_secs": 5,
           "restart_secs": 6, "corrective_action": "reboot"})
}

fn no_newline(c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    let before = c.m("guest_too_long_total");
    let sent = h.flood(Duration::from_secs(3), &[b'x'; 65536]);
    h.write_some(b"\n");
    assert!(c.grew("guest_too_long_total", before), "endless line not counted as too long");
    format!("{} KiB accepted by the socket in 3 s; discarded at max_line", sent / 1024)
}

fn huge_lines(c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    let before = c.m("guest_too_long_total");
    let mut line = vec![b'{'; 1 << 20];
    line.push(b'\n');
    let sent = h.flood(Duration::from_secs(3), &line);
    assert!(c.grew("guest_too_long_total", before), "1 MiB lines not counted as too long");
    format!("{} KiB of 1 MiB lines accepted in 3 s; each discarded", sent / 1024)
}

fn message_flood(c: &mut Ctx, h: &mut Hostile) -> String {
    let ch = h.handshake(1, 5000);
    let before = c.m("guest_rate_limited_total");
    let one = guest_heartbeat::wire::guest::encode_guest(
        1,
        &GuestMsg::ChallengeResponse(ChallengeResponse {
            heartbeat_response: ch,
            heartbeat_health: "healthy".into(),
            corrective_action: "none".into(),
            log_msg: String::new(),
        }),
    );
    // 100 messages every 10 ms = 10,000 per second, for 3 s.
    let batch: Vec<u8> = one.repeat(100);
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    for tick in 1..=300u32 {
        let mut off = 0;
        while off < batch.len() && start.elapsed() < Duration::from_millis(u64::from(tick) * 10 + 50) {
            off += h.write_some(&batch[off..]);
        }
        sent += (off / one.len()) as u64;
        let due = start + Duration::from_millis(u64::from(tick) * 10);
        if let Some(d) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(d); // pacing the flood, not waiting for a state
        }
    }
    assert!(c.grew("guest_rate_limited_total", before), "flood not rate-limited");
    let dropped = c.m("guest_rate_limited_total") - before;
    format!(
        "{sent} messages written in {:.1} s; {dropped} dropped by the rate limit so far",
        start.elapsed().as_secs_f64()
    )
}

fn nul_and_utf8(c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    let before = c.m("guest_malformed_total");
    let nacks = c.m("guest_nacked_total");
    let mut nul = msg("exit", json!({"log_msg": "a"}));
    let pos = nul.len() - 3;
    nul[pos] = 0;
    h.line(&nul);
    let mut bad = msg("exit", json!({"log_msg": "a"}));
    bad[pos] = 0xFF;
    h.line(&bad);
    h.line(b"\xC3\x28\xA0\xA1\0\0\0");
    assert!(
        wait_for(WAIT, || (c.m("guest_malformed_total") >= before + 3).then_some(())).is_some(),
        "three malformed lines not counted"
    );
    assert_eq!(c.m("guest_nacked_total"), nacks, "a malformed line was nacked (decisions §4: drop, no nack)");
    "3 lines dropped as malformed, no nack, channel kept".into()
}

fn deep_json(c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    let before = c.m("guest_malformed_total");
    let depth = 1500;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    h.line(nested.as_bytes());
    let (open, close) = ("{\"a\":".repeat(depth / 3), "}".repeat(depth / 3));
    let inner = format!(r#"{{"version":3,"revision":1,"msg_type":"exit","sequence":1,"log_msg":{open}1{close}}}"#);
    h.line(inner.as_bytes());
    assert!(
        wait_for(WAIT, || (c.m("guest_malformed_total") >= before + 2).then_some(())).is_some(),
        "deep JSON not dropped as malformed"
    );
    format!("depth {depth}: both lines dropped as malformed (depth > 16 refused before parsing)")
}

fn wrong_types(_c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    let mut init_bad_name = init_fields();
    init_bad_name["name"] = json!(5);
    let cases: Vec<(Vec<u8>, String)> = vec![
        (br#"{"version":"3","msg_type":"init"}"#.to_vec(), "failed to parse version".into()),
        (br#"{"version":3,"revision":1,"msg_type":7,"sequence":1}"#.to_vec(), "failed to parse msg_type".into()),
        (
            br#"{"version":3,"revision":true,"msg_type":"init","sequence":1}"#.to_vec(),
            "failed to parse revision".into(),
        ),
        (br#"["version",3]"#.to_vec(), "failed to parse version".into()),
        (msg("init", init_bad_name), "failed to parse name".into()),
        (
            msg(
                "challenge_response",
                json!({"heartbeat_response": 1, "heartbeat_health": true,
                "corrective_action": "none", "log_msg": ""}),
            ),
            "failed to parse heartbeat_health".into(),
        ),
    ];
    for (line, want) in &cases {
        h.line(line);
        assert!(h.expect_nack(want, WAIT), "no nack {want:?}");
    }
    format!("{} lines, each nacked with the spec text", cases.len())
}

fn bad_numbers(_c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    let bad = [json!(-1), json!(4_294_967_296_u64), json!(1e300), json!(1.5)];
    let mut n = 0;
    let init_keys = [
        "invocation_id",
        "heartbeat_interval_ms",
        "vote_secs",
        "shutdown_notice_secs",
        "suspend_notice_secs",
        "resume_notice_secs",
        "restart_secs",
    ];
    for v in &bad {
        for key in ["version", "revision", "sequence"] {
            let mut m: Value = serde_json::from_slice(&msg("init", init_fields())).unwrap();
            m[key] = v.clone();
            h.line(&serde_json::to_vec(&m).unwrap());
            assert!(h.expect_nack(&format!("failed to parse {key}"), WAIT), "{key} = {v}");
            n += 1;
        }
        for key in init_keys {
            let mut f = init_fields();
            f[key] = v.clone();
            h.line(&msg("init", f));
            assert!(h.expect_nack(&format!("failed to parse {key}"), WAIT), "{key} = {v}");
            n += 1;
        }
        let r =
            json!({"heartbeat_response": v, "heartbeat_health": "healthy", "corrective_action": "none", "log_msg": ""});
        h.line(&msg("challenge_response", r));
        assert!(h.expect_nack("failed to parse heartbeat_response", WAIT), "heartbeat_response = {v}");
        let a = json!({"invocation_id": v, "event_type": "stop", "notification_type": "revocable",
                       "vote_result": "accept", "log_msg": ""});
        h.line(&msg("action_response", a));
        assert!(h.expect_nack("failed to parse invocation_id", WAIT), "action invocation_id = {v}");
        n += 2;
    }
    format!("{n} messages (-1, 2^32, 1e300, 1.5 in every integer field), each nacked `failed to parse <key>`")
}

fn old_version(_c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    for v in [0, 1, 2] {
        let mut m: Value = serde_json::from_slice(&msg("init", init_fields())).unwrap();
        m["version"] = json!(v);
        h.line(&serde_json::to_vec(&m).unwrap());
        assert!(h.expect_nack(&format!("Bad version: {v}, expect version: 3"), WAIT), "version {v}");
    }
    "versions 0, 1, 2 nacked `Bad version: <v>, expect version: 3`".into()
}

fn unknown_types(_c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(1, 5000);
    let types = ["bogus", "challenge", "init_ack", "action_notify", "nack", ""];
    for t in types {
        h.line(&msg(t, json!({})));
        assert!(h.expect_nack(&format!("unsupported message type: {t}"), WAIT), "type {t:?}");
    }
    format!("{} types nacked `unsupported message type: <type>`", types.len())
}

fn old_challenge(c: &mut Ctx, h: &mut Hostile) -> String {
    c.agent.enable(c.ls.server.udp, &h.uuid);
    let first = h.handshake(1, INTERVAL);
    let nacks = c.m("guest_nacked_total");
    // Answer every later challenge with the previous one's value.
    let mut last = first;
    let uuid = h.uuid.clone();
    let lost = wait_for(WAIT, || {
        for m in h.recv_all(Duration::from_millis(50)) {
            if let guest_heartbeat::wire::guest::HostMsg::Challenge(ch) = m {
                h.send(GuestMsg::ChallengeResponse(ChallengeResponse {
                    heartbeat_response: last,
                    heartbeat_health: "healthy".into(),
                    corrective_action: "none".into(),
                    log_msg: String::new(),
                }));
                last = ch.heartbeat_challenge;
            }
        }
        c.col
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|g| g.cmd == cmd::HEARTBEAT_LOSS && g.json["uuid"] == uuid.as_str())
            .then_some(())
    });
    assert!(lost.is_some(), "stale responses were not treated as misses");
    assert_eq!(c.m("guest_nacked_total"), nacks, "a stale response was nacked");
    "stale answers count as misses: LOSS reported for this guest, no nack".into()
}

fn wrong_invocation(_c: &mut Ctx, h: &mut Hostile) -> String {
    h.handshake(4242, 5000);
    h.send(GuestMsg::ActionResponse(ActionResponse {
        invocation_id: 999,
        event_type: "stop".into(),
        notification_type: "revocable".into(),
        vote_result: "accept".into(),
        log_msg: String::new(),
    }));
    assert!(h.expect_nack("Invocation id mismatch. Received: 999 expect: 4242", WAIT), "no mismatch nack");
    "nacked `Invocation id mismatch. Received: 999 expect: 4242`".into()
}

fn connect_loops(c: &mut Ctx, h: &mut Hostile) -> String {
    let before = c.m("connects_total");
    // What a guest (through QEMU) can do: accept and drop, again and again.
    let cycles = 20;
    for i in 0..cycles {
        assert!(h.accept(WAIT), "server did not reconnect in cycle {i}");
        h.stream = None;
    }
    // What only the host can do (the socket file is QEMU's): delete and
    // re-create; each cycle is a new instance with its own log budget.
    let recreate = 5;
    for i in 0..recreate {
        h.remove();
        *h = Hostile::listen(&c.ls.server.channels, &h.uuid.clone());
        assert!(h.accept(WAIT), "server did not reconnect after re-create {i}");
    }
    let connects = c.m("connects_total") - before;
    assert!(connects >= cycles, "only {connects} connects");
    format!("{cycles} accept+drop cycles (reconnects paced at 1/s), {recreate} delete+re-create cycles; {connects} connects")
}

fn not_a_socket(c: &mut Ctx, _h: &mut Hostile) -> String {
    let dir = c.ls.server.channels.clone();
    let file = dir.join(format!("cgcs.heartbeat.{}.sock", uuid(0xBAD1_0001)));
    std::fs::write(&file, b"not a socket").unwrap();
    let sub = dir.join(format!("cgcs.heartbeat.{}.sock", uuid(0xBAD1_0002)));
    std::fs::create_dir(&sub).unwrap();
    let fifo = dir.join(format!("cgcs.heartbeat.{}.sock", uuid(0xBAD1_0003)));
    let cpath = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    let before = c.m("connect_failures_total");
    let failed = wait_for(WAIT, || (c.m("connect_failures_total") >= before + 3).then_some(()));
    // The daemon keeps going; the next scan sees them again at its own pace.
    let lines = log_lines(&c.ls.log, &["bad1000"]);
    for p in [&file, &fifo] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir(&sub);
    format!("regular file, directory, FIFO: connect failures counted ({}), {lines} log lines", failed.is_some())
}

type CaseFn = fn(&mut Ctx, &mut Hostile) -> String;

#[test]
fn rel_hostile_guests_do_not_hurt_fifty_healthy_ones() {
    let dir = TestDir::new("hostile");
    let agent = FakeAgent::new();
    let ini = "[client]\nhbs_pulse_period = 400\nhbs_failure_threshold = 1\n";
    let ls = start_logged(&dir, &agent, ini, free_udp_port(), ([127, 0, 0, 1], free_tcp_port()).into());
    let col = Collector::start(&agent);
    let fleet = Fleet::start(&ls.server, &agent, &col, FLEET, INTERVAL);
    let mut c = Ctx { ls, agent, col, n: 0 };
    let cases: Vec<(&str, CaseFn)> = vec![
        ("endless bytes, no newline", no_newline),
        ("1 MiB lines", huge_lines),
        ("10,000 messages/s", message_flood),
        ("NUL bytes, invalid UTF-8", nul_and_utf8),
        ("deeply nested JSON", deep_json),
        ("wrong types", wrong_types),
        ("negative/huge/fractional integers", bad_numbers),
        ("version < 3", old_version),
        ("unknown and host-side msg_types", unknown_types),
        ("response to an old challenge", old_challenge),
        ("action_response, wrong invocation id", wrong_invocation),
        ("connect/disconnect loops", connect_loops),
        ("socket file that is not a socket", not_a_socket),
    ];
    let pid = c.ls.server.child.id();
    let rss_start = rss_kib(pid);
    let mut rows = Vec::new();
    for (name, case) in cases {
        let rss0 = rss_kib(pid);
        let (miss0, fail0) = (fleet.misses(&c.ls.log), fleet.failures(&c.col));
        let mut h = c.hostile();
        let tail = h.uuid[h.uuid.len() - 12..].to_string();
        let lines0 = guest_lines(&c.ls.log, &tail);
        let note = case(&mut c, &mut h);
        h.remove();
        assert!(c.ls.server.child.try_wait().unwrap().is_none(), "{name}: guestServer died");
        let lines = guest_lines(&c.ls.log, &tail) - lines0;
        let rss1 = rss_kib(pid);
        let (miss, fail) = (fleet.misses(&c.ls.log) - miss0, fleet.failures(&c.col) - fail0);
        rows.push(format!("| {name} | {note} | {:+} KiB | {lines} | {miss} | {fail} |", rss1 as i64 - rss0 as i64));
        if lines > LOG_BOUND {
            let text = std::fs::read_to_string(&c.ls.log).unwrap_or_default();
            let seen: Vec<&str> = text.lines().filter(|l| l.contains(tail.as_str())).collect();
            panic!("{name}: {lines} log lines for one guest:\n{}", seen.join("\n"));
        }
        assert_eq!(fail, 0, "{name}: a healthy guest was reported lost or stopped");
    }
    let rss_end = rss_kib(pid);
    let report = fleet.sim.stop();
    let answered: u64 = report.guests.iter().map(|g| g.challenges_answered).sum();
    let max_latency = report.guests.iter().map(|g| g.latency_ms_max).fold(0.0, f64::max);
    eprintln!("| case | what happened | RSS growth | log lines | healthy misses | healthy LOSS/STOPPED |");
    eprintln!("|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!("{r}");
    }
    eprintln!(
        "RSS {rss_start} KiB -> {rss_end} KiB; fleet answered {answered} challenges, max answer latency {max_latency:.1} ms; suppressed log lines {}",
        metric(&c.ls.server, "logs_suppressed_total")
    );
    assert!(rss_end < rss_start + 32 * 1024, "memory grew from {rss_start} to {rss_end} KiB");
}
