//! The lab's cluster DNS, where kubeadm users expect CoreDNS: Service
//! `kube-system/kube-dns` on the 10th address of the service CIDR in front
//! of Deployment `ferry-dns` (2 replicas of `ferry dns`, run by the lab
//! runtime from the `ferry/ferry` image). Like every workload they go
//! through the API server; `deploy/dns.yaml` is the same pair for a real
//! cluster.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};

/// Where the DNS objects live.
pub const NAMESPACE: &str = "kube-system";
/// The Service, named as kubeadm names it (clients and docs look for it).
pub const SERVICE: &str = "kube-dns";
/// The Deployment and its container.
pub const DEPLOYMENT: &str = "ferry-dns";
/// Pods of the Deployment.
pub const REPLICAS: usize = 2;
/// The label kubeadm's CoreDNS pods and Service carry.
pub const APP_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// The Service's ports as `kubectl get svc` shows them.
pub const PORTS: &str = "53/UDP, 53/TCP, 9153/TCP";

/// The `--upstream` values of the DNS pods: `given` (`--dns-upstream`,
/// `ip[:port]` or `none`), else the host's nameservers that pods can
/// reach, else `none`.
pub fn upstreams(given: &[String], host_resolv: &str) -> anyhow::Result<Vec<String>> {
    if given.is_empty() {
        let found = reachable_nameservers(host_resolv);
        return Ok(if found.is_empty() {
            vec!["none".into()]
        } else {
            found
        });
    }
    if given.iter().any(|u| u == "none") {
        anyhow::ensure!(
            given.len() == 1,
            "--dns-upstream none cannot be combined with addresses ({})",
            given.join(", ")
        );
        return Ok(given.to_vec());
    }
    for upstream in given {
        let valid = upstream.parse::<IpAddr>().is_ok() || upstream.parse::<SocketAddr>().is_ok();
        anyhow::ensure!(
            valid,
            "--dns-upstream {upstream:?}: expected ip, ip:port or none"
        );
    }
    Ok(given.to_vec())
}

/// The `nameserver`s of a resolv.conf a pod can use: not loopback (a
/// pod's loopback is its own, not the host's, so systemd-resolved's
/// 127.0.0.53 is of no use), and IPv4 (the lab's pod network is IPv4
/// only).
pub fn reachable_nameservers(resolv_conf: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for line in resolv_conf.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(IpAddr::V4(ip))) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if !ip.is_loopback() && !ip.is_unspecified() && !seen.contains(&ip.to_string()) {
            seen.push(ip.to_string());
        }
    }
    seen
}

fn labels() -> serde_json::Value {
    serde_json::json!({ APP_LABEL.0: APP_LABEL.1 })
}

/// Service `kube-system/kube-dns` on `cluster_ip`.
pub fn service(cluster_ip: Ipv4Addr) -> Service {
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": {
                APP_LABEL.0: APP_LABEL.1,
                "kubernetes.io/name": "Ferry-DNS",
            },
        },
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "selector": labels(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    });
    serde_json::from_value(value).expect("the kube-dns Service is a valid Service")
}

/// Deployment `kube-system/ferry-dns`: `ferry dns` against the API server
/// through `kubeconfig` (containers are host processes, so the lab's
/// node kubeconfig is readable and 172.30.0.1 is reached through the
/// node), forwarding other names to `upstreams`.
pub fn deployment(kubeconfig: &Path, upstreams: &[String]) -> Deployment {
    let mut args = vec![
        "dns".to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ];
    for upstream in upstreams {
        args.push("--upstream".into());
        args.push(upstream.clone());
    }
    let value = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": DEPLOYMENT,
            "namespace": NAMESPACE,
            "labels": labels(),
        },
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels()},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    // Its own upstreams, never itself (the nameserver of
                    // ClusterFirst would be its own Service).
                    "dnsPolicy": "Default",
                    "containers": [{
                        "name": DEPLOYMENT,
                        "image": format!("ferry/ferry:{}", env!("CARGO_PKG_VERSION")),
                        "args": args,
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"},
                            "periodSeconds": 1,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                            "initialDelaySeconds": 10,
                            "timeoutSeconds": 5,
                            "failureThreshold": 5,
                        },
                    }],
                },
            },
        },
    });
    serde_json::from_value(value).expect("the ferry-dns Deployment is a valid Deployment")
}

/// Creates the namespace if missing, then the Service and the Deployment
/// (kept as they are when they exist).
pub async fn install(
    client: &kube::Client,
    cluster_ip: Ipv4Addr,
    kubeconfig: &Path,
    upstreams: &[String],
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NAMESPACE).await?.is_none() {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE},
        }))
        .expect("a valid Namespace");
        ignore_exists(namespaces.create(&PostParams::default(), &ns).await)
            .with_context(|| format!("creating namespace {NAMESPACE}"))?;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    ignore_exists(
        services
            .create(&PostParams::default(), &service(cluster_ip))
            .await,
    )
    .with_context(|| format!("creating Service {NAMESPACE}/{SERVICE}"))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    ignore_exists(
        deployments
            .create(&PostParams::default(), &deployment(kubeconfig, upstreams))
            .await,
    )
    .with_context(|| format!("creating Deployment {NAMESPACE}/{DEPLOYMENT}"))?;
    Ok(())
}

