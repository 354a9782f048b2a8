//! The DaemonSet model, after upstream's `pkg/controller/daemon`: which
//! nodes should run a daemon Pod (nodeSelector, required node affinity,
//! NoSchedule/NoExecute taints against the Pod's tolerations plus the
//! standard daemon tolerations), which Pods to create and delete, the
//! rolling update within maxUnavailable, and the status.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controller_utils::{
    controller_reference, is_pod_available, is_pod_ready, scaled_value, template_hash,
};
use crate::scheduler::model::{NO_EXECUTE, matches_node_selector, tolerates, untolerated_taint};

/// The label that says which template a daemon Pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// Tolerations every daemon Pod gets (upstream's
/// `AddOrUpdateDaemonPodTolerations`): it survives its node going
/// NotReady or unreachable and runs on nodes under pressure or cordoned.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut t = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        t.push(exists(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    t
}

/// The template's Pod spec with the daemon tolerations added (a
/// toleration for the same key and effect is replaced).
pub fn daemon_pod_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    for t in daemon_tolerations(spec.host_network == Some(true)) {
        tolerations.retain(|existing| !(existing.key == t.key && existing.effect == t.effect));
        tolerations.push(t);
    }
    spec.tolerations = Some(tolerations);
    spec
}

/// The template hash daemon Pods carry (ControllerRevision names are
/// made the same way upstream).
pub fn revision_hash(ds: &DaemonSet) -> String {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    template_hash(&template, collisions)
}

/// Whether a daemon Pod should be started on a node, and whether one
/// already there may stay (upstream's `NodeShouldRunDaemonPod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub should_run: bool,
    pub should_continue_running: bool,
}

pub fn node_should_run(spec: &PodSpec, node: &Node) -> Fit {
    let name = node.metadata.name.as_deref().unwrap_or("");
    let wrong_node = spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name);
    if wrong_node || !matches_node_selector(spec, node) {
        return Fit {
            should_run: false,
            should_continue_running: false,
        };
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if untolerated_taint(taints, tolerations).is_none() {
        return Fit {
            should_run: true,
            should_continue_running: true,
        };
    }
    // A running daemon Pod stays unless a NoExecute taint evicts it.
    let evicted = taints
        .iter()
        .any(|t| t.effect == NO_EXECUTE && !tolerations.iter().any(|tol| tolerates(tol, t)));
    Fit {
        should_run: false,
        should_continue_running: !evicted,
    }
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The DaemonSet's Pods by node, leaving out finished Pods already being
/// deleted (upstream's `getNodesToDaemonPods`).
pub fn pods_by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut map: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in pods {
        let finished = matches!(phase(p), "Succeeded" | "Failed");
        if finished && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        map.entry(node_of(p).to_string())
            .or_default()
            .push(p.clone());
    }
    for list in map.values_mut() {
        list.sort_by(|a, b| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            node_of(b)
                .is_empty()
                .cmp(&node_of(a).is_empty())
                .then_with(|| created(a).cmp(&created(b)))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
    }
    map
}

fn is_updated(pod: &Pod, hash: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH))
        .is_some_and(|h| h == hash)
}

/// What one sync does: start a Pod on these nodes, delete these Pods.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub create_on: Vec<String>,
    pub delete: Vec<String>,
}

/// Upstream's `manage` with `podsShouldBeOnNode`: one running Pod on each
/// node that should run it; failed, extra and misplaced Pods go.
pub fn manage(
    spec: &PodSpec,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
) -> Changes {
    let mut changes = Changes::default();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let fit = node_should_run(spec, node);
        let pods = by_node.get(&name);
        match (fit, pods) {
            (
                Fit {
                    should_run: true, ..
                },
                None,
            ) => changes.create_on.push(name),
            (
                Fit {
                    should_continue_running: true,
                    ..
                },
                Some(pods),
            ) => {
                let mut running = Vec::new();
                for p in pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    match phase(p) {
                        "Failed" | "Succeeded" => changes.delete.push(pod_name(p)),
                        _ => running.push(p),
                    }
                }
                // Only the oldest may stay.
                changes
                    .delete
                    .extend(running.iter().skip(1).map(|p| pod_name(p)));
            }
            (
                Fit {
                    should_continue_running: false,
                    ..
                },
                Some(pods),
            ) => changes.delete.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| pod_name(p)),
            ),
            _ => {}
        }
    }
    // Pods on nodes that do not exist (or on no node at all).
    let known: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for (node, pods) in by_node {
        if !known.contains(node.as_str()) {
            changes.delete.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| pod_name(p)),
            );
        }
    }
    changes
}

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// `maxUnavailable` of a RollingUpdate DaemonSet over `desired` nodes
/// (default 1; surge is not supported here, so at least 1); None for
/// OnDelete.
pub fn max_unavailable(ds: &DaemonSet, desired: i32) -> Result<Option<i32>, String> {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    match strategy.and_then(|s| s.type_.as_deref()) {
        None | Some("RollingUpdate") => {}
        Some("OnDelete") => return Ok(None),
        Some(other) => return Err(format!("unsupported spec.updateStrategy.type {other:?}")),
    }
    let value = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let n = scaled_value(&value, desired, true)
        .map_err(|e| format!("spec.updateStrategy.rollingUpdate.maxUnavailable: {e}"))?;
    Ok(Some(n.max(1)))
}

