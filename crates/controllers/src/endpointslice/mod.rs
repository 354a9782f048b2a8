//! The EndpointSlice controller: every Service with a selector gets
//! `discovery.k8s.io/v1` EndpointSlices listing the Pods it selects, as
//! kube-controller-manager's endpointslice controller keeps them. The
//! proxy, DNS and ingress read these slices.
//!
//! Watches of Services, Pods, Nodes and this controller's slices feed
//! in-memory caches ([`informer`]); each change queues exactly the
//! Services it touches ([`queue`]), and a sync computes the desired
//! slices with the pure [`model`] and writes only the difference. There is
//! no periodic resync: a Pod's readiness flip reaches its slice as soon as
//! its watch event arrives.

pub(crate) mod informer;
pub mod model;
pub mod pod;
pub(crate) mod queue;

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use tracing::Instrument;

use crate::Context;
use informer::{Cached, Change, Store, cached_resource, slim};
use model::Plan;
use pod::{NodeInfo, PodInfo};
use queue::WorkQueue;

/// Services synced in parallel (kube-controller-manager's
/// `--concurrent-service-endpoint-syncs` default is 5).
const WORKERS: usize = 5;

cached_resource!(Service, |s: &Service| s.metadata.namespace.clone());
cached_resource!(Endpoints, |_: &Endpoints| None);
// Slices are looked up by the Service they belong to.
cached_resource!(EndpointSlice, |s: &EndpointSlice| service_key(s));

impl Cached for PodInfo {
    fn key(&self) -> String {
        PodInfo::key(self)
    }
    fn index(&self) -> Option<String> {
        Some(self.namespace.clone())
    }
}

impl Cached for NodeInfo {
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// `namespace/service` of the Service a slice belongs to, from its
/// `kubernetes.io/service-name` label.
pub fn service_key(slice: &EndpointSlice) -> Option<String> {
    let name = slice
        .metadata
        .labels
        .as_ref()?
        .get(model::LABEL_SERVICE_NAME)?;
    Some(format!("{}/{name}", slice.metadata.namespace.as_deref()?))
}

/// The keys of the Services in `services` that select `pod`.
pub(crate) fn services_selecting(services: &Store<Service>, pod: &PodInfo) -> Vec<String> {
    services
        .by_index(&pod.namespace)
        .iter()
        .filter(|s| pod::selects(s, pod))
        .map(|s| s.key())
        .collect()
}

/// Queues the Services that select the Pod before or after a change.
pub(crate) fn queue_pod_change(
    services: &Store<Service>,
    queue: &WorkQueue,
    change: Change<PodInfo>,
) {
    let (old, new) = change;
    let mut keys = BTreeSet::new();
    for pod in [old, new].into_iter().flatten() {
        keys.extend(services_selecting(services, &pod));
    }
    for key in keys {
        queue.add(key);
    }
}

/// Runs `sync` for queued keys on `workers` tasks, retrying failures with
/// backoff. Never returns.
pub(crate) async fn run_workers<F, Fut>(
    name: &'static str,
    queue: Arc<WorkQueue>,
    workers: usize,
    sync: F,
) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let sync = sync.clone();
        tasks.spawn(async move {
            loop {
                let key = queue.next().await;
                let span = tracing::debug_span!("sync", controller = name, object = %key);
                let result = sync(key.clone()).instrument(span).await;
                match result {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        if queue.retry(&key) {
                            tracing::debug!(controller = name, object = %key, error = %format!("{e:#}"), "sync failed; retrying");
                        } else {
                            tracing::warn!(controller = name, object = %key, error = %format!("{e:#}"), "sync keeps failing; dropping until the next change");
                        }
                    }
                }
                queue.done(&key);
            }
        });
    }
    match tasks.join_next().await {
        Some(Err(e)) => Err(anyhow::anyhow!("{name} worker panicked: {e}")),
        _ => Err(anyhow::anyhow!("{name} workers stopped")),
    }
}

struct Controller {
    ctx: Arc<Context>,
    services: Arc<Store<Service>>,
    pods: Arc<Store<PodInfo>>,
    nodes: Arc<Store<NodeInfo>>,
    slices: Arc<Store<EndpointSlice>>,
    queue: Arc<WorkQueue>,
}

