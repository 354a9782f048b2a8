//! The ReplicaSet model: Pods from the template, which Pods to delete
//! first, and the status a ReplicaSet reports for its Pods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use serde_json::json;

use crate::controller_utils::{
    available_in, controller_reference, is_pod_ready, rank_for_deletion,
};

pub fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

pub fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Why the last create or delete failed, for the ReplicaFailure condition.
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
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
pub fn calculate_status(
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

pub fn status_changed(rs: &ReplicaSet, new: &ReplicaSetStatus) -> bool {
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
pub fn status_json(s: &ReplicaSetStatus) -> serde_json::Value {
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
    use crate::controller_utils::controller_of;

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
            (
                owner.kind.as_str(),
                owner.uid.as_str(),
                owner.block_owner_deletion
            ),
            ("ReplicaSet", "rs-uid", Some(true))
        );
        assert_eq!(
            p.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let now: Timestamp = "2025-01-01T12:00:00Z".parse().unwrap();
        let ready =
            |since: &str| json!([{"type": "Ready", "status": "True", "lastTransitionTime": since}]);
        let pods = vec![
            pod(
                json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "front"}},
                "status": {"conditions": ready("2025-01-01T11:00:00Z")}}),
            ),
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
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            ("ReplicaFailure", Some("FailedCreate"))
        );
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
            pod(
                json!({"metadata": {"name": "ready", "uid": "1"}, "spec": {"nodeName": "n1"},
                "status": {"phase": "Running", "conditions": ready}}),
            ),
            pod(
                json!({"metadata": {"name": "pending", "uid": "2"}, "spec": {"nodeName": "n2"},
                "status": {"phase": "Pending"}}),
            ),
            pod(
                json!({"metadata": {"name": "unscheduled", "uid": "3"}, "status": {"phase": "Pending"}}),
            ),
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
