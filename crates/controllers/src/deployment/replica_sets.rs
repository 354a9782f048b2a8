//! A Deployment's ReplicaSets as upstream's `deployment/util` sees them:
//! which one is new (same template, ignoring the hash label), their
//! revisions and annotations, sizes and the Deployment's strategy numbers.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controller_utils::{controller_reference, scaled_value, template_hash};

pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Longest `revision-history` annotation kept.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations of a Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// `spec.replicas`, defaulting to 1.
pub fn deployment_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The available Pods a ReplicaSet can be counted on for: its status may
/// lag a scale-down, and Pods above `spec.replicas` are about to go.
pub fn rs_available_within_spec(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

/// The rolling-update numbers of a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    RollingUpdate {
        max_surge: i32,
        max_unavailable: i32,
    },
}

impl Strategy {
    /// `MaxSurge`: 0 for Recreate.
    pub fn max_surge(self) -> i32 {
        match self {
            Strategy::Recreate => 0,
            Strategy::RollingUpdate { max_surge, .. } => max_surge,
        }
    }

    /// `MaxUnavailable`: 0 for Recreate or no replicas, at most `replicas`.
    pub fn max_unavailable(self, replicas: i32) -> i32 {
        match self {
            Strategy::Recreate => 0,
            _ if replicas == 0 => 0,
            Strategy::RollingUpdate {
                max_unavailable, ..
            } => max_unavailable.min(replicas),
        }
    }
}

/// Reads `spec.strategy`: absent means RollingUpdate with 25%/25%, as the
/// API defaults it. Surge rounds up, unavailability down, and both zero
/// means one unavailable (upstream's `ResolveFenceposts`).
pub fn strategy(d: &Deployment) -> Result<Strategy, String> {
    let replicas = deployment_replicas(d);
    let spec_strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    match spec_strategy.and_then(|s| s.type_.as_deref()) {
        None | Some("RollingUpdate") => {}
        Some("Recreate") => return Ok(Strategy::Recreate),
        Some(other) => return Err(format!("unsupported spec.strategy.type {other:?}")),
    }
    let default = IntOrString::String("25%".into());
    let rolling = spec_strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&default);
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let max_surge = scaled_value(surge, replicas, true)
        .map_err(|e| format!("spec.strategy.rollingUpdate.maxSurge: {e}"))?
        .max(0);
    let mut max_unavailable = scaled_value(unavailable, replicas, false)
        .map_err(|e| format!("spec.strategy.rollingUpdate.maxUnavailable: {e}"))?
        .max(0);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Ok(Strategy::RollingUpdate {
        max_surge,
        max_unavailable,
    })
}

fn without_hash_label(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
    if let Some(labels) = meta.labels.as_mut() {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
        meta.annotations = None;
    }
    if *meta == ObjectMeta::default() {
        t.metadata = None;
    }
    t
}

/// Upstream's `EqualIgnoreHash`: the templates match once the
/// `pod-template-hash` label is set aside.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash_label(a) == without_hash_label(b)
}

pub fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
}

/// Oldest first, name as the tie breaker.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Lowest revision first, creation as the tie breaker.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision_of(a)
        .unwrap_or(0)
        .cmp(&revision_of(b).unwrap_or(0))
        .then_with(|| by_creation(a, b))
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DESIRED_REPLICAS).and_then(|v| v.parse().ok())
}

pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, MAX_REPLICAS).and_then(|v| v.parse().ok())
}

/// Sets `desired-replicas` and `max-replicas`; true when they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    desired_replicas_annotation(rs) != Some(desired) || max_replicas_annotation(rs) != Some(max)
}

/// Upstream's `SetNewReplicaSetAnnotations`: copies the Deployment's
/// annotations, raises the revision (remembering the old one in
/// `revision-history` when a template comes back), and for a ReplicaSet
/// about to be created sets the replica annotations. True when anything
/// changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    strategy: Strategy,
) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old_revision = annotations.get(REVISION).cloned();
    let old_value = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            // A revision we cannot read is left alone, as upstream does.
            Err(_) => return changed,
        },
    };
    if old_value < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old_revision.filter(|o| !o.is_empty()) {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            let mut revisions: Vec<&str> = if history.is_empty() {
                Vec::new()
            } else {
                history.split(',').collect()
            };
            let mut total = history.len() + old.len() + usize::from(!history.is_empty());
            while total > MAX_REVISION_HISTORY_CHARS && !revisions.is_empty() {
                total -= revisions[0].len() + 1;
                revisions.remove(0);
            }
            if total <= MAX_REVISION_HISTORY_CHARS {
                revisions.push(&old);
                annotations.insert(REVISION_HISTORY.into(), revisions.join(","));
            }
        }
    }
    if !exists {
        let replicas = deployment_replicas(d);
        changed |= set_replicas_annotations(rs, replicas, replicas + strategy.max_surge());
    }
    changed
}

