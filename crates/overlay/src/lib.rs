//! flannel-style VXLAN overlay (`ferry overlay`).
//!
//! This module holds the pure model: from the own node and the other nodes it
//! computes the entries `flannel.1` must carry, and diffs them against what is
//! live. `agent` drives the kernel from the Node objects; `masquerade` holds the
//! `--ip-masq` NAT table.

pub mod agent;
pub mod apply;
pub mod masquerade;
pub mod model;
