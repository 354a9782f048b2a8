//! The nf_tables rendering of a [`Plan`]: table `ip ferry-proxy`.
//!
//! Shaped for cheap updates, as the measurements suggest: a
//! handful of global maps and rules, no chain per service or endpoint for
//! plain Services, so a change is a few map elements.
//!
//! A *backend set* is the endpoints one kind of traffic of one service
//! port may use on this node: the port's cluster endpoints, or its local
//! ones (`Local` traffic policies). Each gets a stable numeric id
//! ([`Ids`]).
//!
//! Maps and sets (K3 = `ip daddr . meta l4proto . th dport`, K2 =
//! `meta l4proto . th dport` on one of `node-ips`):
//! - `service-ids` (K3 → id) and `node-port-ids` (K2 → id): plain ports;
//!   one rule picks `numgen random mod BUCKETS` and DNATs to the element
//!   of `backends` (`id . bucket` → `addr . port`), a Maglev-like table
//!   filled round robin over the endpoints;
//! - `service-chains` / `node-port-chains` (K3/K2 → `goto svc-<id>`):
//!   ports with session affinity or another scheduler get a chain of
//!   their own (affinity map, `numgen inc`, `jhash ip saddr`);
//! - `drop` / `node-port-drop`: ports whose `Local` policy has no endpoint
//!   on this node (traffic is dropped, as kube-proxy does);
//! - `no-endpoints` / `node-port-no-endpoints`: ports with no usable
//!   endpoint anywhere: rejected in the filter hooks (TCP reset, else ICMP
//!   port unreachable), never black-holed; `cluster-ips` rejects unused
//!   ports of an active ClusterIP;
//! - masquerade by [`MASQUERADE_MARK`]: traffic from outside the cluster
//!   CIDR to a ClusterIP, and external traffic (`masq-external`,
//!   `masq-node-ports`) under `externalTrafficPolicy: Cluster`; hairpin
//!   (`hairpin`: `endpoint . endpoint`, a pod reaching itself) is
//!   masqueraded too;
//! - `firewall` and `firewall-allow`: load-balancer IPs with
//!   `loadBalancerSourceRanges` drop other sources.
//!
//! NodePorts answer on `node-ips`, the node's addresses, never on loopback
//! (CVE-2020-8558).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ferry_netlink::nftables::{
    Chain, ChainType, CmpOp, DataType, Family, Hook, Load, Register, Rule, Ruleset, Set,
    SetElement, SetFlags, Table, Value, Verdict, priority,
};

use crate::model::{Categorized, Cidr, Endpoint, Plan, Protocol, Scheduler, ServicePort};

/// The proxy's table.
pub const TABLE: &str = "ferry-proxy";
/// Buckets per backend set in `backends`: 60 divides evenly by 1-6, 10,
/// 12, 15, 20 and 30 endpoints, so those counts get exactly equal shares.
pub const BUCKETS: u32 = 60;
/// Mark bit for connections to masquerade (kube-proxy uses the same bit).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// Seed of the source-hash scheduler (fixed, so a restart keeps the
/// client → endpoint mapping).
const SOURCE_HASH_SEED: u32 = 0x6665_7272;

/// Which endpoints of a service port a backend set holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetKey {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    pub protocol: Protocol,
    /// This node's endpoints only (a `Local` policy).
    pub local: bool,
}

impl SetKey {
    fn of(port: &ServicePort, local: bool) -> SetKey {
        SetKey {
            namespace: port.namespace.clone(),
            name: port.name.clone(),
            port_name: port.port_name.clone(),
            protocol: port.protocol,
            local,
        }
    }
}

/// Stable ids of backend sets: a set keeps its id while it exists, so a
/// change to one Service touches only that Service's elements.
#[derive(Clone, Debug, Default)]
pub struct Ids {
    by_key: BTreeMap<SetKey, u32>,
    free: Vec<u32>,
    next: u32,
}

