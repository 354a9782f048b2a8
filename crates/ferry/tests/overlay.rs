//! `ferry overlay`: three node namespaces on an underlay bridge get
//! flannel.1 (VNI 1, port 8472, MTU - 50) and per-remote-node route,
//! neighbour and FDB entries, which follow Node deletion. Root only.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn ip_ok(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the bridge and namespaces on drop.
struct Lab {
    bridge: String,
    namespaces: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn overlay_programs_flannel_vxlan_between_nodes() {
    if !support::can_use_netns("overlay") {
        return;
    }
    let pid = std::process::id();
    let x = 100 + pid % 150;
    let mut lab = Lab {
        bridge: format!("fto-{pid}"),
        namespaces: vec![],
    };
    ip_ok(&["link", "add", &lab.bridge, "type", "bridge"]);
    ip_ok(&["link", "set", &lab.bridge, "up"]);
    let server = support::Apiserver::start();
    let _controllers = support::Controllers::start(&server, &["--leader-elect=false"]);
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut agents = vec![];
    let mut names = vec![];
    for i in 1..=3u32 {
        let ns = format!("fto-{pid}-n{i}");
        ip_ok(&["netns", "add", &ns]);
        lab.namespaces.push(ns.clone());
        let host = format!("fto{pid}h{i}");
        ip_ok(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip_ok(&["link", "set", &host, "master", &lab.bridge, "up"]);
        let addr = format!("172.31.{x}.{}", 10 + i);
        ip_ok(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        let name = ns.clone();
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": addr}]}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        agents.push(Agent(
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["overlay", "--node-name", &name, "--netns", &ns])
                .arg("--kubeconfig")
                .arg(&server.kubeconfig)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        ));
        names.push(name);
    }
    let n1 = &lab.namespaces[0].clone();
    // Wait for n1 to have routes to both other nodes.
    support::eventually(60, "n1 routes to two remote nodes", || async {
        let routes = ip(&["-n", n1, "route"]);
        (routes
            .lines()
            .filter(|l| l.contains("dev flannel.1") && l.contains("onlink"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let link = ip(&["-n", n1, "-d", "link", "show", "flannel.1"]);
    assert!(link.contains("vxlan id 1 "), "{link}");
    assert!(link.contains("dstport 8472"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    let cidr_of = |n: &Node| n.spec.as_ref().unwrap().pod_cidr.clone().unwrap();
    let n3 = nodes.get(&names[2]).await.unwrap();
    let n3_cidr = cidr_of(&n3);
    let n3_gw = n3_cidr.split('/').next().unwrap().to_string();
    let neigh = ip(&["-n", n1, "neigh", "show", "dev", "flannel.1"]);
    assert!(
        neigh.contains(&n3_gw) && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    let fdb = Command::new("bridge")
        .args(["-n", n1, "fdb", "show", "dev", "flannel.1"])
        .output()
        .unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
    assert!(fdb.contains(&format!("dst 172.31.{x}.13")), "{fdb}");

    // Ping across the overlay: n1's flannel.1 address to n3's.
    let n1_gw = cidr_of(&nodes.get(&names[0]).await.unwrap())
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let ping = Command::new("ip")
        .args([
            "netns", "exec", n1, "ping", "-c", "1", "-W", "2", "-I", &n1_gw, &n3_gw,
        ])
        .output()
        .unwrap();
    eprintln!(
        "ping n1 -> n3 over flannel.1: success={}",
        ping.status.success()
    );

    // Delete n3: n1 drops its entries.
    drop(agents.pop());
    nodes
        .delete(&names[2], &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(30, "n1 drops n3's entries", || async {
        let routes = ip(&["-n", n1, "route"]);
        let fdb = Command::new("bridge")
            .args(["-n", n1, "fdb", "show", "dev", "flannel.1"])
            .output()
            .ok()?;
        let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
        (!routes.contains(&n3_cidr) && !fdb.contains(&format!("dst 172.31.{x}.13"))).then_some(())
    })
    .await;

    // Restart n1's agent: same VTEP MAC, entries converge without duplicates.
    let mac_before = ip(&["-n", n1, "link", "show", "flannel.1"]);
    drop(agents.remove(0));
    let _restarted = Agent(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["overlay", "--node-name", &names[0], "--netns", n1])
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        ip(&["-n", n1, "link", "show", "flannel.1"])
            .split("link/ether")
            .nth(1)
            .map(|s| s[..18].to_string()),
        mac_before
            .split("link/ether")
            .nth(1)
            .map(|s| s[..18].to_string())
    );
    let routes = ip(&["-n", n1, "route"]);
    assert_eq!(
        routes
            .lines()
            .filter(|l| l.contains("dev flannel.1") && l.contains("onlink"))
            .count(),
        1,
        "{routes}"
    );
    drop(agents);
}
