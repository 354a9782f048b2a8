//! The walk: a new connection's first packet, from namespace to namespace,
//! through the live kernel state of each (routes, links, bridge ports,
//! `flannel.1`'s neighbours and FDB, the NAT tables). Each namespace is
//! read once ([`Snapshot`]); a Service with several endpoints forks the
//! walk, one branch per endpoint.

mod egress;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ferry_netlink::Link;

use super::nat::{self, Packet, Verdict2};
use super::path::{Branch, End, Hop, Path, Place, hop};
use super::snapshot::{Snapshot, netns_label, show_route};
use super::{Cluster, key};

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

    pub(super) fn pod_label(&self, ip: Ipv4Addr) -> String {
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

        // A locally generated packet: its source address is what the first
        // route lookup picks, before nat output may DNAT and route again
        // (that lookup is shown if it does).
        let mut first_lookup = None;
        if at.packet.src.is_unspecified()
            && let Some(r) = snap.route_to(at.packet.dst)
            && let Some(src) = r
                .output_interface
                .and_then(|i| snap.source_for(i, r.gateway.unwrap_or(at.packet.dst)))
        {
            at.packet.src = src;
            if snap.proxy.is_some() {
                first_lookup = Some(hop(
                    format!("{here} sends from {src}: the first route lookup, before nat output"),
                    format!(
                        "route {} ({})",
                        show_route(r, &snap),
                        netns_label(&at.place)
                    ),
                ));
            }
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
                    hops.extend(first_lookup.take());
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
}

enum Egress {
    /// The next namespace, the hops to it, and the bridge and next hop
    /// of a frame that arrives on a bridge.
    Next(Place, Vec<Hop>, Option<(u32, Ipv4Addr)>),
    End(End, Vec<Hop>),
}
