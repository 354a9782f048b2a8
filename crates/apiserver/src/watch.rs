//! Watch: a chunked stream of `{"type":...,"object":...}` lines fed from the
//! store's event log, filtered by collection and selectors, with bookmarks,
//! timeouts and the `410 Gone` of a compacted start.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ferry_api::resources::ResourceType;
use ferry_store::{EventType, StoreError, WatchEvent};
use http_body_util::StreamBody;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::fields;
use crate::http::Body;
use crate::registry::{Filters, Registry, collection_prefix};
use crate::status::ApiError;
use crate::tables::{self, IncludeObject};

pub struct WatchParams {
    pub resource_version: Option<String>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub filters: Filters,
    /// Rows as Tables (`kubectl get -w`), with this include mode.
    pub table: Option<IncludeObject>,
    /// The version the client watches in (objects are converted to it).
    pub view: &'static ResourceType,
}

/// How often an idle watch gets a bookmark.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// Starts a watch; the returned body streams its events.
pub fn start(
    registry: Arc<Registry>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    params: WatchParams,
) -> Result<Body, ApiError> {
    let prefix = collection_prefix(rt, namespace.as_deref());
    let start_revision = match params.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut stream = EventWriter {
        rt,
        prefix,
        params,
        tx,
        last_revision: 0,
    };
    // Subscribe synchronously, so events after the request are never lost.
    let subscription = match start_revision {
        None => {
            let (revision, items, watch) = registry.store.snapshot_and_watch(&stream.prefix);
            Ok((revision, Some(items), watch))
        }
        Some(rev) => registry.store.watch(rev).map(|w| (rev, None, w)),
    };
    tokio::spawn(async move {
        match subscription {
            Err(e) => {
                let status = match e {
                    StoreError::Compacted { .. } => ApiError::expired(e.to_string()),
                    other => ApiError::internal(other.to_string()),
                };
                let _ = stream.send_raw("ERROR", &status.to_status()).await;
            }
            Ok((revision, initial, watch)) => {
                let _ = stream.run(revision, initial, watch).await;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Frame::data(chunk)), rx))
    });
    Ok(http_body_util::BodyExt::boxed(StreamBody::new(body)))
}

struct EventWriter {
    rt: &'static ResourceType,
    prefix: String,
    params: WatchParams,
    tx: mpsc::Sender<Bytes>,
    last_revision: u64,
}

/// The client went away.
struct Gone;

impl EventWriter {
    async fn run(
        &mut self,
        revision: u64,
        initial: Option<Vec<(String, ferry_store::Stored)>>,
        watch: ferry_store::Watch,
    ) -> Result<(), Gone> {
        self.last_revision = revision;
        if let Some(items) = initial {
            for (_, stored) in items {
                if self.params.filters.matches_bytes(self.rt, &stored.data) {
                    self.send_object("ADDED", &stored.data).await?;
                }
            }
            if self.params.send_initial_events && self.params.bookmarks {
                self.send_bookmark(true).await?;
            }
        }
        for event in watch.backlog {
            self.handle(&event).await?;
        }
        let mut live = watch.live;
        let deadline = tokio::time::sleep(self.params.timeout);
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmark.tick().await;
        loop {
            tokio::select! {
                event = live.recv() => match event {
                    Ok(event) => self.handle(&event).await?,
                    // A watcher too slow for the event rate is closed, as
                    // kube-apiserver does; the client re-watches from its
                    // last resourceVersion.
                    Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = bookmark.tick() => {
                    if self.params.bookmarks {
                        self.send_bookmark(false).await?;
                    }
                }
                _ = &mut deadline => {
                    if self.params.bookmarks {
                        self.send_bookmark(false).await?;
                    }
                    return Ok(());
                }
                _ = self.tx.closed() => return Err(Gone),
            }
        }
    }

    async fn handle(&mut self, event: &Arc<WatchEvent>) -> Result<(), Gone> {
        if event.revision <= self.last_revision {
            return Ok(());
        }
        self.last_revision = event.revision;
        if !event.key.starts_with(&self.prefix) {
            return Ok(());
        }
        let Some(event_type) = self.classify(event) else {
            return Ok(());
        };
        self.send_object(event_type, &event.object).await
    }

    /// The event type this watcher sees, given its selectors: an object
    /// that starts matching is ADDED, one that stops matching DELETED.
    fn classify(&self, event: &WatchEvent) -> Option<&'static str> {
        let filters = &self.params.filters;
        if filters.is_empty() {
            return Some(event.event_type.as_str());
        }
        // The first filtered watch parses the object; the others reuse it.
        let (now_sel, before_sel) = event.selectable.get_or_init(|| {
            let extract = |data: &[u8]| {
                serde_json::from_slice::<Value>(data)
                    .map(|v| fields::selectable(self.rt, &v))
                    .unwrap_or_default()
            };
            (
                extract(&event.object),
                event.previous.as_deref().map(extract),
            )
        });
        let now = filters.matches_selectable(now_sel);
        match event.event_type {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = before_sel
                    .as_ref()
                    .map_or(now, |p| filters.matches_selectable(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }

    async fn send_object(&mut self, event_type: &str, object: &Bytes) -> Result<(), Gone> {
        if let Some(include) = self.params.table {
            let obj: Value = serde_json::from_slice(object).unwrap_or(Value::Null);
            let table = tables::table(self.rt, std::slice::from_ref(&obj), include, json!({}));
            return self.send_raw(event_type, &table).await;
        }
        let converted;
        let object = if self.params.view.is_legacy_version() {
            match crate::versions::bytes_from_storage(self.params.view, object.clone()) {
                Ok(c) => {
                    converted = c;
                    &converted
                }
                Err(e) => return self.send_raw("ERROR", &e.to_status()).await,
            }
        } else {
            object
        };
        let mut line = BytesMut::with_capacity(object.len() + 40);
        line.put_slice(b"{\"type\":\"");
        line.put_slice(event_type.as_bytes());
        line.put_slice(b"\",\"object\":");
        line.put_slice(object);
        line.put_slice(b"}\n");
        self.tx.send(line.freeze()).await.map_err(|_| Gone)
    }

    async fn send_raw(&mut self, event_type: &str, object: &Value) -> Result<(), Gone> {
        let mut line =
            serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.map_err(|_| Gone)
    }

    async fn send_bookmark(&mut self, initial_events_end: bool) -> Result<(), Gone> {
        let mut metadata = json!({"resourceVersion": self.last_revision.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.rt.kind,
            "apiVersion": self.params.view.api_version(),
            "metadata": metadata,
        });
        self.send_raw("BOOKMARK", &object).await
    }
}
