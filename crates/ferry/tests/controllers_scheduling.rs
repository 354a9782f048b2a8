//! `ferry controllers` placing things: the scheduler (spreading, taints and
//! tolerations, nodeSelector, `FailedScheduling`), LoadBalancer IPAM
//! (issue 4, point 6) and the node lifecycle (heartbeat Leases). The tests
//! stand in for node agents by writing Node and Pod status and renewing
//! Leases through the API.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

/// Creates a Node and reports it Ready, as its node agent would.
async fn ready_node(client: &kube::Client, name: &str, labels: Value, taints: Value) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    set_node_ready(client, name).await;
}

async fn set_node_ready(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Time(Timestamp::now());
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .unwrap();
}

async fn create_pod(client: &kube::Client, name: &str, spec: Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut spec = spec;
    spec["containers"] = json!([{"name": "web", "image": "nginx"}]);
    let pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn node_of(client: &kube::Client, pod: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.get(pod).await.ok()?.spec?.node_name
}

/// Waits until every Pod in `names` has a node; returns Pod → node.
async fn wait_scheduled(client: &kube::Client, names: &[&str]) -> BTreeMap<String, String> {
    support::eventually(30, &format!("{names:?} are scheduled"), || async {
        let mut placed = BTreeMap::new();
        for name in names {
            placed.insert(name.to_string(), node_of(client, name).await?);
        }
        Some(placed)
    })
    .await
}

/// Events about `object` with `reason`, oldest first.
async fn events(client: &kube::Client, object: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let fields = format!("involvedObject.name={object},reason={reason}");
    api.list(&ListParams::default().fields(&fields))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn wait_event(client: &kube::Client, object: &str, reason: &str) -> Event {
    support::eventually(30, &format!("a {reason} event for {object}"), || async {
        events(client, object, reason).await.into_iter().next()
    })
    .await
}

fn condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

const CLASSIC_MESSAGE: &str = "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";

#[tokio::test]
async fn pods_spread_one_per_ready_node() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    for i in 1..=3 {
        ready_node(&client, &format!("lab-node-{i}"), json!({}), json!([])).await;
    }
    // A Pod for another scheduler is seen first and must stay unplaced.
    create_pod(
        &client,
        "elsewhere",
        json!({"schedulerName": "my-scheduler"}),
    )
    .await;
    let _controllers = support::Controllers::start(&server, &[]);
    for name in ["web-a", "web-b", "web-c"] {
        create_pod(&client, name, json!({})).await;
    }
    let placed = wait_scheduled(&client, &["web-a", "web-b", "web-c"]).await;
    let nodes: BTreeSet<&String> = placed.values().collect();
    assert_eq!(nodes.len(), 3, "one Pod per node: {placed:?}");
    assert_eq!(node_of(&client, "elsewhere").await, None);

    // Binding reports PodScheduled=True and a Scheduled event.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = support::eventually(20, "PodScheduled=True", || async {
        let pod = pods.get("web-a").await.ok()?;
        (condition(&pod, "PodScheduled")?.status == "True").then_some(pod)
    })
    .await;
    let node = pod.spec.unwrap().node_name.unwrap();
    let scheduled = wait_event(&client, "web-a", "Scheduled").await;
    assert_eq!(
        scheduled.message.as_deref(),
        Some(format!("Successfully assigned default/web-a to {node}").as_str())
    );
    assert_eq!(
        scheduled.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );

    // Three more: one more per node again.
    for name in ["web-d", "web-e", "web-f"] {
        create_pod(&client, name, json!({})).await;
    }
    let all = wait_scheduled(
        &client,
        &["web-a", "web-b", "web-c", "web-d", "web-e", "web-f"],
    )
    .await;
    let mut per_node: BTreeMap<&String, usize> = BTreeMap::new();
    for node in all.values() {
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(
        per_node.values().collect::<Vec<_>>(),
        [&2, &2, &2],
        "{all:?}"
    );
}

