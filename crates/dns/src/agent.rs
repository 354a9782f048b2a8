//! Watches Services, EndpointSlices and Namespaces, keeps their compact
//! form ([`State`]) and publishes a new [`Index`] after each burst of
//! changes. Bursts are coalesced for a few milliseconds, so a rollout of
//! many pods costs a few builds, and an answer follows an API change well
//! within a second.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::model::objects::{ServiceInfo, SliceInfo};
use crate::model::{Config, Index, State};
use crate::server::Shared;

/// How long the first index waits for every watch to list.
const INITIAL_SYNC_WAIT: Duration = Duration::from_secs(5);
/// How long changes are collected before the index is rebuilt.
const COALESCE: Duration = Duration::from_millis(20);

/// Index builds, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Builds {
    pub count: u64,
    pub last_seconds: f64,
    pub total_seconds: f64,
    pub last_unix: u64,
}

impl Builds {
    pub fn write(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP ferry_dns_index_builds_total Answer index builds.\n# TYPE ferry_dns_index_builds_total counter\nferry_dns_index_builds_total {}\n# HELP ferry_dns_index_build_seconds_total Time spent building the answer index.\n# TYPE ferry_dns_index_build_seconds_total counter\nferry_dns_index_build_seconds_total {}\n# HELP ferry_dns_index_last_build_seconds Duration of the last index build.\n# TYPE ferry_dns_index_last_build_seconds gauge\nferry_dns_index_last_build_seconds {}\n# HELP ferry_dns_index_last_build_timestamp_seconds When the last index was published.\n# TYPE ferry_dns_index_last_build_timestamp_seconds gauge\nferry_dns_index_last_build_timestamp_seconds {}",
            self.count, self.total_seconds, self.last_seconds, self.last_unix
        );
    }
}

/// One change from a watch, already in compact form.
enum Change {
    Service(Key, Option<ServiceInfo>),
    Slice(Key, Option<SliceInfo>),
    Namespace(String, bool),
    /// A (re)list starts: collect the kind afresh.
    Relist(Kind),
    /// The (re)list ended: the collected objects replace the old ones.
    Listed(Kind),
}

type Key = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Services,
    Slices,
    Namespaces,
}

fn key(meta: &kube::api::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

type Changes = Pin<Box<dyn Stream<Item = Result<Change, watcher::Error>> + Send>>;

/// A watch of `K` turned into [`Change`]s by `convert` (`None`: deleted).
fn watch<K, F>(api: Api<K>, kind: Kind, convert: F) -> Changes
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
    F: Fn(&K, bool) -> Change + Send + 'static,
{
    Box::pin(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |e| {
                e.map(|e| match e {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => convert(&o, true),
                    watcher::Event::Delete(o) => convert(&o, false),
                    watcher::Event::Init => Change::Relist(kind),
                    watcher::Event::InitDone => Change::Listed(kind),
                })
            }),
    )
}

/// The objects being watched, plus what a relist is collecting.
#[derive(Default)]
struct Tracker {
    state: State,
    relisting: HashMap<Kind, State>,
    listed: HashSet<Kind>,
}

