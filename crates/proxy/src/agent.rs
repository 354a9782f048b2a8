//! `ferry proxy`: watches Services and EndpointSlices and keeps the node's
//! `ip ferry-proxy` table equal to the rendering of the current plan. Every
//! sync computes the whole desired table; only the difference from the last
//! applied one goes to the kernel, in one atomic batch. At start the live
//! table is read back, so a restart changes nothing that is still right:
//! established and new connections keep working while it restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use ferry_netlink::nftables::{Connection, Ruleset, Table};

use crate::health::{self, HealthCheck, Shared};
use crate::model::{Cidr, Plan, Protocol, ServicePort};
use crate::nftables::{Ids, Options};

/// Settings of `ferry proxy`.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// Network namespace to program (a name under /run/netns or a path);
    /// `None`: the current one.
    pub netns: Option<String>,
    /// Shortest time between two syncs (changes in between are batched).
    pub min_sync_interval: Duration,
    /// The pod network; ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: Option<Cidr>,
    /// `/healthz` and `/livez` (kube-proxy: 0.0.0.0:10256).
    pub healthz_address: Option<SocketAddr>,
    /// `/metrics` (kube-proxy: 127.0.0.1:10249).
    pub metrics_address: Option<SocketAddr>,
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
    let status: Shared = Arc::new(Mutex::new(health::Status::default()));
    for (addr, what) in [
        (config.healthz_address, health::Endpoint::Healthz),
        (config.metrics_address, health::Endpoint::Metrics),
    ] {
        if let Some(addr) = addr {
            let listener = health::bind_in(&path, addr)
                .map_err(|e| anyhow::anyhow!("listening on {addr}: {e:#}"))?;
            tokio::spawn(health::serve(listener, what, status.clone()));
        }
    }

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
    let mut syncer = Syncer {
        applied: Ruleset::list(&mut conn, &table)?,
        conn,
        table,
        ids: Ids::default(),
        previous: None,
        health_servers: BTreeMap::new(),
        netns: path.clone(),
        status: status.clone(),
        full: true,
    };
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
            syncer.sync(plan, &config).await;
            last_sync = Instant::now();
            dirty = false;
        }
        match events.next().await {
            Some(Ok((which, init_done))) => {
                if init_done {
                    listed[which] = true;
                }
                if !dirty {
                    health::lock(&status).pending_since = Some(SystemTime::now());
                }
                dirty = true;
            }
            Some(Err(e)) => tracing::warn!("watch: {e:#}"),
            None => return Ok(()),
        }
    }
}

/// The dataplane side of the loop: what was applied, and what follows from
/// a new plan.
struct Syncer {
    conn: Connection,
    table: Table,
    applied: Option<Ruleset>,
    ids: Ids,
    previous: Option<Plan>,
    health_servers: BTreeMap<u16, tokio::task::JoinHandle<()>>,
    netns: PathBuf,
    status: Shared,
    /// The next sync is a full one (first, or after an error).
    full: bool,
}

impl Syncer {
    async fn sync(&mut self, plan: Plan, config: &Config) {
        for p in &plan.problems {
            tracing::warn!(service = %format!("{}/{}", p.namespace, p.name), "{}", p.message);
        }
        let started = Instant::now();
        let options = Options {
            node_ips: node_addresses(&self.netns).await,
            cluster_cidr: config.cluster_cidr,
        };
        if self.previous.is_none()
            && let Some(live) = &self.applied
        {
            // First sync after a (re)start: keep the live ids.
            self.ids.seed(&plan, live);
        }
        let want = crate::nftables::render(&plan, &mut self.ids, &options);
        let batch = want.diff(self.applied.as_ref());
        if !batch.is_empty()
            && let Err(e) = self.conn.apply(&batch)
        {
            // Re-read what is live and try again on the next event.
            tracing::warn!("applying the ruleset: {e}");
            self.applied = Ruleset::list(&mut self.conn, &self.table).ok().flatten();
            self.full = true;
            health::lock(&self.status).sync_errors += 1;
            return;
        }
        let deleted = self.flush_stale_udp(&plan);
        let took = started.elapsed();
        tracing::info!(
            ports = plan.ports.len(),
            changes = batch.len(),
            took_ms = took.as_millis() as u64,
            conntrack_deleted = deleted,
            "synced"
        );
        self.serve_health_checks(&plan);
        {
            let mut s = health::lock(&self.status);
            if self.full {
                s.full.observe(took.as_secs_f64());
            } else {
                s.partial.observe(took.as_secs_f64());
            }
            s.last_sync = Some(SystemTime::now());
            s.pending_since = None;
            s.chains = want.chains.len();
            s.rules = want.chains.iter().map(|c| c.rules.len()).sum();
            s.sets = want.sets.len();
            s.elements = want.sets.iter().map(|s| s.elements.len()).sum();
            s.service_ports = plan.ports.len();
            s.conntrack_deleted += deleted as u64;
            s.health_checks = health_checks(&plan);
        }
        self.full = false;
        self.applied = Some(want);
        self.previous = Some(plan);
    }

