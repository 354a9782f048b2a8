//! The walk: a new connection's first packet, from namespace to namespace,
//! through the live kernel state of each (routes, links, bridge ports,
//! `flannel.1`'s neighbours and FDB, the NAT tables). Each namespace is
//! read once ([`Snapshot`]); a Service with several endpoints forks the
//! walk, one branch per endpoint.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context;
use ferry_netlink::nftables::{Connection, Family, Ruleset, Table};
use ferry_netlink::{Address, FdbEntry, Link, Neighbour, NetNs, Netlink, Route};
use k8s_openapi::api::core::v1::Pod;

use super::nat::{self, Packet, Verdict2};
use super::{Cluster, key};

/// A network namespace the packet is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The namespace `ferry trace` runs in (the lab's root namespace).
    Host,
    /// A lab node: `/run/netns/<name>`.
    Node(String),
    Pod(PodPlace),
}

/// A pod with a network namespace of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlace {
    pub namespace: String,
    pub name: String,
    /// The CNI container ID the node agent uses: the pod's UID.
    pub uid: String,
    pub node: String,
    /// The sandbox: `<node>-<namespace>-<pod>`.
    pub netns: String,
}

impl PodPlace {
    pub fn of(pod: &Pod, node: &str) -> anyhow::Result<PodPlace> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        Ok(PodPlace {
            netns: ferry_node::sandbox_name(node, &namespace, &name),
            uid: pod
                .metadata
                .uid
                .clone()
                .with_context(|| format!("pod {namespace}/{name} has no uid"))?,
            namespace,
            name,
            node: node.to_string(),
        })
    }
}

impl Place {
    /// The named network namespace, `None` for the host.
    pub fn netns(&self) -> Option<&str> {
        match self {
            Place::Host => None,
            Place::Node(n) => Some(n),
            Place::Pod(p) => Some(&p.netns),
        }
    }

    fn describe(&self) -> String {
        match self {
            Place::Host => "the host".into(),
            Place::Node(n) => n.clone(),
            Place::Pod(p) => format!("pod {}/{}", p.namespace, p.name),
        }
    }
}

/// One step of the path, and the kernel objects that make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub title: String,
    pub detail: Vec<String>,
}

fn hop(title: impl Into<String>, detail: impl Into<String>) -> Hop {
    Hop {
        title: title.into(),
        detail: vec![detail.into()],
    }
}

/// How a path ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// At an address (and port) of a pod, a node or the host.
    Delivered(Place, u16),
    Dropped,
    Rejected,
    /// The packet would leave the lab (never probed).
    LeavesLab,
    /// The trace could not follow it.
    Unknown,
    /// The path splits into [`Path::branches`].
    Forked,
}

/// A traced path: hops, then either an end or one branch per endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub hops: Vec<Hop>,
    pub branches: Vec<Branch>,
    pub end: End,
}

/// The rest of the path for one endpoint a Service may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    pub endpoint: (Ipv4Addr, u16),
    pub label: String,
    pub path: Path,
}

impl Path {
    /// Every way this path (or one of its branches) ends.
    pub fn ends(&self) -> Vec<&End> {
        if self.end == End::Forked {
            self.branches.iter().flat_map(|b| b.path.ends()).collect()
        } else {
            vec![&self.end]
        }
    }

    /// Keeps only the branch of `endpoint` (the one a probe saw chosen).
    pub fn keep_endpoint(&mut self, endpoint: (Ipv4Addr, u16)) {
        if self.branches.iter().any(|b| b.endpoint == endpoint) {
            self.branches.retain(|b| b.endpoint == endpoint);
            for b in &mut self.branches {
                b.label.push_str(", chosen for the probe");
            }
        }
        for b in &mut self.branches {
            b.path.keep_endpoint(endpoint);
        }
    }

    /// The pods this path can end at, with the port they are reached on.
    pub fn destinations(&self) -> Vec<(PodPlace, u16)> {
        self.ends()
            .into_iter()
            .filter_map(|e| match e {
                End::Delivered(Place::Pod(p), port) => Some((p.clone(), *port)),
                _ => None,
            })
            .collect()
    }
}

