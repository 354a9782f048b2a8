//! A small kube-scheduler: Pods without a node (and for the
//! `default-scheduler`) get one, chosen by [`model::select_node`] from the
//! Nodes and the Pods already placed, which both come from watches.
//!
//! Binding uses the `pods/binding` subresource, as kube-scheduler does:
//! it is the one write that may set a Pod's `spec.nodeName`. Against a
//! server without it (404 for the route), the scheduler falls back to
//! setting `spec.nodeName` with a merge patch pinned to the Pod's
//! resourceVersion (the binding's "only if still unbound" guarantee) and
//! writes `PodScheduled` itself; that works only where the server lets a
//! Pod update set `nodeName`.
//!
//! A Pod that fits nowhere stays Pending with a `FailedScheduling` Event
//! and `PodScheduled=False` (reason `Unschedulable`); it is tried again
//! when a Node appears or changes in a way that matters for scheduling,
//! or when the Pod itself changes.

pub mod model;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Context;
use crate::events::{EventType, Recorder};

/// The name Pods ask for in `spec.schedulerName` (empty means this one).
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Most watch events folded into one scheduling pass.
const MAX_BATCH: usize = 1000;
/// Concurrent binding and status writes.
const WRITE_CONCURRENCY: usize = 16;
/// Pause before retrying Pods whose writes failed (not for unschedulable
/// Pods, which wait for a change).
const ERROR_RETRY: Duration = Duration::from_secs(1);

type PodKey = (String, String);

fn key_of(pod: &Pod) -> PodKey {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// A Pod occupies its node until it has finished.
fn occupies(pod: &Pod) -> Option<&str> {
    node_name(pod).filter(|_| !matches!(phase(pod), "Succeeded" | "Failed"))
}

/// A Pod this scheduler is responsible for placing.
fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let ours = matches!(
        spec.scheduler_name.as_deref(),
        None | Some("" | SCHEDULER_NAME)
    );
    ours && node_name(pod).is_none()
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase(pod), "Succeeded" | "Failed")
}

fn gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// What of a Node matters for scheduling; a change in it retries the
/// Pods that did not fit.
type SchedulingView<'a> = (
    Option<&'a BTreeMap<String, String>>,
    Option<&'a Vec<Taint>>,
    Option<bool>,
    Option<&'a str>,
);

fn scheduling_view(node: &Node) -> SchedulingView<'_> {
    let spec = node.spec.as_ref();
    (
        node.metadata.labels.as_ref(),
        spec.and_then(|s| s.taints.as_ref()),
        spec.and_then(|s| s.unschedulable),
        model::ready_status(node),
    )
}

/// The scheduler's picture of the cluster, built from the watches.
#[derive(Default)]
struct Cluster {
    nodes: BTreeMap<String, Node>,
    nodes_synced: bool,
    pods_synced: bool,
    /// Pod → the node it occupies (including Pods this scheduler just
    /// bound, before the watch shows it: kube-scheduler's "assumed" Pods).
    placed: HashMap<PodKey, String>,
    pods_per_node: HashMap<String, usize>,
    /// Pods waiting for a node, latest version.
    waiting: HashMap<PodKey, Pod>,
    /// Waiting Pods to try on the next pass.
    active: BTreeSet<PodKey>,
    /// Waiting Pods whose last write failed, retried after a pause.
    errored: BTreeSet<PodKey>,
    /// The last `FailedScheduling` message recorded per Pod, so a retry
    /// with the same outcome does not repeat the Event.
    reported: HashMap<PodKey, String>,
}

