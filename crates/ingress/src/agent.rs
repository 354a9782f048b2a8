//! `ferry ingress` as a whole: watches the API, rebuilds the model after
//! each burst of changes, swaps routes and certificates into the running
//! proxy (listeners are bound once and never touched again), reports
//! problems as Events on the Ingress, and fills `status.loadBalancer` with
//! the addresses of the nodes it serves on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::dataplane::proxy::{Proxy, Settings};
use crate::dataplane::tls::{CertResolver, server_config};
use crate::model::build::{self, Classes, State};
use crate::model::objects::{IngressClassInfo, IngressInfo, ServiceInfo, SliceInfo, secret_info};
use crate::model::route::{ObjectRef, Routes};
use crate::model::tls::{CertIndex, default_certificate};
use ferry_controllers::events::{EventType, Recorder};

/// Settings of `ferry ingress`.
#[derive(Clone, Debug)]
pub struct Config {
    pub classes: Classes,
    pub http_address: SocketAddr,
    pub https_address: SocketAddr,
    /// `/healthz` and `/metrics` (ingress-nginx: 10254).
    pub healthz_address: Option<SocketAddr>,
    /// Write node addresses into `status.loadBalancer` of served Ingresses.
    pub update_status: bool,
    /// Proxy worker threads; 0 is one per CPU this process may run on
    /// (ingress-nginx's `worker-processes: auto`).
    pub workers: usize,
    pub settings: Settings,
}

enum Change {
    Ingress(ObjectRef, Option<Box<IngressInfo>>, Vec<String>),
    Class(String, Option<IngressClassInfo>),
    Service(ObjectRef, Option<ServiceInfo>),
    Slice(ObjectRef, Option<SliceInfo>),
    Secret(ObjectRef, Option<crate::model::objects::SecretInfo>),
    Node(String, Option<String>),
    Listed(usize),
}

fn key(meta: &kube::api::ObjectMeta) -> ObjectRef {
    ObjectRef {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

type Changes = Pin<Box<dyn Stream<Item = Result<Change, watcher::Error>> + Send>>;

/// Number of watches; synced once each has listed.
const WATCHES: usize = 6;

fn watch<K, F>(api: Api<K>, config: watcher::Config, which: usize, convert: F) -> Changes
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
    F: Fn(&K, bool) -> Change + Send + 'static,
{
    Box::pin(watcher(api, config).default_backoff().filter_map(move |e| {
        let out = match e {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                Some(Ok(convert(&o, true)))
            }
            Ok(watcher::Event::Delete(o)) => Some(Ok(convert(&o, false))),
            Ok(watcher::Event::InitDone) => Some(Ok(Change::Listed(which))),
            // A relist re-applies every object; deletions missed
            // while disconnected are rare and fixed by the next
            // restart (kube's watcher resumes with bookmarks).
            Ok(watcher::Event::Init) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    }))
}

fn node_ip(n: &Node) -> Option<String> {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return None;
    }
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
}

/// Runs until the watches end.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let resolver = CertResolver::new(CertIndex::new(default_certificate()));
    let proxy = Proxy::new(Routes::default(), config.settings.clone());
    let http = crate::dataplane::proxy::bind_std(config.http_address)?;
    let https = crate::dataplane::proxy::bind_std(config.https_address)?;
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    crate::dataplane::proxy::spawn_workers(
        &proxy,
        workers,
        &http,
        &https,
        &server_config(resolver.clone()),
        &resolver,
    )?;
    let synced = Arc::new(AtomicBool::new(false));
    if let Some(addr) = config.healthz_address {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tokio::spawn(crate::health::serve(
            listener,
            proxy.clone(),
            synced.clone(),
        ));
    }
    tracing::info!(http = %config.http_address, https = %config.https_address, workers, class = %config.classes.class, "serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = follow(client, &config, &proxy, &resolver, &synced) => result,
        _ = term.recv() => {
            // Graceful shutdown: stop accepting, let requests in flight
            // finish (Kubernetes' default grace period is 30 s).
            synced.store(false, Ordering::Relaxed);
            tracing::info!("SIGTERM: draining connections for up to {}s", DRAIN.as_secs());
            proxy.drain(DRAIN).await;
            Ok(())
        }
    }
}

/// How long a terminating controller waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(20);

