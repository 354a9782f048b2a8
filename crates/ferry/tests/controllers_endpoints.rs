//! `ferry controllers` end to end: the EndpointSlice, Endpoints and
//! mirroring controllers against a real `ferry apiserver`. The tests stand
//! in for node agents: they create Pods bound to Nodes and write the Pods'
//! IPs and readiness through the status subresource.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "default";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

struct Cluster {
    client: kube::Client,
    _controllers: support::Controllers,
    _server: support::Apiserver,
}

async fn cluster(flags: &[&str]) -> Cluster {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let controllers = support::Controllers::start(&server, flags);
    Cluster {
        client,
        _controllers: controllers,
        _server: server,
    }
}

impl Cluster {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn node(&self, name: &str, zone: &str) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }

    async fn service(&self, manifest: Value) -> Service {
        let services: Api<Service> = Api::namespaced(self.client.clone(), NS);
        let svc = serde_json::from_value(manifest).unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap()
    }

    /// A Pod bound to `node`, with container ports `ports` and extra
    /// `spec` fields.
    async fn pod(&self, name: &str, app: &str, node: &str, ports: Value, spec: Value) -> Pod {
        let mut manifest = json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [
                {"name": "app", "image": "nginx", "ports": ports}
            ]}
        });
        for (k, v) in spec.as_object().unwrap() {
            manifest["spec"][k] = v.clone();
        }
        let pod = serde_json::from_value(manifest).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    /// What a node agent reports: running with `ip`, Ready or not.
    async fn status(&self, name: &str, ip: &str, ready: bool) {
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }});
        self.pods()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// A ready Pod of `app` serving on 8080.
    async fn ready_pod(&self, name: &str, app: &str, node: &str, ip: &str) -> Pod {
        let pod = self
            .pod(name, app, node, json!([{"containerPort": 8080}]), json!({}))
            .await;
        self.status(name, ip, true).await;
        pod
    }

    /// Deletes a Pod at once (grace period 0).
    async fn remove_pod(&self, name: &str) {
        self.pods()
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }

    /// The slices of `service` managed by `manager`.
    async fn slices(&self, service: &str, manager: &str) -> Vec<EndpointSlice> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), NS);
        let selector = format!("{SERVICE_NAME}={service},{MANAGED_BY}={manager}");
        api.list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    }

    async fn endpoints(&self, name: &str) -> Option<Endpoints> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), NS);
        api.get_opt(name).await.unwrap()
    }

    /// Waits until the controller's slices of `service` look like `want`.
    async fn wait_slices(&self, service: &str, want: &[SliceView]) -> Vec<EndpointSlice> {
        self.wait_managed_slices(service, SLICE_CONTROLLER, want.to_vec())
            .await
    }

    async fn wait_managed_slices(
        &self,
        service: &str,
        manager: &str,
        mut want: Vec<SliceView>,
    ) -> Vec<EndpointSlice> {
        want.sort();
        let want = &want;
        let what = format!("the {manager} slices of {service} to be {want:?}");
        support::eventually(20, &what, move || async move {
            let slices = self.slices(service, manager).await;
            let mut got: Vec<SliceView> = slices.iter().map(view).collect();
            got.sort();
            (got == *want).then_some(slices)
        })
        .await
    }

    /// Waits until the Endpoints of `service` look like `want`.
    async fn wait_endpoints(&self, service: &str, want: &[SubsetView]) -> Endpoints {
        let mut want = want.to_vec();
        want.sort();
        let want = &want;
        let what = format!("the Endpoints of {service} to be {want:?}");
        support::eventually(20, &what, move || async move {
            let ep = self.endpoints(service).await?;
            let mut got = subsets(&ep);
            got.sort();
            (got == *want).then_some(ep)
        })
        .await
    }
}

const SLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
const MIRROR_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";

/// One endpoint: Pod name (or IP when there is no target), address, ready,
/// serving, terminating, node, zone, hostname.
type EndpointView = (
    String,
    String,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<String>,
);
/// A slice: its ports (name, number) and its endpoints, sorted.
type SliceView = (Vec<(String, i32)>, Vec<EndpointView>);