impl Cluster {
    fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced
    }

    fn place(&mut self, key: &PodKey, node: Option<&str>) {
        if self.placed.get(key).map(String::as_str) == node {
            return;
        }
        if let Some(old) = self.placed.remove(key)
            && let Some(n) = self.pods_per_node.get_mut(&old)
        {
            *n = n.saturating_sub(1);
        }
        if let Some(node) = node {
            self.placed.insert(key.clone(), node.to_string());
            *self.pods_per_node.entry(node.to_string()).or_default() += 1;
        }
    }

    fn apply_pod(&mut self, pod: Pod) {
        let key = key_of(&pod);
        self.place(&key, occupies(&pod));
        if wants_scheduling(&pod) {
            self.waiting.insert(key.clone(), pod);
            self.active.insert(key);
        } else {
            self.forget_waiting(&key);
        }
    }

    fn delete_pod(&mut self, pod: &Pod) {
        let key = key_of(pod);
        self.place(&key, None);
        self.forget_waiting(&key);
    }

    fn forget_waiting(&mut self, key: &PodKey) {
        self.waiting.remove(key);
        self.active.remove(key);
        self.errored.remove(key);
        self.reported.remove(key);
    }

    fn apply_node(&mut self, node: Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let changed = self
            .nodes
            .get(&name)
            .is_none_or(|old| scheduling_view(old) != scheduling_view(&node));
        if changed {
            self.retry_all();
        }
        self.nodes.insert(name, node);
    }

    fn retry_all(&mut self) {
        self.active.extend(self.waiting.keys().cloned());
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Pods(event) => match *event {
                watcher::Event::Init => {
                    self.pods_synced = false;
                    self.placed.clear();
                    self.pods_per_node.clear();
                    self.waiting.clear();
                    self.active.clear();
                    self.errored.clear();
                }
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => self.apply_pod(pod),
                watcher::Event::InitDone => self.pods_synced = true,
                watcher::Event::Delete(pod) => self.delete_pod(&pod),
            },
            Change::Nodes(event) => match *event {
                watcher::Event::Init => {
                    self.nodes_synced = false;
                    self.nodes.clear();
                }
                watcher::Event::InitApply(node) | watcher::Event::Apply(node) => {
                    self.apply_node(node)
                }
                watcher::Event::InitDone => {
                    self.nodes_synced = true;
                    self.retry_all();
                }
                watcher::Event::Delete(node) => {
                    if let Some(name) = node.metadata.name.as_deref() {
                        self.nodes.remove(name);
                    }
                }
            },
        }
    }

    /// Decides for every active Pod, in kube-scheduler's queue order
    /// (priority, then age). Each placement counts at once, so a burst of
    /// Pods spreads even before the watch reports the bindings.
    fn decide(&mut self) -> Vec<Decision> {
        let mut queue: Vec<(Reverse<i32>, String, PodKey)> = std::mem::take(&mut self.active)
            .into_iter()
            .filter_map(|key| {
                let pod = self.waiting.get(&key)?;
                let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
                let created = pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default();
                Some((Reverse(priority), created, key))
            })
            .collect();
        queue.sort();
        let mut decisions = Vec::with_capacity(queue.len());
        for (_, _, key) in queue {
            let Some(pod) = self.waiting.get(&key) else {
                continue;
            };
            let Some(spec) = pod.spec.as_ref() else {
                continue;
            };
            if gated(pod) {
                decisions.push(Decision::Gated(pod.clone()));
                continue;
            }
            let counts = &self.pods_per_node;
            let candidates = self
                .nodes
                .iter()
                .map(|(name, node)| (node, counts.get(name).copied().unwrap_or(0)));
            match model::select_node(spec, candidates) {
                Ok(node) => {
                    let node = node.to_string();
                    let pod = pod.clone();
                    self.place(&key, Some(&node));
                    decisions.push(Decision::Bind(pod, node));
                }
                Err(fit) => {
                    let message = fit.to_string();
                    let new = self.reported.get(&key) != Some(&message);
                    if new {
                        self.reported.insert(key.clone(), message.clone());
                    }
                    decisions.push(Decision::Unschedulable {
                        pod: pod.clone(),
                        message,
                        record_event: new,
                    });
                }
            }
        }
        decisions
    }

    fn settle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Bound(key) => {
                // Placed already; the watch will confirm.
                self.waiting.remove(&key);
                self.reported.remove(&key);
            }
            Outcome::BindFailed { key, conflict } => {
                self.place(&key, None);
                // A conflict means a newer version of the Pod is on its
                // way through the watch, which retries it.
                if !conflict && self.waiting.contains_key(&key) {
                    self.errored.insert(key);
                }
            }
            Outcome::Updated(pod) => {
                // Keep the fresh resourceVersion for the next binding.
                let key = key_of(&pod);
                if let Some(waiting) = self.waiting.get_mut(&key) {
                    *waiting = *pod;
                }
            }
            Outcome::Failed(key) => {
                self.reported.remove(&key);
                if self.waiting.contains_key(&key) {
                    self.errored.insert(key);
                }
            }
            Outcome::Nothing => {}
        }
    }
}

enum Change {
    Pods(Box<watcher::Event<Pod>>),
    Nodes(Box<watcher::Event<Node>>),
}

enum Decision {
    Bind(Pod, String),
    Unschedulable {
        pod: Pod,
        message: String,
        record_event: bool,
    },
    Gated(Pod),
}

enum Outcome {
    Bound(PodKey),
    BindFailed { key: PodKey, conflict: bool },
    Updated(Box<Pod>),
    Failed(PodKey),
    Nothing,
}

