//! The bench's own view of the cluster, fed by two watches opened before
//! anything is written: the EndpointSlices of the bench namespace (what a
//! proxy or DNS server would see) and its Pods (what the controller sees
//! first). Each has its own `kube::Client`, hence its own connection.
//!
//! A flip registers the Pod and the readiness it expects
//! ([`Observer::expect`]) right before its patch goes out. The Pod watch
//! records when the Pod's `Ready` condition shows the new value; the slice
//! watch records when the Pod's endpoint in its Service's slices shows it
//! (`conditions.ready`, nil counting as true as the API says; an endpoint
//! missing from every slice counts as not ready). Both latencies are taken
//! from the patch's start, on this process's monotonic clock, at the moment
//! the event has been decoded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, oneshot};

use crate::stats::Latencies;

/// The label tying a slice to its Service.
const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The Service a bench Pod belongs to: Pod `s12-3` is in Service `s12`.
pub fn service_of(pod: &str) -> &str {
    pod.rsplit_once('-').map_or(pod, |(service, _)| service)
}

struct Pending {
    want_ready: bool,
    started: Instant,
    done: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    /// Service → slice name → (Pod name, ready) of each endpoint.
    slices: HashMap<String, HashMap<String, Vec<(String, bool)>>>,
    /// Flips not yet seen in a slice, by Pod name.
    slice_pending: HashMap<String, Pending>,
    /// Flips not yet seen on the Pod watch, by Pod name.
    pod_pending: HashMap<String, (bool, Instant)>,
    /// When the Pod watch showed each flip still waiting for its slice.
    pod_seen: HashMap<String, Instant>,
    slice_latencies: Latencies,
    pod_latencies: Latencies,
    slice_after_pod: Latencies,
    last_slice_seen: Option<Instant>,
    slice_events: u64,
    pod_events: u64,
    watch_errors: u64,
    first_watch_error: Option<String>,
}

/// What the watches saw of one phase's flips.
pub struct Observed {
    /// Patch start → the slice shows the new readiness.
    pub slice: Latencies,
    /// Patch start → the Pod watch shows the new `Ready` condition.
    pub pod: Latencies,
    /// Pod watch shows the flip → a slice shows it, per flip: the
    /// controller's share (its watch, queue, sync, slice write) plus the
    /// slice's watch delivery.
    pub slice_after_pod: Latencies,
    pub last_slice_seen: Option<Instant>,
    /// Flips never seen in a slice (given up on).
    pub slice_missing: usize,
    pub pod_missing: usize,
}

#[derive(Default)]
pub struct Observer {
    state: Mutex<State>,
    /// Woken on every slice change that completes a flip.
    progress: Notify,
}

impl Observer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a handful of map operations; a panic halfway
        // leaves nothing the report cannot use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a flip of `pod` to `want_ready`, started at `started`.
    /// The receiver fires once a slice shows it.
    pub fn expect(&self, pod: &str, want_ready: bool, started: Instant) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.lock();
        s.slice_pending.insert(
            pod.to_string(),
            Pending {
                want_ready,
                started,
                done: Some(tx),
            },
        );
        s.pod_pending.insert(pod.to_string(), (want_ready, started));
        s.pod_seen.remove(pod);
        rx
    }

    /// Forgets a flip whose patch failed.
    pub fn cancel(&self, pod: &str) {
        let mut s = self.lock();
        s.slice_pending.remove(pod);
        s.pod_pending.remove(pod);
        s.pod_seen.remove(pod);
    }

    pub fn slice_pending(&self) -> usize {
        self.lock().slice_pending.len()
    }

    pub fn pod_pending(&self) -> usize {
        self.lock().pod_pending.len()
    }

    /// Waits for the next completed flip (or a spurious wake-up).
    pub async fn progressed(&self) {
        self.progress.notified().await;
    }

    /// Services whose slices list exactly `pods` endpoints, all ready.
    pub fn services_ready(&self, pods: usize) -> usize {
        let s = self.lock();
        s.slices
            .values()
            .filter(|slices| {
                let endpoints = slices.values().flatten();
                endpoints.clone().count() == pods && endpoints.clone().all(|(_, ready)| *ready)
            })
            .count()
    }

    /// (slice events, pod events, watch errors, first watch error).
    pub fn counters(&self) -> (u64, u64, u64, Option<String>) {
        let s = self.lock();
        (
            s.slice_events,
            s.pod_events,
            s.watch_errors,
            s.first_watch_error.clone(),
        )
    }

    /// Takes what was measured since the last call and forgets the flips
    /// still outstanding.
    pub fn take_phase(&self) -> Observed {
        let mut s = self.lock();
        let observed = Observed {
            slice: std::mem::take(&mut s.slice_latencies),
            pod: std::mem::take(&mut s.pod_latencies),
            slice_after_pod: std::mem::take(&mut s.slice_after_pod),
            last_slice_seen: s.last_slice_seen.take(),
            slice_missing: s.slice_pending.len(),
            pod_missing: s.pod_pending.len(),
        };
        s.slice_pending.clear();
        s.pod_pending.clear();
        s.pod_seen.clear();
        observed
    }

    fn watch_error(&self, what: &str, e: &watcher::Error) {
        let mut s = self.lock();
        s.watch_errors += 1;
        s.first_watch_error
            .get_or_insert_with(|| format!("{what} watch: {e}"));
    }

    fn slice_changed(&self, slice: &EndpointSlice, deleted: bool) {
        let now = Instant::now();
        let Some(name) = slice.metadata.name.clone() else {
            return;
        };
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
        else {
            return;
        };
        let mut s = self.lock();
        s.slice_events += 1;
        let slices = s.slices.entry(service.clone()).or_default();
        if deleted {
            slices.remove(&name);
        } else {
            let endpoints = slice
                .endpoints
                .iter()
                .filter_map(|e| {
                    let pod = e.target_ref.as_ref()?.name.clone()?;
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    Some((pod, ready))
                })
                .collect();
            slices.insert(name, endpoints);
        }
        let slices = &s.slices[service];
        let done: Vec<String> = s
            .slice_pending
            .iter()
            .filter(|(pod, _)| service_of(pod) == service)
            .filter(|(pod, pending)| {
                let ready = slices
                    .values()
                    .flatten()
                    .find(|(p, _)| p == *pod)
                    .is_some_and(|(_, ready)| *ready);
                ready == pending.want_ready
            })
            .map(|(pod, _)| pod.clone())
            .collect();
        if done.is_empty() {
            return;
        }
        for pod in done {
            if let Some(mut pending) = s.slice_pending.remove(&pod) {
                s.slice_latencies.record(now - pending.started);
                if let Some(pod_seen) = s.pod_seen.remove(&pod) {
                    s.slice_after_pod.record(now - pod_seen);
                }
                if let Some(done) = pending.done.take() {
                    let _ = done.send(());
                }
            }
        }
        s.last_slice_seen = Some(now);
        drop(s);
        self.progress.notify_waiters();
    }

    fn pod_changed(&self, pod: &Pod) {
        let now = Instant::now();
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let mut s = self.lock();
        s.pod_events += 1;
        if let Some(&(want, started)) = s.pod_pending.get(name)
            && want == ready
        {
            s.pod_pending.remove(name);
            s.pod_latencies.record(now - started);
            if s.slice_pending.contains_key(name) {
                s.pod_seen.insert(name.to_string(), now);
            }
        }
    }
}