/// Watches the API and keeps the proxy's routes and certificates current.
async fn follow(
    client: kube::Client,
    config: &Config,
    proxy: &Arc<Proxy>,
    resolver: &Arc<CertResolver>,
    synced: &AtomicBool,
) -> anyhow::Result<()> {
    let streams: Vec<Changes> = vec![
        watch(
            Api::<Ingress>::all(client.clone()),
            watcher::Config::default(),
            0,
            |i, live| {
                let status = i
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .map(|l| l.iter().filter_map(|x| x.ip.clone()).collect())
                    .unwrap_or_default();
                Change::Ingress(
                    key(&i.metadata),
                    live.then(|| Box::new(IngressInfo::from_ingress(i))),
                    status,
                )
            },
        ),
        watch(
            Api::<IngressClass>::all(client.clone()),
            watcher::Config::default(),
            1,
            |c, live| {
                Change::Class(
                    c.metadata.name.clone().unwrap_or_default(),
                    live.then(|| IngressClassInfo::from_class(c)),
                )
            },
        ),
        watch(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            2,
            |s, live| Change::Service(key(&s.metadata), live.then(|| ServiceInfo::from_service(s))),
        ),
        watch(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            3,
            |s, live| {
                Change::Slice(
                    key(&s.metadata),
                    live.then(|| SliceInfo::from_slice(s)).flatten(),
                )
            },
        ),
        watch(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().fields("type=kubernetes.io/tls"),
            4,
            |s, live| Change::Secret(key(&s.metadata), live.then(|| secret_info(s))),
        ),
        watch(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            5,
            |n, live| {
                Change::Node(
                    n.metadata.name.clone().unwrap_or_default(),
                    live.then(|| node_ip(n)).flatten(),
                )
            },
        ),
    ];
    let mut changes = futures::stream::select_all(streams);
    let recorder = Recorder::new(client.clone(), "ferry-ingress-controller");
    let mut state = State::default();
    let mut statuses: HashMap<ObjectRef, Vec<String>> = HashMap::new();
    let mut nodes: HashMap<String, String> = HashMap::new();
    let mut listed: HashSet<usize> = HashSet::new();
    let mut reported: HashSet<(ObjectRef, &'static str, String)> = HashSet::new();
    let mut dirty = false;
    let mut next_build_at = tokio::time::Instant::now();
    loop {
        // Changes are applied as they come; the model is rebuilt once
        // nothing more is ready. A lone change after a quiet spell is
        // built at once (no fixed coalescing window); under a stream of
        // changes the next rebuild waits until half the last one's time
        // has passed, so that rebuilding takes at most two thirds of this
        // loop and each rebuild takes in a larger batch.
        let next = if dirty {
            match changes.next().now_or_never() {
                Some(next) => Some(next),
                None if tokio::time::Instant::now() < next_build_at => {
                    tokio::time::timeout_at(next_build_at, changes.next())
                        .await
                        .ok()
                }
                None => None,
            }
        } else {
            Some(changes.next().await)
        };
        match next {
            Some(Some(Ok(change))) => {
                match change {
                    Change::Ingress(k, info, status) => match info {
                        Some(i) => {
                            state.ingresses.insert(k.clone(), *i);
                            statuses.insert(k, status);
                        }
                        None => {
                            state.ingresses.remove(&k);
                            statuses.remove(&k);
                        }
                    },
                    Change::Class(k, info) => set(&mut state.classes, k, info),
                    Change::Service(k, info) => set(&mut state.services, k, info),
                    Change::Slice(k, info) => set(&mut state.slices, k, info),
                    Change::Secret(k, info) => set(&mut state.secrets, k, info),
                    Change::Node(k, ip) => set(&mut nodes, k, ip),
                    Change::Listed(i) => {
                        listed.insert(i);
                    }
                }
                dirty = listed.len() == WATCHES;
                // Let the watch tasks run, so that what is already on the
                // wire counts as ready.
                tokio::task::yield_now().await;
                continue;
            }
            Some(Some(Err(e))) => {
                tracing::warn!("watch: {e}");
                continue;
            }
            Some(None) => anyhow::bail!("the watches ended"),
            None => {}
        }
        dirty = false;
        let started = Instant::now();
        let built = tokio::task::block_in_place(|| {
            build::build(
                &state,
                &config.classes,
                resolver.current().default_certificate().as_ref().clone(),
            )
        });
        next_build_at = tokio::time::Instant::now() + started.elapsed() / 2;
        let old_routes = proxy.swap(built.routes);
        let old_certificates = resolver.swap(built.certificates);
        // Freeing the previous model (tens of ms at 10,000 Ingresses) is
        // nobody's latency: it happens off this loop.
        tokio::task::spawn_blocking(move || drop((old_routes, old_certificates)));
        // Balancer state of upstreams no route uses any more can go.
        proxy.balancers().retain(&built.upstreams);
        let first = !synced.swap(true, Ordering::Relaxed);
        tracing::debug!(
            ingresses = built.owned.len(),
            "router rebuilt in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        if first {
            tracing::info!(ingresses = built.owned.len(), "synced: serving");
        }
        // Events: each problem once while it lasts.
        let mut now_reported = HashSet::new();
        for e in &built.events {
            let k = (
                e.ingress.clone(),
                e.diagnostic.reason,
                e.diagnostic.message.clone(),
            );
            if !reported.contains(&k) {
                let regarding = ObjectReference {
                    api_version: Some("networking.k8s.io/v1".into()),
                    kind: Some("Ingress".into()),
                    namespace: Some(e.ingress.namespace.clone()),
                    name: Some(e.ingress.name.clone()),
                    uid: Some(e.uid.clone()),
                    ..Default::default()
                };
                let t = if e.diagnostic.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                recorder
                    .record(&regarding, t, e.diagnostic.reason, &e.diagnostic.message)
                    .await;
            }
            now_reported.insert(k);
        }
        reported = now_reported;
        if config.update_status {
            let mut ips: Vec<String> = nodes.values().cloned().collect();
            ips.sort();
            for k in &built.owned {
                if statuses.get(k) != Some(&ips) {
                    let api: Api<Ingress> = Api::namespaced(client.clone(), &k.namespace);
                    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress":
                        ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>()}}});
                    match api
                        .patch_status(&k.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {
                            statuses.insert(k.clone(), ips.clone());
                        }
                        Err(e) => tracing::debug!(ingress = %k, "status update: {e}"),
                    }
                }
            }
        }
    }
}

fn set<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, v: Option<V>) {
    match v {
        Some(v) => {
            map.insert(k, v);
        }
        None => {
            map.remove(&k);
        }
    }
}