#[tokio::test]
async fn taints_tolerations_and_node_selectors() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    ready_node(
        &client,
        "lab-node-1",
        json!({"disk": "ssd", CONTROL_PLANE: ""}),
        json!([{"key": CONTROL_PLANE, "effect": "NoSchedule"}]),
    )
    .await;
    ready_node(&client, "lab-node-2", json!({"disk": "hdd"}), json!([])).await;
    ready_node(&client, "lab-node-3", json!({}), json!([])).await;
    // Placed by hand: the scheduler leaves it where it is.
    create_pod(&client, "pinned", json!({"nodeName": "lab-node-1"})).await;
    let _controllers = support::Controllers::start(&server, &[]);

    // Only the control plane has an SSD, and it is tainted.
    create_pod(
        &client,
        "wants-ssd",
        json!({"nodeSelector": {"disk": "ssd"}}),
    )
    .await;
    let failed = wait_event(&client, "wants-ssd", "FailedScheduling").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.message.as_deref(), Some(CLASSIC_MESSAGE));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pending = support::eventually(20, "PodScheduled=False", || async {
        let pod = pods.get("wants-ssd").await.ok()?;
        let c = condition(&pod, "PodScheduled")?;
        (c.status == "False").then(|| c.clone())
    })
    .await;
    assert_eq!(pending.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(pending.message.as_deref(), Some(CLASSIC_MESSAGE));

    // A toleration lets a Pod onto the control plane.
    create_pod(
        &client,
        "tolerant",
        json!({"nodeSelector": {"disk": "ssd"}, "tolerations": [
            {"key": CONTROL_PLANE, "operator": "Exists", "effect": "NoSchedule"}]}),
    )
    .await;
    // So does an empty key with Exists, which tolerates everything.
    create_pod(
        &client,
        "tolerates-all",
        json!({"nodeSelector": {"disk": "ssd"}, "tolerations": [{"operator": "Exists"}]}),
    )
    .await;
    // A selector that matches a worker.
    create_pod(
        &client,
        "wants-hdd",
        json!({"nodeSelector": {"disk": "hdd"}}),
    )
    .await;
    // Plain Pods never land on the tainted control plane.
    let plain = ["plain-1", "plain-2", "plain-3", "plain-4"];
    for name in plain {
        create_pod(&client, name, json!({})).await;
    }
    let mut names = vec!["tolerant", "tolerates-all", "wants-hdd", "pinned"];
    names.extend(plain);
    let placed = wait_scheduled(&client, &names).await;
    assert_eq!(placed["tolerant"], "lab-node-1");
    assert_eq!(placed["tolerates-all"], "lab-node-1");
    assert_eq!(placed["wants-hdd"], "lab-node-2");
    assert_eq!(placed["pinned"], "lab-node-1");
    for name in plain {
        assert_ne!(
            placed[name], "lab-node-1",
            "{name} went to the control plane"
        );
    }
    // Spread: whenever wants-hdd lands on lab-node-2, the plain four still
    // split 2/2 between the two workers.
    let on_3 = plain.iter().filter(|n| placed[**n] == "lab-node-3").count();
    assert_eq!(on_3, 2, "{placed:?}");
    assert_eq!(node_of(&client, "wants-ssd").await, None);

    // Removing the taint (`kubectl taint nodes --all
    // node-role.kubernetes.io/control-plane-`) lets the waiting Pod in.
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            "lab-node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .unwrap();
    let placed = wait_scheduled(&client, &["wants-ssd"]).await;
    assert_eq!(placed["wants-ssd"], "lab-node-1");
}

#[tokio::test]
async fn nothing_fits_until_a_node_appears() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let _controllers = support::Controllers::start(&server, &[]);
    create_pod(&client, "early", json!({})).await;
    let failed = wait_event(&client, "early", "FailedScheduling").await;
    assert_eq!(
        failed.message.as_deref(),
        Some("no nodes available to schedule pods")
    );

    // A node that is not Ready yet does not help; its taint is named.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({"metadata": {"name": "lab-node-1"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let not_ready = "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    support::eventually(30, "a FailedScheduling event naming not-ready", || async {
        events(&client, "early", "FailedScheduling")
            .await
            .into_iter()
            .find(|e| e.message.as_deref() == Some(not_ready))
    })
    .await;
    assert_eq!(node_of(&client, "early").await, None);

    // Once it reports Ready, the Pod goes there.
    set_node_ready(&client, "lab-node-1").await;
    let placed = wait_scheduled(&client, &["early"]).await;
    assert_eq!(placed["early"], "lab-node-1");
}

