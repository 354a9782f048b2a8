//! `ferry proxy`: watches Services and EndpointSlices and keeps the node's
//! `ip ferry-proxy` table equal to the rendering of the current plan. Every
//! sync computes the whole desired table; only the difference from the last
//! applied one goes to the kernel, in one atomic batch. At start the live
//! table is read back, so a restart changes nothing that is still right:
//! established and new connections keep working while it restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use ferry_netlink::nftables::{Connection, Ruleset, Table};

use crate::health::{self, HealthCheck, Shared};
use crate::model::{Categorized, Cidr, Plan, Protocol, ServicePort};
use crate::nftables::{Ids, Options, SvcKey, Tables};

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
        e.map(|e| match e {
            watcher::Event::Apply(s) | watcher::Event::Delete(s) => Change::Service(
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            ),
            watcher::Event::InitDone => Change::Listed(0),
            watcher::Event::Init | watcher::Event::InitApply(_) => Change::All,
        })
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
        e.map(|e| match e {
            watcher::Event::Apply(s) | watcher::Event::Delete(s) => match slice_service(&s) {
                Some((ns, name)) => Change::Service(ns, name),
                None => Change::Nothing,
            },
            watcher::Event::InitDone => Change::Listed(1),
            watcher::Event::Init | watcher::Event::InitApply(_) => Change::All,
        })
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
        tables: None,
        ports: HashMap::new(),
        node_ips: Vec::new(),
        health_servers: BTreeMap::new(),
        netns: path.clone(),
        status: status.clone(),
    };
    // Services changed since the last sync; `None` means everything.
    let mut dirty: Option<BTreeSet<SvcKey>> = None;
    let mut pending = true;
    let mut last_sync = Instant::now() - config.min_sync_interval;
    loop {
        if pending && listed == [true, true] {
            let wait = config.min_sync_interval.saturating_sub(last_sync.elapsed());
            tokio::time::sleep(wait).await;
            // Changes that arrived while waiting join this sync.
            while let Some(Some(event)) = events.next().now_or_never() {
                note(event, &mut dirty, &mut listed);
            }
            let node_ips = node_addresses(&path).await;
            let full = dirty.is_none() || node_ips != syncer.node_ips || syncer.tables.is_none();
            if full {
                let svcs = services.state();
                let eps = slices.state();
                let svc_refs: Vec<&Service> = svcs.iter().map(|s| s.as_ref()).collect();
                let slice_refs: Vec<&EndpointSlice> = eps.iter().map(|s| s.as_ref()).collect();
                let plan = crate::model::plan(&svc_refs, &slice_refs, &config.node_name);
                syncer.full_sync(plan, node_ips, &config);
            } else {
                let started = Instant::now();
                let mut changed = Vec::new();
                // One pass over the slices picks those of the changed
                // Services.
                let dirty = dirty.unwrap_or_default();
                let all_slices = slices.state();
                let mut theirs: HashMap<SvcKey, Vec<&EndpointSlice>> = HashMap::new();
                for slice in &all_slices {
                    if let Some(key) = slice_service(slice).filter(|k| dirty.contains(k)) {
                        theirs.entry(key).or_default().push(slice.as_ref());
                    }
                }
                for key in dirty {
                    let (ns, name) = (&key.0, &key.1);
                    let mine = theirs.remove(&key).unwrap_or_default();
                    let plan = match services.get(&ObjectRef::new(name).within(ns)) {
                        Some(svc) => crate::model::plan(&[svc.as_ref()], &mine, &config.node_name),
                        None => Plan::default(),
                    };
                    changed.push((key, plan));
                }
                syncer.partial_sync(changed, started);
            }
            last_sync = Instant::now();
            pending = false;
            dirty = Some(BTreeSet::new());
        }
        match events.next().await {
            Some(Ok(change)) => {
                if !pending {
                    health::lock(&status).pending_since = Some(SystemTime::now());
                }
                note(Ok(change), &mut dirty, &mut listed);
                pending = true;
            }
            Some(Err(e)) => tracing::warn!("watch: {e:#}"),
            None => return Ok(()),
        }
    }
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service an EndpointSlice belongs to (its namespace and label).
fn slice_service(slice: &EndpointSlice) -> Option<SvcKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

/// What a watch event means for the next sync.
enum Change {
    Service(String, String),
    /// A (re)list: everything may have changed.
    All,
    /// The initial list of watch `0` (Services) or `1` (slices) is complete.
    Listed(usize),
    Nothing,
}

fn note(
    event: anyhow::Result<Change>,
    dirty: &mut Option<BTreeSet<SvcKey>>,
    listed: &mut [bool; 2],
) {
    match event {
        Ok(Change::Service(ns, name)) => {
            if let Some(d) = dirty {
                d.insert((ns, name));
            }
        }
        Ok(Change::All) => *dirty = None,
        Ok(Change::Listed(which)) => {
            listed[which] = true;
            *dirty = None;
        }
        Ok(Change::Nothing) => {}
        Err(e) => tracing::warn!("watch: {e:#}"),
    }
}

type Ports = Vec<(ServicePort, Categorized)>;

/// The dataplane side of the loop: what was applied, and what follows from
/// a new plan.
struct Syncer {
    conn: Connection,
    table: Table,
    /// The live table as listed at start or after an error; a full sync
    /// diffs against it (and lists it again when it is `None`).
    applied: Option<Ruleset>,
    ids: Ids,
    /// Service fragments, for partial syncs (`None`: next sync is full).
    tables: Option<Tables>,
    /// Each Service's ports as last programmed.
    ports: HashMap<SvcKey, Ports>,
    node_ips: Vec<Ipv4Addr>,
    health_servers: BTreeMap<u16, tokio::task::JoinHandle<()>>,
    netns: PathBuf,
    status: Shared,
}