fn view(slice: &EndpointSlice) -> SliceView {
    let mut ports: Vec<(String, i32)> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or(0)))
        .collect();
    ports.sort();
    let mut endpoints: Vec<EndpointView> = slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let address = e.addresses.join(",");
            let target = e
                .target_ref
                .as_ref()
                .and_then(|t| t.name.clone())
                .unwrap_or_else(|| address.clone());
            (
                target,
                address,
                c.ready,
                c.serving,
                c.terminating,
                e.node_name.clone(),
                e.zone.clone(),
                e.hostname.clone(),
            )
        })
        .collect();
    endpoints.sort();
    (ports, endpoints)
}

/// An endpoint of a Pod as the slice controller writes it.
fn ep(
    pod: &str,
    ip: &str,
    (ready, serving, terminating): (bool, bool, bool),
    node: &str,
    zone: &str,
) -> EndpointView {
    (
        pod.into(),
        ip.into(),
        Some(ready),
        Some(serving),
        Some(terminating),
        Some(node.into()),
        Some(zone.into()),
        None,
    )
}

const READY: (bool, bool, bool) = (true, true, false);

fn ports(list: &[(&str, i32)]) -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = list.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    v.sort();
    v
}

/// A subset: ready IPs, not-ready IPs, ports (name, number), all sorted.
type SubsetView = (Vec<String>, Vec<String>, Vec<(String, i32)>);

fn subsets(ep: &Endpoints) -> Vec<SubsetView> {
    ep.subsets
        .iter()
        .flatten()
        .map(|s| {
            let ips = |l: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
                let mut v: Vec<String> = l.iter().flatten().map(|a| a.ip.clone()).collect();
                v.sort();
                v
            };
            let mut ports: Vec<(String, i32)> = s
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                .collect();
            ports.sort();
            (ips(&s.addresses), ips(&s.not_ready_addresses), ports)
        })
        .collect()
}

fn subset(ready: &[&str], not_ready: &[&str], port_list: &[(&str, i32)]) -> SubsetView {
    let strings = |l: &[&str]| {
        let mut v: Vec<String> = l.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    (strings(ready), strings(not_ready), ports(port_list))
}

fn web_service() -> Value {
    json!({
        "metadata": {"name": "web", "labels": {"team": "blue"}},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

/// Acceptance 1 (the endpoint half): marking Pods Ready fills the
/// EndpointSlice and the Endpoints with the right IPs and ports; scaling
/// updates both lists, in place.
#[tokio::test]
async fn ready_pods_fill_slice_and_endpoints_and_scaling_updates_both() {
    let c = cluster(&[]).await;
    for (i, zone) in ["zone-a", "zone-b", "zone-c"].iter().enumerate() {
        c.node(&format!("lab-node-{}", i + 1), zone).await;
    }
    let svc = c.service(web_service()).await;

    // No Pods yet: one empty placeholder slice and empty Endpoints.
    c.wait_slices("web", &[(vec![], vec![])]).await;
    c.wait_endpoints("web", &[]).await;

    let mut uids = BTreeMap::new();
    for i in 0..3 {
        let name = format!("web-{i}");
        let pod = c
            .pod(
                &name,
                "web",
                &format!("lab-node-{}", i + 1),
                json!([{"containerPort": 8080}]),
                json!({}),
            )
            .await;
        uids.insert(name, pod.metadata.uid.unwrap());
    }
    // Created but without IPs, the Pods are not endpoints yet.
    for i in 0..3 {
        c.status(&format!("web-{i}"), &format!("10.244.{i}.5"), true)
            .await;
    }
    let all = |n: usize| -> Vec<EndpointView> {
        let nodes = ["lab-node-1", "lab-node-2", "lab-node-3", "lab-node-1"];
        let zones = ["zone-a", "zone-b", "zone-c", "zone-a"];
        (0..n)
            .map(|i| {
                ep(
                    &format!("web-{i}"),
                    &format!("10.244.{i}.5"),
                    READY,
                    nodes[i],
                    zones[i],
                )
            })
            .collect()
    };
    let slices = c
        .wait_slices("web", &[(ports(&[("http", 8080)]), all(3))])
        .await;
    let slice = &slices[0];
    let slice_name = slice.metadata.name.clone().unwrap();
    assert!(slice_name.starts_with("web-"), "{slice_name}");
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels[SERVICE_NAME], "web");
    assert_eq!(labels[MANAGED_BY], SLICE_CONTROLLER);
    assert_eq!(labels["team"], "blue", "the Service's labels are copied");
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Service", "web")
    );
    assert_eq!(Some(&owner.uid), svc.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    for e in &slice.endpoints {
        let target = e.target_ref.clone().unwrap();
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(target.namespace.as_deref(), Some(NS));
        assert_eq!(target.uid.as_ref(), uids.get(target.name.as_ref().unwrap()));
    }

    let endpoints = c
        .wait_endpoints(
            "web",
            &[subset(
                &["10.244.0.5", "10.244.1.5", "10.244.2.5"],
                &[],
                &[("http", 8080)],
            )],
        )
        .await;
    let labels = endpoints.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "blue");
    let address = &endpoints.subsets.as_ref().unwrap()[0]
        .addresses
        .as_ref()
        .unwrap()[0];
    assert_eq!(address.node_name.as_deref(), Some("lab-node-1"));
    let target = address.target_ref.clone().unwrap();
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref()),
        (Some("Pod"), Some("web-0"))
    );

    // Scale to 2.
    c.remove_pod("web-2").await;
    let slices = c
        .wait_slices("web", &[(ports(&[("http", 8080)]), all(2))])
        .await;
    assert_eq!(
        slices[0].metadata.name.as_deref(),
        Some(slice_name.as_str()),
        "the slice is updated in place"
    );
    c.wait_endpoints(
        "web",
        &[subset(
            &["10.244.0.5", "10.244.1.5"],
            &[],
            &[("http", 8080)],
        )],
    )
    .await;

    // And back to 4.
    c.ready_pod("web-2", "web", "lab-node-3", "10.244.2.5")
        .await;
    c.ready_pod("web-3", "web", "lab-node-1", "10.244.3.5")
        .await;
    let slices = c
        .wait_slices("web", &[(ports(&[("http", 8080)]), all(4))])
        .await;
    assert_eq!(
        slices[0].metadata.name.as_deref(),
        Some(slice_name.as_str())
    );
    c.wait_endpoints(
        "web",
        &[subset(
            &["10.244.0.5", "10.244.1.5", "10.244.2.5", "10.244.3.5"],
            &[],
            &[("http", 8080)],
        )],
    )
    .await;
}