/// Upstream's `rollingUpdate` without surge: old Pods go while no more
/// than `maxUnavailable` nodes lack an available up-to-date Pod;
/// unavailable old Pods may always go.
pub fn rolling_update(
    ds: &DaemonSet,
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    max_unavailable: i32,
    now: Timestamp,
) -> Vec<String> {
    let min_ready = min_ready_seconds(ds);
    let mut unavailable = 0;
    let mut replace = Vec::new();
    let mut candidates = Vec::new();
    for pods in by_node.values() {
        let mut new = None;
        let mut old = None;
        let mut ambiguous = false;
        for p in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let slot = if is_updated(p, hash) {
                &mut new
            } else {
                &mut old
            };
            if slot.is_some() {
                ambiguous = true;
            }
            *slot = Some(p);
        }
        match (ambiguous, new, old) {
            (true, _, _) | (false, None, None) | (false, Some(_), Some(_)) => unavailable += 1,
            (false, Some(new), None) => {
                if !is_pod_available(new, min_ready, now) {
                    unavailable += 1;
                }
            }
            (false, None, Some(old)) => {
                if !is_pod_available(old, min_ready, now) {
                    replace.push(pod_name(old));
                } else if unavailable < max_unavailable {
                    candidates.push(pod_name(old));
                }
            }
        }
    }
    let room = (max_unavailable - unavailable).max(0) as usize;
    replace.extend(candidates.into_iter().take(room));
    replace
}

/// Upstream's `updateDaemonSetStatus` counts.
pub fn calculate_status(
    ds: &DaemonSet,
    spec: &PodSpec,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = min_ready_seconds(ds);
    let mut s = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut available, mut updated) = (0, 0);
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let pod = by_node.get(name).and_then(|pods| pods.first());
        if node_should_run(spec, node).should_run {
            s.desired_number_scheduled += 1;
            let Some(pod) = pod else {
                continue;
            };
            s.current_number_scheduled += 1;
            if is_pod_ready(pod) {
                s.number_ready += 1;
                if is_pod_available(pod, min_ready, now) {
                    available += 1;
                }
            }
            if is_updated(pod, hash) {
                updated += 1;
            }
        } else if pod.is_some() {
            s.number_misscheduled += 1;
        }
    }
    s.number_available = Some(available);
    s.updated_number_scheduled = Some(updated);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s
}

