//! Node lifecycle, after kube-controller-manager's node lifecycle
//! controller: a node whose heartbeat Lease (`kube-node-lease/<node>`)
//! has not been renewed for the grace period (`--node-monitor-grace-period`,
//! 40 s) is marked Unknown ("Kubelet stopped posting node status."), gets
//! the `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints,
//! and its Pods' Ready condition turns False, so they leave the
//! endpoints. Once the Lease is renewed and the node agent reports Ready
//! again, the taints come off (the node agent reports its Pods again).
//!
//! Like upstream, expiry is measured on this controller's clock from the
//! moment it saw a heartbeat change (a new `renewTime`, or a new Ready
//! `lastHeartbeatTime`), so clock skew between machines does not matter,
//! and a restarted controller gives every node a fresh grace period.
//! The controller only acts on expiry, and never writes Ready=True: that
//! is the node agent's word. Nodes that never had a Lease are not
//! monitored (upstream would call them "never posted"), which leaves
//! tools and tests that stand in for node agents alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Context;
use crate::events::{EventType, Recorder};
use crate::scheduler::model::{NO_EXECUTE, NO_SCHEDULE, NOT_READY_TAINT, UNREACHABLE_TAINT};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the controller knows of a node's heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// No Lease seen: not monitored.
    Unmonitored,
    Alive,
    /// No heartbeat for longer than the grace period.
    Expired,
}

#[derive(Debug, Clone)]
struct Seen {
    has_lease: bool,
    renew_time: Option<Timestamp>,
    status_heartbeat: Option<Timestamp>,
    at: Instant,
}

/// Heartbeat changes per node, timed on this controller's clock.
#[derive(Debug, Default)]
pub struct Heartbeats {
    nodes: HashMap<String, Seen>,
}

impl Heartbeats {
    fn seen(&mut self, node: &str, now: Instant) -> &mut Seen {
        self.nodes.entry(node.to_string()).or_insert(Seen {
            has_lease: false,
            renew_time: None,
            status_heartbeat: None,
            at: now,
        })
    }

    /// The node's Lease as it stands now.
    pub fn lease(&mut self, node: &str, renew_time: Option<Timestamp>, now: Instant) {
        let seen = self.seen(node, now);
        if !seen.has_lease || seen.renew_time != renew_time {
            seen.has_lease = true;
            seen.renew_time = renew_time;
            seen.at = now;
        }
    }

    /// The Ready condition's `lastHeartbeatTime` as it stands now.
    pub fn status(&mut self, node: &str, heartbeat: Option<Timestamp>, now: Instant) {
        let seen = self.seen(node, now);
        if heartbeat.is_some() && seen.status_heartbeat != heartbeat {
            seen.status_heartbeat = heartbeat;
            seen.at = now;
        }
    }

    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    pub fn health(&self, node: &str, now: Instant, grace: Duration) -> Health {
        match self.nodes.get(node) {
            Some(seen) if seen.has_lease => {
                if now.saturating_duration_since(seen.at) > grace {
                    Health::Expired
                } else {
                    Health::Alive
                }
            }
            _ => Health::Unmonitored,
        }
    }
}

/// Conditions kubelet reports that go Unknown with the node.
const REPORTED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
const STOPPED_POSTING: &str = "Kubelet stopped posting node status.";

/// The writes one node needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Conditions to write (merged by type).
    pub conditions: Vec<NodeCondition>,
    /// The node's new taint list, when it changes.
    pub taints: Option<Vec<Taint>>,
    /// Turn the Ready condition of the node's Pods False.
    pub pods_not_ready: bool,
    /// Event on the node: NodeNotReady or NodeReady.
    pub event: Option<&'static str>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// What to do with `node` given its heartbeat `health`.
