//! Durability: the server is SIGKILLed while clients write. After a restart
//! every acknowledged write is present, resourceVersions keep increasing,
//! and watchers resume.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": name}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut server = support::Apiserver::start_in(dir.path(), port, &[]);
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // A watcher that must carry on across the restart.
    let (store, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    );
    // Errors while the server is down are expected; the backoff retries.
    let watch_driver = tokio::spawn(stream.for_each(|_| async {}));
    store.wait_until_ready().await.unwrap();

    // Four concurrent writers, so kills land inside group commits.
    let acknowledged: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let api = api.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i:05}");
                match api.create(&PostParams::default(), &cm(&name)).await {
                    Ok(created) => {
                        let rv = created.metadata.resource_version.unwrap().parse().unwrap();
                        acknowledged.lock().unwrap().insert(name, rv);
                    }
                    // The server is gone: stop writing.
                    Err(_) => return,
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < 400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let highest = *acknowledged.values().max().unwrap();

    let server = support::Apiserver::start_in(dir.path(), port, &[]);
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let stored: BTreeMap<String, u64> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap(),
                c.metadata.resource_version.unwrap().parse().unwrap(),
            )
        })
        .collect();
    for (name, rv) in &acknowledged {
        assert_eq!(
            stored.get(name),
            Some(rv),
            "acknowledged write {name} (rv {rv}) is missing or changed after the restart"
        );
    }

    let after = api
        .create(&PostParams::default(), &cm("after-restart"))
        .await
        .unwrap();
    let after_rv: u64 = after.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        after_rv > highest,
        "resourceVersion went back: {after_rv} <= {highest}"
    );

    // The watcher from before the kill reconnects and sees the new object.
    for _ in 0..400 {
        if store
            .state()
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("after-restart"))
        {
            watch_driver.abort();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the watcher did not resume after the restart");
}
