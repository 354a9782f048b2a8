//! `ferry node`: the lab node agent (the lab's kubelet).
//!
//! - Registers its Node (create if missing, status through `/status`:
//!   addresses, capacity, nodeInfo, Ready with heartbeat) and renews the
//!   Lease `kube-node-lease/<node>`, both every 10 s.
//! - Watches the Pods bound to the node (`spec.nodeName`) and runs one
//!   [`worker`] per Pod: sandbox through the CNI plugin ([`sandbox`]),
//!   containers through the lab [`runtime`], probes ([`probes`]), status
//!   ([`status`]) and graceful termination.
//! - At start, and after each relist, removes sandboxes whose Pod is gone
//!   (processes, CNI attachment, netns).
//!
//! With `--netns`, `main` has already moved the whole process into the
//! node's network namespace: CNI, probes and containers all start there.

pub mod probes;
pub mod runtime;
pub mod sandbox;
pub mod status;
pub mod streaming;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

pub use sandbox::sandbox_name;

/// Kubelet version the agent reports.
pub const KUBELET_VERSION: &str = "v1.33.0-ferry";
/// Container runtime version the agent reports.
pub const RUNTIME_VERSION: &str = "ferry://0.1.0";
/// Seconds the heartbeat Lease stays valid.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Lease and the Ready condition are renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Agent configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Node name.
    pub node_name: String,
    /// The node's InternalIP.
    pub internal_ip: Option<String>,
    /// Maximum pods advertised in capacity.
    pub max_pods: u32,
    /// Pod files (hosts, resolv.conf, logs) and the IPAM store.
    pub state_dir: std::path::PathBuf,
    /// Nameserver for dnsPolicy ClusterFirst.
    pub cluster_dns: String,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// MTU of pod interfaces (None: underlay MTU − 50).
    pub pod_mtu: Option<u32>,
    /// Port of the streaming endpoint (logs, exec, attach, port-forward)
    /// on the InternalIP; reported as the Node's kubelet endpoint.
    pub streaming_port: u16,
    /// Bearer token the streaming endpoint requires (the API server's);
    /// `None`: no streaming endpoint.
    pub streaming_token: Option<String>,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".to_string())
}

fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The Node status the agent reports, with `now` as heartbeat time.
pub fn node_status(
    config: &Config,
    now: jiff::Timestamp,
    ready_since: jiff::Timestamp,
) -> NodeStatus {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut resources = BTreeMap::new();
    resources.insert("cpu".to_string(), Quantity(cpus.to_string()));
    resources.insert(
        "memory".to_string(),
        Quantity(format!("{}Ki", memory_kib())),
    );
    resources.insert("pods".to_string(), Quantity(config.max_pods.to_string()));
    let mut addresses = Vec::new();
    if let Some(ip) = &config.internal_ip {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: ip.clone(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: config.node_name.clone(),
    });
    NodeStatus {
        addresses: Some(addresses),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("ferry node agent is posting ready status".into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(Time(ready_since)),
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            operating_system: "linux".into(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            container_runtime_version: RUNTIME_VERSION.into(),
            os_image: os_image(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            machine_id: read_trimmed("/etc/machine-id").unwrap_or_default(),
            system_uuid: String::new(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            ..Default::default()
        }),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.streaming_port),
            }),
        }),
        ..Default::default()
    }
}

