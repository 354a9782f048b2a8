//! DaemonSet controller, after upstream's `pkg/controller/daemon`: one
//! Pod on every node that should run it, bound with `spec.nodeName` (the
//! scheduler leaves such Pods alone), replaced on failure, removed from
//! nodes that stop qualifying, rolled to a new template within
//! `maxUnavailable`, and the status `kubectl get ds` shows.
//!
//! Reflectors on DaemonSets, Pods and Nodes feed kube-runtime's
//! `applier`; the decisions are the pure functions in [`model`].

pub mod model;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, reflector as reflect, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Context;
use crate::controller_utils::{
    Backoff, Cached, Claim, Expectations, SyncError, available_in, check_template_selected, claim,
    controller_reference, controllers_for_pod, is_not_found, key_of, owner_references_patch,
    slow_start_batch, triggers, with_owner, without_owner, workload_selector,
};
use crate::events::{EventType, Recorder};

/// A backstop resync; watch events normally drive every sync.
const RESYNC: Duration = Duration::from_secs(300);

struct State {
    client: kube::Client,
    daemon_sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    expectations: Expectations,
    events: Recorder,
    backoff: Backoff,
}

/// What about a Node matters to DaemonSets: labels, taints, name. A
/// heartbeat that changes none of these wakes nobody.
fn node_fingerprint(node: &Node) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.metadata.labels.hash(&mut h);
    if let Some(spec) = &node.spec {
        for t in spec.taints.iter().flatten() {
            (&t.key, &t.value, &t.effect).hash(&mut h);
        }
        spec.unschedulable.hash(&mut h);
    }
    h.finish()
}

/// Runs the DaemonSet controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (daemon_sets, ds_writer) = reflector::store::<DaemonSet>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let state = Arc::new(State {
        client: client.clone(),
        daemon_sets: daemon_sets.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        expectations: Expectations::default(),
        events: Recorder::new(client.clone(), "daemonset-controller"),
        backoff: Backoff::default(),
    });

    let ds_events = reflect(
        ds_writer,
        watcher(Api::<DaemonSet>::all(client.clone()), Default::default()).default_backoff(),
    );
    let ds_state = state.clone();
    let ds_requests = triggers(ds_events, "daemonsets", move |ds: &DaemonSet, deleted| {
        if deleted {
            ds_state.expectations.forget(&key_of(&ds.metadata));
            ds_state.backoff.reset(&key_of(&ds.metadata));
            return Vec::new();
        }
        vec![ObjectRef::from_obj(ds)]
    });

    let pod_events = reflect(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), Default::default()).default_backoff(),
    );
    let pod_state = state.clone();
    let pod_requests = triggers(pod_events, "pods", move |pod: &Pod, deleted| {
        daemon_sets_for_pod(&pod_state, pod, deleted)
    });

    let node_events = reflect(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), Default::default()).default_backoff(),
    );
    let node_state = state.clone();
    let seen: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let node_requests = triggers(node_events, "nodes", move |node: &Node, deleted| {
        let name = node.name_any();
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if deleted {
            seen.remove(&name).is_some()
        } else {
            seen.insert(name, node_fingerprint(node)) != Some(node_fingerprint(node))
        };
        if !changed {
            return Vec::new();
        }
        node_state
            .daemon_sets
            .state()
            .iter()
            .map(|ds| ObjectRef::from_obj(ds.as_ref()))
            .collect()
    });

    let requests = futures::stream::select(
        ds_requests,
        futures::stream::select(pod_requests, node_requests),
    );
    tracing::info!("daemonset controller started");
    applier(
        |obj, state| {
            Box::pin(async move {
                let key = key_of(&obj.metadata);
                let result = reconcile(obj, state.clone()).await;
                if result.is_ok() {
                    state.backoff.reset(&key);
                }
                result
            })
        },
        |obj, error, state| state.backoff.retry_after(&key_of(&obj.metadata), error),
        state,
        daemon_sets,
        requests,
        ApplierConfig::default().concurrency(2),
    )
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::debug!(%error, "daemonset reconcile");
        }
    })
    .await;
    Ok(())
}

/// The DaemonSets a Pod event concerns (see `controllers_for_pod`).
fn daemon_sets_for_pod(state: &State, pod: &Pod, deleted: bool) -> Vec<ObjectRef<DaemonSet>> {
    controllers_for_pod(
        "DaemonSet",
        &state.expectations,
        &state.daemon_sets,
        |ds| ds.spec.as_ref().map(|s| &s.selector),
        pod,
        deleted,
    )
}

