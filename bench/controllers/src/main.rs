//! Benchmark of `ferry controllers` (issue 4, point 8): how long after a
//! Pod's readiness changes does its EndpointSlice show it, with 1,000
//! Services of 10 Pods each, and what the controllers cost at that scale.
//!
//! In a fresh namespace: watch EndpointSlices and Pods, create Nodes,
//! Services and Pods (status written through `pods/status`, as a node agent
//! would), wait until every Service's slices list all its Pods as ready,
//! idle a moment, then flip the `Ready` condition of random Pods: one at a
//! time (latency), then a concurrent burst (under load). `run.sh` next to
//! this crate starts the API server and the controllers and passes their
//! pids, so CPU and memory are sampled at each phase boundary.

mod flips;
mod observe;
mod process;
mod setup;
mod stats;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::oneshot;

use crate::flips::{FlipPhase, Random};
use crate::observe::Observer;
use crate::process::{CpuUse, Mib, Sample};
use crate::setup::{Shape, Writes};
use crate::stats::{Millis, Summary};

const TARGET_P99_MICROS: u32 = 100_000;

#[derive(Parser)]
#[command(about = "EndpointSlice latency of `ferry controllers` after Pod readiness flips")]
struct Args {
    /// Admin kubeconfig of the API server the controllers use.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Services to create.
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    /// Pods per Service.
    #[arg(long, default_value_t = 10)]
    pods_per_service: usize,
    /// Nodes the Pods are spread over (`lab-node-1..N`).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent writers for the setup, one `kube::Client` each.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Flips one at a time (the latency figure).
    #[arg(long, default_value_t = 500)]
    flips: usize,
    /// Flips in the concurrent burst (distinct Pods; 0: no burst).
    #[arg(long, default_value_t = 1_000)]
    burst_flips: usize,
    /// Concurrent writers in the burst, one `kube::Client` each.
    #[arg(long, default_value_t = 32)]
    burst_concurrency: usize,
    /// Seconds to sit idle after the setup converged (idle CPU figure).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Seed of the Pod picks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Namespace to create and fill (default: `bench-ctl-<unix time>`).
    #[arg(long)]
    namespace: Option<String>,
    /// How long the setup may take to show in the slices.
    #[arg(long, default_value_t = 600)]
    setup_timeout_secs: u64,
    /// How long one sequential flip may take to show.
    #[arg(long, default_value_t = 10)]
    flip_timeout_secs: u64,
    /// How long the burst's flips may take to show after its last patch.
    #[arg(long, default_value_t = 120)]
    burst_timeout_secs: u64,
    /// Pid of `ferry controllers`, for CPU and memory (Linux /proc).
    #[arg(long)]
    controllers_pid: Option<u32>,
    /// Pid of `ferry apiserver`, for CPU and memory.
    #[arg(long)]
    apiserver_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clock_ticks: u64,
    /// `perf record` the controllers during the flip phases into this
    /// file (needs `perf` and --controllers-pid).
    #[arg(long)]
    perf_output: Option<PathBuf>,
    /// Sampling flags for `perf record` (release builds have no frame
    /// pointers, so call graphs need DWARF unwinding).
    #[arg(long, default_value = "-F 199 --call-graph dwarf,16384")]
    perf_args: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = Shape {
        namespace: args.namespace.clone().unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("bench-ctl-{secs}")
        }),
        nodes: args.nodes.max(1),
        services: args.services,
        pods_per_service: args.pods_per_service.max(1),
    };
    anyhow::ensure!(
        shape.pods() < 65_000,
        "at most 65,000 Pods fit the 10.244.0.0/16 pod network"
    );
    let admin = client(&args).await?;
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(shape.namespace.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .with_context(|| format!("creating namespace {}", shape.namespace))?;

    // The watches start before anything is written, each on its own client.
    let observer = Arc::new(Observer::default());
    let (slices_listed, slices_ready) = oneshot::channel();
    let (pods_listed, pods_ready) = oneshot::channel();
    let slice_watch = tokio::spawn(observe::watch_slices(
        observer.clone(),
        client(&args).await?,
        shape.namespace.clone(),
        slices_listed,
    ));
    let pod_watch = tokio::spawn(observe::watch_pods(
        observer.clone(),
        client(&args).await?,
        shape.namespace.clone(),
        pods_listed,
    ));
    tokio::time::timeout(Duration::from_secs(60), async {
        slices_ready.await?;
        pods_ready.await
    })
    .await
    .context("the watches did not start within 60 s")?
    .context("a watch task ended")?;

    let mut clients = Vec::new();
    for _ in 0..args.clients.max(args.burst_concurrency).max(1) {
        clients.push(client(&args).await?);
    }
    let mut samples = Samples::new(&args);
    samples.take("start");

    // Setup.
    eprintln!(
        "namespace {}: creating {} Nodes, {} Services, {} Pods",
        shape.namespace,
        shape.nodes,
        shape.services,
        shape.pods()
    );
    for n in 0..shape.nodes {
        setup::create_node(admin.clone(), n).await?;
    }
    let setup_clients = &clients[..args.clients.max(1)];
    let s = shape.clone();
    let services = setup::in_parallel(setup_clients, shape.services, move |client, i| {
        let s = s.clone();
        async move { setup::create_service(client, &s, i).await }
    })
    .await;
    eprintln!("services: {} in {:.2?}", services.ok, services.elapsed);
    let s = shape.clone();
    let pods = setup::in_parallel(setup_clients, shape.pods(), move |client, k| {
        let s = s.clone();
        async move { setup::create_pod(client, &s, k).await }
    })
    .await;
    let written = Instant::now();
    eprintln!("pods: {} in {:.2?}", pods.ok, pods.elapsed);
    if services.errors + pods.errors > 0 {
        anyhow::bail!(
            "setup failed: {} Service and {} Pod errors; first: {}",
            services.errors,
            pods.errors,
            services
                .first_error
                .or(pods.first_error)
                .unwrap_or_default()
        );
    }
    let deadline = written + Duration::from_secs(args.setup_timeout_secs);
    loop {
        let ready = observer.services_ready(shape.pods_per_service);
        if ready == shape.services {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "after {} s only {ready} of {} Services have {} ready endpoints",
                args.setup_timeout_secs,
                shape.services,
                shape.pods_per_service
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = written.elapsed();
    samples.take("converged");
    eprintln!("slices converged {converged:.2?} after the last status write");

    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    samples.take("idle");

    let mut ready = vec![true; shape.pods()];
    let mut random = Random::new(args.seed);
    let timeout = Duration::from_secs(args.flip_timeout_secs);
    let perf = Perf::start(&args)?;
    if perf.0.is_some() {
        // perf needs a moment to attach before the measured phase.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sequential = flips::sequential(
        &clients[0],
        &shape,
        &observer,
        &mut ready,
        args.flips,
        &mut random,
        timeout,
    )
    .await;
    samples.take("sequential");
    eprintln!("sequential flips done");
    let burst = if args.burst_flips > 0 {
        let burst_clients = &clients[..args.burst_concurrency.max(1)];
        let phase = flips::burst(
            burst_clients,
            &shape,
            &observer,
            &mut ready,
            args.burst_flips,
            &mut random,
            Duration::from_secs(args.burst_timeout_secs),
        )
        .await;
        samples.take("burst");
        eprintln!("burst done");
        Some(phase)
    } else {
        None
    };
    drop(perf);
    slice_watch.abort();
    pod_watch.abort();

    Report {
        args: &args,
        shape: &shape,
        services,
        pods,
        converged,
        sequential,
        burst,
        samples,
        counters: observer.counters(),
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

/// Readings of the controllers, the API server and this bench at each
/// phase boundary.
struct Samples {
    controllers: Option<u32>,
    apiserver: Option<u32>,
    clock_ticks: u64,
    taken: Vec<Point>,
}

struct Point {
    label: &'static str,
    controllers: Option<Sample>,
    apiserver: Option<Sample>,
    bench: Option<Sample>,
}

impl Samples {
    fn new(args: &Args) -> Samples {
        Samples {
            controllers: args.controllers_pid,
            apiserver: args.apiserver_pid,
            clock_ticks: args.clock_ticks.max(1),
            taken: Vec::new(),
        }
    }

    fn take(&mut self, label: &'static str) {
        self.taken.push(Point {
            label,
            controllers: self.controllers.and_then(process::sample),
            apiserver: self.apiserver.and_then(process::sample),
            bench: process::sample(std::process::id()),
        });
    }

    fn get(&self, label: &str) -> Option<&Point> {
        self.taken.iter().find(|p| p.label == label)
    }
}

/// `perf record` of the controllers while alive; stopped (SIGINT, so it
/// writes its file) when dropped.
struct Perf(Option<Child>);

impl Perf {
    fn start(args: &Args) -> anyhow::Result<Perf> {
        let (Some(path), Some(pid)) = (&args.perf_output, args.controllers_pid) else {
            return Ok(Perf(None));
        };
        let child = Command::new("perf")
            .arg("record")
            .args(args.perf_args.split_whitespace())
            .args(["-p", &pid.to_string(), "-o"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        Ok(Perf(Some(child)))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

struct Report<'a> {
    args: &'a Args,
    shape: &'a Shape,
    services: Writes,
    pods: Writes,
    converged: Duration,
    sequential: FlipPhase,
    burst: Option<FlipPhase>,
    samples: Samples,
    counters: (u64, u64, u64, Option<String>),
}

impl Report<'_> {
    fn print(&self) {
        let Report { args, shape, .. } = self;
        println!();
        println!(
            "namespace {}: {} Nodes, {} Services x {} Pods = {} Pods; seed {}",
            shape.namespace,
            shape.nodes,
            shape.services,
            shape.pods_per_service,
            shape.pods(),
            args.seed
        );
        println!();
        println!("| setup | result | wall time | rate | p50 | p99 |");
        println!("|---|---|---|---|---|---|");
        for (name, w) in [
            ("Services (create)", &self.services),
            ("Pods (create + status write)", &self.pods),
        ] {
            let s = w.latencies.summary();
            println!(
                "| {name} | {} ok, {} errors | {:.2} s | {:.0}/s | {} | {} |",
                w.ok,
                w.errors,
                w.elapsed.as_secs_f64(),
                w.ok as f64 / w.elapsed.as_secs_f64().max(1e-9),
                Millis(s.p50),
                Millis(s.p99)
            );
        }
        println!(
            "| all slices ready ({} Services x {} ready endpoints) | {:.2} s after the last status write | | | | |",
            shape.services,
            shape.pods_per_service,
            self.converged.as_secs_f64()
        );

        println!();
        println!(
            "Flip = `patch_status` (strategic merge of the Ready condition) of one Pod; \
             latencies from the patch's start to the event on the bench's own watches \
             (its own connections), on this process's monotonic clock."
        );
        let phases = [
            Some(("sequential (one at a time)".to_string(), &self.sequential)),
            self.burst.as_ref().map(|b| {
                (
                    format!("burst ({} writers, distinct Pods)", args.burst_concurrency),
                    b,
                )
            }),
        ];
        println!();
        println!(
            "| phase | flips seen in a slice | patch errors | not seen in time (slice / Pod watch) | wall time | flips/s |"
        );
        println!("|---|---|---|---|---|---|");
        for (name, phase) in phases.iter().flatten() {
            println!(
                "| {name} | {} | {} | {} / {} | {:.2} s | {:.0} |",
                phase.completed(),
                phase.patch_errors,
                phase.observed.slice_missing,
                phase.observed.pod_missing,
                phase.elapsed.as_secs_f64(),
                phase.flips_per_second(),
            );
        }
        println!();
        println!("| phase | measured | p50 | p90 | p99 | max | mean |");
        println!("|---|---|---|---|---|---|---|");
        for (name, phase) in phases.iter().flatten() {
            for (what, latencies) in [
                ("`patch_status` round trip (API floor)", &phase.patch),
                ("patch start → Pod watch shows it", &phase.observed.pod),
                (
                    "**patch start → EndpointSlice shows it**",
                    &phase.observed.slice,
                ),
                (
                    "Pod watch → EndpointSlice (controller's share)",
                    &phase.observed.slice_after_pod,
                ),
            ] {
                let l = latencies.summary();
                println!(
                    "| {name} | {what} | {} | {} | {} | {} | {:.2} ms |",
                    Millis(l.p50),
                    Millis(l.p90),
                    Millis(l.p99),
                    Millis(l.max),
                    l.mean_micros / 1000.0
                );
            }
        }
        for (name, phase) in phases.iter().flatten() {
            if let Some(e) = &phase.first_error {
                println!("\n{name}: first patch error: {e}");
            }
        }
        let (slice_events, pod_events, watch_errors, first_watch_error) = &self.counters;
        println!();
        println!(
            "bench watches: {slice_events} EndpointSlice events, {pod_events} Pod events, \
             {watch_errors} watch errors{}",
            first_watch_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );

        self.print_processes();

        let seq = self.sequential.observed.slice.summary();
        let complete = self.sequential.observed.slice_missing == 0;
        println!();
        println!("| target | measured | met |");
        println!("|---|---|---|");
        println!(
            "| readiness flip → EndpointSlice p99 ≤ 100 ms (sequential flips) | p99 {}, p50 {}{} | {} |",
            Millis(seq.p99),
            Millis(seq.p50),
            if complete {
                ""
            } else {
                " (some flips never showed)"
            },
            met(complete && seq.p99 <= TARGET_P99_MICROS)
        );
        if let Some(burst) = &self.burst {
            let b: Summary = burst.observed.slice.summary();
            println!(
                "| same, under the burst (not the target's case; for information) | p99 {}, p50 {} | {} |",
                Millis(b.p99),
                Millis(b.p50),
                met(burst.observed.slice_missing == 0 && b.p99 <= TARGET_P99_MICROS)
            );
        }
    }

    fn print_processes(&self) {
        let s = &self.samples;
        if s.controllers.is_none() && s.apiserver.is_none() {
            return;
        }
        let ticks = s.clock_ticks;
        let cpu = |a: Option<&Sample>, b: Option<&Sample>| match (a, b) {
            (Some(a), Some(b)) => CpuUse::between(a, b, ticks).to_string(),
            _ => "-".to_string(),
        };
        println!();
        println!(
            "| phase | wall time | controllers CPU | API server CPU | bench CPU (load generator + watches) |"
        );
        println!("|---|---|---|---|---|");
        for pair in s.taken.windows(2) {
            let [a, b] = pair else { continue };
            let name = match b.label {
                "converged" => "setup (writes until all slices ready)",
                "idle" => "idle after setup",
                "sequential" => "sequential flips",
                "burst" => "burst",
                other => other,
            };
            let wall = b
                .bench
                .zip(a.bench)
                .map(|(b, a)| format!("{:.2} s", b.at.duration_since(a.at).as_secs_f64()))
                .unwrap_or_default();
            println!(
                "| {name} | {wall} | {} | {} | {} |",
                cpu(a.controllers.as_ref(), b.controllers.as_ref()),
                cpu(a.apiserver.as_ref(), b.apiserver.as_ref()),
                cpu(a.bench.as_ref(), b.bench.as_ref()),
            );
        }
        let memory = |p: Option<&Point>, which: fn(&Point) -> Option<Sample>| {
            p.and_then(which)
                .map(|x| format!("{}", Mib(x.rss_kib)))
                .unwrap_or_else(|| "-".to_string())
        };
        let last = s.taken.last();
        let hwm = |which: fn(&Point) -> Option<Sample>| {
            last.and_then(which)
                .map(|x| format!("{}", Mib(x.hwm_kib)))
                .unwrap_or_else(|| "-".to_string())
        };
        let controllers: fn(&Point) -> Option<Sample> = |p| p.controllers;
        let apiserver: fn(&Point) -> Option<Sample> = |p| p.apiserver;
        println!();
        println!(
            "| memory | VmRSS before setup | VmRSS all slices ready | VmRSS at the end | VmHWM (peak) |"
        );
        println!("|---|---|---|---|---|");
        for (name, which) in [("controllers", controllers), ("API server", apiserver)] {
            println!(
                "| {name} | {} | {} | {} | {} |",
                memory(s.get("start"), which),
                memory(s.get("converged"), which),
                memory(last, which),
                hwm(which)
            );
        }
    }
}
