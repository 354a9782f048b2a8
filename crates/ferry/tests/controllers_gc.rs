//! `ferry controllers` collecting garbage (issue 4, point 4): deleting a
//! Deployment removes its ReplicaSets and Pods (background and
//! foreground), `--cascade=orphan` leaves the dependents without their
//! owner, and dangling ownerReferences on any kind are cleaned up.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

const FLAGS: &[&str] = &["--leader-elect=false"];

async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}
            }
        }
    }))
    .unwrap()
}

async fn pods(client: &kube::Client, ns: &str, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

async fn replica_sets(client: &kube::Client, ns: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default()).await.unwrap().items
}

/// Creates a Deployment and waits for its ReplicaSet and Pods.
async fn running(client: &kube::Client, ns: &str, name: &str, replicas: usize) -> BTreeSet<String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &deployment(name, replicas as i32))
        .await
        .unwrap();
    support::eventually(60, &format!("{replicas} pods of {name}"), || async {
        let pods = pods(client, ns, name).await;
        (pods.len() == replicas)
            .then(|| pods.iter().filter_map(|p| p.metadata.uid.clone()).collect())
    })
    .await
}

fn owners(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> usize {
    meta.owner_references.as_ref().map_or(0, Vec::len)
}

#[tokio::test]
async fn deleting_a_deployment_removes_its_replica_sets_and_pods() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, "bg").await;
    running(&client, "bg", "web", 3).await;
    assert_eq!(replica_sets(&client, "bg").await.len(), 1);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "bg");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    api.delete("web", &params).await.unwrap();
    support::eventually(60, "replica sets and pods are gone", || async {
        (replica_sets(&client, "bg").await.is_empty()
            && pods(&client, "bg", "web").await.is_empty())
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn foreground_deletion_removes_dependents_before_the_owner() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, "fg").await;
    running(&client, "fg", "web", 2).await;

    // Record the revision at which each object disappears: the store's
    // revisions are one global order.
    let deleted_at = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let listed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut watchers = Vec::new();
    macro_rules! record_deletions {
        ($kind:ty, $label:expr) => {{
            let api: Api<$kind> = Api::namespaced(client.clone(), "fg");
            let out = deleted_at.clone();
            let listed = listed.clone();
            watchers.push(tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                while let Some(Ok(event)) = events.next().await {
                    match event {
                        watcher::Event::Delete(o) => {
                            let rv = o
                                .metadata
                                .resource_version
                                .clone()
                                .unwrap()
                                .parse()
                                .unwrap();
                            out.lock().unwrap().push(($label.to_string(), rv));
                        }
                        watcher::Event::InitDone => {
                            listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
            }));
        }};
    }
    record_deletions!(Deployment, "deployment");
    record_deletions!(ReplicaSet, "replicaset");
    record_deletions!(Pod, "pod");
    support::eventually(30, "the watches have listed", || async {
        (listed.load(std::sync::atomic::Ordering::SeqCst) == 3).then_some(())
    })
    .await;

    let api: Api<Deployment> = Api::namespaced(client.clone(), "fg");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    api.delete("web", &params).await.unwrap();
    support::eventually(60, "everything is gone", || async {
        let gone = api.get_opt("web").await.unwrap().is_none()
            && replica_sets(&client, "fg").await.is_empty()
            && pods(&client, "fg", "web").await.is_empty();
        gone.then_some(())
    })
    .await;
    let deletions = support::eventually(30, "every deletion watched", || async {
        let d = deleted_at.lock().unwrap().clone();
        (d.len() == 4).then_some(d)
    })
    .await;
    for w in watchers {
        w.abort();
    }
    let at = |what: &str| -> Vec<u64> {
        deletions
            .iter()
            .filter(|(k, _)| k == what)
            .map(|(_, rv)| *rv)
            .collect()
    };
    let (deployment, replica_set, pods) = (at("deployment")[0], at("replicaset")[0], at("pod"));
    assert!(pods.iter().all(|p| *p < replica_set), "{deletions:?}");
    assert!(replica_set < deployment, "{deletions:?}");
}

// kubectl blocks its thread while it waits for the deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_orphan_keeps_the_pods_without_their_owner() {
    if !support::kubectl_available() {
        return;
    }
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, "orphan").await;
    let uids = running(&client, "orphan", "web", 2).await;

    // The Deployment goes; its ReplicaSet stays, without an owner.
    server.kubectl_ok(&[
        "-n",
        "orphan",
        "delete",
        "deployment",
        "web",
        "--cascade=orphan",
    ]);
    let api: Api<Deployment> = Api::namespaced(client.clone(), "orphan");
    assert!(api.get_opt("web").await.unwrap().is_none());
    let rs = support::eventually(30, "the replica set is orphaned", || async {
        let rss = replica_sets(&client, "orphan").await;
        (rss.len() == 1 && owners(&rss[0].metadata) == 0).then(|| rss[0].clone())
    })
    .await;

    // The ReplicaSet goes the same way; its Pods stay, now ownerless.
    let rs_name = rs.metadata.name.clone().unwrap();
    server.kubectl_ok(&["-n", "orphan", "delete", "rs", &rs_name, "--cascade=orphan"]);
    assert!(replica_sets(&client, "orphan").await.is_empty());
    let orphans = support::eventually(30, "the pods lost their owner", || async {
        let pods = pods(&client, "orphan", "web").await;
        pods.iter()
            .all(|p| owners(&p.metadata) == 0)
            .then_some(pods)
    })
    .await;
    let still: BTreeSet<String> = orphans
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(still, uids, "the same pods, none deleted or replaced");

    // After more work has gone through the controllers, they are still there.
    running(&client, "orphan", "later", 1).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "orphan");
    api.delete("later", &DeleteParams::default()).await.unwrap();
    support::eventually(60, "the later deployment's pods are collected", || async {
        pods(&client, "orphan", "later")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let remaining: BTreeSet<String> = pods(&client, "orphan", "web")
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(remaining, uids);
}

#[tokio::test]
async fn dangling_owner_references_on_any_kind_are_collected() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    namespace(&client, "gc").await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "gc");
    let owner = config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let owner_ref = |name: &str, uid: &str| json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid}]);
    let owned = owner_ref("owner", owner.metadata.uid.as_deref().unwrap());
    let meta = |name: &str, refs: &Value| json!({"name": name, "ownerReferences": refs});
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "gc");
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": meta("slice", &owned),
                "addressType": "IPv4", "endpoints": []}))
            .unwrap(),
        )
        .await
        .unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "gc");
    endpoints
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": meta("eps", &owned)})).unwrap(),
        )
        .await
        .unwrap();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "gc");
    let pod = |name: &str, refs: &Value| -> Pod {
        serde_json::from_value(json!({"metadata": meta(name, refs),
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
        .unwrap()
    };
    // An owner that never existed, from before the collector started.
    pods_api
        .create(
            &PostParams::default(),
            &pod("ghost-child", &owner_ref("ghost", "no-such-uid")),
        )
        .await
        .unwrap();
    // Two owners, one of them gone: the pod stays, the bad reference goes.
    let mut two = owned.clone();
    two.as_array_mut()
        .unwrap()
        .push(owner_ref("ghost", "no-such-uid")[0].clone());
    pods_api
        .create(&PostParams::default(), &pod("two-owners", &two))
        .await
        .unwrap();

    let _controllers = support::Controllers::start(&server, FLAGS);
    support::eventually(60, "the ghost's child is collected", || async {
        pods_api
            .get_opt("ghost-child")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    support::eventually(60, "the dangling reference is dropped", || async {
        let p = pods_api.get_opt("two-owners").await.unwrap()?;
        let refs = p.metadata.owner_references.unwrap_or_default();
        (refs.len() == 1 && refs[0].name == "owner").then_some(())
    })
    .await;

    config_maps
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(60, "the config map's dependents are collected", || async {
        let gone = slices.get_opt("slice").await.unwrap().is_none()
            && endpoints.get_opt("eps").await.unwrap().is_none()
            && pods_api.get_opt("two-owners").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
}
