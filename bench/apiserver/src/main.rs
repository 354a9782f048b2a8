//! Benchmark of `ferry apiserver` through kube-rs (issue 2, point 7).
//!
//! In a fresh namespace: open `--watchers` pod watches, create
//! `--services` Services then `--pods` Pods from `--clients` writers (one
//! `kube::Client`, hence one connection, each), wait for the watchers to see
//! every pod, then list all pods. Prints create throughput and latency,
//! watch-delivery latency and list times. `run.sh` next to this crate starts
//! the server, runs this, and adds the server's RSS and a disk fsync figure.

mod load;
mod stats;
mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::{mpsc, watch as signal};

use crate::load::{Kind, PhaseResult};
use crate::stats::{Latencies, Millis, Summary};
use crate::watch::{Decode, Scope, WatcherConfig, WatcherResult};

const TARGET_CREATES_PER_SECOND: f64 = 5_000.0;
const TARGET_CREATE_P99_MICROS: u32 = 10_000;
const TARGET_WATCH_P99_MICROS: u32 = 50_000;

#[derive(Parser)]
#[command(about = "Load generator for `ferry apiserver` (creates, watches, list) via kube-rs")]
struct Args {
    /// Admin kubeconfig of the server under test.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Services to create (first phase).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Pods to create (second phase).
    #[arg(long, default_value_t = 50_000)]
    pods: usize,
    /// Concurrent writers, each with its own `kube::Client` and connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Concurrent pod watchers, each with its own `kube::Client`.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// How watchers decode events.
    #[arg(long, value_enum, default_value_t = Decode::Pod)]
    watch_decode: Decode,
    /// What each watcher watches.
    #[arg(long, value_enum, default_value_t = Scope::All)]
    watch_scope: Scope,
    /// Namespace to create and fill (default: `bench-<unix time>`).
    #[arg(long)]
    namespace: Option<String>,
    /// How long watchers may lag behind the last create before giving up.
    #[arg(long, default_value_t = 300)]
    drain_timeout_secs: u64,
    /// Server pid, to sample its RSS between phases (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| format!("bench-{}", load::unix_nanos() / 1_000_000_000));
    let admin = client(&args).await?;
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .with_context(|| format!("creating namespace {namespace}"))?;
    let mut rss = Vec::new();
    sample_rss(&args, "before load", &mut rss);

    let mut writers = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        writers.push(client(&args).await?);
    }

    // Watchers subscribe before any pod exists, from the current revision.
    let start_revision = Api::<Pod>::namespaced(admin.clone(), &namespace)
        .list(&ListParams::default().limit(1))
        .await
        .context("reading the starting resourceVersion")?
        .metadata
        .resource_version
        .unwrap_or_default();
    let (stop_tx, stop_rx) = signal::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(args.watchers.max(1));
    let mut watchers = Vec::with_capacity(args.watchers);
    for index in 0..args.watchers {
        let expected = match args.watch_scope {
            Scope::All => args.pods,
            Scope::Shard => (index..args.pods).step_by(args.watchers).count(),
        };
        let config = WatcherConfig {
            namespace: namespace.clone(),
            start_revision: start_revision.clone(),
            decode: args.watch_decode,
            scope: args.watch_scope,
            index,
            expected,
        };
        watchers.push(tokio::spawn(watch::run(
            client(&args).await?,
            config,
            ready_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(ready_tx);
    for n in 0..args.watchers {
        tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .with_context(|| format!("only {n} of {} watchers connected", args.watchers))?;
    }
    eprintln!(
        "namespace {namespace}: {} watchers open from resourceVersion {start_revision}",
        args.watchers
    );

    let shards = args.watchers.max(1);
    let services =
        load::create_phase(&writers, &namespace, Kind::Service, args.services, shards).await;
    eprintln!(
        "services: {} created in {:.2?}",
        services.created, services.elapsed
    );
    sample_rss(&args, "after services", &mut rss);
    let pods = load::create_phase(&writers, &namespace, Kind::Pod, args.pods, shards).await;
    let creates_done = Instant::now();
    eprintln!("pods: {} created in {:.2?}", pods.created, pods.elapsed);
    sample_rss(&args, "after pods, watchers open", &mut rss);

    // Wait for the watchers to catch up, then stop the stragglers.
    let deadline = Duration::from_secs(args.drain_timeout_secs);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(deadline).await;
        let _ = stop_tx.send(true);
    });
    let mut watch_results = Vec::with_capacity(watchers.len());
    for w in watchers {
        watch_results.push(w.await.context("watcher task")?);
    }
    stopper.abort();
    drop(stop_rx);

    let lists = list_all_pods(&admin).await?;
    sample_rss(&args, "after list, watchers closed", &mut rss);

    Report {
        args: &args,
        namespace: &namespace,
        services,
        pods,
        watchers: watch_results,
        creates_done,
        lists,
        rss,
    }
    .print();
    Ok(())
}

async fn client(args: &Args) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the client")
}

