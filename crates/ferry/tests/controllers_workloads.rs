//! `ferry controllers` running workloads (issue 4, the workload half of
//! point 1): Deployments make ReplicaSets with `pod-template-hash` labels,
//! ReplicaSets keep their Pods, rollouts keep `replicas - maxUnavailable`
//! Pods ready, Recreate replaces everything, and DaemonSets put one Pod on
//! every eligible node. There are no node agents: a stand-in kubelet
//! writes Pod status through the API as Pods appear.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// Controller flags for these tests: one instance, and nodes that never
/// go NotReady for want of heartbeats.
const FLAGS: &[&str] = &["--leader-elect=false", "--node-monitor-grace-period=3600"];

async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

/// Stands in for the node agents of namespace `ns`: every new Pod becomes
/// Running and Ready with its own IP, and a Pod being deleted gracefully
/// is removed, as a kubelet does once its containers stop. Stops when
/// dropped.
struct Kubelet {
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    fn start(client: &kube::Client, ns: &str) -> Kubelet {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let task = tokio::spawn(async move {
            let mut next_ip = 2u32;
            let mut events = watcher(api.clone(), watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(pod)) = events.next().await {
                let name = pod.metadata.name.clone().unwrap();
                if pod.metadata.deletion_timestamp.is_some() {
                    let _ = api
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                    continue;
                }
                if pod_ready(&pod) {
                    continue;
                }
                let ip = format!("10.244.{}.{}", next_ip / 250, next_ip % 250 + 2);
                next_ip += 1;
                let now = Time(Timestamp::now());
                let status = json!({"status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    ],
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        });
        Kubelet { task }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// Watches the Pods of namespace `ns` and remembers the fewest ready ones
/// (and whether two template hashes ever ran at once) seen after `arm`.
#[derive(Default)]
struct Watched {
    pods: BTreeMap<String, (bool, String)>,
    armed: bool,
    min_ready: Option<usize>,
    mixed: bool,
}

struct Observer {
    state: Arc<Mutex<Watched>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    fn start(client: &kube::Client, ns: &str) -> Observer {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let state = Arc::new(Mutex::new(Watched::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(Ok(event)) = events.next().await {
                let mut w = shared.lock().unwrap();
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        let name = p.metadata.name.clone().unwrap();
                        if p.metadata.deletion_timestamp.is_some() {
                            w.pods.remove(&name);
                        } else {
                            let hash = label(&p, "pod-template-hash").unwrap_or("").to_string();
                            w.pods.insert(name, (pod_ready(&p), hash));
                        }
                    }
                    watcher::Event::Delete(p) => {
                        w.pods.remove(p.metadata.name.as_deref().unwrap());
                    }
                    watcher::Event::Init | watcher::Event::InitDone => continue,
                }
                if w.armed {
                    let ready = w.pods.values().filter(|(r, _)| *r).count();
                    w.min_ready = Some(w.min_ready.map_or(ready, |m| m.min(ready)));
                    let hashes: BTreeSet<&String> = w.pods.values().map(|(_, h)| h).collect();
                    if hashes.len() > 1 {
                        w.mixed = true;
                    }
                }
            }
        });
        Observer { state, task }
    }

    fn arm(&self) {
        self.state.lock().unwrap().armed = true;
    }

    fn min_ready(&self) -> Option<usize> {
        self.state.lock().unwrap().min_ready
    }

    fn saw_mixed(&self) -> bool {
        self.state.lock().unwrap().mixed
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}
            }
        }
    }))
    .unwrap()
}

async fn pods_of(client: &kube::Client, ns: &str, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The Deployment once its status says every replica is updated, ready
/// and available for the current generation.
async fn rolled_out(client: &kube::Client, ns: &str, name: &str, replicas: i32) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    support::eventually(90, &format!("deployment {name} rolled out"), || async {
        let d = api.get(name).await.ok()?;
        let s = d.status.clone()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.replicas == Some(replicas)
            && s.updated_replicas == Some(replicas)
            && s.ready_replicas == Some(replicas)
            && s.available_replicas == Some(replicas);
        done.then_some(d)
    })
    .await
}

