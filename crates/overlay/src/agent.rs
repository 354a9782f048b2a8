//! The `ferry overlay` agent: sets up `flannel.1` in the node's namespace,
//! publishes the VTEP MAC on the own Node and follows the other Nodes.

use std::net::Ipv4Addr;

use anyhow::{Context, anyhow};
use ferry_netlink::Netlink;
use ferry_netlink::link::{MacAddress, Vxlan};
use ferry_netlink::netns::NetNs;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::model::{self, Cidr, Mac, NodeInfo};

/// Settings of `ferry overlay`.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// Path or name of the node's network namespace; `None`: the current one.
    pub netns: Option<String>,
    pub iface: String,
    pub public_ip: Option<Ipv4Addr>,
    /// `--ip-masq`: the cluster CIDR whose outbound traffic is masqueraded.
    pub ip_masq: Option<String>,
}

fn open_netns(spec: Option<&str>) -> anyhow::Result<NetNs> {
    Ok(match spec {
        None => NetNs::current()?,
        Some(s) if s.contains('/') => NetNs::open(s)?,
        Some(s) => NetNs::open_named(s)?,
    })
}

/// Extracts the overlay view of a Node.
pub fn node_info(node: &Node) -> NodeInfo {
    let name = node.metadata.name.clone().unwrap_or_default();
    let ann = node.metadata.annotations.as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(String::as_str);
    let internal = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| {
            a.iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.as_str())
        });
    NodeInfo::from_parts(
        &name,
        node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        get(model::ANNOTATION_BACKEND_DATA),
        get(model::ANNOTATION_PUBLIC_IP),
        internal,
    )
}

/// Runs until the watch ends or fails.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let netns = open_netns(config.netns.as_deref())?;
    let nl = Netlink::connect_in(&netns).await?;
    let underlay = nl.require_link(&config.iface).await?;
    let public_ip = match config.public_ip {
        Some(ip) => ip,
        None => nl
            .addresses(Some(underlay.index))
            .await?
            .first()
            .map(|a| a.address)
            .ok_or_else(|| anyhow!("no IPv4 address on {}", config.iface))?,
    };
    let nodes: Api<Node> = Api::all(client);

    // Wait for our podCIDR (node IPAM assigns it).
    let own_cidr = loop {
        if let Some(n) = nodes.get_opt(&config.node_name).await?
            && let Some(c) = n
                .spec
                .and_then(|s| s.pod_cidr)
                .as_deref()
                .and_then(Cidr::parse)
        {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };

    // Device: reuse the existing one's MAC, else derive it from the node name.
    let mtu = underlay.mtu.saturating_sub(model::OVERHEAD);
    let existing = nl.link(model::DEVICE).await?;
    let mac = match &existing {
        Some(l) => l
            .mac
            .map(|m| Mac(m.0))
            .unwrap_or_else(|| Mac::for_node(&config.node_name)),
        None => Mac::for_node(&config.node_name),
    };
    let ok = existing.as_ref().is_some_and(|l| {
        l.vxlan.as_ref().is_some_and(|v| {
            v.vni == Some(model::VNI) && v.port == Some(model::PORT) && v.local == Some(public_ip)
        }) && l.mtu == mtu
    });
    if !ok {
        if existing.is_some() {
            nl.delete_link(model::DEVICE).await?;
        }
        nl.create_vxlan(&Vxlan {
            name: model::DEVICE,
            vni: model::VNI,
            local: Some(public_ip),
            port: model::PORT,
            learning: false,
            mtu: Some(mtu),
            underlay: Some(underlay.index),
            mac: Some(MacAddress(mac.0)),
        })
        .await?;
    }
    let dev = nl.require_link(model::DEVICE).await?;
    let (addr, len) = model::device_address(own_cidr);
    for a in nl.addresses(Some(dev.index)).await? {
        if (a.address, a.prefix_len) != (addr, len) {
            nl.delete_address(dev.index, a.address, a.prefix_len)
                .await?;
        }
    }
    nl.replace_address(dev.index, addr, len).await?;
    nl.set_up(model::DEVICE).await?;
    ferry_netlink::sysctl::write_in(&netns, "net.ipv4.ip_forward", "1")?;

    nodes
        .patch(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(model::own_annotations(mac, public_ip)),
        )
        .await
        .context("annotating the own Node")?;
    tracing::info!(node = %config.node_name, %mac, %public_ip, %mtu, "flannel.1 ready");

    let masq = match config.ip_masq.as_deref() {
        Some(c) => Some(
            Cidr::parse(c).ok_or_else(|| anyhow!("--cluster-cidr {c:?} is not an IPv4 CIDR"))?,
        ),
        None => None,
    };
    let mut masq_nodes: Option<std::collections::BTreeSet<Ipv4Addr>> = None;

    let (reader, writer) = reflector::store();
    let mut events = reflector(writer, watcher(nodes, watcher::Config::default()))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, "node watch");
            continue;
        }
        let infos: Vec<NodeInfo> = reader.state().iter().map(|n| node_info(n)).collect();
        let want = model::desired(&config.node_name, &infos);
        if let Err(error) = crate::apply::apply(&nl, dev.index, &want).await {
            tracing::warn!(%error, "programming flannel.1");
        }
        if let Some(cluster) = masq {
            let node_ips: std::collections::BTreeSet<Ipv4Addr> =
                infos.iter().filter_map(|i| i.public_ip).collect();
            if masq_nodes.as_ref() != Some(&node_ips) {
                match crate::masquerade::apply(netns.path(), cluster, &node_ips) {
                    Ok(()) => masq_nodes = Some(node_ips),
                    Err(error) => tracing::warn!(%error, "programming the masquerade table"),
                }
            }
        }
    }
    Ok(())
}
