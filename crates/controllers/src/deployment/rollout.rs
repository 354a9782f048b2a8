//! The Deployment rollout model, after upstream's `deployment/sync.go`,
//! `rolling.go` and `recreate.go`: given a Deployment, the ReplicaSets it
//! owns and their Pods, one sync's changes to the ReplicaSets (create,
//! scale, annotate, delete), the Deployment's revision and its status.
//! Pure: the controller applies the [`Plan`] in order and stops at the
//! first failure; the watch brings it back for the next step.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use super::replica_sets::{
    REVISION, Strategy, by_creation, by_revision, deployment_replicas, desired_replicas_annotation,
    equal_ignore_hash, max_replicas_annotation, new_replica_set, replicas_annotations_need_update,
    revision_of, rs_available, rs_available_within_spec, rs_replicas, rs_status_replicas,
    set_new_replica_set_annotations, set_replicas_annotations,
};
use super::status::{
    FOUND_NEW_RS, NEW_RS_CREATED, PAUSED, PROGRESSING, RESUMED, TIMED_OUT, calculate_status,
    condition, deployment_complete, new_condition, progress_deadline, rollout_status,
    set_condition, stuck_requeue,
};
use crate::controller_utils::controller_of;
use crate::events::EventType;

/// A change to one ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(ReplicaSet),
    /// The ReplicaSet as it should be: the controller writes its replicas,
    /// minReadySeconds and annotations, guarded by its resourceVersion.
    Update(ReplicaSet),
    Delete { name: String, uid: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub change: Change,
    /// Recorded on the Deployment once the change is made.
    pub event: Option<(EventType, &'static str, String)>,
}

/// One sync's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// A new `deployment.kubernetes.io/revision` for the Deployment.
    pub revision: Option<String>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<DeploymentStatus>,
    /// Look again after this long (progress deadline).
    pub requeue_after: Option<Duration>,
}

/// Works out one sync of `d`. `owned` are the ReplicaSets it controls,
/// `pods` the Pods those ReplicaSets control (Recreate waits for them).
pub fn plan(
    d: &Deployment,
    strategy: Strategy,
    owned: Vec<ReplicaSet>,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> Plan {
    let mut s = Sync::new(d, strategy, owned, now);
    let spec = d.spec.clone().unwrap_or_default();
    if d.metadata.deletion_timestamp.is_some() {
        s.find_new(false);
        s.finish_plain();
    } else {
        s.check_paused_conditions(spec.paused == Some(true));
        if spec.paused == Some(true) || s.is_scaling_event() {
            s.find_new(false);
            s.scale();
            if spec.paused == Some(true) {
                s.cleanup();
            }
            s.finish_plain();
        } else {
            match strategy {
                Strategy::Recreate => s.rollout_recreate(pods),
                Strategy::RollingUpdate { .. } => s.rollout_rolling(),
            }
        }
    }
    s.into_plan()
}

/// The working state of one sync: in-memory ReplicaSets with the changes
/// planned so far applied, as upstream's sync works on the objects its
/// updates return.
struct Sync<'a> {
    d: &'a Deployment,
    strategy: Strategy,
    replicas: i32,
    now: Timestamp,
    /// Oldest first.
    rss: Vec<ReplicaSet>,
    new: Option<usize>,
    status: DeploymentStatus,
    steps: Vec<Step>,
    revision: Option<String>,
    requeue_after: Option<Duration>,
}

impl<'a> Sync<'a> {
    fn new(d: &'a Deployment, strategy: Strategy, mut rss: Vec<ReplicaSet>, now: Timestamp) -> Self {
        rss.sort_by(by_creation);
        Sync {
            d,
            strategy,
            replicas: deployment_replicas(d),
            now,
            rss,
            new: None,
            status: d.status.clone().unwrap_or_default(),
            steps: Vec::new(),
            revision: None,
            requeue_after: None,
        }
    }

    fn name(&self, i: usize) -> String {
        self.rss[i].metadata.name.clone().unwrap_or_default()
    }

