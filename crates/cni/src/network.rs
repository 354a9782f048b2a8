//! The kernel side of an attachment: the node's bridge with the gateway
//! address, a veth pair from the bridge into the container, and the
//! container's address and routes. Everything goes through ferry-netlink.
//!
//! The host end of the veth gets a name derived from the attachment, so
//! DEL can find it without the container's namespace, and an alias
//! `ferry-cni/<network>/<containerID>/<ifname>`, so GC can tell which
//! attachment each host veth belongs to.

use ferry_netlink::{Link, MacAddress, NetNs, Netlink, Route, VethPair, sysctl};

use crate::config::{NetworkConfig, RouteConfig};
use crate::ipam::Lease;
use crate::spec::{Attachment, CniError, ErrorCode};

/// Marks host veths created by this plugin (start of their alias).
pub const ALIAS_PREFIX: &str = "ferry-cni";

/// The host end's name: `veth` and 11 hex digits of a hash of the network
/// and the attachment (15 characters, the longest Linux allows).
pub fn host_veth_name(network: &str, attachment: &Attachment) -> String {
    // FNV-1a: stable across Rust releases and builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        network.as_bytes(),
        b"\0",
        attachment.container_id.as_bytes(),
        b"\0",
        attachment.ifname.as_bytes(),
    ] {
        for byte in part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("veth{:011x}", hash >> 20)
}

/// The alias that marks a host veth as this attachment's.
pub fn host_veth_alias(network: &str, attachment: &Attachment) -> String {
    format!(
        "{ALIAS_PREFIX}/{network}/{}/{}",
        attachment.container_id, attachment.ifname
    )
}

/// The network and attachment a host veth alias names, if it is ours.
pub fn parse_host_veth_alias(alias: &str) -> Option<(&str, Attachment)> {
    let mut parts = alias.splitn(4, '/');
    if parts.next()? != ALIAS_PREFIX {
        return None;
    }
    let network = parts.next()?;
    let container_id = parts.next()?;
    let ifname = parts.next()?;
    Some((
        network,
        Attachment {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        },
    ))
}

/// Adds context to a kernel error.
fn kernel(context: &str, error: ferry_netlink::Error) -> CniError {
    CniError::new(ErrorCode::Kernel, format!("{context}: {error}"))
}

/// Makes sure the bridge exists, is up and, for a gateway network, holds
/// the gateway address, and that the node forwards IPv4. Concurrent ADDs
/// may race to create it; the loser uses the winner's.
pub async fn ensure_bridge(
    host: &Netlink,
    config: &NetworkConfig,
    lease: &Lease,
) -> Result<Link, CniError> {
    let context = format!("setting up bridge {}", config.bridge);
    let bridge = match host.link(&config.bridge).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            // A fixed MAC derived from the gateway: a bridge otherwise
            // takes its lowest port's MAC, which changes as pods come and
            // go and leaves stale ARP entries in every pod.
            let mac = config
                .is_gateway
                .then(|| MacAddress::from_ipv4(lease.range.gateway));
            match host.create_bridge(&config.bridge, config.mtu, mac).await {
                Ok(link) => link,
                Err(error) if error.is_exists() => host
                    .require_link(&config.bridge)
                    .await
                    .map_err(|e| kernel(&context, e))?,
                Err(error) => return Err(kernel(&context, error)),
            }
        }
        Err(error) => return Err(kernel(&context, error)),
    };
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(CniError::config(format!(
            "{} exists but is a {} device, not a bridge",
            config.bridge,
            bridge.kind.as_deref().unwrap_or("plain")
        )));
    }
    if !bridge.up {
        host.set_up(&config.bridge)
            .await
            .map_err(|e| kernel(&context, e))?;
    }
    if config.is_gateway {
        let subnet = lease.range.subnet;
        match host
            .add_address(bridge.index, lease.range.gateway, subnet.prefix_len())
            .await
        {
            Ok(()) => {}
            Err(error) if error.is_exists() => {}
            Err(error) => return Err(kernel(&context, error)),
        }
        enable_forwarding()?;
    }
    Ok(bridge)
}

/// Pods reach beyond the node only if the node routes for them.
fn enable_forwarding() -> Result<(), CniError> {
    const KEY: &str = "net.ipv4.ip_forward";
    let current = sysctl::read(KEY).map_err(|e| kernel("enabling IPv4 forwarding", e))?;
    if current != "1" {
        sysctl::write(KEY, "1").map_err(|e| kernel("enabling IPv4 forwarding", e))?;
    }
    Ok(())
}

