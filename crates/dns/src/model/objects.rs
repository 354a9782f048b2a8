//! Compact copies of the API objects DNS answers depend on. Each watch
//! event is converted at once and the full object dropped, so memory grows
//! with what DNS needs (names, addresses, ports), not with managedFields,
//! annotations or status (CoreDNS keeps stripped structs for the same
//! reason).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// What a Service's own name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A/AAAA with the ClusterIPs (ClusterIP, NodePort, LoadBalancer).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoints' addresses.
    Headless,
    /// CNAME to `spec.externalName` (lowercase, no final dot).
    ExternalName(String),
}

/// TCP, UDP or SCTP, as the SRV name writes it (`_tcp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "_tcp",
            Protocol::Udp => "_udp",
            Protocol::Sctp => "_sctp",
        }
    }
}

/// A named port (unnamed ports have no SRV record, spec 2.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    /// Lowercase.
    pub name: Box<str>,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub kind: ServiceKind,
    /// Service ports with a name (SRV of a ClusterIP Service).
    pub ports: Box<[NamedPort]>,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The first of `addresses`: the API says they are fungible and
    /// clients may use only the first, and one inline address keeps
    /// 50,000 endpoints small.
    pub address: IpAddr,
    /// `hostname` (lowercase), when set.
    pub hostname: Option<Box<str>>,
    /// `conditions.ready`, where unset counts as ready (the API's rule;
    /// publishNotReadyAddresses is already folded in by the controller).
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service: String,
    pub ports: Box<[NamedPort]>,
    pub endpoints: Box<[EndpointInfo]>,
}

/// A name as DNS matches it: lowercase, without the final dot.
fn dns_name(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

impl ServiceInfo {
    /// `None` for a Service DNS does not serve (no spec).
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let spec = svc.spec.as_ref()?;
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let target = dns_name(spec.external_name.as_deref().unwrap_or_default());
            if target.is_empty() {
                return None;
            }
            ServiceKind::ExternalName(target)
        } else if spec.cluster_ip.as_deref() == Some("None") {
            ServiceKind::Headless
        } else {
            let ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .fold(Vec::new(), |mut v, ip| {
                    if !v.contains(&ip) {
                        v.push(ip);
                    }
                    v
                });
            if ips.is_empty() {
                // Not yet allocated: nothing to answer.
                return None;
            }
            ServiceKind::ClusterIp(ips)
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(NamedPort {
                    name: p
                        .name
                        .as_deref()
                        .filter(|n| !n.is_empty())?
                        .to_ascii_lowercase()
                        .into(),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        Some(ServiceInfo { kind, ports })
    }
}

impl SliceInfo {
    /// `None` for a slice not owned by a Service (no service-name label).
    pub fn from_slice(slice: &EndpointSlice) -> Option<SliceInfo> {
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get("kubernetes.io/service-name")?
            .clone();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(NamedPort {
                    name: p
                        .name
                        .as_deref()
                        .filter(|n| !n.is_empty())?
                        .to_ascii_lowercase()
                        .into(),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|e| {
                Some(EndpointInfo {
                    address: e.addresses.iter().find_map(|a| a.parse().ok())?,
                    hostname: e
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_ascii_lowercase().into()),
                    ready: e.conditions.as_ref().and_then(|c| c.ready) != Some(false),
                })
            })
            .collect();
        Some(SliceInfo {
            service,
            ports,
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    #[test]
    fn service_kinds() {
        let c = service(serde_json::json!({"spec": {"clusterIP": "10.96.0.5",
            "clusterIPs": ["10.96.0.5", "fd00::5"],
            "ports": [{"name": "HTTP", "port": 80}, {"port": 81}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}));
        let c = ServiceInfo::from_service(&c).expect("served");
        assert_eq!(
            c.kind,
            ServiceKind::ClusterIp(vec![
                "10.96.0.5".parse().expect("ip"),
                "fd00::5".parse().expect("ip")
            ])
        );
        assert_eq!(c.ports.len(), 2, "the unnamed port has no SRV");
        assert_eq!(&*c.ports[0].name, "http");
        assert_eq!(c.ports[1].protocol, Protocol::Udp);
        let h = service(serde_json::json!({"spec": {"clusterIP": "None"}}));
        assert_eq!(
            ServiceInfo::from_service(&h).map(|s| s.kind),
            Some(ServiceKind::Headless)
        );
        let e = service(
            serde_json::json!({"spec": {"type": "ExternalName", "externalName": "WWW.Example.com."}}),
        );
        assert_eq!(
            ServiceInfo::from_service(&e).map(|s| s.kind),
            Some(ServiceKind::ExternalName("www.example.com".into()))
        );
        let pending = service(serde_json::json!({"spec": {"type": "ClusterIP"}}));
        assert_eq!(ServiceInfo::from_service(&pending), None);
    }

    #[test]
    fn slice_readiness_defaults_to_ready() {
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "Web-0"},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": false}},
                {"addresses": ["10.244.1.7"], "conditions": {"ready": true}}
            ]
        }))
        .expect("slice");
        let s = SliceInfo::from_slice(&s).expect("owned");
        assert_eq!(s.service, "web");
        assert_eq!(
            s.endpoints.iter().map(|e| e.ready).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(s.endpoints[0].hostname.as_deref(), Some("web-0"));
        assert_eq!(s.ports[0].port, 8080);
    }
}
