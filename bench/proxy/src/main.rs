//! `ferry proxy` at 10,000 Services x 5 endpoints (issue 6, point 9),
//! side by side with kube-proxy-shaped rulesets in one run (BENCHMARKS.md):
//!
//! 1. full sync into a fresh namespace per round: Ferry's agent path
//!    (plan, render, diff, apply) against `iptables-legacy-restore`,
//!    `iptables-nft-restore` (kube-proxy's iptables mode) and `nft -f`
//!    (kube-proxy's nftables mode), interleaved;
//! 2. one endpoint replaced, 10,000 Services loaded: Ferry's partial sync
//!    (the agent's: that Service re-planned, `Tables::update`, apply; the
//!    cost of recomputing everything beside it) against kube-proxy's
//!    partial `iptables-restore --noflush`;
//! 3. new connections per second to the first and to the last Service,
//!    through Ferry's table and through the iptables-legacy ruleset;
//! 4. the real `ferry proxy` against a real `ferry apiserver`: time to the
//!    first full sync and memory.
//!
//! Needs root, `ip`, `nft`, `iptables-legacy-restore`,
//! `iptables-nft-restore` (bench/proxy/run.sh installs them).

mod cluster;
mod conns;
mod ferry;
mod references;
mod rss;
mod util;

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::cluster::{Cluster, SERVICE_PORT, cluster_ip};
use crate::conns::Rate;
use crate::ferry::{Phases, Syncer};
use crate::util::{Netns, median, ms, percentile, ratio, secs};

#[derive(Parser)]
#[command(about = "ferry proxy at scale, side by side with kube-proxy-shaped rulesets")]
struct Args {
    /// Services (one TCP port each).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Ready endpoints per Service.
    #[arg(long, default_value_t = 5)]
    endpoints: usize,
    /// Full-sync rounds (each loads Ferry and every reference once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// One-endpoint changes, each on another Service.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Seconds of each new-connection measurement.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Client threads of the new-connection test.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Rounds of the new-connection test (first and last, each ruleset,
    /// order reversed every other round).
    #[arg(long, default_value_t = 2)]
    conn_rounds: usize,
    /// `ferry` binary for the RSS part (without it, that part is skipped).
    #[arg(long)]
    ferry_bin: Option<PathBuf>,
    /// `taskset -c` CPU list for the API server of the RSS part.
    #[arg(long)]
    apiserver_cpus: Option<String>,
    /// Requests in flight while creating the objects of the RSS part.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// A reference load slower than this (seconds) runs only once.
    #[arg(long, default_value_t = 60.0)]
    slow_limit: f64,
    /// Keep the generated reference inputs (iptables-restore, nft, the
    /// last partial restore) in this directory.
    #[arg(long)]
    keep_files: Option<PathBuf>,
    /// Prefix of the network namespaces' names (default fbproxy-<pid>).
    #[arg(long)]
    netns_prefix: Option<String>,
    /// Parts to leave out.
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Part>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// The kube-proxy nftables-mode load (slow).
    NftShape,
    Changes,
    Conns,
    Rss,
}

/// Prints a progress line at once.
fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// Timings of one reference, or why it was not measured.
struct Reference {
    name: &'static str,
    times: Vec<Duration>,
    error: Option<String>,
    note: Option<String>,
}

