//! guest-bench: runs guestServer against guest-sim and a UDP sink, writes a
//! JSON result and the table in docs/PERFORMANCE.md. This file is the main
//! thread: parse the command line, run the cases in order, write results.
//! Exit codes: 0 done, 1 a case failed, 2 bad command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guest_heartbeat::bench::agent::{self, AgentSpec};
use guest_heartbeat::bench::case::{self, CaseSpec};
use guest_heartbeat::bench::machine::{LoadAvg, Machine};
use guest_heartbeat::bench::report::Report;

const HELP: &str = "\
guest-bench: measure guestServer with N simulated guests

USAGE: guest-bench [OPTIONS]

  --quick              ~30 s smoke run: cases 0:1000,20:400, 6 s windows,
                       3 s of VIM-API load, 20 agent instances
  --cases LIST         N:I pairs, comma separated
                       [default: 0:1000,100:1000,1000:1000,4000:1000,0:400,100:400,1000:400,4000:400]
  --window SECS        measurement window per case [default: 20]
  --settle SECS        pause between warm-up and window [default: 2]
  --silent K           guests silenced per case [default: N/5, 1..200]
  --no-agent           skip the guestAgent case
  --agent-rate R       VIM-API requests per second, all clients together [default: 2000]
  --agent-clients C    concurrent VIM-API clients [default: 50]
  --sim-nice N         nice value of the simulated guests' threads [default: 10]
  --pin                pin guestServer to CPU 0 and the sim to the others
  --server PATH        guestServer binary [default: next to this binary]
  --out FILE           JSON result [default: guest-bench.json]
  --doc FILE           Markdown file whose table is replaced [default: docs/PERFORMANCE.md]
  --no-doc             do not touch the Markdown file
  --scratch DIR        scratch directory, kept afterwards [default: $TMPDIR/ghb<pid>, removed]
  -h, --help           this text
";

struct Opts {
    cases: Vec<(usize, u32)>,
    window: Duration,
    settle: Duration,
    silent: Option<usize>,
    sim_nice: i32,
    pin: bool,
    agent: bool,
    agent_rate: u32,
    agent_clients: usize,
    agent_window: Duration,
    agent_instances: usize,
    server: Option<PathBuf>,
    out: PathBuf,
    doc: Option<PathBuf>,
    scratch: Option<PathBuf>,
}

fn parse_cases(v: &str) -> Result<Vec<(usize, u32)>, String> {
    v.split(',')
        .map(|c| {
            let (n, i) = c.split_once(':').ok_or_else(|| format!("--cases: {c:?} is not N:I"))?;
            let n = n.trim().parse().map_err(|_| format!("--cases: bad N in {c:?}"))?;
            let i = i.trim().parse().map_err(|_| format!("--cases: bad I in {c:?}"))?;
            Ok((n, i))
        })
        .collect()
}

fn secs(v: &str, flag: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag}: bad number of seconds {v:?}"))
}

