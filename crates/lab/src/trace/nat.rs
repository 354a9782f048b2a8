//! What the live NAT tables of a node do with one new connection: the
//! service proxy's `ip ferry-proxy` (DNAT to an endpoint, masquerade
//! marks, drops and rejects) and the overlay's `ip ferry-overlay`
//! (masquerade of pod traffic leaving the cluster).
//!
//! Pure: a listed [`Ruleset`] and a [`Packet`] in, a decision out, each
//! naming the set element, chain or rule (by its comment) it came from. The
//! evaluation follows the order of the `services` chain that
//! `ferry_proxy::nftables` renders; the unit tests check it against that
//! renderer's own output.

use std::net::Ipv4Addr;

use ferry_netlink::nftables::{
    DataType, ElementData, Expr, Rule, Ruleset, SetElement, Value, Verdict,
};
use ferry_proxy::model::Cidr;
use ferry_proxy::nftables::{BUCKETS, MASQUERADE_MARK, mark_at};

/// The first packet of a connection, as a NAT hook sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
    pub dport: u16,
}

/// One element of `backends`: slot `slot` of a backend set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub slot: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// A dispatch map hit: the packet is DNATed to one of `backends`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The map that matched (`service-ids`, `node-port-chains`, ...).
    pub map: &'static str,
    /// The element, in nft's syntax.
    pub element: String,
    /// The backend-set id.
    pub id: u32,
    /// The set's own chain (`svc-<id>`: affinity or another scheduler).
    pub chain: Option<String>,
    /// How the endpoint is picked: the comments of the rules that pick.
    pub pick: Vec<String>,
    /// The comment of the `services` rule that dispatched.
    pub rule: String,
    /// Every endpoint of the set, by slot (a `wrr` set repeats them).
    pub backends: Vec<Backend>,
    /// The endpoint session affinity pins this client to right now.
    pub pinned: Option<(Ipv4Addr, u16)>,
}

impl Dispatch {
    /// The distinct endpoints, in slot order.
    pub fn endpoints(&self) -> Vec<(Ipv4Addr, u16)> {
        let mut out: Vec<(Ipv4Addr, u16)> = Vec::new();
        for b in &self.backends {
            if !out.contains(&(b.ip, b.port)) {
                out.push((b.ip, b.port));
            }
        }
        out
    }
}

/// What the `services` chain (and the `reject` chain of the filter hooks)
/// does with a new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict2 {
    /// No element for this destination: the packet goes on unchanged.
    NoMatch,
    Dnat(Dispatch),
    /// Dropped: a set element (`drop`, `node-port-drop`, `firewall`).
    Drop {
        set: &'static str,
        element: String,
        rule: String,
    },
    /// Refused (TCP reset or ICMP port unreachable) in the filter hooks.
    Reject {
        set: &'static str,
        element: String,
        rule: String,
    },
}

/// The `services` chain's verdict plus the masquerade marks it set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDecision {
    pub verdict: Verdict2,
    /// Why the connection carries [`MASQUERADE_MARK`]: set element and rule.
    pub marks: Vec<String>,
}

/// Whether and why a connection is masqueraded in postrouting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masquerade {
    pub masquerade: bool,
    /// The rules (and elements) that decided, in the order they ran.
    pub reasons: Vec<String>,
}

const K3: [DataType; 3] = [
    DataType::Ipv4Addr,
    DataType::InetProto,
    DataType::InetService,
];
const K2: [DataType; 2] = [DataType::InetProto, DataType::InetService];

fn k3(p: &Packet) -> Value {
    Value::new()
        .ipv4(p.dst)
        .inet_proto(p.protocol)
        .inet_service(p.dport)
}

fn k2(p: &Packet) -> Value {
    Value::new().inet_proto(p.protocol).inet_service(p.dport)
}

fn find<'a>(live: &'a Ruleset, set: &str, key: &Value) -> Option<&'a SetElement> {
    live.elements(set).iter().find(|e| &e.key == key)
}

/// The comment of the first rule of `chain` that looks `set` up.
fn rule_using(live: &Ruleset, chain: &str, set: &str) -> String {
    live.chains
        .iter()
        .filter(|c| c.chain.name == chain)
        .flat_map(|c| &c.rules)
        .find(|r| uses(r, set))
        .and_then(|r| r.comment.clone())
        .unwrap_or_else(|| format!("lookup @{set}"))
}

