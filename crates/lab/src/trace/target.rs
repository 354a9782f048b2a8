//! The command line's `<from>` and `<to>`, and what they name in the
//! cluster: the source's namespace and address, the destination's
//! address, port and protocol.

use std::net::Ipv4Addr;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Pod, ServicePort};

use super::ingress::Url;
use super::path::{Place, PodPlace};
use super::{Cluster, key};

/// Where the connection starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Host,
    Node(String),
    Pod { namespace: String, name: String },
}

/// Where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pod {
        namespace: String,
        name: String,
        port: Option<u16>,
    },
    Service {
        namespace: String,
        name: String,
        /// A port name or number; `None`: the Service's only port.
        port: Option<String>,
    },
    /// `<node name>:<port>`, `<ip>:<port>` (a NodePort when the address
    /// is a node's), or `<pod name>:<port>`.
    HostPort { host: String, port: u16 },
    /// An Ingress host and path.
    Url(Url),
}

/// `ns/name` or `name` (in `namespace`).
fn split_namespace(rest: &str, namespace: &str) -> (String, String) {
    match rest.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (namespace.to_string(), rest.to_string()),
    }
}

fn non_empty(what: &str, text: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.contains('/') {
        bail!("{text:?}: expected {what}");
    }
    Ok(())
}

/// Parses `<from>`: `host`, `node/<name>`, `pod/[<ns>/]<name>` or `<name>`.
pub fn parse_source(text: &str, namespace: &str) -> anyhow::Result<Source> {
    let text = text.trim();
    if text == "host" {
        return Ok(Source::Host);
    }
    if let Some(name) = text.strip_prefix("node/") {
        non_empty("node/<name>", text, name)?;
        return Ok(Source::Node(name.to_string()));
    }
    let rest = text.strip_prefix("pod/").unwrap_or(text);
    let (namespace, name) = split_namespace(rest, namespace);
    non_empty("host, node/<name> or pod/<name>", text, &name)?;
    if name.contains(':') {
        bail!("{text:?}: a source has no port");
    }
    Ok(Source::Pod { namespace, name })
}

fn port_number(text: &str, port: &str) -> anyhow::Result<u16> {
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("{text:?}: {port:?} is not a port number"))
}

/// Parses `<to>`: `svc/[<ns>/]<name>[:<port>]`, `pod/[<ns>/]<name>[:<port>]`,
/// `node/<name>:<port>`, `<host>:<port>` or a pod `<name>`.
pub fn parse_target(text: &str, namespace: &str) -> anyhow::Result<Target> {
    let text = text.trim();
    if text.starts_with("http://") || text.starts_with("https://") {
        return Url::parse(text).map(Target::Url);
    }
    let (main, port) = match text.rsplit_once(':') {
        Some((main, port)) => (main, Some(port)),
        None => (text, None),
    };
    if let Some(rest) = main
        .strip_prefix("svc/")
        .or_else(|| main.strip_prefix("service/"))
    {
        let (namespace, name) = split_namespace(rest, namespace);
        non_empty("svc/<name>[:port]", text, &name)?;
        if port.is_some_and(str::is_empty) {
            bail!("{text:?}: empty port");
        }
        return Ok(Target::Service {
            namespace,
            name,
            port: port.map(String::from),
        });
    }
    if let Some(name) = main.strip_prefix("node/") {
        non_empty("node/<name>:<nodePort>", text, name)?;
        let Some(port) = port else {
            bail!("{text:?}: expected node/<name>:<nodePort>");
        };
        return Ok(Target::HostPort {
            host: name.to_string(),
            port: port_number(text, port)?,
        });
    }
    let port = port.map(|p| port_number(text, p)).transpose()?;
    if let Some(rest) = main.strip_prefix("pod/") {
        let (namespace, name) = split_namespace(rest, namespace);
        non_empty("pod/<name>[:port]", text, &name)?;
        return Ok(Target::Pod {
            namespace,
            name,
            port,
        });
    }
    non_empty(
        "a pod, svc/<name>, <node>:<port> or <ip>:<port>",
        text,
        main,
    )?;
    match port {
        Some(port) => Ok(Target::HostPort {
            host: main.to_string(),
            port,
        }),
        None if main.parse::<Ipv4Addr>().is_ok() => {
            bail!("{text:?}: an address needs a port (<ip>:<port>)")
        }
        None => Ok(Target::Pod {
            namespace: namespace.to_string(),
            name: main.to_string(),
            port: None,
        }),
    }
}

fn pod_ip(pod: &Pod) -> anyhow::Result<Ipv4Addr> {
    let status = pod.status.as_ref();
    let ip = status.and_then(|s| s.pod_ip.as_deref()).with_context(|| {
        format!(
            "pod {} has no IP yet (phase {})",
            key(&pod.metadata),
            status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
        )
    })?;
    ip.parse()
        .with_context(|| format!("pod {}: podIP {ip:?} is not IPv4", key(&pod.metadata)))
}