pub fn plan(node: &Node, health: &Health, now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let current = taints(node);
    let ready = condition(node, "Ready").map(|c| c.status.as_str());
    match health {
        Health::Unmonitored => {}
        Health::Expired => {
            for type_ in REPORTED_CONDITIONS {
                match condition(node, type_) {
                    Some(c) if c.status != "Unknown" => plan.conditions.push(NodeCondition {
                        status: "Unknown".into(),
                        reason: Some("NodeStatusUnknown".into()),
                        message: Some(STOPPED_POSTING.into()),
                        last_transition_time: Some(Time(now)),
                        ..c.clone()
                    }),
                    None if type_ == "Ready" => plan.conditions.push(NodeCondition {
                        type_: "Ready".into(),
                        status: "Unknown".into(),
                        reason: Some("NodeStatusNeverUpdated".into()),
                        message: Some("Kubelet never posted node status.".into()),
                        last_transition_time: Some(Time(now)),
                        last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    }),
                    _ => {}
                }
            }
            // Unreachable replaces not-ready, as upstream swaps them.
            let mut wanted: Vec<Taint> = current
                .iter()
                .filter(|t| t.key != NOT_READY_TAINT)
                .cloned()
                .collect();
            for effect in [NO_SCHEDULE, NO_EXECUTE] {
                if !wanted
                    .iter()
                    .any(|t| t.key == UNREACHABLE_TAINT && t.effect == effect)
                {
                    wanted.push(Taint {
                        key: UNREACHABLE_TAINT.into(),
                        effect: effect.into(),
                        // Eviction timing counts from when NoExecute came.
                        time_added: (effect == NO_EXECUTE).then_some(Time(now)),
                        value: None,
                    });
                }
            }
            if wanted != current {
                plan.taints = Some(wanted);
            }
            plan.pods_not_ready = true;
            if ready != Some("Unknown") {
                plan.event = Some("NodeNotReady");
            }
        }
        Health::Alive => {
            if ready == Some("True") {
                let wanted: Vec<Taint> = current
                    .iter()
                    .filter(|t| t.key != UNREACHABLE_TAINT && t.key != NOT_READY_TAINT)
                    .cloned()
                    .collect();
                if wanted.len() != current.len() {
                    if current.iter().any(|t| t.key == UNREACHABLE_TAINT) {
                        plan.event = Some("NodeReady");
                    }
                    plan.taints = Some(wanted);
                }
            }
        }
    }
    plan
}

/// The Ready condition of a Pod is True.
fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

enum Change {
    Nodes(Box<watcher::Event<Node>>),
    Leases(Box<watcher::Event<Lease>>),
}

/// How often heartbeats are checked: a fraction of the grace period, at
/// most kube-controller-manager's 5 s `--node-monitor-period`.
fn monitor_period(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Runs the node lifecycle controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let grace = ctx.config.node_monitor_grace_period;
    let nodes_api: Api<Node> = Api::all(ctx.client.clone());
    let nodes = watcher(nodes_api.clone(), watcher::Config::default())
        .default_backoff()
        .map(|e| e.map(|e| Change::Nodes(Box::new(e))));
    let leases = watcher(
        Api::<Lease>::namespaced(ctx.client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Leases(Box::new(e))));
    let mut changes = futures::stream::select(nodes.boxed(), leases.boxed());
    let mut controller = Controller {
        nodes_api,
        client: ctx.client.clone(),
        recorder: Recorder::new(ctx.client.clone(), "node-controller"),
        grace,
        nodes: HashMap::new(),
        heartbeats: Heartbeats::default(),
        pods_marked: HashSet::new(),
    };
    let mut tick = tokio::time::interval(monitor_period(grace));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else {
                    anyhow::bail!("the node lifecycle watches ended");
                };
                match change {
                    Ok(change) => {
                        if let Some(node) = controller.absorb(change) {
                            controller.check(&node).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "node lifecycle watch failed; retrying"),
                }
            }
            _ = tick.tick() => {
                let names: Vec<String> = controller.nodes.keys().cloned().collect();
                for name in names {
                    controller.check(&name).await;
                }
            }
        }
    }
}

