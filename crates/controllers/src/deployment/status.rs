//! A Deployment's status from its ReplicaSets, and the Available and
//! Progressing conditions with upstream's reasons, so `kubectl get deploy`
//! and `kubectl rollout status` read as on any cluster.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::replica_sets::{
    Strategy, deployment_replicas, rs_available, rs_ready, rs_replicas, rs_status_replicas,
};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// `spec.progressDeadlineSeconds` (600 when absent, as defaulted); None
/// when there is no deadline (the MaxInt32 sentinel).
pub fn progress_deadline(d: &Deployment) -> Option<i64> {
    match d.spec.as_ref().and_then(|s| s.progress_deadline_seconds) {
        None => Some(600),
        Some(i32::MAX) => None,
        Some(s) => Some(i64::from(s.max(0))),
    }
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `SetDeploymentCondition`: no change for the same status and
/// reason; the transition time survives a change of reason alone.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(current) = condition(status, &c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// Upstream's `calculateStatus`: counts summed over the ReplicaSets,
/// conditions carried over from `current`, and Available set from
/// `availableReplicas >= replicas - maxUnavailable`.
pub fn calculate_status(
    d: &Deployment,
    current: &DeploymentStatus,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    strategy: Strategy,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let replicas = deployment_replicas(d);
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs_status_replicas(rs)).sum()),
        updated_replicas: Some(new_rs.map_or(0, rs_status_replicas)),
        ready_replicas: Some(all.iter().map(|rs| rs_ready(rs)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: None,
    };
    let condition = if available >= replicas - strategy.max_unavailable(replicas) {
        new_condition(
            AVAILABLE,
            "True",
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, condition);
    status
}

/// Every replica updated and available, and the spec observed.
pub fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let replicas = deployment_replicas(d);
    status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Something moved since `old`: more updated, fewer old, more ready or
/// more available replicas.
pub fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

pub fn deployment_timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(status, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0 + jiff::SignedDuration::from_secs(deadline) < now),
    }
}

/// Upstream's `syncRolloutStatus` on top of `calculate_status`: the
/// Progressing condition and ReplicaFailure from the new ReplicaSet.
/// `original` is the status as stored (what progress is measured
/// against), `current` the one this sync has changed so far.
#[allow(clippy::too_many_arguments)]
pub fn rollout_status(
    d: &Deployment,
    original: &DeploymentStatus,
    current: &DeploymentStatus,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    strategy: Strategy,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(d, current, all, new_rs, strategy, now);
    let deadline = progress_deadline(d);
    if deadline.is_none() {
        remove_condition(&mut status, PROGRESSING);
    }
    let progressing = condition(current, PROGRESSING).cloned();
    let complete_already = status.replicas == status.updated_replicas
        && progressing
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if deadline.is_some() && !complete_already {
        let subject = match new_rs.and_then(|rs| rs.metadata.name.as_deref()) {
            Some(name) => format!("ReplicaSet {name:?}"),
            None => format!("Deployment {:?}", d.metadata.name.as_deref().unwrap_or("")),
        };
        if deployment_complete(d, &status) {
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_AVAILABLE,
                    format!("{subject} has successfully progressed."),
                    now,
                ),
            );
        } else if deployment_progressing(original, &status) {
            let mut c = new_condition(
                PROGRESSING,
                "True",
                RS_UPDATED,
                format!("{subject} is progressing."),
                now,
            );
            if let Some(p) = progressing.as_ref().filter(|p| p.status == "True") {
                c.last_transition_time = p.last_transition_time.clone();
            }
            remove_condition(&mut status, PROGRESSING);
            set_condition(&mut status, c);
        } else if deployment_timed_out(d, &status, now) {
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "False",
                    TIMED_OUT,
                    format!("{subject} has timed out progressing."),
                    now,
                ),
            );
        }
    }
    let failure = new_rs.and_then(|rs| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .cloned()
    });
    match failure {
        Some(f) => set_condition(
            &mut status,
            DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: f.status,
                reason: f.reason,
                message: f.message,
                last_update_time: f.last_transition_time.clone(),
                last_transition_time: f.last_transition_time,
            },
        ),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    status
}

/// When to look again so a stuck rollout times out (upstream's
/// `requeueStuckDeployment`).
pub fn stuck_requeue(
    d: &Deployment,
    status: &DeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let c = condition(status, PROGRESSING)?;
    if deployment_complete(d, status) || c.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let from = c.last_update_time.as_ref()?.0;
    let at = from + jiff::SignedDuration::from_secs(deadline);
    let after = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(after.max(Duration::from_secs(1)) + Duration::from_secs(1))
}

