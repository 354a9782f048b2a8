//! The two rollout strategies: RollingUpdate (upstream's `rolling.go`)
//! and Recreate (`recreate.go`).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::Sync;
use crate::controller_utils::controller_of;
use crate::deployment::replica_sets::{
    by_creation, rs_available, rs_available_within_spec, rs_replicas, rs_status_replicas,
};
use crate::deployment::status::deployment_complete;

impl Sync<'_> {
    /// Upstream's `rolloutRolling`.
    pub(super) fn rollout_rolling(&mut self) {
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
    pub(super) fn reconcile_new(&mut self) -> bool {
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
    pub(super) fn reconcile_olds(&mut self) -> bool {
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
    pub(super) fn cleanup_unhealthy(&mut self, max_cleanup: i32) -> i32 {
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
    pub(super) fn scale_down_olds(&mut self, budget: i32) -> i32 {
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
    pub(super) fn rollout_recreate(&mut self, pods: &[Arc<Pod>]) {
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

    pub(super) fn old_pods_running(&self, pods: &[Arc<Pod>]) -> bool {
        if self
            .olds()
            .map(|i| rs_status_replicas(&self.rss[i]))
            .sum::<i32>()
            > 0
        {
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
}
