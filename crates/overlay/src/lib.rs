//! flannel-style VXLAN overlay (`ferry overlay`).
//!
//! This module holds the pure model: from the own node and the other nodes it
//! computes the entries `flannel.1` must carry, and diffs them against what is
//! live. The kernel/kube driver is not written yet.

pub mod agent;
pub mod apply;
pub mod model;