/// Runs the EndpointSlice watch of `namespace` into `observer`. `listed`
/// fires once the first list is in, i.e. the watch is about to start.
pub async fn watch_slices(
    observer: Arc<Observer>,
    client: kube::Client,
    namespace: String,
    listed: oneshot::Sender<()>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let mut listed = Some(listed);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                observer.slice_changed(&s, false);
            }
            Ok(watcher::Event::Delete(s)) => observer.slice_changed(&s, true),
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Ok(watcher::Event::Init) => {}
            Err(e) => observer.watch_error("EndpointSlice", &e),
        }
    }
}

/// Runs the Pod watch of `namespace` into `observer`.
pub async fn watch_pods(
    observer: Arc<Observer>,
    client: kube::Client,
    namespace: String,
    listed: oneshot::Sender<()>,
) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let mut listed = Some(listed);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                observer.pod_changed(&p);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Ok(watcher::Event::Init | watcher::Event::Delete(_)) => {}
            Err(e) => observer.watch_error("Pod", &e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn slice(service: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        let endpoints: Vec<_> = endpoints
            .iter()
            .map(|(pod, ready)| {
                serde_json::json!({
                    "addresses": ["10.244.0.1"],
                    "conditions": {"ready": ready},
                    "targetRef": {"kind": "Pod", "name": pod},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": "b",
                         "labels": {LABEL_SERVICE_NAME: service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn a_flip_completes_when_its_slice_shows_the_new_readiness() {
        let o = Observer::default();
        o.slice_changed(&slice("s1", &[("s1-0", Some(true)), ("s1-1", None)]), false);
        assert_eq!(o.services_ready(2), 1);
        let mut done = o.expect("s1-0", false, Instant::now());
        // Another Service's slice, and this one unchanged: still pending.
        o.slice_changed(&slice("s2", &[("s2-0", Some(false))]), false);
        o.slice_changed(&slice("s1", &[("s1-0", Some(true))]), false);
        assert!(done.try_recv().is_err());
        o.slice_changed(
            &slice("s1", &[("s1-0", Some(false)), ("s1-1", None)]),
            false,
        );
        assert!(done.try_recv().is_ok());
        assert_eq!(o.services_ready(2), 0);
        let phase = o.take_phase();
        assert_eq!((phase.slice_missing, phase.pod_missing), (0, 1));
        assert_eq!(service_of("s12-3"), "s12");
    }

    #[test]
    fn the_controllers_share_starts_when_the_pod_watch_shows_the_flip() {
        let o = Observer::default();
        let _done = o.expect("s1-0", false, Instant::now());
        let pod = |ready: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s1-0"},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap()
        };
        o.pod_changed(&pod("True"));
        assert_eq!(o.pod_pending(), 1, "still the old readiness");
        o.pod_changed(&pod("False"));
        assert_eq!(o.pod_pending(), 0);
        o.slice_changed(&slice("s1", &[("s1-0", Some(false))]), false);
        let phase = o.take_phase();
        assert_eq!(phase.slice.summary().max, phase.slice.summary().p50);
        assert!(phase.slice_after_pod.summary().max <= phase.slice.summary().max);
        assert_eq!((phase.slice_missing, phase.pod_missing), (0, 0));
    }

    #[test]
    fn an_endpoint_gone_from_every_slice_counts_as_not_ready() {
        let o = Observer::default();
        let mut done = o.expect("s1-1", false, Instant::now());
        o.slice_changed(&slice("s1", &[("s1-0", Some(true))]), false);
        assert!(done.try_recv().is_ok());
    }
}
