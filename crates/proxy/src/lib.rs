//! `ferry proxy` (issue 6), kube-proxy's job. Built as ARCHITECTURE.md
//! describes: a pure [`model`] turns Services and EndpointSlices into what
//! one node must program; [`nftables`] renders that as one table
//! (`ip ferry-proxy`) of global maps and rules; the [`agent`] watches the
//! API and applies only the difference from the live table, as one atomic
//! nf_tables batch (`ferry_netlink::nftables::Ruleset::diff`).
//!
//! Also here: [`health`] (`/healthz`, `/metrics`, health-check node
//! ports) and [`explain`] (`ferry explain`: the live elements for one
//! Service next to kube-proxy's iptables equivalent).
//!
//! UDP: when an endpoint goes away, or a port goes from no endpoints to
//! some, the agent deletes the stale conntrack entries (ctnetlink, in
//! `ferry_netlink::conntrack`) so clients do not stay black-holed.

pub mod agent;
pub mod explain;
pub mod health;
pub mod model;
pub mod nftables;
