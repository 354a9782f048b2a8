//! `ferry dns` at 10,000 Services and 50,000 Pods (issue 7, point 6),
//! side by side with unbound serving the same names in one run
//! (BENCHMARKS.md):
//!
//! 1. a fresh `ferry apiserver` loaded through kube-rs: N ClusterIP
//!    Services, one EndpointSlice of 5 ready endpoints each, one Pod per
//!    endpoint (with `status.podIP`);
//! 2. `ferry dns --threads 1` against it, pinned to one CPU; time to
//!    `/ready`, VmRSS/VmHWM;
//! 3. unbound, `num-threads: 1`, on the same CPU, with the same names (the
//!    ClusterIPs read back from the API) as local data;
//! 4. both forward `example.` to a loopback stub in this process;
//! 5. every answer checked once against the API's data, then dnsperf on
//!    the other CPU, interleaved (ferry, unbound, ferry, unbound), for
//!    cluster names, a mix with NXDOMAIN and NODATA, and cached forwarded
//!    names; then the same at a fixed rate with `-v` for percentiles.
//!
//! Meant to run inside a fresh network namespace with only `lo` (run.sh
//! does that), so no query can leave the machine.

mod api;
mod dnsperf;
mod proc;
mod servers;
mod wire;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::api::{NAMESPACE, service_name};
use crate::dnsperf::Outcome;
use crate::servers::Server;

#[derive(Parser)]
#[command(about = "ferry dns at scale, side by side with unbound serving the same names")]
struct Args {
    /// `ferry` binary (apiserver and dns).
    #[arg(long)]
    ferry_bin: PathBuf,
    /// ClusterIP Services (one named TCP port each).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Ready endpoints per Service (one EndpointSlice each).
    #[arg(long, default_value_t = 5)]
    endpoints: usize,
    /// Pod objects (default: one per endpoint).
    #[arg(long)]
    pods: Option<usize>,
    /// Requests in flight while loading the API server.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// `taskset -c` list for the API server.
    #[arg(long, default_value = "0")]
    apiserver_cpus: String,
    /// `taskset -c` list for the server under test (ferry dns, unbound).
    #[arg(long, default_value = "1")]
    server_cpus: String,
    /// `taskset -c` list for dnsperf.
    #[arg(long, default_value = "0")]
    client_cpus: String,
    /// `ferry dns --threads` (UDP workers).
    #[arg(long, default_value_t = 1)]
    ferry_threads: usize,
    /// Seconds of each throughput run (dnsperf -l).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Rounds of A B (ferry, unbound) per query file.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// dnsperf -c (client sockets).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// dnsperf -T (thread pairs).
    #[arg(long, default_value_t = 1)]
    dnsperf_threads: u32,
    /// dnsperf -q (most queries outstanding).
    #[arg(long, default_value_t = 200)]
    outstanding: u32,
    /// Seconds of each fixed-rate `-v` run for percentiles.
    #[arg(long, default_value_t = 5.0)]
    latency_duration: f64,
    /// Fixed rates of the percentile runs, as shares of unbound's mean
    /// QPS on the same file.
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.2])]
    latency_rates: Vec<f64>,
    /// Forwarded names (`ext-N.example.`) of each cache run; every run
    /// (a ferry and unbound pair) asks a fresh set, warmed just before, so
    /// no entry can expire during it (ferry caps cached TTLs at 30 s).
    #[arg(long, default_value_t = 1000)]
    ext_names: usize,
    /// Leave out the mixed file (10% NXDOMAIN, 5% AAAA NODATA).
    #[arg(long)]
    no_mixed: bool,
    /// TTL of the cluster answers (ferry dns --ttl default, unbound's data).
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    #[arg(long, default_value_t = 5300)]
    ferry_port: u16,
    #[arg(long, default_value_t = 5301)]
    unbound_port: u16,
    #[arg(long, default_value_t = 5399)]
    stub_port: u16,
    #[arg(long, default_value_t = 8181)]
    ready_port: u16,
    #[arg(long, default_value_t = 9153)]
    metrics_port: u16,
    /// Keep the query files, configurations and logs in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// After the runs, record `perf` on ferry dns for this many seconds of
    /// a cluster-names run and print the top of the profile.
    #[arg(long)]
    perf_seconds: Option<f64>,
}

/// Prints a progress line at once.
fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// A deterministic shuffle (xorshift64), so every run asks the same order.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn cluster_name(i: usize) -> String {
    format!("{}.{NAMESPACE}.svc.cluster.local", service_name(i))
}

/// A search-path miss: a pod in namespace `other` looking up
/// `svc-i.bench` tries this first (NXDOMAIN: no namespace `other`).
fn miss_name(i: usize) -> String {
    format!("{}.{NAMESPACE}.other.svc.cluster.local", service_name(i))
}

/// One query file and what its answers must be.
struct Scenario {
    key: &'static str,
    title: String,
    file: PathBuf,
    codes: &'static [&'static str],
    cached: bool,
}

