//! guest-sim: plays QEMU and N guests for guestServer (see `sim`). This file
//! is the main thread: parse the command line, start the simulation, wait
//! for SIGTERM/SIGINT or `--duration`, write the JSON report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use guest_heartbeat::sim::{Behaviour, GuestPlan, Sim, SimConfig, Vote};
use guest_heartbeat::wire::vocab::CorrectiveAction;

const HELP: &str = "\
guest-sim: one process playing QEMU and N heartbeat guests

Creates a listening UNIX socket DIR/cgcs.heartbeat.<uuid>.sock per guest
(exactly what QEMU offers guestServer) and speaks the guest protocol on every
connection accepted there. Uuids are deterministic from --seed and the guest
index. Prints `<index> <uuid>` per guest on stderr at start, and a JSON
report of per-guest counters at exit (SIGTERM, SIGINT or --duration).

USAGE: guest-sim --dir DIR [OPTIONS]

  --dir DIR                  socket directory (created if missing)
  --count N                  number of guests [default: 1]
  --seed S                   uuid and id seed [default: 1]
  --interval-ms I            heartbeat_interval_ms announced in init [default: 1000]
  --init-retry-ms MS         init resend period until acked [default: 5000]
  --duration SECS            stop after SECS (default: until a signal)
  --report FILE              write the JSON report there instead of stdout
  --silent-at IDX:SECS       guest IDX stops answering at SECS
  --unhealthy IDX:SECS:ACT   guest IDX reports unhealthy with ACT
                             (reboot, stop, log, none) from SECS on
  --slow IDX:MS              guest IDX answers challenges after MS
  --reject IDX               guest IDX votes reject on revocable notifies
  --ignore-votes IDX         guest IDX never answers notifies
  --garbage IDX              guest IDX sends a garbage and a 5000-byte line
                             before every challenge response
  --flap IDX:SECS            every SECS guest IDX closes its connection and
                             removes its socket for --flap-down seconds
  --flap-down SECS           [default: 2]
  -h, --help                 this text
";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{what}: bad number {s:?}"))
}

fn parts<'a>(v: &'a str, n: usize, what: &str) -> Result<Vec<&'a str>, String> {
    let p: Vec<&str> = v.split(':').collect();
    if p.len() != n {
        return Err(format!("{what}: expected {n} fields separated by ':' in {v:?}"));
    }
    Ok(p)
}

fn plan(plans: &mut Vec<(usize, GuestPlan)>, idx: usize) -> &mut GuestPlan {
    if let Some(i) = plans.iter().position(|(j, _)| *j == idx) {
        return &mut plans[i].1;
    }
    plans.push((idx, GuestPlan::default()));
    let last = plans.len() - 1;
    &mut plans[last].1
}

fn run() -> Result<(), String> {
    let mut cfg = SimConfig::new(PathBuf::new(), 1);
    let mut dir = None;
    let mut duration = None;
    let mut report = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            print!("{HELP}");
            return Ok(());
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value\n\n{HELP}"))?;
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(v)),
            "--count" => cfg.count = num(&v, &flag)?,
            "--seed" => cfg.seed = num(&v, &flag)?,
            "--interval-ms" => cfg.interval_ms = num(&v, &flag)?,
            "--init-retry-ms" => cfg.init_retry = Duration::from_millis(num(&v, &flag)?),
            "--duration" => duration = Some(Duration::from_secs_f64(num(&v, &flag)?)),
            "--report" => report = Some(PathBuf::from(v)),
            "--flap-down" => cfg.flap_down = Duration::from_secs_f64(num(&v, &flag)?),
            "--silent-at" => {
                let p = parts(&v, 2, &flag)?;
                let at = Duration::from_secs_f64(num(p[1], &flag)?);
                plan(&mut cfg.plans, num(p[0], &flag)?).schedule.push((at, Behaviour::Silent));
            }
            "--unhealthy" => {
                let p = parts(&v, 3, &flag)?;
                let at = Duration::from_secs_f64(num(p[1], &flag)?);
                let action = CorrectiveAction::parse(p[2]);
                if action == CorrectiveAction::Unknown {
                    return Err(format!("{flag}: unknown action {:?}", p[2]));
                }
                plan(&mut cfg.plans, num(p[0], &flag)?).schedule.push((at, Behaviour::Unhealthy(action)));
            }
            "--slow" => {
                let p = parts(&v, 2, &flag)?;
                let d = Duration::from_millis(num(p[1], &flag)?);
                plan(&mut cfg.plans, num(p[0], &flag)?).behaviour = Behaviour::Slow(d);
            }
            "--reject" => plan(&mut cfg.plans, num(&v, &flag)?).vote = Vote::Reject,
            "--ignore-votes" => plan(&mut cfg.plans, num(&v, &flag)?).vote = Vote::Ignore,
            "--garbage" => plan(&mut cfg.plans, num(&v, &flag)?).behaviour = Behaviour::Garbage,
            "--flap" => {
                let p = parts(&v, 2, &flag)?;
                let every = Duration::from_secs_f64(num(p[1], &flag)?);
                plan(&mut cfg.plans, num(p[0], &flag)?).flap_every = Some(every);
            }
            other => return Err(format!("unknown argument {other}\n\n{HELP}")),
        }
    }
    cfg.dir = dir.ok_or_else(|| format!("--dir is required\n\n{HELP}"))?;
    for (_, p) in &mut cfg.plans {
        p.schedule.sort_by_key(|(at, _)| *at);
    }
    // Handlers first, so a signal during start-up is not lost.
    let signals =
        signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT]).map_err(|e| format!("signals: {e}"))?;
    let sim = Sim::start(cfg).map_err(|e| e.to_string())?;
    for i in 0..sim.count() {
        eprintln!("{i} {}", sim.uuid(i));
    }
    wait(signals, duration);
    let r = sim.stop();
    let json = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
    match report {
        Some(p) => std::fs::write(&p, json + "\n").map_err(|e| format!("{}: {e}", p.display()))?,
        None => println!("{json}"),
    }
    Ok(())
}

/// Blocks until SIGTERM/SIGINT or the duration elapses.
fn wait(mut signals: signal_hook::iterator::Signals, duration: Option<Duration>) {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let handle = signals.handle();
    let t = std::thread::Builder::new().name("signals".into()).spawn(move || {
        if signals.forever().next().is_some() {
            let _ = tx.send(());
        }
    });
    match duration {
        Some(d) => {
            let _ = rx.recv_timeout(d);
        }
        None => {
            let _ = rx.recv();
        }
    }
    handle.close();
    if let Ok(t) = t {
        let _ = t.join();
    }
}
