//! What the workload controllers (ReplicaSet, Deployment, DaemonSet) share,
//! after upstream's `pkg/controller/controller_utils.go`: owner references
//! and claiming, pod readiness and availability, the ranking of pods for
//! deletion, the pod-template hash, creation expectations, and the
//! plumbing that turns reflector streams into reconcile requests.

mod expectations;
mod hash;
mod pods;

pub use expectations::{Cached, Expectations, slow_start_batch};
pub use hash::{Fnv32a, safe_encode, scaled_value, template_hash};
pub use pods::{
    available_in, is_pod_active, is_pod_available, is_pod_ready, rank_for_deletion, ready_since,
};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as KubeLabelSelector, ObjectMeta, OwnerReference,
};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Map, Value};

use ferry_api::selector::LabelSelector;

/// How a reconcile failed, and on what object.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{object}: {what}: {source}")]
    Api {
        object: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: {what}")]
    Invalid { object: String, what: String },
}

impl SyncError {
    pub fn api(object: impl Into<String>, what: impl Into<String>, source: kube::Error) -> Self {
        SyncError::Api {
            object: object.into(),
            what: what.into(),
            source,
        }
    }

    /// Lost an optimistic-concurrency race, or the object went away
    /// meanwhile: the cache was stale.
    pub fn is_stale(&self) -> bool {
        match self {
            SyncError::Api {
                source: kube::Error::Api(s),
                ..
            } => s.is_conflict() || s.is_not_found(),
            _ => false,
        }
    }
}

/// Per-object retry delays, as client-go's rate-limited work queue: a
/// lost race or a vanished object retries soon (the watch is about to
/// deliver the news); other failures back off exponentially, so a broken
/// object costs little, until a sync succeeds.
#[derive(Default)]
pub struct Backoff {
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(300);

    /// The error policy: how long until `key` is retried.
    pub fn retry_after(&self, key: &str, error: &SyncError) -> Action {
        if error.is_stale() {
            tracing::debug!(%error, "stale cache; retrying");
            return Action::requeue(Self::BASE);
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let delay = Self::BASE
            .saturating_mul(2u32.saturating_pow((*n).min(20)))
            .min(Self::MAX);
        tracing::warn!(%error, retry_in = ?delay, "sync failed; retrying");
        Action::requeue(delay)
    }

    /// A sync of `key` succeeded.
    pub fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists())
}

/// `namespace/name`, for logs and keys.
pub fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

// ----- owner references -------------------------------------------------

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The owner reference a controller puts on what it creates or adopts.
pub fn controller_reference(
    api_version: &str,
    kind: &str,
    name: &str,
    uid: &str,
) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether an owner reference names this group and kind (any version).
pub fn refers_to(reference: &OwnerReference, group: &str, kind: &str) -> bool {
    let ref_group = reference
        .api_version
        .split_once('/')
        .map_or("", |(group, _)| group);
    ref_group == group && reference.kind == kind
}

/// What a controller does with an object its selector may cover, as
/// upstream's `ClaimObject` decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Already ours and still selected.
    Owned,
    /// An orphan we select: take it.
    Adopt,
    /// Ours but no longer selected: let it go.
    Release,
    /// Someone else's, or not ours and not selected.
    Ignore,
}

/// `owner_deleting`: a controller being deleted neither adopts nor releases.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: &LabelSelector,
    meta: &ObjectMeta,
) -> Claim {
    let selected = selector.matches(&labels_json(meta.labels.as_ref()));
    match controller_of(meta) {
        Some(r) if r.uid == owner_uid => {
            if selected || owner_deleting {
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None => {
            if selected && !owner_deleting && meta.deletion_timestamp.is_none() {
                Claim::Adopt
            } else {
                Claim::Ignore
            }
        }
    }
}

/// The ownerReferences an object has once `reference` is added (replacing
/// any with the same uid).
pub fn with_owner(meta: &ObjectMeta, reference: OwnerReference) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != reference.uid)
        .cloned()
        .collect();
    refs.push(reference);
    refs
}

/// The ownerReferences an object has once those with `uid` are gone.
pub fn without_owner(meta: &ObjectMeta, uid: &str) -> Vec<OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != uid)
        .cloned()
        .collect()
}

/// A merge patch setting ownerReferences, guarded by the resourceVersion
/// the decision was made on.
pub fn owner_references_patch(meta: &ObjectMeta, refs: &[OwnerReference]) -> Value {
    let refs = if refs.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(refs).unwrap_or(Value::Null)
    };
    serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": meta.resource_version,
    }})
}

// ----- labels and selectors -----------------------------------------------

