//! The report: numbered hops, each a line and the kernel objects under it,
//! branches per endpoint, and the probe's findings.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::nat::{Dispatch, Packet};
use super::path::{Hop, Path, Place};
use super::probe::ProbeResult;
use super::{Cluster, key};

pub fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        _ => "ip",
    }
}

/// The Service a dispatch element belongs to, and its port.
fn service_of<'c>(
    cluster: &'c Cluster,
    map: &str,
    p: &Packet,
) -> Option<(&'c Service, &'c k8s_openapi::api::core::v1::ServicePort)> {
    let proto = match p.protocol {
        17 => "UDP",
        132 => "SCTP",
        _ => "TCP",
    };
    let dst = p.dst.to_string();
    cluster.services.iter().find_map(|s| {
        let spec = s.spec.as_ref()?;
        let ports = spec.ports.as_ref()?;
        let same_proto = |sp: &&k8s_openapi::api::core::v1::ServicePort| {
            sp.protocol.as_deref().unwrap_or("TCP") == proto
        };
        if map.starts_with("node-port") {
            let port = ports
                .iter()
                .filter(same_proto)
                .find(|sp| sp.node_port == Some(i32::from(p.dport)))?;
            return Some((s, port));
        }
        let lb: Vec<String> = s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
            .unwrap_or_default();
        let has_ip = spec.cluster_ip.as_deref() == Some(dst.as_str())
            || spec.cluster_ips.iter().flatten().any(|ip| *ip == dst)
            || spec.external_ips.iter().flatten().any(|ip| *ip == dst)
            || lb.contains(&dst);
        if !has_ip {
            return None;
        }
        let port = ports
            .iter()
            .filter(same_proto)
            .find(|sp| sp.port == i32::from(p.dport))?;
        Some((s, port))
    })
}

/// kube-proxy's chain names for a service port and its endpoints, for
/// readers who know the iptables mode.
struct KubeProxyNames {
    /// `KUBE-SVC-…` (`KUBE-SVL-…` under internalTrafficPolicy: Local).
    service: String,
    /// `KUBE-EXT-…`: NodePorts and external addresses go through it.
    external: String,
    /// `KUBE-SEP-…` per endpoint.
    endpoints: Vec<((Ipv4Addr, u16), String)>,
}

fn kube_proxy_names(
    cluster: &Cluster,
    svc: &Service,
    port: &k8s_openapi::api::core::v1::ServicePort,
    node: &str,
) -> Option<KubeProxyNames> {
    use ferry_proxy::explain::{kube_chain, kube_sep};
    let name = svc.metadata.name.as_deref()?;
    let slices: Vec<&EndpointSlice> = cluster
        .slices
        .iter()
        .filter(|s| {
            s.metadata.namespace == svc.metadata.namespace
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(name)
        })
        .collect();
    let plan = ferry_proxy::model::plan(&[svc], &slices, node);
    let (p, cat) = plan.ports.iter().find(|(p, _)| {
        i32::from(p.port) == port.port && p.port_name == port.name.clone().unwrap_or_default()
    })?;
    let prefix = if p.internal_local {
        "KUBE-SVL-"
    } else {
        "KUBE-SVC-"
    };
    Some(KubeProxyNames {
        service: kube_chain(prefix, p),
        external: kube_chain("KUBE-EXT-", p),
        endpoints: cat
            .cluster
            .iter()
            .chain(&cat.local)
            .map(|e| ((e.ip, e.port), kube_sep(p, e)))
            .collect(),
    })
}

