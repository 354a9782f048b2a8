//! The proxy model: from Services and EndpointSlices to, per service port,
//! the addresses it answers on and the endpoints each kind of traffic may
//! use on this node. Pure and deterministic, so a sync can always compute
//! the whole desired state and let the dataplane apply only the changes.
//!
//! Endpoint choice follows kube-proxy (`CategorizeEndpoints`, KEP-1669):
//! ready endpoints when there are any, else the ones that are serving but
//! terminating; `Local` traffic policies restrict to this node's endpoints
//! with the same fallback.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Annotation choosing the endpoint scheduler of a Service: `random`
/// (the default, kube-proxy's), `rr`, `wrr` or `sh`. IPVS's `lc`/`wlc`
/// are refused: nf_tables cannot pick the endpoint with the fewest active
/// connections while evaluating a rule (it has no per-endpoint counter it
/// can compare across endpoints; IPVS keeps its own connection table).
pub const SCHEDULER_ANNOTATION: &str = "ferry.dev/scheduler";
/// Endpoint weights for `wrr`: `<pod name or IP>=<weight>,...`; endpoints
/// not listed weigh 1.
pub const WEIGHTS_ANNOTATION: &str = "ferry.dev/weights";

/// Transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// IANA protocol number (what nf_tables matches).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

/// How a service port spreads connections over its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Uniformly random (kube-proxy's behaviour).
    Random,
    /// Round robin (`numgen inc`).
    RoundRobin,
    /// Weighted round robin (`numgen inc` over a bucket table filled in
    /// smooth weighted order), weights from [`WEIGHTS_ANNOTATION`].
    WeightedRoundRobin,
    /// Source hash: one client address always reaches the same endpoint.
    SourceHash,
}

/// An IPv4 prefix (`loadBalancerSourceRanges`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.trim().split_once('/').unwrap_or((s.trim(), "32"));
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some(
            Cidr {
                network: ip,
                prefix_len,
            }
            .normalized(),
        )
    }

    fn normalized(self) -> Cidr {
        Cidr {
            network: Ipv4Addr::from(u32::from(self.network) & u32::from(self.mask())),
            ..self
        }
    }

    /// The netmask (`255.255.0.0` for a /16).
    pub fn mask(self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        )
    }

    /// First and last address of the prefix.
    pub fn bounds(self) -> (Ipv4Addr, Ipv4Addr) {
        let first = u32::from(self.network);
        (
            Ipv4Addr::from(first),
            Ipv4Addr::from(first | !u32::from(self.mask())),
        )
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.mask()) == u32::from(self.network)
    }
}

/// One port of one Service, with everything the dataplane needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name (may be empty for a single-port Service).
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    pub cluster_ips: Vec<Ipv4Addr>,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `externalTrafficPolicy: Local` (only meaningful with external
    /// addresses or a NodePort).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_seconds: Option<u32>,
    pub source_ranges: Vec<Cidr>,
    pub health_check_node_port: Option<u16>,
    pub scheduler: Scheduler,
    /// `wrr` weights by pod name or endpoint IP.
    pub weights: BTreeMap<String, u32>,
}

impl ServicePort {
    /// Whether traffic can come from outside the cluster (NodePort,
    /// externalIPs or load-balancer IPs).
    pub fn has_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

/// A problem with one Service; the Service is skipped, others go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub namespace: String,
    pub name: String,
    pub message: String,
}

fn ipv4s<'a>(values: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    values.into_iter().filter_map(|v| v.parse().ok()).collect()
}

