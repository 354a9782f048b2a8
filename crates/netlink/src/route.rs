//! IPv4 routes in the main table (`ip route`).

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::RouteMessageBuilder;

use crate::connection::Netlink;
use crate::error::Result;

/// An IPv4 unicast route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network (`0.0.0.0` with prefix 0 for the default route).
    pub destination: Ipv4Addr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop, if the destination is not directly connected.
    pub gateway: Option<Ipv4Addr>,
    /// Index of the output interface.
    pub output_interface: Option<u32>,
    /// Use the gateway even if no connected route covers it (the VXLAN
    /// overlay routes each remote pod subnet this way).
    pub onlink: bool,
}

impl Route {
    /// The default route via `gateway`.
    pub fn default_via(gateway: Ipv4Addr) -> Route {
        Route::to(Ipv4Addr::UNSPECIFIED, 0).via(gateway)
    }

    /// A route to `destination/prefix_len`, to be completed with
    /// [`Route::via`] and/or [`Route::dev`].
    pub fn to(destination: Ipv4Addr, prefix_len: u8) -> Route {
        Route {
            destination,
            prefix_len,
            gateway: None,
            output_interface: None,
            onlink: false,
        }
    }

    /// Through `gateway`.
    pub fn via(mut self, gateway: Ipv4Addr) -> Route {
        self.gateway = Some(gateway);
        self
    }

    /// Out of the interface with index `index`.
    pub fn dev(mut self, index: u32) -> Route {
        self.output_interface = Some(index);
        self
    }

    /// With the on-link flag.
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    /// Whether this is a default route.
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }

    fn message(&self) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(self.destination, self.prefix_len)
            // A route without a gateway reaches hosts on the link itself,
            // as `ip route add ... dev X` would set it.
            .scope(if self.gateway.is_some() {
                RouteScope::Universe
            } else {
                RouteScope::Link
            })
            .protocol(RouteProtocol::Boot);
        if let Some(gateway) = self.gateway {
            builder = builder.gateway(gateway);
        }
        if let Some(index) = self.output_interface {
            builder = builder.output_interface(index);
        }
        if self.onlink {
            builder = builder.onlink();
        }
        builder.build()
    }

    fn from_message(message: &RouteMessage) -> Option<Route> {
        if message.header.kind != RouteType::Unicast {
            return None;
        }
        let mut route = Route::to(
            Ipv4Addr::UNSPECIFIED,
            message.header.destination_prefix_length,
        );
        route.onlink = message.header.flags.contains(RouteFlags::Onlink);
        let mut table = u32::from(message.header.table);
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.destination = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                RouteAttribute::Oif(index) => route.output_interface = Some(*index),
                RouteAttribute::Table(id) => table = *id,
                _ => {}
            }
        }
        (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(route)
    }

    fn describe(&self) -> String {
        let mut text = format!("{}/{}", self.destination, self.prefix_len);
        if let Some(gateway) = self.gateway {
            text.push_str(&format!(" via {gateway}"));
        }
        if let Some(index) = self.output_interface {
            text.push_str(&format!(" dev #{index}"));
        }
        if self.onlink {
            text.push_str(" onlink");
        }
        text
    }
}

impl Netlink {
    /// Adds a route. Fails with `EEXIST` if one to the same destination
    /// exists.
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        self.handle()
            .route()
            .add(route.message())
            .execute()
            .await
            .map_err(|error| self.error("adding route", route.describe(), error))
    }

    /// Adds a route, or replaces the one to the same destination.
    pub async fn replace_route(&self, route: &Route) -> Result<()> {
        self.handle()
            .route()
            .add(route.message())
            .replace()
            .execute()
            .await
            .map_err(|error| self.error("replacing route", route.describe(), error))
    }

    /// Deletes a route. Returns `false` if there was no such route.
    pub async fn delete_route(&self, route: &Route) -> Result<bool> {
        // Match whatever protocol and scope the route was created with, as
        // `ip route del` does.
        let mut message = route.message();
        message.header.protocol = RouteProtocol::Unspec;
        message.header.scope = RouteScope::NoWhere;
        match self.handle().route().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(error) => {
                let error = self.error("deleting route", route.describe(), error);
                if error.is_not_found() {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// IPv4 unicast routes of the main table.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let messages: Vec<RouteMessage> = self
            .handle()
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(|error| self.error("listing", "routes", error))?;
        Ok(messages.iter().filter_map(Route::from_message).collect())
    }
}