async fn reconcile(ds: Arc<DaemonSet>, state: Arc<State>) -> Result<Action, SyncError> {
    let _ = state.pods.wait_until_ready().await;
    let _ = state.nodes.wait_until_ready().await;
    let key = key_of(&ds.metadata);
    let namespace = ds.namespace().unwrap_or_default();
    let uid = ds.uid().unwrap_or_default();
    let on = ds.object_ref(&());
    let spec = ds.spec.clone().unwrap_or_default();
    let selector = match workload_selector(Some(&spec.selector))
        .and_then(|s| check_template_selected(&s, Some(&spec.template)).map(|()| s))
    {
        Ok(s) => s,
        Err(what) => {
            tracing::warn!(daemonset = %key, %what, "skipping DaemonSet");
            state
                .events
                .record(&on, EventType::Warning, "InvalidSelector", &what)
                .await;
            return Ok(Action::await_change());
        }
    };
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let pods_api: Api<Pod> = Api::namespaced(state.client.clone(), &namespace);

    // Claim Pods (terminating ones are only counted, never claimed).
    let mut owned = Vec::new();
    for pod in state.pods.state() {
        if pod.metadata.namespace.as_deref() != Some(namespace.as_str()) {
            continue;
        }
        match claim(&uid, deleting, &selector, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                let reference = controller_reference("apps/v1", "DaemonSet", &ds.name_any(), &uid);
                let patch =
                    owner_references_patch(&pod.metadata, &with_owner(&pod.metadata, reference));
                match pods_api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(p) => owned.push(Arc::new(p)),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        return Err(SyncError::api(
                            &key,
                            format!("adopting pod {}", pod.name_any()),
                            e,
                        ));
                    }
                }
            }
            Claim::Release => {
                let patch =
                    owner_references_patch(&pod.metadata, &without_owner(&pod.metadata, &uid));
                match pods_api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        return Err(SyncError::api(
                            &key,
                            format!("releasing pod {}", pod.name_any()),
                            e,
                        ));
                    }
                }
            }
            Claim::Ignore => {}
        }
    }

    let nodes = state.nodes.state();
    let pod_spec = model::daemon_pod_spec(&ds);
    let hash = model::revision_hash(&ds);
    let by_node = model::pods_by_node(&owned);
    let now = Timestamp::now();
    let cache = |name: &str| match state.pods.get(&ObjectRef::new(name).within(&namespace)) {
        Some(p) if p.metadata.deletion_timestamp.is_some() => Cached::Terminating,
        Some(_) => Cached::Present,
        None => Cached::Absent,
    };
    let mut failure = None;
    if !deleting && state.expectations.satisfied(&key, cache) {
        let mut changes = model::manage(&pod_spec, &nodes, &by_node);
        if changes == model::Changes::default() {
            let desired = nodes
                .iter()
                .filter(|n| model::node_should_run(&pod_spec, n).should_run)
                .count() as i32;
            match model::max_unavailable(&ds, desired) {
                Ok(Some(max)) => {
                    changes.delete = model::rolling_update(&ds, &by_node, &hash, max, now);
                }
                Ok(None) => {}
                Err(what) => {
                    state
                        .events
                        .record(&on, EventType::Warning, "InvalidUpdateStrategy", &what)
                        .await;
                }
            }
        }
        failure = sync_nodes(&state, &ds, &pods_api, &pod_spec, &hash, changes).await;
    }

    let status = model::calculate_status(&ds, &pod_spec, &nodes, &by_node, &hash, now);
    if status_json(&status) != status_json(&ds.status.clone().unwrap_or_default()) {
        let api: Api<DaemonSet> = Api::namespaced(state.client.clone(), &namespace);
        let patch = json!({"status": status_json(&status)});
        api.patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| SyncError::api(&key, "updating status", e))?;
    }
    if let Some(what) = failure {
        return Err(SyncError::Invalid { object: key, what });
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let soonest = owned
        .iter()
        .filter_map(|p| available_in(p, min_ready, now))
        .filter(|d| !d.is_zero())
        .min();
    Ok(Action::requeue(
        soonest.map_or(RESYNC, |d| d + Duration::from_millis(100)),
    ))
}

/// Creates and deletes daemon Pods; returns what failed, if anything.
async fn sync_nodes(
    state: &State,
    ds: &DaemonSet,
    pods_api: &Api<Pod>,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    hash: &str,
    changes: model::Changes,
) -> Option<String> {
    let key = key_of(&ds.metadata);
    let on = ds.object_ref(&());
    let mut failure = None;
    let mut nodes = changes.create_on.into_iter();
    let (created, error) = slow_start_batch(nodes.len(), || {
        let node = nodes.next().unwrap_or_default();
        let pod = model::new_pod(ds, spec, &node, hash);
        let key = key.clone();
        async move {
            state.expectations.creating(&key, 1);
            match pods_api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    state.expectations.created(&key, p.metadata.name.as_deref());
                    Ok(p.name_any())
                }
                Err(e) => {
                    state.expectations.created(&key, None);
                    Err((node, e))
                }
            }
        }
    })
    .await;
    for name in created {
        state
            .events
            .record(
                &on,
                EventType::Normal,
                "SuccessfulCreate",
                &format!("Created pod: {name}"),
            )
            .await;
    }
    if let Some((node, e)) = error {
        let message = format!("Error creating: {e}");
        tracing::warn!(daemonset = %key, %node, %message);
        state
            .events
            .record(&on, EventType::Warning, "FailedCreate", &message)
            .await;
        failure = Some(message);
    }
    for name in &changes.delete {
        state.expectations.expect_delete(&key, name);
    }
    let results =
        futures::future::join_all(changes.delete.iter().map(|name| async move {
            (name, pods_api.delete(name, &DeleteParams::default()).await)
        }))
        .await;
    for (name, result) in results {
        match result {
            Ok(_) => {
                state
                    .events
                    .record(
                        &on,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    )
                    .await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                state.expectations.cancel_delete(&key, name);
                let message = format!("Error deleting: {e}");
                state
                    .events
                    .record(&on, EventType::Warning, "FailedDelete", &message)
                    .await;
                failure.get_or_insert(message);
            }
        }
    }
    failure
}

/// Every field explicit, so a merge patch also writes zeros.
fn status_json(s: &DaemonSetStatus) -> serde_json::Value {
    json!({
        "observedGeneration": s.observed_generation,
        "desiredNumberScheduled": s.desired_number_scheduled,
        "currentNumberScheduled": s.current_number_scheduled,
        "numberMisscheduled": s.number_misscheduled,
        "numberReady": s.number_ready,
        "numberAvailable": s.number_available.unwrap_or(0),
        "numberUnavailable": s.number_unavailable.unwrap_or(0),
        "updatedNumberScheduled": s.updated_number_scheduled.unwrap_or(0),
        "collisionCount": s.collision_count,
        "conditions": s.conditions,
    })
}