impl Syncer {
    /// Renders every Service and applies the difference from the live
    /// table (the first sync, after a relist, an error, or a change of the
    /// node's addresses).
    fn full_sync(&mut self, plan: Plan, node_ips: Vec<Ipv4Addr>, config: &Config) {
        warn_problems(&plan);
        let started = Instant::now();
        let options = Options {
            node_ips: node_ips.clone(),
            cluster_cidr: config.cluster_cidr,
            node_name: Some(config.node_name.clone()),
        };
        if self.applied.is_none() {
            self.applied = Ruleset::list(&mut self.conn, &self.table).ok().flatten();
        }
        if self.ports.is_empty()
            && let Some(live) = &self.applied
        {
            // First sync after a (re)start: keep the live ids.
            self.ids.seed(&plan, live);
        }
        let (want, tables) = Tables::build(&plan, &mut self.ids, &options);
        let batch = want.diff(self.applied.as_ref());
        if !batch.is_empty()
            && let Err(e) = self.conn.apply(&batch)
        {
            self.failed(&e);
            return;
        }
        let next: HashMap<SvcKey, Ports> = crate::nftables::by_service(&plan)
            .into_iter()
            .map(|(k, p)| (k, p.to_vec()))
            .collect();
        let previous = Plan {
            ports: self.ports.values().flatten().cloned().collect(),
            problems: Vec::new(),
        };
        let deleted = if self.ports.is_empty() {
            0
        } else {
            self.flush_stale_udp(&stale_udp(&previous, &plan))
        };
        self.ports = next;
        self.node_ips = node_ips;
        self.tables = Some(tables);
        // Not kept: the fragments hold the same elements, and the next full
        // sync (rare) lists the live table instead.
        drop(want);
        self.applied = None;
        self.finish(true, started, batch.len(), deleted);
    }

    /// Re-renders only the Services that changed and applies their
    /// difference: what keeps a one-endpoint change in the milliseconds
    /// with 10,000 Services.
    fn partial_sync(&mut self, changed: Vec<(SvcKey, Plan)>, started: Instant) {
        let Some(tables) = self.tables.as_mut() else {
            return;
        };
        let mut batch = ferry_netlink::nftables::Batch::new();
        let mut stale = Vec::new();
        for (svc, plan) in changed {
            warn_problems(&plan);
            tables.update(&svc, &plan.ports, &mut self.ids, &mut batch);
            let previous = Plan {
                ports: self.ports.get(&svc).cloned().unwrap_or_default(),
                problems: Vec::new(),
            };
            stale.extend(stale_udp(&previous, &plan));
            if plan.ports.is_empty() {
                self.ports.remove(&svc);
            } else {
                self.ports.insert(svc, plan.ports);
            }
        }
        if !batch.is_empty() {
            if let Err(e) = self.conn.apply(&batch) {
                self.failed(&e);
                return;
            }
            // The kernel no longer matches `applied`; a full sync lists it.
            self.applied = None;
        }
        let deleted = self.flush_stale_udp(&stale);
        self.finish(false, started, batch.len(), deleted);
    }

    fn failed(&mut self, e: &ferry_netlink::nftables::Error) {
        // Re-read what is live and start over with a full sync.
        tracing::warn!("applying the ruleset: {e}");
        self.applied = Ruleset::list(&mut self.conn, &self.table).ok().flatten();
        self.tables = None;
        health::lock(&self.status).sync_errors += 1;
    }

    fn finish(&mut self, full: bool, started: Instant, changes: usize, deleted: usize) {
        let took = started.elapsed();
        tracing::info!(
            full,
            services = self.ports.len(),
            changes,
            took_ms = took.as_secs_f64() * 1000.0,
            conntrack_deleted = deleted,
            "synced"
        );
        let checks = health_checks(self.ports.values().flatten());
        self.serve_health_checks(&checks);
        let (elements, chains) = self.tables.as_ref().map(Tables::counts).unwrap_or_default();
        let mut s = health::lock(&self.status);
        if full {
            s.full.observe(took.as_secs_f64());
        } else {
            s.partial.observe(took.as_secs_f64());
        }
        s.last_sync = Some(SystemTime::now());
        s.pending_since = None;
        s.chains = chains;
        s.elements = elements;
        s.service_ports = self.ports.values().map(Vec::len).sum();
        s.conntrack_deleted += deleted as u64;
        s.health_checks = checks;
    }

    /// UDP has no connection to close: a client that keeps sending from
    /// one port keeps its conntrack entry, and with it a dead endpoint or
    /// the rejection it got while there were none. kube-proxy's fix, here
    /// too: delete the entries of endpoints that went away, and of ports
    /// that went from no endpoints to some.
    fn flush_stale_udp(&mut self, stale: &[ferry_netlink::conntrack::Filter]) -> usize {
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
        match ct.delete_any(stale) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("deleting stale UDP conntrack entries: {e}");
                0
            }
        }
    }

    /// One HTTP server per health-check node port.
    fn serve_health_checks(&mut self, checks: &BTreeMap<u16, HealthCheck>) {
        self.health_servers.retain(|port, task| {
            let keep = checks.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in checks.keys().copied() {
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

/// Services the plan skipped, and why.
fn warn_problems(plan: &Plan) {
    for p in &plan.problems {
        tracing::warn!(service = %format!("{}/{}", p.namespace, p.name), "{}", p.message);
    }
}

/// Health-check node ports with their local endpoint counts.
fn health_checks<'a>(
    ports: impl Iterator<Item = &'a (ServicePort, Categorized)>,
) -> BTreeMap<u16, HealthCheck> {
    let mut out: BTreeMap<u16, HealthCheck> = BTreeMap::new();
    for (port, cat) in ports {
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