fn condition_reason(d: &Deployment, type_: &str) -> Option<String> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| c.reason.clone())
}

#[tokio::test]
async fn deployment_makes_hashed_pods_replaces_deleted_ones_and_scales() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, "web").await;
    let _kubelet = Kubelet::start(&client, "web");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "web");
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 3, "nginx:1", Value::Null),
        )
        .await
        .unwrap();

    let d = rolled_out(&client, "web", "web", 3).await;
    let revision =
        d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"].clone();
    assert_eq!(revision, "1");
    assert_eq!(
        condition_reason(&d, "Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        condition_reason(&d, "Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // One ReplicaSet, named after the template hash and owned by the Deployment.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "web");
    let rss = replica_sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    let owner = &rs.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Deployment", Some(true))
    );
    assert_eq!(owner.uid, d.metadata.uid.clone().unwrap());
    let selector = &rs.spec.as_ref().unwrap().selector;
    assert_eq!(
        selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );

    // Three Pods from it, each with the hash label and a controller reference.
    let pods = pods_of(&client, "web", "web").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(label(p, "pod-template-hash"), Some(hash.as_str()));
        let name = p.metadata.name.as_deref().unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        assert_eq!(name.len(), format!("web-{hash}-").len() + 5, "{name}");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            ("ReplicaSet", Some(true), Some(true))
        );
        assert_eq!(owner.uid, rs.metadata.uid.clone().unwrap());
    }

    // A deleted Pod is replaced.
    let victim = pods[0].metadata.name.clone().unwrap();
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "web");
    pod_api
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(60, "the deleted pod is replaced", || async {
        let pods = pods_of(&client, "web", "web").await;
        let names: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (names.len() == 3 && !names.contains(&victim) && pods.iter().all(pod_ready)).then_some(())
    })
    .await;

    // Scaling to 2 removes one.
    let patch = json!({"spec": {"replicas": 2}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    rolled_out(&client, "web", "web", 2).await;
    support::eventually(60, "two pods left", || async {
        (pods_of(&client, "web", "web").await.len() == 2).then_some(())
    })
    .await;
    let rs = replica_sets
        .get(rs.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(rs.spec.unwrap().replicas, Some(2));

    // The ReplicaSet reports its Pods.
    let status = rs.status.unwrap();
    assert_eq!(status.replicas, 2);
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.available_replicas, Some(2));
    assert_eq!(status.fully_labeled_replicas, Some(2));
}

/// Changes the image and checks that the rollout never has fewer than
/// `replicas - max_unavailable` Pods ready.
async fn roll_and_watch(ns: &str, replicas: i32, strategy: Value, max_unavailable: usize) {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, ns).await;
    let _kubelet = Kubelet::start(&client, ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", replicas, "nginx:1", strategy),
        )
        .await
        .unwrap();
    let before = rolled_out(&client, ns, "web", replicas).await;
    let observer = Observer::start(&client, ns);
    support::eventually(30, "the observer sees every pod ready", || async {
        let w = observer.state.lock().unwrap();
        (w.pods.values().filter(|(r, _)| *r).count() == replicas as usize).then_some(())
    })
    .await;
    observer.arm();

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let after = support::eventually(120, "the new template rolled out", || async {
        let d = deployments.get("web").await.ok()?;
        (d.metadata.generation > before.metadata.generation).then_some(())?;
        let s = d.status.clone()?;
        let pods = pods_of(&client, ns, "web").await;
        let images: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
            .collect();
        let done = s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas)
            && pods.len() == replicas as usize
            && images == BTreeSet::from(["nginx:2".to_string()]);
        done.then_some(d)
    })
    .await;
    let min_ready = observer.min_ready().unwrap();
    assert!(
        min_ready >= replicas as usize - max_unavailable,
        "{min_ready} pods ready at one point, fewer than {replicas} - {max_unavailable}"
    );
    assert_eq!(
        after.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    // The old ReplicaSet stays, scaled to zero, for rollbacks.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let sizes: BTreeMap<String, i32> = replica_sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|rs| {
            let revision =
                rs.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"]
                    .clone();
            (revision, rs.spec.unwrap().replicas.unwrap())
        })
        .collect();
    assert_eq!(
        sizes,
        BTreeMap::from([("1".into(), 0), ("2".into(), replicas)])
    );
}

