//! The VIM command API of the real guestAgent binary: all 18 calls of the
//! original guestAgentTest.sh (agent spec §10), every call of spec §5.1 with
//! the VIM's headers, the error paths, and /metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::agent_support::*;
use serde_json::json;

const SH_HOST_BODY: &str = r#"{"hostname": "compute-1", "uuid" : "010e7741-1173-4a3b-88fa-c4e5905500ca"}"#;

fn create_body(uuid: &str, channel: &str) -> String {
    format!(r#"{{"hostname": "compute-1", "uuid" : "{uuid}", "channel" : "{channel}", "services" : ["heartbeat"]}}"#)
}

fn set_body(uuid: &str, channel: &str, state: &str) -> String {
    format!(
        r#"{{"hostname": "compute-1", "uuid" : "{uuid}", "channel" : "{channel}", "services" : [{{"service":"heartbeat" , "state":"{state}"}}]}}"#
    )
}

fn services(uuid: &str, state: &str) -> serde_json::Value {
    json!({"uuid": uuid, "hostname": "compute-1", "services": [
        {"service": "heartbeat", "state": state, "restart-timeout": "0", "status": "disabled"}]})
}

fn inst_cmd(m: &Msg, cmd: u32, uuid: &str, state: &str) {
    assert_eq!(m.cmd, cmd, "{m:?}");
    let p = format!(r#"{{"source":"127.0.0.1","uuid":"{uuid}","service":"heartbeat","state":"{state}"}}"#);
    assert_eq!(m.payload, p);
    assert_eq!(m.len, 100 + p.len());
}

#[test]
fn guest_agent_test_sh_all_18_calls() {
    let gs = FakeUdp::new();
    let cfg = AgentCfg::new("sh").host("compute-1", HOST_UUID, gs.port());
    let a = start(&cfg);
    let host = format!("/v1/hosts/{HOST_UUID}");
    let (ia, ib) = (format!("/v1/instances/{INST_A}"), format!("/v1/instances/{INST_B}"));
    // 1-3: host create, query, enable.
    let (c, b) = a.vim("POST", &host, None);
    assert_eq!((c, json(&b)), (200, json!({"status": "pass"})));
    let (c, b) = a.vim("GET", &host, None);
    assert_eq!((c, json(&b)), (200, json!({"uuid": HOST_UUID, "hostname": "compute-1", "state": "disabled"})));
    let (c, b) = a.vim("PUT", &format!("{host}/enable"), Some(SH_HOST_BODY));
    assert_eq!((c, json(&b)), (200, json!({"status": "pass"})));
    let m = gs.recv();
    assert_eq!(m.cmd, cmd::MOD_HOST);
    assert_eq!(m.payload, format!(r#"{{"source":"127.0.0.1","uuid":"{HOST_UUID}","heartbeat":"enabled"}}"#));
    // 4-5: two instances.
    let (c, b) = a.vim("POST", &ia, Some(&create_body(INST_A, "cgts-instance000001")));
    assert_eq!((c, json(&b)), (200, json!({"status": "pass"})));
    inst_cmd(&gs.recv(), cmd::ADD_INST, INST_A, "disabled");
    let (c, _) = a.vim("POST", &ib, Some(&create_body(INST_B, "cgts-instance000002")));
    assert_eq!(c, 200);
    inst_cmd(&gs.recv(), cmd::ADD_INST, INST_B, "disabled");
    // 6-7: query both.
    let (c, b) = a.vim("GET", &ib, None);
    assert_eq!((c, json(&b)), (200, services(INST_B, "disabled")));
    let (c, b) = a.vim("GET", &ia, None);
    assert_eq!((c, json(&b)), (200, services(INST_A, "disabled")));
    // 8-11: enable B, query, disable B, query.
    let (c, b) = a.vim("PATCH", &ib, Some(&set_body(INST_B, "cgts-instance000002", "enabled")));
    assert_eq!((c, json(&b)), (200, services(INST_B, "enabled")));
    inst_cmd(&gs.recv(), cmd::MOD_INST, INST_B, "enabled");
    let (c, b) = a.vim("GET", &ib, None);
    assert_eq!((c, json(&b)), (200, services(INST_B, "enabled")));
    let (c, b) = a.vim("PATCH", &ib, Some(&set_body(INST_B, "cgts-instance000002", "disabled")));
    assert_eq!((c, json(&b)), (200, services(INST_B, "disabled")));
    inst_cmd(&gs.recv(), cmd::MOD_INST, INST_B, "disabled");
    let (c, b) = a.vim("GET", &ib, None);
    assert_eq!((c, json(&b)), (200, services(INST_B, "disabled")));
    // 12-18: the calls after the script's `exit 0`.
    let (c, b) = a.vim("DELETE", &ib, None);
    assert_eq!((c, b.as_str()), (204, ""));
    inst_cmd(&gs.recv(), cmd::DEL_INST, INST_B, "disabled");
    let (c, b) = a.vim("GET", &host, None);
    assert_eq!((c, json(&b)["state"].clone()), (200, json!("enabled")));
    let (c, _) = a.vim("PUT", &format!("{host}/disable"), Some(SH_HOST_BODY));
    assert_eq!(c, 200);
    assert_eq!(gs.recv().payload, format!(r#"{{"source":"127.0.0.1","uuid":"{HOST_UUID}","heartbeat":"disabled"}}"#));
    let (c, b) = a.vim("DELETE", &host, None);
    assert_eq!((c, b.as_str()), (204, ""));
    for (state, channel) in
        [("enabled", "cgts-instance000001"), ("disabled", "cgts-instance000001"), ("enabled", "cgts-instance000003")]
    {
        let (c, b) = a.vim("PATCH", &ia, Some(&set_body(INST_A, channel, state)));
        assert_eq!((c, json(&b)), (200, services(INST_A, state)));
        inst_cmd(&gs.recv(), cmd::MOD_INST, INST_A, state);
    }
}

#[test]
fn every_vim_call_of_spec_5_1_and_the_tolerated_404s() {
    let gs = FakeUdp::new();
    let mtc = FakeUdp::new();
    let cfg = AgentCfg::new("vimcalls")
        .host("compute-0", HOST_UUID, gs.port())
        .arg("--mtc-addr")
        .arg(&format!("127.0.0.1:{}", mtc.port()));
    let a = start(&cfg);
    // READY to mtcAgent at start: signature, tag, 100 bytes.
    let ready = mtc.recv();
    assert_eq!((ready.cmd, ready.len), (cmd::READY, 100));
    assert_eq!(&ready.hdr[..28], b"guest msg header:\0guestAgent");
    let hb = format!(r#"{{"uuid":"{HOST_UUID}","hostname":"compute-0"}}"#);
    let host = format!("/v1/hosts/{HOST_UUID}");
    assert_eq!(a.vim("POST", &host, Some(&hb)).0, 200);
    assert_eq!(a.vim("PUT", &format!("{host}/disable"), Some(&hb)).0, 200);
    assert_eq!(
        gs.recv_cmd(cmd::MOD_HOST).payload,
        format!(r#"{{"source":"127.0.0.1","uuid":"{HOST_UUID}","heartbeat":"disabled"}}"#)
    );
    assert_eq!(a.vim("PUT", &format!("{host}/enable"), Some(&hb)).0, 200);
    assert!(gs.recv_cmd(cmd::MOD_HOST).payload.ends_with(r#""heartbeat":"enabled"}"#));
    // host_services_query is a GET on .../disable with a body.
    let (c, b) = a.vim("GET", &format!("{host}/disable"), Some(&hb));
    assert_eq!((c, json(&b)["state"].clone()), (200, json!("enabled")));
    let inst = format!("/v1/instances/{INST_A}");
    let create = format!(r#"{{"uuid":"{INST_A}","hostname":"compute-0","services":["heartbeat"]}}"#);
    assert_eq!(a.vim("POST", &inst, Some(&create)).0, 200);
    assert_eq!(
        gs.recv_cmd(cmd::ADD_INST).payload,
        format!(r#"{{"source":"127.0.0.1","uuid":"{INST_A}","service":"heartbeat","state":"disabled"}}"#)
    );
    let set = format!(
        r#"{{"uuid":"{INST_A}","hostname":"compute-0","services":[{{"service":"heartbeat","state":"enabled"}}]}}"#
    );
    let (c, b) = a.vim("PATCH", &inst, Some(&set));
    let v = json(&b);
    assert_eq!(
        (c, v["services"][0]["state"].clone(), v["services"][0]["restart-timeout"].clone()),
        (200, json!("enabled"), json!("0"))
    );
    let (c, b) = a.vim("GET", &inst, None);
    assert_eq!((c, json(&b)["hostname"].clone()), (200, json!("compute-0")));
    for (suffix, action) in [("vote", "stop"), ("notify", "pause")] {
        let body = format!(r#"{{"uuid":"{INST_A}","hostname":"compute-0","action":"{action}"}}"#);
        let (c, b) = a.vim("POST", &format!("{inst}/{suffix}"), Some(&body));
        assert_eq!(
            (c, json(&b)),
            (200, json!({"uuid": INST_A, "hostname": "compute-0", "action": action, "timeout": "0"}))
        );
    }
    assert_eq!(a.vim("DELETE", &inst, None).0, 204);
    assert_eq!(a.vim("DELETE", &host, None).0, 204);
    // Tolerated 404s: unknown host (and READY again), unknown instance delete.
    let other = "/v1/hosts/99999999-1173-4a3b-88fa-c4e5905500ca";
    for (method, path, body) in [
        ("POST", other.to_string(), None),
        ("GET", format!("{other}/disable"), None),
        ("PUT", format!("{other}/disable"), Some(r#"{"uuid":"x","hostname":"compute-9"}"#)),
    ] {
        let (c, b) = a.vim(method, &path, body);
        assert_eq!((c, json(&b)), (404, json!({"status": "fail", "reason": "entity not found"})), "{method} {path}");
        assert_eq!(mtc.recv_cmd(cmd::READY).len, 100);
    }
    assert_eq!(a.vim("DELETE", &inst, None).0, 404);
    assert_eq!(a.vim("GET", &inst, None).0, 404);
}

#[test]
fn errors_are_json_with_the_right_code() {
    let gs = FakeUdp::new();
    let a = start(&AgentCfg::new("errors").host("compute-0", HOST_UUID, gs.port()));
    let inst = format!("/v1/instances/{INST_A}");
    let fail = |reason: &str| json!({"status": "fail", "reason": reason});
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("GET", "/v2/other".into(), None, 403, "no buffer"),
        ("POST", inst.clone(), None, 411, "length required"),
        ("POST", inst.clone(), Some("not json".into()), 400, "command parse error"),
        ("POST", inst.clone(), Some(r#"{"uuid":"u","hostname":"compute-0"}"#.into()), 400, "command parse error"),
        (
            "POST",
            inst.clone(),
            Some(r#"{"uuid":"u","hostname":"compute-0","services":[]}"#.into()),
            400,
            "command parse error",
        ),
        (
            "POST",
            inst.clone(),
            Some(r#"{"uuid":"u","hostname":"compute-0","services":"heartbeat"}"#.into()),
            400,
            "command parse error",
        ),
        (
            "POST",
            inst.clone(),
            Some(r#"{"uuid":"u","hostname":"compute-9","services":["heartbeat"]}"#.into()),
            400,
            "invalid data",
        ),
        (
            "PATCH",
            inst.clone(),
            Some(r#"{"uuid":"u","hostname":"compute-0","services":[]}"#.into()),
            400,
            "command parse error",
        ),
        (
            "PATCH",
            inst.clone(),
            Some(r#"{"uuid":"u","hostname":"compute-0","services":[{"service":"x","state":"enabled"}]}"#.into()),
            400,
            "invalid data",
        ),
        (
            "PATCH",
            inst.clone(),
            Some(r#"{"uuid":"u","hostname":"compute-0","services":[{"service":"heartbeat","state":"on"}]}"#.into()),
            400,
            "bad state",
        ),
        (
            "PATCH",
            inst.clone(),
            Some(
                r#"{"uuid":"u","hostname":"compute-9","services":[{"service":"heartbeat","state":"enabled"}]}"#.into(),
            ),
            404,
            "entity not found",
        ),
        (
            "POST",
            format!("{inst}/vote"),
            Some(r#"{"uuid":"nope","hostname":"compute-0","action":"stop"}"#.into()),
            404,
            "entity not found",
        ),
        ("PATCH", format!("/v1/hosts/{HOST_UUID}"), Some("{}".into()), 400, "unsupported http command"),
        ("PUT", format!("/v1/hosts/{HOST_UUID}/enable"), Some(r#"{"uuid":"x"}"#.into()), 400, "command parse error"),
        ("OPTIONS", inst.clone(), None, 501, "method not implemented"),
        ("POST", inst.clone(), Some(format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000))), 413, "request body too large"),
    ];
    for (method, path, body, code, reason) in cases {
        let (c, b) = a.vim(method, &path, body.as_deref());
        assert_eq!((c, json(&b)), (code, fail(reason)), "{method} {path} {body:?}");
    }
    // A foreign User-Agent is refused; an absent one is accepted.
    let (c, b) = http_request(a.http, "GET", &inst, None, &[("User-Agent", "curl/8")]);
    assert_eq!((c, json(&b)), (403, fail("no buffer")));
    assert_eq!(http_request(a.http, "POST", &format!("/v1/hosts/{HOST_UUID}"), None, &[]).0, 200);
    // PUT on an instance is accepted and ignored, with a JSON body.
    let (c, b) = a.vim("PUT", &inst, Some("{}"));
    assert_eq!((c, json(&b)), (200, json!({"status": "pass"})));
    // Still alive after all that.
    assert_eq!(a.vim("GET", &format!("/v1/hosts/{HOST_UUID}"), None).0, 200);
}

#[test]
fn metrics_count_hosts_instances_and_requests() {
    let gs = FakeUdp::new();
    let a = start(&AgentCfg::new("metrics").host("compute-0", HOST_UUID, gs.port()));
    let create = format!(r#"{{"uuid":"{INST_A}","hostname":"compute-0","services":["heartbeat"]}}"#);
    assert_eq!(a.vim("POST", &format!("/v1/instances/{INST_A}"), Some(&create)).0, 200);
    assert_eq!(a.vim("GET", "/v1/instances/unknown", None).0, 404);
    let (c, text) = http_request(a.http, "GET", "/metrics", None, &[]);
    assert_eq!(c, 200);
    for line in [
        "guestagent_hosts 1",
        "guestagent_instances{reporting=\"disabled\",heartbeating=\"disabled\"} 1",
        "guestagent_vim_events_pending 0",
        "guestagent_vim_events_sent_total 0",
        "guestagent_vim_events_retried_total 0",
        "guestagent_http_requests_total{endpoint=\"instances\",method=\"POST\",code=\"200\"} 1",
        "guestagent_http_requests_total{endpoint=\"instances\",method=\"GET\",code=\"404\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}