fn uses(rule: &Rule, set: &str) -> bool {
    rule.exprs
        .iter()
        .any(|e| matches!(e, Expr::Lookup { set: s, .. } if s == set))
}

/// `{ key }` or `{ key : data }` in nft's syntax, ids and counts as decimals.
fn show(e: &SetElement, key: &[DataType]) -> String {
    let data = match &e.data {
        Some(ElementData::Value(v)) => match (mark_at(v, 0), mark_at(v, 1)) {
            (Some(a), Some(b)) if v.as_bytes().len() == 8 => format!(" : {a} . {b}"),
            _ => format!(
                " : {}",
                v.format(&[DataType::Ipv4Addr, DataType::InetService])
            ),
        },
        Some(ElementData::Verdict(v)) => format!(" : {v}"),
        None => String::new(),
    };
    format!("{{ {}{data} }}", e.key.format(key))
}

fn ip_port(v: &Value) -> Option<(Ipv4Addr, u16)> {
    let b = v.as_bytes();
    let ip = Ipv4Addr::from(<[u8; 4]>::try_from(b.get(0..4)?).ok()?);
    let port = u16::from_be_bytes(b.get(4..6)?.try_into().ok()?);
    Some((ip, port))
}

/// The prefix a rule compares a masked address with (`ip saddr &
/// <mask> == <network>`), as the proxy and overlay tables test "from a
/// pod": read back from the live rule, so no flag has to repeat it.
fn prefix_in(rule: &Rule) -> Option<Cidr> {
    let mut mask = None;
    for e in &rule.exprs {
        match e {
            Expr::Bitwise { mask: m, .. } if m.len() == 4 => {
                mask = Some(u32::from_be_bytes(m.as_slice().try_into().ok()?));
            }
            Expr::Cmp { data, .. } if data.len() == 4 => {
                if let Some(mask) = mask {
                    let net = Ipv4Addr::from(<[u8; 4]>::try_from(data.as_slice()).ok()?);
                    return Some(Cidr {
                        network: net,
                        prefix_len: mask.count_ones() as u8,
                    });
                }
            }
            _ => {}
        }
    }
    None
}

/// The cluster CIDR the proxy table tests sources against (from its
/// "ClusterIP traffic from outside the cluster CIDR" rule), if any.
pub fn proxy_cluster_cidr(live: &Ruleset) -> Option<Cidr> {
    live.chains
        .iter()
        .filter(|c| c.chain.name == "services")
        .flat_map(|c| &c.rules)
        .find(|r| uses(r, "cluster-ips"))
        .and_then(prefix_in)
}

fn in_node_ips(live: &Ruleset, ip: Ipv4Addr) -> bool {
    find(live, "node-ips", &Value::new().ipv4(ip)).is_some()
}