impl Reference {
    fn new(name: &'static str) -> Reference {
        Reference {
            name,
            times: Vec::new(),
            error: None,
            note: None,
        }
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Records one timing; the first error stops further attempts.
    fn record(&mut self, result: anyhow::Result<Duration>) -> bool {
        match result {
            Ok(d) => {
                self.times.push(d);
                true
            }
            Err(e) => {
                say(&format!("  {}: not measured: {e:#}", self.name));
                self.error = Some(format!("{e:#}"));
                false
            }
        }
    }

    /// "median s (n runs)" or why not.
    fn median_cell(&self) -> String {
        match &self.error {
            _ if !self.times.is_empty() => {
                let n = self.times.len();
                format!(
                    "{}{}",
                    secs(median(&self.times)),
                    if n == 1 {
                        " (1 run)".to_string()
                    } else {
                        String::new()
                    }
                )
            }
            Some(e) => format!("not measured: {}", first_line(e)),
            None => "not measured".into(),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Counts `-A` rules of the nat table in `ns` (`*-save` of that flavour).
fn saved_rules(ns: &Netns, save: &str) -> anyhow::Result<usize> {
    let out = ns.output(save, &["-t", "nat"])?;
    Ok(out.lines().filter(|l| l.starts_with("-A ")).count())
}

fn load_iptables(
    ns: &Netns,
    restore: &str,
    save: &str,
    file: &Path,
    expect: Option<usize>,
) -> anyhow::Result<Duration> {
    let took = ns.time(restore, &[], Some(file))?;
    if let Some(expect) = expect {
        let rules = saved_rules(ns, save)?;
        anyhow::ensure!(
            rules == expect,
            "{save}: {rules} nat rules, expected {expect}"
        );
    }
    Ok(took)
}

struct Row {
    cells: Vec<String>,
}

fn row(cells: &[&str]) -> Row {
    Row {
        cells: cells.iter().map(|s| s.to_string()).collect(),
    }
}

fn print_table(rows: &[Row]) {
    for (i, r) in rows.iter().enumerate() {
        println!("| {} |", r.cells.join(" | "));
        if i == 0 {
            println!("|{}", "---|".repeat(r.cells.len()));
        }
    }
}

fn phases_cell(
    p: &[Phases],
    f: impl Fn(&Phases) -> Duration,
    unit: fn(Duration) -> String,
) -> String {
    let v: Vec<Duration> = p.iter().map(f).collect();
    unit(median(&v))
}

fn p50_p90(v: &[Duration]) -> String {
    if v.is_empty() {
        return "not measured".into();
    }
    format!("{} / {}", ms(percentile(v, 50.0)), ms(percentile(v, 90.0)))
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
    let version = |program: &str, arg: &str| {
        util::run(program, &[arg])
            .map(|s| first_line(s.trim()).to_string())
            .unwrap_or_else(|e| format!("unavailable ({})", first_line(&format!("{e:#}"))))
    };
    vec![
        ("CPUs online".into(), read("/sys/devices/system/cpu/online")),
        ("this process pinned to CPUs".into(), allowed),
        ("kernel".into(), read("/proc/sys/kernel/osrelease")),
        ("nft".into(), version("nft", "--version")),
        (
            "iptables-legacy".into(),
            version("iptables-legacy", "--version"),
        ),
        ("iptables-nft".into(), version("iptables-nft", "--version")),
    ]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.services >= 3 && args.endpoints >= 1,
        "need at least 3 Services and 1 endpoint"
    );
    if let Some(prefix) = &args.netns_prefix {
        util::set_netns_prefix(prefix.clone());
    }
    let load_before = util::load_average();
    let facts = machine_facts();
    say(&format!(
        "## ferry proxy benchmark: {} Services x {} endpoints",
        args.services, args.endpoints
    ));
    for (k, v) in &facts {
        say(&format!("{k}: {v}"));
    }
    say(&format!("load average at start: {load_before}"));

    let mut cluster = Cluster::new(args.services, args.endpoints)?;
    let temp = tempfile::Builder::new()
        .prefix("ferry-bench-proxy.")
        .tempdir()
        .context("creating a temp dir")?;
    let files = match &args.keep_files {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let ipt_file = files.join("kube-proxy-iptables.rules");
    let ipt_text = references::iptables_full(&cluster);
    std::fs::write(&ipt_file, &ipt_text).context("writing the iptables rules")?;
    let ipt_rules = references::iptables_rule_count(&cluster);
    let nft_file = files.join("kube-proxy-nftables.nft");
    let nft_text = references::nft_kube_proxy(&cluster);
    std::fs::write(&nft_file, &nft_text).context("writing the nft file")?;
    let nft_arg = nft_file.to_string_lossy().into_owned();
    say(&format!(
        "references: iptables-restore input {} KiB ({ipt_rules} nat rules); nft file {} KiB ({} chains)",
        ipt_text.len() / 1024,
        nft_text.len() / 1024,
        args.services * (1 + args.endpoints) + 6
    ));
    drop((ipt_text, nft_text));

    // 1. Full sync, interleaved, each into a fresh namespace. The last
    // round's namespaces stay for parts 2 and 3.
    say("\n### 1. full sync, each into a fresh network namespace");
    let mut ferry_full: Vec<Phases> = Vec::new();
    let mut legacy = Reference::new("iptables-legacy-restore");
    let mut ipt_nft = Reference::new("iptables-nft-restore");
    let mut nft_shape = Reference::new("nft -f (kube-proxy nftables shape)");
    let mut ferry_state: Option<(Syncer, Netns)> = None;
    let mut legacy_ns: Option<Netns> = None;
    let mut ipt_nft_ns: Option<Netns> = None;
    let mut ferry_check = String::new();
    if args.skip.contains(&Part::NftShape) {
        nft_shape.error = Some("skipped (--skip nft-shape)".into());
    }
    for round in 1..=args.rounds {
        // Drop the previous round's namespaces first: one ruleset of each
        // kind in the kernel at a time.
        drop(ferry_state.take());
        let ns = Netns::new("ferry")?;
        let mut syncer = Syncer::open(&ns)?;
        let phases = syncer.full_sync(&cluster)?;
        if round == 1 {
            ferry_check = syncer.verify(&cluster)?;
            say(&format!("  ferry table read back: {ferry_check}"));
        }
        ferry_full.push(phases);
        ferry_state = Some((syncer, ns));
        let check = (round == 1).then_some(ipt_rules);

        drop(legacy_ns.take());
        if !legacy.failed() {
            let ns = Netns::new("legacy")?;
            if legacy.record(load_iptables(
                &ns,
                "iptables-legacy-restore",
                "iptables-legacy-save",
                &ipt_file,
                check,
            )) {
                legacy_ns = Some(ns);
            }
        }
        drop(ipt_nft_ns.take());
        if !ipt_nft.failed() {
            let ns = Netns::new("iptnft")?;
            if ipt_nft.record(load_iptables(
                &ns,
                "iptables-nft-restore",
                "iptables-nft-save",
                &ipt_file,
                check,
            )) {
                ipt_nft_ns = Some(ns);
            }
        }
        let slow = nft_shape
            .times
            .first()
            .is_some_and(|t| t.as_secs_f64() > args.slow_limit);
        if !nft_shape.failed() && !slow {
            let ns = Netns::new("nftshape")?;
            nft_shape.record(ns.time("nft", &["-f", &nft_arg], None));
            drop(ns);
        } else if slow && nft_shape.note.is_none() {
            nft_shape.note = Some(format!(
                "ran once only: its first load took more than {} s",
                args.slow_limit
            ));
        }
        let cell = |r: &Reference| r.times.get(round - 1).map_or("-".into(), |d| secs(*d));
        say(&format!(
            "  round {round}: ferry {} (plan {} / render {} / diff {} / apply {}; {} messages, {} KiB) | iptables-legacy {} | iptables-nft {} | nft shape {}",
            secs(phases.total()),
            secs(phases.plan),
            secs(phases.render),
            secs(phases.diff),
            secs(phases.apply),
            phases.messages,
            phases.bytes / 1024,
            cell(&legacy),
            cell(&ipt_nft),
            cell(&nft_shape),
        ));
    }
    let (mut syncer, ferry_ns) = ferry_state.context("no full-sync round ran")?;

    // 2. One endpoint replaced, each time on another Service (never the
    // first or last: part 3 uses those).
    let mut ferry_changes: Vec<Phases> = Vec::new();
    let mut ferry_recomputes: Vec<Phases> = Vec::new();
    let mut legacy_partial = Reference::new("iptables-legacy-restore --noflush");
    let mut nft_partial = Reference::new("iptables-nft-restore --noflush");
    let mut change_check = String::new();
    if !args.skip.contains(&Part::Changes) {
        say(&format!(
            "\n### 2. one-endpoint changes, {} Services loaded",
            args.services
        ));
        let partial_file = files.join("partial.rules");
        let mut previous = syncer.render_all(&cluster);
        for j in 0..args.changes {
            let i = 1 + (j * 997 + 17) % (args.services - 2);
            let old = cluster.change_endpoint(i);
            let phases = syncer.partial_sync(&cluster, i)?;
            ferry_changes.push(phases);
            let (full, next) = syncer.recompute(&cluster, &previous);
            previous = next;
            ferry_recomputes.push(full);
            std::fs::write(
                &partial_file,
                references::iptables_partial(&cluster, i, old),
            )?;
            if let Some(ns) = &legacy_ns
                && !legacy_partial.failed()
            {
                legacy_partial.record(ns.time(
                    "iptables-legacy-restore",
                    &["--noflush"],
                    Some(&partial_file),
                ));
            }
            if let Some(ns) = &ipt_nft_ns
                && !nft_partial.failed()
            {
                nft_partial.record(ns.time(
                    "iptables-nft-restore",
                    &["--noflush"],
                    Some(&partial_file),
                ));
            }
            let cell = |r: &Reference| r.times.get(j).map_or("-".into(), |d| ms(*d));
            say(&format!(
                "  change {}: {} ({old} -> {}): ferry partial sync {} (select + plan {} / Tables::update {} / apply {}; {} messages) | recomputing everything instead {} ({} messages) | iptables-legacy {} | iptables-nft {}",
                j + 1,
                cluster::service_name(i),
                cluster.endpoints[i][0],
                ms(phases.total()),
                ms(phases.plan),
                ms(phases.render),
                ms(phases.apply),
                phases.messages,
                ms(full.total()),
                full.messages,
                cell(&legacy_partial),
                cell(&nft_partial),
            ));
        }
        // The kernel must hold exactly the changed cluster.
        change_check = syncer.verify(&cluster)?;
        say(&format!("  ferry table read back: {change_check}"));
        for (ns, save, r) in [
            (&legacy_ns, "iptables-legacy-save", &mut legacy_partial),
            (&ipt_nft_ns, "iptables-nft-save", &mut nft_partial),
        ] {
            if let Some(ns) = ns
                && !r.failed()
            {
                let rules = saved_rules(ns, save)?;
                if rules != ipt_rules {
                    r.error = Some(format!(
                        "after the partial syncs {save} shows {rules} nat rules, expected {ipt_rules}"
                    ));
                }
            }
        }
    } else {
        legacy_partial.error = Some("skipped (--skip changes)".into());
        nft_partial.error = Some("skipped (--skip changes)".into());
    }
    drop(ipt_nft_ns);

    // 3. New connections to the first and the last Service.
    let mut conn_results: Option<ConnResults> = None;
    let mut conn_error: Option<String> = None;
    if args.skip.contains(&Part::Conns) {
        conn_error = Some("skipped (--skip conns)".into());
    } else if let Some(legacy_ns) = &legacy_ns {
        say(&format!(
            "\n### 3. new connections per second, {} client threads, {} s each",
            args.client_threads, args.duration
        ));
        match connection_rates(&args, &cluster, &ferry_ns, legacy_ns) {
            Ok(r) => conn_results = Some(r),
            Err(e) => {
                say(&format!("  not measured: {e:#}"));
                conn_error = Some(format!("{e:#}"));
            }
        }
    } else {
        conn_error = Some(format!(
            "no iptables-legacy ruleset to compare with ({})",
            legacy.error.as_deref().unwrap_or("not loaded")
        ));
    }
    drop(syncer);
    drop(ferry_ns);
    drop(legacy_ns);

    // 4. The real proxy.
    let mut rss_result = None;
    let rss_error = if args.skip.contains(&Part::Rss) {
        Some("skipped (--skip rss)".to_string())
    } else if let Some(ferry_bin) = &args.ferry_bin {
        say("\n### 4. the real `ferry proxy` against `ferry apiserver`");
        let fresh = Cluster::new(args.services, args.endpoints)?;
        let settings = rss::Settings {
            ferry_bin: ferry_bin.clone(),
            apiserver_cpus: args.apiserver_cpus.clone(),
            concurrency: args.concurrency,
        };
        match rss::measure(&settings, &fresh, |l| say(&format!("  {l}"))) {
            Ok(r) => {
                say(&format!(
                    "  first full sync {:.3} s after start ({}); VmRSS {} KiB, VmHWM {} KiB; {} service-ids in the kernel",
                    r.to_first_sync.as_secs_f64(),
                    r.sync_summary(),
                    r.proxy_rss_kib,
                    r.proxy_hwm_kib,
                    r.service_ids
                ));
                rss_result = Some(r);
                None
            }
            Err(e) => {
                say(&format!("  not measured: {e:#}"));
                Some(format!("{e:#}"))
            }
        }
    } else {
        Some("no --ferry-bin given".to_string())
    };
    let load_after = util::load_average();

    // The table.
    say("\n### results");
    let mut rows = vec![row(&[
        "#",
        "measurement",
        "Ferry",
        "iptables-legacy",
        "iptables-nft",
        "nft -f, kube-proxy nftables shape",
        "issue 6 figure / target",
    ])];
    let n = args.services;
    let ferry_total: Vec<Duration> = ferry_full.iter().map(Phases::total).collect();
    let ferry_median = median(&ferry_total);
    rows.push(row(&[
        "1",
        &format!("full sync of {n} Services x {} endpoints into a fresh netns, median of {} (Ferry: plan + render (Tables::build) + diff + apply; references: the restore/nft process)", args.endpoints, args.rounds),
        &secs(ferry_median),
        &legacy.median_cell(),
        &ipt_nft.median_cell(),
        &format!("{}{}", nft_shape.median_cell(), nft_shape.note.as_ref().map_or(String::new(), |n| format!("; {n}"))),
        "legacy 1.6 s; iptables-nft 3.9 s; nft kube-proxy shape 20.8 s; map-only shape via nft -f 0.38 s",
    ]));
    for (name, f) in [
        ("plan", (|p: &Phases| p.plan) as fn(&Phases) -> Duration),
        ("render", |p| p.render),
        ("diff (encode the batch)", |p| p.diff),
        ("apply (kernel)", |p| p.apply),
    ] {
        rows.push(row(&[
            "1",
            &format!("  Ferry phase: {name}, median"),
            &phases_cell(&ferry_full, f, secs),
            "",
            "",
            "",
            "",
        ]));
    }
    let first = ferry_full.first().copied().unwrap_or_default();
    rows.push(row(&[
        "1",
        "  Ferry batch",
        &format!("{} messages, {} KiB", first.messages, first.bytes / 1024),
        "",
        "",
        "",
        "",
    ]));
    rows.push(row(&[
        "1",
        "  Ferry table read back (round 1)",
        &ferry_check,
        &format!("{ipt_rules} nat rules checked"),
        &format!("{ipt_rules} nat rules checked"),
        "",
        "",
    ]));
    let vs = |r: &Reference| {
        if r.times.is_empty() {
            "-".to_string()
        } else {
            ratio(median(&r.times), ferry_median)
        }
    };
    rows.push(row(&[
        "1",
        "  reference time / Ferry time",
        "1.0x",
        &vs(&legacy),
        &vs(&ipt_nft),
        &vs(&nft_shape),
        "",
    ]));

    let change_total: Vec<Duration> = ferry_changes.iter().map(Phases::total).collect();
    let partial_cell = |r: &Reference| {
        if r.times.is_empty() {
            r.median_cell()
        } else {
            format!(
                "{}{}",
                p50_p90(&r.times),
                r.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            )
        }
    };
    rows.push(row(&[
        "2",
        &format!("one endpoint replaced, {n} Services loaded, p50 / p90 of {} (Ferry: the agent's partial sync, select + plan the Service, Tables::update, apply; iptables: kube-proxy's partial restore --noflush, which rewrites KUBE-SERVICES whole)", ferry_changes.len()),
        &p50_p90(&change_total),
        &partial_cell(&legacy_partial),
        &partial_cell(&nft_partial),
        "not measured",
        "target <= 10 ms (Ferry)",
    ]));
    for (name, f) in [
        (
            "select the Service's slices + plan it",
            (|p: &Phases| p.plan) as fn(&Phases) -> Duration,
        ),
        ("Tables::update (render + diff of that Service)", |p| {
            p.render
        }),
        ("apply (kernel)", |p| p.apply),
    ] {
        let v: Vec<Duration> = ferry_changes.iter().map(f).collect();
        rows.push(row(&[
            "2",
            &format!("  Ferry phase: {name}, p50 / p90"),
            &p50_p90(&v),
            "",
            "",
            "",
            "",
        ]));
    }
    let recompute_total: Vec<Duration> = ferry_recomputes.iter().map(Phases::total).collect();
    let recompute_phase = |f: fn(&Phases) -> Duration| {
        let v: Vec<Duration> = ferry_recomputes.iter().map(f).collect();
        ms(percentile(&v, 50.0))
    };
    rows.push(row(&[
        "2",
        "  for comparison, the same changes by recomputing everything: plan all + render all + diff(Some(&previous)), not applied; p50 / p90 (p50 plan / render / diff)",
        &format!(
            "{} ({} / {} / {})",
            p50_p90(&recompute_total),
            recompute_phase(|p| p.plan),
            recompute_phase(|p| p.render),
            recompute_phase(|p| p.diff)
        ),
        "",
        "",
        "",
        "",
    ]));
    if !ferry_changes.is_empty() {
        let mut msgs: Vec<usize> = ferry_changes.iter().map(|p| p.messages).collect();
        msgs.sort_unstable();
        rows.push(row(&[
            "2",
            "  Ferry batch messages per change (min / max)",
            &format!("{} / {}", msgs[0], msgs[msgs.len() - 1]),
            "",
            "",
            "",
            "",
        ]));
        rows.push(row(&[
            "2",
            "  Ferry table read back after the changes",
            &change_check,
            "",
            "",
            "",
            "",
        ]));
    }

    match (&conn_results, &conn_error) {
        (Some(c), _) => {
            let rate = |r: &Rate| format!("{:.0}", r.per_second());
            let ok = |r: &Rate, accepted: u64| {
                format!(
                    "{} of {} connected, {} accepted",
                    r.ok, r.attempts, accepted
                )
            };
            rows.push(row(&["3", &format!("new connections/s to the first Service ({}:{SERVICE_PORT}), {} client threads, {} x {} s", cluster_ip(0), args.client_threads, args.conn_rounds, args.duration), &rate(&c.ferry[0]), &rate(&c.legacy[0]), "", "", ""]));
            rows.push(row(&[
                "3",
                &format!(
                    "new connections/s to the last Service ({}:{SERVICE_PORT})",
                    cluster_ip(n - 1)
                ),
                &rate(&c.ferry[1]),
                &rate(&c.legacy[1]),
                "",
                "",
                "",
            ]));
            rows.push(row(&[
                "3",
                "  last / first",
                &format!(
                    "{:.3}",
                    c.ferry[1].per_second() / c.ferry[0].per_second().max(1e-9)
                ),
                &format!(
                    "{:.3}",
                    c.legacy[1].per_second() / c.legacy[0].per_second().max(1e-9)
                ),
                "",
                "",
                "target >= 0.95 (Ferry)",
            ]));
            rows.push(row(&[
                "3",
                "  first: connected / attempts, accepted by the endpoints",
                &ok(&c.ferry[0], c.ferry_accepted[0]),
                &ok(&c.legacy[0], c.legacy_accepted[0]),
                "",
                "",
                "",
            ]));
            rows.push(row(&[
                "3",
                "  last: connected / attempts, accepted by the endpoints",
                &ok(&c.ferry[1], c.ferry_accepted[1]),
                &ok(&c.legacy[1], c.legacy_accepted[1]),
                "",
                "",
                "",
            ]));
        }
        (None, e) => {
            let why = format!(
                "not measured: {}",
                first_line(e.as_deref().unwrap_or("unknown"))
            );
            rows.push(row(&[
                "3",
                "new connections/s to the first and the last Service",
                &why,
                &why,
                "",
                "",
                "target last/first >= 0.95 (Ferry)",
            ]));
        }
    }

    match (&rss_result, &rss_error) {
        (Some(r), _) => {
            rows.push(row(&[
                "4",
                &format!(
                    "real `ferry proxy`: start to first full sync ({}; {} sync lines logged)",
                    r.sync_summary(),
                    r.syncs_logged
                ),
                &secs(r.to_first_sync),
                "",
                "",
                "",
                "",
            ]));
            rows.push(row(&[
                "4",
                "  `ferry proxy` VmRSS / VmHWM after the first full sync",
                &format!(
                    "{:.1} MiB / {:.1} MiB",
                    r.proxy_rss_kib as f64 / 1024.0,
                    r.proxy_hwm_kib as f64 / 1024.0
                ),
                "",
                "",
                "",
                "",
            ]));
            rows.push(row(&[
                "4",
                "  service-ids elements in its namespace",
                &r.service_ids.to_string(),
                "",
                "",
                "",
                "",
            ]));
            rows.push(row(&["4", &format!("  setup: creating {n} Services / {n} EndpointSlices through kube-rs ({} in flight); API server VmRSS after", args.concurrency), &format!("{} / {}; {:.1} MiB", secs(r.create_services), secs(r.create_slices), r.apiserver_rss_kib as f64 / 1024.0), "", "", "", ""]));
        }
        (None, e) => {
            rows.push(row(&[
                "4",
                "real `ferry proxy`: time to first full sync, VmRSS, VmHWM",
                &format!(
                    "not measured: {}",
                    first_line(e.as_deref().unwrap_or("unknown"))
                ),
                "",
                "",
                "",
                "",
            ]));
        }
    }
    for (k, v) in &facts {
        rows.push(row(&["", &format!("machine: {k}"), v, "", "", "", ""]));
    }
    rows.push(row(&[
        "",
        "machine: load average before / after",
        &format!("{load_before} / {load_after}"),
        "",
        "",
        "",
        "",
    ]));
    print_table(&rows);
    for r in [&legacy, &ipt_nft, &nft_shape, &legacy_partial, &nft_partial] {
        if let Some(e) = &r.error {
            say(&format!("note: {}: {e}", r.name));
        }
    }
    if let Some(e) = &rss_error {
        say(&format!("note: part 4: {e}"));
    }
    Ok(())
}

/// Part 3's figures: index 0 the first Service, 1 the last.
struct ConnResults {
    ferry: [Rate; 2],
    legacy: [Rate; 2],
    ferry_accepted: [u64; 2],
    legacy_accepted: [u64; 2],
}

fn connection_rates(
    args: &Args,
    cluster: &Cluster,
    ferry_ns: &Netns,
    legacy_ns: &Netns,
) -> anyhow::Result<ConnResults> {
    let last = args.services - 1;
    let eps = [&cluster.endpoints[0], &cluster.endpoints[last]];
    let all: Vec<Ipv4Addr> = eps.iter().flat_map(|e| e.iter().copied()).collect();
    let targets = [
        SocketAddrV4::new(cluster_ip(0), SERVICE_PORT),
        SocketAddrV4::new(cluster_ip(last), SERVICE_PORT),
    ];
    let namespaces = [ferry_ns, legacy_ns];
    let mut listeners = Vec::new();
    for ns in namespaces {
        conns::prepare(ns, &all)?;
        listeners.push(conns::Listeners::start(ns, &all)?);
    }
    let k = args.endpoints;
    let mut rates = [[Rate::default(); 2]; 2];
    let mut accepted = [[0u64; 2]; 2];
    let duration = Duration::from_secs_f64(args.duration);
    for round in 0..args.conn_rounds {
        // A B A B, reversed every other round so drift cancels.
        let order: [usize; 2] = if round.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for (r, ns) in namespaces.iter().enumerate() {
            for which in order {
                let before = listeners[r].accepted();
                let rate = conns::measure(ns, targets[which], duration, args.client_threads)?;
                // Let the last accepts land before counting.
                std::thread::sleep(Duration::from_millis(50));
                let after = listeners[r].accepted();
                let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
                let (mine, others) = if which == 0 {
                    delta.split_at(k)
                } else {
                    let (o, m) = delta.split_at(k);
                    (m, o)
                };
                let got: u64 = mine.iter().sum();
                accepted[r][which] += got;
                say(&format!(
                    "  {} -> {} Service: {:.0} conn/s ({} of {} connected in {:.2} s; per endpoint {:?}{})",
                    ["ferry", "iptables-legacy"][r],
                    ["first", "last"][which],
                    rate.per_second(),
                    rate.ok,
                    rate.attempts,
                    rate.elapsed.as_secs_f64(),
                    mine,
                    if others.iter().any(|c| *c > 0) {
                        format!(
                            ", {} at the other Service's endpoints!",
                            others.iter().sum::<u64>()
                        )
                    } else {
                        String::new()
                    },
                ));
                rates[r][which].add(rate);
            }
        }
    }
    drop(listeners);
    Ok(ConnResults {
        ferry: rates[0],
        legacy: rates[1],
        ferry_accepted: accepted[0],
        legacy_accepted: accepted[1],
    })
}
