#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn obj(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})
}

fn create(key: &str) -> Op {
    Op::Create {
        key: key.to_string(),
        object: obj(key),
    }
}

fn rv_of(stored: &Stored) -> String {
    let v: serde_json::Value = serde_json::from_slice(&stored.data).unwrap();
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn create_update_delete_with_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let a = store.write(create("cm/default/a")).await.unwrap();
    assert_eq!(a.revision, 1);
    assert_eq!(rv_of(&a), "1");
    assert_eq!(
        store.write(create("cm/default/a")).await.unwrap_err(),
        StoreError::AlreadyExists("cm/default/a".into())
    );
    let stale = store
        .write(Op::Update {
            key: "cm/default/a".into(),
            object: obj("a"),
            expected_revision: Some(7),
        })
        .await
        .unwrap_err();
    assert!(matches!(stale, StoreError::Conflict { current: 1, .. }));
    let b = store
        .write(Op::Update {
            key: "cm/default/a".into(),
            object: obj("a"),
            expected_revision: Some(1),
        })
        .await
        .unwrap();
    assert_eq!(b.revision, 2);
    let d = store
        .write(Op::Delete {
            key: "cm/default/a".into(),
            expected_revision: None,
        })
        .await
        .unwrap();
    assert_eq!(d.revision, 3);
    assert!(store.get("cm/default/a").is_none());
    assert_eq!(store.revision(), 3);
}

#[tokio::test]
async fn state_survives_restart_and_revisions_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        for i in 0..20 {
            store
                .write(create(&format!("cm/default/{i}")))
                .await
                .unwrap();
        }
        store
            .write(Op::Delete {
                key: "cm/default/3".into(),
                expected_revision: None,
            })
            .await
            .unwrap();
    }
    // The writer thread holds the database until its channel closes.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(store.revision(), 21);
    assert!(store.get("cm/default/3").is_none());
    assert_eq!(store.get("cm/default/19").unwrap().revision, 20);
    let next = store.write(create("cm/default/new")).await.unwrap();
    assert_eq!(next.revision, 22);
    // History survived too: a watch from revision 10 replays 11..=22.
    let w = store.watch(10).unwrap();
    let revs: Vec<u64> = w.backlog.iter().map(|e| e.revision).collect();
    assert_eq!(revs, (11..=22).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_get_distinct_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write(create(&format!("cm/default/{i}")))
                .await
                .unwrap()
                .revision
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    assert_eq!(revs, (1..=200).collect::<Vec<_>>());
    let page = store.list("cm/default/", None, Some(50), |_| true);
    assert_eq!(page.items.len(), 50);
    let rest = store.list("cm/default/", page.next_key.as_deref(), None, |_| true);
    assert_eq!(rest.items.len(), 150);
    assert!(rest.next_key.is_none());
}

#[tokio::test]
async fn watch_replays_then_follows_and_compaction_gives_gone() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        watch_history: 5,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), config).unwrap();
    for i in 0..3 {
        store
            .write(create(&format!("cm/default/{i}")))
            .await
            .unwrap();
    }
    let mut w = store.watch(1).unwrap();
    assert_eq!(w.backlog.len(), 2);
    store.write(create("cm/default/x")).await.unwrap();
    let live = w.live.recv().await.unwrap();
    assert_eq!((live.revision, live.event_type), (4, EventType::Added));

    // History holds 5 events: after 8 writes, revision 2 is gone.
    for i in 4..8 {
        store
            .write(create(&format!("cm/default/{i}")))
            .await
            .unwrap();
    }
    assert_eq!(store.compacted_revision(), 3);
    assert!(matches!(
        store.watch(2),
        Err(StoreError::Compacted {
            requested: 2,
            compacted: 3
        })
    ));
    assert!(store.watch(3).is_ok());
    store.compact(None).await.unwrap();
    assert!(matches!(store.watch(7), Err(StoreError::Compacted { .. })));
    assert_eq!(store.watch(8).unwrap().backlog.len(), 0);
}
