//! guestServer with 200 guests at once: every one is discovered, connected
//! and heartbeating.

use std::collections::HashSet;

use guest_heartbeat::wire::envelope::cmd;

use crate::support::*;

#[test]
fn two_hundred_guests_all_heartbeat() {
    let dir = TestDir::new("scale");
    let agent = FakeAgent::new();
    let server = Server::start(&dir, &agent, ServerOpts::default());
    let mut guests: Vec<FakeGuest> = (1000..1200).map(|n| FakeGuest::listen(&server.channels, &uuid(n))).collect();
    let mut running = HashSet::new();
    for g in &mut guests {
        g.handshake(5000);
        // Drain as we go so the agent socket's buffer never overflows.
        while let Some(got) = agent.recv(std::time::Duration::from_millis(1)) {
            if got.cmd == cmd::HEARTBEAT_RUNNING {
                running.insert(got.json["uuid"].as_str().unwrap().to_string());
            }
        }
    }
    while running.len() < 200 {
        let got = agent.expect(cmd::HEARTBEAT_RUNNING, WAIT, |_| true);
        running.insert(got.json["uuid"].as_str().unwrap().to_string());
    }
    // A second round: every guest is challenged again.
    for g in &mut guests {
        let c = g.expect_challenge(WAIT);
        g.respond(c, "healthy", "reboot");
    }
}