/// The ports a Service needs programmed. Headless and ExternalName
/// Services need none.
pub fn service_ports(svc: &Service) -> Result<Vec<ServicePort>, Problem> {
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let problem = |message: String| Problem {
        namespace: namespace.clone(),
        name: name.clone(),
        message,
    };
    let Some(spec) = &svc.spec else {
        return Ok(Vec::new());
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Vec::new());
    }
    let mut cluster_ips: Vec<Ipv4Addr> = ipv4s(spec.cluster_ips.iter().flatten());
    if cluster_ips.is_empty() {
        cluster_ips = ipv4s(spec.cluster_ip.iter());
    }
    if cluster_ips.is_empty() {
        // Headless (`None`) or not allocated yet.
        return Ok(Vec::new());
    }
    let external_ips = ipv4s(spec.external_ips.iter().flatten());
    let load_balancer_ips = if spec.type_.as_deref() == Some("LoadBalancer") {
        ipv4s(
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_ref()),
        )
    } else {
        Vec::new()
    };
    let mut source_ranges = Vec::new();
    for r in spec.load_balancer_source_ranges.iter().flatten() {
        source_ranges.push(
            Cidr::parse(r)
                .ok_or_else(|| problem(format!("invalid loadBalancerSourceRanges entry {r:?}")))?,
        );
    }
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(10_800)
    });
    let scheduler = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULER_ANNOTATION))
        .map(String::as_str)
    {
        None | Some("random") => Scheduler::Random,
        Some("rr") => Scheduler::RoundRobin,
        Some("wrr") => Scheduler::WeightedRoundRobin,
        Some("sh") => Scheduler::SourceHash,
        Some(other @ ("lc" | "wlc")) => {
            return Err(problem(format!(
                "unsupported {SCHEDULER_ANNOTATION} {other:?}: least-connection scheduling is not possible in nf_tables; use random, rr, wrr or sh"
            )));
        }
        Some(other) => {
            return Err(problem(format!(
                "unsupported {SCHEDULER_ANNOTATION} {other:?}: use random, rr, wrr or sh"
            )));
        }
    };
    let mut weights = BTreeMap::new();
    if let Some(w) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WEIGHTS_ANNOTATION))
    {
        for item in w.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parsed = item
                .split_once('=')
                .and_then(|(k, v)| Some((k.trim().to_string(), v.trim().parse::<u32>().ok()?)))
                .filter(|(_, v)| *v <= 100);
            match parsed {
                Some((k, v)) => {
                    weights.insert(k, v);
                }
                None => {
                    return Err(problem(format!(
                        "invalid {WEIGHTS_ANNOTATION} entry {item:?}: expected <pod name or IP>=<weight 0-100>"
                    )));
                }
            }
        }
    }
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = spec
        .health_check_node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|_| external_local);
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let protocol = Protocol::parse(p.protocol.as_deref())
            .ok_or_else(|| problem(format!("unsupported protocol {:?}", p.protocol)))?;
        let port =
            u16::try_from(p.port).map_err(|_| problem(format!("invalid port {}", p.port)))?;
        out.push(ServicePort {
            namespace: namespace.clone(),
            name: name.clone(),
            port_name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
            node_port: p
                .node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0),
            cluster_ips: cluster_ips.clone(),
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            external_local,
            internal_local,
            affinity_seconds,
            source_ranges: source_ranges.clone(),
            health_check_node_port,
            scheduler,
            weights: weights.clone(),
        });
    }
    Ok(out)
}

/// One endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    /// The pod behind the endpoint (`targetRef.name`), if any.
    pub pod: Option<String>,
}

/// The endpoints of `port_name`/`protocol` across a Service's IPv4
/// EndpointSlices, deduplicated (an address may be in several slices while
/// they are rewritten) and sorted.
pub fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
) -> Vec<Endpoint> {
    let mut by_key: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            // Unset `ready` means ready; unset `serving` follows `ready`.
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            for ip in ipv4s(ep.addresses.iter()) {
                let e = Endpoint {
                    ip,
                    port,
                    ready,
                    serving,
                    terminating,
                    node: ep.node_name.clone(),
                    pod: ep.target_ref.as_ref().and_then(|r| r.name.clone()),
                };
                // A ready copy wins over a stale one.
                match by_key.get(&(ip, port)) {
                    Some(old) if old.ready && !e.ready => {}
                    _ => {
                        by_key.insert((ip, port), e);
                    }
                }
            }
        }
    }
    by_key.into_values().collect()
}

