//! Latency summaries (nearest-rank percentiles over every recorded sample: no histogram,
//! no sampling) and CPU accounting from `/proc`, so each phase can say who used the cores.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

/// Every latency of a phase and the count of each outcome.
#[derive(Default)]
pub struct Outcomes {
    /// Latencies of the successful (2xx) answers.
    pub latencies: Vec<Duration>,
    /// Answers by status code, successes included.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection-level failures (reset, refused, hyper errors).
    pub transport_errors: u64,
    /// Latencies of the 503 answers: how fast excess work is shed.
    pub shed_latencies: Vec<Duration>,
}

impl Outcomes {
    pub fn merge(&mut self, other: Outcomes) {
        self.latencies.extend(other.latencies);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.shed_latencies.extend(other.shed_latencies);
    }

    /// Counts one answer and keeps its latency: 2xx in `latencies`, 503 in
    /// `shed_latencies`.
    pub fn record(&mut self, status: u16, latency: Duration) {
        *self.statuses.entry(status).or_default() += 1;
        if (200..300).contains(&status) {
            self.latencies.push(latency);
        } else if status == 503 {
            self.shed_latencies.push(latency);
        }
    }

    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Answers that were not 200, plus transport errors.
    pub fn non_200(&self) -> u64 {
        let others: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 200)
            .map(|(_, n)| n)
            .sum();
        others + self.transport_errors
    }

    pub fn describe_errors(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 200)
            .map(|(status, n)| format!("{n}×{status}"))
            .collect();
        if self.transport_errors > 0 {
            parts.push(format!("{}×transport", self.transport_errors));
        }
        if parts.is_empty() {
            "0".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// p50/p99/max of a set of latencies.
#[derive(Clone, Copy, Default)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn summarize(latencies: &mut [Duration]) -> Summary {
    if latencies.is_empty() {
        return Summary::default();
    }
    latencies.sort_unstable();
    let at = |p: f64| {
        // Nearest rank: the smallest sample with at least p of the samples at or below it.
        let rank = (p * latencies.len() as f64).ceil() as usize;
        latencies[rank.clamp(1, latencies.len()) - 1]
    };
    Summary {
        p50: at(0.50),
        p99: at(0.99),
        max: latencies[latencies.len() - 1],
    }
}

/// The median of `samples` (the lower middle one of an even count); `None` when empty.
pub fn median(samples: &mut [Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some(samples[(samples.len() - 1) / 2])
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ; 100 on every common Linux).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|hz| *hz > 0.0)
        .unwrap_or(100.0)
}

/// user + system ticks of one process (all its threads), from `/proc/<pid>/stat`.
fn process_ticks(pid: &str) -> Option<u64> {
    process_stat(pid).map(|(ticks, _)| ticks)
}

