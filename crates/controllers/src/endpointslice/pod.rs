//! What the endpoint controllers need to know about Pods, Nodes and
//! Services, as small projections kept in memory instead of whole objects,
//! and the Kubernetes rules shared by the EndpointSlice and Endpoints
//! controllers (k8s.io/endpointslice/util): which Pods belong in a Service's
//! endpoints, how a `targetPort` resolves, when `hostname` is set.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The Node label whose value becomes an endpoint's `zone`.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// A container port a named `targetPort` can resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
}

/// The fields of a Pod that decide its endpoints. Two projections that are
/// equal produce the same endpoints, so an update that leaves the
/// projection unchanged needs no sync.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// `status.podIPs`, or `status.podIP` when the list is empty.
    pub ips: Vec<String>,
    /// `spec.nodeName` ("" while unscheduled).
    pub node_name: String,
    pub hostname: String,
    pub subdomain: String,
    /// The Pod's `Ready` condition is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// Phase `Succeeded` or `Failed`: the Pod will never run again.
    pub terminal: bool,
    /// Ports of the containers and of sidecars (restartable init
    /// containers), in the order `FindPort` searches them.
    pub ports: Vec<ContainerPort>,
}

impl PodInfo {
    /// None for a Pod without a name or namespace (never served by an API
    /// server, but a bad object must not stop the controller).
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut ips: Vec<String> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
            .unwrap_or_default();
        ips.retain(|ip| !ip.is_empty());
        if ips.is_empty()
            && let Some(ip) = status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
        {
            ips.push(ip);
        }
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let terminal = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let mut ports = Vec::new();
        if let Some(spec) = spec {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for container in spec.containers.iter().chain(sidecars) {
                for port in container.ports.iter().flatten() {
                    ports.push(ContainerPort {
                        name: port.name.clone().unwrap_or_default(),
                        port: port.container_port,
                        protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    });
                }
            }
        }
        Some(PodInfo {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            ips,
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            hostname: spec.and_then(|s| s.hostname.clone()).unwrap_or_default(),
            subdomain: spec.and_then(|s| s.subdomain.clone()).unwrap_or_default(),
            ready,
            terminating: meta.deletion_timestamp.is_some(),
            terminal,
            ports,
        })
    }

    /// `ShouldPodBeInEndpoints`: the Pod has an IP and is not terminal;
    /// terminating Pods only when `include_terminating`.
    pub fn in_endpoints(&self, include_terminating: bool) -> bool {
        !self.terminal && !self.ips.is_empty() && (include_terminating || !self.terminating)
    }

    /// The Pod's addresses of one family (`IPv4` or `IPv6`), normalised
    /// the way Go's `net.IP.String()` prints them. Unparsable ones are
    /// skipped.
    pub fn addresses(&self, ipv6: bool) -> Vec<String> {
        self.ips
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .filter(|ip| ip.is_ipv6() == ipv6)
            .map(|ip| ip.to_string())
            .collect()
    }

    /// The Pod's object key, `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the EndpointSlice controller needs to know about a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The `topology.kubernetes.io/zone` label, when set and not empty.
    pub zone: Option<String>,
}

impl NodeInfo {
    pub fn from_node(node: &Node) -> Option<NodeInfo> {
        Some(NodeInfo {
            name: node.metadata.name.clone()?,
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_TOPOLOGY_ZONE))
                .filter(|z| !z.is_empty())
                .cloned(),
        })
    }
}

/// The Service's selector, or None when it has none. An empty selector
/// counts as none: a real API server stores `selector: {}` as no selector
/// (protobuf drops empty maps), and a Service without a selector has
/// user-managed endpoints.
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Whether a selector (`key=value` for every entry) matches these labels.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Service's selector matches the Pod (same namespace, labels).
pub fn selects(service: &Service, pod: &PodInfo) -> bool {
    service.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
        && selector(service).is_some_and(|s| selector_matches(s, &pod.labels))
}

/// `type: ExternalName` Services get no endpoints.
pub fn is_external_name(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
}

/// A headless Service (`clusterIP: None`).
pub fn is_headless(service: &Service) -> bool {
    cluster_ip(service) == "None"
}

/// `IsServiceIPSet`: a real cluster IP (not None, not empty).
pub fn is_ip_set(service: &Service) -> bool {
    let ip = cluster_ip(service);
    !ip.is_empty() && ip != "None"
}

fn cluster_ip(service: &Service) -> &str {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("")
}

