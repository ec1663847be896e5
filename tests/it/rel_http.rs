//! HTTP hardening (issue 6) beyond tests/it/agent_api.rs (which covers body
//! size, malformed JSON and wrong methods): traversal-like and odd ids and an
//! over-long URL on every method and level. Every answer is a 4xx with a
//! JSON reason (or the spec's no-op 2xx) and the daemon stays up.

use std::io::Write;
use std::net::TcpStream;

use crate::agent_support::*;

/// Like `http_request`, but `None` when the server closes without a reply.
fn raw_request(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let b = body.unwrap_or("");
    let len = body.map(|b| format!("Content-Length: {}\r\n", b.len())).unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{len}\r\n{b}");
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default()))
}

#[test]
fn rel_http_odd_ids_get_json_4xx_and_create_nothing() {
    let gs = FakeUdp::new();
    let cfg = AgentCfg::new("relhttp").host("compute-0", HOST_UUID, gs.port());
    let mut a = start(&cfg);
    let ids = [
        "../../../../etc/passwd".to_string(),
        "..%2f..%2f..%2fetc%2fpasswd".to_string(),
        format!("{}/../../{}", &HOST_UUID[..8], "x".repeat(30)),
        "%00%00%00".to_string(),
        "x".repeat(8000),
        "\u{00e9}".repeat(40),
    ];
    for id in &ids {
        for (m, body) in [("GET", None), ("PUT", Some("{}")), ("POST", Some(r#"{"uuid":1}"#)), ("DELETE", None)] {
            for level in ["hosts", "instances"] {
                let path = format!("/v1/{level}/{id}");
                let Some((code, text)) = raw_request(a.http, m, &path, body) else {
                    panic!("{m} {path:.60}: connection closed without an answer");
                };
                if !id.is_ascii() {
                    // Raw non-ASCII in the request line is not HTTP: the
                    // HTTP gate refuses it before the API sees it.
                    assert_eq!(code, 400, "{m} {path:.60}: {text}");
                    assert!(text.contains("malformed request line"), "{text}");
                    continue;
                }
                // Spec agent §4 I7 and H5: a PUT on an instance and a DELETE of a
                // host do nothing at all and answer 200 and 204 whatever the id.
                match (m, level) {
                    ("PUT", "instances") => assert_eq!(code, 200, "{text}"),
                    ("DELETE", "hosts") => assert_eq!(code, 204, "{text}"),
                    _ => {}
                }
                if code < 300 {
                    continue;
                }
                assert!((400..500).contains(&code), "{m} {level}/{id:.40}: {code} {text}");
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
                assert!(v.get("reason").is_some() || v.get("status").is_some(), "{text}");
            }
        }
    }
    let (code, _) = http_request(a.http, "GET", &format!("/v1/hosts/{HOST_UUID}"), None, &[]);
    assert_eq!(code, 200, "guestAgent stopped answering");
    // Nothing was created under any of those names.
    let state = std::fs::read_to_string(cfg.dir.join("state/agent-state.json")).unwrap();
    assert!(!state.contains("passwd") && !state.contains("xxxxxxxx"), "{state}");
    assert!(a.stop().success(), "guestAgent did not exit cleanly");
}

/// 16 clients stall in the middle of a request head or body (8 of each);
/// the VIM's requests are still answered, while the stalled clients are
/// still waiting (their 10 s deadline has not come), which shows that they
/// do not hold the API's handlers. Before the HTTP gate, 4 of them were
/// enough to keep every VIM request waiting until they gave up.
#[test]
fn rel_http_stalled_clients_do_not_starve_the_vim() {
    let gs = FakeUdp::new();
    let cfg = AgentCfg::new("relslow").host("compute-0", HOST_UUID, gs.port());
    let mut a = start(&cfg);
    let mut stalled = Vec::new();
    for i in 0..16 {
        let mut s = TcpStream::connect(("127.0.0.1", a.http)).unwrap();
        let part = if i % 2 == 0 {
            format!("PUT /v1/hosts/{HOST_UUID}/enable HTTP/1.1\r\nUser-Agent: vim/1.0\r\nContent-Length: 60\r\n\r\n{{\"hostname\"")
        } else {
            "GET /v1/hosts/ HTTP/1.1\r\nHost: loc".to_string()
        };
        s.write_all(part.as_bytes()).unwrap();
        stalled.push(s);
    }
    for _ in 0..5 {
        let (code, body) =
            http_request(a.http, "GET", &format!("/v1/hosts/{HOST_UUID}"), None, &[("User-Agent", "vim/1.0")]);
        assert_eq!(code, 200, "{body}");
    }
    for mut s in stalled {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        use std::io::Read;
        assert_eq!(
            s.read(&mut b).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "a stalled client was answered (or closed) before the VIM's requests were"
        );
    }
    assert!(a.stop().success(), "guestAgent did not exit cleanly");
}
