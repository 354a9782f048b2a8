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
//! - `service-ids` (K3 → `id . n`) and `node-port-ids` (K2 → `id . n`):
//!   plain ports, n endpoints; one rule draws `numgen random mod BUCKETS`,
//!   folds it to a slot with the constant map `reduce` (`n . bucket` →
//!   `bucket mod n`, one row per endpoint count in use) and DNATs to the
//!   element of `backends` (`id . slot` → `addr . port`): one element per
//!   endpoint, so a Service costs a few elements whatever its size;
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ferry_netlink::nftables::{
    Chain, ChainType, CmpOp, DataType, ElementData, Family, Hook, Load, Register, Rule, Ruleset,
    Set, SetElement, SetFlags, Table, Value, Verdict, priority,
};

use crate::model::{Categorized, Cidr, Endpoint, Plan, Protocol, Scheduler, ServicePort};

/// The proxy's table.
pub const TABLE: &str = "ferry-proxy";
/// Random draws per pick, folded onto the endpoints by `reduce`: 60
/// divides evenly by 1-6, 10, 12, 15, 20 and 30 endpoints, so those counts
/// get exactly equal shares (others are off by at most one draw in 60).
/// `wrr` sets hold this many weighted slots.
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

    /// Frees the ids of `sets`.
    fn release(&mut self, sets: &HashSet<SetKey>) {
        for key in sets {
            if let Some(id) = self.by_key.remove(key) {
                self.free.push(id);
            }
        }
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

    /// Takes over the ids a running table already uses (after a restart),
    /// so the first sync rewrites nothing that is still right. A set's id
    /// is read from the element its first address (or NodePort) has in
    /// `service-ids`/`service-chains` (`node-port-*`).
    pub fn seed(&mut self, plan: &Plan, live: &Ruleset) {
        let lookup = |maps: [&str; 2], key: &Value| -> Option<u32> {
            live.sets
                .iter()
                .filter(|s| maps.contains(&s.set.name.as_str()))
                .flat_map(|s| &s.elements)
                .find(|e| &e.key == key)
                .and_then(|e| match &e.data {
                    Some(ElementData::Value(v)) => mark_at(v, 0),
                    Some(ElementData::Verdict(Verdict::Goto(chain))) => {
                        chain.strip_prefix("svc-")?.parse().ok()
                    }
                    _ => None,
                })
        };
        let mut taken: HashSet<u32> = self.by_key.values().copied().collect();
        for (port, _) in &plan.ports {
            let internal = port.cluster_ips.first().map(|ip| {
                (
                    port.internal_local,
                    ["service-ids", "service-chains"],
                    k3(*ip, port.protocol, port.port),
                )
            });
            let external_local = port.external_local && port.has_external();
            let external = port
                .external_ips
                .iter()
                .chain(&port.load_balancer_ips)
                .next()
                .map(|ip| {
                    (
                        external_local,
                        ["service-ids", "service-chains"],
                        k3(*ip, port.protocol, port.port),
                    )
                })
                .or_else(|| {
                    port.node_port.map(|np| {
                        (
                            external_local,
                            ["node-port-ids", "node-port-chains"],
                            k2(port.protocol, np),
                        )
                    })
                });
            for (local, maps, key) in internal.into_iter().chain(external) {
                let set = SetKey::of(port, local);
                if self.by_key.contains_key(&set) {
                    continue;
                }
                if let Some(id) = lookup(maps, &key).filter(|id| *id > 0 && taken.insert(*id)) {
                    self.by_key.insert(set, id);
                    self.next = self.next.max(id);
                }
            }
        }
        // Ids below `next` that nobody took are free.
        self.free = (1..=self.next)
            .filter(|id| !taken.contains(id))
            .rev()
            .collect();
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
    /// This node: only its own endpoints can hairpin (a pod's traffic is
    /// NATed on its own node). `None`: every endpoint.
    pub node_name: Option<String>,
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

/// A port needs its own chain: affinity, another scheduler, or more
/// endpoints than the shared `reduce` map can reach (a draw mod
/// [`BUCKETS`] never picks slot 60 or above).
fn needs_chain(port: &ServicePort, cat: &Categorized) -> bool {
    special(port) || cat.cluster.len() > BUCKETS as usize || cat.local.len() > BUCKETS as usize
}

/// Field `index` of a value made of `mark` fields (ids, counts, slots;
/// host byte order), as [`Value::mark`] writes them.
pub fn mark_at(v: &Value, index: usize) -> Option<u32> {
    let bytes = v.as_bytes().get(index * 4..index * 4 + 4)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
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

/// A Service: namespace and name.
pub type SvcKey = (String, String);

/// Set elements collected while walking the plan (one Service's, or the
/// union of all).
#[derive(Clone, Debug, Default, PartialEq)]
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
    pod_external_ids: Vec<SetElement>,
    pod_external_chains: Vec<SetElement>,
    masq_node_ports: Vec<SetElement>,
    firewall: Vec<SetElement>,
    firewall_allow: Vec<SetElement>,
    backends: Vec<SetElement>,
    affinity_endpoints: Vec<SetElement>,
    /// Shared between Services (counted, not owned): endpoint counts of
    /// plain sets (rows of `reduce`), ClusterIPs, endpoint addresses.
    counts: BTreeSet<u32>,
    cluster_ips: BTreeSet<Ipv4Addr>,
    hairpin: BTreeSet<Ipv4Addr>,
}

/// A shared key: which set, and the key.
type Shared = (&'static str, Value);

impl Elements {
    /// The sets whose elements belong to exactly one Service.
    fn owned(&self) -> [(&'static str, &Vec<SetElement>); 16] {
        [
            ("service-ids", &self.service_ids),
            ("service-chains", &self.service_chains),
            ("drop", &self.drop),
            ("no-endpoints", &self.no_endpoints),
            ("node-port-ids", &self.node_port_ids),
            ("node-port-chains", &self.node_port_chains),
            ("node-port-drop", &self.node_port_drop),
            ("node-port-no-endpoints", &self.node_port_no_endpoints),
            ("masq-external", &self.masq_external),
            ("pod-external-ids", &self.pod_external_ids),
            ("pod-external-chains", &self.pod_external_chains),
            ("masq-node-ports", &self.masq_node_ports),
            ("firewall", &self.firewall),
            ("firewall-allow", &self.firewall_allow),
            ("backends", &self.backends),
            ("affinity-endpoints", &self.affinity_endpoints),
        ]
    }

    fn owned_mut(&mut self) -> [&mut Vec<SetElement>; 16] {
        [
            &mut self.service_ids,
            &mut self.service_chains,
            &mut self.drop,
            &mut self.no_endpoints,
            &mut self.node_port_ids,
            &mut self.node_port_chains,
            &mut self.node_port_drop,
            &mut self.node_port_no_endpoints,
            &mut self.masq_external,
            &mut self.pod_external_ids,
            &mut self.pod_external_chains,
            &mut self.masq_node_ports,
            &mut self.firewall,
            &mut self.firewall_allow,
            &mut self.backends,
            &mut self.affinity_endpoints,
        ]
    }

    /// Keys of the shared sets this holds (`reduce` rows by count).
    fn shared(&self) -> BTreeSet<Shared> {
        let mut out = BTreeSet::new();
        out.extend(
            self.counts
                .iter()
                .map(|n| ("reduce", Value::new().mark(*n))),
        );
        out.extend(
            self.cluster_ips
                .iter()
                .map(|ip| ("cluster-ips", Value::new().ipv4(*ip))),
        );
        out.extend(
            self.hairpin
                .iter()
                .map(|ip| ("hairpin", Value::new().ipv4(*ip).ipv4(*ip))),
        );
        out
    }

    fn merge(&mut self, other: &Elements) {
        for (mine, theirs) in self.owned_mut().into_iter().zip(other.owned()) {
            mine.extend(theirs.1.iter().cloned());
        }
        self.counts.extend(&other.counts);
        self.cluster_ips.extend(&other.cluster_ips);
        self.hairpin.extend(&other.hairpin);
    }
}

/// Who holds which dispatch key: a second Service claiming the same
/// address and port (e.g. the same externalIP) is skipped instead of
/// failing the whole batch.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    /// Services by a small number, so a claim does not copy names.
    services: HashMap<SvcKey, u32>,
    owners: HashMap<Value, u32>,
}

impl Claims {
    fn number(&mut self, svc: &SvcKey) -> u32 {
        if let Some(n) = self.services.get(svc) {
            return *n;
        }
        let n = self.services.len() as u32;
        self.services.insert(svc.clone(), n);
        n
    }

    fn take(&mut self, key: &Value, svc: &SvcKey) -> bool {
        let me = self.number(svc);
        match self.owners.get(key) {
            Some(owner) => *owner == me,
            None => {
                self.owners.insert(key.clone(), me);
                true
            }
        }
    }

    /// Gives up the keys a Service held (its last fragment's).
    fn release(&mut self, keys: &[Value]) {
        for key in keys {
            self.owners.remove(key);
        }
    }
}

/// What one Service contributes to the table.
#[derive(Clone, Debug, Default, PartialEq)]
struct Fragment {
    elements: Elements,
    /// Special backend sets' chains (and affinity maps), by id.
    chains: BTreeMap<u32, SetChain>,
    sets: Vec<SetKey>,
    /// Dispatch keys this Service holds in [`Claims`].
    claimed: Vec<Value>,
}

/// Which dispatch maps a key goes into: service addresses (K3) or
/// NodePorts (K2).
#[derive(Clone, Copy)]
enum Dispatch {
    Address,
    NodePort,
}

impl Elements {
    /// The id map, chain vmap, drop set and reject set of one kind of key.
    fn dispatch_maps(&mut self, kind: Dispatch) -> [&mut Vec<SetElement>; 4] {
        match kind {
            Dispatch::Address => [
                &mut self.service_ids,
                &mut self.service_chains,
                &mut self.drop,
                &mut self.no_endpoints,
            ],
            Dispatch::NodePort => [
                &mut self.node_port_ids,
                &mut self.node_port_chains,
                &mut self.node_port_drop,
                &mut self.node_port_no_endpoints,
            ],
        }
    }

    /// A plain backend set's map value: its id and endpoint count (whose
    /// `reduce` row it needs).
    fn plain_target(&mut self, id: u32, endpoints: usize) -> Value {
        self.counts.insert(endpoints as u32);
        Value::new().mark(id).mark(endpoints as u32)
    }
}

/// Puts `key` where `target` sends it, unless another Service holds it.
fn dispatch(
    f: &mut Fragment,
    claims: &mut Claims,
    svc: &SvcKey,
    kind: Dispatch,
    key: Value,
    target: &Target<'_>,
    special: bool,
) -> bool {
    // NodePort keys live in their own maps; tag the claim so it cannot
    // collide with an address key.
    let claim = match kind {
        Dispatch::Address => key.clone(),
        Dispatch::NodePort => Value::new().bytes(b"np").bytes(key.as_bytes()),
    };
    if !claims.take(&claim, svc) {
        return false;
    }
    f.claimed.push(claim);
    let element = SetElement::new(key);
    let element = match target {
        Target::Set { id, .. } if special => element.verdict(Verdict::Goto(set_chain(*id))),
        Target::Set { id, endpoints } => {
            element.data(f.elements.plain_target(*id, endpoints.len()))
        }
        Target::Drop | Target::Reject => element,
    };
    let [ids, chains, drop, reject] = f.elements.dispatch_maps(kind);
    match target {
        Target::Set { .. } if special => chains.push(element),
        Target::Set { .. } => ids.push(element),
        Target::Drop => drop.push(element),
        Target::Reject => reject.push(element),
    }
    true
}

fn table() -> Table {
    Table::new(Family::Ip, TABLE).comment("ferry proxy: Services")
}

/// The fragment of one Service (`ports`: all its ports, from the plan).
fn render_service(
    svc: &SvcKey,
    ports: &[(ServicePort, Categorized)],
    ids: &mut Ids,
    claims: &mut Claims,
    options: &Options,
) -> Fragment {
    let node = options.node_name.as_deref();
    let mut f = Fragment::default();
    let mut emitted: BTreeMap<u32, Option<SetChain>> = BTreeMap::new();
    for (port, cat) in ports {
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
                f.sets.push(key);
                Target::Set { id, endpoints }
            } else if *has_any {
                Target::Drop
            } else {
                Target::Reject
            }
        };
        let internal = target(port.internal_local);
        let external = target(port.external_local && port.has_external());
        // Pods reaching an external or LoadBalancer IP get Cluster
        // semantics even under a Local policy (as kube-proxy does).
        let from_pods = if port.external_local && options.cluster_cidr.is_some() {
            match target(false) {
                Target::Set { id, endpoints } => Some((id, endpoints)),
                _ => None,
            }
        } else {
            None
        };
        let special = needs_chain(port, cat);
        let policies = [
            port.internal_local,
            port.external_local && port.has_external(),
        ];
        for (t, local) in [&internal, &external].into_iter().zip(policies) {
            if let Target::Set { id, endpoints } = t {
                emitted.entry(*id).or_insert_with(|| {
                    emit_set(&mut f.elements, node, port, *id, local, special, endpoints)
                });
            }
        }
        if let Some((id, endpoints)) = from_pods {
            emitted.entry(id).or_insert_with(|| {
                emit_set(&mut f.elements, node, port, id, false, special, endpoints)
            });
        }

        for ip in &port.cluster_ips {
            f.elements.cluster_ips.insert(*ip);
            let key = k3(*ip, port.protocol, port.port);
            dispatch(
                &mut f,
                claims,
                svc,
                Dispatch::Address,
                key,
                &internal,
                special,
            );
        }
        let masquerade_external = !port.external_local;
        for ip in port.external_ips.iter().chain(&port.load_balancer_ips) {
            let key = k3(*ip, port.protocol, port.port);
            if !dispatch(
                &mut f,
                claims,
                svc,
                Dispatch::Address,
                key.clone(),
                &external,
                special,
            ) {
                continue;
            }
            if masquerade_external && matches!(external, Target::Set { .. }) {
                f.elements.masq_external.push(SetElement::new(key.clone()));
            }
            if let Some((id, endpoints)) = from_pods {
                let e = SetElement::new(key);
                let el = &mut f.elements;
                if special {
                    el.pod_external_chains
                        .push(e.verdict(Verdict::Goto(set_chain(id))));
                } else {
                    let value = el.plain_target(id, endpoints.len());
                    el.pod_external_ids.push(e.data(value));
                }
            }
        }
        if !port.source_ranges.is_empty() {
            for ip in &port.load_balancer_ips {
                let key = k3(*ip, port.protocol, port.port);
                f.elements.firewall.push(SetElement::new(key.clone()));
                for range in &port.source_ranges {
                    let (first, last) = range.bounds();
                    f.elements.firewall_allow.push(
                        SetElement::new(key.clone().ipv4(first)).range_end(key.clone().ipv4(last)),
                    );
                }
            }
        }
        if let Some(node_port) = port.node_port {
            let key = k2(port.protocol, node_port);
            if dispatch(
                &mut f,
                claims,
                svc,
                Dispatch::NodePort,
                key.clone(),
                &external,
                special,
            ) && masquerade_external
                && matches!(external, Target::Set { .. })
            {
                f.elements.masq_node_ports.push(SetElement::new(key));
            }
        }
    }
    f.chains = emitted
        .into_iter()
        .filter_map(|(id, c)| Some((id, c?)))
        .collect();
    f.sets.sort();
    f.sets.dedup();
    f
}

/// Splits a plan into its Services' ports (the plan is sorted by Service).
pub fn by_service(plan: &Plan) -> Vec<(SvcKey, &[(ServicePort, Categorized)])> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=plan.ports.len() {
        let boundary = i == plan.ports.len() || {
            let (a, b) = (&plan.ports[i - 1].0, &plan.ports[i].0);
            (&a.namespace, &a.name) != (&b.namespace, &b.name)
        };
        if boundary {
            let p = &plan.ports[start].0;
            out.push(((p.namespace.clone(), p.name.clone()), &plan.ports[start..i]));
            start = i;
        }
    }
    out
}