impl Ids {
    fn get(&mut self, key: &SetKey) -> u32 {
        if let Some(id) = self.by_key.get(key) {
            return *id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.by_key.insert(key.clone(), id);
        id
    }

    /// Frees the ids of sets not in `used`.
    fn retain(&mut self, used: &HashSet<SetKey>) {
        let free = &mut self.free;
        self.by_key.retain(|k, id| {
            let keep = used.contains(k);
            if !keep {
                free.push(*id);
            }
            keep
        });
    }

    /// The id of a backend set, if it has one.
    pub fn id(&self, key: &SetKey) -> Option<u32> {
        self.by_key.get(key).copied()
    }
}

/// What the node is and where the cluster is.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Addresses NodePorts answer on (loopback is never used).
    pub node_ips: Vec<Ipv4Addr>,
    /// Pod network: ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: Option<Cidr>,
}

/// Where one kind of traffic to a service port goes.
enum Target<'a> {
    Set {
        id: u32,
        endpoints: &'a [Endpoint],
    },
    /// Usable endpoints exist, none for this traffic on this node
    /// (`Local`): dropped, as kube-proxy does.
    Drop,
    /// No usable endpoint anywhere: rejected.
    Reject,
}

fn k3(ip: Ipv4Addr, protocol: Protocol, port: u16) -> Value {
    Value::new()
        .ipv4(ip)
        .inet_proto(protocol.number())
        .inet_service(port)
}

fn k2(protocol: Protocol, port: u16) -> Value {
    Value::new()
        .inet_proto(protocol.number())
        .inet_service(port)
}

fn special(port: &ServicePort) -> bool {
    port.affinity_seconds.is_some() || port.scheduler != Scheduler::Random
}

/// The name of a backend set's own chain (special ports only).
pub fn set_chain(id: u32) -> String {
    format!("svc-{id}")
}

fn affinity_map(id: u32) -> String {
    format!("affinity-{id}")
}

/// A special backend set's chain, its rules and its affinity map.
type SetChain = (Chain, Vec<Rule>, Option<Set>);

/// Set elements collected while walking the plan.
#[derive(Default)]
struct Elements {
    service_ids: Vec<SetElement>,
    service_chains: Vec<SetElement>,
    drop: Vec<SetElement>,
    no_endpoints: Vec<SetElement>,
    node_port_ids: Vec<SetElement>,
    node_port_chains: Vec<SetElement>,
    node_port_drop: Vec<SetElement>,
    node_port_no_endpoints: Vec<SetElement>,
    masq_external: Vec<SetElement>,
    masq_node_ports: Vec<SetElement>,
    firewall: Vec<SetElement>,
    firewall_allow: Vec<SetElement>,
    backends: Vec<SetElement>,
    affinity_endpoints: Vec<SetElement>,
    cluster_ips: BTreeSet<Ipv4Addr>,
    hairpin: BTreeSet<Ipv4Addr>,
    /// Keys already taken: a second Service claiming the same address and
    /// port (e.g. the same externalIP) is skipped instead of failing the
    /// whole batch.
    claimed3: HashSet<Value>,
    claimed2: HashSet<Value>,
}

impl Elements {
    fn dispatch3(&mut self, key: Value, target: &Target<'_>, special: bool) -> bool {
        if !self.claimed3.insert(key.clone()) {
            return false;
        }
        let element = SetElement::new(key);
        match target {
            Target::Set { id, .. } if special => self
                .service_chains
                .push(element.verdict(Verdict::Goto(set_chain(*id)))),
            Target::Set { id, .. } => self.service_ids.push(element.data(Value::new().mark(*id))),
            Target::Drop => self.drop.push(element),
            Target::Reject => self.no_endpoints.push(element),
        }
        true
    }