/// Which endpoints each kind of traffic may use on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// For traffic with a Cluster policy.
    pub cluster: Vec<Endpoint>,
    /// This node's endpoints, for traffic with a Local policy.
    pub local: Vec<Endpoint>,
    /// Whether the port has a usable endpoint anywhere in the cluster
    /// (ready, or serving and terminating): without one, connections are
    /// rejected; with one but none for a Local policy here, that traffic
    /// is dropped (kube-proxy's `hasAnyEndpoints`).
    pub has_any: bool,
}

fn usable(eps: &[Endpoint], keep: impl Fn(&Endpoint) -> bool) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = eps.iter().filter(|e| e.ready && keep(e)).cloned().collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.iter()
        .filter(|e| e.serving && e.terminating && keep(e))
        .cloned()
        .collect()
}

/// kube-proxy's endpoint categories for `port` on node `node`.
pub fn categorize(port: &ServicePort, endpoints: &[Endpoint], node: &str) -> Categorized {
    let needs_local = port.internal_local || (port.external_local && port.has_external());
    let needs_cluster = !port.internal_local || (port.has_external() && !port.external_local);
    Categorized {
        cluster: if needs_cluster {
            usable(endpoints, |_| true)
        } else {
            Vec::new()
        },
        local: if needs_local {
            usable(endpoints, |e| e.node.as_deref() == Some(node))
        } else {
            Vec::new()
        },
        has_any: endpoints
            .iter()
            .any(|e| e.ready || (e.serving && e.terminating)),
    }
}

/// The whole desired state for one node: every service port with its
/// categorized endpoints, in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ports: Vec<(ServicePort, Categorized)>,
    pub problems: Vec<Problem>,
}

