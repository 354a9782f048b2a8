//! The lab's underlay: bridge `ferry0` (172.30.0.1/24) in the root
//! namespace and one namespace per node, attached by a veth pair whose
//! node end is `eth0` = 172.30.0.<10+i>/24 with a default route via the
//! bridge. The root namespace gets no forwarding and no rules: nothing
//! from the lab leaves the machine.

use std::net::Ipv4Addr;

use ferry_netlink::Netlink;
use ferry_netlink::link::VethPair;
use ferry_netlink::netns::NetNs;
use ferry_netlink::route::Route;

use crate::{BRIDGE, GATEWAY, UNDERLAY_MTU, VETH_PREFIX};

/// Name of node `i` (1-based).
pub fn node_name(i: usize) -> String {
    format!("{}{i}", crate::NODE_PREFIX)
}

/// Underlay address of node `i`.
pub fn node_ip(i: usize) -> Ipv4Addr {
    let [a, b, c, _] = GATEWAY.octets();
    Ipv4Addr::new(a, b, c, 10 + u8::try_from(i).unwrap_or(u8::MAX - 10))
}

/// Creates the bridge with the gateway address.
pub async fn create_bridge(nl: &Netlink) -> anyhow::Result<()> {
    let bridge = nl.create_bridge(BRIDGE, Some(UNDERLAY_MTU), None).await?;
    nl.add_address(bridge.index, GATEWAY, 24).await?;
    nl.set_up(BRIDGE).await?;
    Ok(())
}

/// Creates node `i`: namespace, veth to the bridge, address, route,
/// forwarding.
pub async fn create_node(nl: &Netlink, i: usize) -> anyhow::Result<()> {
    let name = node_name(i);
    let netns = ferry_netlink::netns::create(&name)?;
    let bridge = nl.require_link(BRIDGE).await?;
    let host_end = format!("{VETH_PREFIX}{i}");
    nl.create_veth(&VethPair {
        name: &host_end,
        peer_name: "eth0",
        peer_netns: Some(&netns),
        mtu: Some(UNDERLAY_MTU),
        controller: Some(bridge.index),
        up: true,
        alias: Some("ferry lab underlay"),
    })
    .await?;
    let inner = Netlink::connect_in(&netns).await?;
    inner.set_up("lo").await?;
    let eth0 = inner.require_link("eth0").await?;
    inner.add_address(eth0.index, node_ip(i), 24).await?;
    inner.set_up("eth0").await?;
    inner.add_route(&Route::default_via(GATEWAY)).await?;
    node_sysctls(&netns)?;
    Ok(())
}

/// A node routes for its pods; reverse-path filtering would drop replies
/// that come back over the underlay while the route points at flannel.1.
fn node_sysctls(netns: &NetNs) -> anyhow::Result<()> {
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.eth0.rp_filter", "0"),
    ] {
        ferry_netlink::sysctl::write_in(netns, key, value)?;
    }
    Ok(())
}