pub fn labels_json(labels: Option<&BTreeMap<String, String>>) -> Map<String, Value> {
    labels
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// A workload's `spec.selector` as a matcher. A missing or empty selector
/// is refused: apps/v1 requires one, and an empty one would claim every
/// pod of the namespace.
pub fn workload_selector(selector: Option<&KubeLabelSelector>) -> Result<LabelSelector, String> {
    let Some(selector) = selector else {
        return Err("spec.selector is missing".into());
    };
    let json = serde_json::to_value(selector).map_err(|e| e.to_string())?;
    let parsed = LabelSelector::from_label_selector_json(&json)
        .map_err(|e| format!("invalid spec.selector: {e}"))?;
    if parsed.is_empty() {
        return Err("spec.selector is empty; a non-empty selector is required".into());
    }
    Ok(parsed)
}

/// Checks that pods made from `template` would be selected by `selector`
/// (kube-apiserver's validation; without it a controller creates pods
/// forever).
pub fn check_template_selected(
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
) -> Result<(), String> {
    let labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    if selector.matches(&labels_json(labels)) {
        Ok(())
    } else {
        Err("spec.selector does not match the template's labels".into())
    }
}

// ----- triggers ----------------------------------------------------------------

/// Turns a reflector's events into reconcile requests via `map`. Watch
/// errors are logged (the watcher's backoff retries them), so the request
/// stream never fails.
pub fn triggers<K, R, F>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    what: &'static str,
    mut map: F,
) -> impl Stream<Item = Result<ObjectRef<R>, Infallible>> + Send + 'static
where
    K: Send + 'static,
    R: kube::Resource<DynamicType = ()> + 'static,
    F: FnMut(&K, bool) -> Vec<ObjectRef<R>> + Send + 'static,
{
    events
        .filter_map(move |event| {
            let refs = match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => map(&obj, false),
                Ok(watcher::Event::Delete(obj)) => map(&obj, true),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => Vec::new(),
                Err(error) => {
                    tracing::warn!(%error, what, "watch failed; retrying");
                    Vec::new()
                }
            };
            std::future::ready(if refs.is_empty() { None } else { Some(refs) })
        })
        .flat_map(|refs| futures::stream::iter(refs.into_iter().map(Ok)))
}

/// The controllers (of `kind` in group apps) a Pod event concerns: its
/// controller, or for an orphan every one whose selector might adopt it.
/// Also feeds the creation/deletion expectations of the controller.
pub fn controllers_for_pod<K>(
    kind: &str,
    expectations: &Expectations,
    owners: &kube::runtime::reflector::Store<K>,
    selector_of: impl Fn(&K) -> Option<&KubeLabelSelector>,
    pod: &k8s_openapi::api::core::v1::Pod,
    deleted: bool,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = pod.metadata.namespace.as_deref();
    let gone = deleted || pod.metadata.deletion_timestamp.is_some();
    if let Some(owner) = controller_of(&pod.metadata) {
        if !refers_to(owner, "apps", kind) {
            return Vec::new();
        }
        let key = format!("{}/{}", namespace.unwrap_or(""), owner.name);
        let name = pod.metadata.name.as_deref().unwrap_or("");
        expectations.observe(&key, name, gone);
        return vec![request(namespace, &owner.name)];
    }
    if gone {
        return Vec::new();
    }
    let labels = labels_json(pod.metadata.labels.as_ref());
    owners
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == namespace)
        .filter(|o| {
            selector_of(o)
                .and_then(|s| workload_selector(Some(s)).ok())
                .is_some_and(|selector| selector.matches(&labels))
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// A request to reconcile the object `namespace/name` of kind `R`.
pub fn request<R>(namespace: Option<&str>, name: &str) -> ObjectRef<R>
where
    R: kube::Resource<DynamicType = ()>,
{
    let r = ObjectRef::new(name);
    match namespace {
        Some(ns) => r.within(ns),
        None => r,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn claiming() {
        let sel = LabelSelector::parse("app=web").unwrap();
        let meta = |labels: Value, owner: Option<&str>| -> ObjectMeta {
            let refs = owner.map(|u| {
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "x", "uid": u, "controller": true}])
            });
            serde_json::from_value(json!({"labels": labels, "ownerReferences": refs})).unwrap()
        };
        assert_eq!(
            claim("u1", false, &sel, &meta(json!({"app": "web"}), Some("u1"))),
            Claim::Owned
        );
        assert_eq!(
            claim("u1", false, &sel, &meta(json!({"app": "db"}), Some("u1"))),
            Claim::Release
        );
        assert_eq!(
            claim("u1", true, &sel, &meta(json!({"app": "db"}), Some("u1"))),
            Claim::Owned
        );
        assert_eq!(
            claim("u1", false, &sel, &meta(json!({"app": "web"}), None)),
            Claim::Adopt
        );
        assert_eq!(
            claim("u1", true, &sel, &meta(json!({"app": "web"}), None)),
            Claim::Ignore
        );
        assert_eq!(
            claim("u1", false, &sel, &meta(json!({"app": "web"}), Some("u2"))),
            Claim::Ignore
        );
    }

    #[test]
    fn selectors_must_select_something() {
        assert!(workload_selector(None).is_err());
        let empty: KubeLabelSelector = serde_json::from_value(json!({})).unwrap();
        assert!(workload_selector(Some(&empty)).is_err());
        let ok: KubeLabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap();
        let sel = workload_selector(Some(&ok)).unwrap();
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "db"}}})).unwrap();
        assert!(check_template_selected(&sel, Some(&t)).is_err());
    }
}
