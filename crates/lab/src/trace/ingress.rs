//! A URL through the Ingress controller. The controller runs with host
//! networking on every node, so a request is two connections: the client's
//! to a node's address (port 80/443), and the controller's own, from that
//! node to a ready endpoint of the backend Service (it picks endpoints
//! itself, not through the ClusterIP). The rule that matches comes from
//! the controller's own router (`ferry_ingress::model`), built from the
//! same objects it watches.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ListParams};

use ferry_ingress::model::build::{self, Classes, State};
use ferry_ingress::model::objects::{IngressClassInfo, IngressInfo, ServiceInfo, SliceInfo};
use ferry_ingress::model::paths::PathRule;
use ferry_ingress::model::route::ObjectRef;
use ferry_ingress::model::router::{Routed, normalize_host};

use super::Cluster;
use super::path::Hop;

/// `http[s]://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// With the query, as sent.
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> anyhow::Result<Url> {
        let (https, rest) = if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else {
            bail!("{text:?}: expected http:// or https://");
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .with_context(|| format!("{text:?}: bad port {p:?}"))?,
            ),
            None => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() || host.contains('@') {
            bail!("{text:?}: expected a host name");
        }
        Ok(Url {
            https,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The path without the query, as the router matches it.
    fn route_path(&self) -> &str {
        self.path.split('?').next().unwrap_or("/")
    }
}

/// What the Ingress controller does with the URL.
#[derive(Clone, Debug)]
pub struct IngressRoute {
    /// The hop that describes the rule and the upstream.
    pub hop: Hop,
    /// The node whose controller takes the request, and its address.
    pub node: String,
    pub node_ip: Ipv4Addr,
    /// The upstream's ready endpoints.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

fn object_ref(meta: &kube::api::ObjectMeta) -> ObjectRef {
    ObjectRef {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

fn rule_path(p: &PathRule) -> String {
    match p {
        PathRule::Exact(p) => format!("{p} (Exact)"),
        PathRule::Prefix(p) if p.is_empty() => "/ (Prefix)".into(),
        PathRule::Prefix(p) => format!("{p} (Prefix)"),
        PathRule::Regex { source, .. } => format!("{source} (regex)"),
    }
}

/// Routes `url` as the controller would, and picks the node it enters on:
/// the first address of the Ingress's `status.loadBalancer` (what its
/// ADDRESS column shows), else the node of the first controller pod.
pub async fn route(
    client: &kube::Client,
    cluster: &Cluster,
    url: &Url,
) -> anyhow::Result<IngressRoute> {
    let lp = ListParams::default();
    let ingresses = Api::<Ingress>::all(client.clone())
        .list(&lp)
        .await
        .context("listing Ingresses")?
        .items;
    let classes = Api::<IngressClass>::all(client.clone())
        .list(&lp)
        .await
        .context("listing IngressClasses")?
        .items;
    let mut state = State::default();
    for i in &ingresses {
        state
            .ingresses
            .insert(object_ref(&i.metadata), IngressInfo::from_ingress(i));
    }
    for c in &classes {
        if let Some(name) = &c.metadata.name {
            state
                .classes
                .insert(name.clone(), IngressClassInfo::from_class(c));
        }
    }
    for s in &cluster.services {
        state
            .services
            .insert(object_ref(&s.metadata), ServiceInfo::from_service(s));
    }
    for s in &cluster.slices {
        if let Some(info) = SliceInfo::from_slice(s) {
            state.slices.insert(object_ref(&s.metadata), info);
        }
    }
    let built = build::build(
        &state,
        &Classes {
            class: crate::ingress::CLASS.into(),
            controller: crate::ingress::CONTROLLER.into(),
            without_class: false,
        },
        ferry_ingress::model::tls::default_certificate(),
    );
    let host = normalize_host(&url.host);
    let (location, how) = match built.routes.router.route(&host, url.route_path()) {
        Routed::Rule(l) => (l, "rule"),
        Routed::Default(l) => (l, "defaultBackend"),
        Routed::NotFound => bail!(
            "no Ingress rule serves host {host} path {}: the controller answers 404",
            url.route_path()
        ),
    };
    let upstream = &location.upstream;
    let endpoints: Vec<(Ipv4Addr, u16)> = upstream
        .endpoints
        .iter()
        .filter_map(|a| match a {
            SocketAddr::V4(a) => Some((*a.ip(), a.port())),
            SocketAddr::V6(_) => None,
        })
        .collect();
    let ingress = ingresses
        .iter()
        .find(|i| object_ref(&i.metadata) == location.ingress);
    let status_ip = ingress
        .and_then(|i| {
            i.status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .first()?
                .ip
                .clone()
        })
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let controller_pods = cluster.pods.iter().filter(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .map(String::as_str)
            == Some(crate::ingress::DAEMONSET)
    });
    let (node, node_ip) = match status_ip.and_then(|ip| Some((cluster.node_with_ip(ip)?, ip))) {
        Some(n) => n,
        None => controller_pods
            .clone()
            .find_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                let ip = cluster.node_ips().into_iter().find(|(n, _)| *n == node)?.1;
                Some((node, ip))
            })
            .context("no Ingress controller pod runs on a node")?,
    };
    let controller = controller_pods
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
        .find_map(|p| p.metadata.name.clone())
        .map(|n| format!("pod {}/{n}", crate::dns::NAMESPACE))
        .unwrap_or_else(|| "no controller pod".into());
    let hop = Hop {
        title: format!(
            "the Ingress controller on {node} takes Host {host} path {}: Ingress {} {how} -> upstream {} ({} ready endpoint(s))",
            url.route_path(),
            location.ingress,
            upstream.name,
            endpoints.len()
        ),
        detail: vec![
            format!(
                "{controller}, host network, listening on :{} of {node_ip}; user space: it opens its own connection to an endpoint",
                url.port
            ),
            format!(
                "{how} host {} path {} -> service {} ({})",
                if location.host.is_empty() {
                    "*"
                } else {
                    &location.host
                },
                rule_path(&location.path),
                upstream
                    .service
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "-".into()),
                endpoints
                    .iter()
                    .map(|(ip, port)| format!("{ip}:{port}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ],
    };
    Ok(IngressRoute {
        hop,
        node,
        node_ip,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://www.example.com/path?x=1").expect("url");
        assert_eq!(
            u,
            Url {
                https: false,
                host: "www.example.com".into(),
                port: 80,
                path: "/path?x=1".into()
            }
        );
        assert_eq!(u.route_path(), "/path");
        let u = Url::parse("https://a.example:8443").expect("url");
        assert_eq!((u.https, u.port, u.path.as_str()), (true, 8443, "/"));
        for bad in ["ftp://x/", "http:///x", "http://x:0/", "http://u@x/"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
