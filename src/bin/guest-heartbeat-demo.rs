//! guest-heartbeat-demo: a complete local deployment on loopback (guestAgent,
//! two guestServers, simulated guests, a VIM stand-in) with a live timeline.
//! Exits 0 when the timeline showed heartbeats, a miss, the loss alarm, the
//! ill-health alarm and a rejected vote; 1 otherwise; 2 on a bad command line.

use std::process::ExitCode;
use std::time::Duration;

use guest_heartbeat::demo::{run, Options};

const HELP: &str = "\
guest-heartbeat-demo: run guestAgent, two guestServers, six simulated guests
and a VIM stand-in on loopback (temp dir, no root, no libvirt) and print what
happens: heartbeats, an unhealthy guest, a hung guest (miss, loss, alarm), a
rejected and an accepted vote. Ctrl-C stops early; everything is removed.

Usage: guest-heartbeat-demo [--duration SECS (default 20)] [--help]
";

fn main() -> ExitCode {
    let mut duration = Duration::from_secs(20);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            "--duration" => match args.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(s) => duration = Duration::from_secs(s),
                None => {
                    eprintln!("guest-heartbeat-demo: --duration needs a number of seconds");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("guest-heartbeat-demo: unknown option {other} (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (sig_tx, sig_rx) = crossbeam_channel::bounded::<i32>(4);
    let signals = gh_threads::signals::spawn_signals(&[libc::SIGINT, libc::SIGTERM], sig_tx, |s| s, |_| 0);
    if let Ok(_handle) = &signals {
        std::thread::spawn(move || {
            if sig_rx.recv().is_ok() {
                let _ = stop_tx.send(());
            }
        });
    }
    match run(&Options { duration }, &stop_rx) {
        Ok(outcome) => {
            println!(
                "\nsummary: heartbeating {}, miss {}, loss alarm {}, ill-health alarm {}, vote rejected {}",
                yes(outcome.heartbeating),
                yes(outcome.miss),
                yes(outcome.loss_alarm),
                yes(outcome.unhealthy_alarm),
                yes(outcome.reject)
            );
            if outcome.all() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("guest-heartbeat-demo: {e}");
            ExitCode::from(1)
        }
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}
