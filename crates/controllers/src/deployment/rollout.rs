//! The Deployment rollout model, after upstream's `deployment/sync.go`,
//! `rolling.go` and `recreate.go`: given a Deployment, the ReplicaSets it
//! owns and their Pods, one sync's changes to the ReplicaSets (create,
//! scale, annotate, delete), the Deployment's revision and its status.
//! Pure: the controller applies the [`Plan`] in order and stops at the
//! first failure; the watch brings it back for the next step.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use super::replica_sets::{
    REVISION, Strategy, by_creation, by_revision, deployment_replicas, desired_replicas_annotation,
    equal_ignore_hash, new_replica_set, replicas_annotations_need_update, revision_of, rs_replicas,
    rs_status_replicas, set_new_replica_set_annotations, set_replicas_annotations,
};
use super::status::{
    FOUND_NEW_RS, NEW_RS_CREATED, PAUSED, PROGRESSING, RESUMED, TIMED_OUT, calculate_status,
    condition, new_condition, progress_deadline, rollout_status, set_condition, stuck_requeue,
};
use crate::events::EventType;

/// A change to one ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(ReplicaSet),
    /// The ReplicaSet as it should be: the controller writes its replicas,
    /// minReadySeconds and annotations, guarded by its resourceVersion.
    Update(ReplicaSet),
    Delete {
        name: String,
        uid: Option<String>,
    },
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
    fn new(
        d: &'a Deployment,
        strategy: Strategy,
        mut rss: Vec<ReplicaSet>,
        now: Timestamp,
    ) -> Self {
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

    fn update(
        &mut self,
        i: usize,
        rs: ReplicaSet,
        event: Option<(EventType, &'static str, String)>,
    ) {
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
                let up = (max_total - current)
                    .min(self.replicas - new_replicas)
                    .max(0);
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
        let changed =
            super::status::status_json(&self.status) != super::status::status_json(&stored);
        Plan {
            steps: self.steps,
            revision: self.revision,
            status: changed.then_some(self.status),
            requeue_after: self.requeue_after,
        }
    }
}

mod rolling;
mod scaling;
#[cfg(test)]
mod tests;
