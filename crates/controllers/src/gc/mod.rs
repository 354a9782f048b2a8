//! Garbage collector, after upstream's `pkg/controller/garbagecollector`:
//! objects whose owners (matched by uid) are gone are deleted; an owner
//! deleted with `propagationPolicy: Orphan` (the API server gives it the
//! `orphan` finalizer) has its dependents' ownerReferences removed and
//! then the finalizer; one deleted in the Foreground (`foregroundDeletion`
//! finalizer) goes only after its blocking dependents, which are deleted
//! first.
//!
//! Every resource that discovery lists as watchable and deletable is
//! watched (metadata only is kept) into the [`graph`]; graph changes queue
//! work, and workers act on it with live reads and preconditioned writes.

pub mod graph;
pub mod queue;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::Context;
use graph::{FOREGROUND, Graph, Node, ORPHAN, Work};
use queue::WorkQueue;

/// Resources the collector does not watch: Events never own anything and
/// churn; `extensions` only re-serves networking.k8s.io Ingresses.
const IGNORED_GROUPS: &[&str] = &["events.k8s.io", "extensions"];
const IGNORED_CORE: &[&str] = &["events"];

/// Workers acting on the queue (upstream runs 20 for deletes).
const WORKERS: usize = 8;

/// How long to wait for every watch to list before acting anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum GcError {
    #[error("{object}: {what}: {source}")]
    Api {
        object: String,
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{object}: owner {api_version}/{kind} is not a resource this server serves")]
    UnknownOwnerKind {
        object: String,
        api_version: String,
        kind: String,
    },
}

/// A watched resource.
#[derive(Clone)]
struct Resource {
    api: ApiResource,
    namespaced: bool,
}

enum GraphEvent {
    Init(usize),
    Upsert(usize, Box<DynamicObject>),
    InitDone(usize),
    Delete(Box<DynamicObject>),
}

struct Collector {
    client: kube::Client,
    resources: Vec<Resource>,
    /// (group, kind) → index into `resources`.
    kinds: HashMap<(String, String), usize>,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue<Work>>,
}

/// Runs the garbage collector.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    // The API server may still be starting: keep asking.
    let resources = loop {
        match discover(&client).await {
            Ok(r) => break r,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "garbage collector discovery failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let kinds = resources
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.api.group.clone(), r.api.kind.clone()), i))
        .collect();
    let collector = Arc::new(Collector {
        client: client.clone(),
        resources: resources.clone(),
        kinds,
        graph: Mutex::new(Graph::default()),
        queue: WorkQueue::new(),
    });
    tracing::info!(resources = resources.len(), "garbage collector started");

    let (events_tx, events_rx) = mpsc::channel(1024);
    let (synced_tx, synced_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, r) in resources.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &r.api);
        let tx = events_tx.clone();
        let plural = r.api.plural.clone();
        tasks.spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(watcher::Event::Init) => GraphEvent::Init(i),
                    Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                        GraphEvent::Upsert(i, Box::new(o))
                    }
                    Ok(watcher::Event::InitDone) => GraphEvent::InitDone(i),
                    Ok(watcher::Event::Delete(o)) => GraphEvent::Delete(Box::new(o)),
                    Err(error) => {
                        tracing::debug!(%error, resource = %plural, "gc watch failed; retrying");
                        continue;
                    }
                };
                if tx.send(event).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
    }
    drop(events_tx);
    let builder = collector.clone();
    tasks.spawn(async move {
        builder.build_graph(events_rx, synced_tx).await;
        Ok(())
    });
    for _ in 0..WORKERS {
        let worker = collector.clone();
        let mut synced = synced_rx.clone();
        tasks.spawn(async move {
            let all_listed = async { synced.wait_for(|s| *s).await.map(|_| ()) };
            let waited = tokio::time::timeout(SYNC_TIMEOUT, all_listed).await;
            if waited.is_err() {
                tracing::warn!("not every resource listed in time; collecting anyway");
            }
            loop {
                let item = worker.queue.get().await;
                let result = worker.process(&item).await;
                if let Err(error) = &result {
                    tracing::warn!(%error, "garbage collection step failed; retrying");
                }
                worker.queue.done(item, result.is_ok());
            }
        });
    }
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(anyhow::anyhow!("a garbage collector task panicked: {e}")),
        None => Ok(()),
    }
}

/// Every resource that can be listed, watched, patched and deleted.
async fn discover(client: &kube::Client) -> anyhow::Result<Vec<Resource>> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("discovering resources for garbage collection")?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        if IGNORED_GROUPS.contains(&group.name()) {
            continue;
        }
        for (api, caps) in group.recommended_resources() {
            if group.name().is_empty() && IGNORED_CORE.contains(&api.plural.as_str()) {
                continue;
            }
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE, verbs::PATCH]
                .iter()
                .all(|v| caps.supports_operation(v));
            if usable {
                out.push(Resource {
                    api,
                    namespaced: caps.scope == Scope::Namespaced,
                });
            }
        }
    }
    Ok(out)
}

