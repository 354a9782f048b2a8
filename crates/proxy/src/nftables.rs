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
//! Not rendered yet: NodePorts, Local policies, affinity, source ranges,
//! masquerade and hairpin, `rr`/`sh` schedulers.

use std::net::Ipv4Addr;

use ferry_netlink::nftables::{
    Chain, ChainType, DataType, Family, Hook, Load, Register, Rule, Ruleset, Set, SetElement,
    Table, Value, priority,
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

/// The whole desired table for `plan`.
pub fn render(plan: &Plan) -> Ruleset {
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
        .add_set(no_endpoints, reject_elements);
    for (name, hook) in [
        ("nat-prerouting", Hook::Prerouting),
        ("nat-output", Hook::Output),
    ] {
        ruleset.add_chain(
            Chain::base(&table, name, ChainType::Nat, hook, priority::DSTNAT),
            vec![dnat.clone()],
        );
    }
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
