//! Deployment controller, after upstream's `pkg/controller/deployment`:
//! each Deployment owns ReplicaSets named `<deployment>-<pod-template-hash>`
//! and rolls from the old ones to the one matching its template
//! (RollingUpdate within maxSurge/maxUnavailable, or Recreate), scales them
//! proportionally, keeps `revisionHistoryLimit` old ones, and reports
//! status and the Available/Progressing conditions that `kubectl get
//! deploy` and `kubectl rollout status` read.
//!
//! The logic is the pure model in [`rollout`]; this module claims
//! ReplicaSets, applies the model's plan through the API (every update
//! guarded by the resourceVersion it was planned on) and records events.

pub mod replica_sets;
pub mod rollout;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Config as ApplierConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, reflector as reflect, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Context;
use crate::controller_utils::{
    Backoff, Claim, SyncError, check_template_selected, claim, controller_of, controller_reference,
    is_already_exists, is_not_found, key_of, labels_json, owner_references_patch, refers_to,
    request, triggers, with_owner, without_owner, workload_selector,
};
use crate::events::{EventType, Recorder};
use replica_sets::{equal_ignore_hash, strategy};
use rollout::{Change, Plan};
use status::{FAILED_RS_CREATE, PROGRESSING, new_condition, set_condition, status_json};

/// A backstop resync; watch events normally drive every sync.
const RESYNC: Duration = Duration::from_secs(300);

struct State {
    client: kube::Client,
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    pods: Store<Pod>,
    events: Recorder,
    backoff: Backoff,
}

/// Runs the Deployment controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (deployments, d_writer) = reflector::store::<Deployment>();
    let (replica_sets, rs_writer) = reflector::store::<ReplicaSet>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let state = Arc::new(State {
        client: client.clone(),
        replica_sets: replica_sets.clone(),
        deployments: deployments.clone(),
        pods: pods.clone(),
        events: Recorder::new(client.clone(), "deployment-controller"),
        backoff: Backoff::default(),
    });

    let d_events = reflect(
        d_writer,
        watcher(Api::<Deployment>::all(client.clone()), Default::default()).default_backoff(),
    );
    let d_state = state.clone();
    let d_requests = triggers(d_events, "deployments", move |d: &Deployment, deleted| {
        if deleted {
            d_state.backoff.reset(&key_of(&d.metadata));
            Vec::new()
        } else {
            vec![ObjectRef::from_obj(d)]
        }
    });

    let rs_events = reflect(
        rs_writer,
        watcher(Api::<ReplicaSet>::all(client.clone()), Default::default()).default_backoff(),
    );
    let rs_state = state.clone();
    let rs_requests = triggers(rs_events, "replicasets", move |rs: &ReplicaSet, _| {
        deployments_for_replica_set(&rs_state, rs)
    });

    // Recreate waits for old Pods to be gone: their deletion is news.
    let pod_events = reflect(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), Default::default()).default_backoff(),
    );
    let pod_state = state.clone();
    let pod_requests = triggers(pod_events, "pods", move |pod: &Pod, deleted| {
        if !deleted {
            return Vec::new();
        }
        let Some(owner) =
            controller_of(&pod.metadata).filter(|o| refers_to(o, "apps", "ReplicaSet"))
        else {
            return Vec::new();
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        pod_state
            .replica_sets
            .get(&ObjectRef::new(&owner.name).within(namespace))
            .and_then(|rs| controller_of(&rs.metadata).cloned())
            .filter(|o| refers_to(o, "apps", "Deployment"))
            .map(|o| vec![request(Some(namespace), &o.name)])
            .unwrap_or_default()
    });

    let requests = futures::stream::select(
        d_requests,
        futures::stream::select(rs_requests, pod_requests),
    );
    tracing::info!("deployment controller started");
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
        deployments,
        requests,
        ApplierConfig::default().concurrency(5),
    )
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::debug!(%error, "deployment reconcile");
        }
    })
    .await;
    Ok(())
}

