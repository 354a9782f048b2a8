//! Pure model: (own node, other nodes) -> desired routes, neighbours, FDB.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Device name, VNI and UDP port, as flannel's vxlan backend uses them.
pub const DEVICE: &str = "flannel.1";
pub const VNI: u32 = 1;
pub const PORT: u16 = 8472;
/// VXLAN encapsulation overhead subtracted from the underlay MTU.
pub const OVERHEAD: u32 = 50;

pub const ANNOTATION_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const ANNOTATION_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const ANNOTATION_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";

/// An IPv4 network (address masked to its prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, len) = text.trim().split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix_len: u8 = len.parse().ok()?;
        if prefix_len > 32 {
            return None;
        }
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - prefix_len)
        };
        Some(Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix_len,
        })
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(text: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = text.trim().split(':');
        for byte in &mut out {
            *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Mac(out))
    }

    /// A stable, locally administered unicast MAC derived from the node name
    /// (FNV-1a), so restarts keep the VTEP MAC.
    pub fn for_node(name: &str) -> Mac {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let h = hash.to_be_bytes();
        Mac([(h[2] & 0xfe) | 0x02, h[3], h[4], h[5], h[6], h[7]])
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// What the overlay needs to know about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub pod_cidr: Option<Cidr>,
    pub public_ip: Option<Ipv4Addr>,
    pub vtep_mac: Option<Mac>,
}

impl NodeInfo {
    /// Reads the flannel annotations (`backend-data` with `VtepMAC`,
    /// `public-ip`) and `spec.podCIDR`. Missing public-ip falls back to
    /// `fallback_ip` (e.g. the InternalIP).
    pub fn from_parts(
        name: &str,
        pod_cidr: Option<&str>,
        backend_data: Option<&str>,
        public_ip: Option<&str>,
        fallback_ip: Option<&str>,
    ) -> NodeInfo {
        let vtep_mac = backend_data
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|v| {
                v.get("VtepMAC")
                    .and_then(|m| m.as_str())
                    .and_then(Mac::parse)
            });
        NodeInfo {
            name: name.to_owned(),
            pod_cidr: pod_cidr.and_then(Cidr::parse),
            public_ip: public_ip
                .or(fallback_ip)
                .and_then(|ip| ip.trim().parse().ok()),
            vtep_mac,
        }
    }
}

/// The annotations the own node publishes (merge patch body).
pub fn own_annotations(mac: Mac, public_ip: Ipv4Addr) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "annotations": {
                ANNOTATION_BACKEND_DATA: serde_json::json!({ "VNI": VNI, "VtepMAC": mac.to_string() }).to_string(),
                ANNOTATION_BACKEND_TYPE: "vxlan",
                ANNOTATION_PUBLIC_IP: public_ip.to_string(),
            }
        }
    })
}