#[tokio::test]
async fn rolling_update_with_default_surge_keeps_every_replica_ready() {
    // 25% of 3: surge rounds up to 1, unavailable down to 0.
    roll_and_watch("defaults", 3, Value::Null, 0).await;
}

#[tokio::test]
async fn rolling_update_respects_max_unavailable() {
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    roll_and_watch("custom", 4, strategy, 1).await;
}

#[tokio::test]
async fn recreate_stops_old_pods_before_starting_new_ones() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, "recreate").await;
    let _kubelet = Kubelet::start(&client, "recreate");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "recreate");
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 2, "nginx:1", json!({"type": "Recreate"})),
        )
        .await
        .unwrap();
    rolled_out(&client, "recreate", "web", 2).await;
    let observer = Observer::start(&client, "recreate");
    support::eventually(30, "the observer sees both pods", || async {
        (observer.state.lock().unwrap().pods.len() == 2).then_some(())
    })
    .await;
    observer.arm();
    let patch = json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    support::eventually(90, "the new pods run", || async {
        let pods = pods_of(&client, "recreate", "web").await;
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| label(p, "v") == Some("2") && pod_ready(p)))
        .then_some(())
    })
    .await;
    rolled_out(&client, "recreate", "web", 2).await;
    assert!(
        !observer.saw_mixed(),
        "old and new pods ran at the same time"
    );
}

// kubectl blocks its thread; the stand-in kubelet needs another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_deployments_like_any_cluster() {
    if !support::kubectl_available() {
        return;
    }
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    let _kubelet = Kubelet::start(&client, "default");
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1",
        "--replicas=3",
    ]);
    let out = server.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let table = server.kubectl_ok(&["get", "deployment", "web"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "3/3", "3", "3"], "{table}");

    server.kubectl_ok(&["set", "image", "deployment/web", "nginx=nginx:2"]);
    let out = server.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = server.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let rs = server.kubectl_ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(rs.lines().count(), 2, "{rs}");

    server.kubectl_ok(&["scale", "deployment/web", "--replicas=1"]);
    support::eventually(60, "kubectl shows 1/1", || async {
        let table = server.kubectl_ok(&["get", "deployment", "web", "--no-headers"]);
        let row: Vec<String> = table.split_whitespace().map(str::to_string).collect();
        (row.get(1).map(String::as_str) == Some("1/1")).then_some(())
    })
    .await;
    let _ = client;
}

#[tokio::test]
async fn bad_workloads_get_an_event_and_the_rest_keeps_working() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, "bad").await;
    let _kubelet = Kubelet::start(&client, "bad");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bad");
    // A selector that does not select the template: pods would never count.
    let mut mismatched = deployment("mismatched", 2, "nginx", Value::Null);
    mismatched.spec.as_mut().unwrap().selector.match_labels =
        Some(BTreeMap::from([("app".into(), "other".into())]));
    let strange_strategy = deployment(
        "strange",
        2,
        "nginx",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "lots"}}),
    );
    for d in [mismatched, strange_strategy] {
        // The API server may refuse them itself; either way nothing breaks.
        let _ = deployments.create(&PostParams::default(), &d).await;
    }
    deployments
        .create(
            &PostParams::default(),
            &deployment("good", 2, "nginx", Value::Null),
        )
        .await
        .unwrap();
    rolled_out(&client, "bad", "good", 2).await;
    for name in ["mismatched", "strange"] {
        if deployments.get_opt(name).await.unwrap().is_none() {
            continue;
        }
        let events: Api<Event> = Api::namespaced(client.clone(), "bad");
        support::eventually(30, &format!("a warning about {name}"), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.involved_object.name.as_deref() == Some(name)
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        })
        .await;
        assert!(pods_of(&client, "bad", name).await.is_empty());
    }
}

