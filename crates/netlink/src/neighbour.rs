//! Neighbour (ARP) entries and bridge forwarding database (FDB) entries.
//!
//! The VXLAN overlay programs both for every remote node, as flannel does:
//! an ARP entry `remote VTEP IP -> remote VTEP MAC` on the VXLAN device, and
//! an FDB entry `remote VTEP MAC -> remote node IP` telling the device where
//! to send the encapsulated frame (`bridge fdb ... dst <node IP>`).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::connection::Netlink;
use crate::error::Result;
use crate::link::MacAddress;

/// An IPv4 neighbour (ARP) entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Neighbour {
    /// Index of the interface the entry belongs to.
    pub index: u32,
    /// The neighbour's IP address.
    pub destination: Ipv4Addr,
    /// Its hardware address, once known.
    pub mac: Option<MacAddress>,
    /// A static entry (`nud permanent`), as the overlay installs.
    pub permanent: bool,
}

/// A bridge forwarding database entry (`bridge fdb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    /// Index of the device (for the overlay: the VXLAN device).
    pub index: u32,
    /// The hardware address the entry is for.
    pub mac: MacAddress,
    /// For VXLAN devices: the remote underlay IP frames go to.
    pub destination: Option<Ipv4Addr>,
    /// A static entry.
    pub permanent: bool,
}

fn neighbour_message(
    family: AddressFamily,
    index: u32,
    destination: Option<Ipv4Addr>,
    mac: Option<MacAddress>,
) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = family;
    message.header.ifindex = index;
    message.header.state = NeighbourState::Permanent;
    message.header.kind = RouteType::Unspec;
    if family == AddressFamily::Bridge {
        // NTF_SELF: the entry belongs to the device itself (the VXLAN
        // driver's own table), not to a bridge it is a port of.
        message.header.flags = NeighbourFlags::Own;
    }
    if let Some(mac) = mac {
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    if let Some(ip) = destination {
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    }
    message
}

fn parse(message: &NeighbourMessage) -> (Option<Ipv4Addr>, Option<MacAddress>) {
    let mut destination = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => destination = Some(*ip),
            // Bridge (FDB) messages carry the remote address undecoded.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                destination = <[u8; 4]>::try_from(bytes.as_slice())
                    .ok()
                    .map(Ipv4Addr::from);
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddress);
            }
            _ => {}
        }
    }
    (destination, mac)
}

impl Netlink {
    /// Adds a permanent neighbour entry `destination -> mac` on the
    /// interface with index `index`. Fails with `EEXIST` if there is one.
    pub async fn add_neighbour(
        &self,
        index: u32,
        destination: Ipv4Addr,
        mac: MacAddress,
    ) -> Result<()> {
        self.handle()
            .neighbours()
            .add(index, IpAddr::V4(destination))
            .link_layer_address(&mac.0)
            .execute()
            .await
            .map_err(|error| {
                self.error(
                    "adding neighbour",
                    format!("{destination} lladdr {mac} on ifindex {index}"),
                    error,
                )
            })
    }

    /// Adds or replaces the permanent neighbour entry for `destination`.
    pub async fn replace_neighbour(
        &self,
        index: u32,
        destination: Ipv4Addr,
        mac: MacAddress,
    ) -> Result<()> {
        self.handle()
            .neighbours()
            .add(index, IpAddr::V4(destination))
            .link_layer_address(&mac.0)
            .replace()
            .execute()
            .await
            .map_err(|error| {
                self.error(
                    "replacing neighbour",
                    format!("{destination} lladdr {mac} on ifindex {index}"),
                    error,
                )
            })
    }

    /// Deletes the neighbour entry for `destination`. Returns `false` if
    /// there was none.
    pub async fn delete_neighbour(&self, index: u32, destination: Ipv4Addr) -> Result<bool> {
        let message = neighbour_message(AddressFamily::Inet, index, Some(destination), None);
        match self.handle().neighbours().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(error) => {
                let error = self.error(
                    "deleting neighbour",
                    format!("{destination} on ifindex {index}"),
                    error,
                );
                if error.is_not_found() {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// IPv4 neighbour entries, of one interface or (with `None`) of all.
    pub async fn neighbours(&self, index: Option<u32>) -> Result<Vec<Neighbour>> {
        let messages: Vec<NeighbourMessage> = self
            .handle()
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|error| self.error("listing", "neighbours", error))?;
        Ok(messages
            .iter()
            .filter(|message| index.is_none_or(|index| message.header.ifindex == index))
            .filter_map(|message| {
                let (destination, mac) = parse(message);
                Some(Neighbour {
                    index: message.header.ifindex,
                    destination: destination?,
                    mac,
                    permanent: message.header.state == NeighbourState::Permanent,
                })
            })
            .collect())
    }

    /// Appends an FDB entry `mac -> destination` on the device with index
    /// `index` (`bridge fdb append MAC dev DEV dst IP`). Appending lets one
    /// MAC (typically all-zeros, for flooding) have several destinations.
    pub async fn append_fdb(
        &self,
        index: u32,
        mac: MacAddress,
        destination: Ipv4Addr,
    ) -> Result<()> {
        let message = neighbour_message(AddressFamily::Bridge, index, Some(destination), Some(mac));
        self.request_ack(
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_CREATE | NLM_F_APPEND,
        )
        .await
        .map_err(|error| {
            self.error(
                "appending fdb entry",
                format!("{mac} dst {destination} on ifindex {index}"),
                error,
            )
        })
    }

    /// Adds or replaces the FDB entry for `mac` so it points at
    /// `destination` (`bridge fdb replace MAC dev DEV dst IP`), which is
    /// what flannel installs per remote node.
    pub async fn replace_fdb(
        &self,
        index: u32,
        mac: MacAddress,
        destination: Ipv4Addr,
    ) -> Result<()> {
        let message = neighbour_message(AddressFamily::Bridge, index, Some(destination), Some(mac));
        self.request_ack(
            RouteNetlinkMessage::NewNeighbour(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map_err(|error| {
            self.error(
                "replacing fdb entry",
                format!("{mac} dst {destination} on ifindex {index}"),
                error,
            )
        })
    }

    /// Deletes the FDB entry for `mac` (and `destination`, when given).
    /// Returns `false` if there was none.
    pub async fn delete_fdb(
        &self,
        index: u32,
        mac: MacAddress,
        destination: Option<Ipv4Addr>,
    ) -> Result<bool> {
        let message = neighbour_message(AddressFamily::Bridge, index, destination, Some(mac));
        match self.handle().neighbours().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(error) => {
                let object = match destination {
                    Some(ip) => format!("{mac} dst {ip} on ifindex {index}"),
                    None => format!("{mac} on ifindex {index}"),
                };
                let error = self.error("deleting fdb entry", object, error);
                if error.is_not_found() {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// FDB entries of the device with index `index`.
    pub async fn fdb_entries(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let messages: Vec<NeighbourMessage> = self
            .handle()
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|error| self.error("listing", "fdb entries", error))?;
        Ok(messages
            .iter()
            .filter(|message| message.header.ifindex == index)
            .filter_map(|message| {
                let (destination, mac) = parse(message);
                Some(FdbEntry {
                    index: message.header.ifindex,
                    mac: mac?,
                    destination,
                    permanent: message.header.state == NeighbourState::Permanent,
                })
            })
            .collect())
    }
}
