#![allow(clippy::unwrap_used)]
//! The rollout model against a simulated cluster: a ReplicaSet controller
//! that lags behind, Pods that turn available at random moments, and the
//! Deployment controller applying its plans. Availability must never drop
//! below `replicas - maxUnavailable`, and every rollout must finish.

use super::Strategy;
use super::*;
use crate::deployment::replica_sets::{POD_TEMPLATE_HASH, strategy};
use crate::deployment::status::{AVAILABLE, NEW_RS_AVAILABLE, deployment_complete};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::{Just, ProptestConfig, prop_assert, prop_oneof, proptest};
use serde_json::json;

fn deployment(replicas: i32, strategy: serde_json::Value, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 1},
        "spec": {"replicas": replicas, "strategy": strategy,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))
    .unwrap()
}

/// One ReplicaSet in the simulated cluster and its Pods.
#[derive(Debug, Clone)]
struct Simulated {
    rs: ReplicaSet,
    unavailable: i32,
    available: i32,
}

#[derive(Debug)]
struct Cluster {
    d: Deployment,
    sets: Vec<Simulated>,
    clock: i64,
    strategy: Strategy,
}

impl Cluster {
    fn new(d: Deployment) -> Cluster {
        let strategy = strategy(&d).unwrap();
        Cluster {
            d,
            sets: Vec::new(),
            clock: 0,
            strategy,
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + self.clock).unwrap()
    }

    fn available(&self) -> i32 {
        self.sets.iter().map(|s| s.available).sum()
    }

    /// Runs the Deployment controller once; false when it had nothing to do.
    fn sync_deployment(&mut self) -> bool {
        self.clock += 1;
        let owned: Vec<ReplicaSet> = self.sets.iter().map(|s| s.rs.clone()).collect();
        let p = plan(&self.d, self.strategy, owned, &[], self.now());
        let busy = !p.steps.is_empty() || p.status.is_some() || p.revision.is_some();
        for step in p.steps {
            match step.change {
                Change::Create(mut rs) => {
                    assert!(
                        self.sets
                            .iter()
                            .all(|s| s.rs.metadata.name != rs.metadata.name),
                        "created twice"
                    );
                    rs.metadata.uid = rs.metadata.name.clone();
                    rs.metadata.creation_timestamp = Some(Time(self.now()));
                    rs.metadata.generation = Some(1);
                    self.sets.push(Simulated {
                        rs,
                        unavailable: 0,
                        available: 0,
                    });
                }
                Change::Update(rs) => {
                    let s = self
                        .sets
                        .iter_mut()
                        .find(|s| s.rs.metadata.name == rs.metadata.name)
                        .unwrap();
                    let status = s.rs.status.clone();
                    let generation = s.rs.metadata.generation.unwrap_or(1);
                    let resized = s.rs.spec != rs.spec;
                    s.rs = rs;
                    s.rs.status = status;
                    s.rs.metadata.generation = Some(generation + i64::from(resized));
                }
                Change::Delete { name, .. } => {
                    let i = self
                        .sets
                        .iter()
                        .position(|s| s.rs.metadata.name.as_deref() == Some(&name))
                        .unwrap();
                    assert_eq!(self.sets[i].unavailable + self.sets[i].available, 0);
                    self.sets.remove(i);
                }
            }
        }
        if let Some(rev) = p.revision {
            self.d
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(REVISION.into(), rev);
        }
        if let Some(status) = p.status {
            self.d.status = Some(status);
        }
        busy
    }

    /// The ReplicaSet controller syncs one ReplicaSet: creates or deletes
    /// Pods (unavailable ones first) and reports its status.
    fn sync_replica_set(&mut self, i: usize) {
        let s = &mut self.sets[i];
        let want = rs_replicas(&s.rs);
        let have = s.unavailable + s.available;
        if have < want {
            s.unavailable += want - have;
        } else if have > want {
            let mut extra = have - want;
            let from_unavailable = extra.min(s.unavailable);
            s.unavailable -= from_unavailable;
            extra -= from_unavailable;
            s.available -= extra;
        }
        s.rs.status = Some(
            serde_json::from_value(json!({
                "replicas": s.unavailable + s.available,
                "readyReplicas": s.available,
                "availableReplicas": s.available,
                "observedGeneration": s.rs.metadata.generation,
            }))
            .unwrap(),
        );
    }