impl Tracker {
    /// Applies one change; returns whether the index must be rebuilt.
    fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Relist(kind) => {
                self.relisting.insert(kind, State::default());
                false
            }
            Change::Listed(kind) => {
                let fresh = self.relisting.remove(&kind).unwrap_or_default();
                match kind {
                    Kind::Services => self.state.services = fresh.services,
                    Kind::Slices => self.state.slices = fresh.slices,
                    Kind::Namespaces => self.state.namespaces = fresh.namespaces,
                }
                self.listed.insert(kind);
                true
            }
            Change::Service(k, info) => {
                let target = match self.relisting.get_mut(&Kind::Services) {
                    Some(s) => &mut s.services,
                    None => &mut self.state.services,
                };
                match info {
                    Some(i) => target.insert(k, i),
                    None => target.remove(&k),
                };
                !self.relisting.contains_key(&Kind::Services)
            }
            Change::Slice(k, info) => {
                let target = match self.relisting.get_mut(&Kind::Slices) {
                    Some(s) => &mut s.slices,
                    None => &mut self.state.slices,
                };
                match info {
                    Some(i) => target.insert(k, i),
                    None => target.remove(&k),
                };
                !self.relisting.contains_key(&Kind::Slices)
            }
            Change::Namespace(name, exists) => {
                let target = match self.relisting.get_mut(&Kind::Namespaces) {
                    Some(s) => &mut s.namespaces,
                    None => &mut self.state.namespaces,
                };
                if exists {
                    target.insert(name);
                } else {
                    target.remove(&name);
                }
                !self.relisting.contains_key(&Kind::Namespaces)
            }
        }
    }

    fn synced(&self) -> bool {
        self.listed.len() == 3
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the watches and publishes indexes into `shared` until the watches
/// end (they retry with backoff, so only on shutdown).
pub async fn run(client: kube::Client, config: Config, shared: Arc<Shared>) -> anyhow::Result<()> {
    let services = watch(
        Api::<Service>::all(client.clone()),
        Kind::Services,
        |s, live| {
            Change::Service(
                key(&s.metadata),
                live.then(|| ServiceInfo::from_service(s)).flatten(),
            )
        },
    );
    let slices = watch(
        Api::<EndpointSlice>::all(client.clone()),
        Kind::Slices,
        |s, live| {
            Change::Slice(
                key(&s.metadata),
                live.then(|| SliceInfo::from_slice(s)).flatten(),
            )
        },
    );
    let namespaces = watch(
        Api::<Namespace>::all(client),
        Kind::Namespaces,
        |n, live| Change::Namespace(n.metadata.name.clone().unwrap_or_default(), live),
    );
    let mut changes = futures::stream::select_all([services, slices, namespaces]);
    let mut tracker = Tracker::default();
    let begun = Instant::now();
    let mut dirty = false;
    let mut serial = unix_now() as u32;
    loop {
        let next = if dirty {
            tokio::time::timeout(COALESCE, changes.next()).await.ok()
        } else {
            Some(changes.next().await)
        };
        match next {
            Some(Some(Ok(change))) => {
                dirty |= tracker.apply(change);
                // Until every watch has listed, an index would be partial
                // (and SERVFAIL is answered for what it lacks anyway);
                // building one per list page only costs CPU and a second
                // index in memory. After 5 s (CoreDNS's wait) it serves what
                // it has, so one failing watch cannot keep every answer out.
                if !tracker.synced() && begun.elapsed() < INITIAL_SYNC_WAIT {
                    dirty = false;
                }
                continue;
            }
            Some(Some(Err(e))) => {
                tracing::warn!("watch: {e}");
                continue;
            }
            Some(None) => anyhow::bail!("the watches ended"),
            // Quiet for COALESCE: publish.
            None => {}
        }
        dirty = false;
        // The SOA serial moves forward with every change (CoreDNS: the time
        // of the last change), also when two land in one second.
        serial = (unix_now() as u32).max(serial.wrapping_add(1));
        let started = Instant::now();
        // Tens of milliseconds at 10,000 Services: keep the runtime's other
        // tasks (TCP, forwarding) moving meanwhile.
        let index = tokio::task::block_in_place(|| {
            Index::build(&tracker.state, &config, serial, tracker.synced())
        });
        let names = index.len();
        let was_synced = shared.index.load().synced;
        shared.index.store(Arc::new(index));
        let seconds = started.elapsed().as_secs_f64();
        if let Ok(mut b) = shared.builds.lock() {
            b.count += 1;
            b.last_seconds = seconds;
            b.total_seconds += seconds;
            b.last_unix = unix_now();
        }
        if tracker.synced() && !was_synced {
            tracing::info!(
                services = tracker.state.services.len(),
                slices = tracker.state.slices.len(),
                names,
                "synced: answering the cluster zone ({:.1} ms index build)",
                seconds * 1000.0
            );
        } else {
            tracing::debug!(names, "index rebuilt in {:.1} ms", seconds * 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::objects::ServiceKind;

    fn svc(ip: &str) -> ServiceInfo {
        ServiceInfo {
            kind: ServiceKind::ClusterIp(vec![ip.parse().expect("ip")]),
            ports: Box::default(),
        }
    }

    #[test]
    fn relist_replaces_what_it_did_not_see() {
        let mut t = Tracker::default();
        let k = |n: &str| ("shop".to_string(), n.to_string());
        assert!(!t.apply(Change::Relist(Kind::Services)));
        assert!(!t.apply(Change::Service(k("a"), Some(svc("10.96.0.1")))));
        assert!(t.apply(Change::Listed(Kind::Services)));
        assert!(t.apply(Change::Service(k("b"), Some(svc("10.96.0.2")))));
        assert_eq!(t.state.services.len(), 2);
        assert!(!t.synced());
        // A relist after a desync that no longer contains "a".
        t.apply(Change::Relist(Kind::Services));
        t.apply(Change::Service(k("b"), Some(svc("10.96.0.2"))));
        assert_eq!(
            t.state.services.len(),
            2,
            "old state serves during the relist"
        );
        t.apply(Change::Listed(Kind::Services));
        assert_eq!(t.state.services.keys().collect::<Vec<_>>(), [&k("b")]);
        t.apply(Change::Listed(Kind::Slices));
        t.apply(Change::Listed(Kind::Namespaces));
        assert!(t.synced());
        assert!(t.apply(Change::Service(k("b"), None)));
        assert!(t.state.services.is_empty());
    }
}
