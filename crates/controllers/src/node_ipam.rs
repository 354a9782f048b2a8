//! Node IPAM: each Node gets `spec.podCIDR`/`podCIDRs`, one subnet of the
//! cluster CIDR (a /24 of 10.244.0.0/16 by default), as
//! kube-controller-manager's range allocator does. The assignment lives in
//! the Node itself, so it survives restarts: on start the controller reads
//! the subnets already given out and only fills in missing ones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Context;

/// The subnets of a cluster CIDR and which are taken.
#[derive(Debug, Clone)]
pub struct CidrSet {
    network: u32,
    prefix: u8,
    mask: u8,
    used: BTreeSet<u32>,
}

impl CidrSet {
    /// `cluster_cidr` like `10.244.0.0/16`, `mask` the per-node prefix.
    pub fn new(cluster_cidr: &str, mask: u8) -> Result<CidrSet, String> {
        let (ip, prefix) = cluster_cidr
            .split_once('/')
            .ok_or_else(|| format!("cluster CIDR {cluster_cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("cluster CIDR {cluster_cidr:?} is not IPv4"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("cluster CIDR {cluster_cidr:?} has a bad prefix"))?;
        if prefix > mask || mask > 30 || mask - prefix > 20 {
            return Err(format!(
                "node CIDR mask /{mask} does not fit cluster CIDR {cluster_cidr:?}"
            ));
        }
        let network = u32::from(ip) & (u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
        Ok(CidrSet {
            network,
            prefix,
            mask,
            used: BTreeSet::new(),
        })
    }

    fn count(&self) -> u32 {
        1 << (self.mask - self.prefix)
    }

    fn subnet(&self, index: u32) -> String {
        let base = self.network + (index << (32 - u32::from(self.mask)));
        format!("{}/{}", Ipv4Addr::from(base), self.mask)
    }

    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, mask) = cidr.split_once('/')?;
        if mask.parse::<u8>().ok()? != self.mask {
            return None;
        }
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let offset = ip.checked_sub(self.network)?;
        let index = offset >> (32 - u32::from(self.mask));
        (index < self.count() && offset % (1 << (32 - u32::from(self.mask))) == 0).then_some(index)
    }

    /// Marks a subnet already assigned; false when it is not one of ours.
    pub fn occupy(&mut self, cidr: &str) -> bool {
        match self.index_of(cidr) {
            Some(i) => {
                self.used.insert(i);
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.remove(&i);
        }
    }

    /// The lowest free subnet.
    pub fn allocate(&mut self) -> Option<String> {
        let index = (0..self.count()).find(|i| !self.used.contains(i))?;
        self.used.insert(index);
        Some(self.subnet(index))
    }
}

/// Runs the node IPAM controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let fresh = || CidrSet::new(&ctx.config.cluster_cidr, ctx.config.node_cidr_mask_size);
    let mut set = fresh().map_err(anyhow::Error::msg)?;
    // Node name → its subnet, to release on delete.
    let mut assigned: BTreeMap<String, String> = BTreeMap::new();
    let mut waiting: Vec<Node> = Vec::new();
    let mut synced = false;
    let mut events = watcher(nodes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => {
                set = fresh().map_err(anyhow::Error::msg)?;
                assigned.clear();
                waiting.clear();
                synced = false;
            }
            watcher::Event::InitApply(node) => {
                // Record every existing assignment before giving out new
                // ones, so a restart never hands a subnet out twice.
                if !record(&mut set, &mut assigned, &node) {
                    waiting.push(node);
                }
            }
            watcher::Event::InitDone => {
                synced = true;
                for node in std::mem::take(&mut waiting) {
                    assign(&nodes, &mut set, &mut assigned, &node).await;
                }
            }
            watcher::Event::Apply(node) => {
                if !record(&mut set, &mut assigned, &node) && synced {
                    assign(&nodes, &mut set, &mut assigned, &node).await;
                }
            }
            watcher::Event::Delete(node) => {
                if let Some(cidr) = node.metadata.name.as_ref().and_then(|n| assigned.remove(n)) {
                    set.release(&cidr);
                    tracing::info!(node = ?node.metadata.name, %cidr, "released pod CIDR");
                }
            }
        }
    }
    Ok(())
}

/// Records a node's existing podCIDR; false when it has none yet.
fn record(set: &mut CidrSet, assigned: &mut BTreeMap<String, String>, node: &Node) -> bool {
    let Some(name) = node.metadata.name.clone() else {
        return true;
    };
    match node.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
        Some(cidr) if !cidr.is_empty() => {
            if !set.occupy(&cidr) {
                tracing::warn!(node = %name, %cidr, "pod CIDR is outside the cluster CIDR");
            }
            assigned.insert(name, cidr);
            true
        }
        _ => false,
    }
}

async fn assign(
    nodes: &Api<Node>,
    set: &mut CidrSet,
    assigned: &mut BTreeMap<String, String>,
    node: &Node,
) {
    let Some(name) = node.metadata.name.clone() else {
        return;
    };
    let Some(cidr) = set.allocate() else {
        tracing::error!(node = %name, "no pod CIDR left in the cluster CIDR");
        return;
    };
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node = %name, %cidr, "assigned pod CIDR");
            assigned.insert(name, cidr);
        }
        Err(e) => {
            // The next event for this node retries.
            set.release(&cidr);
            tracing::warn!(node = %name, error = %e, "assigning a pod CIDR failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn subnets_in_order_and_reused_after_release() {
        let mut s = CidrSet::new("10.244.0.0/16", 24).unwrap();
        assert_eq!(s.allocate().as_deref(), Some("10.244.0.0/24"));
        assert!(s.occupy("10.244.1.0/24"));
        assert_eq!(s.allocate().as_deref(), Some("10.244.2.0/24"));
        s.release("10.244.0.0/24");
        assert_eq!(s.allocate().as_deref(), Some("10.244.0.0/24"));
        assert!(!s.occupy("10.245.0.0/24"));
        assert!(!s.occupy("10.244.0.128/24"));
    }

    #[test]
    fn classic_tutorial_layout() {
        let mut s = CidrSet::new("10.2.0.0/16", 24).unwrap();
        let got: Vec<String> = (0..3).map(|_| s.allocate().unwrap()).collect();
        assert_eq!(got, ["10.2.0.0/24", "10.2.1.0/24", "10.2.2.0/24"]);
    }

    #[test]
    fn exhaustion() {
        let mut s = CidrSet::new("10.0.0.0/23", 24).unwrap();
        assert!(s.allocate().is_some() && s.allocate().is_some());
        assert!(s.allocate().is_none());
        assert!(CidrSet::new("10.0.0.0/24", 16).is_err());
    }
}
