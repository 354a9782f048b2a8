//! Running dnsperf and reading what it prints: the final statistics, and
//! with `-v` one line per response (`> NOERROR <name> <type> 0.000123`),
//! from which the percentiles come (dnsperf computes none).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::proc;

/// How dnsperf is run, the same for both servers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `taskset -c` list for dnsperf.
    pub cpus: Option<String>,
    /// `-c`: client sockets.
    pub clients: u32,
    /// `-T`: send/receive thread pairs.
    pub threads: u32,
    /// `-q`: most queries outstanding.
    pub outstanding: u32,
}

/// One dnsperf run.
pub struct Run<'a> {
    pub port: u16,
    pub file: &'a Path,
    /// `-l` seconds, or `-n 1` (one pass through the file) when None.
    pub seconds: Option<f64>,
    /// `-Q`: fixed rate.
    pub rate: Option<u64>,
    /// `-v` into this file.
    pub verbose: Option<PathBuf>,
}

/// dnsperf's final statistics.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub sent: u64,
    pub lost: u64,
    /// The "Response codes:" line as printed.
    pub rcodes: String,
    pub request_size: u64,
    pub response_size: u64,
    pub qps: f64,
    /// Seconds.
    pub avg_latency: f64,
    pub min_latency: f64,
    pub max_latency: f64,
    pub stddev: f64,
}

impl Summary {
    /// Every completed query got one of `codes`?
    pub fn only(&self, codes: &[&str]) -> bool {
        self.rcodes.split(", ").all(|part| {
            let code = part.split_whitespace().next().unwrap_or("");
            codes.contains(&code)
        })
    }
}

/// Percentiles from a `-v` run.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    pub count: usize,
    pub timeouts: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

/// A run's figures plus the CPU both sides used.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub summary: Summary,
    pub latencies: Option<Latencies>,
    /// CPU of the server process during the run.
    pub server_cpu: Duration,
    /// CPU of dnsperf.
    pub client_cpu: Duration,
    pub wall: Duration,
    pub command: String,
}

