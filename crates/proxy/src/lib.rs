//! `ferry proxy` (issue 6), kube-proxy's job. Built as ARCHITECTURE.md
//! describes: a pure [`model`] turns Services and EndpointSlices into what
//! one node must program; a dataplane applies the difference as one
//! nf_tables batch (`ferry_netlink::nftables::Ruleset::diff`).
//!
//! Status: the model, the cluster path of the nf_tables rendering
//! ([`nftables`]) and the watch-and-sync loop ([`agent`]) exist; NodePorts,
//! Local policies, affinity, source ranges, masquerade/hairpin, UDP
//! conntrack flushing, `/metrics`, `/healthz`, health-check node ports and
//! `ferry explain` do not.
//!
//! Intended ruleset (table `ip ferry-proxy`), shaped for cheap updates as
//! the measurements suggest (maps, not a chain per endpoint):
//! - `services`: verdict map `ip daddr . meta l4proto . th dport` → either
//!   `goto svc-simple` with the service-port id kept in a register, or
//!   `goto svc-<id>` for ports that need their own chain (session affinity,
//!   `Local` policies, `loadBalancerSourceRanges`);
//! - `svc-simple`: `dnat to` a lookup of `id . numgen random mod 64` (or
//!   `numgen inc` for `rr`, `jhash ip saddr` for `sh`) in `backends`,
//!   a map filled Maglev-style with 64 buckets per service port;
//! - `nodeports`: `meta l4proto . th dport` when `fib daddr type local` and
//!   the destination is not in 127.0.0.0/8 (CVE-2020-8558);
//! - `no-endpoints`: set of `daddr . proto . dport` rejected from a filter
//!   chain (TCP reset / ICMP port unreachable), plus a reject for unused
//!   ports of an active ClusterIP;
//! - masquerade by mark in `postrouting`: traffic from outside the cluster
//!   CIDR to a ClusterIP, external traffic under `Cluster`, and hairpin
//!   (`ct status dnat` with source = destination);
//! - affinity as kube-proxy's nftables mode does it: one timeout set of
//!   client addresses per endpoint, checked first and refreshed on use.
//!
//! UDP: when an endpoint goes away, or a port goes from no endpoints to
//! some, delete its conntrack entries (netlink ctnetlink) so clients do not
//! stay black-holed.

pub mod agent;
pub mod health;
pub mod model;
pub mod nftables;