/// Acceptance 2: named targetPorts resolve per Pod (Pods resolving to
/// different numbers get different slices), and several ports work.
#[tokio::test]
async fn named_target_ports_resolve_per_pod_and_multiple_ports_work() {
    let c = cluster(&[]).await;
    c.node("lab-node-1", "zone-a").await;
    c.service(json!({
        "metadata": {"name": "api"},
        "spec": {"selector": {"app": "api"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "web", "appProtocol": "http"},
            {"name": "metrics", "port": 9100, "targetPort": "metrics"}
        ]}
    }))
    .await;
    let both = |web: i32| json!([{"name": "web", "containerPort": web}, {"name": "metrics", "containerPort": 9100}]);
    c.pod("api-a", "api", "lab-node-1", both(8080), json!({}))
        .await;
    c.pod("api-b", "api", "lab-node-1", both(8081), json!({}))
        .await;
    c.pod(
        "api-c",
        "api",
        "lab-node-1",
        json!([{"name": "web", "containerPort": 8080}]),
        json!({}),
    )
    .await;
    for (name, ip) in [
        ("api-a", "10.244.0.10"),
        ("api-b", "10.244.0.11"),
        ("api-c", "10.244.0.12"),
    ] {
        c.status(name, ip, true).await;
    }
    let one = |pod: &str, ip: &str| vec![ep(pod, ip, READY, "lab-node-1", "zone-a")];
    let slices = c
        .wait_slices(
            "api",
            &[
                (
                    ports(&[("http", 8080), ("metrics", 9100)]),
                    one("api-a", "10.244.0.10"),
                ),
                (
                    ports(&[("http", 8081), ("metrics", 9100)]),
                    one("api-b", "10.244.0.11"),
                ),
                (ports(&[("http", 8080)]), one("api-c", "10.244.0.12")),
            ],
        )
        .await;
    let http = slices
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("http"))
        .unwrap();
    assert_eq!(http.app_protocol.as_deref(), Some("http"));

    // The Endpoints pack ports served by the same Pods together.
    c.wait_endpoints(
        "api",
        &[
            subset(&["10.244.0.10", "10.244.0.12"], &[], &[("http", 8080)]),
            subset(&["10.244.0.11"], &[], &[("http", 8081)]),
            subset(&["10.244.0.10", "10.244.0.11"], &[], &[("metrics", 9100)]),
        ],
    )
    .await;
}