/// The whole desired table for `plan`. `ids` carries backend-set ids from
/// one sync to the next.
pub fn render(plan: &Plan, ids: &mut Ids, options: &Options) -> Ruleset {
    Tables::build(plan, ids, options).0
}

/// The table as Service fragments, kept between syncs so a change to one
/// Service is a small batch computed from that Service alone.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    fragments: HashMap<SvcKey, Fragment>,
    /// How many Services hold each shared key.
    refs: HashMap<Shared, usize>,
    claims: Claims,
    options: Options,
}

impl Tables {
    /// Every Service rendered; the whole table and the state for later
    /// partial updates.
    pub fn build(plan: &Plan, ids: &mut Ids, options: &Options) -> (Ruleset, Tables) {
        let mut tables = Tables {
            options: options.clone(),
            ..Tables::default()
        };
        let mut used = HashSet::new();
        let mut all = Elements::default();
        let mut chains = BTreeMap::new();
        for (svc, ports) in by_service(plan) {
            let f = render_service(&svc, ports, ids, &mut tables.claims, options);
            used.extend(f.sets.iter().cloned());
            all.merge(&f.elements);
            chains.extend(f.chains.iter().map(|(id, c)| (*id, c.clone())));
            for key in f.elements.shared() {
                *tables.refs.entry(key).or_insert(0) += 1;
            }
            tables.fragments.insert(svc, f);
        }
        ids.retain(&used);
        (finish(table(), all, chains, options), tables)
    }