fn load_balancer(name: &str, extra: Value) -> Service {
    let mut spec = json!({"type": "LoadBalancer", "selector": {"app": name},
        "ports": [{"port": 80, "targetPort": 8080}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

async fn wait_ip(services: &Api<Service>, name: &str) -> String {
    support::eventually(30, &format!("{name} gets a load balancer IP"), || async {
        let svc = services.get(name).await.ok()?;
        let ips = ingress_ips(&svc);
        assert!(ips.len() <= 1, "{name}: {ips:?}");
        ips.into_iter().next()
    })
    .await
}

async fn all_ips(services: &Api<Service>) -> BTreeMap<String, String> {
    services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| {
            let ip = ingress_ips(&s).into_iter().next()?;
            Some((s.metadata.name?, ip))
        })
        .collect()
}

#[tokio::test]
async fn load_balancer_ips_come_from_the_pool() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pool = ["--load-balancer-pool", "172.30.0.200/30"];
    let mut controllers = support::Controllers::start(&server, &pool);
    let pp = PostParams::default();

    services
        .create(&pp, &load_balancer("a", json!({})))
        .await
        .unwrap();
    assert_eq!(wait_ip(&services, "a").await, "172.30.0.200");
    // spec.loadBalancerIP is honoured.
    let wanted = json!({"loadBalancerIP": "172.30.0.203"});
    services
        .create(&pp, &load_balancer("b", wanted))
        .await
        .unwrap();
    assert_eq!(wait_ip(&services, "b").await, "172.30.0.203");
    let allocated = wait_event(&client, "b", "IPAllocated").await;
    assert_eq!(
        allocated.message.as_deref(),
        Some("Assigned IP [\"172.30.0.203\"]")
    );
    services
        .create(&pp, &load_balancer("c", json!({})))
        .await
        .unwrap();
    assert_eq!(wait_ip(&services, "c").await, "172.30.0.201");
    services
        .create(&pp, &load_balancer("d", json!({})))
        .await
        .unwrap();
    assert_eq!(wait_ip(&services, "d").await, "172.30.0.202");

    // A Service of another class is somebody else's.
    let other = json!({"loadBalancerClass": "example.com/other-lb"});
    services
        .create(&pp, &load_balancer("other", other))
        .await
        .unwrap();
    // The pool is exhausted: an Event, and the Service stays pending.
    services
        .create(&pp, &load_balancer("e", json!({})))
        .await
        .unwrap();
    let failed = wait_event(&client, "e", "AllocationFailed").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Failed to allocate IP for \"default/e\": no available IPs")
    );
    assert!(ingress_ips(&services.get("e").await.unwrap()).is_empty());
    if support::kubectl_available() {
        let table = server.kubectl_ok(&["get", "svc", "e", "--no-headers"]);
        assert!(table.contains("<pending>"), "{table}");
    }
    // Asking for an address that is taken fails too.
    let taken = json!({"loadBalancerIP": "172.30.0.200"});
    services
        .create(&pp, &load_balancer("f", taken))
        .await
        .unwrap();
    let failed = wait_event(&client, "f", "AllocationFailed").await;
    assert_eq!(
        failed.message.as_deref(),
        Some(
            "Failed to allocate IP for \"default/f\": 172.30.0.200 is already assigned to default/a"
        )
    );

    // Deleting a Service frees its address for the oldest waiting one
    // (and the controller is still alive to hand it out).
    services
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(wait_ip(&services, "e").await, "172.30.0.200");
    assert!(ingress_ips(&services.get("f").await.unwrap()).is_empty());
    assert!(ingress_ips(&services.get("other").await.unwrap()).is_empty());

    // Turning a LoadBalancer into a ClusterIP Service releases its address
    // and clears its status.
    services
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
        )
        .await
        .unwrap();
    support::eventually(30, "c loses its load balancer IP", || async {
        ingress_ips(&services.get("c").await.ok()?)
            .is_empty()
            .then_some(())
    })
    .await;
    services
        .create(&pp, &load_balancer("g", json!({})))
        .await
        .unwrap();
    assert_eq!(wait_ip(&services, "g").await, "172.30.0.201");

    // A restarted controller keeps every assignment and hands out only
    // what is free.
    let before = all_ips(&services).await;
    controllers.kill();
    services
        .delete("d", &DeleteParams::default())
        .await
        .unwrap();
    // (Without leader election: the killed instance's lease would hold
    // the new one back for its full duration.)
    let restart = [pool[0], pool[1], "--leader-elect=false"];
    let _controllers = support::Controllers::start(&server, &restart);
    services
        .create(&pp, &load_balancer("h", json!({})))
        .await
        .unwrap();
    assert_eq!(wait_ip(&services, "h").await, "172.30.0.202");
    let after = all_ips(&services).await;
    for (name, ip) in &before {
        if name != "d" {
            assert_eq!(after.get(name), Some(ip), "{name} kept its address");
        }
    }
    let unique: BTreeSet<&String> = after.values().collect();
    assert_eq!(unique.len(), after.len(), "no address twice: {after:?}");
}

