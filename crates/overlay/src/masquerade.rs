//! Masquerade of pod traffic that leaves the cluster (`--ip-masq`), in the
//! node's namespace: one nf_tables table `ip ferry-overlay` with a
//! postrouting NAT chain. Pod→pod (destination in the cluster CIDR) and
//! pod→node (destination in the `nodes` set of InternalIPs) keep the pod
//! source address; anything else from a pod leaves with the node's.
//! The table is rebuilt in one atomic batch whenever the node set changes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ferry_netlink::nftables::{
    Batch, Chain, ChainType, CmpOp, Connection, DataType, Family, Hook, Register, Rule, Set,
    SetElement, Table, Value, Verdict, priority,
};

use crate::model::Cidr;

/// The table's name (what `nft list tables` shows).
pub const TABLE: &str = "ferry-overlay";

/// The batch that (re)creates the masquerade table for `cluster` with
/// `nodes` exempt.
pub fn batch(cluster: Cidr, nodes: &BTreeSet<Ipv4Addr>, replace: bool) -> Batch {
    let table = Table::new(Family::Ip, TABLE)
        .comment("ferry overlay: masquerade of pod traffic leaving the cluster");
    let chain = Chain::base(
        &table,
        "postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
    );
    let set = Set::new(&table, "nodes", [DataType::Ipv4Addr]);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(cluster.prefix_len))
        .unwrap_or(0)
        .to_be_bytes();
    let net = cluster.network.octets();
    let from_pods = || {
        Rule::new()
            .payload_ip_saddr(Register::R1)
            .bitwise(Register::R1, Register::R1, mask, [0u8; 4])
            .cmp(Register::R1, CmpOp::Eq, net)
    };
    let mut b = Batch::new();
    if replace {
        b.destroy_table(&table);
    }
    b.add_table(&table).add_chain(&chain).add_set(&set);
    let elements: Vec<SetElement> = nodes
        .iter()
        .map(|ip| SetElement::new(Value::new().ipv4(*ip)))
        .collect();
    if !elements.is_empty() {
        b.add_elements(&set, &elements);
    }
    b.add_rule(
        &chain,
        &from_pods()
            .payload_ip_daddr(Register::R2)
            .bitwise(Register::R2, Register::R2, mask, [0u8; 4])
            .cmp(Register::R2, CmpOp::Eq, net)
            .verdict(Verdict::Return)
            .comment("pod to pod: no NAT"),
    )
    .add_rule(
        &chain,
        &from_pods()
            .payload_ip_daddr(Register::R2)
            .lookup("nodes", Register::R2)
            .verdict(Verdict::Return)
            .comment("pod to node: no NAT"),
    )
    .add_rule(
        &chain,
        &from_pods()
            .masquerade()
            .comment("pod to outside the cluster: masquerade"),
    );
    b
}

/// Programs the table in the namespace at `netns_path`.
pub fn apply(
    netns_path: &std::path::Path,
    cluster: Cidr,
    nodes: &BTreeSet<Ipv4Addr>,
) -> anyhow::Result<()> {
    let mut conn = Connection::open_in_netns(netns_path)?;
    // Destroy (not delete) tolerates a missing table, so one batch serves
    // the first run and every later one.
    conn.apply(&batch(cluster, nodes, true))?;
    Ok(())
}
