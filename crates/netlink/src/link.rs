//! Network interfaces: bridges, veth pairs, VXLAN devices, and the settings
//! the pod network needs on them (up/down, MTU, controller, hairpin, MAC).
//!
//! Operations on an existing link take its name; the kernel resolves names
//! itself (`IFLA_IFNAME`), which saves a lookup round trip per request.

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::str::FromStr;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoPortData, InfoPortKind, InfoVeth, InfoVxlan, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};

use crate::connection::Netlink;
use crate::error::{Error, Result};
use crate::netns::NetNs;

/// An Ethernet hardware address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// A locally administered unicast address derived from an IPv4 address,
    /// `0a:58:` followed by its four bytes (the convention OVN-Kubernetes
    /// uses). Gives a bridge or a pod a MAC that does not change.
    pub fn from_ipv4(ip: Ipv4Addr) -> MacAddress {
        let [a, b, c, d] = ip.octets();
        MacAddress([0x0a, 0x58, a, b, c, d])
    }

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddress {
    type Err = Error;

    fn from_str(text: &str) -> Result<MacAddress> {
        let invalid = || Error::Invalid {
            what: format!("MAC address {text:?}"),
            reason: "expected six hex bytes separated by ':'",
        };
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(invalid)?;
            if part.is_empty() || part.len() > 2 {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(MacAddress(bytes))
    }
}

/// What a VXLAN device is configured with, as read back from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    /// VXLAN network identifier.
    pub vni: Option<u32>,
    /// Local (source) address of the tunnel.
    pub local: Option<Ipv4Addr>,
    /// UDP destination port.
    pub port: Option<u16>,
    /// Whether the device learns remote MACs from traffic.
    pub learning: Option<bool>,
    /// Index of the underlay device.
    pub underlay: Option<u32>,
}

/// A network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Kind from `IFLA_INFO_KIND` (`bridge`, `veth`, `vxlan`, ...), if any.
    pub kind: Option<String>,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<MacAddress>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the controller (bridge) this link is a port of.
    pub controller: Option<u32>,
    /// Hairpin mode, for bridge ports.
    pub hairpin: Option<bool>,
    /// VXLAN settings, for VXLAN devices.
    pub vxlan: Option<VxlanInfo>,
    /// The interface alias (`ip link set NAME alias TEXT`), which owners
    /// use to mark links as theirs.
    pub alias: Option<String>,
}

