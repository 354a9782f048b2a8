//! `ferry proxy`: watches Services and EndpointSlices and keeps the node's
//! `ip ferry-proxy` table equal to the rendering of the current plan. Every
//! sync computes the whole desired table; only the difference from the last
//! applied one (the live table at start) goes to the kernel, in one batch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use ferry_netlink::nftables::{Connection, Ruleset, Table};

/// Settings of `ferry proxy`.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// Network namespace to program (a name under /run/netns or a path);
    /// `None`: the current one.
    pub netns: Option<String>,
    /// Shortest time between two syncs (changes in between are batched).
    pub min_sync_interval: Duration,
}

fn netns_path(spec: Option<&str>) -> PathBuf {
    match spec {
        None => PathBuf::from("/proc/self/ns/net"),
        Some(s) if s.contains('/') => PathBuf::from(s),
        Some(s) => PathBuf::from(ferry_netlink::netns::NETNS_RUN_DIR).join(s),
    }
}

/// Runs until the watches end.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let path = netns_path(config.netns.as_deref());
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_events = reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| {
        e.map(|e| (0usize, matches!(e, watcher::Event::InitDone)))
            .map_err(anyhow::Error::from)
    })
    .boxed();
    let slice_events = reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|e| {
        e.map(|e| (1usize, matches!(e, watcher::Event::InitDone)))
            .map_err(anyhow::Error::from)
    })
    .boxed();
    let mut events = futures::stream::select(svc_events, slice_events);
    // Never sync before both lists are complete: a partial view would
    // remove live rules.
    let mut listed = [false, false];

    let table = Table::new(ferry_netlink::nftables::Family::Ip, crate::nftables::TABLE);
    let mut conn = Connection::open_in_netns(&path)?;
    let mut applied: Option<Ruleset> = Ruleset::list(&mut conn, &table)?;
    let mut dirty = true;
    let mut last_sync = Instant::now() - config.min_sync_interval;
    loop {
        if dirty && listed == [true, true] {
            let wait = config.min_sync_interval.saturating_sub(last_sync.elapsed());
            tokio::time::sleep(wait).await;
            let svcs = services.state();
            let eps = slices.state();
            let svc_refs: Vec<&Service> = svcs.iter().map(|s| s.as_ref()).collect();
            let slice_refs: Vec<&EndpointSlice> = eps.iter().map(|s| s.as_ref()).collect();
            let plan = crate::model::plan(&svc_refs, &slice_refs, &config.node_name);
            for p in &plan.problems {
                tracing::warn!(service = %format!("{}/{}", p.namespace, p.name), "{}", p.message);
            }
            let node_ips = node_addresses(&path).await;
            let want = crate::nftables::render(&plan, &node_ips);
            let batch = want.diff(applied.as_ref());
            let started = Instant::now();
            if !batch.is_empty() {
                match conn.apply(&batch) {
                    Ok(()) => {
                        applied = Some(want);
                        tracing::info!(
                            ports = plan.ports.len(),
                            took_ms = started.elapsed().as_millis() as u64,
                            "synced"
                        );
                    }
                    Err(e) => {
                        // Re-read what is live and try again on the next event.
                        tracing::warn!("applying the ruleset: {e}");
                        applied = Ruleset::list(&mut conn, &table).ok().flatten();
                    }
                }
            }
            last_sync = Instant::now();
            dirty = false;
        }
        match events.next().await {
            Some(Ok((which, init_done))) => {
                if init_done {
                    listed[which] = true;
                }
                dirty = true;
            }
            Some(Err(e)) => tracing::warn!("watch: {e:#}"),
            None => return Ok(()),
        }
    }
}

/// The IPv4 addresses of the node's namespace (NodePorts answer on them).
async fn node_addresses(netns: &std::path::Path) -> Vec<std::net::Ipv4Addr> {
    let Ok(ns) = ferry_netlink::netns::NetNs::open(netns) else {
        return Vec::new();
    };
    let Ok(nl) = ferry_netlink::Netlink::connect_in(&ns).await else {
        return Vec::new();
    };
    let mut ips: Vec<std::net::Ipv4Addr> = nl
        .addresses(None)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.address)
        .filter(|ip| !ip.is_loopback())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}
