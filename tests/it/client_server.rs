//! The real guest-client against the real guestServer: the client listens
//! where QEMU's socket would be (`--listen`), guestServer discovers and
//! connects to it, and a fake guestAgent watches the events. Covers init,
//! challenges, an unhealthy health script, vote accept and reject through
//! the event script, and a guestServer restart (kill -9) with recovery.

use std::process::Command;
use std::time::Duration;

use guest_heartbeat::wire::envelope::cmd;

use crate::support::*;
use crate::util::{script, Proc};

const UUID_N: u32 = 4242;

fn start_client(dir: &TestDir, channels: &std::path::Path) -> Proc {
    let sick = dir.path("sick");
    let veto = dir.path("veto");
    script(
        &dir.path("health.sh"),
        &format!("if [ -e {} ]; then echo \"disk full\"; exit 1; fi\nexit 0", sick.display()),
    );
    script(
        &dir.path("event.sh"),
        &format!("if [ -e {} ]; then echo \"no $1 $2\"; exit 1; fi\necho \"ok $1 $2\"; exit 0", veto.display()),
    );
    let conf = dir.path("guest.conf");
    std::fs::write(
        &conf,
        format!(
            "HB_INTERVAL=400\nHB_INIT_RETRY=1000\nVOTE=4\nSHUTDOWN_NOTICE=4\nCORRECTIVE_ACTION=reboot\n\
             HEALTH_CHECK_INTERVAL=1\nHEALTH_CHECK_SCRIPT={}\nEVENT_NOTIFICATION_SCRIPT={}\n",
            dir.path("health.sh").display(),
            dir.path("event.sh").display()
        ),
    )
    .unwrap();
    let device = channels.join(format!("cgcs.heartbeat.{}.sock", uuid(UUID_N)));
    Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_guest-client"))
            .arg("--device")
            .arg(&device)
            .arg("--listen")
            .args(["--name", "real-vm", "-f", "--fail-delay", "0"])
            .arg("--config")
            .arg(&conf)
            .arg("--api-socket")
            .arg(dir.path("api.sock"))
            .stderr(crate::support::child_stderr()),
    )
}

fn vote(agent: &FakeAgent, server: &Server) -> serde_json::Value {
    agent.send(
        server.udp,
        cmd::VOTE_INST,
        &format!(r#"{{"source":"127.0.0.1","uuid":"{}","event":"stop"}}"#, uuid(UUID_N)),
    );
    agent.expect(cmd::VOTE_NOTIFY, WAIT, |_| true).json
}

#[test]
fn guest_client_heartbeats_reports_ill_health_votes_and_survives_a_server_restart() {
    let dir = TestDir::new("c2s");
    let agent = FakeAgent::new();
    let port = free_udp_port();
    let mut server = Server::start_on(&dir, &agent, ServerOpts::default(), port);
    agent.expect(cmd::MONITOR_READY, WAIT, |_| true);
    agent.enable(server.udp, &uuid(UUID_N));
    let _client = start_client(&dir, &server.channels);

    // init -> init_ack -> challenges -> RUNNING with what the client announced (+1 s).
    let running = agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
    assert_eq!(running.json["uuid"], uuid(UUID_N).as_str());
    assert_eq!(running.json["repair-action"], "reboot");
    assert_eq!(running.json["vote-to"], "5");
    assert_eq!(running.json["shutdown-to"], "5");
    assert_eq!(running.json["reporting"], "enabled");

    // Vote accepted, then rejected, through the event script.
    let v = vote(&agent, &server);
    assert_eq!((v["vote"].as_str(), v["event-type"].as_str()), (Some("accept"), Some("stop")), "{v}");
    assert_eq!(v["reason"], "ok revocable stop ");
    std::fs::write(dir.path("veto"), "").unwrap();
    let v = vote(&agent, &server);
    assert_eq!(v["vote"], "reject", "{v}");
    assert_eq!(v["reason"], "no revocable stop ");

    // The health script turns unhealthy: ILLHEALTH with the configured action.
    std::fs::write(dir.path("sick"), "").unwrap();
    let ill = agent.expect(cmd::HEARTBEAT_ILLHEALTH, WAIT, |_| true);
    assert_eq!(ill.json["repair-action"], "reboot");
    std::fs::remove_file(dir.path("sick")).unwrap();

    // kill -9 guestServer and start it again on the same state: the client
    // sees the host go and come back, re-inits, and no LOSS is reported.
    server.kill9();
    agent.drain(Duration::from_millis(20));
    let server = Server::start_on(&dir, &agent, ServerOpts::default(), port);
    agent.expect(cmd::MONITOR_READY, WAIT, |_| true);
    let recovered = wait_for(Duration::from_secs(15), || {
        agent.send(server.udp, cmd::QRY_INST, r#"{"source":"127.0.0.1"}"#);
        let q = agent.expect(cmd::QRY_INST, WAIT, |_| true);
        assert_eq!(q.json["reporting"], "enabled");
        (q.json["heartbeating"] == "enabled").then_some(())
    });
    assert!(recovered.is_some(), "heartbeating did not resume after the restart");
    // It keeps heartbeating: one more vote round-trip proves the channel is live.
    std::fs::remove_file(dir.path("veto")).unwrap();
    let v = vote(&agent, &server);
    assert_eq!(v["vote"], "accept", "{v}");
    let later = agent.drain(Duration::from_millis(1500));
    assert!(later.iter().all(|g| g.cmd != cmd::HEARTBEAT_LOSS && g.cmd != cmd::HEARTBEAT_STOPPED), "{later:?}");
}
