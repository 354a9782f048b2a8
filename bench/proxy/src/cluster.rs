//! The synthetic cluster every part of the benchmark uses: N Services with
//! one TCP port each and one EndpointSlice of M ready endpoints per
//! Service, as Kubernetes objects (what `ferry proxy` reads) and as plain
//! addresses (what the kube-proxy-shaped references are written from).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const NAMESPACE: &str = "bench";
/// The node the proxy runs as; half the endpoints are on it.
pub const NODE: &str = "bench-node";
const OTHER_NODE: &str = "other";
pub const PORT_NAME: &str = "http";
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
const FIRST_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const FIRST_ENDPOINT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The client's source address in the connection-rate test: inside the
/// cluster CIDR (so neither ruleset masquerades it) and never an endpoint.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 255, 254);

pub struct Cluster {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    /// Endpoint addresses of each Service, in slice order.
    pub endpoints: Vec<Vec<Ipv4Addr>>,
    /// Next endpoint address to hand out (sequential).
    next_endpoint: u32,
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

pub fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST_CLUSTER_IP) + i as u32)
}

impl Cluster {
    pub fn new(services: usize, endpoints: usize) -> anyhow::Result<Cluster> {
        // Endpoints, plus room for the changes, must stay in 10.244.0.0/16
        // and below the client address.
        let needed = services * endpoints + 1000;
        if needed >= (u32::from(CLIENT_IP) - u32::from(FIRST_ENDPOINT_IP)) as usize {
            anyhow::bail!(
                "{services} x {endpoints} endpoints do not fit in {CLUSTER_CIDR} with this benchmark's layout"
            );
        }
        if services >= (1 << 20) - 10 {
            anyhow::bail!("{services} Services do not fit in {SERVICE_CIDR}");
        }
        let mut cluster = Cluster {
            services: Vec::with_capacity(services),
            slices: Vec::with_capacity(services),
            endpoints: Vec::with_capacity(services),
            next_endpoint: u32::from(FIRST_ENDPOINT_IP),
        };
        for i in 0..services {
            let ips: Vec<Ipv4Addr> = (0..endpoints).map(|_| cluster.next_ip()).collect();
            cluster.services.push(service(i));
            cluster.slices.push(slice(i, &ips));
            cluster.endpoints.push(ips);
        }
        Ok(cluster)
    }

    fn next_ip(&mut self) -> Ipv4Addr {
        let ip = Ipv4Addr::from(self.next_endpoint);
        self.next_endpoint += 1;
        ip
    }

    /// Gives endpoint 0 of Service `i` a new address (the pod was
    /// replaced); returns the old one.
    pub fn change_endpoint(&mut self, i: usize) -> Ipv4Addr {
        let new = self.next_ip();
        let old = std::mem::replace(&mut self.endpoints[i][0], new);
        self.slices[i] = slice(i, &self.endpoints[i]);
        old
    }
}

fn service(i: usize) -> Service {
    let ip = cluster_ip(i).to_string();
    Service {
        metadata: ObjectMeta {
            name: Some(service_name(i)),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: SERVICE_PORT.into(),
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(TARGET_PORT.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn slice(i: usize, ips: &[Ipv4Addr]) -> EndpointSlice {
    let node = if i.is_multiple_of(2) {
        NODE
    } else {
        OTHER_NODE
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{}-bench", service_name(i))),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                service_name(i),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some(PORT_NAME.into()),
            port: Some(TARGET_PORT.into()),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(node.into()),
                ..Endpoint::default()
            })
            .collect(),
    }
}
