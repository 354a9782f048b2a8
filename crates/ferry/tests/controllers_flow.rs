//! Issue 4, point 1 end to end, with every controller running together:
//! a Deployment's Pods are spread over three nodes, fill the EndpointSlice
//! and Endpoints once Ready, follow a scale-down and a deleted Pod, and
//! leave the endpoints while their node's heartbeat has stopped. A small
//! stand-in kubelet in this file plays the node agents through the API.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const NODES: [&str; 3] = ["lab-node-1", "lab-node-2", "lab-node-3"];

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn seconds_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Plays the node agents: heartbeats for the live nodes, Running/Ready
/// status for their Pods, and the final delete of terminating Pods.
async fn kubelets(client: kube::Client, stopped: Arc<Mutex<HashSet<String>>>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::all(client.clone());
    let mut next_ip: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        let stopped_now = stopped.lock().unwrap().clone();
        for node in NODES.iter().filter(|n| !stopped_now.contains(**n)) {
            let renew = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now()}});
            if leases.get_opt(node).await.ok().flatten().is_some() {
                let _ = leases
                    .patch(node, &PatchParams::default(), &Patch::Merge(&renew))
                    .await;
            } else {
                let mut lease = renew.clone();
                lease["metadata"] = json!({"name": node});
                let _ = leases
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(lease).unwrap(),
                    )
                    .await;
            }
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "KubeletReady", "lastHeartbeatTime": seconds_now(),
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
            let _ = nodes
                .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
                .await;
        }
        for pod in pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let (Some(name), Some(ns)) =
                (pod.metadata.name.clone(), pod.metadata.namespace.clone())
            else {
                continue;
            };
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                continue;
            }
            if stopped_now.contains(&node) {
                continue;
            }
            let status = pod.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                continue;
            }
            let ip = match status.pod_ip.clone() {
                Some(ip) => ip,
                None => {
                    let index = NODES.iter().position(|n| *n == node).unwrap();
                    let host = next_ip.entry(node.clone()).or_insert(10);
                    *host += 1;
                    format!("10.244.{index}.{host}")
                }
            };
            let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
                "containerStatuses": [{"name": "web", "image": "nginx", "imageID": "", "ready": true,
                    "restartCount": 0, "started": true, "state": {"running": {}}}]}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ready endpoint addresses of the Service, from its EndpointSlices.
async fn ready_in_slices(slices: &Api<EndpointSlice>) -> BTreeSet<String> {
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

async fn ready_in_endpoints(endpoints: &Api<Endpoints>) -> BTreeSet<String> {
    let Ok(ep) = endpoints.get("web").await else {
        return BTreeSet::new();
    };
    ep.subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect()
}

/// Pod IPs of the Deployment's Ready Pods, by node.
async fn ready_pods(pods: &Api<Pod>) -> BTreeMap<String, String> {
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some((status.pod_ip?, p.spec?.node_name?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_spread_fill_endpoints_and_follow_changes() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in NODES {
        let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let stopped: Arc<Mutex<HashSet<String>>> = Arc::default();
    let kubelet = tokio::spawn(kubelets(client.clone(), stopped.clone()));
    let _controllers = support::Controllers::start(&server, &["--node-monitor-grace-period", "3"]);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let deploy = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let svc = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": "http"}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();

    // Three Ready Pods, one per node, with the pod-template-hash label.
    let ready = support::eventually(60, "3 ready pods on 3 nodes", || async {
        let ready = ready_pods(&pods).await;
        let nodes: BTreeSet<&String> = ready.values().collect();
        (ready.len() == 3 && nodes.len() == 3).then_some(ready)
    })
    .await;
    for p in pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
    {
        assert!(p.metadata.labels.unwrap().contains_key("pod-template-hash"));
    }
    let ips: BTreeSet<String> = ready.keys().cloned().collect();
    support::eventually(30, "the slice and Endpoints list the 3 pods", || async {
        (ready_in_slices(&slices).await == ips && ready_in_endpoints(&endpoints).await == ips)
            .then_some(())
    })
    .await;
    // The named targetPort resolved to the container port.
    let slice = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|s| !s.endpoints.is_empty())
        .unwrap();
    assert_eq!(slice.ports.unwrap()[0].port, Some(80));

    // Scale to 2: both lists follow.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let two = support::eventually(60, "2 ready pods in both lists", || async {
        let ready: BTreeSet<String> = ready_pods(&pods).await.into_keys().collect();
        (ready.len() == 2
            && ready_in_slices(&slices).await == ready
            && ready_in_endpoints(&endpoints).await == ready)
            .then_some(ready)
    })
    .await;

    // A deleted Pod is replaced, and the lists follow.
    // The victim is one of the two serving Pods, not the one the scale-down
    // is still removing.
    let victim = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .is_some_and(|ip| two.contains(ip))
        })
        .and_then(|p| p.metadata.name)
        .unwrap();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(60, "the deleted pod is replaced", || async {
        let ready: BTreeSet<String> = ready_pods(&pods).await.into_keys().collect();
        (ready.len() == 2 && ready != two && ready_in_slices(&slices).await == ready).then_some(())
    })
    .await;

    // A node whose heartbeat stops: its Pod leaves the endpoints, and
    // comes back with the node.
    let by_node = ready_pods(&pods).await;
    let (ip, node) = by_node
        .iter()
        .next()
        .map(|(i, n)| (i.clone(), n.clone()))
        .unwrap();
    stopped.lock().unwrap().insert(node.clone());
    support::eventually(
        30,
        "the pod of the silent node leaves the endpoints",
        || async {
            let slice_ready = ready_in_slices(&slices).await;
            (!slice_ready.contains(&ip) && !ready_in_endpoints(&endpoints).await.contains(&ip))
                .then_some(())
        },
    )
    .await;
    stopped.lock().unwrap().remove(&node);
    support::eventually(30, "the pod comes back with its node", || async {
        ready_in_slices(&slices).await.contains(&ip).then_some(())
    })
    .await;
    kubelet.abort();
}