fn write_lines(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn scenarios(args: &Args, dir: &Path) -> anyhow::Result<Vec<Scenario>> {
    let n = args.services;
    let mut out = Vec::new();
    let mut lines: Vec<String> = (0..n).map(|i| format!("{} A", cluster_name(i))).collect();
    shuffle(&mut lines, 0x5eed_0001);
    let file = dir.join("cluster.txt");
    write_lines(&file, &lines)?;
    out.push(Scenario {
        key: "cluster",
        title: format!("cluster names: the {n} Service A names, shuffled"),
        file,
        codes: &["NOERROR"],
        cached: false,
    });
    if !args.no_mixed {
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, 0x5eed_0002);
        let mut lines: Vec<String> = order
            .iter()
            .enumerate()
            .map(|(k, &i)| match k % 20 {
                0 | 1 => format!("{} A", miss_name(i)),
                2 => format!("{} AAAA", cluster_name(i)),
                _ => format!("{} A", cluster_name(i)),
            })
            .collect();
        shuffle(&mut lines, 0x5eed_0003);
        let file = dir.join("mixed.txt");
        write_lines(&file, &lines)?;
        out.push(Scenario {
            key: "mixed",
            title: format!(
                "mixed cluster names: {n} lines, 85% Service A, 10% NXDOMAIN (search-path miss `svc-N.bench.other.svc.cluster.local`), 5% AAAA NODATA"
            ),
            file,
            codes: &["NOERROR", "NXDOMAIN"],
            cached: false,
        });
    }
    let file = ext_file(dir, 0, args.ext_names)?;
    out.push(Scenario {
        key: "cache",
        title: format!(
            "cached forwarded names: {} `ext-N.example. A` (a fresh set of names per ferry/unbound pair of runs), answered from the cache (upstream = loopback stub, TTL 300)",
            args.ext_names
        ),
        file,
        codes: &["NOERROR"],
        cached: true,
    });
    Ok(out)
}

/// The query file of forwarded-name set `set`: `ext-N.example. A` for N
/// in `set * names..(set + 1) * names`, shuffled.
fn ext_file(dir: &Path, set: usize, names: usize) -> anyhow::Result<PathBuf> {
    let file = dir.join(format!("ext-{set}.txt"));
    if !file.exists() {
        let mut lines: Vec<String> = (set * names..(set + 1) * names)
            .map(|k| format!("{}. A", wire::ext_name(k)))
            .collect();
        shuffle(&mut lines, 0x5eed_0004 + set as u64);
        write_lines(&file, &lines)?;
    }
    Ok(file)
}

/// Asks every forwarded name of set `set` once (fills the cache); returns
/// the wrong answers.
fn warm_cache(server: &Server, set: usize, names: usize) -> anyhow::Result<Vec<String>> {
    let mut client = wire::Client::new(server.addr())?;
    let mut wrong = Vec::new();
    for k in set * names..(set + 1) * names {
        let name = wire::ext_name(k);
        let r = client
            .ask(&name, wire::TYPE_A)
            .with_context(|| format!("{}: {name}", server.name))?;
        if r.rcode != 0 || r.a != vec![wire::ext_ip(k)] {
            wrong.push(format!(
                "{name} A: {} {:?} (expected NOERROR {})",
                wire::rcode_name(r.rcode),
                r.a,
                wire::ext_ip(k)
            ));
        }
    }
    Ok(wrong)
}

/// What the one-by-one check of a server's answers found.
#[derive(Default)]
struct Check {
    asked: usize,
    wrong: Vec<String>,
}

impl Check {
    fn expect(
        &mut self,
        what: String,
        got: anyhow::Result<wire::Reply>,
        ok: impl Fn(&wire::Reply) -> bool,
    ) {
        self.asked += 1;
        match got {
            Ok(r) if ok(&r) => {}
            Ok(r) => self.wrong.push(format!(
                "{what}: {} AA={} A={:?} other answers={} SOA={}",
                wire::rcode_name(r.rcode),
                r.authoritative,
                r.a,
                r.other_answers,
                r.soa
            )),
            Err(e) => self.wrong.push(format!("{what}: {e:#}")),
        }
    }

    fn cell(&self) -> String {
        if self.wrong.is_empty() {
            format!("{} of {} right", self.asked, self.asked)
        } else {
            format!(
                "**{} of {} wrong**, e.g. {}",
                self.wrong.len(),
                self.asked,
                self.wrong[0]
            )
        }
    }
}

/// Every Service A name, plus a sample of NXDOMAIN and AAAA NODATA names,
/// one query at a time.
fn check_answers(server: &Server, ips: &[Ipv4Addr]) -> anyhow::Result<Check> {
    let mut client = wire::Client::new(server.addr())?;
    let mut check = Check::default();
    for (i, ip) in ips.iter().enumerate() {
        let name = cluster_name(i);
        check.expect(format!("{name} A"), client.ask(&name, wire::TYPE_A), |r| {
            r.rcode == 0 && r.a == vec![*ip] && r.other_answers == 0
        });
    }
    let step = (ips.len() / 100).max(1);
    for i in (0..ips.len()).step_by(step) {
        let name = miss_name(i);
        check.expect(format!("{name} A"), client.ask(&name, wire::TYPE_A), |r| {
            r.rcode == 3 && r.answers == 0 && r.soa
        });
        let name = cluster_name(i);
        check.expect(
            format!("{name} AAAA"),
            client.ask(&name, wire::TYPE_AAAA),
            |r| r.rcode == 0 && r.answers == 0 && r.soa,
        );
    }
    Ok(check)
}