/// Acceptance 2: not-ready and terminating Pods carry the right
/// conditions; the Endpoints list unready Pods as not ready and drop
/// terminating ones.
#[tokio::test]
async fn unready_and_terminating_pods_have_the_right_conditions() {
    let c = cluster(&[]).await;
    c.node("lab-node-1", "zone-a").await;
    c.service(web_service()).await;
    c.ready_pod("ready", "web", "lab-node-1", "10.244.0.2")
        .await;
    c.pod(
        "unready",
        "web",
        "lab-node-1",
        json!([{"containerPort": 8080}]),
        json!({}),
    )
    .await;
    c.status("unready", "10.244.0.3", false).await;
    c.ready_pod("leaving", "web", "lab-node-1", "10.244.0.4")
        .await;
    let http = ports(&[("http", 8080)]);
    c.wait_slices(
        "web",
        &[(
            http.clone(),
            vec![
                ep("leaving", "10.244.0.4", READY, "lab-node-1", "zone-a"),
                ep("ready", "10.244.0.2", READY, "lab-node-1", "zone-a"),
                ep(
                    "unready",
                    "10.244.0.3",
                    (false, false, false),
                    "lab-node-1",
                    "zone-a",
                ),
            ],
        )],
    )
    .await;

    // A graceful delete: the Pod is terminating until its node agent
    // confirms (here: never, until the test removes it).
    c.pods()
        .delete("leaving", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_slices(
        "web",
        &[(
            http.clone(),
            vec![
                ep(
                    "leaving",
                    "10.244.0.4",
                    (false, true, true),
                    "lab-node-1",
                    "zone-a",
                ),
                ep("ready", "10.244.0.2", READY, "lab-node-1", "zone-a"),
                ep(
                    "unready",
                    "10.244.0.3",
                    (false, false, false),
                    "lab-node-1",
                    "zone-a",
                ),
            ],
        )],
    )
    .await;
    c.wait_endpoints(
        "web",
        &[subset(&["10.244.0.2"], &["10.244.0.3"], &[("http", 8080)])],
    )
    .await;

    // The unready Pod turns Ready; the terminating one goes.
    c.status("unready", "10.244.0.3", true).await;
    c.remove_pod("leaving").await;
    c.wait_slices(
        "web",
        &[(
            http,
            vec![
                ep("ready", "10.244.0.2", READY, "lab-node-1", "zone-a"),
                ep("unready", "10.244.0.3", READY, "lab-node-1", "zone-a"),
            ],
        )],
    )
    .await;
    c.wait_endpoints(
        "web",
        &[subset(
            &["10.244.0.2", "10.244.0.3"],
            &[],
            &[("http", 8080)],
        )],
    )
    .await;
}

/// Acceptance 2: a headless Service publishes the hostnames of Pods whose
/// subdomain names it.
#[tokio::test]
async fn headless_service_publishes_hostnames() {
    let c = cluster(&[]).await;
    c.node("lab-node-1", "zone-a").await;
    c.service(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}
    }))
    .await;
    for (name, hostname, subdomain, ip) in [
        ("db-0", "db-0", "db", "10.244.0.20"),
        ("db-x", "other", "elsewhere", "10.244.0.21"),
    ] {
        c.pod(
            name,
            "db",
            "lab-node-1",
            json!([{"containerPort": 5432}]),
            json!({"hostname": hostname, "subdomain": subdomain}),
        )
        .await;
        c.status(name, ip, true).await;
    }
    let mut named = ep("db-0", "10.244.0.20", READY, "lab-node-1", "zone-a");
    named.7 = Some("db-0".into());
    let slices = c
        .wait_slices(
            "db",
            &[(
                ports(&[("", 5432)]),
                vec![
                    named,
                    ep("db-x", "10.244.0.21", READY, "lab-node-1", "zone-a"),
                ],
            )],
        )
        .await;
    let labels = slices[0].metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );

    let endpoints = c
        .wait_endpoints(
            "db",
            &[subset(&["10.244.0.20", "10.244.0.21"], &[], &[("", 5432)])],
        )
        .await;
    let hostnames: BTreeMap<String, Option<String>> = endpoints.subsets.unwrap()[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| (a.ip.clone(), a.hostname.clone()))
        .collect();
    assert_eq!(hostnames["10.244.0.20"].as_deref(), Some("db-0"));
    assert_eq!(hostnames["10.244.0.21"], None);
}

