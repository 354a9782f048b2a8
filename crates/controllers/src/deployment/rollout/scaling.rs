//! Scaling a Deployment that is not rolling out (a `spec.replicas`
//! change, or a paused Deployment): upstream's proportional scaling, which
//! spreads added or removed replicas over the active ReplicaSets by size.

use super::Sync;
use crate::deployment::replica_sets::{
    Strategy, by_creation, desired_replicas_annotation, max_replicas_annotation, rs_available,
    rs_replicas,
};

impl Sync<'_> {
    /// Upstream's `scale`: a scaling event (or a paused Deployment)
    /// resizes the active ReplicaSets proportionally.
    pub(super) fn scale(&mut self) {
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

    pub(super) fn is_saturated(&self) -> bool {
        self.new.is_some_and(|i| {
            let rs = &self.rss[i];
            rs_replicas(rs) == self.replicas
                && desired_replicas_annotation(rs) == Some(self.replicas)
                && rs_available(rs) == self.replicas
        })
    }

    /// Upstream's `GetProportion` with `getReplicaSetFraction`.
    pub(super) fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
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
}