    fn dispatch2(&mut self, key: Value, target: &Target<'_>, special: bool) -> bool {
        if !self.claimed2.insert(key.clone()) {
            return false;
        }
        let element = SetElement::new(key);
        match target {
            Target::Set { id, .. } if special => self
                .node_port_chains
                .push(element.verdict(Verdict::Goto(set_chain(*id)))),
            Target::Set { id, .. } => self
                .node_port_ids
                .push(element.data(Value::new().mark(*id))),
            Target::Drop => self.node_port_drop.push(element),
            Target::Reject => self.node_port_no_endpoints.push(element),
        }
        true
    }
}

/// The whole desired table for `plan`. `ids` carries backend-set ids from
/// one sync to the next.
pub fn render(plan: &Plan, ids: &mut Ids, options: &Options) -> Ruleset {
    let table = Table::new(Family::Ip, TABLE).comment("ferry proxy: Services");
    let mut el = Elements::default();
    let mut used = HashSet::new();
    // Backend sets already emitted, with their chains when special.
    let mut emitted: BTreeMap<u32, Option<SetChain>> = BTreeMap::new();

    for (port, cat) in &plan.ports {
        let Categorized {
            cluster,
            local,
            has_any,
        } = cat;
        let mut target = |local_policy: bool| -> Target<'_> {
            let endpoints = if local_policy { local } else { cluster };
            if !endpoints.is_empty() {
                let key = SetKey::of(port, local_policy);
                let id = ids.get(&key);
                used.insert(key);
                Target::Set { id, endpoints }
            } else if *has_any {
                Target::Drop
            } else {
                Target::Reject
            }
        };
        let internal = target(port.internal_local);
        let external = target(port.external_local && port.has_external());
        let special = special(port);
        let policies = [
            port.internal_local,
            port.external_local && port.has_external(),
        ];
        for (t, local) in [&internal, &external].into_iter().zip(policies) {
            if let Target::Set { id, endpoints } = t {
                emitted
                    .entry(*id)
                    .or_insert_with(|| emit_set(&mut el, port, *id, local, endpoints, &table));
            }
        }

        for ip in &port.cluster_ips {
            el.cluster_ips.insert(*ip);
            el.dispatch3(k3(*ip, port.protocol, port.port), &internal, special);
        }
        let masquerade_external = !port.external_local;
        for ip in port.external_ips.iter().chain(&port.load_balancer_ips) {
            let key = k3(*ip, port.protocol, port.port);
            if el.dispatch3(key.clone(), &external, special)
                && masquerade_external
                && matches!(external, Target::Set { .. })
            {
                el.masq_external.push(SetElement::new(key));
            }
        }
        if !port.source_ranges.is_empty() {
            for ip in &port.load_balancer_ips {
                let key = k3(*ip, port.protocol, port.port);
                el.firewall.push(SetElement::new(key.clone()));
                for range in &port.source_ranges {
                    let (first, last) = range.bounds();
                    el.firewall_allow.push(
                        SetElement::new(key.clone().ipv4(first)).range_end(key.clone().ipv4(last)),
                    );
                }
            }
        }
        if let Some(node_port) = port.node_port {
            let key = k2(port.protocol, node_port);
            if el.dispatch2(key.clone(), &external, special)
                && masquerade_external
                && matches!(external, Target::Set { .. })
            {
                el.masq_node_ports.push(SetElement::new(key));
            }
        }
    }
    ids.retain(&used);
    finish(table, el, emitted, options)
}

