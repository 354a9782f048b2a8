//! `ferry explain svc/<ns>/<name>`: for one Service, the live nf_tables
//! elements and rules that implement it on a node, and next to them what
//! kube-proxy's iptables mode would have programmed (`KUBE-SERVICES` →
//! `KUBE-SVC-*` with probabilities → `KUBE-SEP-*` DNAT), with kube-proxy's
//! own chain names, so readers of the classic tutorials can compare.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use ferry_netlink::nftables::{ElementData, Ruleset, SetElement, Value, Verdict};

use crate::model::{Categorized, Cidr, Endpoint, Protocol, ServicePort, plan};
use crate::nftables::{BUCKETS, TABLE};

/// RFC 4648 base32 (kube-proxy names chains with it).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in bytes {
        buffer = (buffer << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// kube-proxy's `portProtoHash`: 16 base32 characters of a SHA-256.
fn kube_hash(input: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    base32(digest.as_ref())[..16].to_string()
}

/// `ns/name:port` (or `ns/name` for an unnamed port), as kube-proxy
/// prints a ServicePortName.
fn port_name(p: &ServicePort) -> String {
    if p.port_name.is_empty() {
        format!("{}/{}", p.namespace, p.name)
    } else {
        format!("{}/{}:{}", p.namespace, p.name, p.port_name)
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// kube-proxy's chain name for a service port (`KUBE-SVC-`, `KUBE-SVL-`,
/// `KUBE-EXT-`, `KUBE-FW-`).
pub fn kube_chain(prefix: &str, p: &ServicePort) -> String {
    format!(
        "{prefix}{}",
        kube_hash(&format!("{}{}", port_name(p), proto(p.protocol)))
    )
}

/// kube-proxy's `KUBE-SEP-` chain name for one endpoint of a port.
pub fn kube_sep(p: &ServicePort, e: &Endpoint) -> String {
    format!(
        "KUBE-SEP-{}",
        kube_hash(&format!(
            "{}{}{}:{}",
            port_name(p),
            proto(p.protocol),
            e.ip,
            e.port
        ))
    )
}

/// The iptables-save lines kube-proxy (iptables mode) would write for one
/// service port on `node`.
pub fn kube_proxy_rules(p: &ServicePort, cat: &Categorized, cluster_cidr: Option<Cidr>) -> String {
    let mut out = String::new();
    let name = port_name(p);
    let pr = proto(p.protocol);
    let svc = kube_chain("KUBE-SVC-", p);
    let svl = kube_chain("KUBE-SVL-", p);
    let ext = kube_chain("KUBE-EXT-", p);
    let fw = kube_chain("KUBE-FW-", p);
    let internal = if p.internal_local { &svl } else { &svc };
    let internal_eps = if p.internal_local {
        &cat.local
    } else {
        &cat.cluster
    };
    let external_local = p.external_local && p.has_external();
    let external_eps = if external_local {
        &cat.local
    } else {
        &cat.cluster
    };
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let no_endpoints = !cat.has_any;
    for ip in &p.cluster_ips {
        if no_endpoints {
            line(format!(
                "-A KUBE-SERVICES -d {ip}/32 -p {pr} -m comment --comment \"{name} has no endpoints\" -m {pr} --dport {} -j REJECT --reject-with icmp-port-unreachable   (filter table)",
                p.port
            ));
        } else if internal_eps.is_empty() {
            line(format!(
                "-A KUBE-SERVICES -d {ip}/32 -p {pr} -m comment --comment \"{name} has no local endpoints\" -m {pr} --dport {} -j DROP   (filter table)",
                p.port
            ));
        } else {
            line(format!(
                "-A KUBE-SERVICES -d {ip}/32 -p {pr} -m comment --comment \"{name} cluster IP\" -m {pr} --dport {} -j {internal}",
                p.port
            ));
        }
    }
    for ip in &p.external_ips {
        line(format!(
            "-A KUBE-SERVICES -d {ip}/32 -p {pr} -m comment --comment \"{name} external IP\" -m {pr} --dport {} -j {ext}",
            p.port
        ));
    }
    for ip in &p.load_balancer_ips {
        let target = if p.source_ranges.is_empty() {
            &ext
        } else {
            &fw
        };
        line(format!(
            "-A KUBE-SERVICES -d {ip}/32 -p {pr} -m comment --comment \"{name} loadbalancer IP\" -m {pr} --dport {} -j {target}",
            p.port
        ));
    }
    if !p.source_ranges.is_empty() {
        for r in &p.source_ranges {
            line(format!(
                "-A {fw} -s {}/{} -m comment --comment \"{name} loadbalancer IP\" -j {ext}",
                r.network, r.prefix_len
            ));
        }
        line(format!(
            "-A {fw} -m comment --comment \"{name} loadbalancer IP\" -j KUBE-MARK-DROP"
        ));
    }
    if let Some(np) = p.node_port {
        line(format!(
            "-A KUBE-NODEPORTS -p {pr} -m comment --comment \"{name}\" -m {pr} --dport {np} -j {ext}"
        ));
    }
    if p.has_external() && !no_endpoints {
        if external_local {
            if let Some(cidr) = cluster_cidr {
                line(format!(
                    "-A {ext} -s {}/{} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}",
                    cidr.network, cidr.prefix_len
                ));
            }
            line(format!(
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            ));
            line(format!(
                "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
            ));
            line(format!("-A {ext} -j {svl}"));
        } else {
            line(format!(
                "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"
            ));
            line(format!("-A {ext} -j {svc}"));
        }
        if external_eps.is_empty() {
            line(format!(
                "-A KUBE-EXTERNAL-SERVICES -p {pr} -m comment --comment \"{name} has no local endpoints\" -m {pr} --dport {} -j DROP   (filter table, per external address)",
                p.node_port.unwrap_or(p.port)
            ));
        }
    }
    let chains: Vec<(&String, &Vec<Endpoint>)> = if p.internal_local || external_local {
        vec![(&svc, &cat.cluster), (&svl, &cat.local)]
    } else {
        vec![(&svc, &cat.cluster)]
    };
    for (chain, eps) in chains {
        if eps.is_empty() {
            continue;
        }
        if chain == &svc
            && let Some(cidr) = cluster_cidr
        {
            for ip in &p.cluster_ips {
                line(format!(
                    "-A {svc} ! -s {}/{} -d {ip}/32 -p {pr} -m comment --comment \"{name} cluster IP\" -m {pr} --dport {} -j KUBE-MARK-MASQ",
                    cidr.network, cidr.prefix_len, p.port
                ));
            }
        }
        if let Some(seconds) = p.affinity_seconds {
            for e in eps {
                let sep = kube_sep(p, e);
                line(format!(
                    "-A {chain} -m comment --comment \"{name} -> {}:{}\" -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {seconds} --reap -j {sep}",
                    e.ip, e.port
                ));
            }
        }
        let n = eps.len();
        for (i, e) in eps.iter().enumerate() {
            let sep = kube_sep(p, e);
            if i + 1 < n {
                line(format!(
                    "-A {chain} -m comment --comment \"{name} -> {}:{}\" -m statistic --mode random --probability {:.10} -j {sep}",
                    e.ip,
                    e.port,
                    1.0 / (n - i) as f64
                ));
            } else {
                line(format!(
                    "-A {chain} -m comment --comment \"{name} -> {}:{}\" -j {sep}",
                    e.ip, e.port
                ));
            }
        }
    }
    let mut seps: BTreeMap<String, &Endpoint> = BTreeMap::new();
    for e in cat.cluster.iter().chain(&cat.local) {
        seps.insert(kube_sep(p, e), e);
    }
    for (sep, e) in seps {
        line(format!(
            "-A {sep} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ",
            e.ip
        ));
        let recent = if p.affinity_seconds.is_some() {
            format!(" -m recent --name {sep} --mask 255.255.255.255 --rsource --set")
        } else {
            String::new()
        };
        line(format!(
            "-A {sep} -p {pr} -m comment --comment \"{name}\"{recent} -m {pr} -j DNAT --to-destination {}:{}",
            e.ip, e.port
        ));
    }
    out
}

fn fmt_value(v: &Value, fields: &[ferry_netlink::nftables::DataType]) -> String {
    v.format(fields)
}

/// Backend-set id: the first `mark` field of a value.
fn id_of(v: &Value) -> Option<u32> {
    crate::nftables::mark_at(v, 0)
}

/// One live element in nft's syntax; notes the backend-set id it names.
fn record(
    out: &mut String,
    ids: &mut Vec<u32>,
    set: &str,
    e: &SetElement,
    fields: &[ferry_netlink::nftables::DataType],
    what: &str,
) {
    let key = fmt_value(&e.key, fields);
    let data = match &e.data {
        Some(ElementData::Value(v)) => {
            if let Some(id) = id_of(v) {
                ids.push(id);
                format!(" : backend set {id}")
            } else {
                String::new()
            }
        }
        Some(ElementData::Verdict(v)) => {
            if let Verdict::Goto(chain) = v
                && let Some(id) = chain.strip_prefix("svc-").and_then(|n| n.parse().ok())
            {
                ids.push(id);
            }
            format!(" : {v}")
        }
        None => String::new(),
    };
    let _ = writeln!(out, "  {set:<24} {{ {key}{data} }}   # {what}");
}

/// The live elements of `live` that concern port `p`, in nft's syntax.
fn live_elements(p: &ServicePort, live: &Ruleset) -> String {
    use ferry_netlink::nftables::DataType::{InetProto, InetService, Ipv4Addr as Addr};
    let k3_type = [Addr, InetProto, InetService];
    let k2_type = [InetProto, InetService];
    let mut out = String::new();
    let mut ids: Vec<u32> = Vec::new();
    let keys3: Vec<(Value, &str)> = p
        .cluster_ips
        .iter()
        .map(|ip| (ip, "ClusterIP"))
        .chain(p.external_ips.iter().map(|ip| (ip, "external IP")))
        .chain(p.load_balancer_ips.iter().map(|ip| (ip, "LoadBalancer IP")))
        .map(|(ip, what)| {
            (
                Value::new()
                    .ipv4(*ip)
                    .inet_proto(p.protocol.number())
                    .inet_service(p.port),
                what,
            )
        })
        .collect();
    for (key, what) in &keys3 {
        for set in [
            "service-ids",
            "service-chains",
            "drop",
            "no-endpoints",
            "masq-external",
            "pod-external-ids",
            "pod-external-chains",
            "firewall",
        ] {
            for e in live.elements(set).iter().filter(|e| &e.key == key) {
                record(&mut out, &mut ids, set, e, &k3_type, what);
            }
        }
        for e in live
            .elements("firewall-allow")
            .iter()
            .filter(|e| e.key.as_bytes().starts_with(key.as_bytes()))
        {
            let from =
                Ipv4Addr::from(<[u8; 4]>::try_from(&e.key.as_bytes()[7..11]).unwrap_or([0; 4]));
            let to = e
                .key_end
                .as_ref()
                .and_then(|k| <[u8; 4]>::try_from(k.as_bytes().get(7..11)?).ok())
                .map(Ipv4Addr::from)
                .unwrap_or(from);
            let _ = writeln!(
                out,
                "  {:<24} {{ {} . {from}-{to} }}   # loadBalancerSourceRanges",
                "firewall-allow",
                fmt_value(key, &k3_type)
            );
        }
    }
    if let Some(np) = p.node_port {
        let key = Value::new()
            .inet_proto(p.protocol.number())
            .inet_service(np);
        for set in [
            "node-port-ids",
            "node-port-chains",
            "node-port-drop",
            "node-port-no-endpoints",
            "masq-node-ports",
        ] {
            for e in live.elements(set).iter().filter(|e| e.key == key) {
                record(
                    &mut out,
                    &mut ids,
                    set,
                    e,
                    &k2_type,
                    "NodePort on @node-ips",
                );
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let mut by_endpoint: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for e in live.elements("backends") {
            let (Some(set), Some(slot)) = (id_of(&e.key), crate::nftables::mark_at(&e.key, 1))
            else {
                continue;
            };
            if set != id {
                continue;
            }
            if let Some(ElementData::Value(v)) = &e.data {
                by_endpoint
                    .entry(v.format(&[Addr, InetService]))
                    .or_default()
                    .push(slot);
            }
        }
        let n = by_endpoint.values().map(Vec::len).sum::<usize>().max(1) as u32;
        let own_chain = live
            .chains
            .iter()
            .any(|c| c.chain.name == crate::nftables::set_chain(id));
        for (endpoint, slots) in &by_endpoint {
            // Plain sets: `numgen random mod 60` folded by `reduce` (slot s
            // gets the draws b with b mod n = s); wrr: 60 weighted slots;
            // other chains pick a slot mod n directly.
            let draws: u32 = if own_chain || n == BUCKETS {
                slots.len() as u32 * (BUCKETS / n.min(BUCKETS))
            } else {
                slots
                    .iter()
                    .map(|s| (0..BUCKETS).filter(|b| b % n == *s).count() as u32)
                    .sum()
            };
            let slots: Vec<String> = slots.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "  {:<24} {{ {id} . {} : {endpoint} }}   # {:.1}% of new connections",
                "backends",
                slots.join(","),
                100.0 * f64::from(draws) / f64::from(BUCKETS)
            );
        }
        let chain = crate::nftables::set_chain(id);
        if let Some(c) = live.chains.iter().find(|c| c.chain.name == chain) {
            let _ = writeln!(
                out,
                "  chain {chain}   # {}",
                c.chain.comment.as_deref().unwrap_or("")
            );
            for r in &c.rules {
                let _ = writeln!(out, "    rule: {}", r.comment.as_deref().unwrap_or("?"));
            }
            let affinity = format!("affinity-{id}");
            let clients = live.elements(&affinity);
            if live.sets.iter().any(|s| s.set.name == affinity) {
                let _ = writeln!(
                    out,
                    "  map {affinity}: {} client(s) pinned right now",
                    clients.len()
                );
                for e in clients.iter().take(10) {
                    if let Some(ElementData::Value(v)) = &e.data {
                        let _ = writeln!(
                            out,
                            "    {} : {}",
                            e.key.format(&[Addr]),
                            v.format(&[Addr, InetService])
                        );
                    }
                }
            }
        }
    }
    if out.is_empty() {
        out.push_str("  (no element for this port: is ferry proxy running and synced?)\n");
    }
    out
}

/// The whole explanation of `svc` on node `node`. `live` is the node's
/// `ip ferry-proxy` table, if it exists.
pub fn explain(
    svc: &Service,
    slices: &[&EndpointSlice],
    node: &str,
    cluster_cidr: Option<Cidr>,
    live: Option<&Ruleset>,
) -> String {
    let mut out = String::new();
    let spec = svc.spec.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "Service {}/{}: type {}, clusterIPs {}, externalTrafficPolicy {}, internalTrafficPolicy {}, sessionAffinity {}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or(""),
        spec.type_.as_deref().unwrap_or("ClusterIP"),
        spec.cluster_ips
            .as_ref()
            .map(|v| v.join(","))
            .or(spec.cluster_ip.clone())
            .unwrap_or_else(|| "-".into()),
        spec.external_traffic_policy.as_deref().unwrap_or("Cluster"),
        spec.internal_traffic_policy.as_deref().unwrap_or("Cluster"),
        spec.session_affinity.as_deref().unwrap_or("None"),
    );
    let plan = plan(&[svc], slices, node);
    for p in &plan.problems {
        let _ = writeln!(out, "problem: {}", p.message);
    }
    if plan.ports.is_empty() {
        out.push_str("Nothing to program: headless, ExternalName, or no ClusterIP yet.\n");
        return out;
    }
    for (p, cat) in &plan.ports {
        let _ = writeln!(
            out,
            "\nPort {} {}/{}{}",
            if p.port_name.is_empty() {
                "(unnamed)"
            } else {
                &p.port_name
            },
            p.port,
            p.protocol.name(),
            p.node_port
                .map(|n| format!(", nodePort {n}"))
                .unwrap_or_default()
        );
        let eps = crate::model::endpoints_for(
            &slices
                .iter()
                .copied()
                .filter(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        == svc.metadata.name.as_ref()
                })
                .collect::<Vec<_>>(),
            &p.port_name,
            p.protocol,
        );
        let _ = writeln!(out, "Endpoints (from EndpointSlices):");
        if eps.is_empty() {
            let _ = writeln!(out, "  none: new connections are refused");
        }
        for e in &eps {
            let _ = writeln!(
                out,
                "  {}:{} on {}: ready={} serving={} terminating={}{}{}",
                e.ip,
                e.port,
                e.node.as_deref().unwrap_or("?"),
                e.ready,
                e.serving,
                e.terminating,
                if cat.cluster.contains(e) {
                    ", used for Cluster traffic"
                } else {
                    ""
                },
                if cat.local.contains(e) {
                    ", used for Local traffic here"
                } else {
                    ""
                },
            );
        }
        let _ = writeln!(out, "\nLive on {node} (table ip {TABLE}):");
        match live {
            Some(live) => out.push_str(&live_elements(p, live)),
            None => {
                let _ = writeln!(out, "  table ip {TABLE} does not exist on this node");
            }
        }
        let _ = writeln!(
            out,
            "\nkube-proxy (iptables mode) would program, in the nat table unless noted:"
        );
        for l in kube_proxy_rules(p, cat, cluster_cidr).lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    out.push_str(
        "\nHow the live elements are used (chain services, hooked at nat prerouting and output):\n\
         \x20 ip daddr . meta l4proto . th dport vmap @service-chains          (affinity, rr, sh: chain svc-<id>)\n\
         \x20 ip daddr . meta l4proto . th dport map @service-ids -> id . n; numgen random mod 60 -> draw;\n\
         \x20   n . draw map @reduce -> slot; dnat to id . slot map @backends (one rule for every plain Service)\n\
         \x20 ip daddr @node-ips: meta l4proto . th dport, the same with @node-port-chains / @node-port-ids\n\
         \x20 @drop, @node-port-drop: dropped (Local policy, no local endpoint)\n\
         \x20 @no-endpoints, @node-port-no-endpoints, @cluster-ips: rejected in the filter hooks\n\
         \x20 @masq-external, @masq-node-ports, off-cluster -> ClusterIP, @hairpin: masqueraded in postrouting\n",
    );
    out
}

/// Fetches Service `namespace/name` and its EndpointSlices, reads the
/// live table of `node` (its network namespace /run/netns/<node> when
/// that exists, as in the lab, else the current one) and explains.
pub async fn run(
    client: kube::Client,
    namespace: &str,
    name: &str,
    node: &str,
    cluster_cidr: Option<Cidr>,
) -> anyhow::Result<String> {
    use anyhow::Context;
    use ferry_netlink::nftables::{Connection, Family, Table};
    let svc = kube::Api::<Service>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("getting Service {namespace}/{name}"))?;
    let slices = kube::Api::<EndpointSlice>::namespaced(client, namespace)
        .list(
            &kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={name}")),
        )
        .await
        .context("listing EndpointSlices")?;
    let netns = std::path::Path::new(ferry_netlink::netns::NETNS_RUN_DIR).join(node);
    let mut conn = if netns.exists() {
        Connection::open_in_netns(&netns)
    } else {
        Connection::open()
    }
    .context("opening nf_tables")?;
    let live = Ruleset::list(&mut conn, &Table::new(Family::Ip, TABLE))
        .context("reading the live ferry-proxy table")?;
    let refs: Vec<&EndpointSlice> = slices.items.iter().collect();
    Ok(explain(&svc, &refs, node, cluster_cidr, live.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn chain_names_follow_kube_proxy() {
        // kube-proxy names are SHA-256 based: stable, 16 characters, and
        // different per port and per endpoint.
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}],
                     "sessionAffinity": "ClientIP"}
        }))
        .expect("svc");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "n1"},
                          {"addresses": ["10.244.2.5"], "nodeName": "n2"}]
        }))
        .expect("slice");
        let text = explain(&svc, &[&slice], "n1", Cidr::parse("10.244.0.0/16"), None);
        let p = &plan(&[&svc], &[&slice], "n1").ports[0].0;
        let svc_chain = kube_chain("KUBE-SVC-", p);
        assert_eq!(svc_chain.len(), "KUBE-SVC-".len() + 16);
        assert!(text.contains(&format!("-j {svc_chain}")), "{text}");
        assert!(text.contains("--probability 0.5000000000"), "{text}");
        assert!(
            text.contains("-j DNAT --to-destination 10.244.2.5:8080"),
            "{text}"
        );
        assert!(text.contains("--rcheck --seconds 10800 --reap"), "{text}");
        assert!(
            text.contains("! -s 10.244.0.0/16 -d 10.96.0.20/32"),
            "{text}"
        );
        assert!(text.contains("does not exist on this node"), "{text}");
    }
}