/// Creates the veth pair: the host end on the bridge (up, hairpin as
/// configured), the other end directly inside the container as `ifname`.
/// A host end left by an earlier, interrupted ADD of the same attachment
/// is replaced. Returns the host end.
pub async fn create_veth(
    host: &Netlink,
    config: &NetworkConfig,
    bridge: &Link,
    pod_netns: &NetNs,
    attachment: &Attachment,
) -> Result<Link, CniError> {
    let name = host_veth_name(&config.name, attachment);
    let alias = host_veth_alias(&config.name, attachment);
    let pair = VethPair {
        name: &name,
        peer_name: &attachment.ifname,
        peer_netns: Some(pod_netns),
        mtu: config.mtu,
        controller: Some(bridge.index),
        up: true,
        alias: (alias.len() < 256).then_some(alias.as_str()),
    };
    let context = format!("creating veth {name} for {}", attachment.container_id);
    let created = match host.create_veth(&pair).await {
        Err(error) if error.is_exists() => {
            // Ours by name: a leftover of an interrupted ADD. Otherwise the
            // clash is inside the container.
            if host
                .delete_link(&name)
                .await
                .map_err(|e| kernel(&context, e))?
            {
                host.create_veth(&pair).await
            } else {
                return Err(CniError::new(
                    ErrorCode::Kernel,
                    format!(
                        "interface {} already exists in netns {}",
                        attachment.ifname,
                        pod_netns.path().display()
                    ),
                ));
            }
        }
        other => other,
    };
    let mut link = created.map_err(|e| kernel(&context, e))?;
    if config.hairpin_mode {
        host.set_hairpin(&name, true)
            .await
            .map_err(|e| kernel(&context, e))?;
        link.hairpin = Some(true);
    }
    Ok(link)
}

/// The routes a container gets: `ipam.routes`, or a default route via the
/// gateway when the bridge is the gateway; `isDefaultGateway` adds the
/// default route to configured ones.
pub fn container_routes(config: &NetworkConfig, lease: &Lease) -> Vec<Route> {
    let gateway = lease.range.gateway;
    let mut routes: Vec<Route> = config
        .ipam
        .routes
        .iter()
        .map(|RouteConfig { dst, gw }| {
            Route::to(dst.network(), dst.prefix_len()).via(gw.unwrap_or(gateway))
        })
        .collect();
    let has_default = routes.iter().any(Route::is_default);
    if !has_default && (config.is_default_gateway || (routes.is_empty() && config.is_gateway)) {
        routes.push(Route::default_via(gateway));
    }
    routes
}

/// Configures the container's end: address, up, routes. Returns it.
pub async fn configure_container(
    pod: &Netlink,
    ifname: &str,
    lease: &Lease,
    routes: &[Route],
) -> Result<Link, CniError> {
    let context = format!("configuring {ifname} in the container");
    let link = pod
        .require_link(ifname)
        .await
        .map_err(|e| kernel(&context, e))?;
    pod.add_address(link.index, lease.ip, lease.range.subnet.prefix_len())
        .await
        .map_err(|e| kernel(&context, e))?;
    pod.set_up(ifname).await.map_err(|e| kernel(&context, e))?;
    for route in routes {
        match pod.add_route(route).await {
            Ok(()) => {}
            // The spec: another network may own the default route already.
            Err(error) if error.is_exists() && route.is_default() => {
                tracing::debug!(%error, "keeping the existing default route");
            }
            Err(error) => return Err(kernel(&context, error)),
        }
    }
    Ok(link)
}

/// Removes the attachment's interfaces: the container end if the
/// namespace is still there (which takes the host end with it), then the
/// host end by name. Missing pieces are fine.
pub async fn remove_veth(
    host: &Netlink,
    pod: Option<&Netlink>,
    network: &str,
    attachment: &Attachment,
) -> Result<(), CniError> {
    if let Some(pod) = pod {
        pod.delete_link(&attachment.ifname)
            .await
            .map_err(|e| kernel("removing the container interface", e))?;
    }
    let name = host_veth_name(network, attachment);
    host.delete_link(&name)
        .await
        .map_err(|e| kernel("removing the host veth", e))?;
    Ok(())
}

/// Host veths of `network` whose attachment fails `keep`, deleted; returns
/// their names.
pub async fn remove_stale_veths(
    host: &Netlink,
    network: &str,
    keep: impl Fn(&Attachment) -> bool,
) -> Result<Vec<String>, CniError> {
    let links = host
        .links()
        .await
        .map_err(|e| kernel("listing host veths", e))?;
    let mut removed = Vec::new();
    for link in links {
        let Some((owner, attachment)) = link.alias.as_deref().and_then(parse_host_veth_alias)
        else {
            continue;
        };
        if owner == network && !keep(&attachment) {
            host.delete_link(&link.name)
                .await
                .map_err(|e| kernel("removing a stale host veth", e))?;
            removed.push(link.name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(id: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn host_veth_names_are_stable_valid_and_distinct() {
        let a = host_veth_name("ferry", &attachment("abc", "eth0"));
        assert_eq!(a, host_veth_name("ferry", &attachment("abc", "eth0")));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert!(crate::spec::valid_interface_name(&a));
        assert_ne!(a, host_veth_name("ferry", &attachment("abc", "eth1")));
        assert_ne!(a, host_veth_name("other", &attachment("abc", "eth0")));
        assert_ne!(a, host_veth_name("ferry", &attachment("abd", "eth0")));
    }

    #[test]
    fn aliases_round_trip() {
        let attachment = attachment("c0ffee.1_x-y", "eth0");
        let alias = host_veth_alias("net-1", &attachment);
        assert_eq!(parse_host_veth_alias(&alias), Some(("net-1", attachment)));
        assert_eq!(parse_host_veth_alias("someone-else/net/a/eth0"), None);
        assert_eq!(parse_host_veth_alias("ferry-cni/net/a"), None);
    }
}