async fn ready_node(client: &kube::Client, name: &str, labels: Value, taints: Value) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let now = Time(Timestamp::now());
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Node → name of the DaemonSet's Pod on it.
async fn daemon_pods(client: &kube::Client, ns: &str) -> BTreeMap<String, String> {
    pods_of(client, ns, "agent")
        .await
        .into_iter()
        .map(|p| {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            (node, p.metadata.name.unwrap())
        })
        .collect()
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_eligible_node() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, FLAGS);
    namespace(&client, "ds").await;
    let _kubelet = Kubelet::start(&client, "ds");
    ready_node(&client, "node-1", json!({"disk": "ssd"}), Value::Null).await;
    ready_node(&client, "node-2", json!({"disk": "ssd"}), Value::Null).await;
    ready_node(
        &client,
        "control-plane",
        json!({"disk": "ssd"}),
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
    )
    .await;
    ready_node(&client, "node-hdd", json!({"disk": "hdd"}), Value::Null).await;

    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), "ds");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "nodeSelector": {"disk": "ssd"},
                    "containers": [{"name": "agent", "image": "ferry/echo"}]
                }
            }
        }
    }))
    .unwrap();
    daemon_sets
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();

    // The tainted control plane and the hdd node get none.
    let placed = support::eventually(60, "one pod on each ssd worker", || async {
        let pods = daemon_pods(&client, "ds").await;
        let nodes: BTreeSet<&str> = pods.keys().map(String::as_str).collect();
        (nodes == BTreeSet::from(["node-1", "node-2"])).then_some(pods)
    })
    .await;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "ds");
    let pod = pod_api.get(&placed["node-1"]).await.unwrap();
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("DaemonSet", Some(true))
    );
    let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
    assert!(tolerations.iter().any(|t| {
        t.key.as_deref() == Some("node.kubernetes.io/unreachable")
            && t.effect.as_deref() == Some("NoExecute")
    }));

    let status = support::eventually(60, "the DaemonSet status", || async {
        let ds = daemon_sets.get("agent").await.ok()?;
        let s = ds.status?;
        (s.number_ready == 2 && s.number_available == Some(2)).then_some(s)
    })
    .await;
    assert_eq!(status.desired_number_scheduled, 2);
    assert_eq!(status.current_number_scheduled, 2);
    assert_eq!(status.updated_number_scheduled, Some(2));
    assert_eq!(status.number_misscheduled, 0);

    // Tolerating the taint adds the control plane; a deleted pod comes back.
    pod_api
        .delete(&placed["node-2"], &DeleteParams::default())
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {"tolerations": [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
    ]}}}});
    daemon_sets
        .patch("agent", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    support::eventually(90, "three updated pods", || async {
        let pods = pods_of(&client, "ds", "agent").await;
        let nodes: BTreeSet<String> = pods
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.tolerations.as_ref())
                    .is_some_and(|t| {
                        t.iter().any(|t| {
                            t.key.as_deref() == Some("node-role.kubernetes.io/control-plane")
                        })
                    })
            })
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (pods.len() == 3 && nodes.len() == 3 && nodes.contains("control-plane")).then_some(())
    })
    .await;
    let status = support::eventually(60, "status after the update", || async {
        let s = daemon_sets.get("agent").await.ok()?.status?;
        (s.updated_number_scheduled == Some(3) && s.number_ready == 3).then_some(s)
    })
    .await;
    assert_eq!(status.desired_number_scheduled, 3);

    // A node that stops matching loses its pod.
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": {"disk": "hdd"}}});
    nodes
        .patch("node-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    support::eventually(60, "node-1 loses its pod", || async {
        let pods = daemon_pods(&client, "ds").await;
        let nodes: BTreeSet<&str> = pods.keys().map(String::as_str).collect();
        (nodes == BTreeSet::from(["control-plane", "node-2"])).then_some(())
    })
    .await;
}
