//! The watchers: each has its own `kube::Client` and one watch on the pods
//! of the benchmark namespace, opened from a known resourceVersion before
//! any pod is created. For every ADDED event it records
//! (time received, after decoding) − (send time stamped by the creating
//! client in the pod's annotation). Both clocks are this host's.
//!
//! A watch that ends early (timeout, server closing a lagging watcher) is
//! re-opened from the last resourceVersion seen, and counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{WatchEvent, WatchParams};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::load::{SENT_ANNOTATION, SHARD_LABEL, unix_nanos};
use crate::stats::Latencies;

/// How watch events are decoded on the client.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Decode {
    /// Every event decoded into a full typed `Pod`, as `Api::<Pod>::watch`
    /// does (same request, same `Client::request_events`).
    Pod,
    /// The same request through `Client::request_events`, decoded into a
    /// struct with only `metadata.name`, `resourceVersion` and
    /// `annotations` (serde skips the rest of the JSON).
    Meta,
}

/// Which pods each watcher watches.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Scope {
    /// Every watcher watches every pod in the namespace.
    All,
    /// Watcher `j` watches `bench.ferry.dev/shard=j` (a label selector,
    /// filtered by the server), so the events are split between watchers.
    Shard,
}

pub struct WatcherConfig {
    pub namespace: String,
    pub start_revision: String,
    pub decode: Decode,
    pub scope: Scope,
    pub index: usize,
    /// ADDED events after which this watcher is done.
    pub expected: usize,
}

#[derive(Default)]
pub struct WatcherResult {
    pub received: usize,
    pub expected: usize,
    /// Watches re-opened after ending early.
    pub rewatches: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Events without a readable send-time annotation.
    pub unstamped: usize,
    pub latencies: Latencies,
    /// When the last ADDED event arrived.
    pub last_event: Option<Instant>,
}

/// Metadata-only decoding target for [`Decode::Meta`].
#[derive(Clone, Deserialize)]
struct PodStamp {
    metadata: StampMeta,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StampMeta {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What a watcher needs from an object.
trait Stamped {
    fn resource_version(&self) -> Option<&str>;
    fn sent_unix_nanos(&self) -> Option<u64>;
}

impl Stamped for Pod {
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
    fn sent_unix_nanos(&self) -> Option<u64> {
        self.metadata
            .annotations
            .as_ref()?
            .get(SENT_ANNOTATION)?
            .parse()
            .ok()
    }
}

impl Stamped for PodStamp {
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
    fn sent_unix_nanos(&self) -> Option<u64> {
        self.metadata.annotations.get(SENT_ANNOTATION)?.parse().ok()
    }
}

/// Runs one watcher until it has `expected` ADDED events or `stop` fires.
/// `ready` gets a message once the first watch request is answered, i.e.
/// once the server has subscribed it.
pub async fn run(
    client: kube::Client,
    config: WatcherConfig,
    ready: mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
) -> WatcherResult {
    match config.decode {
        Decode::Pod => run_typed::<Pod>(client, config, ready, stop).await,
        Decode::Meta => run_typed::<PodStamp>(client, config, ready, stop).await,
    }
}

async fn run_typed<T>(
    client: kube::Client,
    config: WatcherConfig,
    ready: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> WatcherResult
where
    T: Stamped + Clone + DeserializeOwned + Send + 'static,
{
    let mut out = WatcherResult {
        expected: config.expected,
        latencies: Latencies::with_capacity(config.expected),
        ..WatcherResult::default()
    };
    let mut params = WatchParams::default().timeout(290);
    if config.scope == Scope::Shard {
        params = params.labels(&format!("{SHARD_LABEL}={}", config.index));
    }
    let mut revision = config.start_revision.clone();
    let mut ready = Some(ready);
    let mut opened = 0usize;
    while out.received < out.expected && !*stop.borrow() {
        let stream = match open::<T>(&client, &config, &params, &revision).await {
            Ok(s) => s,
            Err(e) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("opening: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        opened += 1;
        if opened > 1 {
            out.rewatches += 1;
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(()).await;
        }
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = stop.changed() => return out,
            };
            let Some(event) = event else { break };
            match event {
                Ok(WatchEvent::Added(obj)) => {
                    let now = unix_nanos();
                    match obj.sent_unix_nanos() {
                        Some(sent) => out.latencies.record_micros(now.saturating_sub(sent) / 1000),
                        None => out.unstamped += 1,
                    }
                    if let Some(rv) = obj.resource_version() {
                        revision = rv.to_string();
                    }
                    out.received += 1;
                    out.last_event = Some(Instant::now());
                    if out.received >= out.expected {
                        return out;
                    }
                }
                Ok(WatchEvent::Modified(obj) | WatchEvent::Deleted(obj)) => {
                    if let Some(rv) = obj.resource_version() {
                        revision = rv.to_string();
                    }
                }
                Ok(WatchEvent::Bookmark(b)) => revision = b.metadata.resource_version,
                Ok(WatchEvent::Error(status)) => {
                    out.errors += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("watch error event: {status:?}"));
                    // 410 Gone cannot be resumed: the measurement is lost.
                    if status.code == 410 {
                        return out;
                    }
                    break;
                }
                Err(e) => {
                    out.errors += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("stream: {e}"));
                    break;
                }
            }
        }
    }
    out
}

async fn open<T>(
    client: &kube::Client,
    config: &WatcherConfig,
    params: &WatchParams,
    revision: &str,
) -> kube::Result<futures::stream::BoxStream<'static, kube::Result<WatchEvent<T>>>>
where
    T: Clone + DeserializeOwned + Send + 'static,
{
    // Both decodings send the request `Api::<Pod>::watch` sends; only the
    // target type of the JSON decoding differs.
    let url = format!("/api/v1/namespaces/{}/pods", config.namespace);
    let mut request = kube::core::Request::new(url)
        .watch(params, revision)
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("watch");
    let stream = client.request_events::<T>(request).await?;
    Ok(stream.boxed())
}
