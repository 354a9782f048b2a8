//! Out of a device and into the next namespace: a pod's veth to its
//! node's bridge, a bridge port to a pod, `flannel.1` to the peer VTEP
//! (its neighbour and FDB entries), the underlay bridge `ferry0` between
//! the nodes and the host.

use std::net::Ipv4Addr;

use ferry_netlink::Link;

use super::super::key;
use super::super::path::{End, Hop, Place, PodPlace, hop};
use super::super::snapshot::{Snapshot, host_veth, netns_label, underlay_port};
use super::{At, Egress, Walker};

impl Walker<'_> {
    /// Where a packet leaving `snap`'s namespace through `out` arrives.
    pub(super) async fn egress(
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
            // The host routes for nobody unless it forwards.
            // (Still the end of the lab: never probed.)
            (Place::Host, _) if at.depth > 0 && !snap.ip_forward => Ok(Egress::End(
                End::LeavesLab,
                vec![hop(
                    format!(
                        "the host would route {} out of {}, outside the lab, but does not forward: dropped",
                        at.packet.dst, out.name
                    ),
                    "sysctl net.ipv4.ip_forward = 0 (host namespace)",
                )],
            )),
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
