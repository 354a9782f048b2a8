//! `ferry controllers` basics: node IPAM and leader election.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

async fn create_nodes(client: &kube::Client, count: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 1..=count {
        let node =
            serde_json::from_value(json!({"metadata": {"name": format!("lab-node-{i}")}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
}

/// Node name → podCIDR, once every node has one.
async fn pod_cidrs(client: &kube::Client, count: usize) -> BTreeMap<String, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    support::eventually(20, "every node gets a podCIDR", || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            let cidrs: BTreeMap<String, String> = list
                .items
                .into_iter()
                .filter_map(|n| {
                    let spec = n.spec?;
                    assert_eq!(
                        spec.pod_cidrs.as_ref().map(|c| c.len()),
                        spec.pod_cidr.as_ref().map(|_| 1)
                    );
                    Some((n.metadata.name?, spec.pod_cidr?))
                })
                .collect();
            (cidrs.len() == count).then_some(cidrs)
        }
    })
    .await
}

#[tokio::test]
async fn nodes_get_distinct_subnets_that_survive_a_restart() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    create_nodes(&client, 3).await;
    let mut controllers = support::Controllers::start(&server, &[]);
    let first = pod_cidrs(&client, 3).await;
    let unique: std::collections::BTreeSet<_> = first.values().collect();
    assert_eq!(unique.len(), 3, "{first:?}");
    for cidr in first.values() {
        assert!(
            cidr.starts_with("10.244.") && cidr.ends_with(".0/24"),
            "{cidr}"
        );
    }
    controllers.kill();

    // A restarted controller keeps the assignments and only fills in the
    // new node.
    create_nodes_from(&client, 4).await;
    let _controllers = support::Controllers::start(&server, &[]);
    let second = pod_cidrs(&client, 4).await;
    for (node, cidr) in &first {
        assert_eq!(second.get(node), Some(cidr), "{node} kept its subnet");
    }
    let unique: std::collections::BTreeSet<_> = second.values().collect();
    assert_eq!(unique.len(), 4);
}

async fn create_nodes_from(client: &kube::Client, index: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node =
        serde_json::from_value(json!({"metadata": {"name": format!("lab-node-{index}")}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

#[tokio::test]
async fn cluster_cidr_flag_gives_the_tutorial_layout() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    create_nodes(&client, 3).await;
    let _controllers = support::Controllers::start(&server, &["--cluster-cidr", "10.2.0.0/16"]);
    let cidrs: Vec<String> = pod_cidrs(&client, 3).await.into_values().collect();
    assert_eq!(cidrs, ["10.2.0.0/24", "10.2.1.0/24", "10.2.2.0/24"]);
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease_seconds = 4;
    let flags = ["--leader-elect-lease-duration", "4"];
    let mut a = support::Controllers::start(&server, &flags);
    let leader = support::eventually(20, "a leader", || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("ferry-controllers")
                .await
                .ok()?
                .as_ref()
                .and_then(holder)
        }
    })
    .await;
    assert!(leader.ends_with(&format!("_{}", a.pid())), "{leader}");
    let mut b = support::Controllers::start(&server, &flags);
    let standby = format!("_{}", b.pid());
    // A ReplicaSet whose Pods must not be doubled by the handover.
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod_names = || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap();
            list.items
                .into_iter()
                .map(|p| p.metadata.name.unwrap())
                .collect::<std::collections::BTreeSet<_>>()
        }
    };
    let before = support::eventually(20, "the leader creates 3 pods", || async {
        let names = pod_names().await;
        (names.len() == 3).then_some(names)
    })
    .await;
    // The standby waits while the leader renews.
    tokio::time::sleep(Duration::from_secs(lease_seconds + 2)).await;
    let still = holder(&leases.get("ferry-controllers").await.unwrap()).unwrap();
    assert_eq!(still, leader, "the leader keeps its lease while alive");

    a.kill();
    let killed = Instant::now();
    let new_leader = support::eventually(lease_seconds + 3, "the standby takes over", || {
        let leases = leases.clone();
        let standby = standby.clone();
        async move {
            let h = holder(&leases.get("ferry-controllers").await.ok()?)?;
            h.ends_with(&standby).then_some(h)
        }
    })
    .await;
    assert_ne!(new_leader, leader);
    let lease = leases.get("ferry-controllers").await.unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
    eprintln!("takeover after {:?}", killed.elapsed());
    // The new leader syncs the ReplicaSet and finds its 3 Pods: the same
    // ones, none added. Its status write shows it has synced.
    support::eventually(20, "the new leader syncs the ReplicaSet", || {
        let sets = sets.clone();
        async move {
            let rs = sets.get("web").await.ok()?;
            (rs.status?.replicas == 3).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pod_names().await,
        before,
        "no Pod was added or replaced during the handover"
    );
    b.kill();
}
