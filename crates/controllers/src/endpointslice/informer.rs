//! Watch-fed caches for the endpoint controllers, like client-go's
//! informers: a kube-runtime `watcher` keeps a [`Store`] of (projected)
//! objects, and every change is handed to the controller with the old and
//! the new version, so it can queue exactly the Services it affects.
//!
//! The controllers also write what they wrote into the store
//! ([`Store::wrote`], [`Store::deleted`]), so the next sync of the same
//! Service sees its own writes at once instead of waiting for the watch
//! event (otherwise a quick second sync could create a slice twice).
//! A watch event older than the cached object (by resourceVersion) is
//! ignored for the same reason.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// An object a [`Store`] can hold.
pub trait Cached: Clone + PartialEq + Send + Sync + 'static {
    /// `namespace/name` (or `name` for cluster objects).
    fn key(&self) -> String;
    /// A secondary key to look objects up by (a namespace, a Service).
    fn index(&self) -> Option<String> {
        None
    }
    /// The numeric resourceVersion, when the object has one.
    fn revision(&self) -> Option<u64> {
        None
    }
    fn uid(&self) -> Option<&str> {
        None
    }
}

/// The usual key of a Kubernetes object.
pub fn object_key<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Implements [`Cached`] for whole API objects, with an index function.
macro_rules! cached_resource {
    ($kind:ty, $index:expr) => {
        impl $crate::endpointslice::informer::Cached for $kind {
            fn key(&self) -> String {
                $crate::endpointslice::informer::object_key(self)
            }
            fn index(&self) -> Option<String> {
                #[allow(clippy::redundant_closure_call)]
                ($index)(self)
            }
            fn revision(&self) -> Option<u64> {
                self.metadata.resource_version.as_deref()?.parse().ok()
            }
            fn uid(&self) -> Option<&str> {
                self.metadata.uid.as_deref()
            }
        }
    };
}
pub(crate) use cached_resource;

/// One object in the store.
struct Entry<T> {
    value: Arc<T>,
    /// Written by this controller and not yet confirmed by the watch.
    own: bool,
}

struct Inner<T> {
    objects: HashMap<String, Entry<T>>,
    by_index: HashMap<String, HashSet<String>>,
    /// UIDs this controller deleted whose delete event has not arrived:
    /// late events about them must not bring them back.
    deleted: HashMap<String, Instant>,
}

/// How long a deletion is remembered if its watch event never comes.
const TOMBSTONE_TTL: Duration = Duration::from_secs(300);

/// What changed: the old and new version (None: absent).
pub type Change<T> = (Option<Arc<T>>, Option<Arc<T>>);

/// A cache of objects by key, with one secondary index.
pub struct Store<T> {
    inner: RwLock<Inner<T>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<T: Cached> Default for Store<T> {
    fn default() -> Self {
        Store {
            inner: RwLock::new(Inner {
                objects: HashMap::new(),
                by_index: HashMap::new(),
                deleted: HashMap::new(),
            }),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl<T> Inner<T> {
    fn unindex(&mut self, index: Option<String>, key: &str) {
        if let Some(i) = index
            && let Some(keys) = self.by_index.get_mut(&i)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_index.remove(&i);
            }
        }
    }
}

impl<T: Cached> Store<T> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<T>> {
        // A panic elsewhere while holding the lock leaves the maps
        // consistent (every mutation is a single insert/remove pair).
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<T>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().objects.get(key).map(|e| e.value.clone())
    }

    /// The objects whose index is `index`.
    pub fn by_index(&self, index: &str) -> Vec<Arc<T>> {
        let inner = self.read();
        inner
            .by_index
            .get(index)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).map(|e| e.value.clone()))
            .collect()
    }

    /// Every object (for rare, whole-store scans).
    pub fn all(&self) -> Vec<Arc<T>> {
        self.read()
            .objects
            .values()
            .map(|e| e.value.clone())
            .collect()
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as the store, so this only returns
        // once synced.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Inserts or replaces, unless the cache already holds a newer
    /// version or this controller deleted the object. Returns the change,
    /// if there was one.
    fn upsert(&self, value: T, own: bool) -> Option<Change<T>> {
        let key = value.key();
        let mut inner = self.write();
        if let Some(uid) = value.uid()
            && inner.deleted.contains_key(uid)
        {
            return None;
        }
        if let Some(current) = inner.objects.get_mut(&key) {
            if let (Some(have), Some(new)) = (current.value.revision(), value.revision())
                && new <= have
            {
                if new == have {
                    current.own = false;
                }
                return None;
            }
            if *current.value == value {
                current.own = own;
                return None;
            }
        }
        let index = value.index();
        let value = Arc::new(value);
        let old = inner.objects.insert(
            key.clone(),
            Entry {
                value: value.clone(),
                own,
            },
        );
        let old_index = old.as_ref().and_then(|e| e.value.index());
        if old_index != index {
            inner.unindex(old_index, &key);
        }
        if let Some(i) = index {
            inner.by_index.entry(i).or_default().insert(key);
        }
        Some((old.map(|e| e.value), Some(value)))
    }

    fn remove(&self, key: &str, uid: Option<&str>) -> Option<Change<T>> {
        let mut inner = self.write();
        if let Some(uid) = uid {
            inner.deleted.remove(uid);
        }
        // A delete event for an object that has since been recreated
        // under the same name concerns the old one only.
        let current = inner.objects.get(key)?;
        if let (Some(uid), Some(have)) = (uid, current.value.uid())
            && uid != have
        {
            return None;
        }
        let old = inner.objects.remove(key)?;
        inner.unindex(old.value.index(), key);
        Some((Some(old.value), None))
    }

    /// Records an object this controller just wrote (the API server's
    /// answer).
    pub fn wrote(&self, value: T) {
        self.upsert(value, true);
    }

    /// Records an object this controller just deleted.
    pub fn deleted(&self, value: &T) {
        let key = value.key();
        let mut inner = self.write();
        let now = Instant::now();
        inner
            .deleted
            .retain(|_, at| now.duration_since(*at) < TOMBSTONE_TTL);
        if let Some(uid) = value.uid() {
            inner.deleted.insert(uid.to_string(), now);
        }
        if let Some(old) = inner.objects.remove(&key) {
            inner.unindex(old.value.index(), &key);
        }
    }

    /// Replaces the contents with a full list. Objects this controller
    /// wrote after the list was taken (newer than anything in it) stay.
    fn replace(&self, listed: Vec<T>) -> Vec<Change<T>> {
        let newest = listed.iter().filter_map(Cached::revision).max();
        let mut listed_keys = HashSet::new();
        let mut changes = Vec::new();
        for value in listed {
            listed_keys.insert(value.key());
            changes.extend(self.upsert(value, false));
        }
        let stale: Vec<(String, Option<String>)> = {
            let inner = self.read();
            inner
                .objects
                .iter()
                .filter(|(k, _)| !listed_keys.contains(*k))
                .filter(|(_, e)| {
                    !(e.own
                        && match (e.value.revision(), newest) {
                            (Some(mine), Some(newest)) => mine > newest,
                            (Some(_), None) => true,
                            _ => false,
                        })
                })
                .map(|(k, e)| (k.clone(), e.value.uid().map(str::to_string)))
                .collect()
        };
        for (key, uid) in stale {
            changes.extend(self.remove(&key, uid.as_deref()));
        }
        changes
    }
}

