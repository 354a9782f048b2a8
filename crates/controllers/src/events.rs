//! Events for users (`kubectl describe`, `kubectl get events`), written as
//! `core/v1` Events the way client-go's legacy recorder writes them:
//! repeats of the same event bump `count` and `lastTimestamp` on one
//! object instead of piling up new ones.
//!
//! kube-runtime's `Recorder` writes `events.k8s.io/v1`, which Ferry's API
//! server does not serve; `core/v1` Events work against both it and a real
//! kube-apiserver (which converts between the two).
//!
//! Recording never fails a controller: a failed write is logged and
//! dropped, as client-go does.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Kubernetes' two event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Identifies "the same event again" (client-go's aggregation key minus
/// the fields that are constant for one recorder).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    type_: EventType,
    reason: String,
    message: String,
}

#[derive(Debug, Clone)]
struct Recorded {
    namespace: String,
    name: String,
    count: i32,
}

/// Bounds the memory of the aggregation cache; forgetting only means the
/// next repeat creates a new Event.
const CACHE_LIMIT: usize = 4096;

/// Writes Events on behalf of one component (`source.component`).
pub struct Recorder {
    client: kube::Client,
    component: String,
    instance: String,
    recorded: Mutex<HashMap<EventKey, Recorded>>,
}

impl Recorder {
    /// `component` is what `kubectl describe` shows as the source, e.g.
    /// `default-scheduler` or `node-controller`.
    pub fn new(client: kube::Client, component: &str) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry".into()),
            recorded: Mutex::new(HashMap::new()),
        }
    }

    /// Records an event about `regarding`; failures are logged, not
    /// returned.
    pub async fn record(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.try_record(regarding, type_, reason, message).await {
            tracing::warn!(
                object = %describe(regarding),
                %reason,
                error = %e,
                "recording an event failed"
            );
        }
    }

    async fn try_record(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let key = EventKey {
            kind: regarding.kind.clone().unwrap_or_default(),
            namespace: regarding.namespace.clone().unwrap_or_default(),
            name: regarding.name.clone().unwrap_or_default(),
            uid: regarding.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let earlier = self.lock().get(&key).cloned();
        if let Some(earlier) = earlier {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &earlier.namespace);
            let count = earlier.count + 1;
            let patch = json!({"count": count, "lastTimestamp": Time(now)});
            match api
                .patch(
                    &earlier.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.remember(key, Recorded { count, ..earlier });
                    return Ok(());
                }
                // The Event expired or was deleted: start a new one.
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // Events about cluster-scoped objects live in `default`, as
        // client-go puts them.
        let namespace = regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or("object"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: regarding.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.remember(
            key,
            Recorded {
                namespace,
                name,
                count: 1,
            },
        );
        Ok(())
    }

    fn remember(&self, key: EventKey, recorded: Recorded) {
        let mut cache = self.lock();
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.insert(key, recorded);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventKey, Recorded>> {
        // A panic while holding the lock leaves only a cache behind.
        self.recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `ns/name` (or `name`) of a reference, for logs.
pub fn describe(r: &ObjectReference) -> String {
    match (r.namespace.as_deref(), r.name.as_deref()) {
        (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
        (_, Some(name)) => name.to_string(),
        _ => "<unnamed>".into(),
    }
}