/// Results of one scenario.
#[derive(Default)]
struct ScenarioResult {
    ferry: Vec<Outcome>,
    unbound: Vec<Outcome>,
    ferry_warmup: Option<Outcome>,
    unbound_warmup: Option<Outcome>,
    /// Stub queries during each measured run.
    ferry_stub: Vec<u64>,
    unbound_stub: Vec<u64>,
    /// Stub queries while warming the caches before the runs.
    ferry_stub_warm: u64,
    unbound_stub_warm: u64,
    latency: Vec<LatencyRuns>,
    error: Option<String>,
}

/// The fixed-rate `-v` runs at one rate.
#[derive(Default)]
struct LatencyRuns {
    /// Share of unbound's mean QPS.
    share: f64,
    rate: u64,
    ferry: Vec<Outcome>,
    unbound: Vec<Outcome>,
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn join(values: impl Iterator<Item = String>) -> String {
    values.collect::<Vec<_>>().join("; ")
}

fn qps(o: &Outcome) -> String {
    format!("{:.0}", o.summary.qps)
}

fn us(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!(
        "{:.1} MiB ({:.1} MB)",
        kib as f64 / 1024.0,
        kib as f64 * 1.024 / 1000.0
    )
}

/// "VmRSS (anon + file) / VmHWM".
fn mem_cell(m: &proc::Memory) -> String {
    format!(
        "{} (anon {:.1} + file {:.1} MiB) / {}",
        mib(m.rss),
        m.anon as f64 / 1024.0,
        m.file as f64 / 1024.0,
        mib(m.hwm)
    )
}

struct Runner<'a> {
    args: &'a Args,
    settings: dnsperf::Settings,
    stub: &'a wire::Stub,
    ferry: &'a mut Server,
    unbound: &'a mut Server,
    dir: &'a Path,
    /// The forwarded-name set of the current ferry/unbound pair of runs.
    cache_set: usize,
}

impl Runner<'_> {
    /// One dnsperf run against `which` (0 ferry, 1 unbound); the cache is
    /// warmed first for cached scenarios. Returns the outcome and the stub
    /// queries during the run.
    fn one(
        &mut self,
        sc: &Scenario,
        which: usize,
        seconds: Option<f64>,
        rate: Option<u64>,
        verbose: Option<PathBuf>,
    ) -> anyhow::Result<(Outcome, u64, u64)> {
        let server: &mut Server = if which == 0 {
            &mut *self.ferry
        } else {
            &mut *self.unbound
        };
        server.child.ensure_running()?;
        let mut warm = 0;
        let mut file = sc.file.clone();
        if sc.cached {
            // A ferry run and the unbound run after it share one set.
            let set = self.cache_set;
            if which == 1 {
                self.cache_set += 1;
            }
            file = ext_file(self.dir, set, self.args.ext_names)?;
            let before = self.stub.count();
            let wrong = warm_cache(server, set, self.args.ext_names)?;
            if let Some(w) = wrong.first() {
                anyhow::bail!(
                    "{}: {} wrong forwarded answers, e.g. {w}",
                    server.name,
                    wrong.len()
                );
            }
            warm = self.stub.count() - before;
        }
        let before = self.stub.count();
        let run = dnsperf::Run {
            port: server.port,
            file: &file,
            seconds,
            rate,
            verbose,
        };
        let outcome = dnsperf::run(&self.settings, &run, server.pid())?;
        let during = self.stub.count() - before;
        server.child.ensure_running()?;
        Ok((outcome, during, warm))
    }

    fn describe(&self, which: usize, o: &Outcome, stub: Option<u64>) -> String {
        let s = &o.summary;
        let mut line = format!(
            "{:9} {:>8.0} QPS, avg {:.3} ms (sd {:.3}, max {:.3}), {} lost of {}; {}; server CPU {:.0}%, dnsperf CPU {:.0}%",
            ["ferry", "unbound"][which],
            s.qps,
            s.avg_latency * 1e3,
            s.stddev * 1e3,
            s.max_latency * 1e3,
            s.lost,
            s.sent,
            s.rcodes,
            o.server_load() * 100.0,
            o.client_load() * 100.0,
        );
        if let Some(l) = &o.latencies {
            let _ = write!(
                line,
                "; latency p50 {} / p90 {} / p99 {} / p99.9 {} / max {} ms ({} answers, {} timeouts)",
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max),
                l.count,
                l.timeouts
            );
        }
        if let Some(stub) = stub {
            let _ = write!(line, "; upstream stub queries during the run: {stub}");
        }
        line
    }

    fn throughput(&mut self, sc: &Scenario) -> anyhow::Result<ScenarioResult> {
        let mut r = ScenarioResult::default();
        let duration = self.args.duration;
        // Warm-up: one pass through the file each.
        for which in 0..2 {
            let (o, _, warm) = self.one(sc, which, None, None, None)?;
            say(&format!(
                "  warm-up (-n 1): {}",
                self.describe(which, &o, None)
            ));
            if which == 0 {
                r.ferry_warmup = Some(o);
                r.ferry_stub_warm += warm;
            } else {
                r.unbound_warmup = Some(o);
                r.unbound_stub_warm += warm;
            }
        }
        for round in 1..=self.args.rounds {
            for which in 0..2 {
                let (o, stub, warm) = self.one(sc, which, Some(duration), None, None)?;
                if round == 1 {
                    say(&format!("  `{}`", o.command));
                }
                say(&format!(
                    "  round {round}: {}",
                    self.describe(which, &o, sc.cached.then_some(stub))
                ));
                if which == 0 {
                    r.ferry.push(o);
                    r.ferry_stub.push(stub);
                    r.ferry_stub_warm += warm;
                } else {
                    r.unbound.push(o);
                    r.unbound_stub.push(stub);
                    r.unbound_stub_warm += warm;
                }
            }
        }
        Ok(r)
    }

    fn latency(
        &mut self,
        sc: &Scenario,
        unbound_qps: f64,
        share: f64,
    ) -> anyhow::Result<LatencyRuns> {
        let rate = ((unbound_qps * share / 1000.0).round() as u64).max(1) * 1000;
        let mut r = LatencyRuns {
            share,
            rate,
            ..LatencyRuns::default()
        };
        for round in 1..=self.args.rounds {
            for which in 0..2 {
                let file = self.dir.join(format!(
                    "{}-{}-q{rate}-v{round}.txt",
                    sc.key,
                    ["ferry", "unbound"][which]
                ));
                let (o, stub, _) = self.one(
                    sc,
                    which,
                    Some(self.args.latency_duration),
                    Some(rate),
                    Some(file.clone()),
                )?;
                // The -v output is large; keep it only with --keep.
                if self.args.keep.is_none() {
                    let _ = std::fs::remove_file(&file);
                }
                if round == 1 {
                    say(&format!("  `{}`", o.command));
                }
                say(&format!(
                    "  -Q {rate}, round {round}: {}",
                    self.describe(which, &o, sc.cached.then_some(stub))
                ));
                if which == 0 {
                    r.ferry.push(o);
                } else {
                    r.unbound.push(o);
                }
            }
        }
        Ok(r)
    }
}

