//! Durable object store behind Ferry's API server.
//!
//! Objects are JSON documents kept under string keys (`pods/default/web-1`).
//! One global revision counts every write; it is the `resourceVersion` the API
//! exposes. All writes go through a single writer thread that batches whatever
//! is queued into one redb transaction ("group commit"): concurrent writers
//! share one fsync, and no response is sent before its batch is durable.
//!
//! Reads are served from an in-memory copy of the committed state, so they
//! never wait on the disk. Every committed change is also appended to a watch
//! event log (kept in redb and in memory) that watches replay from; the log is
//! compacted to a bounded length, and a watch from before the compacted
//! revision is refused with [`StoreError::Compacted`] (the API's `410 Gone`).

mod codec;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::{broadcast, oneshot};

pub use writer::Op;

/// What happened to an object, as reported to watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub revision: u64,
    pub event_type: EventType,
    pub key: Arc<str>,
    /// The object after the change (for deletes, its last state with the
    /// deletion's resourceVersion).
    pub object: Bytes,
    /// The object before the change, so filtered watches can tell when an
    /// object starts or stops matching.
    pub previous: Option<Bytes>,
    /// What selectors look at in `object` and `previous`, worked out by
    /// the first filtered watch that needs it and shared by all others, so
    /// N filtered watches parse each object once, not N times.
    pub selectable: OnceLock<(Selectable, Option<Selectable>)>,
}

/// The parts of an object that label and field selectors match on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectable {
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// Field path (`spec.nodeName`) and value.
    pub fields: Vec<(String, String)>,
}

impl WatchEvent {
    pub fn new(
        revision: u64,
        event_type: EventType,
        key: Arc<str>,
        object: Bytes,
        previous: Option<Bytes>,
    ) -> WatchEvent {
        WatchEvent {
            revision,
            event_type,
            key,
            object,
            previous,
            selectable: OnceLock::new(),
        }
    }
}

/// A stored object and the revision of its last change.
#[derive(Debug, Clone)]
pub struct Stored {
    pub revision: u64,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("object {0} already exists")]
    AlreadyExists(String),
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object {key} has resourceVersion {current}, not {expected}")]
    Conflict {
        key: String,
        expected: u64,
        current: u64,
    },
    #[error("too old resource version: {requested} ({compacted})")]
    Compacted { requested: u64, compacted: u64 },
    #[error("object is not a JSON object with metadata")]
    NotAnObject,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("store is shutting down")]
    Closed,
}

/// Tuning knobs; the defaults suit the lab.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How many recent events watches can replay from.
    pub watch_history: usize,
    /// redb page cache; reads come from memory, so this stays small.
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            watch_history: 10_000,
            cache_bytes: 16 << 20,
        }
    }
}

/// Committed state shared by readers and the writer thread.
struct State {
    objects: BTreeMap<String, Stored>,
    revision: u64,
    /// Events after `compacted`, oldest first.
    history: VecDeque<Arc<WatchEvent>>,
    /// Watches must start at or after this revision.
    compacted: u64,
}

struct Shared {
    state: RwLock<State>,
    events: broadcast::Sender<Arc<WatchEvent>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    requests: std::sync::mpsc::Sender<writer::Request>,
}

/// A watch: first the replayed history, then live events.
pub struct Watch {
    pub backlog: Vec<Arc<WatchEvent>>,
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
}

/// A page of a list.
pub struct ListPage {
    /// The store revision when the list was taken.
    pub revision: u64,
    pub items: Vec<(String, Stored)>,
    /// The key to continue from, when the page was cut by a limit.
    pub next_key: Option<String>,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Storage(e.to_string()))?;
        let (db, state) = writer::open(&dir.join("objects.redb"), &config)?;
        let (events, _) = broadcast::channel(65_536);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            events,
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::run(db, rx, thread_shared, config))
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok(Store {
            shared,
            requests: tx,
        })
    }

    /// Applies one write; returns the committed object once it is durable.
    pub async fn write(&self, op: Op) -> Result<Stored, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(writer::Request::Write { op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Drops watch history up to and including `revision` (or everything
    /// up to the current revision when `None`).
    pub async fn compact(&self, revision: Option<u64>) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(writer::Request::Compact { revision, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub fn get(&self, key: &str) -> Option<Stored> {
        self.read().objects.get(key).cloned()
    }

    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// Lists keys starting with `prefix`, beginning at `start` (inclusive)
    /// when continuing, with at most `limit` items when set. `keep` filters
    /// items without counting filtered ones against the limit.
    pub fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: Option<usize>,
        mut keep: impl FnMut(&Stored) -> bool,
    ) -> ListPage {
        let state = self.read();
        let from = match start {
            Some(s) if s > prefix => s,
            _ => prefix,
        };
        let mut items = Vec::new();
        let mut next_key = None;
        for (key, stored) in state
            .objects
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
        {
            if !key.starts_with(prefix) {
                break;
            }
            if !keep(stored) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                next_key = Some(key.clone());
                break;
            }
            items.push((key.clone(), stored.clone()));
        }
        ListPage {
            revision: state.revision,
            items,
            next_key,
        }
    }

    /// Starts a watch of every event after `revision`. The caller filters by
    /// key prefix. A revision older than the compacted history is refused.
    pub fn watch(&self, revision: u64) -> Result<Watch, StoreError> {
        // Subscribing under the read lock means no event falls between the
        // replayed history and the live stream: the writer publishes under
        // the write lock.
        let state = self.read();
        if revision < state.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: state.compacted,
            });
        }
        let live = self.shared.events.subscribe();
        let skip = state.history.partition_point(|e| e.revision <= revision);
        let backlog = state.history.iter().skip(skip).cloned().collect();
        Ok(Watch { backlog, live })
    }

    /// Takes the current objects under `prefix` and a live event stream
    /// that starts right after them, atomically. This is what a watch
    /// without a starting revision (or from "0") uses.
    pub fn snapshot_and_watch(&self, prefix: &str) -> (u64, Vec<(String, Stored)>, Watch) {
        let state = self.read();
        let live = self.shared.events.subscribe();
        let items = state
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (
            state.revision,
            items,
            Watch {
                backlog: Vec::new(),
                live,
            },
        )
    }

    /// The oldest revision a watch may start from.
    pub fn compacted_revision(&self) -> u64 {
        self.read().compacted
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock means the writer panicked mid-update; the state it
        // guards is still the last committed one, so reading it is sound.
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