    /// Element and object counts of the table (for metrics).
    pub fn counts(&self) -> (usize, usize) {
        let elements = self
            .fragments
            .values()
            .map(|f| {
                f.elements
                    .owned()
                    .iter()
                    .map(|(_, v)| v.len())
                    .sum::<usize>()
            })
            .sum::<usize>()
            + self.refs.len();
        let chains = self.fragments.values().map(|f| f.chains.len()).sum();
        (elements, chains)
    }

    /// Re-renders one Service (`ports` empty: it is gone) and adds to
    /// `batch` what changes in the kernel. Returns whether anything did.
    pub fn update(
        &mut self,
        svc: &SvcKey,
        ports: &[(ServicePort, Categorized)],
        ids: &mut Ids,
        batch: &mut ferry_netlink::nftables::Batch,
    ) -> bool {
        let old = self.fragments.remove(svc).unwrap_or_default();
        self.claims.release(&old.claimed);
        let new = if ports.is_empty() {
            Fragment::default()
        } else {
            render_service(svc, ports, ids, &mut self.claims, &self.options)
        };
        // Ids the Service no longer uses are freed.
        let gone: HashSet<SetKey> = old
            .sets
            .iter()
            .filter(|k| !new.sets.contains(k))
            .cloned()
            .collect();
        ids.release(&gone);
        if old == new {
            if !ports.is_empty() {
                self.fragments.insert(svc.clone(), new);
            }
            return false;
        }
        let table = table();
        let defs = set_definitions(&table);
        let def = |name: &str| defs.iter().find(|s| s.name == name).cloned();
        // 1. New chains (and affinity maps) before anything jumps to them;
        //    changed chains get their rules replaced.
        for (id, (chain, rules, affinity)) in &new.chains {
            match old.chains.get(id) {
                Some((_, old_rules, old_affinity)) => {
                    if old_affinity != affinity {
                        // A new timeout: a new map (its entries are lost).
                        batch.flush_chain(chain);
                        if let Some(a) = old_affinity {
                            batch.delete_set(a);
                        }
                        if let Some(a) = affinity {
                            batch.add_set(a);
                        }
                        rules.iter().for_each(|r| {
                            batch.add_rule(chain, r);
                        });
                    } else if old_rules != rules {
                        batch.flush_chain(chain);
                        rules.iter().for_each(|r| {
                            batch.add_rule(chain, r);
                        });
                    }
                }
                None => {
                    if let Some(a) = affinity {
                        batch.add_set(a);
                    }
                    batch.add_chain(chain);
                    rules.iter().for_each(|r| {
                        batch.add_rule(chain, r);
                    });
                }
            }
        }
        // 2. Owned elements: removals, then additions (a changed element
        //    is a removal and an addition).
        let mut additions = Vec::new();
        for ((name, before), (_, after)) in old.elements.owned().iter().zip(new.elements.owned()) {
            let Some(set) = def(name) else { continue };
            let removed: Vec<&SetElement> = before.iter().filter(|e| !after.contains(e)).collect();
            let added: Vec<&SetElement> = after.iter().filter(|e| !before.contains(e)).collect();
            if !removed.is_empty() {
                batch.delete_elements(&set, removed);
            }
            if !added.is_empty() {
                additions.push((set, added));
            }
        }
        // 3. Shared keys by reference count.
        let (old_shared, new_shared) = (old.elements.shared(), new.elements.shared());
        let mut shared_adds: Vec<(Set, Vec<SetElement>)> = Vec::new();
        for key in old_shared.difference(&new_shared) {
            let n = self.refs.entry(key.clone()).or_insert(1);
            *n -= 1;
            if *n == 0 {
                self.refs.remove(key);
                if let Some(set) = def(key.0) {
                    batch.delete_elements(&set, &shared_elements(key));
                }
            }
        }
        for key in new_shared.difference(&old_shared) {
            let n = self.refs.entry(key.clone()).or_insert(0);
            *n += 1;
            if *n == 1
                && let Some(set) = def(key.0)
            {
                shared_adds.push((set, shared_elements(key)));
            }
        }
        for (set, elements) in &shared_adds {
            batch.add_elements(set, elements);
        }
        for (set, added) in additions {
            batch.add_elements(&set, added);
        }
        // 4. Chains nothing jumps to any more.
        for (id, (chain, _, affinity)) in &old.chains {
            if !new.chains.contains_key(id) {
                batch.delete_chain(chain);
                if let Some(a) = affinity {
                    batch.delete_set(a);
                }
            }
        }
        if !ports.is_empty() {
            self.fragments.insert(svc.clone(), new);
        }
        true
    }
}

