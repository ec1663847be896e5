//! guest-bench smoke run: tiny cases, short windows; checks that the JSON
//! result has its shape. Speed targets live in docs/PERFORMANCE.md, never
//! in tests: nothing here asserts on a timing figure.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{wait_for, TestDir};

#[test]
fn quick_run_writes_a_result_with_every_field() {
    let dir = TestDir::new("bench");
    let out = dir.path("result.json");
    // --quick first: its short agent case; the flags after it override the rest.
    let mut child = Command::new(env!("CARGO_BIN_EXE_guest-bench"))
        .args(["--quick", "--cases", "0:400,3:400", "--window", "2", "--settle", "0.2", "--silent", "1", "--no-doc"])
        .arg("--out")
        .arg(&out)
        .arg("--server")
        .arg(env!("CARGO_BIN_EXE_guestServer"))
        .arg("--scratch")
        .arg(dir.path("s"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_for(Duration::from_secs(90), || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("guest-bench did not finish within 90 s");
    }
    assert!(status.unwrap().success());

    let r: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for key in ["machine", "load_avg_start", "load_avg_end", "command", "server", "agent_note"] {
        assert!(r.get(key).is_some(), "missing {key}");
    }
    assert!(r["machine"]["cores"].as_u64().unwrap() >= 1);
    let agent = &r["agent"];
    for key in
        ["achieved_rate_per_sec", "requests", "errors", "events_sent", "events_delivered", "agent_cpu_pct_of_core"]
    {
        assert!(agent.get(key).is_some(), "agent is missing {key}");
    }
    for key in ["n", "p50_ms", "p99_ms", "max_ms"] {
        assert!(agent["api_latency"].get(key).is_some() && agent["event_latency"].get(key).is_some());
    }
    let cases = r["server"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        for key in [
            "cpu_pct_of_core",
            "sched_cpu_pct_of_core",
            "rounds",
            "rss_kib",
            "threads",
            "voluntary_ctxt_per_sec",
            "runqueue_wait_ms_per_sec",
            "detection",
            "jitter",
            "daemon_misses",
            "load_avg_start",
        ] {
            assert!(c.get(key).is_some(), "case is missing {key}");
        }
        for key in ["n", "p50_ms", "p99_ms", "max_ms"] {
            assert!(c["detection"].get(key).is_some() && c["jitter"].get(key).is_some());
        }
    }
    assert_eq!(cases[0]["guests"], 0);
    assert_eq!(cases[1]["guests"], 3);
    // The three guests heartbeated and the silenced one was declared lost.
    assert!(cases[1]["rounds"].as_u64().unwrap() > 0);
    assert_eq!(cases[1]["detection"]["n"].as_u64().unwrap() + cases[1]["detection_missing"].as_u64().unwrap(), 1);
}