/// Runs a new connection through the proxy table: the `services` chain
/// (hooked at nat prerouting and output), then, if nothing DNATed it, the
/// `reject` chain (filter hooks).
pub fn services(live: &Ruleset, p: &Packet) -> ServiceDecision {
    let cidr = proxy_cluster_cidr(live);
    let from_pod = cidr.is_some_and(|c| c.contains(p.src));
    let key3 = k3(p);
    let key2 = k2(p);
    let node_port = in_node_ips(live, p.dst);
    let mut marks = Vec::new();
    // 1. Masquerade marks.
    if let Some(c) = cidr
        && !from_pod
        && find(live, "cluster-ips", &Value::new().ipv4(p.dst)).is_some()
    {
        marks.push(format!(
            "set cluster-ips {{ {} }}, source outside {}/{}: rule \"{}\"",
            p.dst,
            c.network,
            c.prefix_len,
            rule_using(live, "services", "cluster-ips")
        ));
    }
    if let Some(e) = find(live, "masq-external", &key3) {
        marks.push(format!(
            "set masq-external {}: rule \"{}\"",
            show(e, &K3),
            rule_using(live, "services", "masq-external")
        ));
    }
    if node_port && let Some(e) = find(live, "masq-node-ports", &key2) {
        marks.push(format!(
            "set masq-node-ports {} (destination in set node-ips): rule \"{}\"",
            show(e, &K2),
            rule_using(live, "services", "masq-node-ports")
        ));
    }
    // 2. loadBalancerSourceRanges.
    if let Some(e) = find(live, "firewall", &key3) {
        let with_src = key3.clone().ipv4(p.src);
        let allowed = live.elements("firewall-allow").iter().any(|a| {
            let end = a.key_end.as_ref().unwrap_or(&a.key);
            a.key.as_bytes() <= with_src.as_bytes() && with_src.as_bytes() <= end.as_bytes()
        });
        if !allowed {
            return ServiceDecision {
                verdict: Verdict2::Drop {
                    set: "firewall",
                    element: show(e, &K3),
                    rule: rule_using(live, "services", "firewall"),
                },
                marks,
            };
        }
    }
    // 3. Dispatch, in the chain's order.
    let mut candidates: Vec<(&'static str, &Value, bool)> = Vec::new();
    if from_pod {
        candidates.push(("pod-external-chains", &key3, true));
        candidates.push(("pod-external-ids", &key3, true));
    }
    candidates.push(("service-chains", &key3, true));
    candidates.push(("service-ids", &key3, true));
    candidates.push(("node-port-chains", &key2, node_port));
    candidates.push(("node-port-ids", &key2, node_port));
    for (map, key, applies) in candidates {
        if !applies {
            continue;
        }
        let Some(e) = find(live, map, key) else {
            continue;
        };
        let fields: &[DataType] = if key.as_bytes().len() == 3 { &K2 } else { &K3 };
        if let Some(d) = dispatch(live, map, e, fields, p) {
            return ServiceDecision {
                verdict: Verdict2::Dnat(d),
                marks,
            };
        }
    }
    for (set, key, fields, applies) in [
        ("drop", &key3, &K3[..], true),
        ("node-port-drop", &key2, &K2[..], node_port),
    ] {
        if applies && let Some(e) = find(live, set, key) {
            return ServiceDecision {
                verdict: Verdict2::Drop {
                    set,
                    element: show(e, fields),
                    rule: rule_using(live, "services", set),
                },
                marks,
            };
        }
    }
    // 4. Not DNATed: the filter hooks' `reject` chain.
    for (set, key, fields, applies) in [
        ("no-endpoints", key3.clone(), &K3[..], true),
        ("node-port-no-endpoints", key2.clone(), &K2[..], node_port),
        (
            "cluster-ips",
            Value::new().ipv4(p.dst),
            &[DataType::Ipv4Addr][..],
            true,
        ),
    ] {
        if applies && let Some(e) = find(live, set, &key) {
            return ServiceDecision {
                verdict: Verdict2::Reject {
                    set,
                    element: show(e, fields),
                    rule: rule_using(live, "reject", set),
                },
                marks,
            };
        }
    }
    ServiceDecision {
        verdict: Verdict2::NoMatch,
        marks,
    }
}

fn dispatch(
    live: &Ruleset,
    map: &'static str,
    e: &SetElement,
    fields: &[DataType],
    p: &Packet,
) -> Option<Dispatch> {
    let (id, chain) = match &e.data {
        Some(ElementData::Value(v)) => (mark_at(v, 0)?, None),
        Some(ElementData::Verdict(Verdict::Goto(c) | Verdict::Jump(c))) => {
            (c.strip_prefix("svc-")?.parse().ok()?, Some(c.clone()))
        }
        _ => return None,
    };
    let mut backends: Vec<Backend> = live
        .elements("backends")
        .iter()
        .filter(|b| mark_at(&b.key, 0) == Some(id))
        .filter_map(|b| {
            let slot = mark_at(&b.key, 1)?;
            let Some(ElementData::Value(v)) = &b.data else {
                return None;
            };
            let (ip, port) = ip_port(v)?;
            Some(Backend { slot, ip, port })
        })
        .collect();
    backends.sort_by_key(|b| b.slot);
    let pick = match &chain {
        Some(c) => live
            .chains
            .iter()
            .filter(|x| &x.chain.name == c)
            .flat_map(|x| &x.rules)
            .filter_map(|r| r.comment.clone())
            .collect(),
        None => vec![format!(
            "numgen random mod {BUCKETS}, folded onto the endpoints by map reduce"
        )],
    };
    let pinned = live
        .elements(&format!("affinity-{id}"))
        .iter()
        .find(|a| a.key == Value::new().ipv4(p.src))
        .and_then(|a| match &a.data {
            Some(ElementData::Value(v)) => ip_port(v),
            _ => None,
        });
    Some(Dispatch {
        map,
        element: show(e, fields),
        id,
        chain,
        pick,
        rule: rule_using(live, "services", map),
        backends,
        pinned,
    })
}

/// Postrouting: the proxy's `nat-postrouting` (the mark, hairpin) and the
/// overlay's `postrouting` (pod traffic leaving the cluster). `p` is the
/// packet after DNAT; `marked` whether the `services` chain marked it.
pub fn masquerade(
    proxy: Option<&Ruleset>,
    overlay: Option<&Ruleset>,
    p: &Packet,
    marked: bool,
) -> Masquerade {
    let mut reasons = Vec::new();
    if let Some(live) = proxy {
        let masq_rule = live
            .chains
            .iter()
            .filter(|c| c.chain.name == "nat-postrouting")
            .flat_map(|c| &c.rules)
            .find(|r| !uses(r, "hairpin"))
            .and_then(|r| r.comment.clone())
            .unwrap_or_else(|| format!("meta mark & {MASQUERADE_MARK:#x} != 0 masquerade"));
        if marked {
            reasons.push(format!(
                "ferry-proxy chain nat-postrouting: rule \"{masq_rule}\" (mark {MASQUERADE_MARK:#x})"
            ));
            return Masquerade {
                masquerade: true,
                reasons,
            };
        }
        if let Some(e) = find(live, "hairpin", &Value::new().ipv4(p.src).ipv4(p.dst)) {
            reasons.push(format!(
                "ferry-proxy chain nat-postrouting: set hairpin {}: rule \"{}\"",
                show(e, &[DataType::Ipv4Addr, DataType::Ipv4Addr]),
                rule_using(live, "nat-postrouting", "hairpin")
            ));
            return Masquerade {
                masquerade: true,
                reasons,
            };
        }
        reasons.push(format!(
            "ferry-proxy chain nat-postrouting: no mark {MASQUERADE_MARK:#x}, no hairpin element"
        ));
    }
    if let Some(live) = overlay {
        let rules = live
            .chains
            .iter()
            .filter(|c| c.chain.name == "postrouting")
            .flat_map(|c| &c.rules);
        for r in rules {
            match simple_rule(live, r, p) {
                Some(Outcome::NoMatch) => continue,
                Some(Outcome::Return) => {
                    reasons.push(format!(
                        "ferry-overlay chain postrouting: rule \"{}\"",
                        r.comment.as_deref().unwrap_or("return")
                    ));
                    return Masquerade {
                        masquerade: false,
                        reasons,
                    };
                }
                Some(Outcome::Masquerade) => {
                    reasons.push(format!(
                        "ferry-overlay chain postrouting: rule \"{}\"",
                        r.comment.as_deref().unwrap_or("masquerade")
                    ));
                    return Masquerade {
                        masquerade: true,
                        reasons,
                    };
                }
                None => reasons.push(format!(
                    "ferry-overlay chain postrouting: rule \"{}\" not evaluated (unknown expression)",
                    r.comment.as_deref().unwrap_or("?")
                )),
            }
        }
        reasons.push("ferry-overlay chain postrouting: no rule matched".into());
    }
    Masquerade {
        masquerade: false,
        reasons,
    }
}

/// What a simple rule does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    NoMatch,
    Return,
    Masquerade,
}