/// The elements behind a shared key.
fn shared_elements(key: &Shared) -> Vec<SetElement> {
    match key.0 {
        "reduce" => {
            let n = mark_at(&key.1, 0).unwrap_or(1).max(1);
            (0..BUCKETS)
                .map(|b| {
                    SetElement::new(Value::new().mark(n).mark(b)).data(Value::new().mark(b % n))
                })
                .collect()
        }
        _ => vec![SetElement::new(key.1.clone())],
    }
}

/// Backend elements of one set, and its own chain when the port needs one.
fn emit_set(
    el: &mut Elements,
    node: Option<&str>,
    port: &ServicePort,
    id: u32,
    local: bool,
    own_chain: bool,
    endpoints: &[Endpoint],
) -> Option<SetChain> {
    let table = &table();
    // Slot i holds endpoint i; `wrr` has BUCKETS slots in weighted order.
    let order = if port.scheduler == Scheduler::WeightedRoundRobin {
        weighted_order(port, endpoints)
    } else {
        (0..endpoints.len()).collect()
    };
    for (slot, index) in (0u32..).zip(order) {
        let ep = &endpoints[index];
        el.backends.push(
            SetElement::new(Value::new().mark(id).mark(slot))
                .data(Value::new().ipv4(ep.ip).inet_service(ep.port)),
        );
    }
    for ep in endpoints {
        let here = match (node, ep.node.as_deref()) {
            (Some(me), Some(theirs)) => me == theirs,
            _ => true,
        };
        if here {
            el.hairpin.insert(ep.ip);
        }
    }
    if !own_chain {
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
    // Slot into register 9, then `backends[id . slot]` into slots 0-1.
    let n = endpoints.len() as u32;
    let pick = Rule::new();
    let pick = match port.scheduler {
        Scheduler::Random => pick.numgen_random(n, Register::r32(9)),
        Scheduler::RoundRobin => pick.numgen_inc(n, Register::r32(9)),
        Scheduler::WeightedRoundRobin => pick.numgen_inc(BUCKETS.max(n), Register::r32(9)),
        Scheduler::SourceHash => pick.payload_ip_saddr(Register::R1).jhash(
            Register::R1,
            4,
            n,
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
                Scheduler::WeightedRoundRobin => {
                    "weighted round robin (numgen inc over weighted buckets)"
                }
                Scheduler::SourceHash => "source hash (jhash ip saddr)",
            }),
    );
    Some((chain, rules, affinity_set))
}

