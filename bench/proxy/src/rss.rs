//! The real `ferry proxy` at scale: a fresh `ferry apiserver`, the
//! cluster's Services and EndpointSlices created through kube-rs, then
//! `ferry proxy` into a fresh namespace; time to its first full sync (its
//! "synced" log line) and its memory then.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cluster::{CLUSTER_CIDR, Cluster, NAMESPACE, NODE};
use crate::util::Netns;

pub struct Settings {
    pub ferry_bin: PathBuf,
    /// `taskset -c` list for the API server (None: inherit).
    pub apiserver_cpus: Option<String>,
    pub concurrency: usize,
}

#[derive(Debug, Default)]
pub struct RssResult {
    pub create_services: Duration,
    pub create_slices: Duration,
    /// From spawning `ferry proxy` to its first "synced" line covering
    /// every Service.
    pub to_first_sync: Duration,
    /// The sync's own duration (`took_ms`), batch messages (`changes`)
    /// and service ports, as logged.
    pub sync_took_ms: Option<f64>,
    pub sync_changes: Option<u64>,
    pub ports: Option<u64>,
    pub syncs_logged: usize,
    /// `VmRSS` and `VmHWM` of `ferry proxy` after the first full sync.
    pub proxy_rss_kib: u64,
    pub proxy_hwm_kib: u64,
    pub apiserver_rss_kib: u64,
    /// `service-ids` elements in the proxy's namespace.
    pub service_ids: usize,
}

impl RssResult {
    /// What the proxy logged about its first full sync.
    pub fn sync_summary(&self) -> String {
        let or_unlogged = |v: Option<String>| v.unwrap_or_else(|| "not logged".into());
        format!(
            "service ports {}, its sync took {} ms, {} batch messages",
            or_unlogged(self.ports.map(|n| n.to_string())),
            or_unlogged(self.sync_took_ms.map(|t| format!("{t:.0}"))),
            or_unlogged(self.sync_changes.map(|n| n.to_string())),
        )
    }
}

/// A child process stopped (SIGINT, then SIGKILL) on drop.
struct Child {
    child: std::process::Child,
}

impl Child {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
            }
            for _ in 0..50 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Strips ANSI colour sequences, should the logger write them.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `key=value` from a tracing line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn start_apiserver(settings: &Settings, dir: &Path) -> anyhow::Result<(Child, PathBuf)> {
    let out_path = dir.join("apiserver.out");
    let out = std::fs::File::create(&out_path)?;
    let log = std::fs::File::create(dir.join("apiserver.log"))?;
    let ferry = settings.ferry_bin.to_string_lossy().into_owned();
    let data = dir.join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let mut argv: Vec<&str> = Vec::new();
    if let Some(cpus) = &settings.apiserver_cpus {
        argv.extend(["taskset", "-c", cpus.as_str()]);
    }
    argv.extend([
        ferry.as_str(),
        "apiserver",
        "--data-dir",
        &data_arg,
        "--bind-address",
        "127.0.0.1:0",
    ]);
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .env("NO_COLOR", "1")
        .stdout(out)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))?;
    let mut child = Child { child };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("listening on") {
            break;
        }
        if let Ok(Some(status)) = child.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("apiserver.log")).unwrap_or_default();
            bail!("ferry apiserver exited ({status}): {log}");
        }
        if Instant::now() > deadline {
            bail!("ferry apiserver did not start in 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((child, data.join("kubeconfig")))
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the client")
}

/// Creates `objects` with `concurrency` requests in flight.
async fn create_all<K>(api: Api<K>, objects: &[K], concurrency: usize) -> anyhow::Result<Duration>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let start = Instant::now();
    let pp = PostParams::default();
    let mut results = futures::stream::iter(objects)
        .map(|o| {
            let (api, pp) = (&api, &pp);
            async move { api.create(pp, o).await }
        })
        .buffer_unordered(concurrency);
    let mut errors = 0usize;
    let mut first_error = None;
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(anyhow::Error::new(e).context(format!("{errors} creates failed")));
    }
    Ok(start.elapsed())
}