struct Controller {
    nodes_api: Api<Node>,
    client: kube::Client,
    recorder: Recorder,
    grace: Duration,
    nodes: HashMap<String, Node>,
    heartbeats: Heartbeats,
    /// Expired nodes whose Pods were all marked not ready.
    pods_marked: HashSet<String>,
}

impl Controller {
    /// Records a change; returns the node to check at once.
    fn absorb(&mut self, change: Change) -> Option<String> {
        let now = Instant::now();
        match change {
            Change::Nodes(event) => match *event {
                watcher::Event::InitApply(node) | watcher::Event::Apply(node) => {
                    let name = node.metadata.name.clone()?;
                    let heartbeat = condition(&node, "Ready")
                        .and_then(|c| c.last_heartbeat_time.as_ref())
                        .map(|t| t.0);
                    self.heartbeats.status(&name, heartbeat, now);
                    self.nodes.insert(name.clone(), node);
                    Some(name)
                }
                watcher::Event::Delete(node) => {
                    let name = node.metadata.name?;
                    self.nodes.remove(&name);
                    self.heartbeats.forget(&name);
                    self.pods_marked.remove(&name);
                    None
                }
                watcher::Event::Init | watcher::Event::InitDone => None,
            },
            Change::Leases(event) => match *event {
                watcher::Event::InitApply(lease) | watcher::Event::Apply(lease) => {
                    let name = lease.metadata.name.clone()?;
                    let renew = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
                    self.heartbeats.lease(&name, renew, now);
                    Some(name)
                }
                // A deleted Lease is a heartbeat that stopped: the node
                // keeps its last renewal and expires from there.
                watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitDone => None,
            },
        }
    }

    async fn check(&mut self, name: &str) {
        let Some(node) = self.nodes.get(name).cloned() else {
            return;
        };
        let health = self.heartbeats.health(name, Instant::now(), self.grace);
        if health != Health::Expired {
            self.pods_marked.remove(name);
        }
        let plan = plan(&node, &health, Timestamp::now());
        if !plan.conditions.is_empty() || plan.taints.is_some() {
            let (updated, error) = self.carry_out(&node, &plan).await;
            let wrote = updated.is_some();
            if let Some(updated) = updated {
                self.nodes.insert(name.to_string(), updated);
            }
            match error {
                // A conflict means the node changed; the watch brings the
                // new version and the next check starts from it.
                Some(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => {}
                Some(e) => tracing::warn!(node = %name, error = %e, "updating node health failed"),
                None => {}
            }
            if wrote && let Some(reason) = plan.event {
                tracing::info!(node = %name, "node status is now: {reason}");
                self.recorder
                    .record(
                        &node.object_ref(&()),
                        EventType::Normal,
                        reason,
                        &format!("Node {name} status is now: {reason}"),
                    )
                    .await;
            }
        }
        if plan.pods_not_ready && !self.pods_marked.contains(name) {
            match self.mark_pods_not_ready(name).await {
                Ok(true) => {
                    self.pods_marked.insert(name.to_string());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "listing the node's pods failed")
                }
            }
        }
    }