/// For `wrr`: which endpoint each of the [`BUCKETS`] buckets holds, in
/// smooth weighted round-robin order (nginx's: each step every endpoint
/// gains its weight, the richest is picked and pays the total), so
/// `numgen inc` walks them interleaved, in proportion to the weights.
fn weighted_order(port: &ServicePort, endpoints: &[Endpoint]) -> Vec<usize> {
    let mut weights: Vec<i64> = endpoints
        .iter()
        .map(|e| {
            e.pod
                .as_ref()
                .and_then(|p| port.weights.get(p))
                .or_else(|| port.weights.get(&e.ip.to_string()))
                .map_or(1, |w| i64::from(*w))
        })
        .collect();
    if weights.iter().all(|w| *w == 0) {
        weights.iter_mut().for_each(|w| *w = 1);
    }
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    // At least one slot per endpoint, so a large Service keeps them all.
    (0..BUCKETS.max(endpoints.len() as u32))
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best = (0..current.len())
                .max_by_key(|i| (current[*i], std::cmp::Reverse(*i)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

/// Every set and map of the table, empty (names and types).
fn set_definitions(table: &Table) -> Vec<Set> {
    use DataType::{InetProto, InetService, Ipv4Addr as Addr, Mark};
    let k3 = vec![Addr, InetProto, InetService];
    let k2 = vec![InetProto, InetService];
    let set = |name: &str, key: &[DataType]| Set::new(table, name, key.to_vec());
    let map = |name: &str, key: &[DataType], value: &[DataType]| {
        Set::map(table, name, key.to_vec(), value.to_vec())
    };
    let vmap = |name: &str, key: &[DataType]| Set::verdict_map(table, name, key.to_vec());
    vec![
        map("backends", &[Mark, Mark], &[Addr, InetService]),
        map("reduce", &[Mark, Mark], &[Mark]).comment("n . bucket -> bucket mod n"),
        set("affinity-endpoints", &[Mark, Addr, InetService]),
        map("service-ids", &k3, &[Mark, Mark]),
        vmap("service-chains", &k3),
        set("drop", &k3),
        set("no-endpoints", &k3),
        map("node-port-ids", &k2, &[Mark, Mark]),
        vmap("node-port-chains", &k2),
        set("node-port-drop", &k2),
        set("node-port-no-endpoints", &k2),
        set("masq-external", &k3),
        map("pod-external-ids", &k3, &[Mark, Mark]),
        vmap("pod-external-chains", &k3),
        set("masq-node-ports", &k2),
        set("firewall", &k3),
        set("firewall-allow", &[Addr, InetProto, InetService, Addr])
            .flags(SetFlags::INTERVAL)
            .comment("loadBalancerSourceRanges"),
        set("cluster-ips", &[Addr]),
        set("node-ips", &[Addr]),
        set("hairpin", &[Addr, Addr]),
    ]
}

fn finish(
    table: Table,
    el: Elements,
    chains: BTreeMap<u32, SetChain>,
    options: &Options,
) -> Ruleset {
    let mut ruleset = Ruleset::new(table.clone());
    let node_ips: BTreeSet<Ipv4Addr> = options
        .node_ips
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .collect();
    let shared = el.shared();
    let names: Vec<&'static str> = el.owned().iter().map(|(n, _)| *n).collect();
    let mut el = el;
    let mut contents: HashMap<&str, Vec<SetElement>> = HashMap::new();
    for (name, elements) in names.into_iter().zip(el.owned_mut()) {
        contents.insert(name, std::mem::take(elements));
    }
    for key in shared {
        contents
            .entry(key.0)
            .or_default()
            .extend(shared_elements(&key));
    }
    contents.insert(
        "node-ips",
        node_ips
            .iter()
            .map(|ip| SetElement::new(Value::new().ipv4(*ip)))
            .collect(),
    );
    for set in set_definitions(&table) {
        let elements = contents.remove(set.name.as_str()).unwrap_or_default();
        ruleset.add_set(set, elements);
    }
    for (chain, rules, affinity) in chains.into_values() {
        if let Some(a) = affinity {
            ruleset.add_set(a, Vec::new());
        }
        ruleset.add_chain(chain, rules);
    }

    let k3_load =
        |r: Rule| r.load_concat(Register::R1, &[Load::IpDaddr, Load::L4Proto, Load::ThDport]);
    let k2_load = |r: Rule| {
        r.payload_ip_daddr(Register::R2)
            .lookup("node-ips", Register::R2)
            .load_concat(Register::R1, &[Load::L4Proto, Load::ThDport])
    };
    // id into 8, n into 9; a draw into 10; `reduce[n . draw]` into 9;
    // `backends[id . slot]` into 0-1.
    let to_bucket = |r: Rule, ids: &str| {
        r.lookup_map(ids, Register::R1, Register::r32(8))
            .numgen_random(BUCKETS, Register::r32(10))
            .lookup_map("reduce", Register::r32(9), Register::r32(9))
            .lookup_map("backends", Register::r32(8), Register::R1)
            .dnat(Family::Ip, Register::R1, Some(Register::r32(1)))
    };
    let from_pods = |cidr: Cidr, op: CmpOp, r: Rule| {
        r.payload_ip_saddr(Register::R2)
            .bitwise(Register::R2, Register::R2, cidr.mask().octets(), [0u8; 4])
            .cmp(Register::R2, op, cidr.network.octets())
    };
    // Order: masquerade marks, the source-range firewall, then dispatch
    // (every dispatch rule ends in a DNAT or a drop).
    let mut services = Vec::new();
    if let Some(cidr) = options.cluster_cidr {
        services.push(
            from_pods(
                cidr,
                CmpOp::Neq,
                Rule::new()
                    .payload_ip_daddr(Register::R1)
                    .lookup("cluster-ips", Register::R1),
            )
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
    ]);
    if let Some(cidr) = options.cluster_cidr {
        services.push(
            from_pods(cidr, CmpOp::Eq, k3_load(Rule::new()))
                .lookup_vmap("pod-external-chains", Register::R1)
                .comment("pods to an external IP under Local: Cluster semantics"),
        );
        services.push(
            to_bucket(
                from_pods(cidr, CmpOp::Eq, k3_load(Rule::new())),
                "pod-external-ids",
            )
            .comment("pods to an external IP under Local: Cluster semantics"),
        );
    }
    services.extend([
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
            node_name: None,
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
        assert_eq!(elements(&r, "backends").len(), 2, "one per endpoint");
        assert_eq!(
            elements(&r, "reduce").len(),
            BUCKETS as usize,
            "one row: n = 2"
        );
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
    fn more_endpoints_than_draws_get_a_chain_of_their_own() {
        let big = svc("big", "10.96.0.50", json!({}));
        let ips: Vec<String> = (0..100)
            .map(|i| format!("10.244.{}.{}", 1 + i / 200, 1 + i % 200))
            .collect();
        let eps: Vec<(&str, &str)> = ips.iter().map(|ip| (ip.as_str(), "n1")).collect();
        let s = slice("big", &eps);
        let r = render(&plan(&[&big], &[&s], "n1"), &mut Ids::default(), &options());
        assert!(elements(&r, "service-ids").is_empty());
        assert_eq!(elements(&r, "service-chains").len(), 1);
        assert_eq!(
            elements(&r, "backends").len(),
            100,
            "every endpoint reachable"
        );
        let chain = r
            .chains
            .iter()
            .find(|c| c.chain.name.starts_with("svc-"))
            .expect("chain");
        assert!(
            chain
                .rules
                .iter()
                .any(|rule| rule.exprs.iter().any(|e| matches!(
                    e,
                    ferry_netlink::nftables::Expr::Numgen { modulus: 100, .. }
                ))),
            "{:?}",
            chain.rules
        );
    }

    #[test]
    fn a_restart_seeded_from_the_live_table_changes_nothing() {
        let mut sticky = svc(
            "sticky",
            "10.96.0.40",
            json!({"type": "NodePort", "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local"}),
        );
        sticky
            .spec
            .as_mut()
            .expect("spec")
            .ports
            .as_mut()
            .expect("ports")[0]
            .node_port = Some(30090);
        let services: Vec<Service> = (0..20)
            .map(|i| svc(&format!("s{i:02}"), &format!("10.96.1.{i}"), json!({})))
            .chain([sticky])
            .collect();
        let slices: Vec<EndpointSlice> = (0..20)
            .map(|i| slice(&format!("s{i:02}"), &[("10.244.1.5", "n1")]))
            .chain([slice(
                "sticky",
                &[("10.244.1.6", "n1"), ("10.244.2.6", "n2")],
            )])
            .collect();
        let svc_refs: Vec<&Service> = services.iter().collect();
        let slice_refs: Vec<&EndpointSlice> = slices.iter().collect();
        // Ids handed out in a different order than a fresh start would.
        let mut ids = Ids::default();
        render(
            &plan(&svc_refs[10..], &slice_refs, "n1"),
            &mut ids,
            &options(),
        );
        let p = plan(&svc_refs, &slice_refs, "n1");
        let live = render(&p, &mut ids, &options());
        let mut fresh = Ids::default();
        assert!(
            !render(&p, &mut fresh.clone(), &options())
                .diff(Some(&live))
                .is_empty()
        );
        fresh.seed(&p, &live);
        let again = render(&p, &mut fresh, &options());
        assert!(
            again.diff(Some(&live)).is_empty(),
            "seeded ids rewrite nothing"
        );
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

#[cfg(test)]
mod weighted_tests {
    use super::*;

    #[test]
    fn weighted_buckets_follow_weights_interleaved() {
        let ep = |last: u8, pod: &str| Endpoint {
            ip: Ipv4Addr::new(10, 244, 1, last),
            port: 80,
            ready: true,
            serving: true,
            terminating: false,
            node: None,
            pod: Some(pod.into()),
        };
        let eps = [ep(1, "heavy"), ep(2, "light")];
        let port = ServicePort {
            namespace: "default".into(),
            name: "w".into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            cluster_ips: vec![],
            external_ips: vec![],
            load_balancer_ips: vec![],
            external_local: false,
            internal_local: false,
            affinity_seconds: None,
            source_ranges: vec![],
            health_check_node_port: None,
            scheduler: Scheduler::WeightedRoundRobin,
            weights: [("heavy".to_string(), 3), ("10.244.1.2".to_string(), 1)].into(),
        };
        let order = weighted_order(&port, &eps);
        assert_eq!(order.iter().filter(|i| **i == 0).count(), 45);
        assert_eq!(order.iter().filter(|i| **i == 1).count(), 15);
        // Smooth: the light endpoint comes every fourth bucket.
        assert_eq!(&order[..8], &[0, 0, 1, 0, 0, 0, 1, 0]);
        // Zero everywhere means equal shares, not nothing.
        let mut zero = port.clone();
        zero.weights = [("heavy".to_string(), 0), ("light".to_string(), 0)].into();
        let order = weighted_order(&zero, &eps);
        assert_eq!(order.iter().filter(|i| **i == 0).count(), 30);
    }
}