impl Link {
    fn from_message(message: LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: message.header.flags.contains(LinkFlags::Up),
            controller: None,
            hairpin: None,
            vxlan: None,
            alias: None,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::Controller(index) if index != 0 => link.controller = Some(index),
                LinkAttribute::Address(bytes) => {
                    link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddress);
                }
                LinkAttribute::LinkInfo(infos) => link.read_link_info(infos),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => link.alias = Some(alias),
                _ => {}
            }
        }
        link
    }

    fn read_link_info(&mut self, infos: Vec<LinkInfo>) {
        for info in infos {
            match info {
                LinkInfo::Kind(kind) => self.kind = Some(kind.to_string()),
                LinkInfo::Data(InfoData::Vxlan(settings)) => {
                    let mut vxlan = VxlanInfo::default();
                    for setting in settings {
                        match setting {
                            InfoVxlan::Id(vni) => vxlan.vni = Some(vni),
                            InfoVxlan::Local(ip) => vxlan.local = Some(ip),
                            InfoVxlan::Port(port) => vxlan.port = Some(port),
                            InfoVxlan::Learning(on) => vxlan.learning = Some(on),
                            InfoVxlan::Link(index) => vxlan.underlay = Some(index),
                            _ => {}
                        }
                    }
                    self.vxlan = Some(vxlan);
                }
                LinkInfo::PortData(InfoPortData::BridgePort(settings)) => {
                    for setting in settings {
                        if let InfoBridgePort::HairpinMode(on) = setting {
                            self.hairpin = Some(on);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// A veth pair to create. The host end stays in the connection's
/// namespace; the peer may be created directly in another one, under its
/// final name, so it never appears (or clashes) in the host namespace.
#[derive(Debug)]
pub struct VethPair<'a> {
    /// Name of the end that stays here.
    pub name: &'a str,
    /// Name of the other end, in `peer_netns` if given.
    pub peer_name: &'a str,
    /// Namespace for the other end (`None`: this one).
    pub peer_netns: Option<&'a NetNs>,
    /// MTU for both ends.
    pub mtu: Option<u32>,
    /// Make the host end a port of this controller (bridge) at creation.
    pub controller: Option<u32>,
    /// Bring the host end up at creation.
    pub up: bool,
    /// Alias for the host end, marking who owns it (at most 255 bytes).
    pub alias: Option<&'a str>,
}

/// A VXLAN device to create (`ip link add NAME type vxlan ...`).
#[derive(Debug, Clone)]
pub struct Vxlan<'a> {
    /// Device name, e.g. `flannel.1`.
    pub name: &'a str,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Local address for the tunnel.
    pub local: Option<Ipv4Addr>,
    /// UDP destination port (flannel: 8472, IANA: 4789).
    pub port: u16,
    /// Learn remote MACs from traffic; flannel turns this off and programs
    /// the FDB itself.
    pub learning: bool,
    /// MTU (usually the underlay's minus 50).
    pub mtu: Option<u32>,
    /// Index of the underlay device.
    pub underlay: Option<u32>,
    /// Hardware address (the VTEP MAC).
    pub mac: Option<MacAddress>,
}

impl Netlink {
    /// The link called `name`, or `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let request = self.handle().link().get().match_name(name.to_string());
        match request.execute().try_next().await {
            Ok(message) => Ok(message.map(Link::from_message)),
            Err(error) => {
                let error = self.error("looking up link", name, error);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// The link called `name`; an error if there is none.
    pub async fn require_link(&self, name: &str) -> Result<Link> {
        self.link(name)
            .await?
            .ok_or_else(|| self.not_found("link", name))
    }

    /// The link with index `index`, or `None`.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let request = self.handle().link().get().match_index(index);
        match request.execute().try_next().await {
            Ok(message) => Ok(message.map(Link::from_message)),
            Err(error) => {
                let error = self.error("looking up link", format!("#{index}"), error);
                if error.is_not_found() {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        self.handle()
            .link()
            .get()
            .execute()
            .map_ok(Link::from_message)
            .try_collect()
            .await
            .map_err(|error| self.error("listing", "links", error))
    }

    /// Creates a bridge, up, with an optional MTU and MAC address. Fails
    /// with `EEXIST` if the name is taken.
    pub async fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<MacAddress>,
    ) -> Result<Link> {
        let mut builder = LinkBridge::new(name).up();
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = mac {
            builder = builder.address(mac.0.to_vec());
        }
        self.handle()
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|error| self.error("creating bridge", name, error))?;
        self.require_link(name).await
    }

    /// Creates a veth pair and returns the host end.
    pub async fn create_veth(&self, pair: &VethPair<'_>) -> Result<Link> {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(pair.peer_name);
        if let Some(netns) = pair.peer_netns {
            // The descriptor only has to stay open until the request is
            // answered; `pair` borrows the namespace for that long.
            peer = peer.setns_by_fd(netns.as_fd().as_raw_fd());
        }
        if let Some(mtu) = pair.mtu {
            peer = peer.mtu(mtu);
        }
        let mut builder = LinkVeth::new(pair.name, pair.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = pair.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(controller) = pair.controller {
            builder = builder.controller(controller);
        }
        if pair.up {
            builder = builder.up();
        }
        self.handle()
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|error| self.error("creating veth", pair.name, error))?;
        // The kernel ignores IFLA_IFALIAS when creating a link.
        if let Some(alias) = pair.alias {
            self.set_alias(pair.name, alias).await?;
        }
        self.require_link(pair.name).await
    }

    /// Creates a VXLAN device, up.
    pub async fn create_vxlan(&self, vxlan: &Vxlan<'_>) -> Result<Link> {
        let mut builder = LinkVxlan::new(vxlan.name, vxlan.vni)
            .port(vxlan.port)
            .learning(vxlan.learning)
            .up();
        if let Some(local) = vxlan.local {
            builder = builder.local(local);
        }
        if let Some(underlay) = vxlan.underlay {
            builder = builder.dev(underlay);
        }
        if let Some(mtu) = vxlan.mtu {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = vxlan.mac {
            builder = builder.address(mac.0.to_vec());
        }
        self.handle()
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|error| self.error("creating vxlan", vxlan.name, error))?;
        self.require_link(vxlan.name).await
    }

    /// Brings a link up (`ip link set NAME up`).
    pub async fn set_up(&self, name: &str) -> Result<()> {
        self.set(
            name,
            "bringing up link",
            LinkUnspec::new_with_name(name).up(),
        )
        .await
    }

    /// Takes a link down.
    pub async fn set_down(&self, name: &str) -> Result<()> {
        self.set(
            name,
            "taking down link",
            LinkUnspec::new_with_name(name).down(),
        )
        .await
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        self.set(
            name,
            "setting the MTU of link",
            LinkUnspec::new_with_name(name).mtu(mtu),
        )
        .await
    }

    /// Sets a link's hardware address.
    pub async fn set_mac(&self, name: &str, mac: MacAddress) -> Result<()> {
        let builder = LinkUnspec::new_with_name(name).address(mac.0.to_vec());
        self.set(name, "setting the MAC address of link", builder)
            .await
    }

    /// Sets a link's alias.
    pub async fn set_alias(&self, name: &str, alias: &str) -> Result<()> {
        let builder = LinkUnspec::new_with_name(name).alias(alias);
        self.set(name, "setting the alias of link", builder).await
    }

    /// Makes a link a port of the bridge with index `controller`
    /// (`ip link set NAME master BRIDGE`).
    pub async fn set_controller(&self, name: &str, controller: u32) -> Result<()> {
        let builder = LinkUnspec::new_with_name(name).controller(controller);
        self.set(name, "attaching to a bridge link", builder).await
    }

    /// Detaches a link from its bridge (`ip link set NAME nomaster`).
    pub async fn clear_controller(&self, name: &str) -> Result<()> {
        let builder = LinkUnspec::new_with_name(name).nocontroller();
        self.set(name, "detaching from its bridge link", builder)
            .await
    }

    /// Turns hairpin mode on or off on a bridge port, so frames can leave
    /// through the port they came in on (a pod reaching itself through a
    /// Service address needs this).
    pub async fn set_hairpin(&self, name: &str, on: bool) -> Result<()> {
        let message = LinkMessageBuilder::<LinkBridgePort>::default()
            .name(name.to_string())
            .set_port_kind(InfoPortKind::Bridge)
            .hairpin(on)
            .build();
        self.handle()
            .link()
            .set_port(message)
            .execute()
            .await
            .map_err(|error| self.error("setting hairpin mode on bridge port", name, error))
    }

    /// Deletes a link. Returns `false` if there was no such link.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let message = LinkUnspec::new_with_name(name).build();
        match self
            .handle()
            .link()
            .del_with_message(message)
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(error) => {
                let error = self.error("deleting link", name, error);
                if error.is_not_found() {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }

    async fn set<T>(
        &self,
        name: &str,
        action: &'static str,
        builder: LinkMessageBuilder<T>,
    ) -> Result<()> {
        self.handle()
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(|error| self.error(action, name, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_address_round_trips() {
        let mac: MacAddress = "0a:58:0A:f4:01:01".parse().expect("valid MAC");
        assert_eq!(mac.to_string(), "0a:58:0a:f4:01:01");
        assert_eq!(mac, MacAddress::from_ipv4(Ipv4Addr::new(10, 244, 1, 1)));
    }

    #[test]
    fn mac_address_rejects_garbage() {
        for text in [
            "",
            "0a:58",
            "0a:58:0a:f4:01:01:02",
            "0a:58:0a:f4:01:zz",
            "0a::0a:f4:01:01",
        ] {
            assert!(text.parse::<MacAddress>().is_err(), "{text:?} accepted");
        }
    }
}