    /// UDP has no connection to close: a client that keeps sending from
    /// one port keeps its conntrack entry, and with it a dead endpoint or
    /// the rejection it got while there were none. kube-proxy's fix, here
    /// too: delete the entries of endpoints that went away, and of ports
    /// that went from no endpoints to some.
    fn flush_stale_udp(&mut self, plan: &Plan) -> usize {
        let Some(previous) = &self.previous else {
            return 0;
        };
        let stale = stale_udp(previous, plan);
        if stale.is_empty() {
            return 0;
        }
        let mut ct = match ferry_netlink::conntrack::Conntrack::open_in_netns(&self.netns) {
            Ok(ct) => ct,
            Err(e) => {
                tracing::warn!("conntrack: {e}");
                return 0;
            }
        };
        match ct.delete_any(&stale) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("deleting stale UDP conntrack entries: {e}");
                0
            }
        }
    }

    /// One HTTP server per health-check node port in the plan.
    fn serve_health_checks(&mut self, plan: &Plan) {
        let wanted: BTreeSet<u16> = health_checks(plan).into_keys().collect();
        self.health_servers.retain(|port, task| {
            let keep = wanted.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in wanted {
            if self.health_servers.contains_key(&port) {
                continue;
            }
            match health::bind_in(&self.netns, SocketAddr::from(([0, 0, 0, 0], port))) {
                Ok(listener) => {
                    let task = tokio::spawn(health::serve(
                        listener,
                        health::Endpoint::HealthCheck(port),
                        self.status.clone(),
                    ));
                    self.health_servers.insert(port, task);
                }
                Err(e) => tracing::warn!("health check node port {port}: {e:#}"),
            }
        }
    }
}

/// Health-check node ports of the plan with their local endpoint counts.
fn health_checks(plan: &Plan) -> BTreeMap<u16, HealthCheck> {
    let mut out: BTreeMap<u16, HealthCheck> = BTreeMap::new();
    for (port, cat) in &plan.ports {
        let Some(hc) = port.health_check_node_port else {
            continue;
        };
        // Every port of the Service shares the check; count distinct
        // local endpoint addresses.
        let entry = out.entry(hc).or_insert_with(|| HealthCheck {
            namespace: port.namespace.clone(),
            name: port.name.clone(),
            local_endpoints: 0,
        });
        entry.local_endpoints = entry.local_endpoints.max(
            cat.local
                .iter()
                .map(|e| e.ip)
                .collect::<BTreeSet<_>>()
                .len(),
        );
    }
    out
}

/// Conntrack filters for the UDP entries `next` makes stale.
pub fn stale_udp(previous: &Plan, next: &Plan) -> Vec<ferry_netlink::conntrack::Filter> {
    use ferry_netlink::conntrack::Filter;
    type Key = (String, String, String);
    let key =
        |p: &ServicePort| -> Key { (p.namespace.clone(), p.name.clone(), p.port_name.clone()) };
    let usable = |plan: &Plan| -> BTreeMap<Key, BTreeSet<(Ipv4Addr, u16)>> {
        let mut m: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
        for (port, cat) in &plan.ports {
            if port.protocol != Protocol::Udp {
                continue;
            }
            let set = m.entry(key(port)).or_default();
            set.extend(cat.cluster.iter().chain(&cat.local).map(|e| (e.ip, e.port)));
        }
        m
    };
    let before = usable(previous);
    let after = usable(next);
    let mut filters = Vec::new();
    let mut gone = BTreeSet::new();
    for (key, eps) in &before {
        let now = after.get(key);
        for ep in eps {
            if now.is_none_or(|n| !n.contains(ep)) {
                gone.insert(*ep);
            }
        }
    }
    for (ip, port) in gone {
        filters.push(Filter {
            protocol: Some(17),
            reply_src: Some(ip),
            reply_src_port: Some(port),
            ..Filter::default()
        });
    }
    for (port, _) in next.ports.iter().filter(|(p, c)| {
        p.protocol == Protocol::Udp
            && (!c.cluster.is_empty() || !c.local.is_empty())
            && before.get(&key(p)).is_none_or(|b| b.is_empty())
    }) {
        for ip in port
            .cluster_ips
            .iter()
            .chain(&port.external_ips)
            .chain(&port.load_balancer_ips)
        {
            filters.push(Filter {
                protocol: Some(17),
                original_dst: Some(*ip),
                original_dst_port: Some(port.port),
                ..Filter::default()
            });
        }
        if let Some(np) = port.node_port {
            filters.push(Filter {
                protocol: Some(17),
                original_dst_port: Some(np),
                ..Filter::default()
            });
        }
    }
    filters
}

/// The IPv4 addresses of the node's namespace (NodePorts answer on them).
async fn node_addresses(netns: &Path) -> Vec<Ipv4Addr> {
    let Ok(ns) = ferry_netlink::netns::NetNs::open(netns) else {
        return Vec::new();
    };
    let Ok(nl) = ferry_netlink::Netlink::connect_in(&ns).await else {
        return Vec::new();
    };
    let mut ips: Vec<Ipv4Addr> = nl
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