fn parse(args: Vec<String>) -> Result<Option<Opts>, String> {
    let mut o = Opts {
        cases: parse_cases("0:1000,100:1000,1000:1000,4000:1000,0:400,100:400,1000:400,4000:400")?,
        window: Duration::from_secs(20),
        settle: Duration::from_secs(2),
        silent: None,
        sim_nice: 10,
        pin: false,
        agent: true,
        agent_rate: 2000,
        agent_clients: 50,
        agent_window: Duration::from_secs(10),
        agent_instances: 100,
        server: None,
        out: PathBuf::from("guest-bench.json"),
        doc: Some(PathBuf::from("docs/PERFORMANCE.md")),
        scratch: None,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => {
                o.cases = parse_cases("0:1000,20:400")?;
                o.window = Duration::from_secs(6);
                o.settle = Duration::from_secs(1);
                o.agent_window = Duration::from_secs(3);
                o.agent_instances = 20;
                continue;
            }
            "--no-agent" => {
                o.agent = false;
                continue;
            }
            "--pin" => {
                o.pin = true;
                continue;
            }
            "--no-doc" => {
                o.doc = None;
                continue;
            }
            _ => {}
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cases" => o.cases = parse_cases(&v)?,
            "--window" => o.window = secs(&v, &flag)?,
            "--settle" => o.settle = secs(&v, &flag)?,
            "--silent" => o.silent = Some(v.parse().map_err(|_| format!("--silent: bad number {v:?}"))?),
            "--agent-rate" => o.agent_rate = v.parse().map_err(|_| format!("--agent-rate: bad number {v:?}"))?,
            "--agent-clients" => {
                o.agent_clients = v.parse().map_err(|_| format!("--agent-clients: bad number {v:?}"))?
            }
            "--sim-nice" => o.sim_nice = v.parse().map_err(|_| format!("--sim-nice: bad number {v:?}"))?,
            "--server" => o.server = Some(PathBuf::from(v)),
            "--out" => o.out = PathBuf::from(v),
            "--doc" => o.doc = Some(PathBuf::from(v)),
            "--scratch" => o.scratch = Some(PathBuf::from(v)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = std::iter::once("guest-bench".to_string()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
    let opts = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("guest-bench: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let server_bin = match opts
        .server
        .clone()
        .or_else(|| std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("guestServer"))))
    {
        Some(p) => p,
        None => {
            eprintln!("guest-bench: cannot locate guestServer; pass --server");
            return ExitCode::from(2);
        }
    };
    let scratch = case::scratch_dir(opts.scratch.as_deref());
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut report = Report {
        tool: "guest-bench",
        version: env!("CARGO_PKG_VERSION"),
        started_unix,
        machine: Machine::describe(),
        load_avg_start: LoadAvg::now(),
        load_avg_end: LoadAvg::default(),
        command,
        server: Vec::new(),
        agent: None,
        agent_note: "not measured in this run (--no-agent)".to_string(),
    };
    eprintln!("guest-bench: {}; load {:?}", report.machine.line(), report.load_avg_start);
    let mut failed = false;
    for &(guests, interval_ms) in &opts.cases {
        let spec = CaseSpec {
            guests,
            interval_ms,
            window: opts.window,
            settle: opts.settle,
            silent: opts.silent.unwrap_or((guests / 5).clamp(1, 200)).min(guests),
            server_bin: server_bin.clone(),
            scratch: scratch.clone(),
            sim_nice: opts.sim_nice,
            pin: opts.pin,
        };
        eprintln!("guest-bench: case N={guests} I={interval_ms} ms ...");
        match case::run(&spec) {
            Ok(r) => {
                eprintln!(
                    "guest-bench:   cpu {:.3} % core, {:?} µs/round, rss {} KiB, detect p99 {:.2} ms, jitter p99 {:.2} ms",
                    r.cpu_pct_of_core, r.cpu_us_per_round, r.rss_kib, r.detection.p99_ms, r.jitter.p99_ms
                );
                report.server.push(r);
            }
            Err(e) => {
                eprintln!("guest-bench: case N={guests} I={interval_ms} failed: {e}");
                failed = true;
            }
        }
    }
    if opts.agent {
        let spec = AgentSpec {
            agent_bin: agent::agent_bin_near(&server_bin),
            scratch: scratch.clone(),
            clients: opts.agent_clients,
            rate_per_sec: opts.agent_rate,
            window: opts.agent_window,
            instances: opts.agent_instances,
        };
        eprintln!("guest-bench: guestAgent case ...");
        match agent::run(&spec) {
            Ok(a) => {
                eprintln!(
                    "guest-bench:   {:.0} req/s, API p99 {:.2} ms, event p99 {:.2} ms",
                    a.achieved_rate_per_sec, a.api_latency.p99_ms, a.event_latency.p99_ms
                );
                report.agent = Some(a);
            }
            Err(e) => {
                eprintln!("guest-bench: guestAgent case failed: {e}");
                report.agent_note = format!("failed: {e}");
                failed = true;
            }
        }
    }
    if opts.scratch.is_none() {
        // Kept when given explicitly: the daemons' logs are in it.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    report.load_avg_end = LoadAvg::now();
    report.derive();
    if let Err(e) = report.write_json(&opts.out) {
        eprintln!("guest-bench: {e}");
        return ExitCode::from(1);
    }
    if let Some(doc) = &opts.doc {
        if let Err(e) = report.update_doc(doc) {
            eprintln!("guest-bench: {e}");
            return ExitCode::from(1);
        }
    }
    print!("{}", report.table());
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