/// The Deployments a ReplicaSet event concerns: its controller, or for an
/// orphan every Deployment that might adopt it.
fn deployments_for_replica_set(state: &State, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let namespace = rs.metadata.namespace.as_deref();
    if let Some(owner) = controller_of(&rs.metadata) {
        if refers_to(owner, "apps", "Deployment") {
            return vec![request(namespace, &owner.name)];
        }
        return Vec::new();
    }
    let labels = labels_json(rs.metadata.labels.as_ref());
    state
        .deployments
        .state()
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == namespace)
        .filter(|d| {
            d.spec
                .as_ref()
                .and_then(|s| workload_selector(Some(&s.selector)).ok())
                .is_some_and(|selector| selector.matches(&labels))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

async fn reconcile(d: Arc<Deployment>, state: Arc<State>) -> Result<Action, SyncError> {
    let _ = state.replica_sets.wait_until_ready().await;
    let _ = state.pods.wait_until_ready().await;
    let key = key_of(&d.metadata);
    let namespace = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let on = d.object_ref(&());
    let deployments: Api<Deployment> = Api::namespaced(state.client.clone(), &namespace);
    let spec = d.spec.clone().unwrap_or_default();

    let selector = match workload_selector(Some(&spec.selector)) {
        Ok(s) => s,
        Err(what) => {
            tracing::warn!(deployment = %key, %what, "skipping Deployment");
            state
                .events
                .record(
                    &on,
                    EventType::Warning,
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required.",
                )
                .await;
            observe_generation(&deployments, &d).await?;
            return Ok(Action::await_change());
        }
    };
    let strategy = match check_template_selected(&selector, Some(&spec.template))
        .and_then(|()| strategy(&d))
    {
        Ok(s) => s,
        Err(what) => {
            tracing::warn!(deployment = %key, %what, "skipping Deployment");
            state
                .events
                .record(&on, EventType::Warning, "InvalidSpec", &what)
                .await;
            return Ok(Action::await_change());
        }
    };

    let owned = claim_replica_sets(&state, &d, &selector).await?;
    let owned_uids: Vec<&str> = owned
        .iter()
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    let pods: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| {
            controller_of(&p.metadata).is_some_and(|o| owned_uids.contains(&o.uid.as_str()))
        })
        .collect();

    let plan = rollout::plan(&d, strategy, owned, &pods, Timestamp::now());
    apply(&state, &d, &uid, plan).await
}

/// Adopts matching orphan ReplicaSets and releases owned ones that no
/// longer match; returns the ones the Deployment controls.
async fn claim_replica_sets(
    state: &State,
    d: &Deployment,
    selector: &ferry_api::selector::LabelSelector,
) -> Result<Vec<ReplicaSet>, SyncError> {
    let key = key_of(&d.metadata);
    let namespace = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let api: Api<ReplicaSet> = Api::namespaced(state.client.clone(), &namespace);
    let mut owned = Vec::new();
    let mut may_adopt = None;
    for rs in state.replica_sets.state() {
        if rs.metadata.namespace.as_deref() != Some(namespace.as_str()) {
            continue;
        }
        match claim(&uid, deleting, selector, &rs.metadata) {
            Claim::Owned => owned.push(rs.as_ref().clone()),
            Claim::Adopt => {
                if may_adopt.is_none() {
                    may_adopt = Some(still_current(state, d).await?);
                }
                if may_adopt != Some(true) {
                    continue;
                }
                let reference = controller_reference("apps/v1", "Deployment", &d.name_any(), &uid);
                let refs = with_owner(&rs.metadata, reference);
                let patch = owner_references_patch(&rs.metadata, &refs);
                match api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        return Err(SyncError::api(
                            &key,
                            format!("adopting {}", rs.name_any()),
                            e,
                        ));
                    }
                }
            }
            Claim::Release => {
                let patch =
                    owner_references_patch(&rs.metadata, &without_owner(&rs.metadata, &uid));
                match api
                    .patch(
                        &rs.name_any(),
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
                            format!("releasing {}", rs.name_any()),
                            e,
                        ));
                    }
                }
            }
            Claim::Ignore => {}
        }
    }
    Ok(owned)
}

/// Whether the cached Deployment is the live one and not being deleted
/// (upstream rechecks before adopting).
async fn still_current(state: &State, d: &Deployment) -> Result<bool, SyncError> {
    let api: Api<Deployment> =
        Api::namespaced(state.client.clone(), &d.namespace().unwrap_or_default());
    match api.get_opt(&d.name_any()).await {
        Ok(Some(live)) => {
            Ok(live.metadata.uid == d.metadata.uid && live.metadata.deletion_timestamp.is_none())
        }
        Ok(None) => Ok(false),
        Err(e) => Err(SyncError::api(
            key_of(&d.metadata),
            "rechecking before adoption",
            e,
        )),
    }
}

async fn observe_generation(api: &Api<Deployment>, d: &Deployment) -> Result<(), SyncError> {
    let observed = d.status.as_ref().and_then(|s| s.observed_generation);
    if observed >= d.metadata.generation {
        return Ok(());
    }
    let patch = json!({"status": {"observedGeneration": d.metadata.generation}});
    api.patch_status(
        &d.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| SyncError::api(key_of(&d.metadata), "updating status", e))
}