/// The status as a merge patch body, every count explicit so that a field
/// going to zero or away is written too.
pub fn status_json(s: &DeploymentStatus) -> Value {
    json!({
        "observedGeneration": s.observed_generation,
        "replicas": s.replicas.unwrap_or(0),
        "updatedReplicas": s.updated_replicas.unwrap_or(0),
        "readyReplicas": s.ready_replicas.unwrap_or(0),
        "availableReplicas": s.available_replicas.unwrap_or(0),
        "unavailableReplicas": s.unavailable_replicas.unwrap_or(0),
        "collisionCount": s.collision_count,
        "conditions": s.conditions,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn now() -> Timestamp {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    fn deploy(replicas: i32) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": replicas}}))
        .unwrap()
    }

    fn rs(name: &str, spec: i32, replicas: i32, ready: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": spec},
            "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": available}}))
        .unwrap()
    }

    const ROLLING: Strategy = Strategy::RollingUpdate {
        max_surge: 1,
        max_unavailable: 0,
    };

    #[test]
    fn counts_and_availability() {
        let d = deploy(3);
        let old = rs("old", 2, 2, 2, 2);
        let new = rs("new", 2, 2, 1, 1);
        let s = calculate_status(
            &d,
            &DeploymentStatus::default(),
            &[&old, &new],
            Some(&new),
            ROLLING,
            now(),
        );
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(3));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(2));
        let a = condition(&s, AVAILABLE).unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("True", Some(MINIMUM_REPLICAS_AVAILABLE))
        );
        let short = rs("new", 3, 3, 1, 1);
        let s = calculate_status(&d, &s, &[&short], Some(&short), ROLLING, now());
        let a = condition(&s, AVAILABLE).unwrap();
        assert_eq!(a.reason.as_deref(), Some(MINIMUM_REPLICAS_UNAVAILABLE));
    }

    #[test]
    fn progressing_then_complete() {
        let d = deploy(2);
        let original = DeploymentStatus::default();
        let new = rs("web-1", 2, 2, 1, 1);
        let s = rollout_status(
            &d,
            &original,
            &original,
            &[&new],
            Some(&new),
            ROLLING,
            now(),
        );
        let p = condition(&s, PROGRESSING).unwrap();
        assert_eq!(p.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-1\" is progressing.")
        );

        let done = rs("web-1", 2, 2, 2, 2);
        let s2 = rollout_status(&d, &s, &s, &[&done], Some(&done), ROLLING, now());
        let p = condition(&s2, PROGRESSING).unwrap();
        assert_eq!(p.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert!(deployment_complete(&d, &s2));
        assert_eq!(stuck_requeue(&d, &s2, now()), None);
    }

    #[test]
    fn a_stuck_rollout_times_out() {
        let mut d = deploy(2);
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
        let new = rs("web-1", 2, 2, 0, 0);
        let mut s = DeploymentStatus::default();
        set_condition(
            &mut s,
            new_condition(
                PROGRESSING,
                "True",
                RS_UPDATED,
                "x".into(),
                "2025-01-01T11:58:00Z".parse().unwrap(),
            ),
        );
        s.replicas = Some(2);
        s.updated_replicas = Some(2);
        assert!(deployment_timed_out(&d, &s, now()));
        let out = rollout_status(&d, &s, &s, &[&new], Some(&new), ROLLING, now());
        let p = condition(&out, PROGRESSING).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some(TIMED_OUT))
        );
        let early: Timestamp = "2025-01-01T11:58:30Z".parse().unwrap();
        assert_eq!(stuck_requeue(&d, &s, early), Some(Duration::from_secs(31)));
    }

    #[test]
    fn same_reason_keeps_the_condition() {
        let mut s = DeploymentStatus::default();
        let t0: Timestamp = "2025-01-01T10:00:00Z".parse().unwrap();
        set_condition(
            &mut s,
            new_condition(AVAILABLE, "True", "A", "m".into(), t0),
        );
        set_condition(
            &mut s,
            new_condition(AVAILABLE, "True", "A", "m".into(), now()),
        );
        assert_eq!(
            condition(&s, AVAILABLE).unwrap().last_update_time,
            Some(Time(t0))
        );
        set_condition(
            &mut s,
            new_condition(AVAILABLE, "True", "B", "m".into(), now()),
        );
        let c = condition(&s, AVAILABLE).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        assert_eq!(c.last_update_time, Some(Time(now())));
    }
}
