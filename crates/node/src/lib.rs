//! `ferry node`: the lab node agent (first cut).
//!
//! - Registers its Node (create if missing, status through `/status`:
//!   addresses, capacity, nodeInfo, Ready with heartbeat) and renews the
//!   Lease `kube-node-lease/<node>`, both every 10 s.
//! - Pod sandboxes: every second it lists the Pods bound to the node
//!   (`spec.nodeName`), creates netns [`sandbox_name`], runs the CNI plugin
//!   (`ferry cni`, inside the node netns via `nsenter`), brings `lo` up and
//!   writes a Running/Ready status. hostNetwork pods are skipped.
//! - Built-in programs: nginx/httpd images without a command get a page
//!   naming the pod on their TCP container ports (default 80); the
//!   listening sockets are opened inside the pod netns.
//! - Deletion: on `deletionTimestamp` it stops the programs, runs CNI DEL,
//!   deletes the netns and deletes the Pod with grace period 0.
//!
//! Other images wait with reason `UnsupportedImage` (phase Pending).
//!
//! Not yet: `ferry/echo`, commands as child processes,
//! grace-period signals, orphan cleanup on start, probes,
//! restarting built-in servers after an agent restart, underlay MTU.

pub mod runtime;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

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
    /// The node's network namespace (None: the current one).
    pub netns: Option<String>,
    /// The node's InternalIP.
    pub internal_ip: Option<String>,
    /// Maximum pods advertised in capacity.
    pub max_pods: u32,
}

/// Name of the network namespace of a pod sandbox: `<node>-<ns>-<pod>`,
/// shortened with a hash suffix when longer than the 255-byte file-name
/// limit of `/run/netns`.
pub fn sandbox_name(node: &str, namespace: &str, pod: &str) -> String {
    const MAX: usize = 255;
    let full = format!("{node}-{namespace}-{pod}");
    if full.len() <= MAX {
        return full;
    }
    // FNV-1a, stable across runs and versions.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let suffix = format!("-{hash:016x}");
    let mut cut = MAX - suffix.len();
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &full[..cut])
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
        ..Default::default()
    }
}