/// A create that found the object already there counts as done.
pub(crate) fn ignore_exists<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Addresses of the ready endpoints in the EndpointSlices of `kube-dns`
/// (a missing `ready` condition means ready, as in the API).
pub fn ready_addresses(slices: &[EndpointSlice]) -> BTreeSet<String> {
    slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

/// Waits until the kube-dns Service has [`REPLICAS`] ready endpoints.
pub async fn wait_ready(client: &kube::Client, timeout: Duration) -> anyhow::Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let by_service = ListParams::default().labels(&format!("kubernetes.io/service-name={SERVICE}"));
    let deadline = Instant::now() + timeout;
    loop {
        let list = slices.list(&by_service).await?;
        let ready = ready_addresses(&list.items).len();
        if ready >= REPLICAS {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the {SERVICE} Service has {ready} of {REPLICAS} ready endpoints after {}s; \
                 see `kubectl -n {NAMESPACE} describe pods -l {}={}` and the container logs \
                 ({DEPLOYMENT}.log) under the nodes' pods/ directories",
                timeout.as_secs(),
                APP_LABEL.0,
                APP_LABEL.1
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_default_to_reachable_host_nameservers() {
        let host = "# generated\nsearch corp.example\nnameserver 127.0.0.53\nnameserver 10.255.255.53\n\
                    nameserver ::1\nnameserver 2001:db8::1\nnameserver 192.0.2.1 # second\n\
                    nameserver 10.255.255.53\noptions edns0\n";
        assert_eq!(
            upstreams(&[], host).ok(),
            Some(vec!["10.255.255.53".to_string(), "192.0.2.1".to_string()])
        );
        assert_eq!(
            upstreams(&[], "nameserver 127.0.0.53\n").ok(),
            Some(vec!["none".to_string()])
        );
        assert_eq!(upstreams(&[], "").ok(), Some(vec!["none".to_string()]));
    }

    #[test]
    fn given_upstreams_are_checked() {
        let given = |v: &[&str]| {
            upstreams(
                &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "nameserver 192.0.2.1",
            )
        };
        assert_eq!(given(&["none"]).ok(), Some(vec!["none".to_string()]));
        assert_eq!(
            given(&["1.1.1.1", "9.9.9.9:5353", "[2001:db8::1]:53"]).ok(),
            Some(vec![
                "1.1.1.1".to_string(),
                "9.9.9.9:5353".to_string(),
                "[2001:db8::1]:53".to_string()
            ])
        );
        assert!(given(&["none", "1.1.1.1"]).is_err());
        assert!(given(&["dns.google"]).is_err());
        assert!(given(&["1.1.1.1:port"]).is_err());
    }

    #[test]
    fn service_is_kubeadms_kube_dns() {
        let svc = service(Ipv4Addr::new(10, 96, 0, 10));
        let v = serde_json::to_value(&svc).expect("serializes");
        assert_eq!(v["metadata"]["labels"]["k8s-app"], "kube-dns");
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/name"], "Ferry-DNS");
        assert_eq!(v["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(
            v["spec"]["selector"],
            serde_json::json!({"k8s-app": "kube-dns"})
        );
        let ports: Vec<String> = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| {
                format!(
                    "{}={}/{}->{:?}",
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.protocol.clone().unwrap_or_default(),
                    p.target_port
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                "dns=53/UDP->Some(Int(53))",
                "dns-tcp=53/TCP->Some(Int(53))",
                "metrics=9153/TCP->Some(Int(9153))"
            ]
        );
    }

    #[test]
    fn deployment_runs_ferry_dns() {
        let d = deployment(
            Path::new("/var/lib/ferry/lab/node-kubeconfig"),
            &["192.0.2.1".into(), "192.0.2.2:5353".into()],
        );
        let v = serde_json::to_value(&d).expect("serializes");
        let spec = &v["spec"];
        assert_eq!(spec["replicas"], 2);
        assert_eq!(spec["selector"]["matchLabels"]["k8s-app"], "kube-dns");
        assert_eq!(
            spec["template"]["metadata"]["labels"]["k8s-app"],
            "kube-dns"
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["dnsPolicy"], "Default");
        let c = &pod["containers"][0];
        assert_eq!(c["name"], "ferry-dns");
        assert_eq!(
            c["image"],
            format!("ferry/ferry:{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(c.get("command").is_none());
        assert_eq!(
            c["args"],
            serde_json::json!([
                "dns",
                "--kubeconfig",
                "/var/lib/ferry/lab/node-kubeconfig",
                "--upstream",
                "192.0.2.1",
                "--upstream",
                "192.0.2.2:5353"
            ])
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], 8181);
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], 8080);
        assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 10);
        assert_eq!(c["livenessProbe"]["failureThreshold"], 5);
        let ports: Vec<String> = c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| format!("{}={}/{}", p["name"], p["containerPort"], p["protocol"]))
            .collect();
        assert_eq!(
            ports,
            [
                r#""dns"=53/"UDP""#,
                r#""dns-tcp"=53/"TCP""#,
                r#""metrics"=9153/"TCP""#
            ]
        );
        let none = deployment(Path::new("/k"), &["none".into()]);
        let v = serde_json::to_value(&none).expect("serializes");
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["args"],
            serde_json::json!(["dns", "--kubeconfig", "/k", "--upstream", "none"])
        );
    }

    #[test]
    fn only_ready_endpoints_count() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-dns-abc"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.2"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.2"], "conditions": {"ready": false}},
                {"addresses": ["10.244.3.2"]},
            ],
        }))
        .expect("slice");
        assert_eq!(
            ready_addresses(&[slice]).into_iter().collect::<Vec<_>>(),
            ["10.244.1.2", "10.244.3.2"]
        );
    }
}