/// Builds the [`Plan`] for `node` from all Services and EndpointSlices.
pub fn plan(services: &[&Service], slices: &[&EndpointSlice], node: &str) -> Plan {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        let ns = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }
    let mut plan = Plan::default();
    for svc in services {
        match service_ports(svc) {
            Ok(ports) => {
                for port in ports {
                    let key = (port.namespace.clone(), port.name.clone());
                    let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
                    let eps = endpoints_for(slices, &port.port_name, port.protocol);
                    let cat = categorize(&port, &eps, node);
                    plan.ports.push((port, cat));
                }
            }
            Err(p) => plan.problems.push(p),
        }
    }
    plan.ports.sort_by(|(a, _), (b, _)| {
        (&a.namespace, &a.name, &a.port_name, a.protocol).cmp(&(
            &b.namespace,
            &b.name,
            &b.port_name,
            b.protocol,
        ))
    });
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}],
                     "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                     "sessionAffinity": "ClientIP", "externalIPs": ["192.0.2.7"]}
        }))
    }

    fn ep(
        ip: &str,
        node: &str,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> serde_json::Value {
        json!({"addresses": [ip], "nodeName": node,
               "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    #[test]
    fn service_ports_carry_every_field() {
        let ports = service_ports(&web()).expect("ports");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(
            (http.protocol, http.port, http.node_port),
            (Protocol::Tcp, 80, Some(30080))
        );
        assert_eq!(http.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 20)]);
        assert_eq!(http.external_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
        assert!(http.external_local && !http.internal_local);
        assert_eq!(http.affinity_seconds, Some(10_800));
        assert_eq!(http.health_check_node_port, Some(32000));
        assert_eq!(ports[1].protocol, Protocol::Udp);
        let headless = svc(
            json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        assert_eq!(service_ports(&headless), Ok(vec![]));
        let external = svc(
            json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "a.example"}}),
        );
        assert_eq!(service_ports(&external), Ok(vec![]));
        let bad = svc(
            json!({"metadata": {"name": "b", "annotations": {SCHEDULER_ANNOTATION: "lc"}},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}),
        );
        assert!(service_ports(&bad).expect_err("lc").message.contains("lc"));
    }

    #[test]
    fn endpoints_match_port_and_dedupe() {
        let a = slice(
            json!({"metadata": {"name": "web-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [ep("10.244.1.5", "n1", true, true, false), ep("10.244.2.5", "n2", false, false, false)]}),
        );
        let b = slice(
            json!({"metadata": {"name": "web-b", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [ep("10.244.1.5", "n1", false, false, false)]}),
        );
        let v6 = slice(json!({"metadata": {"name": "web-c"}, "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8080}], "endpoints": [{"addresses": ["fd00::1"]}]}));
        let eps = endpoints_for(&[&a, &b, &v6], "http", Protocol::Tcp);
        assert_eq!(eps.len(), 2);
        assert!(eps[0].ready, "the ready copy of 10.244.1.5 wins");
        assert_eq!(eps[0].port, 8080);
        assert!(endpoints_for(&[&a], "http", Protocol::Udp).is_empty());
        assert!(endpoints_for(&[&a], "dns", Protocol::Tcp).is_empty());
    }

    #[test]
    fn categories_follow_kube_proxy() {
        let ports = service_ports(&web()).expect("ports");
        let http = &ports[0];
        let e = |ip: &str, node: &str, r: bool, s: bool, t: bool| Endpoint {
            ip: ip.parse().expect("ip"),
            port: 8080,
            ready: r,
            serving: s,
            terminating: t,
            node: Some(node.into()),
            pod: None,
        };
        let eps = vec![
            e("10.244.1.5", "n1", true, true, false),
            e("10.244.1.6", "n1", false, true, true),
            e("10.244.2.5", "n2", true, true, false),
        ];
        // External Local: cluster endpoints for internal traffic, local for external.
        let c = categorize(http, &eps, "n1");
        assert_eq!(c.cluster.len(), 2, "ready ones only");
        assert_eq!(c.local.len(), 1);
        assert!(c.has_any);
        // On a node whose endpoints are all terminating, they are used.
        let eps2 = vec![
            e("10.244.1.6", "n1", false, true, true),
            e("10.244.2.5", "n2", true, true, false),
        ];
        let c = categorize(http, &eps2, "n1");
        assert_eq!(
            c.local.iter().map(|e| e.ip.to_string()).collect::<Vec<_>>(),
            vec!["10.244.1.6"]
        );
        // No local endpoint at all: Local traffic has nothing (dropped), but has_any stays true.
        let c = categorize(http, &eps2, "n3");
        assert!(c.local.is_empty() && c.has_any);
        // Not-ready and not serving: nothing usable, so rejected.
        let c = categorize(http, &[e("10.244.9.9", "n1", false, false, false)], "n1");
        assert!(c.cluster.is_empty() && !c.has_any);
        assert!(!categorize(http, &[], "n1").has_any);
        // internalTrafficPolicy Local without external: no cluster list.
        let mut internal = http.clone();
        internal.internal_local = true;
        internal.external_local = false;
        internal.node_port = None;
        internal.external_ips.clear();
        let c = categorize(&internal, &eps, "n2");
        assert!(c.cluster.is_empty());
        assert_eq!(c.local.len(), 1);
    }

    #[test]
    fn plan_groups_slices_by_service() {
        let s = web();
        let a = slice(
            json!({"metadata": {"name": "web-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [ep("10.244.1.5", "n1", true, true, false)]}),
        );
        let other = slice(
            json!({"metadata": {"name": "db-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 9999, "protocol": "TCP"}],
            "endpoints": [ep("10.244.3.3", "n1", true, true, false)]}),
        );
        let plan = plan(&[&s], &[&a, &other], "n1");
        assert_eq!(plan.ports.len(), 2);
        let (dns, cat) = &plan.ports[0];
        assert_eq!(dns.port_name, "dns");
        assert_eq!(cat.cluster[0].port, 5353);
        let (http, cat) = &plan.ports[1];
        assert_eq!(http.port_name, "http");
        assert_eq!(cat.cluster.len(), 1);
        assert_eq!(cat.cluster[0].port, 8080);
        assert!(plan.problems.is_empty());
    }
}
