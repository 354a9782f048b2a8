//! ReplicaSet controller, after upstream's `pkg/controller/replicaset`:
//! keeps `spec.replicas` Pods made from `spec.template` alive, each owned
//! by its ReplicaSet (controller ownerReference), adopting matching orphans
//! and releasing Pods that no longer match, and writes the status
//! (`replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//! `availableReplicas`, `observedGeneration`).
//!
//! Reflectors on ReplicaSets and Pods feed kube-runtime's `applier`; the
//! counting and ranking are pure functions in [`model`] and
//! `controller_utils`. Expectations keep a stale Pod cache from creating
//! or deleting twice.

pub mod model;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, reflector as reflect, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Context;
use crate::controller_utils::{
    Backoff, Cached, Claim, Expectations, SyncError, available_in, check_template_selected, claim,
    controller_of, controller_reference, controllers_for_pod, is_not_found, is_pod_active, key_of,
    owner_references_patch, slow_start_batch, triggers, with_owner, without_owner,
    workload_selector,
};
use crate::events::{EventType, Recorder};
use model::{
    Failure, calculate_status, min_ready_seconds, pod_from_template, pods_to_delete, replicas_of,
    status_changed, status_json,
};

/// Most Pods created or deleted in one sync (upstream's `burstReplicas`).
const BURST_REPLICAS: usize = 500;

/// A backstop resync; watch events normally drive every sync.
const RESYNC: Duration = Duration::from_secs(300);

struct State {
    client: kube::Client,
    pods: Store<Pod>,
    replica_sets: Store<ReplicaSet>,
    expectations: Expectations,
    events: Recorder,
    backoff: Backoff,
}

/// Runs the ReplicaSet controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (replica_sets, rs_writer) = reflector::store::<ReplicaSet>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let state = Arc::new(State {
        client: client.clone(),
        pods: pods.clone(),
        replica_sets: replica_sets.clone(),
        expectations: Expectations::default(),
        events: Recorder::new(client.clone(), "replicaset-controller"),
        backoff: Backoff::default(),
    });

    let rs_events = reflect(
        rs_writer,
        watcher(Api::<ReplicaSet>::all(client.clone()), Default::default()).default_backoff(),
    );
    let rs_state = state.clone();
    let rs_requests = triggers(rs_events, "replicasets", move |rs: &ReplicaSet, deleted| {
        if deleted {
            rs_state.expectations.forget(&key_of(&rs.metadata));
            rs_state.backoff.reset(&key_of(&rs.metadata));
            return Vec::new();
        }
        vec![ObjectRef::from_obj(rs)]
    });

    let pod_events = reflect(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), Default::default()).default_backoff(),
    );
    let pod_state = state.clone();
    let pod_requests = triggers(pod_events, "pods", move |pod: &Pod, deleted| {
        replica_sets_for_pod(&pod_state, pod, deleted)
    });

    let requests = futures::stream::select(rs_requests, pod_requests);
    tracing::info!("replicaset controller started");
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
        replica_sets,
        requests,
        ApplierConfig::default().concurrency(5),
    )
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::debug!(%error, "replicaset reconcile");
        }
    })
    .await;
    Ok(())
}

/// The ReplicaSets a Pod event concerns (see `controllers_for_pod`).
fn replica_sets_for_pod(state: &State, pod: &Pod, deleted: bool) -> Vec<ObjectRef<ReplicaSet>> {
    controllers_for_pod(
        "ReplicaSet",
        &state.expectations,
        &state.replica_sets,
        |rs| rs.spec.as_ref().map(|s| &s.selector),
        pod,
        deleted,
    )
}

