//! The references, written as kube-proxy writes them for the same
//! cluster: iptables mode (`iptables-restore` input, nat table) and
//! nftables mode (`nft -f` input, the per-service and per-endpoint chain
//! shape).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::cluster::{CLUSTER_CIDR, Cluster, NAMESPACE, PORT_NAME, SERVICE_PORT, TARGET_PORT};
use crate::cluster::{cluster_ip, service_name};

/// A deterministic name suffix of `len` base32 characters, like
/// kube-proxy's (base32 of a sha256): two seeded FNV-1a hashes, mixed.
fn hash_name(key: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // splitmix64's finalizer spreads the low bits.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    };
    let bits = (u128::from(fnv(0)) << 64) | u128::from(fnv(0x9e37_79b9_7f4a_7c15));
    (0..len)
        .map(|i| char::from(ALPHABET[((bits >> (5 * i)) & 31) as usize]))
        .collect()
}

/// `bench/svc-00042:http`, kube-proxy's service port name.
fn port_name(i: usize) -> String {
    format!("{NAMESPACE}/{}:{PORT_NAME}", service_name(i))
}

fn svc_chain(i: usize) -> String {
    format!(
        "KUBE-SVC-{}",
        hash_name(&format!("{}tcp", port_name(i)), 16)
    )
}

fn sep_chain(i: usize, ep: Ipv4Addr) -> String {
    format!(
        "KUBE-SEP-{}",
        hash_name(&format!("{}tcp{ep}:{TARGET_PORT}", port_name(i)), 16)
    )
}

/// kube-proxy's `KUBE-SERVICES` jump for Service `i`.
fn services_rule(out: &mut String, i: usize) {
    let _ = writeln!(
        out,
        "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {SERVICE_PORT} -j {}",
        cluster_ip(i),
        port_name(i),
        svc_chain(i)
    );
}

const NODEPORTS_RULE: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";

/// The fixed chains' rules, as kube-proxy writes them on every sync.
const FIXED_RULES: &str = "\
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
";

const FIXED_CHAINS: &str = "\
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
";

/// Service `i`'s own chains' rules: KUBE-SVC (masquerade from outside the
/// cluster CIDR, then one random pick per endpoint) and one KUBE-SEP per
/// endpoint (hairpin masquerade, DNAT).
fn service_rules(out: &mut String, i: usize, endpoints: &[Ipv4Addr]) {
    let (name, svc) = (port_name(i), svc_chain(i));
    let _ = writeln!(
        out,
        "-A {svc} ! -s {CLUSTER_CIDR} -d {}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ",
        cluster_ip(i)
    );
    let n = endpoints.len();
    for (k, ep) in endpoints.iter().enumerate() {
        let sep = sep_chain(i, *ep);
        // The last endpoint takes what is left; the others 1/(n-k) of it.
        let statistic = if k + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - k) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "-A {svc} -m comment --comment \"{name} -> {ep}:{TARGET_PORT}\"{statistic} -j {sep}"
        );
    }
    for ep in endpoints {
        let sep = sep_chain(i, *ep);
        let _ = writeln!(
            out,
            "-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ"
        );
        let _ = writeln!(
            out,
            "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}:{TARGET_PORT}"
        );
    }
}

/// The full `iptables-restore` input (nat table) of a full sync, with the
/// built-in chains' jumps that kube-proxy installs beside it.
pub fn iptables_full(cluster: &Cluster) -> String {
    let mut out = String::with_capacity(cluster.services.len() * 3000);
    out.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    out.push_str(FIXED_CHAINS);
    for (i, eps) in cluster.endpoints.iter().enumerate() {
        let _ = writeln!(out, ":{} - [0:0]", svc_chain(i));
        for ep in eps {
            let _ = writeln!(out, ":{} - [0:0]", sep_chain(i, *ep));
        }
    }
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    out.push_str(FIXED_RULES);
    for i in 0..cluster.endpoints.len() {
        services_rule(&mut out, i);
    }
    out.push_str(NODEPORTS_RULE);
    for (i, eps) in cluster.endpoints.iter().enumerate() {
        service_rules(&mut out, i, eps);
    }
    out.push_str("COMMIT\n");
    out
}

/// Rules in [`iptables_full`] (to check a load).
pub fn iptables_rule_count(cluster: &Cluster) -> usize {
    3 + 4
        + 1
        + cluster
            .endpoints
            .iter()
            .map(|eps| 1 + 1 + 3 * eps.len())
            .sum::<usize>()
}

