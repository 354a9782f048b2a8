//! EndpointSlice mirroring: a Service without a selector has hand-written
//! Endpoints; this controller mirrors them into EndpointSlices (labelled
//! `endpointslice.kubernetes.io/managed-by:
//! endpointslicemirroring-controller.k8s.io`), so consumers that only read
//! slices (the proxy, DNS) see them, as kube-controller-manager's
//! endpointslicemirroring controller does.
//!
//! Keys are Endpoints (= Service) names. Mirrored slices go when the
//! Endpoints or the Service goes, when the Service gets a selector, or
//! when the Endpoints are labelled `endpointslice.kubernetes.io/skip-mirror:
//! "true"`.

pub mod model;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;

use crate::Context;
use crate::endpointslice::informer::{self, Cached, Change, Store, slim};
use crate::endpointslice::model::{LABEL_MANAGED_BY, Plan};
use crate::endpointslice::pod;
use crate::endpointslice::queue::WorkQueue;
use crate::endpointslice::{apply, run_workers, service_key};

const WORKERS: usize = 5;

struct Controller {
    client: kube::Client,
    services: Arc<Store<Service>>,
    endpoints: Arc<Store<Endpoints>>,
    slices: Arc<Store<EndpointSlice>>,
    queue: Arc<WorkQueue>,
}

/// Runs the EndpointSlice mirroring controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let c = Arc::new(Controller {
        client: client.clone(),
        services: Arc::default(),
        endpoints: Arc::default(),
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
            // Only a Service appearing, going, or gaining or losing its
            // selector matters here.
            let selectorless =
                |s: &Option<Arc<Service>>| s.as_ref().map(|s| pod::selector(s).is_none());
            if selectorless(&old) != selectorless(&new)
                && let Some(key) = new.or(old).map(|s| s.key())
            {
                q.add(key);
            }
        },
    ));

    let q = c.queue.clone();
    tasks.spawn(informer::run(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        c.endpoints.clone(),
        |e| Some(slim(e)),
        move |(old, new): Change<Endpoints>| {
            let mirrored =
                |e: &Option<Arc<Endpoints>>| e.as_ref().is_some_and(|e| model::should_mirror(e));
            if (mirrored(&old) || mirrored(&new))
                && let Some(key) = new.or(old).map(|e| e.key())
            {
                q.add(key);
            }
        },
    ));

    let q = c.queue.clone();
    tasks.spawn(informer::run(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default()
            .labels(&format!("{LABEL_MANAGED_BY}={}", model::CONTROLLER_NAME)),
        c.slices.clone(),
        |s| Some(slim(s)),
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
        c.endpoints.wait_synced().await;
        c.slices.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        done = tasks.join_next() => return Err(anyhow::anyhow!("mirroring watch stopped: {done:?}")),
    }
    tracing::info!("endpointslice mirroring controller started");
    for slice in c.slices.all() {
        if let Some(key) = service_key(&slice) {
            c.queue.add(key);
        }
    }

    let worker = c.clone();
    tasks.spawn(run_workers(
        "endpointslice-mirroring",
        c.queue.clone(),
        WORKERS,
        move |key| {
            let c = worker.clone();
            async move { c.sync(&key).await }
        },
    ));
    match tasks.join_next().await {
        Some(Ok(Err(e))) => Err(e),
        other => Err(anyhow::anyhow!("mirroring controller stopped: {other:?}")),
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some((namespace, _)) = key.split_once('/') else {
            return Ok(());
        };
        let existing = self.slices.by_index(key);
        let endpoints = self.endpoints.get(key).filter(|e| model::should_mirror(e));
        let service = self.services.get(key);
        let plan = match (endpoints, service) {
            (Some(endpoints), Some(service)) if pod::selector(&service).is_none() => {
                let desired = model::desired(&endpoints);
                if desired.skipped > 0 {
                    tracing::warn!(
                        skipped = desired.skipped,
                        "addresses not mirrored: invalid IPs or more than {} in a subset",
                        model::MAX_ENDPOINTS_PER_SUBSET
                    );
                }
                model::reconcile(&endpoints, desired, &existing)
            }
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
            "writing mirrored endpoint slices"
        );
        apply(&self.client, &self.slices, namespace, plan).await
    }
}