/// The kernel state of one namespace that a walk reads.
pub struct Snapshot {
    links: Vec<Link>,
    addresses: Vec<Address>,
    routes: Vec<Route>,
    /// Of the VXLAN device, if there is one.
    neighbours: Vec<Neighbour>,
    fdb: Vec<FdbEntry>,
    proxy: Option<Ruleset>,
    overlay: Option<Ruleset>,
    /// `net.bridge.bridge-nf-call-iptables`: bridged IPv4 frames go
    /// through this namespace's netfilter hooks (br_netfilter).
    bridge_nf: bool,
}

impl Snapshot {
    async fn read(netns: Option<&str>) -> anyhow::Result<Snapshot> {
        let what = netns.unwrap_or("the host namespace");
        let nl = match netns {
            Some(name) => Netlink::connect_in(&NetNs::open_named(name)?).await?,
            None => Netlink::connect()?,
        };
        let links = nl
            .links()
            .await
            .with_context(|| format!("reading links of {what}"))?;
        let addresses = nl.addresses(None).await?;
        let routes = nl.routes().await?;
        let (mut neighbours, mut fdb) = (Vec::new(), Vec::new());
        if let Some(vxlan) = links.iter().find(|l| l.kind.as_deref() == Some("vxlan")) {
            neighbours = nl.neighbours(Some(vxlan.index)).await?;
            fdb = nl.fdb_entries(vxlan.index).await?;
        }
        let path = netns.map(ferry_netlink::netns::named_path).transpose()?;
        let (proxy, overlay) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut conn = match &path {
                Some(p) => Connection::open_in_netns(p)?,
                None => Connection::open()?,
            };
            let mut list = |name: &str| Ruleset::list(&mut conn, &Table::new(Family::Ip, name));
            Ok((
                list(ferry_proxy::nftables::TABLE)?,
                list(ferry_overlay::masquerade::TABLE)?,
            ))
        })
        .await?
        .with_context(|| format!("reading the nf_tables tables of {what}"))?;
        let key = "net.bridge.bridge-nf-call-iptables";
        let bridge_nf = match netns {
            Some(name) => ferry_netlink::sysctl::read_in(&NetNs::open_named(name)?, key),
            None => ferry_netlink::sysctl::read(key),
        }
        .is_ok_and(|v| v.trim() == "1");
        Ok(Snapshot {
            bridge_nf,
            links,
            addresses,
            routes,
            neighbours,
            fdb,
            proxy,
            overlay,
        })
    }

    fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    fn link_named(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    fn name_of(&self, index: u32) -> String {
        self.link(index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("#{index}"))
    }

    /// The addresses of a link, as `a/len, b/len`.
    fn addresses_of(&self, index: u32) -> String {
        let list: Vec<String> = self
            .addresses
            .iter()
            .filter(|a| a.index == index)
            .map(|a| format!("{}/{}", a.address, a.prefix_len))
            .collect();
        if list.is_empty() {
            "no address".into()
        } else {
            list.join(", ")
        }
    }

    /// The address a packet leaving through `index` towards `next_hop`
    /// gets as its source (masquerade, or a locally generated packet):
    /// the link's address on the next hop's subnet, else its first.
    fn source_for(&self, index: u32, next_hop: Ipv4Addr) -> Option<Ipv4Addr> {
        let on_link: Vec<&Address> = self.addresses.iter().filter(|a| a.index == index).collect();
        on_link
            .iter()
            .find(|a| contains(a.address, a.prefix_len, next_hop))
            .or(on_link.first())
            .map(|a| a.address)
    }

    /// The main table's most specific route to `dst`.
    fn route_to(&self, dst: Ipv4Addr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| contains(r.destination, r.prefix_len, dst))
            .max_by_key(|r| r.prefix_len)
    }
}