async fn load(
    client: kube::Client,
    cluster: &Cluster,
    concurrency: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(anyhow::Error::new(e).context("creating the namespace")),
    }
    let services = create_all(
        Api::<Service>::namespaced(client.clone(), NAMESPACE),
        &cluster.services,
        concurrency,
    )
    .await
    .context("creating Services")?;
    let slices = create_all(
        Api::<EndpointSlice>::namespaced(client, NAMESPACE),
        &cluster.slices,
        concurrency,
    )
    .await
    .context("creating EndpointSlices")?;
    Ok((services, slices))
}

pub fn measure(
    settings: &Settings,
    cluster: &Cluster,
    progress: impl Fn(&str),
) -> anyhow::Result<RssResult> {
    let dir = tempfile::Builder::new()
        .prefix("ferry-bench-proxy.")
        .tempdir()
        .context("creating a temp dir")?;
    let (apiserver, kubeconfig) = start_apiserver(settings, dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (create_services, create_slices) = runtime.block_on(async {
        let client = client(&kubeconfig).await?;
        load(client, cluster, settings.concurrency).await
    })?;
    drop(runtime);
    progress(&format!(
        "created {} Services in {:.1} s and {} EndpointSlices in {:.1} s ({} in flight)",
        cluster.services.len(),
        create_services.as_secs_f64(),
        cluster.slices.len(),
        create_slices.as_secs_f64(),
        settings.concurrency
    ));

    let netns = Netns::new("rss")?;
    let start = Instant::now();
    let mut proxy = Command::new(&settings.ferry_bin)
        .args(["proxy", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--node-name",
            NODE,
            "--netns",
            netns.name(),
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--healthz-bind-address",
            "",
            "--metrics-bind-address",
            "",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ferry proxy")?;
    let stderr = proxy.stderr.take().context("ferry proxy's stderr")?;
    let proxy = Child { child: proxy };
    // A thread keeps the log and hands every line over with its arrival time.
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let log_path = dir.path().join("proxy.log");
    let mut log = std::fs::File::create(&log_path)?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if tx.send((Instant::now(), plain(&line))).is_err() {
                break;
            }
        }
    });
    let want = cluster.services.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut result = RssResult {
        create_services,
        create_slices,
        ..RssResult::default()
    };
    let mut tail = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                if line.contains(" synced") {
                    result.syncs_logged += 1;
                    // The count of service ports as logged (the field was
                    // `ports`, now `services`); without one, ask the kernel.
                    let logged = field(&line, "ports").or_else(|| field(&line, "services"));
                    let full = match logged {
                        Some(n) => n >= want as f64,
                        None => count_service_ids(&netns).unwrap_or(0) >= want as usize,
                    };
                    if full {
                        result.to_first_sync = at - start;
                        result.ports = logged.map(|n| n as u64);
                        result.sync_took_ms = field(&line, "took_ms");
                        result.sync_changes = field(&line, "changes").map(|n| n as u64);
                        break;
                    }
                }
                tail.push(line);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!(
                    "no full sync within 600 s; last log lines:\n{}",
                    tail.join("\n")
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!(
                    "ferry proxy exited before a full sync:\n{}",
                    tail.join("\n")
                )
            }
        }
    }
    // Memory right after the first full sync, when nothing else happens.
    std::thread::sleep(Duration::from_secs(1));
    (result.proxy_rss_kib, result.proxy_hwm_kib) = memory(proxy.pid())?;
    (result.apiserver_rss_kib, _) = memory(apiserver.pid())?;
    result.service_ids = count_service_ids(&netns)?;
    drop(proxy);
    drop(apiserver);
    drop(netns);
    Ok(result)
}

/// Elements of the proxy's `service-ids` map, read from the kernel.
fn count_service_ids(netns: &Netns) -> anyhow::Result<usize> {
    use ferry_netlink::nftables::{Connection, Family, Table};
    let mut conn = Connection::open_in_netns(netns.path())?;
    let table = Table::new(Family::Ip, ferry_proxy::nftables::TABLE);
    let sets = conn.list_sets(&table).context("listing the proxy's sets")?;
    let set = sets
        .iter()
        .find(|s| s.name == "service-ids")
        .context("no service-ids map")?;
    Ok(conn.list_elements(set)?.len())
}
