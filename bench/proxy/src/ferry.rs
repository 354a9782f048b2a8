//! Ferry's side: the path of `ferry proxy`'s `Syncer` (crates/proxy
//! agent.rs) without the API server. A full sync plans every Service,
//! renders the table as per-Service fragments (`Tables::build`), diffs it
//! against what is live and applies one batch. A change re-plans only the
//! Service whose slice changed and turns its new fragment into a batch
//! (`Tables::update`), as the agent's partial sync does.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_netlink::nftables::{Batch, Connection, Family, Ruleset, Table};
use ferry_proxy::model::Cidr;
use ferry_proxy::nftables::{Ids, Options, Tables};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::cluster::{CLUSTER_CIDR, Cluster, NAMESPACE, NODE, service_name};
use crate::util::Netns;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The node's address in each Ferry namespace (NodePorts would answer on
/// it; the agent reads it from the namespace the same way).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// What one sync took, phase by phase. In a partial sync `render` is
/// `Tables::update` (the Service's fragment rendered and compared with
/// its old one) and `diff` is zero.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    pub plan: Duration,
    pub render: Duration,
    pub diff: Duration,
    pub apply: Duration,
    /// Netlink messages and encoded bytes of the batch.
    pub messages: usize,
    pub bytes: usize,
}

impl Phases {
    pub fn total(&self) -> Duration {
        self.plan + self.render + self.diff + self.apply
    }
}

/// One proxy's dataplane state in one namespace.
pub struct Syncer {
    conn: Connection,
    ids: Ids,
    options: Options,
    /// What the kernel holds, when known (after a full sync).
    applied: Option<Ruleset>,
    /// The table as per-Service fragments, for partial syncs.
    tables: Option<Tables>,
}

impl Syncer {
    /// Opens the namespace as the agent does at start: node address up,
    /// live table read back (none in a fresh namespace).
    pub fn open(ns: &Netns) -> anyhow::Result<Syncer> {
        ns.ip(&["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])?;
        let mut conn = Connection::open_in_netns(ns.path())
            .with_context(|| format!("nf_tables connection in {}", ns.name()))?;
        let table = Table::new(Family::Ip, ferry_proxy::nftables::TABLE);
        let applied = Ruleset::list(&mut conn, &table).context("listing the live table")?;
        Ok(Syncer {
            conn,
            ids: Ids::default(),
            options: Options {
                node_ips: vec![NODE_IP],
                cluster_cidr: Cidr::parse(CLUSTER_CIDR),
                node_name: Some(NODE.to_string()),
            },
            applied,
            tables: None,
        })
    }

    /// A full sync of the whole cluster, timed phase by phase.
    pub fn full_sync(&mut self, cluster: &Cluster) -> anyhow::Result<Phases> {
        // The agent hands plan() references into its reflector stores.
        let svc_refs: Vec<&Service> = cluster.services.iter().collect();
        let slice_refs: Vec<&EndpointSlice> = cluster.slices.iter().collect();
        let start = Instant::now();
        let plan = ferry_proxy::model::plan(&svc_refs, &slice_refs, NODE);
        let plan_took = start.elapsed();
        let start = Instant::now();
        let (want, tables) = Tables::build(&plan, &mut self.ids, &self.options);
        let render_took = start.elapsed();
        let start = Instant::now();
        let batch = want.diff(self.applied.as_ref());
        let diff_took = start.elapsed();
        let start = Instant::now();
        if !batch.is_empty() {
            self.conn.apply(&batch).context("applying the batch")?;
        }
        let apply_took = start.elapsed();
        if !plan.problems.is_empty() || plan.ports.len() != cluster.services.len() {
            bail!(
                "plan has {} ports for {} Services, problems: {:?}",
                plan.ports.len(),
                cluster.services.len(),
                plan.problems
            );
        }
        self.applied = Some(want);
        self.tables = Some(tables);
        Ok(Phases {
            plan: plan_took,
            render: render_took,
            diff: diff_took,
            apply: apply_took,
            messages: batch.len(),
            bytes: batch.size(),
        })
    }

    /// A partial sync after Service `i` or its slice changed: its slices
    /// picked from all of them and planned alone, its fragment updated,
    /// the batch applied.
    pub fn partial_sync(&mut self, cluster: &Cluster, i: usize) -> anyhow::Result<Phases> {
        let tables = self.tables.as_mut().context("no full sync yet")?;
        let name = service_name(i);
        let svc = &cluster.services[i];
        let start = Instant::now();
        let mine: Vec<&EndpointSlice> = cluster
            .slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(NAMESPACE)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        == Some(&name)
            })
            .collect();
        let plan = ferry_proxy::model::plan(&[svc], &mine, NODE);
        let plan_took = start.elapsed();
        let start = Instant::now();
        let mut batch = Batch::new();
        tables.update(
            &(NAMESPACE.to_string(), name),
            &plan.ports,
            &mut self.ids,
            &mut batch,
        );
        let update_took = start.elapsed();
        let start = Instant::now();
        if !batch.is_empty() {
            self.conn.apply(&batch).context("applying the batch")?;
            // As in the agent: the kernel no longer matches `applied`.
            self.applied = None;
        }
        let apply_took = start.elapsed();
        Ok(Phases {
            plan: plan_took,
            render: update_took,
            diff: Duration::ZERO,
            apply: apply_took,
            messages: batch.len(),
            bytes: batch.size(),
        })
    }