/// Backend elements of one set, and its own chain when the port needs one.
fn emit_set(
    el: &mut Elements,
    port: &ServicePort,
    id: u32,
    local: bool,
    endpoints: &[Endpoint],
    table: &Table,
) -> Option<SetChain> {
    for bucket in 0..BUCKETS {
        let ep = &endpoints[bucket as usize % endpoints.len()];
        el.backends.push(
            SetElement::new(Value::new().mark(id).mark(bucket))
                .data(Value::new().ipv4(ep.ip).inet_service(ep.port)),
        );
    }
    for ep in endpoints {
        el.hairpin.insert(ep.ip);
    }
    if !special(port) {
        return None;
    }
    let what = format!(
        "{}/{}:{}/{} {} endpoints",
        port.namespace,
        port.name,
        port.port,
        port.protocol.name(),
        if local { "local" } else { "cluster" },
    );
    let chain = Chain::new(table, set_chain(id)).comment(what);
    let mut rules = Vec::new();
    let mut affinity_set = None;
    let id_bytes = Value::new().mark(id);
    // Bucket into slot 9, then `backends[id . bucket]` into slots 0-1.
    let pick = Rule::new();
    let pick = match port.scheduler {
        Scheduler::Random => pick.numgen_random(BUCKETS, Register::r32(9)),
        // Buckets 0..n hold endpoints 0..n in order.
        Scheduler::RoundRobin => pick.numgen_inc(endpoints.len() as u32, Register::r32(9)),
        Scheduler::SourceHash => pick.payload_ip_saddr(Register::R1).jhash(
            Register::R1,
            4,
            BUCKETS,
            SOURCE_HASH_SEED,
            Register::r32(9),
        ),
    }
    .immediate(Register::r32(8), id_bytes.as_bytes().to_vec())
    .lookup_map("backends", Register::r32(8), Register::R1);
    let pick = if let Some(seconds) = port.affinity_seconds {
        let timeout = Duration::from_secs(u64::from(seconds.max(1)));
        let map = affinity_map(id);
        affinity_set = Some(
            Set::map(
                table,
                map.clone(),
                [DataType::Ipv4Addr],
                [DataType::Ipv4Addr, DataType::InetService],
            )
            .flags(SetFlags::DYNAMIC | SetFlags::TIMEOUT)
            .timeout(timeout)
            .comment("sessionAffinity: ClientIP"),
        );
        for ep in endpoints {
            el.affinity_endpoints.push(SetElement::new(
                Value::new().mark(id).ipv4(ep.ip).inet_service(ep.port),
            ));
        }
        // A client seen before goes to its endpoint again if that endpoint
        // is still in the set; each use refreshes the timeout.
        rules.push(
            Rule::new()
                .payload_ip_saddr(Register::r32(12))
                .lookup_map(map.clone(), Register::r32(12), Register::r32(9))
                .immediate(Register::r32(8), id_bytes.as_bytes().to_vec())
                .lookup("affinity-endpoints", Register::r32(8))
                .dynset_update(
                    map.clone(),
                    Register::r32(12),
                    Some(Register::r32(9)),
                    Some(timeout),
                )
                .dnat(Family::Ip, Register::r32(9), Some(Register::r32(10)))
                .comment("sessionAffinity: the client's endpoint"),
        );
        pick.payload_ip_saddr(Register::r32(12)).dynset_update(
            map,
            Register::r32(12),
            Some(Register::R1),
            Some(timeout),
        )
    } else {
        pick
    };
    rules.push(
        pick.dnat(Family::Ip, Register::R1, Some(Register::r32(1)))
            .comment(match port.scheduler {
                Scheduler::Random => "random endpoint",
                Scheduler::RoundRobin => "round robin (numgen inc)",
                Scheduler::SourceHash => "source hash (jhash ip saddr)",
            }),
    );
    Some((chain, rules, affinity_set))
}