async fn reconcile(rs: Arc<ReplicaSet>, state: Arc<State>) -> Result<Action, SyncError> {
    // Acting on an empty Pod cache would create a full set of duplicates.
    let _ = state.pods.wait_until_ready().await;
    let key = key_of(&rs.metadata);
    let namespace = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = match workload_selector(Some(&spec.selector))
        .and_then(|s| check_template_selected(&s, spec.template.as_ref()).map(|()| s))
    {
        Ok(s) => s,
        Err(what) => {
            tracing::warn!(replicaset = %key, %what, "skipping ReplicaSet");
            state
                .events
                .record(
                    &rs.object_ref(&()),
                    EventType::Warning,
                    "InvalidSelector",
                    &what,
                )
                .await;
            return Ok(Action::await_change());
        }
    };
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let pods_api: Api<Pod> = Api::namespaced(state.client.clone(), &namespace);

    let candidates: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()) && is_pod_active(p))
        .collect();
    let mut owned = Vec::new();
    let mut adoption_checked = None;
    for pod in candidates {
        match claim(&uid, deleting, &selector, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                // Adopt only if the ReplicaSet is really not being deleted
                // (upstream's RecheckDeletionTimestamp).
                if adoption_checked.is_none() {
                    adoption_checked = Some(still_current(&state, &rs).await?);
                }
                if adoption_checked == Some(true) {
                    let reference =
                        controller_reference("apps/v1", "ReplicaSet", &rs.name_any(), &uid);
                    let refs = with_owner(&pod.metadata, reference);
                    match patch_owners(&pods_api, &pod.metadata, &refs).await {
                        Ok(()) => owned.push(pod),
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
            }
            Claim::Release => {
                let refs = without_owner(&pod.metadata, &uid);
                match patch_owners(&pods_api, &pod.metadata, &refs).await {
                    Ok(()) => {}
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

    let cache = |name: &str| match state.pods.get(&ObjectRef::new(name).within(&namespace)) {
        Some(p) if p.metadata.deletion_timestamp.is_some() => Cached::Terminating,
        Some(_) => Cached::Present,
        None => Cached::Absent,
    };
    let needs_sync = state.expectations.satisfied(&key, cache);
    let now = Timestamp::now();
    let mut failure = None;
    if needs_sync && !deleting {
        failure = manage_replicas(&state, &rs, &pods_api, &owned, now).await;
    }

    let status = calculate_status(&rs, &owned, failure.as_ref(), now);
    if status_changed(&rs, &status) {
        let api: Api<ReplicaSet> = Api::namespaced(state.client.clone(), &namespace);
        let patch = json!({"status": status_json(&status)});
        api.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| SyncError::api(&key, "updating status", e))?;
    }
    if let Some(failure) = failure {
        return Err(SyncError::Invalid {
            object: key,
            what: failure.message,
        });
    }
    if !needs_sync {
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    // Come back when a ready pod turns available.
    let min_ready = min_ready_seconds(&rs);
    let soonest = owned
        .iter()
        .filter_map(|p| available_in(p, min_ready, now))
        .filter(|d| !d.is_zero())
        .min();
    Ok(match soonest {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::requeue(RESYNC),
    })
}

/// Whether the cached ReplicaSet is still the live one and not being
/// deleted.
async fn still_current(state: &State, rs: &ReplicaSet) -> Result<bool, SyncError> {
    let api: Api<ReplicaSet> =
        Api::namespaced(state.client.clone(), &rs.namespace().unwrap_or_default());
    match api.get_opt(&rs.name_any()).await {
        Ok(Some(live)) => {
            Ok(live.metadata.uid == rs.metadata.uid && live.metadata.deletion_timestamp.is_none())
        }
        Ok(None) => Ok(false),
        Err(e) => Err(SyncError::api(
            key_of(&rs.metadata),
            "rechecking before adoption",
            e,
        )),
    }
}

async fn patch_owners(
    api: &Api<Pod>,
    meta: &ObjectMeta,
    refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
) -> Result<(), kube::Error> {
    let patch = owner_references_patch(meta, refs);
    let name = meta.name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Creates or deletes Pods to reach `spec.replicas`.
async fn manage_replicas(
    state: &State,
    rs: &ReplicaSet,
    pods_api: &Api<Pod>,
    owned: &[Arc<Pod>],
    now: Timestamp,
) -> Option<Failure> {
    let key = key_of(&rs.metadata);
    let wanted = replicas_of(rs) as usize;
    let on = rs.object_ref(&());
    if owned.len() < wanted {
        let count = (wanted - owned.len()).min(BURST_REPLICAS);
        let pod = pod_from_template(rs);
        let (created, error) = slow_start_batch(count, || {
            let pod = pod.clone();
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
                        Err(e)
                    }
                }
            }
        })
        .await;
        for name in &created {
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
        if !created.is_empty() {
            tracing::debug!(replicaset = %key, count = created.len(), "created pods");
        }
        if let Some(e) = error {
            let message = format!("Error creating: {e}");
            tracing::warn!(replicaset = %key, %message);
            state
                .events
                .record(&on, EventType::Warning, "FailedCreate", &message)
                .await;
            return Some(Failure {
                reason: "FailedCreate",
                message,
            });
        }
    } else if owned.len() > wanted {
        let count = (owned.len() - wanted).min(BURST_REPLICAS);
        let related = related_pods(state, rs);
        let victims = pods_to_delete(owned, &related, count, now);
        for p in &victims {
            state.expectations.expect_delete(&key, &p.name_any());
        }
        let results = futures::future::join_all(victims.iter().map(|p| async move {
            let name = p.name_any();
            (
                name.clone(),
                pods_api.delete(&name, &DeleteParams::default()).await,
            )
        }))
        .await;
        let mut failure = None;
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
                    state.expectations.cancel_delete(&key, &name);
                    let message = format!("Error deleting: {e}");
                    tracing::warn!(replicaset = %key, pod = %name, %message);
                    state
                        .events
                        .record(&on, EventType::Warning, "FailedDelete", &message)
                        .await;
                    failure.get_or_insert(Failure {
                        reason: "FailedDelete",
                        message,
                    });
                }
            }
        }
        return failure;
    }
    None
}

/// Pods of the ReplicaSets that share this one's controller (a
/// Deployment's other ReplicaSets): spreading counts them all.
fn related_pods(state: &State, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
    let namespace = rs.metadata.namespace.as_deref();
    let siblings: Vec<String> = match controller_of(&rs.metadata) {
        Some(owner) => state
            .replica_sets
            .state()
            .iter()
            .filter(|other| other.metadata.namespace.as_deref() == namespace)
            .filter(|other| controller_of(&other.metadata).is_some_and(|o| o.uid == owner.uid))
            .filter_map(|other| other.metadata.uid.clone())
            .collect(),
        None => rs.metadata.uid.clone().into_iter().collect(),
    };
    state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == namespace)
        .filter(|p| controller_of(&p.metadata).is_some_and(|o| siblings.contains(&o.uid)))
        .collect()
}
