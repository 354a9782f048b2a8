//! The Endpoints controller: the legacy `v1/Endpoints` object of every
//! Service with a selector (what `kubectl get ep` shows), kept as
//! kube-controller-manager's endpoint controller keeps it. Services
//! without a selector are left alone: their Endpoints are written by
//! users (and mirrored into slices by [`crate::mirroring`]).
//!
//! Same structure as the EndpointSlice controller: watch-fed caches,
//! a queue of Service keys, a pure [`model`], and writes only when the
//! object differs.

pub mod model;

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;

use crate::Context;
use crate::endpointslice::informer::{self, Cached, Change, Store, slim};
use crate::endpointslice::pod::{self, PodInfo};
use crate::endpointslice::queue::WorkQueue;
use crate::endpointslice::{queue_pod_change, run_workers};

const WORKERS: usize = 5;

struct Controller {
    client: kube::Client,
    services: Arc<Store<Service>>,
    pods: Arc<Store<PodInfo>>,
    endpoints: Arc<Store<Endpoints>>,
    queue: Arc<WorkQueue>,
}

/// Runs the Endpoints controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let c = Arc::new(Controller {
        client: client.clone(),
        services: Arc::default(),
        pods: Arc::default(),
        endpoints: Arc::default(),
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

    let q = c.queue.clone();
    tasks.spawn(informer::run(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        c.endpoints.clone(),
        |e| Some(slim(e)),
        // Someone else wrote or deleted an Endpoints: put ours back.
        move |(old, new): Change<Endpoints>| {
            if let Some(key) = new.or(old).map(|e| e.key()) {
                q.add(key);
            }
        },
    ));

    let synced = async {
        c.services.wait_synced().await;
        c.pods.wait_synced().await;
        c.endpoints.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        done = tasks.join_next() => return Err(anyhow::anyhow!("endpoints watch stopped: {done:?}")),
    }
    tracing::info!("endpoints controller started");
    // Endpoints left by Services deleted while no controller ran.
    for endpoints in c.endpoints.all() {
        if model::is_managed(&endpoints) {
            c.queue.add(endpoints.key());
        }
    }

    let worker = c.clone();
    tasks.spawn(run_workers(
        "endpoints",
        c.queue.clone(),
        WORKERS,
        move |key| {
            let c = worker.clone();
            async move { c.sync(&key).await }
        },
    ));
    match tasks.join_next().await {
        Some(Ok(Err(e))) => Err(e),
        other => Err(anyhow::anyhow!("endpoints controller stopped: {other:?}")),
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let Some((namespace, name)) = key.split_once('/') else {
            return Ok(());
        };
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let current = self.endpoints.get(key);
        let Some(service) = self.services.get(key) else {
            // The Service is gone: so are the Endpoints this controller
            // made for it (never hand-written ones).
            if let Some(current) = current.filter(|e| model::is_managed(e)) {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => self.endpoints.deleted(&current),
                    Err(kube::Error::Api(s)) if s.code == 404 => self.endpoints.deleted(&current),
                    Err(e) => return Err(e).context("deleting the Endpoints"),
                }
                tracing::debug!("deleted the Endpoints of a deleted Service");
            }
            return Ok(());
        };
        if pod::selector(&service).is_none() || pod::is_external_name(&service) {
            return Ok(());
        }
        let pods = self.pods.by_index(namespace);
        let Some(desired) =
            model::reconcile(&service, pods.iter().map(|p| &**p), current.as_deref())
        else {
            return Ok(());
        };
        let written = if current.is_some() {
            api.replace(name, &PostParams::default(), &desired)
                .await
                .context("updating the Endpoints")?
        } else {
            api.create(&PostParams::default(), &desired)
                .await
                .context("creating the Endpoints")?
        };
        tracing::debug!("wrote the Endpoints");
        self.endpoints.wrote(slim(written));
        Ok(())
    }
}
