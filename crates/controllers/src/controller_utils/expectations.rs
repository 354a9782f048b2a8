//! Expectations: the creates and deletes a controller has made but not
//! yet seen in its cache, and the slow-start batching of creates.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unobserved create or delete blocks a controller before it
/// stops waiting (upstream: 5 minutes).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    /// Creates sent whose responses have not come back.
    in_flight: usize,
    /// Pods seen deleted while creates were in flight: a create that
    /// returns one of these names has nothing left to wait for.
    gone: HashSet<String>,
    since: Option<Instant>,
}

impl Pending {
    fn idle(&self) -> bool {
        self.creates.is_empty() && self.deletes.is_empty() && self.in_flight == 0
    }
}

/// Creates and deletes a controller made but has not yet seen in its
/// cache, by controller key and pod name (upstream's
/// `UIDTrackingControllerExpectations`). A controller whose expectations
/// are not met does not create or delete, so a stale cache never doubles
/// its pods.
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

/// Where a pod stands in the cache, for [`Expectations::satisfied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Present,
    Terminating,
    Absent,
}

impl Expectations {
    fn with<R>(&self, key: &str, f: impl FnOnce(&mut Pending) -> R) -> R {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(key.to_string()).or_default();
        let r = f(entry);
        if entry.idle() {
            map.remove(key);
        }
        r
    }

    /// `count` creates are about to be sent.
    pub fn creating(&self, key: &str, count: usize) {
        self.with(key, |p| {
            p.in_flight += count;
            p.since.get_or_insert_with(Instant::now);
        });
    }

    /// One create came back: `pod` is the name it got (None: it failed).
    pub fn created(&self, key: &str, pod: Option<&str>) {
        self.with(key, |p| {
            p.in_flight = p.in_flight.saturating_sub(1);
            if let Some(pod) = pod
                && !p.gone.remove(pod)
            {
                p.creates.insert(pod.to_string());
            }
            if p.in_flight == 0 {
                p.gone.clear();
            }
        });
    }

    pub fn expect_delete(&self, key: &str, pod: &str) {
        self.with(key, |p| {
            p.deletes.insert(pod.to_string());
            p.since.get_or_insert_with(Instant::now);
        });
    }

    /// A delete that did not happen.
    pub fn cancel_delete(&self, key: &str, pod: &str) {
        self.with(key, |p| {
            p.deletes.remove(pod);
        });
    }

    /// The cache saw the pod (`gone`: deleted, or now terminating).
    pub fn observe(&self, key: &str, pod: &str, gone: bool) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = map.get_mut(key) else {
            return;
        };
        let was_expected = p.creates.remove(pod);
        if gone {
            p.deletes.remove(pod);
            if !was_expected && p.in_flight > 0 {
                p.gone.insert(pod.to_string());
            }
        }
        if p.idle() {
            map.remove(key);
        }
    }

    /// Whether the controller may act. Expectations already visible in
    /// the cache (`cached`) count as met; after the TTL they are dropped.
    pub fn satisfied(&self, key: &str, cached: impl Fn(&str) -> Cached) -> bool {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = map.get_mut(key) else {
            return true;
        };
        p.creates.retain(|name| cached(name) == Cached::Absent);
        p.deletes.retain(|name| cached(name) == Cached::Present);
        if p.since.is_some_and(|s| s.elapsed() > EXPECTATIONS_TTL) {
            tracing::warn!(controller = %key, "expectations expired; resyncing");
            p.creates.clear();
            p.deletes.clear();
            p.in_flight = 0;
        }
        let met = p.idle();
        if met {
            map.remove(key);
        }
        met
    }

    /// The controller is gone.
    pub fn forget(&self, key: &str) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }
}

/// Runs `count` operations in batches of 1, 2, 4, ... (upstream's
/// `slowStartBatch`), so a template that fails to create does not produce
/// a burst of failing requests. Stops at the first batch with an error;
/// returns how many succeeded and the first error.
pub async fn slow_start_batch<T, E, F, Fut>(count: usize, mut op: F) -> (Vec<T>, Option<E>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut done = Vec::new();
    let mut batch = 1usize;
    let mut remaining = count;
    while remaining > 0 {
        let size = batch.min(remaining);
        let results = futures::future::join_all((0..size).map(|_| op())).await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(t) => done.push(t),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (done, first_error);
        }
        remaining -= size;
        batch *= 2;
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn expectations_block_until_observed() {
        let e = Expectations::default();
        e.creating("ns/rs", 1);
        e.created("ns/rs", Some("rs-a"));
        e.expect_delete("ns/rs", "rs-b");
        let b_present = |n: &str| {
            if n == "rs-b" {
                Cached::Present
            } else {
                Cached::Absent
            }
        };
        assert!(!e.satisfied("ns/rs", b_present));
        e.observe("ns/rs", "rs-a", false);
        assert!(!e.satisfied("ns/rs", b_present));
        e.observe("ns/rs", "rs-b", true);
        assert!(e.satisfied("ns/rs", |_| Cached::Absent));
        // A create already visible in the cache counts as observed.
        e.creating("ns/rs", 1);
        e.created("ns/rs", Some("rs-c"));
        assert!(e.satisfied("ns/rs", |_| Cached::Present));
        // A pod deleted before its create returned does not block.
        e.creating("ns/rs", 2);
        e.observe("ns/rs", "rs-d", true);
        e.created("ns/rs", Some("rs-d"));
        e.created("ns/rs", None);
        assert!(e.satisfied("ns/rs", |_| Cached::Absent));
        // Nothing is kept for idle controllers.
        e.observe("ns/other", "x", true);
        assert!(e.pending.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn slow_start_stops_at_first_failing_batch() {
        let mut n = 0;
        let (done, err) = slow_start_batch(10, || {
            n += 1;
            let i = n;
            async move { if i == 5 { Err("boom") } else { Ok(i) } }
        })
        .await;
        // Batches of 1, 2, then 4 (which holds the failure).
        assert_eq!(done.len(), 6);
        assert_eq!(err, Some("boom"));
        let (done, err) = slow_start_batch(3, || async { Ok::<_, ()>(()) }).await;
        assert_eq!((done.len(), err), (3, None));
    }
}
