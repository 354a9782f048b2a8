//! A work queue with client-go's workqueue semantics: an item queued
//! while it waits is queued once; an item queued while it is processed
//! runs again afterwards, never twice at once; failures retry with
//! exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

const BASE_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);

struct Inner<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

pub struct WorkQueue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, item: T) {
        let mut inner = self.lock();
        if !inner.dirty.insert(item.clone()) {
            return;
        }
        if inner.processing.contains(&item) {
            return;
        }
        inner.queue.push_back(item);
        drop(inner);
        self.notify.notify_one();
    }

    /// The next item; it is the caller's until [`WorkQueue::done`].
    pub async fn get(&self) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if let Some(item) = inner.queue.pop_front() {
                    inner.dirty.remove(&item);
                    inner.processing.insert(item.clone());
                    let more = !inner.queue.is_empty();
                    drop(inner);
                    if more {
                        // Let another worker take the rest.
                        self.notify.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// Processing finished; `ok: false` retries after a growing delay.
    pub fn done(self: &Arc<Self>, item: T, ok: bool) {
        let mut inner = self.lock();
        inner.processing.remove(&item);
        let requeue = inner.dirty.contains(&item);
        let delay = if ok {
            inner.failures.remove(&item);
            None
        } else {
            let n = inner.failures.entry(item.clone()).or_insert(0);
            *n = n.saturating_add(1);
            let factor = 2u32.saturating_pow((*n - 1).min(20));
            Some(BASE_DELAY.saturating_mul(factor).min(MAX_DELAY))
        };
        if requeue {
            inner.queue.push_back(item.clone());
            drop(inner);
            self.notify.notify_one();
        } else {
            drop(inner);
        }
        if let Some(delay) = delay {
            let queue = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                queue.add(item);
            });
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_never_runs_an_item_twice_at_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await;
        assert_eq!(a, "a");
        q.add("a"); // while processing: held back
        assert_eq!(q.get().await, "b");
        assert!(q.is_empty());
        q.done(a, true);
        assert_eq!(q.get().await, "a", "re-queued after done");
    }

    #[tokio::test]
    async fn failures_come_back_later() {
        let q = WorkQueue::new();
        q.add(1);
        let item = q.get().await;
        q.done(item, false);
        assert!(q.is_empty());
        let again = tokio::time::timeout(Duration::from_secs(30), q.get())
            .await
            .ok();
        assert_eq!(again, Some(1));
    }
}