/// A daemon Pod for `node`, bound to it directly.
pub fn new_pod(ds: &DaemonSet, spec: &PodSpec, node: &str, hash: &str) -> Pod {
    let template_meta = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    let name = ds.metadata.name.clone().unwrap_or_default();
    let mut spec = spec.clone();
    spec.node_name = Some(node.into());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_reference(
                "apps/v1",
                "DaemonSet",
                &name,
                ds.metadata.uid.as_deref().unwrap_or(""),
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};

    fn ds(extra_spec: Value) -> DaemonSet {
        let mut spec = json!({"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "image": "x"}]}}});
        if let Value::Object(extra) = extra_spec {
            for (k, v) in extra {
                spec["template"]["spec"][k] = v;
            }
        }
        serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 3},
            "spec": spec}))
        .unwrap()
    }

    fn node(name: &str, labels: Value, taints: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints}}))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool, created: &str) -> Arc<Pod> {
        let conditions = if ready {
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}])
        } else {
            json!([])
        };
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created,
                "labels": {"app": "agent", REVISION_HASH: hash}},
                "spec": {"nodeName": node}, "status": {"phase": "Running", "conditions": conditions}}))
            .unwrap(),
        )
    }

    fn now() -> Timestamp {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn taints_selectors_and_default_tolerations() {
        let plain = daemon_pod_spec(&ds(json!({})));
        let worker = node("w", json!({}), Value::Null);
        assert!(node_should_run(&plain, &worker).should_run);
        let control_plane = node(
            "cp",
            json!({}),
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        );
        assert_eq!(
            node_should_run(&plain, &control_plane),
            Fit {
                should_run: false,
                should_continue_running: true
            }
        );
        let unreachable = node(
            "u",
            json!({}),
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        );
        assert!(
            node_should_run(&plain, &unreachable).should_run,
            "tolerated by default"
        );
        let evicting = node(
            "e",
            json!({}),
            json!([{"key": "gpu", "effect": "NoExecute"}]),
        );
        assert_eq!(
            node_should_run(&plain, &evicting),
            Fit {
                should_run: false,
                should_continue_running: false
            }
        );
        let tolerant = daemon_pod_spec(&ds(json!({"tolerations": [{"operator": "Exists"}]})));
        assert!(node_should_run(&tolerant, &control_plane).should_run);
        let ssd_only = daemon_pod_spec(&ds(json!({"nodeSelector": {"disk": "ssd"}})));
        assert!(!node_should_run(&ssd_only, &worker).should_run);
        assert!(
            node_should_run(&ssd_only, &node("s", json!({"disk": "ssd"}), Value::Null)).should_run
        );
        let pinned = daemon_pod_spec(&ds(json!({"nodeName": "other"})));
        assert!(!node_should_run(&pinned, &worker).should_run);
        let host = daemon_pod_spec(&ds(json!({"hostNetwork": true})));
        assert_eq!(host.tolerations.unwrap().len(), 7);
    }

    #[test]
    fn manage_creates_missing_and_removes_extra_and_misplaced() {
        let d = ds(json!({"nodeSelector": {"run": "yes"}}));
        let spec = daemon_pod_spec(&d);
        let nodes = vec![
            node("a", json!({"run": "yes"}), Value::Null),
            node("b", json!({"run": "yes"}), Value::Null),
            node("c", json!({"run": "no"}), Value::Null),
        ];
        let pods = vec![
            pod("b-old", "b", "h", true, "2025-01-01T00:00:00Z"),
            pod("b-new", "b", "h", true, "2025-01-01T01:00:00Z"),
            pod("c-1", "c", "h", true, "2025-01-01T00:00:00Z"),
            pod("gone-1", "gone", "h", true, "2025-01-01T00:00:00Z"),
        ];
        let changes = manage(&spec, &nodes, &pods_by_node(&pods));
        assert_eq!(changes.create_on, ["a"]);
        let mut deleted = changes.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["b-new", "c-1", "gone-1"]);
    }

    #[test]
    fn rolling_update_stays_within_max_unavailable() {
        let d = ds(json!({}));
        let pods = vec![
            pod("a", "a", "old", true, "2025-01-01T00:00:00Z"),
            pod("b", "b", "old", true, "2025-01-01T00:00:00Z"),
            pod("c", "c", "old", false, "2025-01-01T00:00:00Z"),
            pod("d", "d", "new", true, "2025-01-01T00:00:00Z"),
        ];
        let by_node = pods_by_node(&pods);
        let out = rolling_update(&d, &by_node, "new", 1, now());
        // The unavailable old Pod may always go, plus one available one.
        assert_eq!(out.len(), 2);
        assert!(out.contains(&"c".to_string()));
        let pods = vec![
            pod("a", "a", "old", true, "2025-01-01T00:00:00Z"),
            pod("d", "d", "new", false, "2025-01-01T00:00:00Z"),
        ];
        let out = rolling_update(&d, &pods_by_node(&pods), "new", 1, now());
        assert!(out.is_empty(), "a new pod is still unavailable");
        assert_eq!(max_unavailable(&d, 10), Ok(Some(1)));
    }

    #[test]
    fn status_counts() {
        let d = ds(json!({"nodeSelector": {"run": "yes"}}));
        let spec = daemon_pod_spec(&d);
        let nodes = vec![
            node("a", json!({"run": "yes"}), Value::Null),
            node("b", json!({"run": "yes"}), Value::Null),
            node("c", json!({"run": "yes"}), Value::Null),
            node("x", json!({}), Value::Null),
        ];
        let pods = vec![
            pod("a", "a", "h", true, "2025-01-01T00:00:00Z"),
            pod("b", "b", "old", false, "2025-01-01T00:00:00Z"),
            pod("x", "x", "h", true, "2025-01-01T00:00:00Z"),
        ];
        let s = calculate_status(&d, &spec, &nodes, &pods_by_node(&pods), "h", now());
        assert_eq!(s.desired_number_scheduled, 3);
        assert_eq!(s.current_number_scheduled, 2);
        assert_eq!(s.number_ready, 1);
        assert_eq!(s.number_available, Some(1));
        assert_eq!(s.number_unavailable, Some(2));
        assert_eq!(s.updated_number_scheduled, Some(1));
        assert_eq!(s.number_misscheduled, 1);
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn new_pods_are_bound_owned_and_hashed() {
        let d = ds(json!({}));
        let spec = daemon_pod_spec(&d);
        let p = new_pod(&d, &spec, "node-1", "abc");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-1")
        );
        assert_eq!(p.metadata.labels.as_ref().unwrap()[REVISION_HASH], "abc");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DaemonSet", "ds-uid")
        );
    }
}