/// Carries out a plan in order, stopping at the first failure.
async fn apply(state: &State, d: &Deployment, uid: &str, plan: Plan) -> Result<Action, SyncError> {
    let key = key_of(&d.metadata);
    let namespace = d.namespace().unwrap_or_default();
    let on = d.object_ref(&());
    let rs_api: Api<ReplicaSet> = Api::namespaced(state.client.clone(), &namespace);
    let d_api: Api<Deployment> = Api::namespaced(state.client.clone(), &namespace);
    for step in plan.steps {
        match step.change {
            Change::Create(rs) => {
                let name = rs.name_any();
                match rs_api.create(&PostParams::default(), &rs).await {
                    Ok(_) => {}
                    Err(e) if is_already_exists(&e) => {
                        return on_name_taken(state, d, uid, &rs).await;
                    }
                    Err(e) => {
                        let message = format!("Failed to create new replica set {name:?}: {e}");
                        state
                            .events
                            .record(&on, EventType::Warning, "FailedCreate", &message)
                            .await;
                        let mut status = d.status.clone().unwrap_or_default();
                        set_condition(
                            &mut status,
                            new_condition(
                                PROGRESSING,
                                "False",
                                FAILED_RS_CREATE,
                                message,
                                Timestamp::now(),
                            ),
                        );
                        write_status(&d_api, d, &status).await?;
                        return Err(SyncError::api(&key, format!("creating {name}"), e));
                    }
                }
            }
            Change::Update(rs) => {
                let spec = rs.spec.clone().unwrap_or_default();
                let patch = json!({
                    "metadata": {
                        "annotations": rs.metadata.annotations,
                        "resourceVersion": rs.metadata.resource_version,
                    },
                    "spec": {
                        "replicas": spec.replicas,
                        "minReadySeconds": spec.min_ready_seconds,
                    },
                });
                rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(|e| SyncError::api(&key, format!("updating {}", rs.name_any()), e))?;
            }
            Change::Delete { name, uid } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid,
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match rs_api.delete(&name, &params).await {
                    Ok(_) => {
                        tracing::debug!(deployment = %key, replicaset = %name, "deleted old ReplicaSet")
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(SyncError::api(&key, format!("deleting {name}"), e)),
                }
            }
        }
        if let Some((type_, reason, message)) = step.event {
            state.events.record(&on, type_, reason, &message).await;
        }
    }
    if let Some(revision) = plan.revision {
        let patch = json!({"metadata": {"annotations": {replica_sets::REVISION: revision}}});
        d_api
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| SyncError::api(&key, "setting the revision", e))?;
    }
    if let Some(status) = plan.status {
        write_status(&d_api, d, &status).await?;
    }
    Ok(Action::requeue(
        plan.requeue_after.unwrap_or(RESYNC).min(RESYNC),
    ))
}

async fn write_status(
    api: &Api<Deployment>,
    d: &Deployment,
    status: &k8s_openapi::api::apps::v1::DeploymentStatus,
) -> Result<(), SyncError> {
    let patch = json!({"status": status_json(status)});
    api.patch_status(
        &d.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| SyncError::api(key_of(&d.metadata), "updating status", e))
}

/// The new ReplicaSet's name is taken. If it is ours with this template
/// the cache was behind; otherwise the hash collided, and a higher
/// `collisionCount` gives the next attempt another name.
async fn on_name_taken(
    state: &State,
    d: &Deployment,
    uid: &str,
    wanted: &ReplicaSet,
) -> Result<Action, SyncError> {
    let key = key_of(&d.metadata);
    let namespace = d.namespace().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(state.client.clone(), &namespace);
    let existing = rs_api
        .get_opt(&wanted.name_any())
        .await
        .map_err(|e| SyncError::api(&key, "reading the existing ReplicaSet", e))?;
    let ours = existing.as_ref().is_some_and(|rs| {
        controller_of(&rs.metadata).is_some_and(|o| o.uid == uid)
            && match (
                rs.spec.as_ref().and_then(|s| s.template.as_ref()),
                d.spec.as_ref().map(|s| &s.template),
            ) {
                (Some(a), Some(b)) => equal_ignore_hash(a, b),
                _ => false,
            }
    });
    if ours || existing.is_none() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let mut status = d.status.clone().unwrap_or_default();
    let count = status.collision_count.unwrap_or(0).saturating_add(1);
    status.collision_count = Some(count);
    tracing::info!(deployment = %key, replicaset = %wanted.name_any(), count, "pod-template-hash collision");
    let d_api: Api<Deployment> = Api::namespaced(state.client.clone(), &namespace);
    let patch = json!({"status": {"collisionCount": count}});
    d_api
        .patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| SyncError::api(&key, "raising collisionCount", e))?;
    Ok(Action::requeue(Duration::from_millis(200)))
}