    fn make_one_available(&mut self, i: usize) {
        let s = &mut self.sets[i];
        if s.unavailable > 0 {
            s.unavailable -= 1;
            s.available += 1;
        }
    }

    /// Everything runs until nothing changes.
    fn settle(&mut self) {
        for _ in 0..500 {
            let busy = self.sync_deployment();
            for i in 0..self.sets.len() {
                self.sync_replica_set(i);
                while self.sets[i].unavailable > 0 {
                    self.make_one_available(i);
                }
                self.sync_replica_set(i);
            }
            if !busy && !self.sync_deployment() {
                return;
            }
        }
        panic!("the rollout did not settle: {self:#?}");
    }

    fn new_set(&self) -> &Simulated {
        let template = self.d.spec.as_ref().unwrap().template.clone();
        self.sets
            .iter()
            .find(|s| {
                equal_ignore_hash(
                    s.rs.spec.as_ref().unwrap().template.as_ref().unwrap(),
                    &template,
                )
            })
            .unwrap()
    }

    fn change_image(&mut self, image: &str) {
        let spec = self.d.spec.as_mut().unwrap();
        spec.template.spec.as_mut().unwrap().containers[0].image = Some(image.into());
        let g = self.d.metadata.generation.unwrap();
        self.d.metadata.generation = Some(g + 1);
    }

    fn assert_rolled_out(&self) {
        let replicas = deployment_replicas(&self.d);
        let new = self.new_set();
        assert_eq!(rs_replicas(&new.rs), replicas);
        assert_eq!(new.available, replicas);
        for s in &self.sets {
            if s.rs.metadata.name != new.rs.metadata.name {
                assert_eq!((rs_replicas(&s.rs), s.available + s.unavailable), (0, 0));
            }
        }
        let status = self.d.status.as_ref().unwrap();
        assert!(deployment_complete(&self.d, status), "{status:#?}");
        let progressing = condition(status, PROGRESSING).unwrap();
        assert_eq!(progressing.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert_eq!(condition(status, AVAILABLE).unwrap().status, "True");
    }
}

#[test]
fn first_sync_creates_the_new_replica_set() {
    let d = deployment(3, serde_json::Value::Null, "nginx:1");
    let p = plan(&d, strategy(&d).unwrap(), Vec::new(), &[], Timestamp::now());
    let [step] = p.steps.as_slice() else {
        panic!("{p:#?}")
    };
    let Change::Create(rs) = &step.change else {
        panic!("{step:#?}")
    };
    let hash = rs.metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH].clone();
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(p.revision.as_deref(), Some("1"));
    let status = p.status.unwrap();
    let c = condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.reason.as_deref(), Some(NEW_RS_CREATED));
    assert_eq!(status.observed_generation, Some(1));
}

#[test]
fn rolling_update_surges_then_scales_down() {
    let mut c = Cluster::new(deployment(3, serde_json::Value::Null, "nginx:1"));
    c.settle();
    c.assert_rolled_out();
    c.change_image("nginx:2");
    c.sync_deployment();
    // 25% of 3: one surge Pod, none unavailable.
    assert_eq!(c.sets.len(), 2);
    assert_eq!(rs_replicas(&c.new_set().rs), 1);
    let old = c.sets.iter().find(|s| rs_replicas(&s.rs) == 3).unwrap();
    assert_eq!(old.available, 3);
    c.settle();
    c.assert_rolled_out();
    assert_eq!(
        c.d.metadata.annotations.as_ref().unwrap()[REVISION],
        "2".to_string()
    );
}

#[test]
fn recreate_scales_old_to_zero_first() {
    let mut c = Cluster::new(deployment(2, json!({"type": "Recreate"}), "nginx:1"));
    c.settle();
    c.change_image("nginx:2");
    c.sync_deployment();
    assert_eq!(c.sets.len(), 1, "no new ReplicaSet while old Pods run");
    assert_eq!(rs_replicas(&c.sets[0].rs), 0);
    c.sync_deployment();
    assert_eq!(c.sets.len(), 1, "old Pods are still running");
    c.sync_replica_set(0);
    c.sync_deployment();
    assert_eq!(c.sets.len(), 2);
    assert_eq!(rs_replicas(&c.new_set().rs), 2);
    c.settle();
    c.assert_rolled_out();
}

