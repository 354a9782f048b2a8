//! ReplicaSet controller, after upstream's `pkg/controller/replicaset`:
//! keeps `spec.replicas` Pods made from `spec.template` alive, each owned
//! by its ReplicaSet (controller ownerReference), adopting matching orphans
//! and releasing Pods that no longer match, and writes the status
//! (`replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//! `availableReplicas`, `observedGeneration`).
//!
//! Reflectors on ReplicaSets and Pods feed kube-runtime's `applier`; the
//! counting and ranking are pure functions below and in
//! `controller_utils`. Expectations keep a stale Pod cache from creating
//! or deleting twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, reflector as reflect, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Context;
use crate::events::{EventType, Recorder};
use crate::controller_utils::{
    Cached, Claim, Expectations, SyncError, available_in, check_template_selected, claim,
    controller_of, controller_reference, is_not_found, is_pod_active, is_pod_ready, key_of,
    labels_json, owner_references_patch, rank_for_deletion, refers_to, request, retry_after,
    slow_start_batch, triggers, with_owner, without_owner, workload_selector,
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
    });

    let rs_events = reflect(
        rs_writer,
        watcher(Api::<ReplicaSet>::all(client.clone()), Default::default()).default_backoff(),
    );
    let rs_state = state.clone();
    let rs_requests = triggers(rs_events, "replicasets", move |rs: &ReplicaSet, deleted| {
        if deleted {
            rs_state.expectations.forget(&key_of(&rs.metadata));
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
        |rs, state| Box::pin(reconcile(rs, state)),
        |_rs, error, _state| retry_after(error),
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

/// The ReplicaSets a Pod event concerns: its controller, or for an orphan
/// every ReplicaSet that might adopt it. Also feeds the expectations.
fn replica_sets_for_pod(state: &State, pod: &Pod, deleted: bool) -> Vec<ObjectRef<ReplicaSet>> {
    let namespace = pod.metadata.namespace.as_deref();
    if let Some(owner) = controller_of(&pod.metadata) {
        if !refers_to(owner, "apps", "ReplicaSet") {
            return Vec::new();
        }
        let key = format!("{}/{}", namespace.unwrap_or(""), owner.name);
        let gone = deleted || pod.metadata.deletion_timestamp.is_some();
        state
            .expectations
            .observe(&key, &pod.name_any(), gone);
        return vec![request(namespace, &owner.name)];
    }
    if deleted || pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let labels = labels_json(pod.metadata.labels.as_ref());
    state
        .replica_sets
        .state()
        .iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == namespace)
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| workload_selector(Some(&s.selector)).ok())
                .is_some_and(|selector| selector.matches(&labels))
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
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
                .record(&rs.object_ref(&()), EventType::Warning, "InvalidSelector", &what)
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
                    let reference = controller_reference("apps/v1", "ReplicaSet", &rs.name_any(), &uid);
                    let refs = with_owner(&pod.metadata, reference);
                    match patch_owners(&pods_api, &pod.metadata, &refs).await {
                        Ok(()) => owned.push(pod),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => return Err(SyncError::api(&key, format!("adopting pod {}", pod.name_any()), e)),
                    }
                }
            }
            Claim::Release => {
                let refs = without_owner(&pod.metadata, &uid);
                match patch_owners(&pods_api, &pod.metadata, &refs).await {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(SyncError::api(&key, format!("releasing pod {}", pod.name_any()), e)),
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
        api.patch_status(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
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
    let api: Api<ReplicaSet> = Api::namespaced(state.client.clone(), &rs.namespace().unwrap_or_default());
    match api.get_opt(&rs.name_any()).await {
        Ok(Some(live)) => Ok(live.metadata.uid == rs.metadata.uid && live.metadata.deletion_timestamp.is_none()),
        Ok(None) => Ok(false),
        Err(e) => Err(SyncError::api(key_of(&rs.metadata), "rechecking before adoption", e)),
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

/// Why the last create or delete failed, for the ReplicaFailure condition.
struct Failure {
    reason: &'static str,
    message: String,
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
                .record(&on, EventType::Normal, "SuccessfulCreate", &format!("Created pod: {name}"))
                .await;
        }
        if !created.is_empty() {
            tracing::debug!(replicaset = %key, count = created.len(), "created pods");
        }
        if let Some(e) = error {
            let message = format!("Error creating: {e}");
            tracing::warn!(replicaset = %key, %message);
            state.events.record(&on, EventType::Warning, "FailedCreate", &message).await;
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
            (name.clone(), pods_api.delete(&name, &DeleteParams::default()).await)
        }))
        .await;
        let mut failure = None;
        for (name, result) in results {
            match result {
                Ok(_) => {
                    state
                        .events
                        .record(&on, EventType::Normal, "SuccessfulDelete", &format!("Deleted pod: {name}"))
                        .await;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    state.expectations.cancel_delete(&key, &name);
                    let message = format!("Error deleting: {e}");
                    tracing::warn!(replicaset = %key, pod = %name, %message);
                    state.events.record(&on, EventType::Warning, "FailedDelete", &message).await;
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

/// The `count` Pods to delete first.
pub fn pods_to_delete(
    owned: &[Arc<Pod>],
    related: &[Arc<Pod>],
    count: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    let mut ranked = owned.to_vec();
    rank_for_deletion(&mut ranked, related, now);
    ranked.truncate(count);
    ranked
}

/// A Pod made from the ReplicaSet's template (upstream's
/// `GetPodFromTemplate`).
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let name = rs.name_any();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(
                "apps/v1",
                "ReplicaSet",
                &name,
                rs.metadata.uid.as_deref().unwrap_or(""),
            )]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The status the ReplicaSet should report for its `owned` active Pods.
fn calculate_status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    failure: Option<&Failure>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = min_ready_seconds(rs);
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| is_pod_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| available_in(p, min_ready, now) == Some(Duration::ZERO))
        .count();
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    let old_failure = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure")
        .cloned();
    match (failure, old_failure) {
        // Upstream keeps the first failure until a sync succeeds.
        (Some(_), Some(existing)) => conditions.push(existing),
        (Some(f), None) => conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(f.reason.into()),
            message: Some(f.message.clone()),
            last_transition_time: Some(Time(now)),
        }),
        (None, _) => {}
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    ReplicaSetStatus {
        replicas: count(owned.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

fn status_changed(rs: &ReplicaSet, new: &ReplicaSetStatus) -> bool {
    let old = rs.status.clone().unwrap_or_default();
    let zero = |v: Option<i32>| v.unwrap_or(0);
    old.replicas != new.replicas
        || zero(old.fully_labeled_replicas) != zero(new.fully_labeled_replicas)
        || zero(old.ready_replicas) != zero(new.ready_replicas)
        || zero(old.available_replicas) != zero(new.available_replicas)
        || old.observed_generation != new.observed_generation
        || old.conditions.unwrap_or_default() != new.conditions.clone().unwrap_or_default()
}

/// Every field explicit, so a merge patch also clears what went away.
fn status_json(s: &ReplicaSetStatus) -> serde_json::Value {
    json!({
        "replicas": s.replicas,
        "fullyLabeledReplicas": s.fully_labeled_replicas,
        "readyReplicas": s.ready_replicas,
        "availableReplicas": s.available_replicas,
        "observedGeneration": s.observed_generation,
        "conditions": s.conditions,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rs(v: serde_json::Value) -> ReplicaSet {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn web() -> ReplicaSet {
        rs(json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "rs-uid", "generation": 4},
            "spec": {
                "replicas": 3,
                "minReadySeconds": 10,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}, "annotations": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}
                }
            }
        }))
    }

    #[test]
    fn pods_come_from_the_template_with_an_owner() {
        let p = pod_from_template(&web());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(p.labels().get("tier").map(String::as_str), Some("front"));
        let owner = controller_of(&p.metadata).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.block_owner_deletion),
            ("ReplicaSet", "rs-uid", Some(true))
        );
        assert_eq!(p.spec.unwrap().containers[0].image.as_deref(), Some("nginx"));
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let now: Timestamp = "2025-01-01T12:00:00Z".parse().unwrap();
        let ready = |since: &str| {
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": since}])
        };
        let pods = vec![
            pod(json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "front"}},
                "status": {"conditions": ready("2025-01-01T11:00:00Z")}})),
            pod(json!({"metadata": {"name": "b", "labels": {"app": "web"}},
                "status": {"conditions": ready("2025-01-01T11:59:58Z")}})),
            pod(json!({"metadata": {"name": "c", "labels": {"app": "web", "tier": "front"}}})),
        ];
        let s = calculate_status(&web(), &pods, None, now);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1), "b is within minReadySeconds");
        assert_eq!(s.observed_generation, Some(4));
        assert!(s.conditions.is_none());

        let failure = Failure {
            reason: "FailedCreate",
            message: "quota".into(),
        };
        let s = calculate_status(&web(), &pods, Some(&failure), now);
        let c = &s.conditions.unwrap()[0];
        assert_eq!((c.type_.as_str(), c.reason.as_deref()), ("ReplicaFailure", Some("FailedCreate")));
        let mut failed = web();
        failed.status = Some(s_with_failure());
        let s = calculate_status(&failed, &pods, None, now);
        assert!(s.conditions.is_none(), "a clean sync clears ReplicaFailure");
    }

    fn s_with_failure() -> ReplicaSetStatus {
        serde_json::from_value(json!({"replicas": 1, "conditions": [
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}]}))
        .unwrap()
    }

    #[test]
    fn scale_down_removes_the_least_useful_pods() {
        let now: Timestamp = "2025-01-01T12:00:00Z".parse().unwrap();
        let ready = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T10:00:00Z"}]);
        let owned = vec![
            pod(json!({"metadata": {"name": "ready", "uid": "1"}, "spec": {"nodeName": "n1"},
                "status": {"phase": "Running", "conditions": ready}})),
            pod(json!({"metadata": {"name": "pending", "uid": "2"}, "spec": {"nodeName": "n2"},
                "status": {"phase": "Pending"}})),
            pod(json!({"metadata": {"name": "unscheduled", "uid": "3"}, "status": {"phase": "Pending"}})),
        ];
        let victims = pods_to_delete(&owned, &owned, 2, now);
        let names: Vec<String> = victims.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["unscheduled", "pending"]);
    }

    #[test]
    fn absent_replicas_mean_one() {
        let mut r = web();
        r.spec.as_mut().unwrap().replicas = None;
        assert_eq!(replicas_of(&r), 1);
        r.spec.as_mut().unwrap().replicas = Some(-3);
        assert_eq!(replicas_of(&r), 0);
    }
}