/// kube-proxy's partial sync after Service `i`'s endpoint `old` was
/// replaced (`iptables-restore --noflush`): the fixed chains and
/// KUBE-SERVICES are always rewritten whole; of the per-service chains
/// only the changed Service's, and the stale KUBE-SEP is deleted.
pub fn iptables_partial(cluster: &Cluster, i: usize, old: Ipv4Addr) -> String {
    let mut out = String::with_capacity(cluster.services.len() * 200);
    out.push_str("*nat\n");
    out.push_str(FIXED_CHAINS);
    let _ = writeln!(out, ":{} - [0:0]", svc_chain(i));
    for ep in &cluster.endpoints[i] {
        let _ = writeln!(out, ":{} - [0:0]", sep_chain(i, *ep));
    }
    let _ = writeln!(out, ":{} - [0:0]", sep_chain(i, old));
    out.push_str(FIXED_RULES);
    for s in 0..cluster.endpoints.len() {
        services_rule(&mut out, s);
    }
    out.push_str(NODEPORTS_RULE);
    service_rules(&mut out, i, &cluster.endpoints[i]);
    let _ = writeln!(out, "-X {}", sep_chain(i, old));
    out.push_str("COMMIT\n");
    out
}

/// kube-proxy's nftables mode for the same cluster (table `ip
/// kube-proxy`): a verdict map from `daddr . proto . dport` to a chain per
/// service port, `numgen random mod N vmap` there to a chain per endpoint.
pub fn nft_kube_proxy(cluster: &Cluster) -> String {
    let svc = |i: usize| {
        let key = format!("{NAMESPACE}/{}/tcp/{PORT_NAME}", service_name(i));
        format!("service-{}-{key}", hash_name(&key, 8))
    };
    let endpoint = |i: usize, ep: Ipv4Addr| {
        let key = format!(
            "{NAMESPACE}/{}/tcp/{PORT_NAME}__{ep}/{TARGET_PORT}",
            service_name(i)
        );
        format!("endpoint-{}-{key}", hash_name(&key, 8))
    };
    let mut out = String::with_capacity(cluster.services.len() * 2000);
    out.push_str(
        "table ip kube-proxy {\n\
         \tcomment \"rules for kube-proxy\"\n\
         \tchain mark-for-masquerade {\n\t\tmeta mark set meta mark | 0x4000\n\t}\n\
         \tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\
         \t\tmeta mark set meta mark ^ 0x4000\n\t\tmasquerade fully-random\n\t}\n",
    );
    // Chains first: the map's verdicts refer to them.
    for (i, eps) in cluster.endpoints.iter().enumerate() {
        let _ = writeln!(
            out,
            "\tchain {} {{\n\t\tip daddr {} tcp dport {SERVICE_PORT} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
            svc(i),
            cluster_ip(i)
        );
        let picks: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(k, ep)| format!("{k} : goto {}", endpoint(i, *ep)))
            .collect();
        let _ = writeln!(
            out,
            "\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
            eps.len(),
            picks.join(", ")
        );
        for ep in eps {
            let _ = writeln!(
                out,
                "\tchain {} {{\n\t\tip saddr {ep} jump mark-for-masquerade\n\t\tmeta l4proto tcp dnat to {ep}:{TARGET_PORT}\n\t}}",
                endpoint(i, *ep)
            );
        }
    }
    out.push_str(
        "\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\
         \t\tcomment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"\n\t\telements = {\n",
    );
    for i in 0..cluster.endpoints.len() {
        let _ = writeln!(
            out,
            "\t\t\t{} . tcp . {SERVICE_PORT} : goto {},",
            cluster_ip(i),
            svc(i)
        );
    }
    out.push_str(
        "\t\t}\n\t}\n\
         \tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n\
         \tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n\
         \tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n\
         \tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading\n\t}\n\
         }\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_shaped_like_kube_proxys() {
        let cluster = Cluster::new(2000, 5).expect("cluster");
        let mut names = std::collections::HashSet::new();
        for (i, eps) in cluster.endpoints.iter().enumerate() {
            assert!(names.insert(svc_chain(i)));
            for ep in eps {
                assert!(names.insert(sep_chain(i, *ep)));
            }
        }
        let name = svc_chain(0);
        assert_eq!(name.len(), "KUBE-SVC-".len() + 16);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn probabilities_follow_kube_proxy() {
        let cluster = Cluster::new(1, 5).expect("cluster");
        let text = iptables_full(&cluster);
        for p in [
            "0.2000000000",
            "0.2500000000",
            "0.3333333333",
            "0.5000000000",
        ] {
            assert!(text.contains(&format!("--probability {p} ")), "{p}");
        }
        let rules = text.lines().filter(|l| l.starts_with("-A ")).count();
        assert_eq!(rules, iptables_rule_count(&cluster));
    }
}
