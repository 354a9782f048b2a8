//! `ferry node`: the lab node agent registers its Node (status through
//! `/status`) and renews its heartbeat Lease; as root, it runs an nginx
//! pod's sandbox (netns + CNI + built-in web server) and tears it down.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

/// A running `ferry node` process, killed on drop.
struct NodeAgent(Child);

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn node_agent_registers_node_and_lease() {
    let server = support::Apiserver::start();
    let _controllers = support::Controllers::start(&server, &["--leader-elect=false"]);
    let node_name = format!("ftn-{}-n1", std::process::id());
    let _agent = NodeAgent(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "node",
                "--node-name",
                &node_name,
                "--internal-ip",
                "10.99.0.1",
            ])
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry binary runs"),
    );
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = support::eventually(30, "node registered Ready with a podCIDR", || {
        let nodes = nodes.clone();
        let name = node_name.clone();
        async move {
            let node = nodes.get_opt(&name).await.ok()??;
            let status = node.status.clone()?;
            let ready = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let cidr = node.spec.as_ref()?.pod_cidr.is_some();
            (ready && cidr).then_some(node)
        }
    })
    .await;
    let status = node.status.unwrap();
    let info = status.node_info.unwrap();
    assert_eq!(info.kubelet_version, "v1.33.0-ferry");
    assert_eq!(info.container_runtime_version, "ferry://0.1.0");
    assert!(!info.kernel_version.is_empty());
    let addresses = status.addresses.unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "10.99.0.1")
    );
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "Hostname" && a.address == node_name)
    );
    let capacity = status.capacity.unwrap();
    for key in ["cpu", "memory", "pods"] {
        assert!(capacity.contains_key(key), "capacity has {key}");
    }

    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let lease = support::eventually(20, "heartbeat lease", || {
        let leases = leases.clone();
        let name = node_name.clone();
        async move { leases.get_opt(&name).await.ok()? }
    })
    .await;
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(node_name.as_str()));
    assert!(spec.renew_time.is_some());
}

/// Deletes the named network namespaces on drop.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = ferry_netlink::netns::delete(name);
        }
    }
}

fn is_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "root is required under CI=true"
        );
        eprintln!("skipping: needs root (network namespaces)");
    }
    root
}

#[tokio::test]
async fn node_agent_creates_pod_sandbox() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    if !is_root() {
        return;
    }
    let node_name = format!("ftn-{}-n2", std::process::id());
    let pod_ns = format!("{node_name}-default-web");
    let _guard = Netns(vec![pod_ns.clone(), node_name.clone()]);
    ferry_netlink::netns::create(&node_name).unwrap();
    let server = support::Apiserver::start();
    let _controllers = support::Controllers::start(&server, &["--leader-elect=false"]);
    let _agent = NodeAgent(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["node", "--node-name", &node_name, "--netns", &node_name])
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ferry binary runs"),
    );
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": node_name, "containers": [{"name": "nginx", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ip = support::eventually(40, "pod Running with a podIP", || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("web").await.ok()?;
            let status = pod.status?;
            (status.phase.as_deref() == Some("Running")).then_some(status.pod_ip?)
        }
    })
    .await;
    let nodes: Api<Node> = Api::all(client);
    let cidr = nodes
        .get(&node_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .pod_cidr
        .unwrap();
    let prefix: Vec<&str> = cidr.split('.').take(3).collect();
    assert!(ip.starts_with(&prefix.join(".")), "{ip} in {cidr}");
    assert!(ferry_netlink::netns::exists(&pod_ns));
    let page = Command::new("ip")
        .args(["netns", "exec", &node_name, "curl", "-s", "-m", "5"])
        .arg(format!("http://{ip}/"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&page.stdout),
        "web\n",
        "page names the pod"
    );

    pods.delete("web", &Default::default()).await.unwrap();
    support::eventually(30, "pod deleted", || {
        let pods = pods.clone();
        async move { pods.get_opt("web").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(!ferry_netlink::netns::exists(&pod_ns), "pod netns removed");
    let links = Command::new("ip")
        .args(["-n", &node_name, "-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    assert!(
        links.stdout.is_empty(),
        "veth removed: {}",
        String::from_utf8_lossy(&links.stdout)
    );
}
