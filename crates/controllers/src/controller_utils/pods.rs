//! Pod state as controllers read it: active, ready, available, and the
//! order in which a controller deletes Pods when it has too many.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodCondition};

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Not finished and not being deleted (upstream's `IsPodActive`).
pub fn is_pod_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` (upstream's `IsPodAvailable`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    available_in(pod, min_ready_seconds, now) == Some(Duration::ZERO)
}

/// How long until a ready pod counts as available (zero: it does now);
/// None for a pod that is not ready.
pub fn available_in(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    if !is_pod_ready(pod) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(Duration::ZERO);
    }
    // Without a transition time the pod cannot prove how long it has been
    // ready; upstream then treats it as not yet available.
    let since = ready_since(pod)?;
    let at = since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    if at < now {
        Some(Duration::ZERO)
    } else {
        Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
    }
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// floor(log2(age in ns)), or -1 for no age: ages in the same power-of-two
/// bucket count as equal (upstream's LogarithmicScaleDown).
fn age_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    match t {
        Some(t) if now > t => {
            let nanos = now.duration_since(t).as_nanos().max(1) as f64;
            nanos.log2().floor() as i64
        }
        _ => -1,
    }
}

/// Orders pods so that the ones to delete first come first, as upstream's
/// `ActivePodsWithRanks`: unscheduled before scheduled, Pending before
/// Unknown before Running, not ready before ready, lower deletion cost
/// first, more related pods on the same node first, recently ready first,
/// more restarts first, newest first; uid breaks ties.
pub fn rank_for_deletion(pods: &mut [Arc<Pod>], related: &[Arc<Pod>], now: Timestamp) {
    let mut per_node: HashMap<&str, i32> = HashMap::new();
    for p in related.iter().filter(|p| is_pod_active(p)) {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let node_of = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let rank_of = |p: &Pod| {
        let node = node_of(p);
        if node.is_empty() {
            0
        } else {
            per_node.get(node.as_str()).copied().unwrap_or(0)
        }
    };
    pods.sort_by(|a, b| {
        use std::cmp::Ordering;
        let (na, nb) = (node_of(a), node_of(b));
        if na.is_empty() != nb.is_empty() {
            return if na.is_empty() {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let by = phase_ordinal(a).cmp(&phase_ordinal(b));
        if by != Ordering::Equal {
            return by;
        }
        let (ra, rb) = (is_pod_ready(a), is_pod_ready(b));
        if ra != rb {
            return if ra {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let by = deletion_cost(a).cmp(&deletion_cost(b));
        if by != Ordering::Equal {
            return by;
        }
        let by = rank_of(b).cmp(&rank_of(a));
        if by != Ordering::Equal {
            return by;
        }
        if ra && rb {
            let by = age_bucket(ready_since(a), now).cmp(&age_bucket(ready_since(b), now));
            if by != Ordering::Equal {
                return by;
            }
        }
        let by = max_restarts(b).cmp(&max_restarts(a));
        if by != Ordering::Equal {
            return by;
        }
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let by = age_bucket(created(a), now).cmp(&age_bucket(created(b), now));
        if by != Ordering::Equal {
            return by;
        }
        a.metadata.uid.cmp(&b.metadata.uid)
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn pod(v: Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn now() -> Timestamp {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod(
            json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2025-01-01T11:59:55Z"}]}}),
        );
        assert!(is_pod_available(&p, 0, now()));
        assert!(is_pod_available(&p, 4, now()));
        assert!(!is_pod_available(&p, 10, now()));
        assert_eq!(available_in(&p, 10, now()), Some(Duration::from_secs(5)));
        let not_ready = pod(json!({"status": {"phase": "Running"}}));
        assert_eq!(available_in(&not_ready, 0, now()), None);
    }

    #[test]
    fn deletion_ranking() {
        let ready = json!([{"type": "Ready", "status": "True",
            "lastTransitionTime": "2025-01-01T10:00:00Z"}]);
        let mut pods = vec![
            pod(
                json!({"metadata": {"name": "running-ready", "uid": "1", "creationTimestamp": "2025-01-01T09:00:00Z"},
                "spec": {"nodeName": "n1"}, "status": {"phase": "Running", "conditions": ready}}),
            ),
            pod(
                json!({"metadata": {"name": "unscheduled", "uid": "2"}, "status": {"phase": "Pending"}}),
            ),
            pod(
                json!({"metadata": {"name": "pending", "uid": "3"}, "spec": {"nodeName": "n1"},
                "status": {"phase": "Pending"}}),
            ),
            pod(
                json!({"metadata": {"name": "running-unready", "uid": "4"}, "spec": {"nodeName": "n2"},
                "status": {"phase": "Running"}}),
            ),
            pod(
                json!({"metadata": {"name": "doubled-up", "uid": "5", "creationTimestamp": "2025-01-01T09:00:00Z"},
                "spec": {"nodeName": "n3"}, "status": {"phase": "Running", "conditions": ready}}),
            ),
        ];
        let related = vec![
            pods[4].clone(),
            pod(
                json!({"metadata": {"name": "sibling", "uid": "6"}, "spec": {"nodeName": "n3"},
                "status": {"phase": "Running"}}),
            ),
        ];
        rank_for_deletion(&mut pods, &related, now());
        let names: Vec<&str> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running-unready",
                "doubled-up",
                "running-ready"
            ]
        );
    }

    #[test]
    fn newer_pods_go_first() {
        let mk = |name: &str, created: &str| {
            pod(
                json!({"metadata": {"name": name, "uid": name, "creationTimestamp": created},
                "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}),
            )
        };
        let mut pods = vec![
            mk("old", "2024-01-01T00:00:00Z"),
            mk("new", "2025-01-01T11:59:00Z"),
        ];
        rank_for_deletion(&mut pods, &[], now());
        assert_eq!(pods[0].metadata.name.as_deref(), Some("new"));
    }

    proptest! {
        #[test]
        fn ranking_is_a_permutation_and_unready_first(
            spec in proptest::collection::vec((any::<bool>(), any::<bool>(), 0u8..3), 0..12)
        ) {
            let mut pods: Vec<Arc<Pod>> = spec.iter().enumerate().map(|(i, (ready, bound, node))| {
                let conditions = if *ready { json!([{"type": "Ready", "status": "True"}]) } else { json!([]) };
                let node_name = if *bound { json!(format!("n{node}")) } else { Value::Null };
                pod(json!({"metadata": {"name": format!("p{i}"), "uid": format!("{i}")},
                    "spec": {"nodeName": node_name},
                    "status": {"phase": "Running", "conditions": conditions}}))
            }).collect();
            let before = pods.len();
            let all = pods.clone();
            rank_for_deletion(&mut pods, &all, now());
            prop_assert_eq!(pods.len(), before);
            // Among scheduled pods, no ready pod precedes an unready one.
            let scheduled: Vec<&Arc<Pod>> = pods.iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .collect();
            let first_ready = scheduled.iter().position(|p| is_pod_ready(p));
            if let Some(i) = first_ready {
                prop_assert!(scheduled[i..].iter().all(|p| is_pod_ready(p)));
            }
        }

    }
}