#[test]
fn scaling_resizes_the_only_replica_set() {
    let mut c = Cluster::new(deployment(3, serde_json::Value::Null, "nginx:1"));
    c.settle();
    c.d.spec.as_mut().unwrap().replicas = Some(2);
    c.d.metadata.generation = Some(2);
    c.sync_deployment();
    assert_eq!(rs_replicas(&c.sets[0].rs), 2);
    c.settle();
    c.assert_rolled_out();
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    let mut c = Cluster::new(deployment(
        10,
        json!({"rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}),
        "nginx:1",
    ));
    c.settle();
    c.change_image("nginx:2");
    c.sync_deployment();
    // New 3 (surge), old 8 (2 unavailable allowed).
    let sizes: Vec<i32> = c.sets.iter().map(|s| rs_replicas(&s.rs)).collect();
    assert_eq!(sizes, [8, 3]);
    c.sync_deployment();
    for i in 0..c.sets.len() {
        c.sync_replica_set(i);
    }
    // Then new 5: 13 = 10 + surge 3.
    let sizes: Vec<i32> = c.sets.iter().map(|s| rs_replicas(&s.rs)).collect();
    assert_eq!(sizes, [8, 5]);
    c.d.spec.as_mut().unwrap().replicas = Some(20);
    c.d.metadata.generation = Some(3);
    c.strategy = strategy(&c.d).unwrap();
    c.sync_deployment();
    let sizes: Vec<i32> = c.sets.iter().map(|s| rs_replicas(&s.rs)).collect();
    // 23 allowed: the extra 10 split by size.
    assert_eq!(sizes.iter().sum::<i32>(), 23);
    assert!(sizes[0] > 8 && sizes[1] > 5, "{sizes:?}");
    c.settle();
    c.assert_rolled_out();
}

#[test]
fn old_replica_sets_beyond_the_history_limit_go() {
    let mut d = deployment(1, serde_json::Value::Null, "v0");
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let mut c = Cluster::new(d);
    c.settle();
    for v in 1..4 {
        c.change_image(&format!("v{v}"));
        c.settle();
    }
    assert_eq!(c.sets.len(), 2, "the new one and one old");
    c.assert_rolled_out();
}

#[test]
fn a_deleting_deployment_only_reports() {
    let mut d = deployment(3, serde_json::Value::Null, "nginx:1");
    d.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let p = plan(&d, strategy(&d).unwrap(), Vec::new(), &[], Timestamp::now());
    assert!(p.steps.is_empty());
}

#[test]
fn pausing_sets_the_condition_and_stops_the_rollout() {
    let mut c = Cluster::new(deployment(2, serde_json::Value::Null, "nginx:1"));
    c.settle();
    c.d.spec.as_mut().unwrap().paused = Some(true);
    c.change_image("nginx:2");
    c.sync_deployment();
    assert_eq!(c.sets.len(), 1);
    let status = c.d.status.as_ref().unwrap();
    assert_eq!(
        condition(status, PROGRESSING).unwrap().reason.as_deref(),
        Some(PAUSED)
    );
    c.d.spec.as_mut().unwrap().paused = Some(false);
    c.settle();
    c.assert_rolled_out();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the order in which controllers run and Pods turn
    /// available, availability never drops below `replicas -
    /// maxUnavailable`, and the rollout completes.
    #[test]
    fn rolling_updates_keep_minimum_availability(
        replicas in 1i32..8,
        surge in prop_oneof![Just(json!("25%")), Just(json!(0)), Just(json!(1)), Just(json!("50%")), Just(json!(3))],
        unavailable in prop_oneof![Just(json!("25%")), Just(json!(0)), Just(json!(1)), Just(json!("50%"))],
        schedule in proptest::collection::vec((0u8..3, 0usize..4), 0..200),
    ) {
        let d = deployment(replicas, json!({"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}), "v1");
        let mut c = Cluster::new(d);
        c.settle();
        c.change_image("v2");
        let min = replicas - c.strategy.max_unavailable(replicas);
        for (what, which) in schedule {
            match what {
                0 => { c.sync_deployment(); }
                1 => if !c.sets.is_empty() { let i = which % c.sets.len(); c.sync_replica_set(i); },
                _ => if !c.sets.is_empty() { let i = which % c.sets.len(); c.make_one_available(i); },
            }
            prop_assert!(c.available() >= min, "available {} < {min}: {c:#?}", c.available());
        }
        c.settle();
        c.assert_rolled_out();
    }
}
