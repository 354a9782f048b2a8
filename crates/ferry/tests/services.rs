//! The Service registry as users meet it: ClusterIP and NodePort
//! allocation with kube-apiserver's messages, allocations that survive
//! restarts and concurrency, the `kubernetes` Service, and legacy Ingress.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn service(name: &str, node_port: Option<i32>) -> Service {
    let mut port = json!({"port": 8080, "targetPort": 80});
    let mut spec = json!({"selector": {"app": name}, "ports": [port.clone()]});
    if let Some(n) = node_port {
        port["nodePort"] = json!(n);
        spec = json!({"type": "NodePort", "selector": {"app": name}, "ports": [port]});
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn node_port_service(name: &str) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [{"port": 80}]}}))
    .unwrap()
}

fn in_service_cidr(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap();
    // 10.96.0.0/12
    u32::from(ip) & 0xfff0_0000 == u32::from(Ipv4Addr::new(10, 96, 0, 0))
}

#[tokio::test]
async fn cluster_ip_and_node_port_allocation_with_kubernetes_messages() {
    if !support::kubectl_available() {
        return;
    }
    let server = support::Apiserver::start();
    let manifest = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: NodePort\n  selector:\n    app: web\n  ports:\n  - port: 8080\n    targetPort: 80\n    nodePort: 30120\n"
        )
    };
    let out = server.kubectl_stdin(&["create", "-f", "-"], Some(&manifest("a")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = server.kubectl_ok(&["get", "svc", "a"]);
    assert!(table.contains("8080:30120/TCP"), "{table}");
    let ip = server.kubectl_ok(&["get", "svc", "a", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        in_service_cidr(&ip),
        "ClusterIP {ip} is outside 10.96.0.0/12"
    );

    let out = server.kubectl_stdin(&["create", "-f", "-"], Some(&manifest("b")));
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "The Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30120: provided port is already allocated"
    );
    let out = server.kubectl(&["get", "svc", "b"]);
    assert!(!out.status.success(), "the refused Service was not stored");

    // Deleting the first frees the port for the second.
    server.kubectl_ok(&["delete", "svc", "a"]);
    let out = server.kubectl_stdin(&["create", "-f", "-"], Some(&manifest("b")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn two_thousand_node_ports_are_unique_and_in_range() {
    let server = support::Apiserver::start();
    let client = server.client().await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let names: Vec<String> = (0..2000).map(|i| format!("s{i:04}")).collect();
    for chunk in names.chunks(100) {
        let creates = chunk.iter().map(|n| {
            let api = api.clone();
            let svc = node_port_service(n);
            async move { api.create(&PostParams::default(), &svc).await.unwrap() }
        });
        join_all(creates).await;
    }
    let list = api.list(&ListParams::default()).await.unwrap();
    let mut ports = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for svc in &list.items {
        let spec = svc.spec.as_ref().unwrap();
        ips.insert(spec.cluster_ip.clone().unwrap());
        if svc.metadata.name.as_deref() == Some("kubernetes") {
            continue;
        }
        let port = spec.ports.as_ref().unwrap()[0].node_port.unwrap();
        assert!(
            (30000..=32767).contains(&port),
            "nodePort {port} out of range"
        );
        assert!(ports.insert(port), "nodePort {port} given twice");
    }
    assert_eq!(ports.len(), 2000);
    assert_eq!(ips.len(), 2001, "every Service has its own ClusterIP");

    // A freed port can be asked for again.
    let victim = list
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("s0042"))
        .unwrap();
    let port = victim.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    let err = api
        .create(&PostParams::default(), &service("again", Some(port)))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));
    api.delete("s0042", &DeleteParams::default()).await.unwrap();
    let again = api
        .create(&PostParams::default(), &service("again", Some(port)))
        .await
        .unwrap();
    assert_eq!(again.spec.unwrap().ports.unwrap()[0].node_port, Some(port));
}

/// Reads the allocator gauges from /metrics.
async fn allocator_counts(client: &kube::Client) -> (u64, u64) {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        gauge("kube_apiserver_clusterip_allocator_allocated_ips"),
        gauge("kube_apiserver_nodeport_allocator_allocated_ports"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_stay_unique_under_churn_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut server = support::Apiserver::start_in(dir.path(), port, &[]);
    let client = server.client().await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    let operations = Arc::new(AtomicUsize::new(0));
    let workers = (0..16).map(|w| {
        let api = api.clone();
        let operations = operations.clone();
        async move {
            // Each worker keeps its 60 newest Services, so the NodePort
            // range (2768 ports) never fills while ports are freed and
            // reused all the time.
            let mut live = std::collections::VecDeque::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let name = format!("c{w}-{i}");
                api.create(&PostParams::default(), &node_port_service(&name))
                    .await
                    .unwrap();
                live.push_back(name);
                if live.len() > 60 {
                    let oldest = live.pop_front().unwrap();
                    api.delete(&oldest, &DeleteParams::default()).await.unwrap();
                }
                operations.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }
    });
    join_all(workers).await;
    assert!(operations.load(Ordering::Relaxed) > 100);
    server.kill();

    let server = support::Apiserver::start_in(dir.path(), port, &[]);
    let client = server.client().await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let live = api.list(&ListParams::default()).await.unwrap().items;
    let mut ips: BTreeMap<String, String> = BTreeMap::new();
    let mut ports: BTreeMap<i32, String> = BTreeMap::new();
    for svc in &live {
        let name = svc.metadata.name.clone().unwrap();
        let spec = svc.spec.as_ref().unwrap();
        let ip = spec.cluster_ip.clone().unwrap();
        if let Some(other) = ips.insert(ip.clone(), name.clone()) {
            panic!("{ip} held by {other} and {name}");
        }
        for p in spec.ports.iter().flatten() {
            if let Some(n) = p.node_port
                && let Some(other) = ports.insert(n, name.clone())
            {
                panic!("nodePort {n} held by {other} and {name}");
            }
        }
    }
    // The allocator rebuilt from storage holds exactly what is stored.
    assert_eq!(
        allocator_counts(&client).await,
        (ips.len() as u64, ports.len() as u64)
    );
    // And new allocations never collide with restored ones.
    for i in 0..50 {
        let svc = api
            .create(
                &PostParams::default(),
                &node_port_service(&format!("new{i}")),
            )
            .await
            .unwrap();
        let spec = svc.spec.unwrap();
        assert!(!ips.contains_key(&spec.cluster_ip.clone().unwrap()));
        assert!(!ports.contains_key(&spec.ports.unwrap()[0].node_port.unwrap()));
    }
}

#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server() {
    if !support::kubectl_available() {
        return;
    }
    // A documentation address (TEST-NET-1): only recorded, never reached.
    let server = support::Apiserver::start_with(&["--advertise-address", "192.0.2.10:6443"]);
    let svc = server.kubectl_ok(&["get", "svc", "kubernetes"]);
    let row = svc.lines().nth(1).unwrap();
    assert!(
        row.contains("10.96.0.1") && row.contains("443/TCP"),
        "{svc}"
    );
    let ep = server.kubectl_ok(&["get", "ep", "kubernetes"]);
    assert!(ep.contains("192.0.2.10:6443"), "{ep}");
    let slice = server.kubectl_ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=kubernetes",
        "-o",
        "name",
    ]);
    assert_eq!(slice.trim(), "endpointslice.discovery.k8s.io/kubernetes");
}

