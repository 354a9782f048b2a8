//! A work queue of object keys with client-go's guarantees: a key waiting
//! twice is processed once, a key is never processed by two workers at
//! the same time (a change during processing queues it again for after),
//! and failures are retried with exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// First retry delay; it doubles with every failure in a row.
const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// After this many failures in a row a key is dropped until its next
/// change (upstream's maxRetries).
pub const MAX_RETRIES: u32 = 15;

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: String) {
        let mut s = self.lock();
        if !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: String, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// The next key to process; call [`WorkQueue::done`] after.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        // Let another idle worker pick up the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// The key succeeded: reset its backoff.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The key failed: retry it after a growing delay. Returns false
    /// (and forgets the key) once it has failed [`MAX_RETRIES`] times.
    pub fn retry(self: &Arc<Self>, key: &str) -> bool {
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        if failures > MAX_RETRIES {
            self.forget(key);
            return false;
        }
        let delay = BASE_DELAY
            .saturating_mul(1 << (failures - 1).min(20))
            .min(MAX_DELAY);
        self.add_after(key.to_string(), delay);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_never_processed_twice_at_once() {
        let q = WorkQueue::default();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
        let a = q.next().await;
        assert_eq!(a, "a");
        // A change while "a" is processed waits for it to finish.
        q.add("a".into());
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "b");
        q.done("b");
        assert_eq!(q.len(), 0);
        q.done("a");
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test]
    async fn failures_retry_then_give_up() {
        let q = Arc::new(WorkQueue::default());
        q.add("a".into());
        let k = q.next().await;
        q.done(&k);
        assert!(q.retry(&k));
        // The first retry comes back after a few milliseconds.
        assert_eq!(q.next().await, "a");
        q.done("a");
        for _ in 1..MAX_RETRIES {
            assert!(q.retry("a"));
        }
        assert!(!q.retry("a"), "gives up after {MAX_RETRIES} failures");
        // A success resets the count.
        q.forget("a");
        assert!(q.retry("a"));
    }
}