/// Creates the Node if missing and writes its status through `/status`.
pub async fn register(
    client: &kube::Client,
    config: &Config,
    ready_since: jiff::Timestamp,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(&config.node_name).await?.is_none() {
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

/// The CNI network configuration the agent passes on stdin.
pub fn cni_config(pod_cidr: &str, mtu: u32) -> String {
    serde_json::json!({
        "cniVersion": "1.1.0", "name": "ferry", "type": "ferry", "bridge": "cni0",
        "isGateway": true, "mtu": mtu, "podCIDR": pod_cidr,
    })
    .to_string()
}

/// Executes the CNI plugin as a runtime does (inside the node netns).
fn run_cni(
    config: &Config,
    command: &str,
    pod: &Pod,
    sandbox: &str,
    pod_cidr: &str,
) -> anyhow::Result<std::process::Output> {
    use std::io::Write;
    let exe = std::env::current_exe()?;
    let mut cmd = match &config.netns {
        Some(node_ns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{node_ns}")).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let mut child = cmd
        .arg("cni")
        .env("CNI_COMMAND", command)
        .env(
            "CNI_CONTAINERID",
            pod.metadata.uid.as_deref().unwrap_or(sandbox),
        )
        .env("CNI_NETNS", format!("/run/netns/{sandbox}"))
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_PATH",
            exe.parent().unwrap_or(std::path::Path::new("/")),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(cni_config(pod_cidr, 1500).as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "CNI {command} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Tears a pod's sandbox down: CNI DEL, then the netns.
fn delete_sandbox(config: &Config, pod: &Pod, pod_cidr: &str) -> anyhow::Result<()> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let sandbox = sandbox_name(&config.node_name, ns, name);
    if ferry_netlink::netns::exists(&sandbox) {
        run_cni(config, "DEL", pod, &sandbox, pod_cidr)?;
        ferry_netlink::netns::delete(&sandbox)?;
    }
    Ok(())
}

/// Creates the sandbox of one pod (netns + CNI ADD + lo up); returns the pod IP.
fn create_sandbox(
    config: &Config,
    pod: &Pod,
    pod_cidr: &str,
) -> anyhow::Result<(String, Vec<std::net::TcpListener>)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let sandbox = sandbox_name(&config.node_name, ns, name);
    if !ferry_netlink::netns::exists(&sandbox) {
        ferry_netlink::netns::create(&sandbox)?;
    }
    let out = run_cni(config, "ADD", pod, &sandbox, pod_cidr)?;
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .ok_or_else(|| anyhow::anyhow!("CNI result has no IP: {result}"))?
        .to_string();
    let lo = std::process::Command::new("ip")
        .args(["-n", &sandbox, "link", "set", "lo", "up"])
        .status()?;
    anyhow::ensure!(lo.success(), "bringing lo up in {sandbox}");
    let ports = web_ports(pod);
    let netns = ferry_netlink::netns::NetNs::open_named(&sandbox)?;
    let listeners = netns.run(|| {
        ports
            .iter()
            .map(|p| std::net::TcpListener::bind(("0.0.0.0", *p)))
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    Ok((ip, listeners))
}

/// Ports of the built-in web server: containers whose image is nginx or
/// httpd and that have no command (default port 80).
pub fn web_ports(pod: &Pod) -> Vec<u16> {
    let mut ports = Vec::new();
    for c in pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        if !is_builtin_web(c) {
            continue;
        }
        let declared: Vec<u16> = c
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        if declared.is_empty() {
            ports.push(80);
        } else {
            ports.extend(declared);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Serves a page naming the pod on every connection (HTTP/1.0 style).
async fn serve_page(listener: std::net::TcpListener, pod_name: String) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let body = format!("{pod_name}\n");
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Running built-in programs, by sandbox name.
type Programs = std::sync::Mutex<HashMap<String, Vec<tokio::task::AbortHandle>>>;

/// The Pod status once its sandbox runs (containers reported running).
pub fn pod_status(
    pod: &Pod,
    pod_ip: &str,
    host_ip: Option<&str>,
    now: jiff::Timestamp,
) -> serde_json::Value {
    let t = Time(now);
    let containers: Vec<_> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let statuses: Vec<_> = containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            if is_builtin_web(c) {
                serde_json::json!({
                    "name": c.name, "image": image, "imageID": "", "ready": true,
                    "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": t}},
                })
            } else {
                serde_json::json!({
                    "name": c.name, "image": image, "imageID": "", "ready": false,
                    "started": false, "restartCount": 0,
                    "state": {"waiting": {
                        "reason": "UnsupportedImage",
                        "message": format!("the ferry lab runtime has no built-in program for image {image:?} (commands are not run yet)"),
                    }},
                })
            }
        })
        .collect();
    let ready = if containers.iter().all(is_builtin_web) {
        "True"
    } else {
        "False"
    };
    let conds: Vec<_> = [
        ("PodScheduled", "True"),
        ("Initialized", "True"),
        ("ContainersReady", ready),
        ("Ready", ready),
    ]
    .iter()
    .map(|(c, st)| serde_json::json!({"type": c, "status": st, "lastTransitionTime": t}))
    .collect();
    let phase = if ready == "True" {
        "Running"
    } else {
        "Pending"
    };
    let mut status = serde_json::json!({
        "phase": phase, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": t, "conditions": conds, "containerStatuses": statuses,
    });
    if let Some(h) = host_ip {
        status["hostIP"] = h.into();
        status["hostIPs"] = serde_json::json!([{"ip": h}]);
    }
    serde_json::json!({ "status": status })
}

/// Whether the container runs the built-in web server (nginx/httpd image,
/// no command).
fn is_builtin_web(c: &k8s_openapi::api::core::v1::Container) -> bool {
    let image = c.image.as_deref().unwrap_or_default();
    let repo = image.split([':', '@']).next().unwrap_or_default();
    let base = repo.rsplit('/').next().unwrap_or_default();
    c.command.is_none() && (base == "nginx" || base == "httpd")
}

async fn sync_pods(
    client: &kube::Client,
    config: &Config,
    programs: &Programs,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(pod_cidr) = nodes
        .get_opt(&config.node_name)
        .await?
        .and_then(|n| n.spec)
        .and_then(|s| s.pod_cidr)
    else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let lp =
        kube::api::ListParams::default().fields(&format!("spec.nodeName={}", config.node_name));
    for pod in pods.list(&lp).await?.items {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let has_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let sandbox = sandbox_name(&config.node_name, ns, name);
        if pod.metadata.deletion_timestamp.is_some() {
            let running = programs
                .lock()
                .map(|mut p| p.remove(&sandbox))
                .ok()
                .flatten();
            for handle in running.into_iter().flatten() {
                handle.abort();
            }
            if !host_network {
                let (cfg, p, cidr) = (config.clone(), pod.clone(), pod_cidr.clone());
                tokio::task::spawn_blocking(move || delete_sandbox(&cfg, &p, &cidr)).await??;
            }
            let dp = kube::api::DeleteParams::default().grace_period(0);
            Api::<Pod>::namespaced(client.clone(), ns)
                .delete(name, &dp)
                .await?;
            continue;
        }
        if host_network || has_ip {
            continue;
        }
        let (cfg, p, cidr) = (config.clone(), pod.clone(), pod_cidr.clone());
        let (ip, listeners) =
            tokio::task::spawn_blocking(move || create_sandbox(&cfg, &p, &cidr)).await??;
        let handles: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::spawn(serve_page(l, name.to_string())).abort_handle())
            .collect();
        if let Ok(mut p) = programs.lock() {
            p.insert(sandbox.clone(), handles);
        }
        let patch = pod_status(
            &pod,
            &ip,
            config.internal_ip.as_deref(),
            jiff::Timestamp::now(),
        );
        Api::<Pod>::namespaced(client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// Runs the agent until the future is dropped.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let (c2, cfg2) = (client.clone(), config.clone());
    tokio::spawn(async move {
        let programs = Programs::default();
        loop {
            if let Err(e) = sync_pods(&c2, &cfg2, &programs).await {
                tracing::warn!("pod sync failed: {e:#}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let ready_since = jiff::Timestamp::now();
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        if let Err(e) = register(&client, &config, ready_since).await {
            tracing::warn!(node = %config.node_name, "node status update failed: {e:#}");
        }
        if let Err(e) = renew_lease(&client, &config.node_name).await {
            tracing::warn!(node = %config.node_name, "lease renewal failed: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_name_short_and_long() {
        assert_eq!(sandbox_name("n1", "default", "web"), "n1-default-web");
        let pod = "p".repeat(253);
        let a = sandbox_name("n1", "default", &pod);
        assert_eq!(a.len(), 255);
        assert_ne!(a, sandbox_name("n1", "default", &"p".repeat(252)));
        assert_eq!(a, sandbox_name("n1", "default", &pod));
    }

    #[test]
    fn status_has_fields() {
        let config = Config {
            node_name: "n1".into(),
            netns: None,
            internal_ip: Some("10.0.0.1".into()),
            max_pods: 110,
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

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("valid pod")
    }

    #[test]
    fn web_ports_for_builtin_images() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "w"}, "spec": {"containers": [
                {"name": "a", "image": "docker.io/library/nginx:1.27"},
                {"name": "b", "image": "httpd", "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]},
                {"name": "c", "image": "nginx", "command": ["sleep", "1"]},
                {"name": "d", "image": "busybox"},
            ]}}),
        );
        assert_eq!(web_ports(&p), vec![80, 8080]);
    }

    #[test]
    fn pod_status_running_ready() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "w"}, "spec": {"containers": [
            {"name": "a", "image": "nginx"}]}}),
        );
        let v = pod_status(&p, "10.244.1.2", Some("10.0.0.1"), jiff::Timestamp::now());
        let status: k8s_openapi::api::core::v1::PodStatus =
            serde_json::from_value(v["status"].clone()).expect("valid status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.244.1.2"));
        assert_eq!(status.host_ip.as_deref(), Some("10.0.0.1"));
        let conds = status.conditions.unwrap_or_default();
        assert!(
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        let cs = &status.container_statuses.unwrap_or_default()[0];
        assert!(cs.ready && cs.started == Some(true));
        assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    }

    #[test]
    fn cni_config_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&cni_config("10.244.1.0/24", 1500)).expect("json");
        assert_eq!(v["type"], "ferry");
        assert_eq!(v["bridge"], "cni0");
        assert_eq!(v["podCIDR"], "10.244.1.0/24");
        assert_eq!(v["mtu"], 1500);
    }

    #[test]
    fn pod_status_unsupported_image_waits() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "w"}, "spec": {"containers": [
            {"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}]}}),
        );
        let v = pod_status(&p, "10.244.1.2", None, jiff::Timestamp::now());
        assert_eq!(v["status"]["phase"], "Pending");
        assert_eq!(
            v["status"]["containerStatuses"][1]["state"]["waiting"]["reason"],
            "UnsupportedImage"
        );
        assert_eq!(v["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(v["status"]["conditions"][3]["status"], "False");
    }
}