    fn olds(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rss.len()).filter(move |i| Some(*i) != self.new)
    }

    fn template(&self) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    fn set_revision(&mut self, revision: &str) {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if current.map(String::as_str) != Some(revision) {
            self.revision = Some(revision.to_string());
        }
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision`: finds the new
    /// ReplicaSet (the oldest with the current template), brings its
    /// revision and annotations up to date, and with `create` makes it
    /// if there is none.
    fn find_new(&mut self, create: bool) {
        let template = self.template();
        self.new = self.rss.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let max_old = self
            .olds()
            .filter_map(|i| revision_of(&self.rss[i]))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(i) = self.new {
            let mut rs = self.rss[i].clone();
            let annotated =
                set_new_replica_set_annotations(self.d, &mut rs, new_revision, true, self.strategy);
            let spec = rs.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotated || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                self.update(i, rs, None);
            }
            if let Some(revision) = self.rss[i]
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
            {
                self.set_revision(&revision);
            }
            if progress_deadline(self.d).is_some() && condition(&self.status, PROGRESSING).is_none()
            {
                let message = format!("Found new replica set {:?}", self.name(i));
                set_condition(
                    &mut self.status,
                    new_condition(PROGRESSING, "True", FOUND_NEW_RS, message, self.now),
                );
            }
            return;
        }
        if !create {
            return;
        }
        let mut rs = new_replica_set(self.d);
        self.rss.push(rs.clone());
        let i = self.rss.len() - 1;
        self.new = Some(i);
        let replicas = self.new_rs_new_replicas();
        let spec = rs.spec.get_or_insert_with(Default::default);
        spec.replicas = Some(replicas);
        set_new_replica_set_annotations(self.d, &mut rs, new_revision, false, self.strategy);
        let name = rs.metadata.name.clone().unwrap_or_default();
        let event = (replicas > 0).then(|| {
            (
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            )
        });
        self.rss[i] = rs.clone();
        self.steps.push(Step {
            change: Change::Create(rs),
            event,
        });
        self.set_revision(&new_revision.to_string());
        if progress_deadline(self.d).is_some() {
            set_condition(
                &mut self.status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_CREATED,
                    format!("Created new replica set {name:?}"),
                    self.now,
                ),
            );
        }
    }

    fn update(&mut self, i: usize, rs: ReplicaSet, event: Option<(EventType, &'static str, String)>) {
        self.rss[i] = rs.clone();
        self.steps.push(Step {
            change: Change::Update(rs),
            event,
        });
    }

    /// Upstream's `scaleReplicaSet`: writes the size and the replica
    /// annotations when either differs. True when the size changed.
    fn scale_to(&mut self, i: usize, size: i32) -> bool {
        let desired = self.replicas;
        let max = self.replicas + self.strategy.max_surge();
        let old = rs_replicas(&self.rss[i]);
        let resize = old != size;
        if !resize && !replicas_annotations_need_update(&self.rss[i], desired, max) {
            return false;
        }
        let mut rs = self.rss[i].clone();
        rs.spec.get_or_insert_with(Default::default).replicas = Some(size);
        set_replicas_annotations(&mut rs, desired, max);
        let event = resize.then(|| {
            let direction = if old < size { "up" } else { "down" };
            (
                EventType::Normal,
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} from {old} to {size}",
                    self.name(i)
                ),
            )
        });
        self.update(i, rs, event);
        resize
    }

    /// Upstream's `scaleReplicaSetAndRecordEvent`: nothing when the size
    /// is already right.
    fn scale_if_needed(&mut self, i: usize, size: i32) -> bool {
        if rs_replicas(&self.rss[i]) == size {
            return false;
        }
        self.scale_to(i, size)
    }

    /// Upstream's `NewRSNewReplicas`.
    fn new_rs_new_replicas(&self) -> i32 {
        let Some(new) = self.new else {
            return 0;
        };
        match self.strategy {
            Strategy::Recreate => self.replicas,
            Strategy::RollingUpdate { max_surge, .. } => {
                let current: i32 = self.rss.iter().map(rs_replicas).sum();
                let max_total = self.replicas + max_surge;
                let new_replicas = rs_replicas(&self.rss[new]);
                if current >= max_total {
                    return new_replicas;
                }
                let up = (max_total - current).min(self.replicas - new_replicas).max(0);
                new_replicas + up
            }
        }
    }

    /// Upstream's `isScalingEvent`: an active ReplicaSet was sized for a
    /// different `spec.replicas`.
    fn is_scaling_event(&self) -> bool {
        self.rss
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .filter_map(desired_replicas_annotation)
            .any(|desired| desired != self.replicas)
    }

    fn check_paused_conditions(&mut self, paused: bool) {
        if progress_deadline(self.d).is_none() {
            return;
        }
        let current = condition(&self.status, PROGRESSING);
        if current.is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT)) {
            return;
        }
        let paused_now = current.is_some_and(|c| c.reason.as_deref() == Some(PAUSED));
        if paused && !paused_now {
            set_condition(
                &mut self.status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    PAUSED,
                    "Deployment is paused".into(),
                    self.now,
                ),
            );
        } else if !paused && paused_now {
            set_condition(
                &mut self.status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    RESUMED,
                    "Deployment is resumed".into(),
                    self.now,
                ),
            );
        }
    }

    /// Upstream's `scale`: a scaling event (or a paused Deployment)
    /// resizes the active ReplicaSets proportionally.
    fn scale(&mut self) {
        if self.rss.is_empty() {
            return;
        }
        let active: Vec<usize> = self
            .new
            .into_iter()
            .chain(self.olds())
            .filter(|i| rs_replicas(&self.rss[*i]) > 0)
            .collect();
        // One active (or only the latest) ReplicaSet takes it all.
        let only = match active.as_slice() {
            [] => self.new.or_else(|| self.olds().last()),
            [one] => Some(*one),
            _ => None,
        };
        if let Some(i) = only {
            if rs_replicas(&self.rss[i]) != self.replicas {
                self.scale_if_needed(i, self.replicas);
            }
            return;
        }
        if self.is_saturated() {
            let olds: Vec<usize> = self
                .olds()
                .filter(|i| rs_replicas(&self.rss[*i]) > 0)
                .collect();
            for i in olds {
                self.scale_if_needed(i, 0);
            }
            return;
        }
        let Strategy::RollingUpdate { max_surge, .. } = self.strategy else {
            return;
        };
        let total: i32 = active.iter().map(|i| rs_replicas(&self.rss[*i])).sum();
        let allowed = if self.replicas > 0 {
            self.replicas + max_surge
        } else {
            0
        };
        let to_add = allowed - total;
        let mut order = active.clone();
        // Adding: larger first, newer before older; removing: larger
        // first, older before newer.
        order.sort_by(|a, b| {
            let (ra, rb) = (&self.rss[*a], &self.rss[*b]);
            rs_replicas(rb).cmp(&rs_replicas(ra)).then_with(|| {
                if to_add > 0 {
                    by_creation(rb, ra)
                } else {
                    by_creation(ra, rb)
                }
            })
        });
        let mut sizes: Vec<i32> = order.iter().map(|i| rs_replicas(&self.rss[*i])).collect();
        if to_add != 0 {
            let mut added = 0;
            for (k, i) in order.iter().enumerate() {
                let proportion = self.proportion(*i, to_add, added);
                sizes[k] += proportion;
                added += proportion;
            }
            sizes[0] = (sizes[0] + to_add - added).max(0);
        }
        for (k, i) in order.into_iter().enumerate() {
            self.scale_to(i, sizes[k]);
        }
    }

    fn is_saturated(&self) -> bool {
        self.new.is_some_and(|i| {
            let rs = &self.rss[i];
            rs_replicas(rs) == self.replicas
                && desired_replicas_annotation(rs) == Some(self.replicas)
                && rs_available(rs) == self.replicas
        })
    }

    /// Upstream's `GetProportion` with `getReplicaSetFraction`.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let rs = &self.rss[i];
        let size = rs_replicas(rs);
        if size == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.replicas == 0 {
            -size
        } else {
            let target = self.replicas + self.strategy.max_surge();
            let annotated = max_replicas_annotation(rs)
                .unwrap_or_else(|| self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
            if annotated == 0 {
                0
            } else {
                let scaled = f64::from(size) * f64::from(target) / f64::from(annotated);
                scaled.round() as i32 - size
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream's `rolloutRolling`.
    fn rollout_rolling(&mut self) {
        self.find_new(true);
        if self.reconcile_new() || self.reconcile_olds() {
            return self.finish_rollout();
        }
        if deployment_complete(self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup();
        }
        self.finish_rollout();
    }

    /// Upstream's `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self) -> bool {
        let Some(new) = self.new else {
            return false;
        };
        let size = rs_replicas(&self.rss[new]);
        if size == self.replicas {
            return false;
        }
        if size > self.replicas {
            return self.scale_if_needed(new, self.replicas);
        }
        let target = self.new_rs_new_replicas();
        self.scale_if_needed(new, target)
    }

    /// Upstream's `reconcileOldReplicaSets`: scales old ReplicaSets down
    /// as far as `replicas - maxUnavailable` available Pods allow,
    /// unhealthy ones first.
    fn reconcile_olds(&mut self) -> bool {
        let old_total: i32 = self.olds().map(|i| rs_replicas(&self.rss[i])).sum();
        if old_total == 0 {
            return false;
        }
        let all_total: i32 = self.rss.iter().map(rs_replicas).sum();
        let min_available = self.replicas - self.strategy.max_unavailable(self.replicas);
        let new_unavailable = self.new.map_or(0, |i| {
            (rs_replicas(&self.rss[i]) - rs_available(&self.rss[i])).max(0)
        });
        let max_scaled_down = all_total - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(max_scaled_down);
        let scaled = self.scale_down_olds(max_scaled_down - cleaned);
        cleaned + scaled > 0
    }

    /// Old ReplicaSets whose Pods are not available shrink first: they
    /// cost no availability.
    fn cleanup_unhealthy(&mut self, max_cleanup: i32) -> i32 {
        let mut olds: Vec<usize> = self.olds().collect();
        olds.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        let mut total = 0;
        for i in olds {
            if total >= max_cleanup {
                break;
            }
            let size = rs_replicas(&self.rss[i]);
            let healthy = rs_available_within_spec(&self.rss[i]);
            if size == 0 || size == healthy {
                continue;
            }
            let down = (max_cleanup - total).min(size - healthy);
            self.scale_if_needed(i, size - down);
            total += down;
        }
        total
    }

    /// Upstream's `scaleDownOldReplicaSetsForRollingUpdate`, oldest first.
    /// Availability counts each ReplicaSet at most at its spec, and no
    /// more than `budget` goes in one sync, so a lagging status never
    /// takes more than maxUnavailable away.
    fn scale_down_olds(&mut self, budget: i32) -> i32 {
        let min_available = self.replicas - self.strategy.max_unavailable(self.replicas);
        let available: i32 = self.rss.iter().map(rs_available_within_spec).sum();
        if available <= min_available || budget <= 0 {
            return 0;
        }
        let to_remove = (available - min_available).min(budget);
        let mut olds: Vec<usize> = self.olds().collect();
        olds.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        let mut total = 0;
        for i in olds {
            if total >= to_remove {
                break;
            }
            let size = rs_replicas(&self.rss[i]);
            if size == 0 {
                continue;
            }
            let down = size.min(to_remove - total);
            self.scale_if_needed(i, size - down);
            total += down;
        }
        total
    }

    /// Upstream's `rolloutRecreate`: every old Pod gone before the new
    /// ReplicaSet scales up.
    fn rollout_recreate(&mut self, pods: &[Arc<Pod>]) {
        self.find_new(false);
        let active_olds: Vec<usize> = self
            .olds()
            .filter(|i| rs_replicas(&self.rss[*i]) > 0)
            .collect();
        let mut scaled_down = false;
        for i in active_olds {
            scaled_down |= self.scale_if_needed(i, 0);
        }
        if scaled_down || self.old_pods_running(pods) {
            return self.finish_rollout();
        }
        if self.new.is_none() {
            self.find_new(true);
        }
        if let Some(new) = self.new {
            self.scale_if_needed(new, self.replicas);
        }
        if deployment_complete(self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup();
        }
        self.finish_rollout();
    }

    fn old_pods_running(&self, pods: &[Arc<Pod>]) -> bool {
        if self.olds().map(|i| rs_status_replicas(&self.rss[i])).sum::<i32>() > 0 {
            return true;
        }
        let olds: BTreeSet<&str> = self
            .olds()
            .filter_map(|i| self.rss[i].metadata.uid.as_deref())
            .collect();
        pods.iter().any(|p| {
            controller_of(&p.metadata).is_some_and(|o| olds.contains(o.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        })
    }

    /// Upstream's `cleanupDeployment`: old ReplicaSets beyond
    /// `revisionHistoryLimit` (10) go, oldest revision first, once empty.
    fn cleanup(&mut self) {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut alive: Vec<usize> = self
            .olds()
            .filter(|i| self.rss[*i].metadata.deletion_timestamp.is_none())
            .collect();
        if alive.len() <= limit {
            return;
        }
        let excess = alive.len() - limit;
        alive.sort_by(|a, b| by_revision(&self.rss[*a], &self.rss[*b]));
        for i in alive.into_iter().take(excess) {
            let rs = &self.rss[i];
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
            if rs_status_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation > observed
            {
                continue;
            }
            self.steps.push(Step {
                change: Change::Delete {
                    name: rs.metadata.name.clone().unwrap_or_default(),
                    uid: rs.metadata.uid.clone(),
                },
                event: None,
            });
        }
    }

    fn all(&self) -> Vec<&ReplicaSet> {
        self.rss.iter().collect()
    }

    /// Status without the Progressing logic (`syncDeploymentStatus`).
    fn finish_plain(&mut self) {
        let new = self.new.map(|i| &self.rss[i]);
        self.status = calculate_status(
            self.d,
            &self.status,
            &self.all(),
            new,
            self.strategy,
            self.now,
        );
    }

    /// Status with Progressing (`syncRolloutStatus`).
    fn finish_rollout(&mut self) {
        let original = self.d.status.clone().unwrap_or_default();
        let new = self.new.map(|i| &self.rss[i]);
        let status = rollout_status(
            self.d,
            &original,
            &self.status,
            &self.all(),
            new,
            self.strategy,
            self.now,
        );
        self.requeue_after = stuck_requeue(self.d, &status, self.now);
        self.status = status;
    }

    fn into_plan(self) -> Plan {
        let stored = self.d.status.clone().unwrap_or_default();
        let changed = super::status::status_json(&self.status) != super::status::status_json(&stored);
        Plan {
            steps: self.steps,
            revision: self.revision,
            status: changed.then_some(self.status),
            requeue_after: self.requeue_after,
        }
    }
}

#[cfg(test)]
mod tests;
