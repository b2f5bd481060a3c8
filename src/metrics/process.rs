//! The process's own figures under the names every Prometheus exporter uses (`process_*`), read
//! from `/proc/self` at scrape time: CPU seconds, resident and virtual memory, open and maximum
//! file descriptors, threads and start time. Elsewhere than Linux there are none.

use prometheus::{
    Counter, Gauge, Opts,
    core::{Collector, Desc, Describer as _},
    proto::MetricFamily,
};

/// Clock ticks per second of the times in `/proc/<pid>/stat`: `USER_HZ`, which Linux fixes at
/// 100 for user space on every architecture.
const USER_HZ: f64 = 100.0;

pub(super) struct ProcessCollector {
    descs: Vec<Desc>,
    /// When the process started, in seconds since the Unix epoch.
    started: f64,
}

/// One reading of `/proc/self`; a file that cannot be read leaves its figures out.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: Option<f64>,
    threads: Option<f64>,
    virtual_bytes: Option<f64>,
    resident_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

const FIGURES: [(&str, &str); 7] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds",
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
    ),
    ("process_open_fds", "Number of open file descriptors"),
    ("process_max_fds", "Maximum number of open file descriptors"),
    ("process_threads", "Number of OS threads in the process"),
    (
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
    ),
];

impl ProcessCollector {
    pub(super) fn new() -> Self {
        let descs = FIGURES
            .iter()
            .filter_map(|(name, help)| Opts::new(*name, *help).describe().ok())
            .collect();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
            - read_uptime_of_self().unwrap_or(0.0);
        Self { descs, started }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if !cfg!(target_os = "linux") {
            return Vec::new();
        }
        let reading = read();
        let mut families = Vec::new();
        let mut gauge = |name: &str, help: &str, value: Option<f64>| {
            if let (Some(value), Ok(g)) = (value, Gauge::new(name, help)) {
                g.set(value);
                families.extend(g.collect());
            }
        };
        let help = |name: &str| {
            FIGURES
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, h)| *h)
        };
        for (name, value) in [
            ("process_resident_memory_bytes", reading.resident_bytes),
            ("process_virtual_memory_bytes", reading.virtual_bytes),
            ("process_open_fds", reading.open_fds),
            ("process_max_fds", reading.max_fds),
            ("process_threads", reading.threads),
            ("process_start_time_seconds", Some(self.started)),
        ] {
            gauge(name, help(name), value);
        }
        if let Some(seconds) = reading.cpu_seconds
            && let Ok(c) = Counter::new(
                "process_cpu_seconds_total",
                help("process_cpu_seconds_total"),
            )
        {
            c.inc_by(seconds);
            families.extend(c.collect());
        }
        families
    }
}

fn read() -> Reading {
    let mut reading = std::fs::read_to_string("/proc/self/stat")
        .map(|s| parse_stat(&s))
        .unwrap_or_default();
    reading.resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_kib(&s, "VmRSS:"))
        .map(|kib| kib * 1024.0);
    reading.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count() as f64);
    reading.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| max_open_files(&s));
    reading
}

/// CPU time, threads and virtual size from `/proc/self/stat`. The command name (field 2) may
/// hold spaces and parentheses: the fields are counted from its last `)`.
fn parse_stat(stat: &str) -> Reading {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Reading::default();
    };
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Reading {
        cpu_seconds: field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) / USER_HZ),
        threads: field(20),
        virtual_bytes: field(23),
        ..Reading::default()
    }
}

/// A `kB` figure of `/proc/self/status`.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// How long ago this process started, from its start tick (`/proc/self/stat` field 22) and
/// the system's uptime.
fn read_uptime_of_self() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let started_ticks: f64 = rest.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((uptime - started_ticks / USER_HZ).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as `/proc/<pid>/stat` may hold.
        let stat = "4242 (my (odd) bin) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 150 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let reading = parse_stat(stat);
        assert_eq!(reading.cpu_seconds, Some(4.0));
        assert_eq!(reading.threads, Some(7.0));
        assert_eq!(reading.virtual_bytes, Some(104_857_600.0));
        assert_eq!(parse_stat("garbage"), Reading::default());
    }

    #[test]
    fn status_and_limits_are_read_by_key() {
        let status = "Name:\tkeel\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048.0));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        let families = ProcessCollector::new().collect();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_threads",
            "process_start_time_seconds",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }
}
