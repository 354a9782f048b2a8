//! `ferry trace <from> <to> [--probe]`: the hop-by-hop path a new
//! connection takes through the live lab.
//!
//! The source is a pod, a node or the host; the destination a pod, a
//! Service port, a NodePort (`<node>:<port>`), any `IP:port`, or an
//! Ingress URL (`ingress`: the controller's own router). The objects
//! come from the API server; every hop comes from the kernel: routes,
//! links, bridge ports, the VXLAN neighbour and FDB entries of
//! `flannel.1`, and the elements of the proxy's and overlay's nf_tables
//! tables, read inside each namespace the packet crosses (`walk`; the NAT
//! decisions in `nat`). With `--probe`, one real connection from the
//! source (`probe`) and its conntrack entry show which endpoint the
//! kernel chose.

mod ingress;
mod nat;
mod path;
mod probe;
mod render;
mod snapshot;
mod target;
mod walk;

use std::net::Ipv4Addr;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

pub use nat::Packet;
pub use path::{End, Hop, Path, Place, PodPlace};
pub use target::{Source, Target, parse_source, parse_target};

/// What `ferry trace` was asked.
#[derive(Clone, Debug)]
pub struct Request {
    pub from: String,
    pub to: String,
    /// Namespace of pods and Services named without one.
    pub namespace: String,
    /// Also send one connection and show the conntrack entry.
    pub probe: bool,
}

/// The cluster's objects a trace looks at (the lab is small: all of them).
pub struct Cluster {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

impl Cluster {
    pub async fn load(client: &kube::Client) -> anyhow::Result<Cluster> {
        let lp = ListParams::default();
        Ok(Cluster {
            pods: Api::<Pod>::all(client.clone())
                .list(&lp)
                .await
                .context("listing Pods")?
                .items,
            nodes: Api::<Node>::all(client.clone())
                .list(&lp)
                .await
                .context("listing Nodes")?
                .items,
            services: Api::<Service>::all(client.clone())
                .list(&lp)
                .await
                .context("listing Services")?
                .items,
            slices: Api::<EndpointSlice>::all(client.clone())
                .list(&lp)
                .await
                .context("listing EndpointSlices")?
                .items,
        })
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        })
    }

    /// The pod (not host-network) with address `ip`.
    pub fn pod_with_ip(&self, ip: Ipv4Addr) -> Option<&Pod> {
        let ip = ip.to_string();
        self.pods.iter().find(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.pod_ip.as_deref()) == Some(ip.as_str())
                && p.spec.as_ref().and_then(|s| s.host_network) != Some(true)
        })
    }

    /// A node's name and InternalIP.
    pub fn node_ips(&self) -> Vec<(String, Ipv4Addr)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let ip = n
                    .status
                    .as_ref()?
                    .addresses
                    .as_ref()?
                    .iter()
                    .find(|a| a.type_ == "InternalIP")?
                    .address
                    .parse()
                    .ok()?;
                Some((n.metadata.name.clone()?, ip))
            })
            .collect()
    }

    pub fn node_with_ip(&self, ip: Ipv4Addr) -> Option<String> {
        self.node_ips()
            .into_iter()
            .find_map(|(name, a)| (a == ip).then_some(name))
    }

    fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
    }
}

/// `ns/name` of an object.
pub fn key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Runs `ferry trace`: the report, or an error naming what is wrong with
/// the request (unknown pod, Service port, no IP yet...).
pub async fn run(client: kube::Client, request: &Request) -> anyhow::Result<String> {
    let source = parse_source(&request.from, &request.namespace)?;
    let target = parse_target(&request.to, &request.namespace)?;
    let cluster = Cluster::load(&client).await?;
    let (place, src) = target::resolve_source(&cluster, &source)?;
    let mut walker = walk::Walker::new(&cluster);
    let start_label = walker.describe_source(&place, src);
    // A pod sends from its address; a node or the host from the address
    // its first route lookup picks.
    let src = match place {
        Place::Pod(_) => src,
        _ => None,
    }
    .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let (header, mut path, url) = match &target {
        Target::Url(url) => {
            let route = ingress::route(&client, &cluster, url).await?;
            let packet = Packet {
                src,
                dst: route.node_ip,
                protocol: 6,
                dport: url.port,
            };
            let mut path = walker.trace(place.clone(), packet).await?;
            // Delivered to the controller's node: its own connection goes on.
            if path.end == End::Delivered(Place::Node(route.node.clone()), url.port) {
                path.hops.push(route.hop.clone());
                path.end = End::Forked;
                for (ip, port) in &route.endpoints {
                    let upstream = Packet {
                        src: Ipv4Addr::UNSPECIFIED,
                        dst: *ip,
                        protocol: 6,
                        dport: *port,
                    };
                    let rest = walker
                        .trace(Place::Node(route.node.clone()), upstream)
                        .await?;
                    path.branches.push(path::Branch {
                        endpoint: (*ip, *port),
                        label: format!("{ip}:{port} ({})", walker.pod_label(*ip)),
                        path: rest,
                    });
                }
            }
            let header = format!(
                "trace tcp {start_label} -> {} (Ingress controller on {} at {}:{})",
                request.to.trim(),
                route.node,
                route.node_ip,
                url.port
            );
            (header, path, Some(url))
        }
        _ => {
            let (dst, dport, protocol, label) =
                target::resolve_target(&cluster, &target, &request.namespace)?;
            let packet = Packet {
                src,
                dst,
                protocol,
                dport,
            };
            let path = walker.trace(place.clone(), packet).await?;
            let header = format!(
                "trace {} {start_label} -> {label}",
                render::protocol_name(protocol)
            );
            (header, path, None)
        }
    };
    let mut probed = None;
    if request.probe {
        let input = probe::Input {
            place: &place,
            path: &path,
            packet: walker.first_packet(),
            conntrack_at: walker.conntrack_at(),
            url,
        };
        let result = probe::run(&cluster, input).await?;
        if let Some(chosen) = result.chosen {
            path.keep_endpoint(chosen);
        }
        probed = Some(result);
    }
    Ok(render::report(&header, &path, probed.as_ref()))
}