/// The hops of a dispatch: the Service element, the endpoint set, the DNAT.
pub fn service_hops(
    cluster: &Cluster,
    here: &str,
    place: &Place,
    p: &Packet,
    d: &Dispatch,
) -> Vec<Hop> {
    let table = ferry_proxy::nftables::TABLE;
    let service = service_of(cluster, d.map, p);
    let node = match place {
        Place::Node(n) => n.as_str(),
        _ => "",
    };
    let names = service.and_then(|(s, sp)| kube_proxy_names(cluster, s, sp, node));
    let what = match service {
        Some((s, sp)) => format!(
            "service {} port {}/{}",
            key(&s.metadata),
            sp.port,
            sp.protocol.as_deref().unwrap_or("TCP")
        ),
        None => "a service port".into(),
    };
    let via = if d.map.starts_with("node-port") {
        format!("NodePort {}", p.dport)
    } else {
        format!("{}:{}", p.dst, p.dport)
    };
    let mut first = vec![format!(
        "table ip {table} map {} element {} -> backend set {}",
        d.map, d.element, d.id
    )];
    let mut rule = format!(
        "chain services (nat-prerouting, nat-output): rule \"{}\"",
        d.rule
    );
    if let Some(n) = &names {
        let _ = if d.map.starts_with("node-port") {
            write!(
                rule,
                "; kube-proxy: KUBE-NODEPORTS -> {} -> {}",
                n.external, n.service
            )
        } else {
            write!(rule, "; kube-proxy: KUBE-SERVICES -> {}", n.service)
        };
    }
    first.push(rule);
    let mut hops = vec![Hop {
        title: format!("{what}: {via} matches on {here}"),
        detail: first,
    }];

    let endpoints = d.endpoints();
    let list: Vec<String> = endpoints
        .iter()
        .map(|(ip, port)| {
            let pod = cluster
                .pod_with_ip(*ip)
                .and_then(|p| p.metadata.name.clone())
                .unwrap_or_else(|| "?".into());
            format!("{ip}:{port} ({pod})")
        })
        .collect();
    let mut detail: Vec<String> = d
        .backends
        .iter()
        .take(12)
        .map(|b| {
            let sep = names
                .as_ref()
                .and_then(|n| n.endpoints.iter().find(|(e, _)| *e == (b.ip, b.port)))
                .map(|(_, s)| format!("  [{s}]"))
                .unwrap_or_default();
            format!(
                "map backends {{ {} . {} : {} . {} }}{sep}",
                d.id, b.slot, b.ip, b.port
            )
        })
        .collect();
    if d.backends.len() > 12 {
        detail.push(format!("... {} more elements", d.backends.len() - 12));
    }
    hops.push(Hop {
        title: format!(
            "endpoint set {}: {} endpoint(s): {}",
            d.id,
            endpoints.len(),
            list.join(", ")
        ),
        detail,
    });

    let mut dnat = Vec::new();
    match &d.chain {
        Some(chain) => {
            for r in &d.pick {
                dnat.push(format!("chain {chain}: rule \"{r}\""));
            }
        }
        None => dnat.push(format!("{}, then dnat to map backends", d.pick.join("; "))),
    }
    let title = match (d.pinned, endpoints.as_slice()) {
        (Some((ip, port)), _) => {
            dnat.push(format!(
                "map affinity-{} {{ {} : {ip} . {port} }}: session affinity pins this client",
                d.id, p.src
            ));
            format!(
                "DNAT {}:{} -> {ip}:{port} (session affinity)",
                p.dst, p.dport
            )
        }
        (None, [(ip, port)]) => format!("DNAT {}:{} -> {ip}:{port}", p.dst, p.dport),
        (None, many) => format!(
            "DNAT {}:{} -> one of {} endpoints, picked per new connection",
            p.dst,
            p.dport,
            many.len()
        ),
    };
    hops.push(Hop {
        title,
        detail: dnat,
    });
    hops
}

fn write_path(out: &mut String, path: &Path, mut n: usize, depth: usize) {
    let indent = "   ".repeat(depth);
    for hop in &path.hops {
        n += 1;
        let _ = writeln!(out, "{indent}{n:>2}. {}", hop.title);
        for d in &hop.detail {
            let _ = writeln!(out, "{indent}      {d}");
        }
    }
    for b in &path.branches {
        let _ = writeln!(out, "{indent}    -- to endpoint {}", b.label);
        write_path(out, &b.path, n, depth + 1);
    }
}

/// The whole report.
pub fn report(header: &str, path: &Path, probe: Option<&ProbeResult>) -> String {
    let mut out = format!("{header}\n");
    write_path(&mut out, path, 0, 0);
    if let Some(p) = probe {
        out.push('\n');
        out.push_str(&p.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::path::{Branch, End};

    fn hop(t: &str, d: &str) -> Hop {
        Hop {
            title: t.into(),
            detail: vec![d.into()],
        }
    }

    #[test]
    fn hops_are_numbered_and_branches_continue_the_numbering() {
        let leaf = |ip: [u8; 4]| Branch {
            endpoint: (ip.into(), 8080),
            label: format!("{}:8080", Ipv4Addr::from(ip)),
            path: Path {
                hops: vec![hop("route", "route 10.244.2.0/24 dev cni0")],
                branches: vec![],
                end: End::Unknown,
            },
        };
        let path = Path {
            hops: vec![
                hop("first", "route default via 10.244.1.1 dev eth0"),
                hop("dnat", "x"),
            ],
            branches: vec![leaf([10, 244, 1, 5]), leaf([10, 244, 2, 5])],
            end: End::Forked,
        };
        let text = report("trace tcp", &path, None);
        assert_eq!(
            text,
            "trace tcp\n 1. first\n      route default via 10.244.1.1 dev eth0\n 2. dnat\n      x\n    \
             -- to endpoint 10.244.1.5:8080\n    3. route\n         route 10.244.2.0/24 dev cni0\n    \
             -- to endpoint 10.244.2.5:8080\n    3. route\n         route 10.244.2.0/24 dev cni0\n"
        );
        let mut one = path.clone();
        one.keep_endpoint((Ipv4Addr::new(10, 244, 2, 5), 8080));
        assert_eq!(one.branches.len(), 1);
    }
}