fn finish(
    table: Table,
    el: Elements,
    emitted: BTreeMap<u32, Option<SetChain>>,
    options: &Options,
) -> Ruleset {
    use DataType::{InetProto, InetService, Ipv4Addr as Addr, Mark};
    let k3_type = [Addr, InetProto, InetService];
    let k2_type = [InetProto, InetService];
    let mut ruleset = Ruleset::new(table.clone());
    let set = |name: &str, key: &[DataType]| Set::new(&table, name, key.to_vec());
    let map = |name: &str, key: &[DataType], value: &[DataType]| {
        Set::map(&table, name, key.to_vec(), value.to_vec())
    };
    let vmap = |name: &str, key: &[DataType]| Set::verdict_map(&table, name, key.to_vec());
    let addresses = |ips: &BTreeSet<Ipv4Addr>| {
        ips.iter()
            .map(|ip| SetElement::new(Value::new().ipv4(*ip)))
            .collect::<Vec<_>>()
    };
    let node_ips: BTreeSet<Ipv4Addr> = options
        .node_ips
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .collect();
    let hairpin = el
        .hairpin
        .iter()
        .map(|ip| SetElement::new(Value::new().ipv4(*ip).ipv4(*ip)))
        .collect();

    // Chains first in the ruleset only for readability; the diff orders
    // the batch by dependency.
    let mut special_chains = Vec::new();
    ruleset
        .add_set(
            map("backends", &[Mark, Mark], &[Addr, InetService]),
            el.backends,
        )
        .add_set(
            set("affinity-endpoints", &[Mark, Addr, InetService]),
            el.affinity_endpoints,
        );
    for (chain, rules, affinity) in emitted.into_values().flatten() {
        if let Some(a) = affinity {
            ruleset.add_set(a, Vec::new());
        }
        special_chains.push((chain, rules));
    }
    for (chain, rules) in special_chains {
        ruleset.add_chain(chain, rules);
    }
    ruleset
        .add_set(map("service-ids", &k3_type, &[Mark]), el.service_ids)
        .add_set(vmap("service-chains", &k3_type), el.service_chains)
        .add_set(set("drop", &k3_type), el.drop)
        .add_set(set("no-endpoints", &k3_type), el.no_endpoints)
        .add_set(map("node-port-ids", &k2_type, &[Mark]), el.node_port_ids)
        .add_set(vmap("node-port-chains", &k2_type), el.node_port_chains)
        .add_set(set("node-port-drop", &k2_type), el.node_port_drop)
        .add_set(
            set("node-port-no-endpoints", &k2_type),
            el.node_port_no_endpoints,
        )
        .add_set(set("masq-external", &k3_type), el.masq_external)
        .add_set(set("masq-node-ports", &k2_type), el.masq_node_ports)
        .add_set(set("firewall", &k3_type), el.firewall)
        .add_set(
            set("firewall-allow", &[Addr, InetProto, InetService, Addr])
                .flags(SetFlags::INTERVAL)
                .comment("loadBalancerSourceRanges"),
            el.firewall_allow,
        )
        .add_set(set("cluster-ips", &[Addr]), addresses(&el.cluster_ips))
        .add_set(set("node-ips", &[Addr]), addresses(&node_ips))
        .add_set(set("hairpin", &[Addr, Addr]), hairpin);

    let k3_load =
        |r: Rule| r.load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport]);
    let k2_load = |r: Rule| {
        r.payload_ip_daddr(Register::R2)
            .lookup("node-ips", Register::R2)
            .load_concat(Register::R1, &[Load::L4Proto, Load::ThDport])
    };
    let to_bucket = |r: Rule, ids: &str| {
        r.lookup_map(ids, Register::R1, Register::r32(8))
            .numgen_random(BUCKETS, Register::r32(9))
            .lookup_map("backends", Register::r32(8), Register::R1)
            .dnat(Family::Ip, Register::R1, Some(Register::r32(1)))
    };
    let mut services = Vec::new();
    if let Some(cidr) = options.cluster_cidr {
        let mask = cidr.mask();
        services.push(
            Rule::new()
                .payload_ip_daddr(Register::R1)
                .lookup("cluster-ips", Register::R1)
                .payload_ip_saddr(Register::R2)
                .bitwise(Register::R2, Register::R2, mask.octets(), [0u8; 4])
                .cmp(Register::R2, CmpOp::Neq, cidr.network.octets())
                .or_mark(MASQUERADE_MARK)
                .comment("ClusterIP traffic from outside the cluster CIDR is masqueraded"),
        );
    }
    services.extend([
        k3_load(Rule::new())
            .lookup("masq-external", Register::R1)
            .or_mark(MASQUERADE_MARK)
            .comment("externalTrafficPolicy: Cluster is masqueraded"),
        k2_load(Rule::new())
            .lookup("masq-node-ports", Register::R1)
            .or_mark(MASQUERADE_MARK)
            .comment("NodePort under externalTrafficPolicy: Cluster is masqueraded"),
        Rule::new()
            .load_concat(
                Register::R1,
                &[Load::IpDaddr, Load::L4Proto, Load::ThDport, Load::IpSaddr],
            )
            .lookup("firewall", Register::R1)
            .lookup_not("firewall-allow", Register::R1)
            .drop()
            .comment("loadBalancerSourceRanges"),
        k3_load(Rule::new())
            .lookup_vmap("service-chains", Register::R1)
            .comment("service ports with affinity or a scheduler"),
        to_bucket(k3_load(Rule::new()), "service-ids")
            .comment("service port -> random backend bucket"),
        k2_load(Rule::new())
            .lookup_vmap("node-port-chains", Register::R1)
            .comment("NodePorts with affinity or a scheduler"),
        to_bucket(k2_load(Rule::new()), "node-port-ids")
            .comment("NodePort -> random backend bucket"),
        k3_load(Rule::new())
            .lookup("drop", Register::R1)
            .drop()
            .comment("Local policy without a local endpoint"),
        k2_load(Rule::new())
            .lookup("node-port-drop", Register::R1)
            .drop()
            .comment("Local NodePort without a local endpoint"),
    ]);
    ruleset.add_chain(
        Chain::new(&table, "services").comment("Services: DNAT to an endpoint"),
        services,
    );
    for (name, hook) in [
        ("nat-prerouting", Hook::Prerouting),
        ("nat-output", Hook::Output),
    ] {
        ruleset.add_chain(
            Chain::base(&table, name, ChainType::Nat, hook, priority::DSTNAT),
            vec![Rule::new().jump("services")],
        );
    }
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
        .comment("marked traffic leaves with this node's address");
    let hairpin = Rule::new()
        .load_concat(Register::R1, &[Load::IpSaddr, Load::IpDaddr])
        .lookup("hairpin", Register::R1)
        .masquerade()
        .comment("hairpin: an endpoint reaching itself through its Service");
    ruleset.add_chain(
        Chain::base(
            &table,
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
        ),
        vec![masquerade, hairpin],
    );

    let reject = |r: Rule| {
        [
            r.clone().match_l4proto(6).reject_tcp_reset(),
            r.reject_icmp_port_unreachable(),
        ]
    };
    let mut filter = Vec::new();
    filter.extend(reject(
        k3_load(Rule::new())
            .lookup("no-endpoints", Register::R1)
            .comment("service port without endpoints"),
    ));
    filter.extend(reject(
        k2_load(Rule::new())
            .lookup("node-port-no-endpoints", Register::R1)
            .comment("NodePort without endpoints"),
    ));
    filter.extend(reject(
        Rule::new()
            .payload_ip_daddr(Register::R1)
            .lookup("cluster-ips", Register::R1)
            .comment("unused port of a ClusterIP"),
    ));
    ruleset.add_chain(
        Chain::new(&table, "reject").comment("refuse, never black-hole"),
        filter,
    );
    for (name, hook) in [
        ("filter-forward", Hook::Forward),
        ("filter-output", Hook::Output),
        ("filter-input", Hook::Input),
    ] {
        ruleset.add_chain(
            Chain::base(&table, name, ChainType::Filter, hook, priority::FILTER - 10),
            vec![Rule::new().jump("reject")],
        );
    }
    ruleset
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::plan;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn svc(name: &str, ip: &str, extra: serde_json::Value) -> Service {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                spec.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).expect("service")
    }

    fn slice(service: &str, eps: &[(&str, &str)]) -> EndpointSlice {
        let endpoints: Vec<_> = eps
            .iter()
            .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn elements<'a>(r: &'a Ruleset, set: &str) -> &'a [SetElement] {
        &r.sets
            .iter()
            .find(|s| s.set.name == set)
            .unwrap_or_else(|| panic!("no set {set}"))
            .elements
    }

    fn options() -> Options {
        Options {
            node_ips: vec![Ipv4Addr::new(172, 30, 0, 11), Ipv4Addr::LOCALHOST],
            cluster_cidr: Cidr::parse("10.244.0.0/16"),
        }
    }

    #[test]
    fn plain_services_are_map_elements_only() {
        let web = svc("web", "10.96.0.20", json!({"type": "NodePort"}));
        let s = slice("web", &[("10.244.1.5", "n1"), ("10.244.2.5", "n2")]);
        let p = plan(&[&web], &[&s], "n1");
        let r = render(&p, &mut Ids::default(), &options());
        assert_eq!(elements(&r, "service-ids").len(), 1);
        assert_eq!(elements(&r, "node-port-ids").len(), 1);
        assert_eq!(elements(&r, "backends").len(), BUCKETS as usize);
        assert_eq!(elements(&r, "masq-node-ports").len(), 1, "Cluster policy");
        assert_eq!(elements(&r, "hairpin").len(), 2);
        assert_eq!(
            elements(&r, "node-ips").len(),
            1,
            "loopback never answers NodePorts"
        );
        assert!(!r.chains.iter().any(|c| c.chain.name.starts_with("svc-")));
    }

    #[test]
    fn missing_endpoints_reject_and_missing_local_ones_drop() {
        let none = svc(
            "none",
            "10.96.0.21",
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        );
        let local = svc(
            "local",
            "10.96.0.22",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
        );
        let s = slice("local", &[("10.244.2.5", "n2")]);
        let p = plan(&[&none, &local], &[&s], "n1");
        let r = render(&p, &mut Ids::default(), &options());
        assert_eq!(elements(&r, "no-endpoints").len(), 1);
        assert_eq!(elements(&r, "node-port-no-endpoints").len(), 1);
        // ClusterIP of `local` uses the cluster endpoints; its NodePort
        // has no endpoint on n1 and is dropped there.
        assert_eq!(elements(&r, "service-ids").len(), 1);
        assert_eq!(elements(&r, "node-port-drop").len(), 1);
        assert!(
            elements(&r, "masq-node-ports").is_empty(),
            "Local keeps the client IP"
        );
        // On n2 the NodePort goes to the local endpoint.
        let p = plan(&[&none, &local], &[&s], "n2");
        let r = render(&p, &mut Ids::default(), &options());
        assert_eq!(elements(&r, "node-port-ids").len(), 1);
        assert!(elements(&r, "node-port-drop").is_empty());
    }

    #[test]
    fn affinity_and_schedulers_get_their_own_chain() {
        let mut sticky = svc(
            "sticky",
            "10.96.0.23",
            json!({"sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
        );
        sticky.metadata.annotations = None;
        let mut rr = svc("rr", "10.96.0.24", json!({}));
        rr.metadata.annotations = Some(
            [(
                crate::model::SCHEDULER_ANNOTATION.to_string(),
                "rr".to_string(),
            )]
            .into(),
        );
        let slices = [
            slice("sticky", &[("10.244.1.5", "n1"), ("10.244.1.6", "n1")]),
            slice(
                "rr",
                &[
                    ("10.244.1.7", "n1"),
                    ("10.244.1.8", "n1"),
                    ("10.244.1.9", "n1"),
                ],
            ),
        ];
        let p = plan(&[&sticky, &rr], &slices.iter().collect::<Vec<_>>(), "n1");
        let r = render(&p, &mut Ids::default(), &options());
        assert_eq!(elements(&r, "service-chains").len(), 2);
        assert!(elements(&r, "service-ids").is_empty());
        let affinity = r
            .sets
            .iter()
            .find(|s| s.set.name.starts_with("affinity-") && s.set.name != "affinity-endpoints")
            .expect("affinity map");
        assert_eq!(affinity.set.timeout, Some(Duration::from_secs(60)));
        assert!(affinity.set.flags.contains(SetFlags::DYNAMIC));
        assert_eq!(elements(&r, "affinity-endpoints").len(), 2);
        let chains: Vec<&str> = r
            .chains
            .iter()
            .filter(|c| c.chain.name.starts_with("svc-"))
            .map(|c| c.chain.name.as_str())
            .collect();
        assert_eq!(chains.len(), 2);
    }

    #[test]
    fn source_ranges_and_masquerade_sets() {
        let mut lb = svc(
            "lb",
            "10.96.0.25",
            json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["192.0.2.0/24", "198.51.100.7/32"],
                   "externalIPs": ["203.0.113.9"]}),
        );
        lb.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "172.30.1.1"}]}}))
                .expect("status");
        let s = slice("lb", &[("10.244.1.5", "n1")]);
        let p = plan(&[&lb], &[&s], "n1");
        let r = render(&p, &mut Ids::default(), &options());
        assert_eq!(elements(&r, "firewall").len(), 1, "the LB IP only");
        let allow = elements(&r, "firewall-allow");
        assert_eq!(allow.len(), 2);
        let first = &allow[0];
        assert_eq!(
            first.key.as_bytes()[7..],
            [192, 0, 2, 0],
            "range starts at the network"
        );
        assert_eq!(
            first.key_end.as_ref().expect("range").as_bytes()[7..],
            [192, 0, 2, 255]
        );
        assert_eq!(
            elements(&r, "masq-external").len(),
            2,
            "external IP and LB IP"
        );
        assert_eq!(elements(&r, "service-ids").len(), 3);
    }

    #[test]
    fn ids_are_stable_and_claims_unique() {
        let b = svc("b", "10.96.0.30", json!({"externalIPs": ["203.0.113.9"]}));
        let c = svc("c", "10.96.0.31", json!({"externalIPs": ["203.0.113.9"]}));
        let slices = [
            slice("b", &[("10.244.1.5", "n1")]),
            slice("c", &[("10.244.1.6", "n1")]),
        ];
        let refs: Vec<&EndpointSlice> = slices.iter().collect();
        let mut ids = Ids::default();
        let r = render(&plan(&[&b, &c], &refs, "n1"), &mut ids, &options());
        // Two ClusterIPs and one external IP: the second claim is skipped.
        assert_eq!(elements(&r, "service-ids").len(), 3);
        let key_b = SetKey {
            namespace: "default".into(),
            name: "b".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            local: false,
        };
        let id_b = ids.id(&key_b).expect("b has an id");
        // A Service sorting before `b` appears: b keeps its id.
        let a = svc("a", "10.96.0.29", json!({}));
        let a_slice = slice("a", &[("10.244.1.4", "n1")]);
        let mut refs2 = refs.clone();
        refs2.push(&a_slice);
        render(&plan(&[&a, &b, &c], &refs2, "n1"), &mut ids, &options());
        assert_eq!(ids.id(&key_b), Some(id_b));
        // b goes away: its id is freed and reused.
        render(&plan(&[&a, &c], &refs2, "n1"), &mut ids, &options());
        assert_eq!(ids.id(&key_b), None);
        let d = svc("d", "10.96.0.32", json!({}));
        let d_slice = slice("d", &[("10.244.1.3", "n1")]);
        refs2.push(&d_slice);
        render(&plan(&[&a, &c, &d], &refs2, "n1"), &mut ids, &options());
        let key_d = SetKey {
            name: "d".into(),
            ..key_b
        };
        assert_eq!(ids.id(&key_d), Some(id_b));
    }
}