fn contains(network: Ipv4Addr, prefix_len: u8, ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

/// `ip route`'s form of a route.
fn show_route(r: &Route, snap: &Snapshot) -> String {
    let mut out = if r.is_default() {
        "default".to_string()
    } else {
        format!("{}/{}", r.destination, r.prefix_len)
    };
    if let Some(gw) = r.gateway {
        out.push_str(&format!(" via {gw}"));
    }
    if let Some(dev) = r.output_interface {
        out.push_str(&format!(" dev {}", snap.name_of(dev)));
    }
    if r.onlink {
        out.push_str(" onlink");
    }
    out
}

fn netns_label(place: &Place) -> String {
    match place.netns() {
        Some(n) => format!("netns {n}"),
        None => "host namespace".into(),
    }
}

/// Where the packet is, and what happened to it there already.
#[derive(Clone, Debug)]
struct At {
    place: Place,
    packet: Packet,
    /// The `services` chain already ran here (a branch after DNAT).
    evaluated: bool,
    /// Why the connection carries the masquerade mark.
    marks: Vec<String>,
    /// A postrouting decision was shown on this path already.
    masquerade_shown: bool,
    /// Arrived on a bridge (index) in a frame for this next hop: unless
    /// that is the node's own address, the bridge forwards it at layer 2.
    l2: Option<(u32, Ipv4Addr)>,
    /// Namespaces crossed so far.
    depth: usize,
}

/// Walks packets through the lab; reads each namespace once.
pub struct Walker<'a> {
    cluster: &'a Cluster,
    snapshots: HashMap<Option<String>, Arc<Snapshot>>,
    /// The first node whose NAT tables saw the connection: its conntrack
    /// entry tells which endpoint was chosen.
    conntrack_at: Option<String>,
    first_packet: Option<Packet>,
}

/// More namespaces than any lab path crosses: a loop.
const MAX_STEPS: usize = 16;

