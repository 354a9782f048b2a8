//! The nf_tables rendering of a [`Plan`] (first slice: the cluster path).
//!
//! Table `ip ferry-proxy`:
//! - `service-ids`: map `ip daddr . meta l4proto . th dport` → port id, for
//!   every ClusterIP, external IP and load-balancer IP of a port that has
//!   usable cluster endpoints;
//! - `backends`: map `id . bucket` → `ip daddr . th dport`, [`BUCKETS`]
//!   buckets per port, filled round-robin over its endpoints; one DNAT
//!   rule picks `numgen random mod BUCKETS` (a Maglev-like table: no chain
//!   per service or endpoint, so a change is a few map elements);
//! - `no-endpoints`: set of the same keys for ports without usable
//!   endpoints, rejected (TCP reset, else ICMP port unreachable) in the
//!   filter hooks, never black-holed.
//!
//! - `node-ports`: map `meta l4proto . th dport` → port id, for traffic to
//!   one of `node-ips` (the node's addresses, never loopback); such
//!   connections get [`MASQUERADE_MARK`] and leave masqueraded, so replies
//!   come back through this node.
//!
//! Not rendered yet: Local policies (NodePorts use the cluster endpoints),
//! affinity, source ranges, masquerade of off-cluster ClusterIP traffic and
//! hairpin, `rr`/`sh` schedulers.

use std::net::Ipv4Addr;

use ferry_netlink::nftables::{
    Chain, ChainType, CmpOp, DataType, Family, Hook, Load, Register, Rule, Ruleset, Set,
    SetElement, Table, Value, priority,
};

use crate::model::{Plan, Protocol};

/// The proxy's table.
pub const TABLE: &str = "ferry-proxy";
/// Buckets per service port in `backends`: 60 divides evenly by 1-6, 10,
/// 12, 15, 20 and 30 endpoints, so those counts get exactly equal shares.
pub const BUCKETS: u32 = 60;

fn key(ip: Ipv4Addr, protocol: Protocol, port: u16) -> Value {
    Value::new()
        .ipv4(ip)
        .inet_proto(protocol.number())
        .inet_service(port)
}

/// Mark bit for connections to masquerade (NodePort traffic, whose
/// replies must come back through this node).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The whole desired table for `plan`; `node_ips` are the addresses
/// NodePorts answer on (never loopback: CVE-2020-8558).
pub fn render(plan: &Plan, node_ips: &[Ipv4Addr]) -> Ruleset {
    let table = Table::new(Family::Ip, TABLE).comment("ferry proxy: Services");
    let key_type = [
        DataType::Ipv4Addr,
        DataType::InetProto,
        DataType::InetService,
    ];
    let ids = Set::map(&table, "service-ids", key_type, [DataType::Mark]);
    let backends = Set::map(
        &table,
        "backends",
        [DataType::Mark, DataType::Mark],
        [DataType::Ipv4Addr, DataType::InetService],
    );
    let no_endpoints = Set::new(&table, "no-endpoints", key_type);
    let node_ip_set = Set::new(&table, "node-ips", [DataType::Ipv4Addr]);
    let node_ports = Set::map(
        &table,
        "node-ports",
        [DataType::InetProto, DataType::InetService],
        [DataType::Mark],
    );
    let mut node_port_elements = Vec::new();

    let mut id_elements = Vec::new();
    let mut backend_elements = Vec::new();
    let mut reject_elements = Vec::new();
    for (id, (port, cat)) in (1u32..).zip(&plan.ports) {
        let addresses = port
            .cluster_ips
            .iter()
            .chain(&port.external_ips)
            .chain(&port.load_balancer_ips);
        if cat.cluster.is_empty() {
            for ip in addresses {
                reject_elements.push(SetElement::new(key(*ip, port.protocol, port.port)));
            }
            continue;
        }
        for ip in addresses {
            id_elements.push(
                SetElement::new(key(*ip, port.protocol, port.port)).data(Value::new().mark(id)),
            );
        }
        if let Some(np) = port.node_port {
            node_port_elements.push(
                SetElement::new(
                    Value::new()
                        .inet_proto(port.protocol.number())
                        .inet_service(np),
                )
                .data(Value::new().mark(id)),
            );
        }
        for bucket in 0..BUCKETS {
            let ep = &cat.cluster[bucket as usize % cat.cluster.len()];
            backend_elements.push(
                SetElement::new(Value::new().mark(id).mark(bucket))
                    .data(Value::new().ipv4(ep.ip).inet_service(ep.port)),
            );
        }
    }

    // id in slot 8, bucket in slot 9: the concatenated key of `backends`.
    let dnat = Rule::new()
        .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
        .lookup_map("service-ids", Register::R1, Register::r32(8))
        .numgen_random(BUCKETS, Register::r32(9))
        .lookup_map("backends", Register::r32(8), Register::R1)
        .dnat(Family::Ip, Register::R1, Some(Register::r32(1)))
        .comment("service port -> random backend bucket");
    let node_port = Rule::new()
        .payload_ip_daddr(Register::R2)
        .lookup("node-ips", Register::R2)
        .load_concat(Register::R1, &[Load::L4Proto, Load::ThDport])
        .lookup_map("node-ports", Register::R1, Register::r32(8))
        .numgen_random(BUCKETS, Register::r32(9))
        .or_mark(MASQUERADE_MARK)
        .lookup_map("backends", Register::r32(8), Register::R1)
        .dnat(Family::Ip, Register::R1, Some(Register::r32(1)))
        .comment("NodePort -> random backend bucket, masqueraded");
    let masquerade = Rule::new()
        .meta_mark(Register::R1)
        .bitwise(
            Register::R1,
            Register::R1,
            MASQUERADE_MARK.to_ne_bytes(),
            [0u8; 4],
        )
        .cmp(Register::R1, CmpOp::Neq, [0u8; 4])
        .masquerade()
        .comment("NodePort traffic leaves with this node's address");
    let reject = |tcp: bool| {
        let r = Rule::new()
            .load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport])
            .lookup("no-endpoints", Register::R1);
        if tcp {
            r.match_l4proto(6).reject_tcp_reset()
        } else {
            r.reject_icmp_port_unreachable()
        }
    };
    let mut ruleset = Ruleset::new(table.clone());
    ruleset
        .add_set(ids, id_elements)
        .add_set(backends, backend_elements)
        .add_set(no_endpoints, reject_elements)
        .add_set(
            node_ip_set,
            node_ips
                .iter()
                .filter(|ip| !ip.is_loopback())
                .map(|ip| SetElement::new(Value::new().ipv4(*ip)))
                .collect(),
        )
        .add_set(node_ports, node_port_elements);
    for (name, hook) in [
        ("nat-prerouting", Hook::Prerouting),
        ("nat-output", Hook::Output),
    ] {
        ruleset.add_chain(
            Chain::base(&table, name, ChainType::Nat, hook, priority::DSTNAT),
            vec![dnat.clone(), node_port.clone()],
        );
    }
    ruleset.add_chain(
        Chain::base(
            &table,
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
        ),
        vec![masquerade],
    );
    for (name, hook) in [
        ("filter-forward", Hook::Forward),
        ("filter-output", Hook::Output),
        ("filter-input", Hook::Input),
    ] {
        ruleset.add_chain(
            Chain::base(&table, name, ChainType::Filter, hook, priority::FILTER - 10),
            vec![reject(true), reject(false)],
        );
    }
    ruleset
}
