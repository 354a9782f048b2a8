//! The one place Ferry touches the kernel.
//!
//! Everything here speaks netlink (rtnetlink for links, addresses, routes,
//! neighbours and the bridge FDB; nf_tables for packet rules) or uses the
//! namespace system calls, so no component ever shells out to `ip`, `nft`
//! or `iptables` at run time. Callers describe what they want; this crate
//! applies it in the right network namespace.

pub mod nftables;