impl<'a> Walker<'a> {
    pub fn new(cluster: &'a Cluster) -> Walker<'a> {
        Walker {
            cluster,
            snapshots: HashMap::new(),
            conntrack_at: None,
            first_packet: None,
        }
    }

    pub fn conntrack_at(&self) -> Option<&str> {
        self.conntrack_at.as_deref()
    }

    /// The first packet as it left the source (with its source address).
    pub fn first_packet(&self) -> Option<Packet> {
        self.first_packet
    }

    pub fn describe_source(&self, place: &Place, src: Option<Ipv4Addr>) -> String {
        let ip = src.map(|ip| format!("{ip}, ")).unwrap_or_default();
        match place {
            Place::Host => "from the host".into(),
            Place::Node(n) => format!("from {n} ({ip}node namespace)"),
            Place::Pod(p) => format!("from pod {}/{} ({ip}on {})", p.namespace, p.name, p.node),
        }
    }

    async fn snapshot(&mut self, place: &Place) -> anyhow::Result<Arc<Snapshot>> {
        let key = place.netns().map(String::from);
        if let Some(s) = self.snapshots.get(&key) {
            return Ok(s.clone());
        }
        let s = Arc::new(Snapshot::read(key.as_deref()).await?);
        self.snapshots.insert(key, s.clone());
        Ok(s)
    }

    /// The path of a new connection from `place` with first packet `packet`
    /// (an unspecified source: the address routing picks).
    pub async fn trace(&mut self, place: Place, packet: Packet) -> anyhow::Result<Path> {
        self.walk(At {
            place,
            packet,
            evaluated: false,
            marks: Vec::new(),
            masquerade_shown: false,
            l2: None,
            depth: 0,
        })
        .await
    }

    fn pod_label(&self, ip: Ipv4Addr) -> String {
        match self.cluster.pod_with_ip(ip) {
            Some(p) => format!(
                "pod {} on {}",
                key(&p.metadata),
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("?")
            ),
            None => match self.cluster.node_with_ip(ip) {
                Some(n) => format!("node {n}"),
                None => "no pod has this address".into(),
            },
        }
    }

    async fn walk(&mut self, mut at: At) -> anyhow::Result<Path> {
        let mut hops = Vec::new();
        if at.depth > MAX_STEPS {
            hops.push(hop(
                "the trace stops: too many namespaces (a routing loop?)",
                format!("last at {}", at.place.describe()),
            ));
            return Ok(Path {
                hops,
                branches: Vec::new(),
                end: End::Unknown,
            });
        }
        let snap = self.snapshot(&at.place).await?;
        let here = at.place.describe();

        // Source address of a locally generated packet: what routing picks.
        if at.packet.src.is_unspecified()
            && let Some(r) = snap.route_to(at.packet.dst)
            && let Some(src) = r
                .output_interface
                .and_then(|i| snap.source_for(i, r.gateway.unwrap_or(at.packet.dst)))
        {
            at.packet.src = src;
        }
        if self.first_packet.is_none() {
            self.first_packet = Some(at.packet);
        }

        // A frame to another port of the bridge it came in on is
        // bridged, not routed; br_netfilter still shows it to the
        // netfilter hooks when bridge-nf-call-iptables is set.
        let bridged = at
            .l2
            .filter(|(_, nh)| *nh == at.packet.dst)
            .filter(|(_, nh)| !snap.addresses.iter().any(|a| a.address == *nh));
        let hooks = bridged.is_none() || snap.bridge_nf;

        // 1. The proxy's `services` chain (nat prerouting / output).
        if let Some(proxy) = &snap.proxy
            && !at.evaluated
            && hooks
        {
            let first_nat = self.conntrack_at.is_none();
            if first_nat && let Place::Node(n) = &at.place {
                self.conntrack_at = Some(n.clone());
            }
            let decision = nat::services(proxy, &at.packet);
            at.marks.extend(decision.marks.iter().cloned());
            at.evaluated = true;
            match decision.verdict {
                Verdict2::NoMatch => {
                    if first_nat {
                        hops.push(hop(
                                format!("no Service rule matches {}:{} on {here}", at.packet.dst, at.packet.dport),
                                format!(
                                    "table ip {}: no element for {} . {} . {} in service-ids, service-chains, node-port-ids (chain services)",
                                    ferry_proxy::nftables::TABLE,
                                    at.packet.dst,
                                    super::render::protocol_name(at.packet.protocol),
                                    at.packet.dport
                                ),
                            ));
                    }
                }
                Verdict2::Drop { set, element, rule } => {
                    hops.push(hop(
                        format!("dropped on {here}: {rule}"),
                        format!(
                            "table ip {} set {set} {element}",
                            ferry_proxy::nftables::TABLE
                        ),
                    ));
                    return Ok(Path {
                        hops,
                        branches: Vec::new(),
                        end: End::Dropped,
                    });
                }
                Verdict2::Reject { set, element, rule } => {
                    hops.push(hop(
                        format!("rejected on {here}: {rule}"),
                        format!(
                            "table ip {} set {set} {element} (chain reject, filter hooks)",
                            ferry_proxy::nftables::TABLE
                        ),
                    ));
                    return Ok(Path {
                        hops,
                        branches: Vec::new(),
                        end: End::Rejected,
                    });
                }
                Verdict2::Dnat(d) => {
                    hops.extend(super::render::service_hops(
                        self.cluster,
                        &here,
                        &at.place,
                        &at.packet,
                        &d,
                    ));
                    let endpoints = match d.pinned {
                        Some(pinned) => vec![pinned],
                        None => d.endpoints(),
                    };
                    let mut branches = Vec::new();
                    for (ip, port) in &endpoints {
                        let mut next = at.clone();
                        next.packet.dst = *ip;
                        next.packet.dport = *port;
                        if endpoints.len() == 1 {
                            at = next;
                            break;
                        }
                        let path = Box::pin(self.walk(next)).await?;
                        branches.push(Branch {
                            endpoint: (*ip, *port),
                            label: format!("{ip}:{port} ({})", self.pod_label(*ip)),
                            path,
                        });
                    }
                    if endpoints.len() != 1 {
                        return Ok(Path {
                            hops,
                            branches,
                            end: End::Forked,
                        });
                    }
                }
            }
        }

        // 2. An address of this namespace: delivered.
        if let Some(addr) = snap.addresses.iter().find(|a| a.address == at.packet.dst) {
            let dev = snap.name_of(addr.index);
            let title = match &at.place {
                Place::Pod(p) => format!(
                    "pod {}/{} receives it on {dev} ({}:{})",
                    p.namespace, p.name, at.packet.dst, at.packet.dport
                ),
                _ => format!(
                    "{here} receives it: {}:{} is its own address",
                    at.packet.dst, at.packet.dport
                ),
            };
            hops.push(hop(
                title,
                format!(
                    "address {}/{} dev {dev} ({})",
                    addr.address,
                    addr.prefix_len,
                    netns_label(&at.place)
                ),
            ));
            return Ok(Path {
                hops,
                branches: Vec::new(),
                end: End::Delivered(at.place, at.packet.dport),
            });
        }

        // 3. Routing (or bridging).
        let bridged = bridged.filter(|(_, nh)| *nh == at.packet.dst);
        if let Some((index, nh)) = bridged
            && let Some(bridge) = snap.link(index).cloned()
        {
            hops.push(hop(
                format!(
                    "{} on {here} bridges the frame to {nh}: same subnet, no routing",
                    bridge.name
                ),
                format!(
                    "link {} type bridge ({}); net.bridge.bridge-nf-call-iptables = {} ({})",
                    bridge.name,
                    snap.addresses_of(bridge.index),
                    if snap.bridge_nf {
                        "1: the netfilter hooks still see it"
                    } else {
                        "0: no netfilter hook sees it"
                    },
                    netns_label(&at.place)
                ),
            ));
            if hooks {
                self.postrouting(&mut at, &snap, &bridge, nh, &mut hops);
            }
            return self.leave(at, &snap, &bridge, nh, hops).await;
        }
        let Some(route) = snap.route_to(at.packet.dst).copied() else {
            hops.push(hop(
                format!("{here} has no route to {}", at.packet.dst),
                format!("main routing table ({})", netns_label(&at.place)),
            ));
            return Ok(Path {
                hops,
                branches: Vec::new(),
                end: End::Unknown,
            });
        };
        let Some(out) = route.output_interface.and_then(|i| snap.link(i)).cloned() else {
            hops.push(hop(
                format!("{here}: the route to {} names no device", at.packet.dst),
                format!("route {}", show_route(&route, &snap)),
            ));
            return Ok(Path {
                hops,
                branches: Vec::new(),
                end: End::Unknown,
            });
        };
        let next_hop = route.gateway.unwrap_or(at.packet.dst);
        hops.push(hop(
            format!(
                "{here} routes {} out of {}{}",
                at.packet.dst,
                out.name,
                route
                    .gateway
                    .map(|g| format!(" via {g}"))
                    .unwrap_or_default()
            ),
            format!(
                "route {} ({})",
                show_route(&route, &snap),
                netns_label(&at.place)
            ),
        ));

        // 4. Postrouting: masquerade.
        self.postrouting(&mut at, &snap, &out, next_hop, &mut hops);
        // 5. Out of the device, into the next namespace.
        self.leave(at, &snap, &out, next_hop, hops).await
    }

    /// The postrouting NAT decision (shown once per path, and wherever a
    /// masquerade happens).
    fn postrouting(
        &self,
        at: &mut At,
        snap: &Snapshot,
        out: &Link,
        next_hop: Ipv4Addr,
        hops: &mut Vec<Hop>,
    ) {
        let here = at.place.describe();
        if snap.proxy.is_none() && snap.overlay.is_none() {
            return;
        }
        let m = nat::masquerade(
            snap.proxy.as_ref(),
            snap.overlay.as_ref(),
            &at.packet,
            !at.marks.is_empty(),
        );
        if m.masquerade || !at.masquerade_shown {
            at.masquerade_shown = true;
            let mut reasons = at
                .marks
                .iter()
                .map(|m| format!("marked by {m}"))
                .collect::<Vec<_>>();
            reasons.extend(m.reasons.iter().cloned());
            let title = if m.masquerade {
                let to = snap.source_for(out.index, next_hop);
                if let Some(to) = to {
                    at.packet.src = to;
                }
                format!(
                    "masquerade on {here}: source becomes {} (address of {})",
                    to.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
                    out.name
                )
            } else {
                format!(
                    "no masquerade on {here}: the source stays {}",
                    at.packet.src
                )
            };
            hops.push(Hop {
                title,
                detail: reasons,
            });
        }
        at.marks.clear();
    }

    /// Leaves through `out`: the path ends, or goes on in the next namespace.
    async fn leave(
        &mut self,
        at: At,
        snap: &Snapshot,
        out: &Link,
        next_hop: Ipv4Addr,
        mut hops: Vec<Hop>,
    ) -> anyhow::Result<Path> {
        match self.egress(&at, snap, out, next_hop).await? {
            Egress::End(end, more) => {
                hops.extend(more);
                Ok(Path {
                    hops,
                    branches: Vec::new(),
                    end,
                })
            }
            Egress::Next(place, more, l2) => {
                hops.extend(more);
                let next = At {
                    place,
                    evaluated: false,
                    marks: Vec::new(),
                    l2,
                    depth: at.depth + 1,
                    ..at
                };
                let rest = Box::pin(self.walk(next)).await?;
                hops.extend(rest.hops);
                Ok(Path {
                    hops,
                    branches: rest.branches,
                    end: rest.end,
                })
            }
        }
    }

    /// Where a packet leaving `snap`'s namespace through `out` arrives.
    async fn egress(
        &mut self,
        at: &At,
        snap: &Snapshot,
        out: &Link,
        next_hop: Ipv4Addr,
    ) -> anyhow::Result<Egress> {
        let kind = out.kind.as_deref().unwrap_or("");
        match (&at.place, kind) {
            // A pod's eth0: the veth pair to its node's bridge.
            (Place::Pod(pod), _) => {
                let node = Place::Node(pod.node.clone());
                let node_snap = self.snapshot(&node).await?;
                let Some(host_end) = host_veth(&node_snap, &pod.uid, &out.name) else {
                    return Ok(Egress::End(
                        End::Unknown,
                        vec![hop(
                            format!(
                                "no host end of {}'s {} found on {}",
                                pod.name, out.name, pod.node
                            ),
                            format!(
                                "no link with alias {}/<network>/{}/{} on {}",
                                ferry_cni::network::ALIAS_PREFIX,
                                pod.uid,
                                out.name,
                                pod.node
                            ),
                        )],
                    ));
                };
                let mut hops = vec![hop(
                    format!(
                        "veth: {} of pod {}/{} -> {} on {}",
                        out.name, pod.namespace, pod.name, host_end.name, pod.node
                    ),
                    format!(
                        "link {} type veth alias {}{} ({})",
                        host_end.name,
                        host_end.alias.as_deref().unwrap_or(""),
                        host_end
                            .controller
                            .map(|c| format!(" master {}", node_snap.name_of(c)))
                            .unwrap_or_default(),
                        netns_label(&node)
                    ),
                )];
                if let Some(bridge) = host_end.controller.and_then(|c| node_snap.link(c)) {
                    hops.push(hop(
                        format!("bridge {} on {}", bridge.name, pod.node),
                        format!(
                            "link {} type {} ({}; the pods' gateway)",
                            bridge.name,
                            bridge.kind.as_deref().unwrap_or("?"),
                            node_snap.addresses_of(bridge.index)
                        ),
                    ));
                }
                let l2 = host_end.controller.map(|bridge| (bridge, next_hop));
                Ok(Egress::Next(node, hops, l2))
            }
            // The node's pod bridge: the veth of the pod with that address.
            (Place::Node(node), "bridge") => {
                let target = self.cluster.pod_with_ip(next_hop).filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                });
                let Some(pod) = target else {
                    return Ok(Egress::End(
                        End::Unknown,
                        vec![hop(
                            format!("no pod of {node} has {next_hop} behind bridge {}", out.name),
                            format!(
                                "link {} type bridge ({}; {})",
                                out.name,
                                snap.addresses_of(out.index),
                                netns_label(&at.place)
                            ),
                        )],
                    ));
                };
                let place = PodPlace::of(pod, node)?;
                let Some(port) = host_veth(snap, &place.uid, "eth0") else {
                    return Ok(Egress::End(
                        End::Unknown,
                        vec![hop(
                            format!(
                                "pod {} has no veth on bridge {}",
                                key(&pod.metadata),
                                out.name
                            ),
                            format!(
                                "no link with alias {}/<network>/{}/eth0 on {node}",
                                ferry_cni::network::ALIAS_PREFIX,
                                place.uid
                            ),
                        )],
                    ));
                };
                let hops = vec![hop(
                    format!(
                        "bridge {} -> {} -> eth0 of pod {}/{}",
                        out.name, port.name, place.namespace, place.name
                    ),
                    format!(
                        "link {} type veth master {} alias {} ({})",
                        port.name,
                        port.controller
                            .map(|c| snap.name_of(c))
                            .unwrap_or_else(|| "-".into()),
                        port.alias.as_deref().unwrap_or(""),
                        netns_label(&at.place)
                    ),
                )];
                Ok(Egress::Next(Place::Pod(place), hops, None))
            }
            // flannel.1: the neighbour and FDB entries name the peer VTEP.
            (Place::Node(node), "vxlan") => {
                let neigh = snap
                    .neighbours
                    .iter()
                    .find(|n| n.index == out.index && n.destination == next_hop);
                let Some(mac) = neigh.and_then(|n| n.mac) else {
                    return Ok(Egress::End(
                        End::Unknown,
                        vec![hop(
                            format!(
                                "{} has no neighbour entry for {next_hop} on {node}",
                                out.name
                            ),
                            format!("neighbours of {} ({})", out.name, netns_label(&at.place)),
                        )],
                    ));
                };
                let Some(underlay) = snap
                    .fdb
                    .iter()
                    .find(|f| f.index == out.index && f.mac == mac)
                    .and_then(|f| f.destination)
                else {
                    return Ok(Egress::End(
                        End::Unknown,
                        vec![hop(
                            format!("{} has no FDB entry for {mac} on {node}", out.name),
                            format!("neigh {next_hop} lladdr {mac} dev {}", out.name),
                        )],
                    ));
                };
                let peer = self.cluster.node_with_ip(underlay);
                let vxlan = out.vxlan.clone().unwrap_or_default();
                let mut hops = vec![hop(
                    format!(
                        "{} -> {underlay} (VTEP of {})",
                        out.name,
                        peer.as_deref().unwrap_or("an unknown node")
                    ),
                    format!(
                        "neigh {next_hop} lladdr {mac} dev {dev}{perm}; fdb {mac} dev {dev} dst {underlay} (VXLAN id {vni}, dstport {port}{local})",
                        dev = out.name,
                        perm = if neigh.is_some_and(|n| n.permanent) {
                            " PERMANENT"
                        } else {
                            ""
                        },
                        vni = vxlan
                            .vni
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "?".into()),
                        port = vxlan
                            .port
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "?".into()),
                        local = vxlan
                            .local
                            .map(|l| format!(", local {l}"))
                            .unwrap_or_default(),
                    ),
                )];
                let Some(peer) = peer else {
                    return Ok(Egress::End(End::Unknown, hops));
                };
                let via = vxlan
                    .underlay
                    .and_then(|i| snap.link(i))
                    .map(|l| l.name.clone())
                    .unwrap_or_else(|| "eth0".into());
                hops.push(
                    self.underlay_hop(node, &via, &peer, underlay, "VXLAN-encapsulated")
                        .await?,
                );
                Ok(Egress::Next(Place::Node(peer), hops, None))
            }
            // The node's underlay eth0: the host or another node on ferry0.
            (Place::Node(node), _) => {
                let host = self.snapshot(&Place::Host).await?;
                if host.addresses.iter().any(|a| a.address == next_hop) {
                    let bridge = host
                        .addresses
                        .iter()
                        .find(|a| a.address == next_hop)
                        .map(|a| host.name_of(a.index))
                        .unwrap_or_default();
                    return Ok(Egress::Next(
                        Place::Host,
                        vec![hop(
                            format!(
                                "underlay: {} of {node} -> {bridge} on the host ({next_hop})",
                                out.name
                            ),
                            format!(
                                "link {} ({}) -> link {bridge} ({}; host namespace)",
                                underlay_port(node),
                                out.name,
                                host.addresses_of_name(&bridge)
                            ),
                        )],
                        None,
                    ));
                }
                let Some(peer) = self.cluster.node_with_ip(next_hop) else {
                    return Ok(Egress::End(
                        End::Unknown,
                        vec![hop(
                            format!("{next_hop} is neither the host nor a lab node"),
                            format!("next hop of {} on {node}", out.name),
                        )],
                    ));
                };
                let h = self
                    .underlay_hop(node, &out.name, &peer, next_hop, "routed")
                    .await?;
                Ok(Egress::Next(Place::Node(peer), vec![h], None))
            }
            // The host's lab bridge: on to the node with that address.
            (Place::Host, "bridge") if out.name == crate::BRIDGE => {
                let Some(peer) = self.cluster.node_with_ip(next_hop) else {
                    return Ok(Egress::End(
                        End::Unknown,
                        vec![hop(
                            format!("no lab node has address {next_hop} on {}", out.name),
                            format!("link {} ({})", out.name, snap.addresses_of(out.index)),
                        )],
                    ));
                };
                let port = underlay_port(&peer);
                let detail = match snap.link_named(&port) {
                    Some(l) => format!(
                        "link {} type veth master {} alias {} (host namespace)",
                        l.name,
                        l.controller
                            .map(|c| snap.name_of(c))
                            .unwrap_or_else(|| "-".into()),
                        l.alias.as_deref().unwrap_or("")
                    ),
                    None => format!("no link {port} on the host"),
                };
                Ok(Egress::Next(
                    Place::Node(peer.clone()),
                    vec![hop(
                        format!(
                            "bridge {} -> {port} -> eth0 of {peer} ({next_hop})",
                            out.name
                        ),
                        detail,
                    )],
                    None,
                ))
            }
            (Place::Host, _) => Ok(Egress::End(
                End::LeavesLab,
                vec![hop(
                    format!(
                        "the host sends it out of {}: outside the lab, the trace stops",
                        out.name
                    ),
                    format!(
                        "link {} type {} ({})",
                        out.name,
                        if kind.is_empty() { "device" } else { kind },
                        snap.addresses_of(out.index)
                    ),
                )],
            )),
        }
    }

    /// Node to node over the underlay bridge (routed or VXLAN packets).
    async fn underlay_hop(
        &mut self,
        from: &str,
        dev: &str,
        to: &str,
        to_ip: Ipv4Addr,
        what: &str,
    ) -> anyhow::Result<Hop> {
        let host = self.snapshot(&Place::Host).await?;
        let (a, b) = (underlay_port(from), underlay_port(to));
        let bridge = |name: &str| {
            host.link_named(name)
                .and_then(|l| l.controller)
                .map(|c| host.name_of(c))
        };
        let detail = match (bridge(&a), bridge(&b)) {
            (Some(x), Some(y)) if x == y => {
                format!("links {a} and {b} are ports of bridge {x} (host namespace)")
            }
            _ => format!("underlay links {a}, {b} not found on a host bridge"),
        };
        Ok(hop(
            format!(
                "underlay ({what}): {dev} of {from} -> {} -> eth0 of {to} ({to_ip})",
                crate::BRIDGE
            ),
            detail,
        ))
    }
}

enum Egress {
    /// The next namespace, the hops to it, and the bridge and next hop
    /// of a frame that arrives on a bridge.
    Next(Place, Vec<Hop>, Option<(u32, Ipv4Addr)>),
    End(End, Vec<Hop>),
}

impl Snapshot {
    fn addresses_of_name(&self, name: &str) -> String {
        self.link_named(name)
            .map(|l| self.addresses_of(l.index))
            .unwrap_or_default()
    }
}

/// The host end of a node's underlay veth (`ferry-n<i>` for `lab-node-<i>`).
fn underlay_port(node: &str) -> String {
    match node.strip_prefix(crate::NODE_PREFIX) {
        Some(i) => format!("{}{i}", crate::VETH_PREFIX),
        None => format!("(underlay port of {node})"),
    }
}

/// The host end of a pod's veth: the link whose alias names the
/// attachment (container ID = pod UID, interface name).
fn host_veth<'s>(snap: &'s Snapshot, uid: &str, ifname: &str) -> Option<&'s Link> {
    snap.links.iter().find(|l| {
        l.alias
            .as_deref()
            .and_then(ferry_cni::network::parse_host_veth_alias)
            .is_some_and(|(_, a)| a.container_id == uid && a.ifname == ifname)
    })
}