/// Runs the scheduler.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let writer = Writer {
        client: ctx.client.clone(),
        recorder: Recorder::new(ctx.client.clone(), SCHEDULER_NAME),
        binding_unsupported: AtomicBool::new(false),
    };
    let pods = watcher(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Pods(Box::new(e))));
    let nodes = watcher(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| e.map(|e| Change::Nodes(Box::new(e))));
    let mut changes = futures::stream::select(pods.boxed(), nodes.boxed());
    let mut cluster = Cluster::default();
    loop {
        let retry = !cluster.errored.is_empty();
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else {
                    anyhow::bail!("the scheduler's watches ended");
                };
                absorb(&mut cluster, change);
                for _ in 0..MAX_BATCH {
                    match changes.next().now_or_never() {
                        Some(Some(change)) => absorb(&mut cluster, change),
                        _ => break,
                    }
                }
            }
            () = tokio::time::sleep(ERROR_RETRY), if retry => {
                let errored = std::mem::take(&mut cluster.errored);
                cluster.active.extend(errored);
            }
        }
        if !cluster.synced() || cluster.active.is_empty() {
            continue;
        }
        let decisions = cluster.decide();
        let outcomes: Vec<Outcome> = futures::stream::iter(decisions)
            .map(|d| writer.carry_out(d))
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            cluster.settle(outcome);
        }
    }
}

fn absorb(cluster: &mut Cluster, change: Result<Change, watcher::Error>) {
    match change {
        Ok(change) => cluster.apply(change),
        Err(e) => tracing::warn!(error = %e, "scheduler watch failed; retrying"),
    }
}

/// The scheduler's writes: bindings, Pod conditions, Events.
struct Writer {
    client: kube::Client,
    recorder: Recorder,
    /// Set once the API server turns out not to serve `pods/binding`.
    binding_unsupported: AtomicBool,
}

