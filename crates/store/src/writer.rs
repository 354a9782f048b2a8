//! The single writer thread: batches queued writes into one redb
//! transaction, commits (fsync), then publishes the result to readers and
//! watchers and answers each writer.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::codec::{decode_event, decode_object, encode_event, encode_object};
use crate::{EventType, Shared, State, StoreConfig, StoreError, Stored, WatchEvent};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Most writes one transaction takes; bounds the latency of a batch.
const MAX_BATCH: usize = 2048;

/// A write. `expected_revision` is the optimistic-concurrency check: the
/// write only applies when the object's current revision equals it.
#[derive(Debug)]
pub enum Op {
    Create {
        key: String,
        object: Value,
    },
    Update {
        key: String,
        object: Value,
        expected_revision: Option<u64>,
    },
    Delete {
        key: String,
        expected_revision: Option<u64>,
    },
}

pub(crate) enum Request {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Stored, StoreError>>,
    },
    Compact {
        revision: Option<u64>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// Opens the database and loads the committed state into memory.
pub(crate) fn open(path: &Path, config: &StoreConfig) -> Result<(Database, State), StoreError> {
    let db = Database::builder()
        .set_cache_size(config.cache_bytes)
        .create(path)
        .map_err(storage)?;
    // Make sure the tables exist so readers never see "table missing".
    let txn = db.begin_write().map_err(storage)?;
    {
        txn.open_table(OBJECTS).map_err(storage)?;
        txn.open_table(EVENTS).map_err(storage)?;
        txn.open_table(META).map_err(storage)?;
    }
    txn.commit().map_err(storage)?;

    let txn = db.begin_read().map_err(storage)?;
    let meta = txn.open_table(META).map_err(storage)?;
    let read_meta = |name: &str| -> Result<u64, StoreError> {
        Ok(meta
            .get(name)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    let mut revision = read_meta(META_REVISION)?;
    let mut compacted = read_meta(META_COMPACTED)?;

    let mut objects = std::collections::BTreeMap::new();
    for entry in txn
        .open_table(OBJECTS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (k, v) = entry.map_err(storage)?;
        let (rev, data) = decode_object(v.value())?;
        revision = revision.max(rev);
        objects.insert(
            k.value().to_string(),
            Stored {
                revision: rev,
                data,
            },
        );
    }
    let mut history = VecDeque::new();
    for entry in txn
        .open_table(EVENTS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (k, v) = entry.map_err(storage)?;
        let rev = k.value();
        if rev <= compacted {
            continue;
        }
        let (event_type, key, object) = decode_event(v.value())?;
        revision = revision.max(rev);
        history.push_back(Arc::new(WatchEvent::new(
            rev,
            event_type,
            key.into(),
            object,
            None,
        )));
    }
    while history.len() > config.watch_history {
        if let Some(e) = history.pop_front() {
            compacted = e.revision;
        }
    }
    // A history that does not reach back to the compacted revision (for
    // example after the log was trimmed) must not pretend it does.
    if let Some(first) = history.front() {
        compacted = compacted.max(first.revision - 1);
    } else {
        compacted = compacted.max(revision);
    }
    drop(txn);
    tracing::info!(objects = objects.len(), revision, compacted, "store opened");
    Ok((
        db,
        State {
            objects,
            revision,
            history,
            compacted,
        },
    ))
}

pub(crate) fn run(db: Database, rx: Receiver<Request>, shared: Arc<Shared>, config: StoreConfig) {
    while let Ok(first) = rx.recv() {
        let mut writes = Vec::new();
        let mut compactions = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write { op, reply } => writes.push((op, reply)),
                Request::Compact { revision, reply } => compactions.push((revision, reply)),
            }
            // Group commit: everything already queued shares this transaction.
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit_writes(&db, writes, &shared.state, &shared, &config);
        }
        for (revision, reply) in compactions {
            let _ = reply.send(compact(&db, &shared.state, revision));
        }
    }
    tracing::info!("store writer stopped");
}

/// The outcome of one op, before commit.
struct Planned {
    key: Arc<str>,
    event_type: EventType,
    stored: Stored,
    previous: Option<Bytes>,
}

fn commit_writes(
    db: &Database,
    writes: Vec<(Op, oneshot::Sender<Result<Stored, StoreError>>)>,
    lock: &RwLock<State>,
    shared: &Shared,
    config: &StoreConfig,
) {
    let (base_revision, compacted) = {
        let s = read(lock);
        (s.revision, s.compacted)
    };
    let mut revision = base_revision;
    // Writes earlier in the batch are visible to later ones through this.
    let mut pending: HashMap<Arc<str>, Option<Stored>> = HashMap::new();
    let mut results: Vec<(Result<usize, StoreError>, _)> = Vec::with_capacity(writes.len());
    let mut planned: Vec<Planned> = Vec::new();

    for (op, reply) in writes {
        let key: Arc<str> = match &op {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => {
                key.as_str().into()
            }
        };
        let current = match pending.get(&key) {
            Some(p) => p.clone(),
            None => read(lock).objects.get(&*key).cloned(),
        };
        let outcome = plan(op, &key, current.as_ref(), revision + 1);
        match outcome {
            Ok((event_type, stored)) => {
                revision += 1;
                pending.insert(
                    key.clone(),
                    (event_type != EventType::Deleted).then(|| stored.clone()),
                );
                planned.push(Planned {
                    key,
                    event_type,
                    stored,
                    previous: current.map(|c| c.data),
                });
                results.push((Ok(planned.len() - 1), reply));
            }
            Err(e) => results.push((Err(e), reply)),
        }
    }

    let new_compacted = {
        let s = read(lock);
        let total = s.history.len() + planned.len();
        if total > config.watch_history {
            let drop_count = total - config.watch_history;
            if drop_count <= s.history.len() {
                s.history[drop_count - 1].revision
            } else {
                planned[drop_count - s.history.len() - 1].stored.revision
            }
        } else {
            compacted
        }
    };

    let committed = if planned.is_empty() {
        Ok(())
    } else {
        persist(db, &planned, revision, compacted, new_compacted)
    };
    if let Err(e) = committed {
        tracing::error!(error = %e, "store commit failed");
        for (result, reply) in results {
            let _ = reply.send(result.and(Err(e.clone())));
        }
        return;
    }

    {
        let mut s = lock.write().unwrap_or_else(|p| p.into_inner());
        for p in &planned {
            match p.event_type {
                EventType::Deleted => {
                    s.objects.remove(&*p.key);
                }
                _ => {
                    s.objects.insert(p.key.to_string(), p.stored.clone());
                }
            }
            let event = Arc::new(WatchEvent::new(
                p.stored.revision,
                p.event_type,
                p.key.clone(),
                p.stored.data.clone(),
                p.previous.clone(),
            ));
            s.history.push_back(event.clone());
            // No receivers is fine: nobody is watching.
            let _ = shared.events.send(event);
        }
        s.revision = revision;
        while s
            .history
            .front()
            .is_some_and(|e| e.revision <= new_compacted)
        {
            s.history.pop_front();
        }
        s.compacted = new_compacted;
    }

    for (result, reply) in results {
        let _ = reply.send(result.map(|i| planned[i].stored.clone()));
    }
}

/// Checks an op against the current object and builds the stored form.
fn plan(
    op: Op,
    key: &str,
    current: Option<&Stored>,
    revision: u64,
) -> Result<(EventType, Stored), StoreError> {
    let check = |expected: Option<u64>, current: &Stored| match expected {
        Some(e) if e != current.revision => Err(StoreError::Conflict {
            key: key.to_string(),
            expected: e,
            current: current.revision,
        }),
        _ => Ok(()),
    };
    match op {
        Op::Create { object, .. } => {
            if current.is_some() {
                return Err(StoreError::AlreadyExists(key.to_string()));
            }
            Ok((EventType::Added, stamp(object, revision)?))
        }
        Op::Update {
            object,
            expected_revision,
            ..
        } => {
            let current = current.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            check(expected_revision, current)?;
            Ok((EventType::Modified, stamp(object, revision)?))
        }
        Op::Delete {
            expected_revision, ..
        } => {
            let current = current.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            check(expected_revision, current)?;
            let object: Value =
                serde_json::from_slice(&current.data).map_err(|_| StoreError::NotAnObject)?;
            Ok((EventType::Deleted, stamp(object, revision)?))
        }
    }
}

/// Writes the revision into `metadata.resourceVersion` and serializes.
fn stamp(mut object: Value, revision: u64) -> Result<Stored, StoreError> {
    let metadata = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or(StoreError::NotAnObject)?;
    metadata.insert(
        "resourceVersion".to_string(),
        Value::String(revision.to_string()),
    );
    let data = serde_json::to_vec(&object).map_err(storage)?;
    Ok(Stored {
        revision,
        data: Bytes::from(data),
    })
}

fn persist(
    db: &Database,
    planned: &[Planned],
    revision: u64,
    old_compacted: u64,
    new_compacted: u64,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut objects = txn.open_table(OBJECTS).map_err(storage)?;
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        for p in planned {
            match p.event_type {
                EventType::Deleted => {
                    objects.remove(&*p.key).map_err(storage)?;
                }
                _ => {
                    objects
                        .insert(
                            &*p.key,
                            encode_object(p.stored.revision, &p.stored.data).as_slice(),
                        )
                        .map_err(storage)?;
                }
            }
            events
                .insert(
                    p.stored.revision,
                    encode_event(p.event_type, &p.key, &p.stored.data).as_slice(),
                )
                .map_err(storage)?;
        }
        if new_compacted > old_compacted {
            events
                .retain_in(..=new_compacted, |_, _| false)
                .map_err(storage)?;
        }
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert(META_REVISION, revision).map_err(storage)?;
        meta.insert(META_COMPACTED, new_compacted)
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

fn compact(db: &Database, lock: &RwLock<State>, revision: Option<u64>) -> Result<u64, StoreError> {
    let current = read(lock).revision;
    let target = revision.unwrap_or(current).min(current);
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        events.retain_in(..=target, |_, _| false).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        let old = meta
            .get(META_COMPACTED)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0);
        meta.insert(META_COMPACTED, old.max(target))
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)?;
    let mut s = lock.write().unwrap_or_else(|p| p.into_inner());
    while s.history.front().is_some_and(|e| e.revision <= target) {
        s.history.pop_front();
    }
    s.compacted = s.compacted.max(target);
    tracing::info!(revision = s.compacted, "watch history compacted");
    Ok(s.compacted)
}

fn read(lock: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}
