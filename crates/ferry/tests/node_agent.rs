//! `ferry node`: the lab node agent registers its Node (status through
//! `/status`) and renews its heartbeat Lease. Pods, probes and teardown are
//! exercised in the lab (tests/lab.rs), where the agent lives in its node's
//! network namespace.
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
    let state = tempfile::tempdir().unwrap();
    let _agent = NodeAgent(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "node",
                "--node-name",
                &node_name,
                "--internal-ip",
                "10.99.0.1",
            ])
            .arg("--state-dir")
            .arg(state.path())
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