/// Address of flannel.1 on a node: `<podCIDR network>/32`.
pub fn device_address(pod_cidr: Cidr) -> (Ipv4Addr, u8) {
    (pod_cidr.network, 32)
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteEntry {
    pub dst: Cidr,
    pub via: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighEntry {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeSet<RouteEntry>,
    pub neighbours: BTreeSet<NeighEntry>,
    pub fdb: BTreeSet<FdbEntry>,
}

/// Desired entries on flannel.1 for `own` given all known nodes. Nodes
/// without podCIDR, public IP or VTEP MAC, and the own node, are skipped.
pub fn desired(own: &str, nodes: &[NodeInfo]) -> Desired {
    let mut out = Desired::default();
    for node in nodes.iter().filter(|n| n.name != own) {
        let (Some(cidr), Some(ip), Some(mac)) = (node.pod_cidr, node.public_ip, node.vtep_mac)
        else {
            continue;
        };
        out.routes.insert(RouteEntry {
            dst: cidr,
            via: cidr.network,
        });
        out.neighbours.insert(NeighEntry {
            ip: cidr.network,
            mac,
        });
        out.fdb.insert(FdbEntry { mac, dst: ip });
    }
    out
}

/// Changes turning `live` into `want`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff<T> {
    pub add: Vec<T>,
    pub remove: Vec<T>,
}

pub fn diff<T: Ord + Clone>(live: &BTreeSet<T>, want: &BTreeSet<T>) -> Diff<T> {
    Diff {
        add: want.difference(live).cloned().collect(),
        remove: live.difference(want).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: &str, mac: Option<&str>) -> NodeInfo {
        let data = mac.map(|m| format!(r#"{{"VNI":1,"VtepMAC":"{m}"}}"#));
        NodeInfo::from_parts(name, Some(cidr), data.as_deref(), Some(ip), None)
    }

    #[test]
    fn cidr_and_mac_parse() {
        let c = Cidr::parse("10.244.1.7/24").expect("cidr");
        assert_eq!(c.network, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(device_address(c), (Ipv4Addr::new(10, 244, 1, 0), 32));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        let m = Mac::parse("0a:1B:02:03:04:ff").expect("mac");
        assert_eq!(m.to_string(), "0a:1b:02:03:04:ff");
        assert!(Mac::parse("0a:1b:02:03:04").is_none());
    }

    #[test]
    fn node_mac_is_stable_unicast_local() {
        let a = Mac::for_node("n1");
        assert_eq!(a, Mac::for_node("n1"));
        assert_ne!(a, Mac::for_node("n2"));
        assert_eq!(a.0[0] & 0x03, 0x02);
    }

    #[test]
    fn desired_skips_self_and_incomplete_nodes() {
        let nodes = vec![
            node(
                "n1",
                "10.244.0.0/24",
                "172.31.1.11",
                Some("02:00:00:00:00:01"),
            ),
            node(
                "n2",
                "10.244.1.0/24",
                "172.31.1.12",
                Some("02:00:00:00:00:02"),
            ),
            node("n3", "10.244.2.0/24", "172.31.1.13", None),
        ];
        let d = desired("n1", &nodes);
        let via = Ipv4Addr::new(10, 244, 1, 0);
        let mac = Mac::parse("02:00:00:00:00:02").expect("mac");
        assert_eq!(
            d.routes.into_iter().collect::<Vec<_>>(),
            vec![RouteEntry {
                dst: Cidr::parse("10.244.1.0/24").expect("c"),
                via
            }]
        );
        assert_eq!(
            d.neighbours.into_iter().collect::<Vec<_>>(),
            vec![NeighEntry { ip: via, mac }]
        );
        assert_eq!(
            d.fdb.into_iter().collect::<Vec<_>>(),
            vec![FdbEntry {
                mac,
                dst: Ipv4Addr::new(172, 31, 1, 12)
            }]
        );
    }

    #[test]
    fn diff_follows_node_changes() {
        let mut nodes = vec![
            node(
                "n1",
                "10.244.0.0/24",
                "172.31.1.11",
                Some("02:00:00:00:00:01"),
            ),
            node(
                "n2",
                "10.244.1.0/24",
                "172.31.1.12",
                Some("02:00:00:00:00:02"),
            ),
        ];
        let before = desired("n1", &nodes);
        nodes[1].public_ip = Some(Ipv4Addr::new(172, 31, 1, 99));
        let after = desired("n1", &nodes);
        let d = diff(&before.fdb, &after.fdb);
        assert_eq!(d.add.len(), 1);
        assert_eq!(d.remove.len(), 1);
        assert!(diff(&before.routes, &after.routes).add.is_empty());
        nodes.pop();
        let gone = desired("n1", &nodes);
        assert_eq!(diff(&after.routes, &gone.routes).remove.len(), 1);
        assert_eq!(
            diff(&gone.routes, &gone.routes),
            Diff {
                add: vec![],
                remove: vec![]
            }
        );
    }

    #[test]
    fn annotations_carry_mac_and_ip() {
        let mac = Mac::for_node("n1");
        let v = own_annotations(mac, Ipv4Addr::new(172, 31, 1, 11));
        let a = &v["metadata"]["annotations"];
        assert_eq!(a[ANNOTATION_BACKEND_TYPE], "vxlan");
        let info = NodeInfo::from_parts(
            "n1",
            Some("10.244.0.0/24"),
            a[ANNOTATION_BACKEND_DATA].as_str(),
            a[ANNOTATION_PUBLIC_IP].as_str(),
            None,
        );
        assert_eq!(info.vtep_mac, Some(mac));
        assert_eq!(info.public_ip, Some(Ipv4Addr::new(172, 31, 1, 11)));
    }
}