fn protocol_number(protocol: Option<&str>) -> anyhow::Result<u8> {
    Ok(match protocol.unwrap_or("TCP") {
        "TCP" => 6,
        "UDP" => 17,
        "SCTP" => 132,
        other => bail!("protocol {other} is not supported"),
    })
}

/// The start of a trace: the source's place and address.
pub(super) fn resolve_source(
    cluster: &Cluster,
    source: &Source,
) -> anyhow::Result<(Place, Option<Ipv4Addr>)> {
    match source {
        Source::Host => Ok((Place::Host, None)),
        Source::Node(name) => {
            let (_, ip) = cluster
                .node_ips()
                .into_iter()
                .find(|(n, _)| n == name)
                .with_context(|| format!("node {name} not found (or it has no InternalIP)"))?;
            if !ferry_netlink::netns::exists(name) {
                bail!("node {name} has no network namespace /run/netns/{name}: is it a lab node?");
            }
            Ok((Place::Node(name.clone()), Some(ip)))
        }
        Source::Pod { namespace, name } => {
            let pod = cluster
                .pod(namespace, name)
                .with_context(|| format!("pod {namespace}/{name} not found"))?;
            let ip = pod_ip(pod)?;
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .with_context(|| format!("pod {namespace}/{name} is not scheduled"))?;
            if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
                return Ok((Place::Node(node), Some(ip)));
            }
            let place = PodPlace::of(pod, &node)?;
            if !ferry_netlink::netns::exists(&place.netns) {
                bail!(
                    "pod {namespace}/{name}: its network namespace {} is not on this machine",
                    place.netns
                );
            }
            Ok((Place::Pod(place), Some(ip)))
        }
    }
}

/// A pod's port when none is given: the first TCP containerPort, else
/// the HTTP port of a built-in echo server.
fn default_pod_port(pod: &Pod) -> Option<u16> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice())?;
    let declared = containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .and_then(|p| u16::try_from(p.container_port).ok());
    declared.or_else(|| {
        containers
            .iter()
            .find_map(|c| super::probe::echo_ports(c).map(|p| p.0))
    })
}

fn describe_port(p: &ServicePort) -> String {
    format!(
        "{}{}/{}",
        p.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(|n| format!("{n} "))
            .unwrap_or_default(),
        p.port,
        p.protocol.as_deref().unwrap_or("TCP")
    )
}