/// The ReplicaSet a Deployment creates for its current template:
/// `<deployment>-<hash>`, the hash label on its labels, selector and
/// template, owned by the Deployment. Replicas start at zero.
pub fn new_replica_set(d: &Deployment) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collision_count);
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let labels = meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let name = d.metadata.name.clone().unwrap_or_default();
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels,
            owner_references: Some(vec![controller_reference(
                "apps/v1",
                "Deployment",
                &name,
                d.metadata.uid.as_deref().unwrap_or(""),
            )]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn deploy(strategy: serde_json::Value, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid",
                "annotations": {"kubernetes.io/change-cause": "v2",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": replicas, "strategy": strategy,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn strategy_defaults_and_rounding() {
        let s = strategy(&deploy(serde_json::Value::Null, 3)).unwrap();
        assert_eq!(
            s,
            Strategy::RollingUpdate {
                max_surge: 1,
                max_unavailable: 0
            }
        );
        let s = strategy(&deploy(
            json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}}),
            3,
        ))
        .unwrap();
        assert_eq!(s.max_unavailable(3), 1, "both zero means one unavailable");
        let s = strategy(&deploy(
            json!({"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 9}}),
            4,
        ))
        .unwrap();
        assert_eq!((s.max_surge(), s.max_unavailable(4)), (2, 4));
        assert_eq!(
            strategy(&deploy(json!({"type": "Recreate"}), 3)).unwrap(),
            Strategy::Recreate
        );
        assert!(strategy(&deploy(json!({"type": "Sideways"}), 3)).is_err());
        assert!(strategy(&deploy(json!({"rollingUpdate": {"maxSurge": "lots"}}), 3)).is_err());
    }

    #[test]
    fn new_replica_set_carries_the_hash_everywhere() {
        let d = deploy(serde_json::Value::Null, 3);
        let rs = new_replica_set(&d);
        let name = rs.metadata.name.clone().unwrap();
        let hash = name.strip_prefix("web-").unwrap();
        let spec = rs.spec.as_ref().unwrap();
        let template = spec.template.as_ref().unwrap();
        let label = |m: &Option<BTreeMap<String, String>>| {
            m.as_ref().unwrap().get(POD_TEMPLATE_HASH).cloned()
        };
        assert_eq!(label(&rs.metadata.labels).as_deref(), Some(hash));
        assert_eq!(label(&spec.selector.match_labels).as_deref(), Some(hash));
        assert_eq!(
            label(&template.metadata.as_ref().unwrap().labels).as_deref(),
            Some(hash)
        );
        assert!(equal_ignore_hash(
            template,
            &d.spec.as_ref().unwrap().template
        ));
        assert_eq!(spec.replicas, Some(0));
        let mut changed = d.clone();
        changed
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("nginx:2".into());
        assert!(!equal_ignore_hash(
            template,
            &changed.spec.as_ref().unwrap().template
        ));
        assert_ne!(new_replica_set(&changed).metadata.name, rs.metadata.name);
    }

    #[test]
    fn annotations_and_revision_history() {
        let d = deploy(serde_json::Value::Null, 4);
        let s = strategy(&d).unwrap();
        let mut rs = new_replica_set(&d);
        assert!(set_new_replica_set_annotations(&d, &mut rs, 1, false, s));
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("5"));
        assert_eq!(
            a.get("kubernetes.io/change-cause").map(String::as_str),
            Some("v2")
        );
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(!set_new_replica_set_annotations(&d, &mut rs, 1, true, s));
        // Rolled back to: the old revision goes to the history.
        assert!(set_new_replica_set_annotations(&d, &mut rs, 3, true, s));
        assert!(set_new_replica_set_annotations(&d, &mut rs, 5, true, s));
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("5"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
    }
}
