//! `GET /metrics` in the Prometheus text format. Domain figures (hosts,
//! instances by state, the outbox) are rendered by the dispatcher from
//! `State`; per-endpoint request counts are kept by the HTTP threads in
//! `HttpCounters` (the one piece of shared state besides logging, as the
//! house rules allow for metrics) and appended by the handler.

use std::collections::BTreeMap;
use std::fmt::Write;

use parking_lot::Mutex;

use super::state::State;
use crate::wire::payload::enabled_str;

/// Requests by (endpoint, method, status).
#[derive(Debug, Default)]
pub struct HttpCounters {
    counts: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
}

impl HttpCounters {
    pub fn count(&self, endpoint: &'static str, method: &str, status: u16) {
        *self.counts.lock().entry((endpoint, method.to_string(), status)).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP guestagent_http_requests_total VIM command API requests.\n# TYPE guestagent_http_requests_total counter\n",
        );
        for ((endpoint, method, status), n) in self.counts.lock().iter() {
            let _ = writeln!(
                out,
                "guestagent_http_requests_total{{endpoint=\"{endpoint}\",method=\"{method}\",code=\"{status}\"}} {n}"
            );
        }
        out
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// The dispatcher's part.
pub fn render(s: &State) -> String {
    let mut by_state: BTreeMap<(bool, bool), u64> = BTreeMap::new();
    for i in s.inv.instances() {
        *by_state.entry((i.reporting, i.heartbeating)).or_default() += 1;
    }
    for r in [false, true] {
        for h in [false, true] {
            by_state.entry((r, h)).or_default();
        }
    }
    let mut out = String::new();
    let one = |v: u64| vec![(String::new(), v)];
    metric(&mut out, "guestagent_hosts", "gauge", "Hosts in the inventory.", &one(s.inv.host_count() as u64));
    let samples: Vec<(String, u64)> = by_state
        .iter()
        .map(|((r, h), n)| (format!("{{reporting=\"{}\",heartbeating=\"{}\"}}", enabled_str(*r), enabled_str(*h)), *n))
        .collect();
    metric(&mut out, "guestagent_instances", "gauge", "Instances by reporting and heartbeating state.", &samples);
    let st = s.outbox.stats;
    metric(&mut out, "guestagent_vim_events_sent_total", "counter", "VIM events delivered.", &one(st.delivered));
    metric(
        &mut out,
        "guestagent_vim_events_retried_total",
        "counter",
        "VIM event attempts that will be retried.",
        &one(st.retried),
    );
    metric(
        &mut out,
        "guestagent_vim_events_rejected_total",
        "counter",
        "VIM events dropped after a 4xx.",
        &one(st.rejected),
    );
    metric(
        &mut out,
        "guestagent_vim_events_overflowed_total",
        "counter",
        "Service events dropped because the outbox was full.",
        &one(st.overflowed),
    );
    metric(
        &mut out,
        "guestagent_vim_events_pending",
        "gauge",
        "VIM events in the outbox.",
        &one(s.outbox.len() as u64),
    );
    let c = s.counters;
    metric(
        &mut out,
        "guestagent_datagrams_received_total",
        "counter",
        "guestServer datagrams handled.",
        &one(c.datagrams_in),
    );
    metric(
        &mut out,
        "guestagent_datagrams_bad_total",
        "counter",
        "Datagrams that could not be decoded.",
        &one(c.bad_datagrams),
    );
    metric(&mut out, "guestagent_commands_sent_total", "counter", "Commands sent to guestServers.", &one(c.udp_sent));
    metric(
        &mut out,
        "guestagent_command_send_errors_total",
        "counter",
        "Commands that could not be sent.",
        &one(c.udp_send_errors),
    );
    metric(&mut out, "guestagent_audits_total", "counter", "State query audit passes.", &one(c.audits));
    let acked = one(c.events_acked);
    metric(&mut out, "guestagent_events_acked_total", "counter", "guestServer events acknowledged.", &acked);
    let dup = one(c.events_duplicate);
    metric(&mut out, "guestagent_events_duplicate_total", "counter", "Retransmitted events not forwarded.", &dup);
    let refused = one(c.events_refused);
    metric(
        &mut out,
        "guestagent_events_refused_total",
        "counter",
        "guestServer events not taken: VIM outbox full of failure and vote events.",
        &refused,
    );
    let withheld = one(c.acks_withheld);
    metric(
        &mut out,
        "guestagent_acks_withheld_total",
        "counter",
        "Acknowledgements withheld: the outbox file could not be written.",
        &withheld,
    );
    let rej = one(c.rejected_source);
    metric(
        &mut out,
        "guestagent_udp_rejected_source_total",
        "counter",
        "guestServer datagrams from unknown addresses.",
        &rej,
    );
    metric(
        &mut out,
        "guestagent_udp_auth_failed_total",
        "counter",
        "guestServer datagrams dropped: HMAC tag missing or wrong.",
        &one(c.auth_failed),
    );
    out
}