impl Outcome {
    /// Server CPU as a share of one core over the run.
    pub fn server_load(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn client_load(&self) -> f64 {
        self.client_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// dnsperf's version, from the "Version x.y.z" line of `dnsperf -h`.
pub fn version() -> String {
    let out = Command::new("dnsperf").arg("-h").output();
    let text = match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => return format!("unavailable ({e})"),
    };
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Version "))
        .map(|v| format!("dnsperf {v}"))
        .unwrap_or_else(|| "dnsperf (version not printed)".into())
}

pub fn run(settings: &Settings, run: &Run<'_>, server_pid: u32) -> anyhow::Result<Outcome> {
    let mut args: Vec<String> = vec![
        "-s".into(),
        "127.0.0.1".into(),
        "-p".into(),
        run.port.to_string(),
        "-d".into(),
        run.file.to_string_lossy().into_owned(),
        "-c".into(),
        settings.clients.to_string(),
        "-T".into(),
        settings.threads.to_string(),
        "-q".into(),
        settings.outstanding.to_string(),
    ];
    match run.seconds {
        Some(s) => args.extend(["-l".into(), format!("{s}")]),
        None => args.extend(["-n".into(), "1".into()]),
    }
    if let Some(rate) = run.rate {
        args.extend(["-Q".into(), rate.to_string()]);
    }
    if run.verbose.is_some() {
        args.push("-v".into());
    }
    let mut cmd = proc::pinned(settings.cpus.as_deref(), "dnsperf");
    cmd.args(&args).stdin(Stdio::null()).stderr(Stdio::piped());
    let command = format!(
        "{}dnsperf {}",
        settings
            .cpus
            .as_ref()
            .map_or(String::new(), |c| format!("taskset -c {c} ")),
        args.join(" ")
    );
    let out_file = match &run.verbose {
        Some(path) => {
            cmd.stdout(std::fs::File::create(path)?);
            Some(path.clone())
        }
        None => {
            cmd.stdout(Stdio::piped());
            None
        }
    };
    let cpu_before = proc::cpu(server_pid);
    let client_before = proc::children_cpu();
    let start = Instant::now();
    let output = cmd.output().with_context(|| format!("running {command}"))?;
    let wall = start.elapsed();
    let server_cpu = proc::cpu(server_pid).saturating_sub(cpu_before);
    let client_cpu = proc::children_cpu().saturating_sub(client_before);
    if !output.status.success() {
        bail!(
            "{command}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = match &out_file {
        Some(path) => std::fs::read_to_string(path)?,
        None => String::from_utf8_lossy(&output.stdout).into_owned(),
    };
    let summary =
        parse_summary(&text).with_context(|| format!("reading the output of {command}"))?;
    let latencies = out_file.is_some().then(|| parse_latencies(&text));
    Ok(Outcome {
        summary,
        latencies,
        server_cpu,
        client_cpu,
        wall,
        command,
    })
}

fn after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(str::trim)
}

fn first_number<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    s?.split_whitespace().next()?.parse().ok()
}

pub fn parse_summary(text: &str) -> anyhow::Result<Summary> {
    let stats = text
        .split_once("Statistics:")
        .map(|(_, s)| s)
        .context("no \"Statistics:\" in dnsperf's output")?;
    let mut s = Summary {
        sent: first_number(after(stats, "Queries sent:")).context("queries sent")?,
        lost: first_number(after(stats, "Queries lost:")).context("queries lost")?,
        rcodes: after(stats, "Response codes:").unwrap_or("").to_string(),
        qps: first_number(after(stats, "Queries per second:")).context("queries per second")?,
        stddev: first_number(after(stats, "Latency StdDev (s):")).unwrap_or(0.0),
        ..Summary::default()
    };
    // "request 43, response 59"
    if let Some(sizes) = after(stats, "Average packet size:") {
        for part in sizes.split(',') {
            let mut w = part.split_whitespace();
            match (w.next(), w.next().and_then(|n| n.parse().ok())) {
                (Some("request"), Some(n)) => s.request_size = n,
                (Some("response"), Some(n)) => s.response_size = n,
                _ => {}
            }
        }
    }
    // "0.000695 (min 0.000025, max 0.006045)"
    if let Some(lat) = after(stats, "Average Latency (s):") {
        let clean = lat.replace(['(', ')', ','], " ");
        let words: Vec<&str> = clean.split_whitespace().collect();
        s.avg_latency = words.first().and_then(|w| w.parse().ok()).unwrap_or(0.0);
        for pair in words.windows(2) {
            match pair[0] {
                "min" => s.min_latency = pair[1].parse().unwrap_or(0.0),
                "max" => s.max_latency = pair[1].parse().unwrap_or(0.0),
                _ => {}
            }
        }
    }
    Ok(s)
}

/// Nearest-rank percentile of sorted values.
fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Percentiles of the `> RCODE name type seconds` lines; lines without a
/// latency (`> T ...`) are timeouts.
pub fn parse_latencies(text: &str) -> Latencies {
    let mut values = Vec::new();
    let mut timeouts = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("> ") else {
            continue;
        };
        match rest
            .split_whitespace()
            .last()
            .and_then(|w| w.parse::<f64>().ok())
            .filter(|_| !rest.starts_with("T "))
        {
            Some(secs) => values.push(Duration::from_secs_f64(secs)),
            None => timeouts += 1,
        }
    }
    values.sort_unstable();
    Latencies {
        count: values.len(),
        timeouts,
        p50: nearest_rank(&values, 50.0),
        p90: nearest_rank(&values, 90.0),
        p99: nearest_rank(&values, 99.0),
        p999: nearest_rank(&values, 99.9),
        max: values.last().copied().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Stopping after 1 run through file
> NOERROR svc-1.bench.svc.cluster.local A 0.001206
> NXDOMAIN svc-2.bench.svc.cluster.local A 0.000059
> NOERROR svc-1.bench.svc.cluster.local AAAA 0.000047
> T svc-3.bench.svc.cluster.local A
[Status] Testing complete (end of file)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 2 (66.67%), NXDOMAIN 1 (33.33%)
  Average packet size:  request 43, response 74
  Run time (s):         0.002468
  Queries per second:   1620.745543

  Average Latency (s):  0.001063 (min 0.000940, max 0.001206)
  Latency StdDev (s):   0.000109
";

    #[test]
    fn summary_and_latencies() {
        let s = parse_summary(OUTPUT).expect("summary");
        assert_eq!((s.sent, s.lost), (4, 1));
        assert_eq!((s.request_size, s.response_size), (43, 74));
        assert!((s.qps - 1620.745543).abs() < 1e-6);
        assert!((s.avg_latency - 0.001063).abs() < 1e-9);
        assert!((s.max_latency - 0.001206).abs() < 1e-9);
        assert!(s.only(&["NOERROR", "NXDOMAIN"]));
        assert!(!s.only(&["NOERROR"]));
        let l = parse_latencies(OUTPUT);
        assert_eq!((l.count, l.timeouts), (3, 1));
        assert_eq!(l.p50, Duration::from_micros(59));
        assert_eq!(l.max, Duration::from_micros(1206));
    }
}