/// Report rows: measurement, ferry, unbound, ratio, target.
struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn row(&mut self, cells: [&str; 5]) {
        self.rows.push(cells.map(str::to_string));
    }

    fn print(&self) {
        for (i, r) in self.rows.iter().enumerate() {
            println!("| {} |", r.join(" | "));
            if i == 0 {
                println!("|---|---|---|---|---|");
            }
        }
    }
}

fn scenario_rows(t: &mut Table, sc: &Scenario, r: &ScenarioResult, args: &Args) {
    t.row([&format!("**{}**", sc.title), "", "", "", ""]);
    if let Some(e) = &r.error {
        t.row(["  not measured", e, "", "", ""]);
    }
    if r.ferry.is_empty() || r.unbound.is_empty() {
        return;
    }
    let fq = mean(r.ferry.iter().map(|o| o.summary.qps));
    let uq = mean(r.unbound.iter().map(|o| o.summary.qps));
    let target = if sc.key == "cache" {
        "(issue: report; CoreDNS publishes no cache figure)".to_string()
    } else {
        "≥ unbound (issue 7: ~140,000 measured here earlier); CoreDNS 1.2.5 published 33,669 on 2 vCPU (quoted, not measured)".to_string()
    };
    t.row([
        &format!(
            "  QPS, each run in order (-l {} s), and mean",
            args.duration
        ),
        &format!("{} (mean **{fq:.0}**)", join(r.ferry.iter().map(qps))),
        &format!("{} (mean **{uq:.0}**)", join(r.unbound.iter().map(qps))),
        &format!("**{:.2}**", fq / uq.max(1e-9)),
        &target,
    ]);
    let fl = mean(r.ferry.iter().map(|o| o.summary.avg_latency * 1e3));
    let ul = mean(r.unbound.iter().map(|o| o.summary.avg_latency * 1e3));
    t.row([
        "  average latency at full load (dnsperf), ms, each run",
        &join(
            r.ferry
                .iter()
                .map(|o| format!("{:.3}", o.summary.avg_latency * 1e3)),
        ),
        &join(
            r.unbound
                .iter()
                .map(|o| format!("{:.3}", o.summary.avg_latency * 1e3)),
        ),
        &format!("{:.2}", fl / ul.max(1e-9)),
        "unbound ~0.5 ms in the issue's figure",
    ]);
    t.row([
        "  lost of sent, each run",
        &join(
            r.ferry
                .iter()
                .map(|o| format!("{} of {}", o.summary.lost, o.summary.sent)),
        ),
        &join(
            r.unbound
                .iter()
                .map(|o| format!("{} of {}", o.summary.lost, o.summary.sent)),
        ),
        "",
        "",
    ]);
    let codes = |v: &[Outcome]| {
        let ok = v.iter().all(|o| o.summary.only(sc.codes));
        format!(
            "{}{}",
            v.first().map_or("", |o| o.summary.rcodes.as_str()),
            if ok {
                ""
            } else {
                " **(unexpected codes in some run)**"
            }
        )
    };
    t.row([
        "  response codes (run 1)",
        &codes(&r.ferry),
        &codes(&r.unbound),
        "",
        "",
    ]);
    t.row([
        "  avg packet size request / response (bytes)",
        &format!(
            "{} / {}",
            r.ferry[0].summary.request_size, r.ferry[0].summary.response_size
        ),
        &format!(
            "{} / {}",
            r.unbound[0].summary.request_size, r.unbound[0].summary.response_size
        ),
        "",
        "",
    ]);
    t.row([
        "  CPU during the runs: server / dnsperf, share of one core",
        &join(r.ferry.iter().map(|o| {
            format!(
                "{:.0}% / {:.0}%",
                o.server_load() * 100.0,
                o.client_load() * 100.0
            )
        })),
        &join(r.unbound.iter().map(|o| {
            format!(
                "{:.0}% / {:.0}%",
                o.server_load() * 100.0,
                o.client_load() * 100.0
            )
        })),
        "",
        "",
    ]);
    let per_cpu = |v: &[Outcome]| mean(v.iter().map(|o| o.summary.qps / o.server_load().max(1e-9)));
    let (fc, uc) = (per_cpu(&r.ferry), per_cpu(&r.unbound));
    t.row([
        "  QPS per CPU-second of the server (QPS / server CPU share), mean: what one busy core would answer if dnsperf kept up",
        &format!("{fc:.0}"),
        &format!("{uc:.0}"),
        &format!("**{:.2}**", fc / uc.max(1e-9)),
        "",
    ]);
    if sc.cached {
        t.row([
            "  upstream stub queries during each measured run (0 = every answer from the cache)",
            &join(r.ferry_stub.iter().map(u64::to_string)),
            &join(r.unbound_stub.iter().map(u64::to_string)),
            "",
            "0",
        ]);
        t.row([
            "  upstream stub queries while warming the caches before the warm-up and measured runs (one per name: all misses)",
            &r.ferry_stub_warm.to_string(),
            &r.unbound_stub_warm.to_string(),
            "",
            "",
        ]);
    }
    for l in &r.latency {
        let rate = l.rate;
        let cells = |v: &[Outcome]| {
            join(v.iter().map(|o| match &o.latencies {
                Some(l) => format!(
                    "{} / {} / {} (p99.9 {}, {} timeouts)",
                    us(l.p50),
                    us(l.p99),
                    us(l.max),
                    us(l.p999),
                    l.timeouts
                ),
                None => "-".into(),
            }))
        };
        let p99 = |v: &[Outcome]| {
            mean(
                v.iter()
                    .filter_map(|o| o.latencies.as_ref())
                    .map(|l| l.p99.as_secs_f64()),
            )
        };
        let load = |v: &[Outcome]| {
            join(v.iter().map(|o| {
                format!(
                    "{} QPS, {:.0}% / {:.0}%",
                    qps(o),
                    o.server_load() * 100.0,
                    o.client_load() * 100.0
                )
            }))
        };
        t.row([
            &format!(
                "  p50 / p99 / max latency, ms, at a fixed {rate} QPS ({:.0}% of unbound's mean; `-Q {rate} -v`, {} s), each run",
                l.share * 100.0,
                args.latency_duration,
            ),
            &cells(&l.ferry),
            &cells(&l.unbound),
            &format!("p99 {:.2}", p99(&l.ferry) / p99(&l.unbound).max(1e-9)),
            if sc.cached { "" } else { "p99 ≤ 1 ms" },
        ]);
        t.row([
            "    rate achieved; CPU server / dnsperf",
            &load(&l.ferry),
            &load(&l.unbound),
            "",
            "",
        ]);
    }
}