    /// Writes the conditions, then the taints; each write is pinned to
    /// the version it was computed from, so a node agent that came back
    /// meanwhile wins. Returns the node after the last successful write
    /// and the error that stopped it, if any.
    async fn carry_out(&self, node: &Node, plan: &Plan) -> (Option<Node>, Option<kube::Error>) {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let mut latest: Option<Node> = None;
        if !plan.conditions.is_empty() {
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "status": {"conditions": plan.conditions},
            });
            match self
                .nodes_api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(n) => latest = Some(n),
                Err(e) => return (None, Some(e)),
            }
        }
        if let Some(taints) = &plan.taints {
            let version = latest
                .as_ref()
                .unwrap_or(node)
                .metadata
                .resource_version
                .clone();
            let patch = json!({
                "metadata": {"resourceVersion": version},
                "spec": {"taints": taints},
            });
            match self
                .nodes_api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(n) => latest = Some(n),
                Err(e) => return (latest, Some(e)),
            }
        }
        (latest, None)
    }

    /// Turns the Ready condition of the node's Pods False; true when all
    /// of them are done.
    async fn mark_pods_not_ready(&self, node: &str) -> Result<bool, kube::Error> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await?;
        let mut all_done = true;
        for pod in on_node.items.iter().filter(|p| pod_ready(p)) {
            let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name)
            else {
                continue;
            };
            let patch = json!({
                "metadata": {"resourceVersion": pod.metadata.resource_version},
                "status": {"conditions": [{
                    "type": "Ready",
                    "status": "False",
                    "lastTransitionTime": Time(Timestamp::now()),
                }]},
            });
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = %format!("{namespace}/{name}"), %node, "marked pod not ready");
                    self.recorder
                        .record(
                            &pod.object_ref(&()),
                            EventType::Warning,
                            "NodeNotReady",
                            "Node is not ready",
                        )
                        .await;
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "marking pod not ready failed");
                    all_done = false;
                }
            }
        }
        Ok(all_done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const GRACE: Duration = Duration::from_secs(40);

    fn node(ready: Option<&str>, taints: serde_json::Value) -> Node {
        let conditions = match ready {
            Some(s) => json!([
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": s, "reason": "KubeletReady",
                 "lastHeartbeatTime": "2025-01-01T00:00:00Z"}]),
            None => json!([]),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn heartbeats_expire_on_the_controllers_clock() {
        let mut h = Heartbeats::default();
        let t0 = Instant::now();
        assert_eq!(h.health("n1", t0, GRACE), Health::Unmonitored);
        // Status heartbeats alone do not make a node monitored.
        h.status("n1", Some(Timestamp::UNIX_EPOCH), t0);
        assert_eq!(h.health("n1", t0 + GRACE * 2, GRACE), Health::Unmonitored);
        let renew = |s: i64| Some(Timestamp::from_second(s).unwrap());
        h.lease("n1", renew(1), t0);
        assert_eq!(h.health("n1", t0 + GRACE, GRACE), Health::Alive);
        assert_eq!(h.health("n1", t0 + GRACE * 2, GRACE), Health::Expired);
        // The same renewTime seen again (a re-list) is no heartbeat.
        h.lease("n1", renew(1), t0 + GRACE * 2);
        assert_eq!(h.health("n1", t0 + GRACE * 2, GRACE), Health::Expired);
        // A renewal is, whatever the clock on the node says.
        h.lease("n1", renew(0), t0 + GRACE * 2);
        assert_eq!(h.health("n1", t0 + GRACE * 2, GRACE), Health::Alive);
        // So is a new status heartbeat.
        h.status(
            "n1",
            Some(Timestamp::from_second(9).unwrap()),
            t0 + GRACE * 4,
        );
        assert_eq!(h.health("n1", t0 + GRACE * 4, GRACE), Health::Alive);
        h.forget("n1");
        assert_eq!(h.health("n1", t0, GRACE), Health::Unmonitored);
    }

    #[test]
    fn expiry_marks_unknown_and_taints() {
        let now = Timestamp::from_second(100).unwrap();
        let n = node(
            Some("True"),
            json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                   {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        );
        let p = plan(&n, &Health::Expired, now);
        let types: Vec<(&str, &str)> = p
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, [("Ready", "Unknown"), ("MemoryPressure", "Unknown")]);
        let ready = &p.conditions[0];
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        // The heartbeat stays what the node last reported.
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time("2025-01-01T00:00:00Z".parse().unwrap()))
        );
        assert_eq!(
            keys(p.taints.as_ref().unwrap()),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        assert!(p.pods_not_ready);
        assert_eq!(p.event, Some("NodeNotReady"));
    }

    #[test]
    fn an_expired_node_already_marked_needs_only_its_pods() {
        let n = node(
            Some("Unknown"),
            json!([{"key": UNREACHABLE_TAINT, "effect": "NoSchedule"},
                   {"key": UNREACHABLE_TAINT, "effect": "NoExecute"}]),
        );
        let mut n = n;
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "Unknown".into();
        let p = plan(&n, &Health::Expired, Timestamp::now());
        assert!(p.conditions.is_empty() && p.taints.is_none() && p.event.is_none());
        assert!(p.pods_not_ready);
    }

    #[test]
    fn never_reported_node_gets_a_never_updated_condition() {
        let p = plan(&node(None, json!([])), &Health::Expired, Timestamp::now());
        assert_eq!(p.conditions.len(), 1);
        assert_eq!(
            p.conditions[0].reason.as_deref(),
            Some("NodeStatusNeverUpdated")
        );
    }

    #[test]
    fn recovery_waits_for_the_node_agent() {
        let tainted = json!([{"key": UNREACHABLE_TAINT, "effect": "NoSchedule"},
                             {"key": UNREACHABLE_TAINT, "effect": "NoExecute"},
                             {"key": "keep", "effect": "NoSchedule"}]);
        // Lease renewed but the agent has not said Ready yet: nothing.
        assert!(
            plan(
                &node(Some("Unknown"), tainted.clone()),
                &Health::Alive,
                Timestamp::now()
            )
            .is_empty()
        );
        assert!(
            plan(
                &node(Some("False"), tainted.clone()),
                &Health::Alive,
                Timestamp::now()
            )
            .is_empty()
        );
        // Ready again: the taints go, other taints stay.
        let p = plan(
            &node(Some("True"), tainted),
            &Health::Alive,
            Timestamp::now(),
        );
        assert_eq!(keys(p.taints.as_ref().unwrap()), ["keep:NoSchedule"]);
        assert_eq!(p.event, Some("NodeReady"));
        assert!(p.conditions.is_empty() && !p.pods_not_ready);
        // A healthy node needs nothing.
        assert!(
            plan(
                &node(Some("True"), json!([])),
                &Health::Alive,
                Timestamp::now()
            )
            .is_empty()
        );
    }

    #[test]
    fn unmonitored_nodes_are_left_alone() {
        let n = node(
            Some("False"),
            json!([{"key": UNREACHABLE_TAINT, "effect": "NoSchedule"}]),
        );
        assert!(plan(&n, &Health::Unmonitored, Timestamp::now()).is_empty());
    }

    proptest! {
        /// Applying a plan and planning again asks for nothing more
        /// (except the level-triggered Pod marking), so the controller
        /// never flaps against itself.
        #[test]
        fn plans_are_idempotent(
            ready in prop::option::of(prop::sample::select(vec!["True", "False", "Unknown"])),
            taint_keys in prop::collection::vec(
                (prop::sample::select(vec![UNREACHABLE_TAINT, NOT_READY_TAINT, "other"]),
                 prop::sample::select(vec![NO_SCHEDULE, NO_EXECUTE])), 0..4),
            expired in any::<bool>(),
        ) {
            let taints: Vec<_> = taint_keys.iter()
                .map(|(k, e)| json!({"key": k, "effect": e})).collect();
            let mut n = node(ready, json!(taints));
            let health = if expired { Health::Expired } else { Health::Alive };
            let now = Timestamp::from_second(1000).unwrap();
            let first = plan(&n, &health, now);
            if let Some(t) = first.taints.clone() {
                n.spec.as_mut().unwrap().taints = Some(t);
            }
            let conditions = n.status.as_mut().unwrap().conditions.get_or_insert_with(Vec::new);
            for c in first.conditions {
                match conditions.iter_mut().find(|x| x.type_ == c.type_) {
                    Some(x) => *x = c,
                    None => conditions.push(c),
                }
            }
            let second = plan(&n, &health, now);
            prop_assert!(second.conditions.is_empty());
            prop_assert!(second.taints.is_none());
            prop_assert!(second.event.is_none());
            let unreachable = n.spec.as_ref().unwrap().taints.iter().flatten()
                .filter(|t| t.key == UNREACHABLE_TAINT).count();
            if expired {
                prop_assert!(unreachable >= 2);
            }
            if !expired && ready == Some("True") {
                prop_assert_eq!(unreachable, 0);
            }
        }
    }
}