/// Runs a rule made of address matches (`ip saddr`/`ip daddr`, masked,
/// compared or looked up in a set) ending in `return` or `masquerade`,
/// as the overlay's table has them. `None`: an expression it does not
/// model.
fn simple_rule(live: &Ruleset, rule: &Rule, p: &Packet) -> Option<Outcome> {
    use ferry_netlink::nftables::{CmpOp, PayloadBase, Register};
    use std::collections::HashMap;
    let mut regs: HashMap<Register, u32> = HashMap::new();
    for e in &rule.exprs {
        match e {
            Expr::Payload {
                dreg,
                base: PayloadBase::Network,
                offset,
                len: 4,
            } => {
                let ip = match offset {
                    12 => p.src,
                    16 => p.dst,
                    _ => return None,
                };
                regs.insert(*dreg, u32::from(ip));
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } if mask.len() == 4 && xor.iter().all(|b| *b == 0) => {
                let v = *regs.get(sreg)? & u32::from_be_bytes(mask.as_slice().try_into().ok()?);
                regs.insert(*dreg, v);
            }
            Expr::Cmp { sreg, op, data } if data.len() == 4 => {
                let v = *regs.get(sreg)?;
                let d = u32::from_be_bytes(data.as_slice().try_into().ok()?);
                let holds = match op {
                    CmpOp::Eq => v == d,
                    CmpOp::Neq => v != d,
                    _ => return None,
                };
                if !holds {
                    return Some(Outcome::NoMatch);
                }
            }
            Expr::Lookup {
                set,
                sreg,
                dreg: None,
                invert,
            } => {
                let key = Value::new().ipv4(Ipv4Addr::from(*regs.get(sreg)?));
                if find(live, set, &key).is_some() == *invert {
                    return Some(Outcome::NoMatch);
                }
            }
            Expr::Counter { .. } => {}
            Expr::Verdict(Verdict::Return) => return Some(Outcome::Return),
            Expr::Masquerade { .. } => return Some(Outcome::Masquerade),
            _ => return None,
        }
    }
    Some(Outcome::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proxy::model::plan;
    use ferry_proxy::nftables::{Ids, Options, render};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn table(extra: serde_json::Value) -> Ruleset {
        let mut spec = json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]});
        if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                s.insert(k.clone(), v.clone());
            }
        }
        let svc: Service = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .expect("service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.5"], "nodeName": "n2", "conditions": {"ready": true}}]
        }))
        .expect("slice");
        let p = plan(&[&svc], &[&slice], "n1");
        render(
            &p,
            &mut Ids::default(),
            &Options {
                node_ips: vec![Ipv4Addr::new(172, 30, 0, 11)],
                cluster_cidr: Cidr::parse("10.244.0.0/16"),
                node_name: Some("n1".into()),
            },
        )
    }

    fn packet(src: [u8; 4], dst: [u8; 4], dport: u16) -> Packet {
        Packet {
            src: src.into(),
            dst: dst.into(),
            protocol: 6,
            dport,
        }
    }

    #[test]
    fn cluster_ip_from_a_pod_is_dnated_without_masquerade() {
        let live = table(json!({}));
        assert_eq!(
            proxy_cluster_cidr(&live),
            Cidr::parse("10.244.0.0/16"),
            "read back from the rule"
        );
        let d = services(&live, &packet([10, 244, 1, 9], [10, 96, 0, 20], 80));
        let Verdict2::Dnat(dispatch) = &d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!(dispatch.map, "service-ids");
        assert_eq!(dispatch.element, "{ 10.96.0.20 . tcp . 80 : 1 . 2 }");
        assert_eq!(
            dispatch.endpoints(),
            vec![
                (Ipv4Addr::new(10, 244, 1, 5), 8080),
                (Ipv4Addr::new(10, 244, 2, 5), 8080)
            ]
        );
        assert!(d.marks.is_empty(), "{:?}", d.marks);
        assert_eq!(dispatch.rule, "service port -> random backend bucket");
    }

    #[test]
    fn node_port_from_outside_is_marked_and_masqueraded() {
        let live = table(json!({}));
        let p = packet([172, 30, 0, 1], [172, 30, 0, 11], 30080);
        let d = services(&live, &p);
        let Verdict2::Dnat(dispatch) = &d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!(dispatch.map, "node-port-ids");
        assert_eq!(d.marks.len(), 1, "{:?}", d.marks);
        assert!(d.marks[0].contains("masq-node-ports"), "{:?}", d.marks);
        let after = Packet {
            dst: Ipv4Addr::new(10, 244, 2, 5),
            dport: 8080,
            ..p
        };
        let m = masquerade(Some(&live), None, &after, true);
        assert!(m.masquerade, "{m:?}");
        // The NodePort of another node's address is not ours.
        let other = packet([172, 30, 0, 1], [172, 30, 0, 12], 30080);
        assert_eq!(services(&live, &other).verdict, Verdict2::NoMatch);
    }

    #[test]
    fn affinity_gets_its_chain_and_unknown_ports_of_a_cluster_ip_are_rejected() {
        let live = table(json!({"sessionAffinity": "ClientIP"}));
        let d = services(&live, &packet([10, 244, 1, 9], [10, 96, 0, 20], 80));
        let Verdict2::Dnat(dispatch) = &d.verdict else {
            panic!("{d:?}")
        };
        assert_eq!(dispatch.map, "service-chains");
        assert_eq!(dispatch.chain.as_deref(), Some("svc-1"));
        assert!(!dispatch.pick.is_empty());
        let d = services(&live, &packet([10, 244, 1, 9], [10, 96, 0, 20], 81));
        assert!(
            matches!(
                &d.verdict,
                Verdict2::Reject {
                    set: "cluster-ips",
                    ..
                }
            ),
            "{d:?}"
        );
        // A hairpin: an endpoint of this node reaching itself.
        let back = packet([10, 244, 1, 5], [10, 244, 1, 5], 8080);
        assert!(masquerade(Some(&live), None, &back, false).masquerade);
        let pod_to_pod = packet([10, 244, 1, 9], [10, 244, 2, 5], 8080);
        assert!(!masquerade(Some(&live), None, &pod_to_pod, false).masquerade);
    }

    #[test]
    fn overlay_masquerades_only_traffic_leaving_the_cluster() {
        use ferry_netlink::nftables::{
            Chain, ChainType, CmpOp, Family, Hook, Register, Set, Table, priority,
        };
        // The shape of ferry_overlay::masquerade's table.
        let t = Table::new(Family::Ip, "ferry-overlay");
        let from_pods = || {
            Rule::new()
                .payload_ip_saddr(Register::R1)
                .bitwise(Register::R1, Register::R1, [255, 255, 0, 0], [0u8; 4])
                .cmp(Register::R1, CmpOp::Eq, [10, 244, 0, 0])
        };
        let mut overlay = Ruleset::new(t.clone());
        overlay.add_set(
            Set::new(&t, "nodes", [DataType::Ipv4Addr]),
            vec![SetElement::new(
                Value::new().ipv4(Ipv4Addr::new(172, 30, 0, 12)),
            )],
        );
        overlay.add_chain(
            Chain::base(
                &t,
                "postrouting",
                ChainType::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
            ),
            vec![
                from_pods()
                    .payload_ip_daddr(Register::R2)
                    .bitwise(Register::R2, Register::R2, [255, 255, 0, 0], [0u8; 4])
                    .cmp(Register::R2, CmpOp::Eq, [10, 244, 0, 0])
                    .verdict(Verdict::Return)
                    .comment("pod to pod: no NAT"),
                from_pods()
                    .payload_ip_daddr(Register::R2)
                    .lookup("nodes", Register::R2)
                    .verdict(Verdict::Return)
                    .comment("pod to node: no NAT"),
                from_pods()
                    .masquerade()
                    .comment("pod to outside the cluster: masquerade"),
            ],
        );
        let m = |src: [u8; 4], dst: [u8; 4]| {
            masquerade(None, Some(&overlay), &packet(src, dst, 80), false)
        };
        let to_pod = m([10, 244, 1, 9], [10, 244, 2, 5]);
        assert!(!to_pod.masquerade, "{to_pod:?}");
        assert!(to_pod.reasons[0].contains("pod to pod"), "{to_pod:?}");
        let to_node = m([10, 244, 1, 9], [172, 30, 0, 12]);
        assert!(!to_node.masquerade, "{to_node:?}");
        assert!(to_node.reasons[0].contains("pod to node"), "{to_node:?}");
        assert!(m([10, 244, 1, 9], [192, 0, 2, 1]).masquerade);
        assert!(!m([172, 30, 0, 1], [192, 0, 2, 1]).masquerade);
    }
}