/// Runs a watcher into `store`, projecting each object with `project`
/// (None: skip it) and reporting every change to `on_change`. Watch
/// errors are logged and retried with backoff, so this only returns if the
/// watch stream itself ends.
pub async fn run<K, T, P, F>(
    api: Api<K>,
    config: watcher::Config,
    store: Arc<Store<T>>,
    project: P,
    mut on_change: F,
) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    T: Cached,
    P: Fn(K) -> Option<T>,
    F: FnMut(Change<T>),
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut relist: Option<Vec<T>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => relist = Some(Vec::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(v) = project(obj) {
                    relist.get_or_insert_with(Vec::new).push(v);
                }
            }
            watcher::Event::InitDone => {
                let listed = relist.take().unwrap_or_default();
                tracing::debug!(%kind, count = listed.len(), "listed");
                for change in store.replace(listed) {
                    on_change(change);
                }
                store.synced.send_replace(true);
            }
            watcher::Event::Apply(obj) => {
                if let Some(change) = project(obj).and_then(|v| store.upsert(v, false)) {
                    on_change(change);
                }
            }
            watcher::Event::Delete(obj) => {
                let key = object_key(&obj);
                let uid = obj.meta().uid.clone();
                if let Some(change) = store.remove(&key, uid.as_deref()) {
                    on_change(change);
                }
            }
        }
    }
    anyhow::bail!("the {kind} watch ended")
}

/// Drops what no controller reads (managedFields can be most of an
/// object's size).
pub fn slim<K: Resource>(mut obj: K) -> K {
    obj.meta_mut().managed_fields = None;
    obj
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    cached_resource!(ConfigMap, |c: &ConfigMap| c.metadata.namespace.clone());

    fn cm(name: &str, rv: u64, data: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                         "resourceVersion": rv.to_string()},
            "data": {"v": data}
        }))
        .unwrap()
    }

    #[test]
    fn older_events_never_overwrite_newer_writes() {
        let store: Store<ConfigMap> = Store::default();
        assert!(store.upsert(cm("a", 5, "x"), false).is_some());
        store.wrote(cm("a", 9, "mine"));
        assert!(store.upsert(cm("a", 7, "late"), false).is_none());
        assert_eq!(
            store.get("ns/a").unwrap().data.as_ref().unwrap()["v"],
            "mine"
        );
        // The watch event for our own write changes nothing.
        assert!(store.upsert(cm("a", 9, "mine"), false).is_none());
        assert_eq!(store.by_index("ns").len(), 1);
    }

    #[test]
    fn deleted_objects_stay_deleted() {
        let store: Store<ConfigMap> = Store::default();
        store.upsert(cm("a", 5, "x"), false);
        store.deleted(&cm("a", 5, "x"));
        assert!(store.get("ns/a").is_none());
        assert!(store.upsert(cm("a", 6, "late"), false).is_none());
        assert!(store.by_index("ns").is_empty());
        // The delete event clears the tombstone.
        assert!(store.remove("ns/a", Some("uid-a")).is_none());
        assert!(store.upsert(cm("a", 8, "again"), false).is_some());
    }

    #[test]
    fn relists_keep_own_newer_writes_and_drop_the_rest() {
        let store: Store<ConfigMap> = Store::default();
        store.upsert(cm("gone", 3, "x"), false);
        store.upsert(cm("kept", 4, "x"), false);
        store.wrote(cm("mine", 20, "x"));
        let changes = store.replace(vec![cm("kept", 4, "x"), cm("new", 10, "x")]);
        assert_eq!(changes.len(), 2, "gone removed, new added");
        assert!(store.get("ns/gone").is_none());
        assert!(store.get("ns/mine").is_some());
        assert!(store.get("ns/new").is_some());
    }
}
