//! Pod sandboxes: the network namespace set up through the CNI plugin
//! (executed exactly as a container runtime executes one), and the pod's
//! own `/etc/hosts` and `/etc/resolv.conf`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::Pod;

use crate::Config;

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

/// The CNI network configuration the agent passes on stdin.
pub fn cni_config(pod_cidr: &str, mtu: u32, data_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.1.0", "name": "ferry", "type": "ferry", "bridge": "cni0",
        "isGateway": true, "hairpinMode": true, "mtu": mtu, "podCIDR": pod_cidr,
        "ipam": { "type": "host-local", "dataDir": data_dir.display().to_string() },
    })
    .to_string()
}

/// Identity of one pod for the CNI plugin.
pub struct CniPod<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub netns: &'a Path,
}

/// Executes the CNI plugin (`ferry cni`) with `command`; returns stdout,
/// or the plugin's error (its error JSON `msg`/`details` when present).
pub async fn run_cni(
    config: &Config,
    command: &str,
    pod: &CniPod<'_>,
    pod_cidr: &str,
    mtu: u32,
) -> anyhow::Result<Vec<u8>> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .arg("cni")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod.uid)
        .env("CNI_NETNS", pod.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", exe.parent().unwrap_or(Path::new("/")))
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                pod.namespace, pod.name, pod.uid, pod.uid
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let input = cni_config(pod_cidr, mtu, &config.state_dir.join("cni"));
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    match err["msg"].as_str() {
        Some(msg) => anyhow::bail!(
            "plugin type=\"ferry\" failed ({command}): {msg}{}",
            err["details"]
                .as_str()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        None => anyhow::bail!(
            "plugin type=\"ferry\" failed ({command}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// CNI GC: releases every attachment of this node's network that is not
/// in `valid` (`cni.dev/valid-attachments`).
pub async fn run_cni_gc(
    config: &Config,
    pod_cidr: &str,
    mtu: u32,
    valid: Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut input: serde_json::Value =
        serde_json::from_str(&cni_config(pod_cidr, mtu, &config.state_dir.join("cni")))?;
    input["cni.dev/valid-attachments"] = valid.into();
    let mut child = tokio::process::Command::new(&exe)
        .arg("cni")
        .env("CNI_COMMAND", "GC")
        .env("CNI_PATH", exe.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(input.to_string().as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The first IP address in a CNI result.
pub fn result_ip(stdout: &[u8]) -> anyhow::Result<String> {
    let result: serde_json::Value = serde_json::from_slice(stdout)?;
    result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("CNI result has no IP: {result}"))
}

/// Directory of a pod's files.
pub fn pod_dir(config: &Config, uid: &str) -> PathBuf {
    config.state_dir.join("pods").join(uid)
}

/// kubelet's managed hosts file.
pub fn hosts_file(pod: &Pod, pod_ip: &str, cluster_domain: &str) -> String {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let hostname = spec.and_then(|s| s.hostname.clone()).unwrap_or(name);
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match spec.and_then(|s| s.subdomain.as_deref()) {
        Some(sub) if !sub.is_empty() => out.push_str(&format!(
            "{pod_ip}\t{hostname}.{sub}.{ns}.svc.{cluster_domain}\t{hostname}\n"
        )),
        _ => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases.filter(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    out
}

/// The pod's resolv.conf for its dnsPolicy (kubelet's rules, including
/// the merge of `dnsConfig`).
pub fn resolv_conf(
    pod: &Pod,
    cluster_dns: &str,
    cluster_domain: &str,
    host_resolv: &str,
) -> String {
    let spec = pod.spec.as_ref();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let policy = spec
        .and_then(|s| s.dns_policy.clone())
        .unwrap_or_else(|| "ClusterFirst".into());
    let (mut servers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        (Vec::new(), Vec::new(), Vec::new());
    let host = || {
        let (mut s, mut d, mut o) = (Vec::new(), Vec::new(), Vec::new());
        for line in host_resolv.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some("nameserver") => s.extend(f.map(str::to_string)),
                Some("search") | Some("domain") => d = f.map(str::to_string).collect(),
                Some("options") => o.extend(f.map(str::to_string)),
                _ => {}
            }
        }
        (s, d, o)
    };
    let cluster_first =
        policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !host_network);
    if cluster_first {
        servers.push(cluster_dns.to_string());
        searches = vec![
            format!("{ns}.svc.{cluster_domain}"),
            format!("svc.{cluster_domain}"),
            cluster_domain.to_string(),
        ];
        let (_, host_search, _) = host();
        searches.extend(host_search);
        options.push("ndots:5".into());
    } else if policy != "None" {
        (servers, searches, options) = host();
    }
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(cfg.nameservers.clone().unwrap_or_default());
        searches.extend(cfg.searches.clone().unwrap_or_default());
        for o in cfg.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    servers.dedup();
    let mut seen = std::collections::HashSet::new();
    searches.retain(|s| seen.insert(s.clone()));
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Writes `text` to `path` (creating the directory).
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(text.as_bytes())
}

/// Whether `eth0` in the namespace `name` holds `ip` (a sandbox that
/// survived an agent restart).
pub async fn holds_address(name: &str, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    let Ok(netns) = ferry_netlink::netns::NetNs::open_named(name) else {
        return false;
    };
    let Ok(nl) = ferry_netlink::Netlink::connect_in(&netns).await else {
        return false;
    };
    let Ok(Some(eth0)) = nl.link("eth0").await else {
        return false;
    };
    nl.addresses(Some(eth0.index))
        .await
        .is_ok_and(|a| a.iter().any(|a| a.address == ip))
}

/// Kills every process left in the namespace `name` (SIGKILL).
pub fn kill_processes_in(name: &str) {
    if let Ok(path) = ferry_netlink::netns::named_path(name) {
        for pid in ferry_netlink::netns::processes_in(&[path]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn sandbox_name_short_and_long() {
        assert_eq!(sandbox_name("n1", "default", "web"), "n1-default-web");
        let long = "p".repeat(253);
        let a = sandbox_name("n1", "default", &long);
        assert_eq!(a.len(), 255);
        assert_ne!(a, sandbox_name("n1", "default", &"p".repeat(252)));
        assert_eq!(a, sandbox_name("n1", "default", &long));
    }

    #[test]
    fn hosts_file_as_kubelet_writes_it() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web-0", "namespace": "shop"},
            "spec": {"hostname": "web-0", "subdomain": "web", "containers": [],
                     "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}}),
        );
        let h = hosts_file(&p, "10.244.1.5", "cluster.local");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(h.contains("10.244.1.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
        assert!(h.contains("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"));
    }

    #[test]
    fn resolv_conf_per_dns_policy() {
        let host = "nameserver 192.168.1.1\nsearch corp.example\noptions edns0\n";
        let p = pod(
            serde_json::json!({"metadata": {"name": "a", "namespace": "shop"}, "spec": {"containers": []}}),
        );
        assert_eq!(
            resolv_conf(&p, "10.96.0.10", "cluster.local", host),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        let d = pod(
            serde_json::json!({"metadata": {"name": "a"}, "spec": {"dnsPolicy": "Default", "containers": []}}),
        );
        assert_eq!(
            resolv_conf(&d, "10.96.0.10", "cluster.local", host),
            "search corp.example\nnameserver 192.168.1.1\noptions edns0\n"
        );
        let n = pod(
            serde_json::json!({"metadata": {"name": "a"}, "spec": {"dnsPolicy": "None", "containers": [],
            "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["x.y"], "options": [{"name": "ndots", "value": "2"}]}}}),
        );
        assert_eq!(
            resolv_conf(&n, "10.96.0.10", "cluster.local", host),
            "search x.y\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        let hn = pod(
            serde_json::json!({"metadata": {"name": "a"}, "spec": {"hostNetwork": true, "containers": []}}),
        );
        assert!(
            resolv_conf(&hn, "10.96.0.10", "cluster.local", host)
                .contains("nameserver 192.168.1.1")
        );
    }

    #[test]
    fn cni_config_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&cni_config("10.244.1.0/24", 1450, Path::new("/s/cni")))
                .expect("json");
        assert_eq!(v["type"], "ferry");
        assert_eq!(v["bridge"], "cni0");
        assert_eq!(v["podCIDR"], "10.244.1.0/24");
        assert_eq!(v["mtu"], 1450);
        assert_eq!(v["ipam"]["dataDir"], "/s/cni");
    }
}