impl Writer {
    async fn carry_out(&self, decision: Decision) -> Outcome {
        match decision {
            Decision::Bind(pod, node) => self.bind(&pod, &node).await,
            Decision::Unschedulable {
                pod,
                message,
                record_event,
            } => {
                if record_event {
                    self.recorder
                        .record(
                            &pod.object_ref(&()),
                            EventType::Warning,
                            "FailedScheduling",
                            &message,
                        )
                        .await;
                }
                self.set_unscheduled(&pod, "Unschedulable", &message).await
            }
            Decision::Gated(pod) => {
                self.set_unscheduled(
                    &pod,
                    "SchedulingGated",
                    "Scheduling is blocked due to non-empty scheduling gates",
                )
                .await
            }
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Outcome {
        let key = key_of(pod);
        let (namespace, name) = (&key.0, &key.1);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let result = match self.post_binding(&api, pod, node).await {
            Some(result) => result,
            None => self.patch_node_name(&api, pod, node).await,
        };
        match result {
            Ok(()) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), %node, "scheduled");
                self.recorder
                    .record(
                        &pod.object_ref(&()),
                        EventType::Normal,
                        "Scheduled",
                        &format!("Successfully assigned {namespace}/{name} to {node}"),
                    )
                    .await;
                Outcome::Bound(key)
            }
            Err(e) => {
                let conflict =
                    matches!(&e, kube::Error::Api(s) if s.is_conflict() || s.is_not_found());
                if conflict {
                    tracing::debug!(pod = %format!("{namespace}/{name}"), error = %e, "binding lost a race; waiting for the newer Pod");
                } else {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), %node, error = %e, "binding failed");
                }
                Outcome::BindFailed { key, conflict }
            }
        }
    }

    /// POSTs a Binding; None when the server has no `pods/binding`.
    async fn post_binding(
        &self,
        api: &Api<Pod>,
        pod: &Pod,
        node: &str,
    ) -> Option<Result<(), kube::Error>> {
        if self.binding_unsupported.load(Ordering::Relaxed) {
            return None;
        }
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {
                "name": pod.metadata.name,
                "namespace": pod.metadata.namespace,
                "uid": pod.metadata.uid,
            },
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => Some(Ok(())),
            // A missing route (404 without details, or 405) rather than a
            // missing Pod.
            Err(kube::Error::Api(s)) if (s.code == 404 && s.details.is_none()) || s.code == 405 => {
                tracing::info!(
                    "the API server does not serve pods/binding; setting spec.nodeName instead"
                );
                self.binding_unsupported.store(true, Ordering::Relaxed);
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Sets `spec.nodeName` only if the Pod is unchanged since it was
    /// seen unbound, then records `PodScheduled=True` as the binding
    /// subresource would.
    async fn patch_node_name(
        &self,
        api: &Api<Pod>,
        pod: &Pod,
        node: &str,
    ) -> Result<(), kube::Error> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "spec": {"nodeName": node},
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let condition = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": now(),
        }]}});
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&condition))
            .await
        {
            // The binding stands; only the condition is missing.
            tracing::warn!(pod = %name, error = %e, "setting PodScheduled failed");
        }
        Ok(())
    }

    /// `PodScheduled=False` with `reason` and `message`, unless the Pod
    /// already says so.
    async fn set_unscheduled(&self, pod: &Pod, reason: &str, message: &str) -> Outcome {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        }) {
            return Outcome::Nothing;
        }
        let transition = match current {
            Some(c) if c.status == "False" => c
                .last_transition_time
                .as_ref()
                .map(|t| json!(t))
                .unwrap_or_else(|| json!(now())),
            _ => json!(now()),
        };
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": transition,
        }]}});
        let key = key_of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.0);
        match api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(updated) => Outcome::Updated(Box::new(updated)),
            Err(kube::Error::Api(s)) if s.is_not_found() => Outcome::Nothing,
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", key.0, key.1), error = %e, "setting PodScheduled failed");
                Outcome::Failed(key)
            }
        }
    }
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "creationTimestamp": format!("2025-01-01T00:00:{:02}Z", name.len())},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        }))
        .unwrap()
    }

    fn synced(nodes: &[&str], pods: Vec<Pod>) -> Cluster {
        let mut c = Cluster::default();
        for n in nodes {
            c.apply(Change::Nodes(Box::new(watcher::Event::InitApply(node(n)))));
        }
        c.apply(Change::Nodes(Box::new(watcher::Event::InitDone)));
        for p in pods {
            c.apply(Change::Pods(Box::new(watcher::Event::InitApply(p))));
        }
        c.apply(Change::Pods(Box::new(watcher::Event::InitDone)));
        c
    }

    fn bound_to(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Bind(_, node) => Some(node.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_burst_spreads_before_the_watch_catches_up() {
        let mut c = synced(
            &["n1", "n2", "n3"],
            vec![
                pod("a", None),
                pod("bb", None),
                pod("ccc", None),
                pod("x", Some("n1")),
            ],
        );
        let decisions = c.decide();
        // n1 already has a Pod, so the three go n2, n3, then n1.
        assert_eq!(bound_to(&decisions), ["n2", "n3", "n1"]);
        assert_eq!(c.pods_per_node.values().sum::<usize>(), 4);
        assert!(c.active.is_empty());
    }

    #[test]
    fn bound_finished_and_foreign_pods_are_left_alone() {
        let mut done = pod("done", None);
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        let mut other = pod("other", None);
        other.spec.as_mut().unwrap().scheduler_name = Some("my-scheduler".into());
        let mut c = synced(&["n1"], vec![pod("bound", Some("n1")), done, other]);
        assert!(c.decide().is_empty());
    }

    #[test]
    fn unschedulable_pods_wait_for_a_node_change_and_report_once() {
        let mut c = synced(&[], vec![pod("a", None)]);
        let first = c.decide();
        assert!(
            matches!(&first[..], [Decision::Unschedulable { record_event: true, message, .. }]
            if message == "no nodes available to schedule pods")
        );
        // Nothing to retry until something changes.
        assert!(c.active.is_empty());
        // The Pod's own update (our condition write) retries it, quietly.
        c.apply(Change::Pods(Box::new(watcher::Event::Apply(pod(
            "a", None,
        )))));
        assert!(matches!(
            &c.decide()[..],
            [Decision::Unschedulable {
                record_event: false,
                ..
            }]
        ));
        // A new node retries it and it fits.
        c.apply(Change::Nodes(Box::new(watcher::Event::Apply(node("n1")))));
        assert_eq!(bound_to(&c.decide()), ["n1"]);
        // An unrelated node update (same labels, taints, readiness) does not.
        c.apply(Change::Nodes(Box::new(watcher::Event::Apply(node("n1")))));
        assert!(c.active.is_empty());
    }

    #[test]
    fn a_failed_binding_is_undone() {
        let mut c = synced(&["n1"], vec![pod("a", None)]);
        assert_eq!(bound_to(&c.decide()), ["n1"]);
        c.settle(Outcome::BindFailed {
            key: ("default".into(), "a".into()),
            conflict: false,
        });
        assert_eq!(c.pods_per_node.get("n1"), Some(&0));
        assert_eq!(c.errored.len(), 1);
        // The watch later shows the Pod bound: it counts once.
        c.settle(Outcome::Bound(("default".into(), "a".into())));
        c.apply(Change::Pods(Box::new(watcher::Event::Apply(pod(
            "a",
            Some("n1"),
        )))));
        assert_eq!(c.pods_per_node.get("n1"), Some(&1));
        c.apply(Change::Pods(Box::new(watcher::Event::Delete(pod(
            "a",
            Some("n1"),
        )))));
        assert_eq!(c.pods_per_node.get("n1"), Some(&0));
    }
}