    /// The whole table for `cluster` as a full sync would render it now
    /// (on a copy of the ids: the real state is untouched).
    pub fn render_all(&self, cluster: &Cluster) -> Ruleset {
        let svc_refs: Vec<&Service> = cluster.services.iter().collect();
        let slice_refs: Vec<&EndpointSlice> = cluster.slices.iter().collect();
        let plan = ferry_proxy::model::plan(&svc_refs, &slice_refs, NODE);
        ferry_proxy::nftables::render(&plan, &mut self.ids.clone(), &self.options)
    }

    /// For comparison with the partial sync: the same change done by
    /// recomputing everything (plan every Service, render the whole
    /// table, diff against `previous`), not applied (the batch is the
    /// partial sync's, whose apply is measured). Ids are a copy.
    pub fn recompute(&self, cluster: &Cluster, previous: &Ruleset) -> (Phases, Ruleset) {
        let svc_refs: Vec<&Service> = cluster.services.iter().collect();
        let slice_refs: Vec<&EndpointSlice> = cluster.slices.iter().collect();
        let mut ids = self.ids.clone();
        let start = Instant::now();
        let plan = ferry_proxy::model::plan(&svc_refs, &slice_refs, NODE);
        let plan_took = start.elapsed();
        let start = Instant::now();
        let want = ferry_proxy::nftables::render(&plan, &mut ids, &self.options);
        let render_took = start.elapsed();
        let start = Instant::now();
        let batch = want.diff(Some(previous));
        let diff_took = start.elapsed();
        let phases = Phases {
            plan: plan_took,
            render: render_took,
            diff: diff_took,
            apply: Duration::ZERO,
            messages: batch.len(),
            bytes: batch.size(),
        };
        (phases, want)
    }

    /// Reads the table back from the kernel and checks that it is what a
    /// full render of `cluster` describes (the ids as they are now).
    pub fn verify(&mut self, cluster: &Cluster) -> anyhow::Result<String> {
        let want = self.render_all(cluster);
        let live = Ruleset::list(&mut self.conn, &want.table)
            .context("listing the table")?
            .context("the table is missing")?;
        let differences = want.diff(Some(&live)).len();
        if differences != 0 {
            bail!("the live table differs from a full render by {differences} changes");
        }
        let count = |set: &str| {
            live.sets
                .iter()
                .find(|s| s.set.name == set)
                .map_or(0, |s| s.elements.len())
        };
        let rules: usize = live.chains.iter().map(|c| c.rules.len()).sum();
        let elements: usize = live.sets.iter().map(|s| s.elements.len()).sum();
        Ok(format!(
            "equals a full render: {} chains, {rules} rules, {} sets, {elements} elements ({} service-ids, {} backends)",
            live.chains.len(),
            live.sets.len(),
            count("service-ids"),
            count("backends"),
        ))
    }
}
