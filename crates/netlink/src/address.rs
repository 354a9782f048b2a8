//! IPv4 addresses on interfaces (`ip addr`).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use crate::connection::Netlink;
use crate::error::Result;

/// An IPv4 address assigned to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Index of the interface holding it.
    pub index: u32,
    /// The address.
    pub address: Ipv4Addr,
    /// Prefix length of the subnet it belongs to.
    pub prefix_len: u8,
}

impl Address {
    fn from_message(message: AddressMessage) -> Option<Address> {
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs
        // from it only on point-to-point links, where it is the peer.
        let mut local = None;
        let mut address = None;
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                _ => {}
            }
        }
        Some(Address {
            index: message.header.index,
            address: local.or(address)?,
            prefix_len: message.header.prefix_len,
        })
    }
}

impl Netlink {
    /// Adds `address/prefix_len` to the interface with index `index`.
    /// Fails with `EEXIST` if it is already there.
    pub async fn add_address(&self, index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.handle()
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .execute()
            .await
            .map_err(|error| {
                self.error(
                    "adding address",
                    format!("{address}/{prefix_len} to ifindex {index}"),
                    error,
                )
            })
    }

    /// Adds `address/prefix_len`, or updates it if it is already there.
    pub async fn replace_address(
        &self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<()> {
        self.handle()
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(|error| {
                self.error(
                    "replacing address",
                    format!("{address}/{prefix_len} on ifindex {index}"),
                    error,
                )
            })
    }

    /// IPv4 addresses, of one interface or (with `None`) of all.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<Address>> {
        let mut request = self.handle().address().get();
        if let Some(index) = index {
            request = request.set_link_index_filter(index);
        }
        let messages: Vec<AddressMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|error| self.error("listing", "addresses", error))?;
        Ok(messages
            .into_iter()
            .filter_map(Address::from_message)
            .filter(|address| index.is_none_or(|index| address.index == index))
            .collect())
    }

    /// Removes `address/prefix_len` from the interface with index `index`.
    /// Returns `false` if it was not there.
    pub async fn delete_address(
        &self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<bool> {
        let message = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(address, prefix_len)
            .build();
        match self.handle().address().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(error) => {
                let error = self.error(
                    "deleting address",
                    format!("{address}/{prefix_len} from ifindex {index}"),
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
}