pub fn publish_not_ready_addresses(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

pub fn ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

/// The IP families of a Service's endpoints, as EndpointSlice address
/// types: `spec.ipFamilies` when set, else the family of the cluster IP,
/// else IPv4. (kube-controller-manager assumes both families for a
/// headless Service without `ipFamilies`, a fallback for old API servers;
/// Ferry's lab is IPv4, so it keeps to one.)
pub fn address_types(service: &Service) -> Vec<&'static str> {
    let mut types = Vec::new();
    for family in service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
    {
        let t = match family.as_str() {
            "IPv4" => "IPv4",
            "IPv6" => "IPv6",
            _ => continue,
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    if types.is_empty() {
        let v6 = cluster_ip(service)
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_ipv6());
        types.push(if v6 { "IPv6" } else { "IPv4" });
    }
    types
}

/// A Service port's protocol, `TCP` when unset.
pub fn protocol(port: &ServicePort) -> &str {
    port.protocol.as_deref().unwrap_or("TCP")
}

/// `FindPort`: the Pod's port for a Service port. A number is used as is
/// (an unset or zero `targetPort` means the Service port, as the API
/// server defaults it); a name is looked up among the Pod's container
/// ports with the same protocol. None when a name does not resolve.
pub fn find_port(pod: &PodInfo, service_port: &ServicePort) -> Option<i32> {
    match &service_port.target_port {
        None => Some(service_port.port),
        Some(IntOrString::Int(0)) => Some(service_port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .ports
            .iter()
            .find(|p| &p.name == name && p.protocol == protocol(service_port))
            .map(|p| p.port),
    }
}

/// `ShouldSetHostname`: the Pod names a hostname and its subdomain is this
/// Service, in the same namespace. (Only headless Services give those
/// names DNS records, but upstream sets the field for any Service.)
pub fn should_set_hostname(pod: &PodInfo, service: &Service) -> bool {
    !pod.hostname.is_empty()
        && Some(pod.subdomain.as_str()) == service.metadata.name.as_deref()
        && Some(pod.namespace.as_str()) == service.metadata.namespace.as_deref()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::from_pod(&serde_json::from_value(v).unwrap()).unwrap()
    }

    fn service_port(v: serde_json::Value) -> ServicePort {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn projection_reads_status_and_ports() {
        let p = pod(json!({
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "labels": {"app": "web"},
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "nodeName": "n1", "hostname": "h", "subdomain": "s",
                "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}],
                "initContainers": [
                    {"name": "side", "restartPolicy": "Always",
                     "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "UDP"}]},
                    {"name": "once", "ports": [{"name": "ignored", "containerPort": 1}]}
                ]
            },
            "status": {"podIP": "10.0.0.1", "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        assert_eq!(p.ips, ["10.0.0.1"]);
        assert!(p.ready && p.terminating && !p.terminal);
        assert_eq!(p.node_name, "n1");
        assert_eq!(
            p.ports,
            [
                ContainerPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: "TCP".into()
                },
                ContainerPort {
                    name: "metrics".into(),
                    port: 9090,
                    protocol: "UDP".into()
                }
            ]
        );
        assert!(p.in_endpoints(true));
        assert!(!p.in_endpoints(false));
    }

    #[test]
    fn pod_ips_win_over_pod_ip_and_families_split() {
        let p = pod(json!({
            "metadata": {"name": "a", "namespace": "ns"},
            "status": {"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::0001"}],
                       "phase": "Succeeded"}
        }));
        assert_eq!(p.addresses(false), ["10.0.0.1"]);
        assert_eq!(p.addresses(true), ["fd00::1"]);
        assert!(p.terminal && !p.in_endpoints(true));
        let no_ip = pod(json!({"metadata": {"name": "b", "namespace": "ns"}}));
        assert!(!no_ip.in_endpoints(true));
        assert!(PodInfo::from_pod(&Pod::default()).is_none());
    }

    #[test]
    fn target_ports_resolve_by_number_and_name() {
        let p = pod(json!({
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                {"name": "web", "containerPort": 8080}
            ]}]}
        }));
        let sp = |v| service_port(v);
        assert_eq!(find_port(&p, &sp(json!({"port": 80}))), Some(80));
        assert_eq!(
            find_port(&p, &sp(json!({"port": 80, "targetPort": 9376}))),
            Some(9376)
        );
        assert_eq!(
            find_port(&p, &sp(json!({"port": 80, "targetPort": "web"}))),
            Some(8080)
        );
        assert_eq!(
            find_port(&p, &sp(json!({"port": 53, "targetPort": "dns"}))),
            None,
            "the protocol must match too"
        );
        assert_eq!(
            find_port(
                &p,
                &sp(json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}))
            ),
            Some(5353)
        );
        assert_eq!(
            find_port(&p, &sp(json!({"port": 80, "targetPort": "nope"}))),
            None
        );
    }

    #[test]
    fn selectors_and_service_kinds() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "None"}
        }))
        .unwrap();
        let mut p = pod(json!({"metadata": {"name": "a", "namespace": "ns",
                                            "labels": {"app": "web", "x": "y"}}}));
        assert!(selects(&svc, &p));
        p.namespace = "other".into();
        assert!(!selects(&svc, &p));
        assert!(is_headless(&svc) && !is_ip_set(&svc));
        assert_eq!(address_types(&svc), ["IPv4"]);
        let empty: Service =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"selector": {}}}))
                .unwrap();
        assert!(selector(&empty).is_none());
        let v6: Service = serde_json::from_value(
            json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "fd00::10"}}),
        )
        .unwrap();
        assert_eq!(address_types(&v6), ["IPv6"]);
        let dual: Service = serde_json::from_value(
            json!({"metadata": {"name": "x"}, "spec": {"ipFamilies": ["IPv6", "IPv4"]}}),
        )
        .unwrap();
        assert_eq!(address_types(&dual), ["IPv6", "IPv4"]);
    }

    #[test]
    fn hostname_needs_matching_subdomain() {
        let svc: Service =
            serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "ns"}})).unwrap();
        let mut p = pod(json!({"metadata": {"name": "a", "namespace": "ns"},
                               "spec": {"hostname": "db-0", "subdomain": "db"}}));
        assert!(should_set_hostname(&p, &svc));
        p.subdomain = "other".into();
        assert!(!should_set_hostname(&p, &svc));
        p.subdomain = "db".into();
        p.hostname.clear();
        assert!(!should_set_hostname(&p, &svc));
    }
}