/// Writes the Node's status through `/status`; with `create`, first
/// creates the Node if it is missing. Like kubelet, the agent registers
/// only when it starts: a Node deleted later stays deleted (the node is
/// being removed) until the agent restarts.
pub async fn register(
    client: &kube::Client,
    config: &Config,
    ready_since: jiff::Timestamp,
    create: bool,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if create && nodes.get_opt(&config.node_name).await?.is_none() {
        let mut labels = BTreeMap::new();
        labels.insert(
            "kubernetes.io/hostname".to_string(),
            config.node_name.clone(),
        );
        labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(config.node_name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let status = node_status(config, jiff::Timestamp::now(), ready_since);
    let patch = serde_json::json!({ "status": status });
    nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Creates or renews the heartbeat Lease `kube-node-lease/<node>`.
pub async fn renew_lease(client: &kube::Client, node: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = LeaseSpec {
        holder_identity: Some(node.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(MicroTime(jiff::Timestamp::now())),
        ..Default::default()
    };
    match leases.get_opt(node).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            leases.replace(node, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_string()),
                    namespace: Some("kube-node-lease".into()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

/// MTU for pod interfaces: the configured one, else that of the link
/// holding the node's InternalIP (else `eth0`) minus the VXLAN overhead.
async fn pod_mtu(config: &Config) -> u32 {
    if let Some(mtu) = config.pod_mtu {
        return mtu;
    }
    let underlay = async {
        let nl = ferry_netlink::Netlink::connect().ok()?;
        let links = nl.links().await.ok()?;
        let by_ip = match config
            .internal_ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        {
            Some(ip) => {
                let addrs = nl.addresses(None).await.ok()?;
                addrs
                    .iter()
                    .find(|a| a.address == ip)
                    .and_then(|a| links.iter().find(|l| l.index == a.index))
                    .map(|l| l.mtu)
            }
            None => None,
        };
        by_ip.or_else(|| links.iter().find(|l| l.name == "eth0").map(|l| l.mtu))
    }
    .await;
    underlay.unwrap_or(1500).saturating_sub(50)
}

/// Follows the own Node's `spec.podCIDR`.
async fn follow_pod_cidr(client: kube::Client, node: String, tx: watch::Sender<Option<String>>) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        match nodes.get_opt(&node).await {
            Ok(n) => {
                let cidr = n.and_then(|n| n.spec).and_then(|s| s.pod_cidr);
                tx.send_if_modified(|old| {
                    let changed = *old != cidr && cidr.is_some();
                    if changed {
                        old.clone_from(&cidr);
                    }
                    changed
                });
            }
            Err(e) => tracing::debug!("reading the own Node: {e}"),
        }
        let wait = if tx.borrow().is_some() { 30 } else { 1 };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Removes sandboxes of this node whose Pod is gone: processes, the CNI
/// attachment (GC with the live pods as valid attachments) and the netns.
async fn remove_orphans(ctx: &worker::Ctx, live: &HashMap<String, Pod>) {
    let prefix = format!("{}-", ctx.config.node_name);
    let wanted: HashSet<String> = live
        .values()
        .map(|p| {
            sandbox_name(
                &ctx.config.node_name,
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    for name in ferry_netlink::netns::list().unwrap_or_default() {
        if name.starts_with(&prefix) && !wanted.contains(&name) {
            tracing::info!(sandbox = %name, "removing an orphaned pod sandbox");
            sandbox::kill_processes_in(&name);
            if let Err(e) = ferry_netlink::netns::delete(&name) {
                tracing::warn!("deleting netns {name}: {e}");
            }
        }
    }
    let cidr = ctx.pod_cidr.borrow().clone();
    if let Some(cidr) = cidr {
        let valid: Vec<serde_json::Value> = live
            .keys()
            .map(|uid| serde_json::json!({"containerID": uid, "ifname": "eth0"}))
            .collect();
        if let Err(e) = sandbox::run_cni_gc(&ctx.config, &cidr, ctx.mtu, valid).await {
            tracing::warn!("CNI GC: {e:#}");
        }
    }
    // Pod directories of gone pods.
    if let Ok(entries) = std::fs::read_dir(ctx.config.state_dir.join("pods")) {
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !live.contains_key(&uid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Watches the node's Pods and keeps one worker per Pod UID.
async fn manage_pods(ctx: Arc<worker::Ctx>) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.config.node_name);
    let mut events = watcher(pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut live: HashMap<String, Pod> = HashMap::new();
    let mut relist: Option<HashMap<String, Pod>> = None;
    let mut orphans_checked = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("pod watch: {e}");
                continue;
            }
        };
        let upsert = |pod: Pod, workers: &mut HashMap<String, watch::Sender<Option<Pod>>>| {
            let Some(uid) = pod.metadata.uid.clone() else {
                return;
            };
            workers.retain(|_, tx| !tx.is_closed());
            match workers.get(&uid) {
                Some(tx) => {
                    let _ = tx.send(Some(pod));
                }
                None => {
                    let (tx, rx) = watch::channel(Some(pod));
                    tokio::spawn(worker::run(ctx.clone(), rx));
                    workers.insert(uid, tx);
                }
            }
        };
        match event {
            watcher::Event::Init => relist = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(uid), Some(seen)) = (pod.metadata.uid.clone(), relist.as_mut()) {
                    seen.insert(uid, pod.clone());
                }
                upsert(pod, &mut workers);
            }
            watcher::Event::InitDone => {
                let seen = relist.take().unwrap_or_default();
                // Pods deleted while the watch was down.
                for (uid, tx) in &workers {
                    if !seen.contains_key(uid) {
                        let _ = tx.send(None);
                    }
                }
                live = seen;
                if !orphans_checked {
                    // Wait for the podCIDR so the CNI GC can run too.
                    let mut cidr = ctx.pod_cidr.clone();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        cidr.wait_for(|c| c.is_some()),
                    )
                    .await;
                    remove_orphans(&ctx, &live).await;
                    orphans_checked = true;
                }
            }
            watcher::Event::Apply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    live.insert(uid, pod.clone());
                }
                upsert(pod, &mut workers);
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    live.remove(uid);
                    if let Some(tx) = workers.remove(uid) {
                        let _ = tx.send(None);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs the agent until the future is dropped.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)?;
    let mtu = pod_mtu(&config).await;
    let (cidr_tx, cidr_rx) = watch::channel(None);
    let streams = Arc::new(streaming::Registry::default());
    tokio::spawn(follow_pod_cidr(
        client.clone(),
        config.node_name.clone(),
        cidr_tx,
    ));
    let ctx = Arc::new(worker::Ctx {
        client: client.clone(),
        config: config.clone(),
        exe: std::env::current_exe()?,
        pod_cidr: cidr_rx,
        mtu,
        host_resolv: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        streams: streams.clone(),
    });
    match (&config.internal_ip, &config.streaming_token) {
        (Some(ip), Some(token)) if !token.is_empty() => match ip.parse() {
            Ok(ip_addr) => {
                let addr = std::net::SocketAddr::new(ip_addr, config.streaming_port);
                let server = Arc::new(streaming::server::Server {
                    registry: streams,
                    exe: std::env::current_exe()?,
                    token: token.clone(),
                });
                let sans = vec![ip.clone(), config.node_name.clone()];
                tokio::spawn(async move {
                    if let Err(e) = streaming::server::run(server, addr, sans).await {
                        tracing::error!(%addr, "streaming endpoint stopped: {e:#}");
                    }
                });
            }
            Err(e) => tracing::error!(
                "no streaming endpoint: InternalIP {ip:?} is not an IP address: {e}"
            ),
        },
        _ => tracing::warn!(
            "no streaming endpoint (kubectl logs/exec/attach/port-forward): it needs an \
             InternalIP and a bearer token in the kubeconfig"
        ),
    }
    tracing::info!(node = %config.node_name, pod_mtu = mtu, "node agent starting");
    let pods = tokio::spawn(async move {
        if let Err(e) = manage_pods(ctx).await {
            tracing::error!("pod manager stopped: {e:#}");
        }
    });
    let ready_since = jiff::Timestamp::now();
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut registered = false;
    let heartbeat = async {
        loop {
            tick.tick().await;
            match register(&client, &config, ready_since, !registered).await {
                Ok(()) => registered = true,
                Err(e) => {
                    tracing::warn!(node = %config.node_name, "node status update failed: {e:#}")
                }
            }
            if let Err(e) = renew_lease(&client, &config.node_name).await {
                tracing::warn!(node = %config.node_name, "lease renewal failed: {e:#}");
            }
        }
    };
    tokio::select! {
        () = heartbeat => Ok(()),
        _ = pods => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_fields() {
        let config = Config {
            node_name: "n1".into(),
            internal_ip: Some("10.0.0.1".into()),
            max_pods: 110,
            state_dir: std::path::PathBuf::from("/tmp/x"),
            cluster_dns: "10.96.0.10".into(),
            cluster_domain: "cluster.local".into(),
            pod_mtu: None,
            streaming_port: 10250,
            streaming_token: None,
        };
        let now = jiff::Timestamp::now();
        let s = node_status(&config, now, now);
        let addrs = s.addresses.unwrap_or_default();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[1].address, "n1");
        let info = s.node_info.unwrap_or_default();
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert_eq!(info.container_runtime_version, RUNTIME_VERSION);
        let cap = s.capacity.unwrap_or_default();
        assert_eq!(cap.get("pods"), Some(&Quantity("110".into())));
        let cond = &s.conditions.unwrap_or_default()[0];
        assert_eq!(
            (cond.type_.as_str(), cond.status.as_str()),
            ("Ready", "True")
        );
    }
}
