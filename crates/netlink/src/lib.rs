//! The one place Ferry touches the kernel.
//!
//! Everything here speaks netlink (rtnetlink for links, addresses, routes,
//! neighbours and the bridge FDB; nf_tables for packet rules) or uses the
//! namespace system calls, so no component ever shells out to `ip`, `nft`
//! or `iptables` at run time. Callers describe what they want; this crate
//! applies it in the right network namespace.
//!
//! A [`Netlink`] is an rtnetlink connection bound to one network namespace:
//! [`Netlink::connect`] for the caller's own, [`Netlink::connect_in`] for
//! any other ([`netns`] creates, opens and deletes namespaces). Links,
//! addresses, routes, neighbours and FDB entries are methods on it, in the
//! modules of the same names. Errors name the operation, the object and
//! the namespace ([`Error`]). [`conntrack`] lists and deletes connection
//! tracking entries over ctnetlink.

pub mod address;
mod connection;
pub mod conntrack;
pub mod error;
pub mod link;
pub mod neighbour;
pub mod netns;
pub mod nftables;
pub mod route;
pub mod sysctl;

pub use address::Address;
pub use connection::Netlink;
pub use error::{Error, Result};
pub use link::{Link, MacAddress, VethPair, Vxlan, VxlanInfo};
pub use neighbour::{FdbEntry, Neighbour};
pub use netns::NetNs;
pub use route::Route;