/// Runs the EndpointSlice controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let c = Arc::new(Controller {
        ctx,
        services: Arc::default(),
        pods: Arc::default(),
        nodes: Arc::default(),
        slices: Arc::default(),
        queue: Arc::default(),
    });
    let mut tasks = tokio::task::JoinSet::new();

    let q = c.queue.clone();
    tasks.spawn(informer::run(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        c.services.clone(),
        |s| Some(slim(s)),
        move |(old, new): Change<Service>| {
            if let Some(key) = new.or(old).map(|s| s.key()) {
                q.add(key);
            }
        },
    ));

    let (services, q) = (c.services.clone(), c.queue.clone());
    tasks.spawn(informer::run(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        c.pods.clone(),
        |p: Pod| PodInfo::from_pod(&p),
        move |change| queue_pod_change(&services, &q, change),
    ));

    let (services, pods, q) = (c.services.clone(), c.pods.clone(), c.queue.clone());
    tasks.spawn(informer::run(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        c.nodes.clone(),
        |n: Node| NodeInfo::from_node(&n),
        move |(old, new): Change<NodeInfo>| {
            // A Node appearing, going or changing zone changes the
            // endpoints of the Pods on it. Before the first full sync
            // every Service is queued anyway.
            if !pods.is_synced() || !services.is_synced() {
                return;
            }
            let Some(name) = new.or(old).map(|n| n.name.clone()) else {
                return;
            };
            let mut keys = BTreeSet::new();
            for pod in pods.all().iter().filter(|p| p.node_name == name) {
                keys.extend(services_selecting(&services, pod));
            }
            for key in keys {
                q.add(key);
            }
        },
    ));

    let q = c.queue.clone();
    tasks.spawn(informer::run(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "{}={}",
            model::LABEL_MANAGED_BY,
            model::CONTROLLER_NAME
        )),
        c.slices.clone(),
        |s| Some(slim(s)),
        // Someone else changed or deleted one of our slices: repair it.
        move |(old, new): Change<EndpointSlice>| {
            for slice in [old, new].into_iter().flatten() {
                if let Some(key) = service_key(&slice) {
                    q.add(key);
                }
            }
        },
    ));

    let synced = async {
        c.services.wait_synced().await;
        c.pods.wait_synced().await;
        c.nodes.wait_synced().await;
        c.slices.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        done = tasks.join_next() => return Err(anyhow::anyhow!("endpointslice watch stopped: {done:?}")),
    }
    tracing::info!("endpointslice controller started");
    // Slices left by Services deleted while no controller ran.
    for slice in c.slices.all() {
        if let Some(key) = service_key(&slice) {
            c.queue.add(key);
        }
    }

    let worker = c.clone();
    tasks.spawn(run_workers(
        "endpointslice",
        c.queue.clone(),
        WORKERS,
        move |key| {
            let c = worker.clone();
            async move { c.sync(&key).await }
        },
    ));
    match tasks.join_next().await {
        Some(Ok(Err(e))) => Err(e),
        other => Err(anyhow::anyhow!(
            "endpointslice controller stopped: {other:?}"
        )),
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some((namespace, _)) = key.split_once('/') else {
            return Ok(());
        };
        let existing = self.slices.by_index(key);
        let plan = match self.services.get(key) {
            Some(svc) if pod::selector(&svc).is_some() && !pod::is_external_name(&svc) => {
                let pods = self.pods.by_index(namespace);
                let zone = |node: &str| self.nodes.get(node).map(|n| n.zone.clone());
                let desired = pod::address_types(&svc)
                    .into_iter()
                    .map(|t| (t, model::desired(&svc, pods.iter().map(|p| &**p), &zone, t)))
                    .collect();
                model::reconcile(
                    &svc,
                    &existing,
                    desired,
                    self.ctx.config.max_endpoints_per_slice,
                )
            }
            // The Service is gone, lost its selector or became an
            // ExternalName: the slices it had go (the garbage collector
            // would too, but not when the selector goes).
            _ => Plan {
                delete: existing,
                ..Plan::default()
            },
        };
        if plan.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            create = plan.create.len(),
            update = plan.update.len(),
            delete = plan.delete.len(),
            "writing endpoint slices"
        );
        apply(&self.ctx.client, &self.slices, namespace, plan).await
    }
}

/// Writes a plan, recording each result in `slices` as it lands.
pub(crate) async fn apply(
    client: &kube::Client,
    slices: &Store<EndpointSlice>,
    namespace: &str,
    plan: Plan,
) -> anyhow::Result<()> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    for slice in plan.create {
        let created = api
            .create(&PostParams::default(), &slice)
            .await
            .with_context(|| {
                format!(
                    "creating an EndpointSlice for {namespace}/{}",
                    service_key(&slice).unwrap_or_default()
                )
            })?;
        slices.wrote(slim(created));
    }
    for slice in plan.update {
        let name = slice.metadata.name.clone().unwrap_or_default();
        match api.replace(&name, &PostParams::default(), &slice).await {
            Ok(updated) => slices.wrote(slim(updated)),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                slices.deleted(&slice);
                anyhow::bail!("EndpointSlice {namespace}/{name} vanished; recomputing");
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("updating EndpointSlice {namespace}/{name}"));
            }
        }
    }
    for slice in plan.delete {
        let name = slice.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => slices.deleted(&slice),
            Err(kube::Error::Api(s)) if s.code == 404 => slices.deleted(&slice),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("deleting EndpointSlice {namespace}/{name}"));
            }
        }
    }
    Ok(())
}