fn node_of(resource: usize, o: &DynamicObject) -> Option<Node> {
    let meta = &o.metadata;
    Some(Node {
        resource,
        namespace: meta.namespace.clone(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f == ORPHAN || *f == FOREGROUND)
            .cloned()
            .collect(),
    })
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

impl Collector {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn build_graph(
        &self,
        mut events: mpsc::Receiver<GraphEvent>,
        synced: watch::Sender<bool>,
    ) {
        let mut listed: HashSet<usize> = HashSet::new();
        // Uids seen since a resource's (re)list began.
        let mut relisting: HashMap<usize, HashSet<String>> = HashMap::new();
        while let Some(event) = events.recv().await {
            let work = match event {
                GraphEvent::Init(r) => {
                    relisting.insert(r, HashSet::new());
                    Vec::new()
                }
                GraphEvent::Upsert(r, o) => {
                    let Some(node) = node_of(r, &o) else {
                        continue;
                    };
                    if let Some(seen) = relisting.get_mut(&r) {
                        seen.insert(node.uid.clone());
                    }
                    self.graph().upsert(node)
                }
                GraphEvent::Delete(o) => match o.metadata.uid.as_deref() {
                    Some(uid) => self.graph().remove(uid),
                    None => Vec::new(),
                },
                GraphEvent::InitDone(r) => {
                    // Objects deleted while the watch was down.
                    let seen = relisting.remove(&r).unwrap_or_default();
                    let mut graph = self.graph();
                    let gone: Vec<String> = graph
                        .uids_of(r)
                        .into_iter()
                        .filter(|u| !seen.contains(u))
                        .collect();
                    let work: Vec<Work> = gone.iter().flat_map(|u| graph.remove(u)).collect();
                    drop(graph);
                    listed.insert(r);
                    if listed.len() == self.resources.len() {
                        synced.send_replace(true);
                    }
                    work
                }
            };
            for w in work {
                self.queue.add(w);
            }
        }
    }

    async fn process(&self, work: &Work) -> Result<(), GcError> {
        match work {
            Work::AttemptToDelete(uid) => self.attempt_to_delete(uid).await,
            Work::AttemptToOrphan(uid) => self.attempt_to_orphan(uid).await,
        }
    }

    fn api(&self, node: &Node) -> Api<DynamicObject> {
        let r = &self.resources[node.resource];
        match (&node.namespace, r.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &r.api),
            _ => Api::all_with(self.client.clone(), &r.api),
        }
    }

    fn describe(&self, node: &Node) -> String {
        let kind = &self.resources[node.resource].api.kind;
        match &node.namespace {
            Some(ns) => format!("{kind} {ns}/{}", node.name),
            None => format!("{kind} {}", node.name),
        }
    }

    /// Upstream's `attemptToDeleteItem`.
    async fn attempt_to_delete(&self, uid: &str) -> Result<(), GcError> {
        let Some(node) = self.graph().get(uid).cloned() else {
            return Ok(());
        };
        if node.deleting {
            if node.deleting_dependents() {
                return self.process_deleting_dependents(&node).await;
            }
            return Ok(());
        }
        if node.owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in &node.owners {
            match self.owner_state(&node, r).await? {
                OwnerState::Absent => dangling.push(r.uid.clone()),
                OwnerState::DeletingDependents => waiting.push(r.uid.clone()),
                OwnerState::Present => solid.push(r.uid.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Keep the object, drop the references that no longer hold.
            let drop: Vec<String> = dangling.into_iter().chain(waiting).collect();
            tracing::info!(object = %self.describe(&node), "removing references to deleted owners");
            return self.remove_owner_references(&node, &drop).await;
        }
        let has_dependents = !self.graph().dependents(uid).is_empty();
        let policy = if !waiting.is_empty() && has_dependents {
            // An owner waits for this one, which has dependents of its
            // own: delete it in the foreground too.
            PropagationPolicy::Foreground
        } else if node.has_finalizer(ORPHAN) {
            PropagationPolicy::Orphan
        } else if node.has_finalizer(FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::info!(object = %self.describe(&node), ?policy, "deleting object whose owners are gone");
        self.delete(&node, policy).await
    }

    /// Upstream's `processDeletingDependentsItem`: the finalizer goes once
    /// no blocking dependent is left.
    async fn process_deleting_dependents(&self, node: &Node) -> Result<(), GcError> {
        let blocking: Vec<Node> = self
            .graph()
            .blocking_dependents(&node.uid)
            .into_iter()
            .cloned()
            .collect();
        if blocking.is_empty() {
            return self.remove_finalizer(node, FOREGROUND).await;
        }
        for d in blocking {
            if !d.deleting_dependents() {
                self.queue.add(Work::AttemptToDelete(d.uid));
            }
        }
        Ok(())
    }

    /// Upstream's `attemptToOrphanWorker`.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<(), GcError> {
        let Some(node) = self.graph().get(uid).cloned() else {
            return Ok(());
        };
        if !node.orphaning() {
            return Ok(());
        }
        let dependents: Vec<Node> = self.graph().dependents(uid).into_iter().cloned().collect();
        for d in &dependents {
            self.remove_owner_references(d, std::slice::from_ref(&node.uid))
                .await?;
        }
        tracing::info!(object = %self.describe(&node), dependents = dependents.len(), "orphaned dependents");
        self.remove_finalizer(&node, ORPHAN).await
    }

    async fn owner_state(&self, node: &Node, r: &OwnerReference) -> Result<OwnerState, GcError> {
        if let Some(owner) = self.graph().get(&r.uid) {
            return Ok(if owner.deleting_dependents() {
                OwnerState::DeletingDependents
            } else {
                OwnerState::Present
            });
        }
        // Not in the graph: ask the API server.
        let key = (group_of(&r.api_version).to_string(), r.kind.clone());
        let Some(&index) = self.kinds.get(&key) else {
            return Err(GcError::UnknownOwnerKind {
                object: self.describe(node),
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
            });
        };
        let resource = &self.resources[index];
        let api: Api<DynamicObject> = match (&node.namespace, resource.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &resource.api),
            _ => Api::all_with(self.client.clone(), &resource.api),
        };
        match api.get_opt(&r.name).await {
            Ok(Some(owner)) if owner.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let deleting = owner.metadata.deletion_timestamp.is_some()
                    && owner
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND);
                Ok(if deleting {
                    OwnerState::DeletingDependents
                } else {
                    OwnerState::Present
                })
            }
            Ok(_) => Ok(OwnerState::Absent),
            Err(source) => Err(GcError::Api {
                object: self.describe(node),
                what: "looking up an owner",
                source,
            }),
        }
    }

    async fn delete(&self, node: &Node, policy: PropagationPolicy) -> Result<(), GcError> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(node).delete(&node.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a namesake: nothing to do.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(source) => Err(GcError::Api {
                object: self.describe(node),
                what: "deleting",
                source,
            }),
        }
    }

    /// Removes the ownerReferences to `owners` from the live object.
    async fn remove_owner_references(&self, node: &Node, owners: &[String]) -> Result<(), GcError> {
        self.rewrite(node, "removing ownerReferences", |o| {
            let refs = o.metadata.owner_references.clone().unwrap_or_default();
            let kept: Vec<OwnerReference> = refs
                .iter()
                .filter(|r| !owners.contains(&r.uid))
                .cloned()
                .collect();
            (kept.len() != refs.len()).then(|| {
                let value = if kept.is_empty() {
                    serde_json::Value::Null
                } else {
                    json!(kept)
                };
                json!({"ownerReferences": value})
            })
        })
        .await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), GcError> {
        self.rewrite(node, "removing a finalizer", |o| {
            let all = o.metadata.finalizers.clone().unwrap_or_default();
            let kept: Vec<&String> = all.iter().filter(|f| *f != finalizer).collect();
            (kept.len() != all.len()).then(|| {
                let value = if kept.is_empty() {
                    serde_json::Value::Null
                } else {
                    json!(kept)
                };
                json!({"finalizers": value})
            })
        })
        .await
    }

    /// Reads the live object and merge-patches its metadata with `change`,
    /// guarded by its resourceVersion; retries lost races a few times.
    async fn rewrite(
        &self,
        node: &Node,
        what: &'static str,
        change: impl Fn(&DynamicObject) -> Option<serde_json::Value>,
    ) -> Result<(), GcError> {
        let api = self.api(node);
        let error = |source| GcError::Api {
            object: self.describe(node),
            what,
            source,
        };
        for _ in 0..5 {
            let live = match api.get_opt(&node.name).await.map_err(error)? {
                Some(o) if o.metadata.uid.as_deref() == Some(node.uid.as_str()) => o,
                _ => return Ok(()),
            };
            let Some(mut metadata) = change(&live) else {
                return Ok(());
            };
            metadata["resourceVersion"] = json!(live.metadata.resource_version);
            let patch = json!({"metadata": metadata});
            match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
                Err(source) => return Err(error(source)),
            }
        }
        Err(GcError::Api {
            object: self.describe(node),
            what,
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("too many conflicting writes", "Conflict")
                    .with_code(409),
            )),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    Present,
    /// Exists, being deleted in the foreground.
    DeletingDependents,
    Absent,
}
