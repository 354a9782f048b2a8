//! kube-rs against `ferry apiserver`: typed CRUD for the kinds Ferry's
//! components use, and kube-runtime's watcher + reflector across watch
//! timeouts and compaction (410 Gone).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher};
use serde_json::json;

async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

/// Creates, reads, lists, patches and deletes one object of kind `K`.
async fn crud<K>(
    client: &kube::Client,
    ns: &str,
    manifest: serde_json::Value,
    patch: serde_json::Value,
) where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(manifest).unwrap();
    let name = obj.meta().name.clone().unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(created.meta().uid.is_some(), "{name}: create assigns a uid");
    assert!(created.meta().creation_timestamp.is_some());

    let got = api.get(&name).await.unwrap();
    assert_eq!(got.meta().resource_version, created.meta().resource_version);

    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        patched
            .meta()
            .labels
            .as_ref()
            .and_then(|l| l.get("patched"))
            .map(String::as_str),
        Some("yes"),
        "{name}: merge patch applied"
    );
    let rv_before: u64 = created
        .meta()
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let rv_after: u64 = patched
        .meta()
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_after > rv_before);

    // A stale resourceVersion on update is a 409 Conflict.
    let mut stale = created.clone();
    stale.meta_mut().labels = Some(BTreeMap::from([("x".to_string(), "y".to_string())]));
    let err = api
        .replace(&name, &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    api.delete(&name, &DeleteParams::default()).await.unwrap();
    match api.get(&name).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("expected NotFound after delete, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_crud_for_the_kinds_ferry_uses() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    namespace(&client, "crud").await;
    let label_patch = json!({"metadata": {"labels": {"patched": "yes"}}});

    crud::<Service>(
        &client,
        "crud",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        label_patch.clone(),
    )
    .await;
    crud::<Pod>(
        &client,
        "crud",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}}),
        label_patch.clone(),
    )
    .await;
    crud::<Deployment>(
        &client,
        "crud",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}}),
        label_patch.clone(),
    )
    .await;
    crud::<Ingress>(
        &client,
        "crud",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
               "spec": {"rules": [{"host": "www.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        label_patch.clone(),
    )
    .await;
    crud::<EndpointSlice>(
        &client,
        "crud",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-abc",
               "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        label_patch,
    )
    .await;
}

#[tokio::test]
async fn status_and_main_resource_own_their_parts() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let api: Api<Deployment> = Api::namespaced(client, "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 7}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.status.as_ref().and_then(|s| s.replicas).is_none(),
        "status is not set on create"
    );

    let status = json!({"status": {"replicas": 3, "readyReplicas": 2}, "spec": {"replicas": 9}});
    let s = api
        .patch_status("d", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(s.status.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        s.spec.as_ref().unwrap().replicas,
        Some(1),
        "spec changes are ignored on /status"
    );
    assert_eq!(s.metadata.generation, Some(1));

    let main = json!({"status": {"replicas": 99}, "spec": {"replicas": 4}});
    let m = api
        .patch("d", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(
        m.status.as_ref().unwrap().replicas,
        Some(3),
        "status changes are ignored on the main resource"
    );
    assert_eq!(m.spec.as_ref().unwrap().replicas, Some(4));
    assert_eq!(
        m.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );

    let scale = api.get_scale("d").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("a=b"));
    let scaled = api
        .patch_scale(
            "d",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 6}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(6));
    assert_eq!(api.get("d").await.unwrap().spec.unwrap().replicas, Some(6));
}

#[tokio::test]
async fn list_pages_and_selectors() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        let cm = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i:02}"), "labels": {"tier": tier, "n": i.to_string()}}})).unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 25);
    let even = api
        .list(&ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert_eq!(even.items.len(), 13);
    let set = api
        .list(&ListParams::default().labels("n in (1,2,3),tier!=odd"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 1);
    let not_exists = api
        .list(&ListParams::default().labels("!tier"))
        .await
        .unwrap();
    assert!(not_exists.items.is_empty());
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=cm-07"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    match api.list(&ListParams::default().fields("spec.nope=1")).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400),
        other => panic!("expected 400 for an unsupported field selector, got {other:?}"),
    }
}

/// The reflector's view: name → resourceVersion.
fn reflected(store: &reflector::Store<ConfigMap>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|c| {
            (
                c.metadata.name.clone().unwrap(),
                c.metadata.resource_version.clone().unwrap(),
            )
        })
        .collect()
}

async fn listed(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap(),
                c.metadata.resource_version.unwrap(),
            )
        })
        .collect()
}