/// (user + system ticks, minor page faults) of one process, from `/proc/<pid>/stat`.
fn process_stat(pid: &str) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; minflt is field 10, utime field 14, stime field 15.
    let minflt: u64 = fields.get(7)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, minflt))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`…), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

/// `field` of a `/proc/<pid>/status` text: a line `Field:   1234 kB`.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let mut words = value.split_whitespace();
        let kib = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(kib)
    })
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Ticks of each process whose command name is `comm` (e.g. every PostgreSQL backend),
/// by pid.
fn ticks_by_name(comm: &str) -> BTreeMap<u32, u64> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| name.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| name.trim() == comm)
        })
        .filter_map(|pid| process_ticks(&pid.to_string()).map(|ticks| (pid, ticks)))
        .collect()
}

/// Ticks the processes of `now` used since `then`: a process absent from `then` started in
/// between and counts whole. Per process, so that backends other sessions close during the
/// window do not subtract their whole lifetime from the sum (the ticks of a process that
/// exits within the window are lost instead, a small undercount).
fn grown(now: &BTreeMap<u32, u64>, then: &BTreeMap<u32, u64>) -> u64 {
    now.iter()
        .map(|(pid, ticks)| ticks.saturating_sub(then.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// (busy, total) ticks of the whole machine, from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    let total: u64 = values.iter().take(8).sum();
    Some((total - idle, total))
}

/// CPU counters at one instant.
#[derive(Clone)]
pub struct CpuSnapshot {
    server: u64,
    server_faults: u64,
    postgres: BTreeMap<u32, u64>,
    redis: BTreeMap<u32, u64>,
    bench: u64,
    machine: (u64, u64),
    at: std::time::Instant,
}

/// Where the CPU went between two snapshots, in cores (1.0 = one core fully busy).
#[derive(Clone, Copy)]
pub struct CpuUse {
    /// Every server instance together.
    pub server: f64,
    /// Minor page faults of the server per second: Argon2 re-faulting its 19 MiB on every
    /// hash shows up here (~5 000 per hash).
    pub server_faults: f64,
    pub postgres: f64,
    pub redis: f64,
    pub bench: f64,
    pub machine_busy: f64,
    pub cores: f64,
}

impl CpuSnapshot {
    /// `server_pids`: every server instance, summed.
    pub fn take(server_pids: &[u32]) -> Self {
        let (server, server_faults) = server_pids
            .iter()
            .filter_map(|pid| process_stat(&pid.to_string()))
            .fold((0, 0), |(t, f), (ticks, faults)| (t + ticks, f + faults));
        Self {
            server,
            server_faults,
            postgres: ticks_by_name("postgres"),
            redis: ticks_by_name("redis-server"),
            bench: process_ticks("self").unwrap_or(0),
            machine: machine_ticks().unwrap_or((0, 0)),
            at: std::time::Instant::now(),
        }
    }

    pub fn since(&self, earlier: &CpuSnapshot, hz: f64) -> CpuUse {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let in_cores = |ticks: u64| ticks as f64 / hz / secs;
        let cores = |now: u64, then: u64| in_cores(now.saturating_sub(then));
        let busy = self.machine.0.saturating_sub(earlier.machine.0) as f64;
        let total = self.machine.1.saturating_sub(earlier.machine.1) as f64;
        let ncores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        CpuUse {
            server: cores(self.server, earlier.server),
            server_faults: self.server_faults.saturating_sub(earlier.server_faults) as f64 / secs,
            postgres: in_cores(grown(&self.postgres, &earlier.postgres)),
            redis: in_cores(grown(&self.redis, &earlier.redis)),
            bench: cores(self.bench, earlier.bench),
            machine_busy: if total > 0.0 {
                busy / total * ncores
            } else {
                0.0
            },
            cores: ncores,
        }
    }
}

impl CpuUse {
    /// Server CPU per answer at `rate` answers per second, in µs (server cores ÷ rate).
    pub fn server_us_per(&self, rate: f64) -> Option<f64> {
        (rate > 0.0).then(|| self.server / rate * 1e6)
    }

    pub fn describe(&self) -> String {
        format!(
            "server {:.2}, postgres {:.2}, redis {:.2}, load generator {:.2}, other processes {:.2}; busy {:.2} of {:.0}; server page faults {:.0}/s",
            self.server,
            self.postgres,
            self.redis,
            self.bench,
            (self.machine_busy - self.server - self.postgres - self.redis - self.bench).max(0.0),
            self.machine_busy,
            self.cores,
            self.server_faults
        )
    }
}

/// The machine facts every figure depends on.
pub fn machine_facts() -> Vec<(String, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
        );
    vec![
        (
            "cores (available_parallelism)".to_owned(),
            cores.to_string(),
        ),
        ("cpu".to_owned(), cpu),
        ("memory".to_owned(), memory),
        (
            "background load (1 s sample)".to_owned(),
            format!(
                "{:.2} cores busy before the run (anything well above 0 skews every figure)",
                busy_cores(Duration::from_secs(1))
            ),
        ),
        ("host stalls, every core busy (2 s)".to_owned(), {
            let stalls = host_stalls(Duration::from_secs(2));
            format!(
                "{} of ≥ 20 ms, longest {:.1} ms, {:.1} % of the time lost (on a guest, its host \
                 taking cores back; a p99 taken with the cores saturated can include such a stall)",
                stalls.long,
                stalls.longest.as_secs_f64() * 1000.0,
                stalls.lost * 100.0
            )
        }),
    ]
}

/// What [`host_stalls`] saw.
#[derive(Debug)]
pub struct Stalls {
    /// Gaps of 20 ms or more on any thread.
    pub long: usize,
    /// The longest gap.
    pub longest: Duration,
    /// The share of the threads' time spent in gaps of 1 ms or more.
    pub lost: f64,
}

/// Keeps every core busy for `window`, one spinning thread each, and records the gaps in
/// which a thread did not run. On bare metal or a well-provisioned guest with nothing else
/// running, gaps are the scheduler tick's (a few ms at most); a virtual machine whose host
/// caps its CPU time shows gaps of a quota period (~100 ms seen here), which can land in
/// any tail latency measured while the cores are saturated. Measured, so a run's p99 can be
/// read against it.
pub fn host_stalls(window: Duration) -> Stalls {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gaps: Vec<Vec<Duration>> = std::thread::scope(|scope| {
        let spinners: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(move || {
                    let start = std::time::Instant::now();
                    let mut last = start;
                    let mut gaps = Vec::new();
                    while last.duration_since(start) < window {
                        let now = std::time::Instant::now();
                        let gap = now.duration_since(last);
                        if gap >= Duration::from_millis(1) {
                            gaps.push(gap);
                        }
                        last = now;
                    }
                    gaps
                })
            })
            .collect();
        spinners
            .into_iter()
            .map(|spinner| spinner.join().unwrap_or_default())
            .collect()
    });
    summarize_stalls(&gaps, window)
}

fn summarize_stalls(gaps: &[Vec<Duration>], window: Duration) -> Stalls {
    let all = || gaps.iter().flatten();
    let total = window.as_secs_f64() * gaps.len().max(1) as f64;
    Stalls {
        long: all().filter(|g| **g >= Duration::from_millis(20)).count(),
        longest: all().copied().max().unwrap_or_default(),
        lost: (all().map(Duration::as_secs_f64).sum::<f64>() / total).min(1.0),
    }
}

/// Cores busy over `window` right now, whoever uses them.
pub fn busy_cores(window: Duration) -> f64 {
    let before = machine_ticks();
    std::thread::sleep(window);
    let after = machine_ticks();
    let ncores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    match (before, after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * ncores
        }
        _ => 0.0,
    }
}

pub fn print_facts(facts: &[(String, String)]) {
    let width = facts.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in facts {
        println!("  {key:<width$}  {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_summarized_over_every_thread() {
        let ms = Duration::from_millis;
        let gaps = vec![vec![ms(1), ms(100)], vec![ms(25), ms(4)], vec![]];
        let stalls = summarize_stalls(&gaps, Duration::from_secs(1));
        assert_eq!(stalls.long, 2);
        assert_eq!(stalls.longest, ms(100));
        assert!((stalls.lost - 0.130 / 3.0).abs() < 1e-9, "{stalls:?}");
        let none = summarize_stalls(&[], Duration::from_secs(1));
        assert_eq!(
            (none.long, none.longest, none.lost),
            (0, Duration::ZERO, 0.0)
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarize(&mut samples);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(summarize(&mut one).p99, Duration::from_millis(7));
    }

    #[test]
    fn process_ticks_grow_per_pid() {
        let then = BTreeMap::from([(10, 500), (11, 9_000), (12, 40)]);
        // 11 exited (its lifetime is not subtracted), 13 started, 10 and 12 kept running.
        let now = BTreeMap::from([(10, 530), (12, 40), (13, 7)]);
        assert_eq!(grown(&now, &then), 30 + 7);
        assert_eq!(grown(&then, &then), 0);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(9), ms(1), ms(5)]), Some(ms(5)));
        assert_eq!(median(&mut [ms(4), ms(1), ms(3), ms(2)]), Some(ms(2)));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\trampart\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nThreads:\t5\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(20_480));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(40_960));
        // A prefix of another field's name is not that field; a field without kB is not one.
        assert_eq!(parse_status_kib(status, "VmR"), None);
        assert_eq!(parse_status_kib(status, "Threads"), None);
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn outcomes_keep_success_and_shed_latencies_apart() {
        let mut out = Outcomes::default();
        out.record(200, Duration::from_millis(3));
        out.record(503, Duration::from_millis(1));
        out.record(401, Duration::from_millis(2));
        assert_eq!(out.latencies, [Duration::from_millis(3)]);
        assert_eq!(out.shed_latencies, [Duration::from_millis(1)]);
        assert_eq!((out.count(200), out.count(503), out.non_200()), (1, 1, 2));
        let mut all = Outcomes::default();
        all.merge(out);
        assert_eq!(all.shed_latencies.len(), 1);
    }
}