/// The destination: the first packet's address, port and protocol, and a
/// label for the header.
pub(super) fn resolve_target(
    cluster: &Cluster,
    target: &Target,
    namespace: &str,
) -> anyhow::Result<(Ipv4Addr, u16, u8, String)> {
    match target {
        Target::Pod {
            namespace,
            name,
            port,
        } => {
            let pod = cluster
                .pod(namespace, name)
                .with_context(|| format!("pod {namespace}/{name} not found"))?;
            let ip = pod_ip(pod)?;
            let port = port.or_else(|| default_pod_port(pod)).with_context(|| {
                format!("pod {namespace}/{name} declares no port: use pod/{name}:<port>")
            })?;
            Ok((ip, port, 6, format!("pod {namespace}/{name} ({ip}:{port})")))
        }
        Target::Service {
            namespace,
            name,
            port,
        } => {
            let svc = cluster
                .service(namespace, name)
                .with_context(|| format!("service {namespace}/{name} not found"))?;
            let spec = svc.spec.clone().unwrap_or_default();
            let cluster_ip = spec
                .cluster_ip
                .as_deref()
                .filter(|ip| *ip != "None" && !ip.is_empty())
                .with_context(|| {
                    format!("service {namespace}/{name} has no ClusterIP (headless or ExternalName): trace one of its pods")
                })?;
            let ip: Ipv4Addr = cluster_ip.parse().with_context(|| {
                format!("service {namespace}/{name}: ClusterIP {cluster_ip} is not IPv4")
            })?;
            let ports = spec.ports.unwrap_or_default();
            let all = ports
                .iter()
                .map(describe_port)
                .collect::<Vec<_>>()
                .join(", ");
            let chosen = match port {
                None if ports.len() == 1 => ports.first(),
                None => bail!(
                    "service {namespace}/{name} has several ports ({all}): use svc/{name}:<port>"
                ),
                Some(p) => ports
                    .iter()
                    .find(|sp| sp.name.as_deref() == Some(p.as_str()) || sp.port.to_string() == *p),
            }
            .with_context(|| {
                format!(
                    "service {namespace}/{name} has no port {} (ports: {all})",
                    port.as_deref().unwrap_or("")
                )
            })?;
            let port = u16::try_from(chosen.port).context("service port out of range")?;
            Ok((
                ip,
                port,
                protocol_number(chosen.protocol.as_deref())?,
                format!(
                    "service {namespace}/{name} port {} (ClusterIP {ip}:{port})",
                    describe_port(chosen)
                ),
            ))
        }
        Target::Url(url) => bail!(
            "{}: an Ingress URL goes through the Ingress controller, not one address",
            url.host
        ),
        Target::HostPort { host, port } => {
            let node_ips = cluster.node_ips();
            let (ip, node) = match host.parse::<Ipv4Addr>() {
                Ok(ip) => (ip, cluster.node_with_ip(ip)),
                Err(_) => match node_ips.iter().find(|(n, _)| n == host) {
                    Some((n, ip)) => (*ip, Some(n.clone())),
                    None => {
                        // Not a node: `<pod>:<port>` in the namespace.
                        let pod = Target::Pod {
                            namespace: namespace.to_string(),
                            name: host.clone(),
                            port: Some(*port),
                        };
                        if cluster.pod(namespace, host).is_none() {
                            bail!("no node named {host}, and no pod {namespace}/{host}");
                        }
                        return resolve_target(cluster, &pod, namespace);
                    }
                },
            };
            // A NodePort names its Service and protocol.
            let node_port = cluster.services.iter().find_map(|s| {
                let p = s
                    .spec
                    .as_ref()?
                    .ports
                    .as_ref()?
                    .iter()
                    .find(|p| p.node_port == Some(i32::from(*port)))?;
                Some((s, p))
            });
            let cluster_ip = cluster.services.iter().find_map(|s| {
                let spec = s.spec.as_ref()?;
                (spec.cluster_ip.as_deref() == Some(ip.to_string().as_str())).then_some(())?;
                let p = spec
                    .ports
                    .as_ref()?
                    .iter()
                    .find(|p| p.port == i32::from(*port))?;
                Some((s, p))
            });
            match (node, node_port, cluster_ip) {
                (Some(node), Some((svc, p)), _) => Ok((
                    ip,
                    *port,
                    protocol_number(p.protocol.as_deref())?,
                    format!(
                        "NodePort {port} on {node} ({ip}) of service {} port {}",
                        key(&svc.metadata),
                        describe_port(p)
                    ),
                )),
                (Some(node), None, _) => Ok((ip, *port, 6, format!("{node} ({ip}:{port})"))),
                (None, _, Some((svc, p))) => Ok((
                    ip,
                    *port,
                    protocol_number(p.protocol.as_deref())?,
                    format!(
                        "service {} port {} (ClusterIP {ip}:{port})",
                        key(&svc.metadata),
                        describe_port(p)
                    ),
                )),
                (None, _, None) => {
                    let label = match cluster.pod_with_ip(ip) {
                        Some(pod) => format!("pod {} ({ip}:{port})", key(&pod.metadata)),
                        None => format!("{ip}:{port}"),
                    };
                    Ok((ip, *port, 6, label))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(parse_source("host", "default").ok(), Some(Source::Host));
        assert_eq!(
            parse_source("node/lab-node-1", "default").ok(),
            Some(Source::Node("lab-node-1".into()))
        );
        let pod = |ns: &str, name: &str| Source::Pod {
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(
            parse_source("client", "default").ok(),
            Some(pod("default", "client"))
        );
        assert_eq!(
            parse_source("pod/client", "team").ok(),
            Some(pod("team", "client"))
        );
        assert_eq!(
            parse_source("pod/a/client", "team").ok(),
            Some(pod("a", "client"))
        );
        assert!(parse_source("node/", "default").is_err());
        assert!(parse_source("client:80", "default").is_err());
    }

    #[test]
    fn targets() {
        let t = |s: &str| parse_target(s, "default");
        assert_eq!(
            t("svc/web").ok(),
            Some(Target::Service {
                namespace: "default".into(),
                name: "web".into(),
                port: None
            })
        );
        assert_eq!(
            t("svc/kube-system/kube-dns:dns-tcp").ok(),
            Some(Target::Service {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
                port: Some("dns-tcp".into())
            })
        );
        assert_eq!(
            t("lab-node-2:30080").ok(),
            Some(Target::HostPort {
                host: "lab-node-2".into(),
                port: 30080
            })
        );
        assert_eq!(
            t("172.30.0.12:30080").ok(),
            Some(Target::HostPort {
                host: "172.30.0.12".into(),
                port: 30080
            })
        );
        assert_eq!(
            t("node/lab-node-2:30080").ok(),
            Some(Target::HostPort {
                host: "lab-node-2".into(),
                port: 30080
            })
        );
        assert_eq!(
            t("pod/echo-1:8080").ok(),
            Some(Target::Pod {
                namespace: "default".into(),
                name: "echo-1".into(),
                port: Some(8080)
            })
        );
        assert_eq!(
            t("echo-1").ok(),
            Some(Target::Pod {
                namespace: "default".into(),
                name: "echo-1".into(),
                port: None
            })
        );
        for bad in [
            "10.96.0.1",
            "svc/web:",
            "pod/x:http",
            "node/n1",
            "x:0",
            "http://",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }
}