#[tokio::test]
async fn legacy_ingress_applies_with_the_deprecation_warning() {
    if !support::kubectl_available() {
        return;
    }
    let server = support::Apiserver::start();
    let manifest = "apiVersion: extensions/v1beta1
kind: Ingress
metadata:
  name: legacy
spec:
  tls:
  - hosts: [www.example.com, api.example.com]
    secretName: example-tls
  rules:
  - host: www.example.com
    http:
      paths:
      - path: /
        backend:
          serviceName: web
          servicePort: 80
  - host: api.example.com
    http:
      paths:
      - path: /v1
        backend:
          serviceName: api
          servicePort: http
";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ingress.extensions/legacy created"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Warning: extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in v1.22+; use networking.k8s.io/v1 Ingress"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = server.kubectl_ok(&["get", "ing"]);
    assert!(
        table.contains("legacy")
            && table.contains("www.example.com,api.example.com")
            && table.contains("80, 443"),
        "{table}"
    );
    let v1: serde_json::Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "ing", "legacy", "-o", "json"])).unwrap();
    assert_eq!(v1["apiVersion"], "networking.k8s.io/v1");
    let path = &v1["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["pathType"], "ImplementationSpecific");
    assert_eq!(
        path["backend"]["service"],
        json!({"name": "web", "port": {"number": 80}})
    );
    assert_eq!(
        v1["spec"]["rules"][1]["http"]["paths"][0]["backend"]["service"]["port"],
        json!({"name": "http"})
    );
    // The same object, served in the legacy version it was written in.
    let legacy: serde_json::Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "ingresses.v1beta1.extensions",
        "legacy",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        legacy["spec"]["rules"][0]["http"]["paths"][0]["backend"],
        json!({"serviceName": "web", "servicePort": 80})
    );
}

#[tokio::test]
async fn kubectl_expose_creates_a_node_port_service_as_in_the_docs() {
    if !support::kubectl_available() {
        return;
    }
    let server = support::Apiserver::start();
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--port=8080",
    ]);
    let out = server.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
        "--name=my-svc",
    ]);
    assert_eq!(out.trim(), "service/my-svc exposed");
    let svc: serde_json::Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "svc", "my-svc", "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["selector"], json!({"app": "web"}));
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (port["port"].as_i64(), port["targetPort"].as_i64()),
        (Some(80), Some(8080))
    );
    let node_port = port["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port));
    assert!(in_service_cidr(svc["spec"]["clusterIP"].as_str().unwrap()));
    let table = server.kubectl_ok(&["get", "svc", "my-svc"]);
    assert!(table.contains(&format!("80:{node_port}/TCP")), "{table}");
}