/// Waits until the reflector agrees with a fresh list.
async fn converge(store: &reflector::Store<ConfigMap>, api: &Api<ConfigMap>) {
    for _ in 0..200 {
        if reflected(store) == listed(api).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "reflector never converged: reflector {:?} vs list {:?}",
        reflected(store),
        listed(api).await
    );
}

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
}

#[tokio::test]
async fn reflector_follows_every_change_across_watch_timeouts() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("a{i}"), "0"))
            .await
            .unwrap();
    }
    let (store, writer) = reflector::store();
    // One-second watches: the watcher has to re-watch many times.
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().timeout(1)),
    );
    let driver = tokio::spawn(async move {
        stream.try_for_each(|_| async { Ok(()) }).await.unwrap();
    });
    store.wait_until_ready().await.unwrap();
    converge(&store, &api).await;

    for round in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("b{round}"), "0"))
            .await
            .unwrap();
        api.replace("a0", &PostParams::default(), &{
            let mut c = api.get("a0").await.unwrap();
            c.data = Some(BTreeMap::from([("v".to_string(), round.to_string())]));
            c
        })
        .await
        .unwrap();
        converge(&store, &api).await;
        // Outlive the watch timeout so the next changes ride a new watch.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    api.delete("a1", &DeleteParams::default()).await.unwrap();
    converge(&store, &api).await;
    assert!(!reflected(&store).contains_key("a1"));
    assert_eq!(reflected(&store).len(), 5);
    driver.abort();
}

#[tokio::test]
async fn watcher_relists_after_compaction() {
    // A five-event history: a few writes compact past any idle watcher.
    let server = support::Apiserver::start_with(&["--watch-history", "5"]);
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "0"))
            .await
            .unwrap();
    }
    let synced_at = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let (store, writer) = reflector::store();
    // Without bookmarks an idle watcher resumes from its last object's
    // resourceVersion, which the writes below compact away.
    let config = watcher::Config::default().timeout(1).disable_bookmarks();
    let (init_tx, mut init_rx) = tokio::sync::mpsc::unbounded_channel();
    let gone_seen = Arc::new(AtomicBool::new(false));
    let stream = reflector(writer, watcher(api.clone(), config));
    let gone = gone_seen.clone();
    // The watcher reports the 410 as an error item, then lists again on
    // the next poll.
    let driver = tokio::spawn(stream.for_each(move |event| {
        match event {
            Ok(watcher::Event::InitDone) => {
                let _ = init_tx.send(());
            }
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                gone.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
        async {}
    }));
    tokio::time::timeout(Duration::from_secs(10), init_rx.recv())
        .await
        .unwrap();
    converge(&store, &api).await;

    // Writes to another kind move the revision on without the ConfigMap
    // watcher seeing any event of its own.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    for i in 0..10 {
        let s = serde_json::from_value(
            json!({"metadata": {"name": format!("s{i}")}, "stringData": {"k": "v"}}),
        )
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }

    // A watch from the old revision is refused with 410 Gone.
    let mut old = api
        .watch(&WatchParams::default(), &synced_at)
        .await
        .unwrap()
        .boxed();
    match old.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert!(
                e.message.contains("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // The watcher hits the same 410 when its watch times out, lists again,
    // and carries on.
    tokio::time::timeout(Duration::from_secs(15), init_rx.recv())
        .await
        .expect("the watcher relisted after 410");
    assert!(gone_seen.load(Ordering::SeqCst), "the watcher saw 410 Gone");
    api.create(&PostParams::default(), &cm("after", "1"))
        .await
        .unwrap();
    api.delete("c0", &DeleteParams::default()).await.unwrap();
    converge(&store, &api).await;
    let names: Vec<String> = reflected(&store).into_keys().collect();
    assert_eq!(names, ["after", "c1", "c2"]);
    driver.abort();
}

#[tokio::test]
async fn streaming_list_watch_sends_initial_events() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..4 {
        api.create(&PostParams::default(), &cm(&format!("s{i}"), "0"))
            .await
            .unwrap();
    }
    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().streaming_lists()),
    );
    let driver = tokio::spawn(async move {
        stream.try_for_each(|_| async { Ok(()) }).await.unwrap();
    });
    store.wait_until_ready().await.unwrap();
    assert_eq!(reflected(&store).len(), 4);
    api.create(&PostParams::default(), &cm("s9", "0"))
        .await
        .unwrap();
    converge(&store, &api).await;
    driver.abort();
}