async fn write_lease(client: &kube::Client, node: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": 40,
        "renewTime": MicroTime(Timestamp::now())});
    if leases.get_opt(node).await.unwrap().is_some() {
        leases
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
    } else {
        let lease =
            serde_json::from_value(json!({"metadata": {"name": node}, "spec": spec})).unwrap();
        leases.create(&PostParams::default(), &lease).await.unwrap();
    }
}

async fn set_pod_ready(client: &kube::Client, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let now = Time(Timestamp::now());
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.5",
        "podIPs": [{"ip": "10.244.0.5"}], "conditions": [
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
        .await
        .unwrap();
}

fn unreachable_taints(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.key == "node.kubernetes.io/unreachable")
        .map(|t| t.effect.clone())
        .collect()
}

#[tokio::test]
async fn a_node_whose_lease_expires_goes_not_ready_and_comes_back() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    ready_node(&client, "lab-node-1", json!({}), json!([])).await;
    write_lease(&client, "lab-node-1").await;
    create_pod(&client, "web", json!({"nodeName": "lab-node-1"})).await;
    set_pod_ready(&client, "web").await;
    let _controllers = support::Controllers::start(&server, &["--node-monitor-grace-period", "2"]);

    // No renewals: the node goes Unknown and is tainted.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = support::eventually(60, "lab-node-1 becomes NotReady and tainted", || async {
        let node = nodes.get("lab-node-1").await.ok()?;
        let ready = node
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (ready.status == "Unknown" && unreachable_taints(&node).len() == 2).then_some((node, ready))
    })
    .await;
    let (node, ready) = node;
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let mut effects = unreachable_taints(&node);
    effects.sort();
    assert_eq!(effects, ["NoExecute", "NoSchedule"]);
    wait_event(&client, "lab-node-1", "NodeNotReady").await;

    // Its Pod is no longer Ready, so it leaves the endpoints.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    support::eventually(30, "the pod's Ready condition turns False", || async {
        let pod = pods.get("web").await.ok()?;
        (condition(&pod, "Ready")?.status == "False").then_some(())
    })
    .await;
    wait_event(&client, "web", "NodeNotReady").await;

    // New Pods stay away from the unreachable node.
    create_pod(&client, "later", json!({})).await;
    let unreachable = "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    support::eventually(30, "later cannot be scheduled", || async {
        events(&client, "later", "FailedScheduling")
            .await
            .into_iter()
            .find(|e| e.message.as_deref() == Some(unreachable))
    })
    .await;

    // The node agent comes back: it renews its Lease (and keeps doing
    // so), then reports Ready.
    write_lease(&client, "lab-node-1").await;
    let renewer = tokio::spawn({
        let client = client.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                write_lease(&client, "lab-node-1").await;
            }
        }
    });
    set_node_ready(&client, "lab-node-1").await;
    support::eventually(30, "the unreachable taints are removed", || async {
        let node = nodes.get("lab-node-1").await.ok()?;
        unreachable_taints(&node).is_empty().then_some(())
    })
    .await;
    wait_event(&client, "lab-node-1", "NodeReady").await;
    // The waiting Pod goes there now; the agent reports its Pods again.
    let placed = wait_scheduled(&client, &["later"]).await;
    assert_eq!(placed["later"], "lab-node-1");
    set_pod_ready(&client, "web").await;
    let pod = pods.get("web").await.unwrap();
    assert_eq!(condition(&pod, "Ready").unwrap().status, "True");
    renewer.abort();
}