struct ListTimes {
    unpaged: Duration,
    unpaged_items: usize,
    paged: Duration,
    paged_items: usize,
    pages: usize,
}

/// All pods in all namespaces: once in one response, once in pages of 500
/// (kubectl's chunk size).
async fn list_all_pods(client: &kube::Client) -> anyhow::Result<ListTimes> {
    let api = Api::<Pod>::all(client.clone());
    let started = Instant::now();
    let all = api
        .list(&ListParams::default())
        .await
        .context("listing all pods")?;
    let unpaged = started.elapsed();

    let started = Instant::now();
    let mut params = ListParams::default().limit(500);
    let (mut paged_items, mut pages) = (0, 0);
    loop {
        let page = api.list(&params).await.context("listing pods by pages")?;
        pages += 1;
        paged_items += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(ListTimes {
        unpaged,
        unpaged_items: all.items.len(),
        paged: started.elapsed(),
        paged_items,
        pages,
    })
}

fn sample_rss(args: &Args, when: &'static str, out: &mut Vec<(&'static str, String)>) {
    let Some(pid) = args.server_pid else { return };
    let figure = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let field = |name: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .map(|l| l[name.len()..].trim().to_string())
            };
            Some(format!(
                "VmRSS {}, VmHWM {}",
                field("VmRSS:")?,
                field("VmHWM:")?
            ))
        })
        .unwrap_or_else(|| "unreadable".to_string());
    out.push((when, figure));
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

fn phase_rows(name: &str, phase: &PhaseResult, s: &Summary) {
    println!(
        "| {name} | {} ok, {} errors | {:.2} s | {:.0}/s | {} | {} | {} | {} |",
        phase.created,
        phase.errors,
        phase.elapsed.as_secs_f64(),
        phase.per_second(),
        Millis(s.p50),
        Millis(s.p90),
        Millis(s.p99),
        Millis(s.max),
    );
}

/// Everything one run measured.
struct Report<'a> {
    args: &'a Args,
    namespace: &'a str,
    services: PhaseResult,
    pods: PhaseResult,
    watchers: Vec<WatcherResult>,
    creates_done: Instant,
    lists: ListTimes,
    rss: Vec<(&'static str, String)>,
}

