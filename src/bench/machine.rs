//! A description of the machine a run happened on (CPU, cores, memory,
//! kernel) and its load average, recorded next to every result because the
//! figures mean little without them. Main thread.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_mib: u64,
    pub kernel: String,
}

/// The 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_mib = super::procstat::status_field(&meminfo, "MemTotal:").unwrap_or(0) / 1024;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        Machine { cpu, cores, mem_mib, kernel }
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!("{}, {} cores, {} MiB, Linux {}", self.cpu, self.cores, self.mem_mib, self.kernel)
    }
}

impl LoadAvg {
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut it = text.split_whitespace().map(|v| v.parse::<f64>().unwrap_or(0.0));
        LoadAvg { one: it.next().unwrap_or(0.0), five: it.next().unwrap_or(0.0), fifteen: it.next().unwrap_or(0.0) }
    }
}
