//! guestServer counters, owned by the dispatcher and rendered in the
//! Prometheus text format for `GET /metrics`.
//!
//! Plain integers: only the dispatcher thread touches them (no atomics).

use std::fmt::Write;

/// Monotonic counters (Prometheus `counter`s).
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub guest_msgs: u64,
    pub guest_nacked: u64,
    pub guest_malformed: u64,
    pub guest_too_long: u64,
    pub guest_rate_limited: u64,
    pub guest_sent: u64,
    pub guest_send_failed: u64,
    pub guest_send_skipped: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub channel_closed: u64,
    pub instances_added: u64,
    pub instances_removed: u64,
    pub rescans: u64,
    pub udp_commands: u64,
    pub udp_rejected_source: u64,
    pub udp_malformed: u64,
    pub udp_auth_failed: u64,
    pub udp_sent: u64,
    pub udp_unsent: u64,
    pub actions: u64,
    pub logs_suppressed: u64,
    pub state_saves: u64,
    pub events_acked: u64,
    pub events_retransmitted: u64,
    pub events_unacked: u64,
}

/// Gauges computed when rendering.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub instances: usize,
    pub connected: usize,
    pub heartbeating: usize,
    pub failed: usize,
    pub timers: usize,
    pub host_reporting: bool,
    pub uptime_secs: u64,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP guestserver_{name} {help}\n# TYPE guestserver_{name} gauge\nguestserver_{name} {v}"
            );
        };
        gauge("instances", "Known instances.", g.instances as u64);
        gauge("instances_connected", "Instances with an open channel.", g.connected as u64);
        gauge("instances_heartbeating", "Instances heartbeating.", g.heartbeating as u64);
        gauge("instances_failed", "Instances with a declared loss not yet recovered.", g.failed as u64);
        gauge("timers", "Armed timers.", g.timers as u64);
        gauge("host_reporting", "Host-level reporting gate (1 = enabled).", u64::from(g.host_reporting));
        gauge("uptime_seconds", "Seconds since start.", g.uptime_secs);
        let counters: [(&str, &str, u64); 26] = [
            ("guest_messages_total", "Well-formed messages received from guests.", self.guest_msgs),
            ("guest_nacked_total", "Guest messages answered with a nack.", self.guest_nacked),
            ("guest_malformed_total", "Guest lines dropped as malformed.", self.guest_malformed),
            ("guest_too_long_total", "Guest lines discarded for length.", self.guest_too_long),
            ("guest_rate_limited_total", "Guest lines dropped by rate limits.", self.guest_rate_limited),
            ("guest_sent_total", "Messages written to guests.", self.guest_sent),
            ("guest_send_failed_total", "Writes to guests that failed.", self.guest_send_failed),
            ("guest_send_skipped_total", "Messages not sent: channel not connected.", self.guest_send_skipped),
            ("connects_total", "Channel connects.", self.connects),
            ("connect_failures_total", "Failed channel connect attempts.", self.connect_failures),
            ("channel_closed_total", "Channels closed by the peer.", self.channel_closed),
            ("instances_added_total", "Instances created.", self.instances_added),
            ("instances_removed_total", "Instances deleted.", self.instances_removed),
            ("rescans_total", "Channel directory scans.", self.rescans),
            ("udp_commands_total", "Commands received from guestAgent.", self.udp_commands),
            ("udp_rejected_source_total", "Datagrams dropped: sender not allowed.", self.udp_rejected_source),
            ("udp_malformed_total", "Datagrams dropped: not an envelope.", self.udp_malformed),
            ("udp_auth_failed_total", "Datagrams dropped: HMAC tag missing or wrong.", self.udp_auth_failed),
            ("udp_sent_total", "Datagrams sent to guestAgent.", self.udp_sent),
            ("udp_unsent_total", "Datagrams that could not be sent.", self.udp_unsent),
            ("actions_total", "Votes and notifications started.", self.actions),
            ("logs_suppressed_total", "Guest-triggered log lines suppressed.", self.logs_suppressed),
            ("state_saves_total", "State file snapshots written.", self.state_saves),
            ("events_acked_total", "Failure and vote events acknowledged by guestAgent.", self.events_acked),
            ("events_retransmitted_total", "Failure and vote events sent again.", self.events_retransmitted),
            (
                "events_unacked_total",
                "Events dropped unacknowledged (retries or queue exhausted).",
                self.events_unacked,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP guestserver_{name} {help}\n# TYPE guestserver_{name} counter\nguestserver_{name} {v}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics { guest_msgs: 7, ..Default::default() };
        let text = m.render(&Gauges { instances: 3, host_reporting: true, ..Default::default() });
        assert!(text.contains("# TYPE guestserver_instances gauge\nguestserver_instances 3\n"));
        assert!(text.contains("guestserver_guest_messages_total 7\n"));
        assert!(text.contains("guestserver_host_reporting 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("guestserver_"));
            value.parse::<u64>().unwrap();
        }
    }
}
