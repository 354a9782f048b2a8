//! The kernel state of one network namespace, as a walk reads it: links,
//! addresses, the main routing table, the VXLAN device's neighbours and
//! FDB, the proxy's and overlay's nf_tables tables, br_netfilter.

use std::net::Ipv4Addr;

use anyhow::Context;
use ferry_netlink::nftables::{Connection, Family, Ruleset, Table};
use ferry_netlink::{Address, FdbEntry, Link, Neighbour, NetNs, Netlink, Route};

use super::path::Place;

/// The kernel state of one namespace that a walk reads.
pub struct Snapshot {
    pub(super) links: Vec<Link>,
    pub(super) addresses: Vec<Address>,
    pub(super) routes: Vec<Route>,
    /// Of the VXLAN device, if there is one.
    pub(super) neighbours: Vec<Neighbour>,
    pub(super) fdb: Vec<FdbEntry>,
    pub(super) proxy: Option<Ruleset>,
    pub(super) overlay: Option<Ruleset>,
    /// `net.bridge.bridge-nf-call-iptables`: bridged IPv4 frames go
    /// through this namespace's netfilter hooks (br_netfilter).
    pub(super) bridge_nf: bool,
    /// `net.ipv4.ip_forward`: packets for other hosts are routed on.
    pub(super) ip_forward: bool,
}

impl Snapshot {
    pub(super) async fn read(netns: Option<&str>) -> anyhow::Result<Snapshot> {
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
        let ns = netns.map(NetNs::open_named).transpose()?;
        let sysctl_on = |key: &str| {
            match &ns {
                Some(ns) => ferry_netlink::sysctl::read_in(ns, key),
                None => ferry_netlink::sysctl::read(key),
            }
            .is_ok_and(|v| v.trim() == "1")
        };
        Ok(Snapshot {
            bridge_nf: sysctl_on("net.bridge.bridge-nf-call-iptables"),
            ip_forward: sysctl_on("net.ipv4.ip_forward"),
            links,
            addresses,
            routes,
            neighbours,
            fdb,
            proxy,
            overlay,
        })
    }

    pub(super) fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    pub(super) fn link_named(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub(super) fn name_of(&self, index: u32) -> String {
        self.link(index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("#{index}"))
    }

    /// The addresses of a link, as `a/len, b/len`.
    pub(super) fn addresses_of(&self, index: u32) -> String {
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
    pub(super) fn source_for(&self, index: u32, next_hop: Ipv4Addr) -> Option<Ipv4Addr> {
        let on_link: Vec<&Address> = self.addresses.iter().filter(|a| a.index == index).collect();
        on_link
            .iter()
            .find(|a| contains(a.address, a.prefix_len, next_hop))
            .or(on_link.first())
            .map(|a| a.address)
    }

    /// The main table's most specific route to `dst`.
    pub(super) fn route_to(&self, dst: Ipv4Addr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| contains(r.destination, r.prefix_len, dst))
            .max_by_key(|r| r.prefix_len)
    }
}

pub(super) fn contains(network: Ipv4Addr, prefix_len: u8, ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

/// `ip route`'s form of a route.
pub(super) fn show_route(r: &Route, snap: &Snapshot) -> String {
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

pub(super) fn netns_label(place: &Place) -> String {
    match place.netns() {
        Some(n) => format!("netns {n}"),
        None => "host namespace".into(),
    }
}

impl Snapshot {
    pub(super) fn addresses_of_name(&self, name: &str) -> String {
        self.link_named(name)
            .map(|l| self.addresses_of(l.index))
            .unwrap_or_default()
    }
}

/// The host end of a node's underlay veth (`ferry-n<i>` for `lab-node-<i>`).
pub(super) fn underlay_port(node: &str) -> String {
    match node.strip_prefix(crate::NODE_PREFIX) {
        Some(i) => format!("{}{i}", crate::VETH_PREFIX),
        None => format!("(underlay port of {node})"),
    }
}

/// The host end of a pod's veth: the link whose alias names the
/// attachment (container ID = pod UID, interface name).
pub(super) fn host_veth<'s>(snap: &'s Snapshot, uid: &str, ifname: &str) -> Option<&'s Link> {
    snap.links.iter().find(|l| {
        l.alias
            .as_deref()
            .and_then(ferry_cni::network::parse_host_veth_alias)
            .is_some_and(|(_, a)| a.container_id == uid && a.ifname == ifname)
    })
}