/// Acceptance 2: with `publishNotReadyAddresses`, unready Pods are listed
/// as ready.
#[tokio::test]
async fn publish_not_ready_addresses_lists_unready_pods() {
    let c = cluster(&[]).await;
    c.node("lab-node-1", "zone-a").await;
    c.service(json!({
        "metadata": {"name": "peers"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
                 "selector": {"app": "peers"}, "ports": [{"name": "gossip", "port": 7000}]}
    }))
    .await;
    c.pod("peer-0", "peers", "lab-node-1", json!([]), json!({}))
        .await;
    c.status("peer-0", "10.244.0.30", false).await;
    c.wait_slices(
        "peers",
        &[(
            ports(&[("gossip", 7000)]),
            vec![ep(
                "peer-0",
                "10.244.0.30",
                (true, false, false),
                "lab-node-1",
                "zone-a",
            )],
        )],
    )
    .await;
    c.wait_endpoints(
        "peers",
        &[subset(&["10.244.0.30"], &[], &[("gossip", 7000)])],
    )
    .await;
}

/// Acceptance 3: a Service without a selector and with hand-written
/// Endpoints gets a mirrored EndpointSlice that follows the Endpoints.
#[tokio::test]
async fn selectorless_service_gets_a_mirrored_slice() {
    let c = cluster(&[]).await;
    c.service(json!({
        "metadata": {"name": "external"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .await;
    let api: Api<Endpoints> = Api::namespaced(c.client.clone(), NS);
    let written = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "external", "labels": {"origin": "hand"}},
                "subsets": [{
                    "addresses": [{"ip": "192.0.2.10", "nodeName": "outside"}],
                    "notReadyAddresses": [{"ip": "192.0.2.11"}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
                }]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mirrored = |ips: &[(&str, bool)]| -> Vec<SliceView> {
        vec![(
            ports(&[("http", 8080)]),
            ips.iter()
                .map(|(ip, ready)| {
                    let node = (*ip == "192.0.2.10").then(|| "outside".to_string());
                    (
                        ip.to_string(),
                        ip.to_string(),
                        Some(*ready),
                        None,
                        None,
                        node,
                        None,
                        None,
                    )
                })
                .collect(),
        )]
    };
    let slices = c
        .wait_managed_slices(
            "external",
            MIRROR_CONTROLLER,
            mirrored(&[("192.0.2.10", true), ("192.0.2.11", false)]),
        )
        .await;
    let labels = slices[0].metadata.labels.clone().unwrap();
    assert_eq!(labels["origin"], "hand", "the Endpoints' labels are copied");
    let owner = &slices[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Endpoints", "external")
    );

    // The Endpoints controller leaves hand-written Endpoints alone, and
    // the slice controller makes no slices for a selectorless Service.
    let now = c.endpoints("external").await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        written.metadata.resource_version
    );
    assert!(c.slices("external", SLICE_CONTROLLER).await.is_empty());

    // Editing the Endpoints updates the mirror in place.
    let name = slices[0].metadata.name.clone();
    api.patch(
        "external",
        &PatchParams::default(),
        &Patch::Merge(json!({"subsets": [{
            "addresses": [{"ip": "192.0.2.10", "nodeName": "outside"}, {"ip": "192.0.2.12"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }]})),
    )
    .await
    .unwrap();
    let slices = c
        .wait_managed_slices(
            "external",
            MIRROR_CONTROLLER,
            mirrored(&[("192.0.2.10", true), ("192.0.2.12", true)]),
        )
        .await;
    assert_eq!(slices[0].metadata.name, name);

    // skip-mirror turns mirroring off.
    api.patch(
        "external",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}}),
        ),
    )
    .await
    .unwrap();
    c.wait_managed_slices("external", MIRROR_CONTROLLER, vec![])
        .await;
}

/// Deleting a Service deletes its slices and its (controller-made)
/// Endpoints; hand-written Endpoints stay, their mirrors go.
#[tokio::test]
async fn deleting_services_deletes_their_slices_and_endpoints() {
    let c = cluster(&[]).await;
    c.node("lab-node-1", "zone-a").await;
    c.service(web_service()).await;
    c.ready_pod("web-0", "web", "lab-node-1", "10.244.0.2")
        .await;
    c.wait_slices(
        "web",
        &[(
            ports(&[("http", 8080)]),
            vec![ep("web-0", "10.244.0.2", READY, "lab-node-1", "zone-a")],
        )],
    )
    .await;
    c.wait_endpoints("web", &[subset(&["10.244.0.2"], &[], &[("http", 8080)])])
        .await;

    c.service(json!({"metadata": {"name": "external"}, "spec": {"ports": [{"port": 80}]}}))
        .await;
    let api: Api<Endpoints> = Api::namespaced(c.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "external"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}]
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let c = &c;
    support::eventually(20, "a mirrored slice", move || async move {
        (!c.slices("external", MIRROR_CONTROLLER).await.is_empty()).then_some(())
    })
    .await;

    let services: Api<Service> = Api::namespaced(c.client.clone(), NS);
    for name in ["web", "external"] {
        services
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    support::eventually(20, "slices and Endpoints of web gone", move || async move {
        let slices = c.slices("web", SLICE_CONTROLLER).await;
        let mirrors = c.slices("external", MIRROR_CONTROLLER).await;
        let ep = c.endpoints("web").await;
        (slices.is_empty() && mirrors.is_empty() && ep.is_none()).then_some(())
    })
    .await;
    assert!(
        c.endpoints("external").await.is_some(),
        "hand-written Endpoints are the user's"
    );
}

/// `--max-endpoints-per-slice` caps every slice.
#[tokio::test]
async fn max_endpoints_per_slice_splits_slices() {
    let c = cluster(&["--max-endpoints-per-slice", "2"]).await;
    c.node("lab-node-1", "zone-a").await;
    c.service(web_service()).await;
    for i in 0..5 {
        c.ready_pod(
            &format!("web-{i}"),
            "web",
            "lab-node-1",
            &format!("10.244.0.{}", i + 2),
        )
        .await;
    }
    let c = &c;
    support::eventually(
        20,
        "5 endpoints in slices of at most 2",
        move || async move {
            let slices = c.slices("web", SLICE_CONTROLLER).await;
            let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
            let ips: BTreeSet<String> = slices
                .iter()
                .flat_map(|s| s.endpoints.iter().map(|e| e.addresses[0].clone()))
                .collect();
            (ips.len() == 5 && sizes.iter().all(|n| *n <= 2) && sizes.len() == 3).then_some(())
        },
    )
    .await;
}

/// A Pod on a Node the controller has not seen waits for the Node, then
/// gets its zone.
#[tokio::test]
async fn pods_on_unknown_nodes_wait_for_their_node() {
    let c = cluster(&[]).await;
    c.node("lab-node-1", "zone-a").await;
    c.service(web_service()).await;
    c.ready_pod("web-0", "web", "lab-node-1", "10.244.0.2")
        .await;
    c.ready_pod("web-1", "web", "lab-node-2", "10.244.1.2")
        .await;
    let http = ports(&[("http", 8080)]);
    c.wait_slices(
        "web",
        &[(
            http.clone(),
            vec![ep("web-0", "10.244.0.2", READY, "lab-node-1", "zone-a")],
        )],
    )
    .await;
    c.node("lab-node-2", "zone-b").await;
    c.wait_slices(
        "web",
        &[(
            http,
            vec![
                ep("web-0", "10.244.0.2", READY, "lab-node-1", "zone-a"),
                ep("web-1", "10.244.1.2", READY, "lab-node-2", "zone-b"),
            ],
        )],
    )
    .await;
}
