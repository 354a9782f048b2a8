//! The measured phases: flipping the `Ready` condition of single Pods.
//!
//! * [`sequential`]: one flip at a time, of a random Pod; the next starts
//!   once a slice shows the previous one. This is the latency figure.
//! * [`burst`]: `count` flips of distinct random Pods from `concurrency`
//!   writers (one client each), each writer sending its next patch as soon
//!   as the previous one is answered, without waiting for the slices. This
//!   is the behaviour under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use crate::observe::{Observed, Observer};
use crate::setup::{Shape, ready_patch};
use crate::stats::Latencies;

/// A small deterministic generator (splitmix64), so runs pick the same
/// Pods for the same seed without another dependency.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for n far below 2^64.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What one phase measured.
pub struct FlipPhase {
    pub requested: usize,
    pub patch_errors: usize,
    pub first_error: Option<String>,
    /// Round trip of each `patch_status` alone.
    pub patch: Latencies,
    pub observed: Observed,
    /// First patch start → last flip seen in a slice (or phase end).
    pub elapsed: Duration,
}

impl FlipPhase {
    pub fn completed(&self) -> usize {
        self.requested - self.patch_errors - self.observed.slice_missing
    }

    pub fn flips_per_second(&self) -> f64 {
        self.completed() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One flip's patch: `pods/status`, strategic merge of the Ready
/// condition.
async fn patch(api: &Api<Pod>, pod: &str, ready: bool) -> kube::Result<()> {
    api.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Strategic(ready_patch(ready)),
    )
    .await
    .map(drop)
}

/// One flip at a time; each waits at most `timeout` for its slice.
/// `ready` holds every Pod's current readiness and is kept up to date.
pub async fn sequential(
    client: &kube::Client,
    shape: &Shape,
    observer: &Observer,
    ready: &mut [bool],
    count: usize,
    random: &mut Random,
    timeout: Duration,
) -> FlipPhase {
    let api: Api<Pod> = Api::namespaced(client.clone(), &shape.namespace);
    let mut out = FlipPhase {
        requested: count,
        patch_errors: 0,
        first_error: None,
        patch: Latencies::with_capacity(count),
        observed: observer.take_phase(),
        elapsed: Duration::ZERO,
    };
    let started = Instant::now();
    for _ in 0..count {
        let k = random.below(ready.len());
        let (pod, want) = (shape.pod_name(k), !ready[k]);
        let t = Instant::now();
        let seen = observer.expect(&pod, want, t);
        match patch(&api, &pod, want).await {
            Ok(()) => {
                out.patch.record(t.elapsed());
                ready[k] = want;
                // A timeout leaves the flip pending: take_phase counts it.
                let _ = tokio::time::timeout(timeout, seen).await;
            }
            Err(e) => {
                observer.cancel(&pod);
                out.patch_errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("patching {pod}: {e}"));
            }
        }
    }
    finish(out, observer, started).await
}

/// `count` flips of distinct Pods from one task per client.
pub async fn burst(
    clients: &[kube::Client],
    shape: &Shape,
    observer: &Arc<Observer>,
    ready: &mut [bool],
    count: usize,
    random: &mut Random,
    timeout: Duration,
) -> FlipPhase {
    // Distinct Pods: the first `count` of a partial Fisher-Yates shuffle.
    let count = count.min(ready.len());
    let mut order: Vec<usize> = (0..ready.len()).collect();
    for i in 0..count {
        let j = i + random.below(order.len() - i);
        order.swap(i, j);
    }
    order.truncate(count);
    let flips: Arc<Vec<(usize, String, bool)>> = Arc::new(
        order
            .into_iter()
            .map(|k| (k, shape.pod_name(k), !ready[k]))
            .collect(),
    );
    let mut out = FlipPhase {
        requested: count,
        patch_errors: 0,
        first_error: None,
        patch: Latencies::with_capacity(count),
        observed: observer.take_phase(),
        elapsed: Duration::ZERO,
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &shape.namespace);
            let (next, flips, observer) = (next.clone(), flips.clone(), observer.clone());
            tokio::spawn(async move {
                let mut patch_times = Latencies::default();
                let mut done = Vec::new();
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((k, pod, want)) = flips.get(i) else {
                        return (patch_times, done, errors);
                    };
                    let t = Instant::now();
                    drop(observer.expect(pod, *want, t));
                    match patch(&api, pod, *want).await {
                        Ok(()) => {
                            patch_times.record(t.elapsed());
                            done.push(*k);
                        }
                        Err(e) => {
                            observer.cancel(pod);
                            errors.push(format!("patching {pod}: {e}"));
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok((patch_times, done, errors)) => {
                out.patch.merge(patch_times);
                for k in done {
                    ready[k] = !ready[k];
                }
                out.patch_errors += errors.len();
                out.first_error = out.first_error.or(errors.into_iter().next());
            }
            Err(e) => {
                out.first_error
                    .get_or_insert_with(|| format!("flip task: {e}"));
            }
        }
    }
    // Then wait for the slices to catch up.
    let deadline = tokio::time::Instant::now() + timeout;
    while observer.slice_pending() > 0 {
        let progressed = observer.progressed();
        if tokio::time::timeout_at(deadline, progressed).await.is_err() {
            break;
        }
    }
    finish(out, observer, started).await
}

/// Gives the Pod watch a moment to report the last flips (it normally runs
/// ahead of the slices), then collects the phase.
async fn finish(mut out: FlipPhase, observer: &Observer, started: Instant) -> FlipPhase {
    let wait_until = Instant::now() + Duration::from_secs(2);
    while observer.pod_pending() > 0 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.observed = observer.take_phase();
    out.elapsed = out
        .observed
        .last_slice_seen
        .unwrap_or_else(Instant::now)
        .duration_since(started);
    out
}