impl Report<'_> {
    fn print(self) {
        let Report {
            args,
            namespace,
            services,
            pods,
            watchers,
            creates_done,
            lists,
            rss,
        } = self;
        let (services, pods, lists) = (&services, &pods, &lists);
        let svc = services.latencies.summary();
        let pod = pods.latencies.summary();
        let mut all_lat = services.latencies.clone();
        all_lat.merge(pods.latencies.clone());
        let all = all_lat.summary();
        let total_created = services.created + pods.created;
        let total_elapsed = services.elapsed + pods.elapsed;
        let total_rate = total_created as f64 / total_elapsed.as_secs_f64();

        let (mut received, mut expected, mut rewatches, mut errors, mut unstamped) =
            (0, 0, 0, 0, 0);
        let mut complete = 0;
        let mut first_error = None;
        let mut last_event: Option<Instant> = None;
        let mut delivery = Latencies::default();
        for w in watchers {
            received += w.received;
            expected += w.expected;
            rewatches += w.rewatches;
            errors += w.errors;
            unstamped += w.unstamped;
            complete += usize::from(w.received >= w.expected);
            first_error = first_error.or(w.first_error);
            last_event = last_event.max(w.last_event);
            delivery.merge(w.latencies);
        }
        let delivery = delivery.summary();
        let drain = last_event.map(|t| t.saturating_duration_since(creates_done));

        println!();
        println!(
            "namespace {namespace}; {} writers (one kube::Client and connection each); \
         {} watchers ({:?} decode, {:?} scope, one kube::Client each)",
            args.clients, args.watchers, args.watch_decode, args.watch_scope
        );
        println!();
        println!("| creates | result | wall time | throughput | p50 | p90 | p99 | max |");
        println!("|---|---|---|---|---|---|---|---|");
        phase_rows(&format!("{} Services", args.services), services, &svc);
        phase_rows(&format!("{} Pods", args.pods), pods, &pod);
        println!(
            "| all | {total_created} ok | {:.2} s | {total_rate:.0}/s | {} | {} | {} | {} |",
            total_elapsed.as_secs_f64(),
            Millis(all.p50),
            Millis(all.p90),
            Millis(all.p99),
            Millis(all.max),
        );
        println!();
        println!("| watch delivery (ADDED, send → decoded by watcher) | figure |");
        println!("|---|---|");
        println!(
            "| events received / expected | {received} / {expected} ({complete} of {} watchers complete) |",
            args.watchers
        );
        println!(
            "| p50 / p90 / p99 / p99.9 / max | {} / {} / {} / {} / {} |",
            Millis(delivery.p50),
            Millis(delivery.p90),
            Millis(delivery.p99),
            Millis(delivery.p999),
            Millis(delivery.max)
        );
        println!("| mean | {:.2} ms |", delivery.mean_micros / 1000.0);
        match drain {
            Some(d) => println!(
                "| last event after last create response | {:.2} s |",
                d.as_secs_f64()
            ),
            None => println!("| last event after last create response | none received |"),
        }
        println!("| re-watches / errors / unstamped | {rewatches} / {errors} / {unstamped} |");
        if let Some(e) = first_error.as_ref() {
            println!("| first watcher error | {} |", e.replace('|', "/"));
        }
        println!();
        println!("| list all pods (kube-rs, all namespaces) | time | items |");
        println!("|---|---|---|");
        println!(
            "| one request | {:.3} s | {} |",
            lists.unpaged.as_secs_f64(),
            lists.unpaged_items
        );
        println!(
            "| pages of 500 ({} requests) | {:.3} s | {} |",
            lists.pages,
            lists.paged.as_secs_f64(),
            lists.paged_items
        );
        if !rss.is_empty() {
            println!();
            println!("| server memory | /proc/<pid>/status |");
            println!("|---|---|");
            for (when, figure) in rss {
                println!("| {when} | {figure} |");
            }
        }
        for (name, e) in [
            ("service", &services.first_error),
            ("pod", &pods.first_error),
        ] {
            if let Some(e) = e {
                println!("\nfirst {name} create error: {e}");
            }
        }

        let watch_complete = received == expected;
        println!();
        println!("| target | measured | met |");
        println!("|---|---|---|");
        println!(
            "| ≥ {TARGET_CREATES_PER_SECOND:.0} creates/s | {total_rate:.0}/s overall (services {:.0}/s, pods {:.0}/s) | {} |",
            services.per_second(),
            pods.per_second(),
            met(services.per_second() >= TARGET_CREATES_PER_SECOND
                && pods.per_second() >= TARGET_CREATES_PER_SECOND)
        );
        println!(
            "| create p99 ≤ 10 ms | {} overall (services {}, pods {}) | {} |",
            Millis(all.p99),
            Millis(svc.p99),
            Millis(pod.p99),
            met(all.p99 <= TARGET_CREATE_P99_MICROS)
        );
        if expected == 0 {
            println!("| watch delivery p99 ≤ 50 ms | not measured (no watchers) | - |");
        } else {
            println!(
                "| watch delivery p99 ≤ 50 ms | {}{} | {} |",
                Millis(delivery.p99),
                if watch_complete {
                    ""
                } else {
                    " (incomplete: missing events not counted)"
                },
                met(watch_complete && delivery.p99 <= TARGET_WATCH_P99_MICROS)
            );
        }
    }
}