fn machine_facts() -> Vec<(String, String)> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    let allowed = read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    vec![
        ("CPUs online".into(), read("/sys/devices/system/cpu/online")),
        ("CPU".into(), model),
        ("kernel".into(), read("/proc/sys/kernel/osrelease")),
        ("this process pinned to CPUs".into(), allowed),
        ("dnsperf".into(), dnsperf::version()),
        ("unbound".into(), servers::unbound_version()),
    ]
}

/// Selected lines of ferry dns's `/metrics`.
fn ferry_metrics(addr: SocketAddr) -> Vec<String> {
    let Ok((200, body)) = servers::http_get(addr, "/metrics") else {
        return vec!["(metrics not readable)".into()];
    };
    body.lines()
        .filter(|l| {
            !l.starts_with('#')
                && [
                    "coredns_cache_",
                    "coredns_dns_requests_total",
                    "coredns_dns_responses_total",
                    "coredns_forward_",
                    "coredns_proxy_request_duration_seconds_count",
                    "ferry_dns_index_",
                    "ferry_dns_synced",
                ]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// WARN and ERROR lines of a log.
fn log_problems(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
        .map(str::to_string)
        .collect()
}

fn perf_profile(
    args: &Args,
    runner: &mut Runner<'_>,
    sc: &Scenario,
    seconds: f64,
) -> anyhow::Result<String> {
    let data = runner.dir.join("perf.data");
    let pid = runner.ferry.pid().to_string();
    let data_arg = data.to_string_lossy().into_owned();
    let mut cmd = proc::pinned(Some(&args.client_cpus), "perf");
    cmd.args(["record", "-F", "999", "-g", "-o", &data_arg, "-p", &pid])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut perf = proc::Child::spawn(cmd, "perf record")?;
    std::thread::sleep(Duration::from_millis(300));
    let (o, _, _) = runner.one(sc, 0, Some(seconds), None, None)?;
    perf.stop();
    let report = |sort: &str, limit: usize| -> anyhow::Result<String> {
        let text = proc::run(
            "perf",
            &[
                "report",
                "-i",
                &data_arg,
                "--stdio",
                "--no-children",
                "--sort",
                sort,
                "--percent-limit",
                "1",
                "-g",
                "none",
            ],
        )?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.trim_end_matches([' ', '-']).to_string())
            .take(limit)
            .collect::<Vec<_>>()
            .join("\n"))
    };
    Ok(format!(
        "ferry dns under perf ({} QPS during it, server CPU {:.0}%), samples by object:\n{}\nby symbol:\n{}",
        o.summary.qps as u64,
        o.server_load() * 100.0,
        report("dso", 10)?,
        report("comm,dso,symbol", 40)?
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.services >= 1 && args.rounds >= 1, "nothing to measure");
    let pods = args.pods.unwrap_or(args.services * args.endpoints);
    let load_before = proc::load_average();
    let facts = machine_facts();
    let started = std::time::SystemTime::now();
    say(&format!(
        "## ferry dns benchmark: {} Services, {} EndpointSlices x {} endpoints, {pods} Pods",
        args.services, args.services, args.endpoints
    ));
    for (k, v) in &facts {
        say(&format!("{k}: {v}"));
    }
    say(&format!("load average at start: {load_before}"));

    let temp = tempfile::Builder::new()
        .prefix("ferry-bench-dns.")
        .tempdir()
        .context("creating a temp dir")?;
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };

    // 1. The API server and its objects.
    say("\n### 1. loading `ferry apiserver` through kube-rs");
    let (mut apiserver, kubeconfig) =
        api::start_apiserver(&args.ferry_bin, Some(&args.apiserver_cpus), &dir)?;
    let loaded = api::load(
        &kubeconfig,
        args.services,
        args.endpoints,
        pods,
        args.concurrency,
        |l| say(&format!("  {l}")),
    )?;
    say(&format!(
        "  total {:.1} s; {} ClusterIPs listed back in {:.2} s (first {}, last {})",
        loaded.total().as_secs_f64(),
        loaded.cluster_ips.len(),
        loaded.list.as_secs_f64(),
        loaded.cluster_ips[0],
        loaded.cluster_ips[loaded.cluster_ips.len() - 1],
    ));
    let apiserver_rss = proc::memory(apiserver.pid())?.rss;

    // 2. The upstream stub and the two servers.
    let stub_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.stub_port));
    let stub = wire::Stub::start(stub_addr)?;
    say("\n### 2. servers");
    let ferry_settings = servers::FerrySettings {
        bin: &args.ferry_bin,
        cpus: Some(&args.server_cpus),
        kubeconfig: &kubeconfig,
        port: args.ferry_port,
        threads: args.ferry_threads,
        upstream: stub_addr,
        ready: SocketAddr::from((Ipv4Addr::LOCALHOST, args.ready_port)),
        metrics: SocketAddr::from((Ipv4Addr::LOCALHOST, args.metrics_port)),
    };
    let (mut ferry, ferry_ready) = servers::start_ferry(&ferry_settings, &dir)?;
    std::thread::sleep(Duration::from_secs(1));
    let ferry_mem_ready = proc::memory(ferry.pid())?;
    say(&format!(
        "  {}\n  ready (/ready 200) {:.3} s after start; one second later VmRSS / VmHWM {}",
        ferry.command,
        ferry_ready.as_secs_f64(),
        mem_cell(&ferry_mem_ready)
    ));
    let unbound_settings = servers::UnboundSettings {
        cpus: Some(&args.server_cpus),
        port: args.unbound_port,
        upstream: stub_addr,
        ttl: args.ttl,
    };
    let unbound_conf = servers::unbound_config(&unbound_settings, &dir, &loaded.cluster_ips)?;
    let (mut unbound, unbound_ready) =
        servers::start_unbound(&unbound_settings, &unbound_conf, &dir)?;
    std::thread::sleep(Duration::from_secs(1));
    let unbound_mem_ready = proc::memory(unbound.pid())?;
    say(&format!(
        "  {}\n  answering {:.3} s after start; one second later VmRSS / VmHWM {}",
        unbound.command,
        unbound_ready.as_secs_f64(),
        mem_cell(&unbound_mem_ready)
    ));

    // 3. Every answer once, and where outside names go.
    say("\n### 3. answers checked one by one against the API's ClusterIPs");
    let ferry_check = check_answers(&ferry, &loaded.cluster_ips)?;
    let unbound_check = check_answers(&unbound, &loaded.cluster_ips)?;
    say(&format!("  ferry: {}", ferry_check.cell()));
    for w in ferry_check.wrong.iter().take(10) {
        say(&format!("    {w}"));
    }
    say(&format!("  unbound: {}", unbound_check.cell()));
    for w in unbound_check.wrong.iter().take(10) {
        say(&format!("    {w}"));
    }
    let outside = format!("www.bench-{}.org", std::process::id());
    let mut outside_cells = Vec::new();
    for server in [&ferry, &unbound] {
        let before = stub.count();
        let r = wire::Client::new(server.addr())?.ask(&outside, wire::TYPE_A);
        let cell = match r {
            Ok(r) => format!(
                "{} ({} stub queries)",
                wire::rcode_name(r.rcode),
                stub.count() - before
            ),
            Err(e) => format!("{e:#}"),
        };
        say(&format!("  {} {outside} A: {cell}", server.name));
        outside_cells.push(cell);
    }

    // 4. Throughput, then percentiles at a fixed rate.
    let scs = scenarios(&args, &dir)?;
    let mut runner = Runner {
        args: &args,
        settings: dnsperf::Settings {
            cpus: Some(args.client_cpus.clone()),
            clients: args.clients,
            threads: args.dnsperf_threads,
            outstanding: args.outstanding,
        },
        stub: &stub,
        ferry: &mut ferry,
        unbound: &mut unbound,
        dir: &dir,
        cache_set: 0,
    };
    let mut results = Vec::new();
    for sc in &scs {
        say(&format!("\n### 4. {}", sc.title));
        let r = match runner.throughput(sc) {
            Ok(r) => r,
            Err(e) => {
                say(&format!("  not measured: {e:#}"));
                ScenarioResult {
                    error: Some(format!("{e:#}")),
                    ..ScenarioResult::default()
                }
            }
        };
        results.push(r);
    }
    for (sc, r) in scs.iter().zip(results.iter_mut()) {
        if r.error.is_some() {
            continue;
        }
        let unbound_qps = mean(r.unbound.iter().map(|o| o.summary.qps));
        for &share in &args.latency_rates {
            say(&format!(
                "\n### 5. percentiles at a fixed rate ({:.0}% of unbound's QPS): {}",
                share * 100.0,
                sc.key
            ));
            match runner.latency(sc, unbound_qps, share) {
                Ok(l) => r.latency.push(l),
                Err(e) => {
                    say(&format!("  not measured: {e:#}"));
                    r.error = Some(format!("latency runs: {e:#}"));
                    break;
                }
            }
        }
    }
    let profile = match args.perf_seconds {
        Some(s) => {
            say("\n### 6. perf record of ferry dns, cluster names");
            match perf_profile(&args, &mut runner, &scs[0], s) {
                Ok(p) => Some(p),
                Err(e) => Some(format!("perf not run: {e:#}")),
            }
        }
        None => None,
    };
    drop(runner);

    // 5. Memory after everything, then stop.
    let ferry_exited_early = ferry.child.exited();
    let ferry_mem_end = proc::memory(ferry.pid()).unwrap_or_default();
    let unbound_mem_end = proc::memory(unbound.pid()).unwrap_or_default();
    let metrics = ferry_metrics(ferry_settings.metrics);
    let ferry_cpu_threads = proc::thread_cpu(ferry.pid());
    let ferry_exit = ferry.child.stop();
    let unbound_exit = unbound.child.stop();
    let apiserver_exit = apiserver.stop();
    let load_after = proc::load_average();
    let elapsed = started.elapsed().unwrap_or_default();

    // The report.
    say("\n### results");
    let mut t = Table { rows: Vec::new() };
    t.row([
        "measurement",
        "ferry dns",
        "unbound",
        "ferry / unbound",
        "target / reference",
    ]);
    t.row([
        "answers checked one by one (every Service A; 1% sample of NXDOMAIN and AAAA NODATA)",
        &ferry_check.cell(),
        &unbound_check.cell(),
        "",
        "all right",
    ]);
    t.row([
        &format!("a name outside both zones (`{outside} A`)"),
        &outside_cells[0],
        &outside_cells[1],
        "",
        "never leaves the machine",
    ]);
    for (sc, r) in scs.iter().zip(&results) {
        scenario_rows(&mut t, sc, r, &args);
    }
    let coredns_mb = (pods + args.services) as f64 / 1000.0 + 54.0;
    t.row(["**memory and start-up**", "", "", "", ""]);
    t.row([
        "  VmRSS (anon + file) / VmHWM one second after ready",
        &mem_cell(&ferry_mem_ready),
        &mem_cell(&unbound_mem_ready),
        &format!(
            "{:.2}",
            ferry_mem_ready.rss as f64 / unbound_mem_ready.rss.max(1) as f64
        ),
        "",
    ]);
    t.row([
        "  VmRSS (anon + file) / VmHWM after all runs",
        &mem_cell(&ferry_mem_end),
        &mem_cell(&unbound_mem_end),
        &format!(
            "{:.2}",
            ferry_mem_end.rss as f64 / unbound_mem_end.rss.max(1) as f64
        ),
        &format!("≤ 40 MB; CoreDNS formula (pods+services)/1000+54 MB = {coredns_mb:.0} MB"),
    ]);
    t.row([
        "  start → ready (ferry: `/ready` 200; unbound: first answer)",
        &format!("{:.3} s", ferry_ready.as_secs_f64()),
        &format!("{:.3} s", unbound_ready.as_secs_f64()),
        "",
        "",
    ]);
    t.row([
        &format!(
            "  loading the API server ({} in flight): Services / EndpointSlices / Pods / Pod statuses",
            args.concurrency
        ),
        &format!(
            "{:.1} / {:.1} / {:.1} / {} s; total {:.1} s; API server VmRSS {}",
            loaded.services.as_secs_f64(),
            loaded.slices.as_secs_f64(),
            loaded.pods.as_secs_f64(),
            loaded
                .pod_status
                .map_or("not written".into(), |d| format!("{:.1}", d.as_secs_f64())),
            loaded.total().as_secs_f64(),
            mib(apiserver_rss)
        ),
        "",
        "",
        "",
    ]);
    for (k, v) in &facts {
        t.row([&format!("machine: {k}"), v, "", "", ""]);
    }
    t.row([
        "machine: load average at start / end",
        &format!("{load_before} / {load_after}"),
        "",
        "",
        "",
    ]);
    t.row([
        "run time of the benchmark",
        &format!("{:.0} s", elapsed.as_secs_f64()),
        "",
        "",
        "",
    ]);
    t.print();

    say("\nsetup:");
    say(&format!(
        "- {} Services (ClusterIP allocated by the API server, named port http 80/TCP), {} EndpointSlices of {} ready endpoints (port http 8080), {pods} Pods (nodeName set{}); ferry dns watches Services, EndpointSlices and Namespaces only (no Pod watch: `--pods insecure`)",
        args.services,
        args.services,
        args.endpoints,
        match (&loaded.pod_status, &loaded.pod_status_error) {
            (Some(_), _) => ", status.podIP written through pods/status".to_string(),
            (None, Some(e)) => format!(", spec only: the status write failed: {}", first_line(e)),
            (None, None) => ", spec only".to_string(),
        }
    ));
    say(&format!("- ferry: `{}`", ferry.command));
    say(&format!(
        "- unbound: `{}` (config: num-threads 1, so-rcvbuf 4m, module-config iterator, local-zone cluster.local. static with the SOA and {} A + {} PTR local-data, local-zone . refuse, example. forwarded to the stub)",
        unbound.command, args.services, args.services
    ));
    say(&format!(
        "- dnsperf: `taskset -c {} dnsperf -s 127.0.0.1 -p <port> -d <file> -l {} -c {} -T {} -q {}`; warm-up `-n 1` per server, then ferry, unbound, ferry, unbound...; percentiles from separate `-v -Q <rate> -l {}` runs in the same order, at {} of unbound's mean QPS on the same file",
        args.client_cpus,
        args.duration,
        args.clients,
        args.dnsperf_threads,
        args.outstanding,
        args.latency_duration,
        args.latency_rates
            .iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    say(&format!(
        "- pinning: ferry dns (all its threads) and unbound on CPU {}, dnsperf, the upstream stub and this program on CPU {}, the API server on CPU {} (idle during the runs); both servers stay up, the one not measured is idle",
        args.server_cpus, args.client_cpus, args.apiserver_cpus
    ));
    say(
        "- everything runs in a fresh network namespace with only `lo` (run.sh), upstream stub on 127.0.0.1",
    );
    if let Some(status) = ferry_exited_early {
        say(&format!(
            "**ferry dns had exited before the end: {status}**"
        ));
    }
    say(&format!(
        "- exits: ferry dns {}, unbound {}, API server {}",
        ferry_exit.map_or("?".into(), |s| s.to_string()),
        unbound_exit.map_or("?".into(), |s| s.to_string()),
        apiserver_exit.map_or("?".into(), |s| s.to_string()),
    ));
    say("\nferry dns CPU by thread over its life:");
    for (name, d) in &ferry_cpu_threads {
        say(&format!("- {name}: {:.2} s", d.as_secs_f64()));
    }
    say("\nferry dns /metrics at the end (selected):");
    for l in &metrics {
        say(&format!("    {l}"));
    }
    let problems = log_problems(&ferry.log);
    say(&format!(
        "\nferry dns log: {} WARN/ERROR lines{}",
        problems.len(),
        if problems.is_empty() { "" } else { ":" }
    ));
    for l in problems.iter().take(10) {
        say(&format!("    {l}"));
    }
    let stats: Vec<String> = std::fs::read_to_string(&unbound.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("server stats") || l.contains("error") || l.contains("warning"))
        .map(str::to_string)
        .collect();
    say("\nunbound log (stats, warnings, errors):");
    for l in &stats {
        say(&format!("    {l}"));
    }
    if let Some(p) = profile {
        say(&format!("\n{p}"));
    }
    say(&format!("\nupstream stub: {} queries in all", stub.count()));
    drop(stub);
    Ok(())
}
