//! The node agent's streaming endpoint (the kubelet's `:10250` API):
//! container logs, exec, attach and port-forward. The API server's pod
//! subresources (`pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward`) proxy to it, as kube-apiserver proxies to the
//! kubelet: the HTTP upgrade passes through, and the WebSocket
//! (`v5.channel.k8s.io`) or SPDY (`portforward.k8s.io`) session is spoken
//! here, next to the containers.

pub mod logs;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod websocket;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::runtime::Console;

/// What the streaming endpoint knows about the pods on this node; the pod
/// workers keep it current.
#[derive(Default)]
pub struct Registry {
    pods: Mutex<HashMap<(String, String), PodEntry>>,
}

/// One pod on this node.
#[derive(Clone, Debug, Default)]
pub struct PodEntry {
    pub uid: String,
    /// The pod's network namespace file; `None`: the node's (hostNetwork).
    pub netns: Option<PathBuf>,
    /// The pod's directory (container logs live here).
    pub dir: PathBuf,
    pub containers: BTreeMap<String, ContainerEntry>,
}

/// One container of a pod.
#[derive(Clone, Debug, Default)]
pub struct ContainerEntry {
    /// Runs started so far; a follow ends when this changes.
    pub generation: u64,
    /// The current run, when the container is running.
    pub running: Option<RunningEntry>,
    /// `stdinOnce`: stdin closes after the first attach ends.
    pub stdin_once: bool,
    /// Log of the latest run (running or ended): `kubectl logs`.
    pub log: Option<PathBuf>,
    /// Log of the run the kubelet would report as `lastState`:
    /// `kubectl logs --previous`.
    pub previous_log: Option<PathBuf>,
}

/// A running container.
#[derive(Clone, Debug)]
pub struct RunningEntry {
    /// The container's main process: exec joins its namespaces.
    pub pid: u32,
    /// The container's environment (exec'd commands get it too).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// stdin (and terminal) for attach, with `stdin: true`.
    pub console: Option<Console>,
    /// Set by the first attach to this run.
    pub attached: Arc<AtomicBool>,
    /// Process groups of the `kubectl exec` sessions in this run: they end
    /// with the container, as a runtime's execs do.
    pub execs: Arc<Mutex<HashSet<u32>>>,
}

impl RunningEntry {
    /// Kills what is still running of this run's exec sessions.
    fn kill_execs(&self) {
        let execs = self.execs.lock().unwrap_or_else(|e| e.into_inner());
        for pid in execs.iter() {
            crate::runtime::kill_session(*pid);
        }
    }
}

/// Log file of one run of a container: each run has its own, as a
/// container runtime keeps one per container instance.
pub fn log_path(pod_dir: &Path, container: &str, run: u64) -> PathBuf {
    pod_dir.join(format!("{container}-{run}.log"))
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, String), PodEntry>) -> T) -> T {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut pods)
    }

    /// Records a pod's sandbox.
    pub fn pod_ready(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        netns: Option<PathBuf>,
        dir: PathBuf,
    ) {
        self.with(|pods| {
            let entry = pods
                .entry((namespace.to_string(), name.to_string()))
                .or_default();
            if entry.uid != uid {
                *entry = PodEntry::default();
            }
            entry.uid = uid.to_string();
            entry.netns = netns;
            entry.dir = dir;
        });
    }

    /// Records a container run that just started, writing to `log`.
    pub fn started(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        stdin_once: bool,
        log: PathBuf,
        run: RunningEntry,
    ) {
        self.with(|pods| {
            if let Some(pod) = pods.get_mut(&(namespace.to_string(), name.to_string())) {
                let c = pod.containers.entry(container.to_string()).or_default();
                // The run before becomes the previous one; older logs go.
                if let Some(old) = c.previous_log.take()
                    && c.log.as_ref() != Some(&old)
                {
                    let _ = std::fs::remove_file(old);
                }
                c.previous_log = c.log.replace(log);
                c.generation += 1;
                c.stdin_once = stdin_once;
                c.running = Some(run);
            }
        });
    }

    /// Records that a container's run ended; `restarting`: it will run
    /// again, so this run is now its `lastState` (what `--previous`
    /// shows during the back-off, as on a kubelet).
    pub fn exited(&self, namespace: &str, name: &str, container: &str, restarting: bool) {
        self.with(|pods| {
            if let Some(c) = pods
                .get_mut(&(namespace.to_string(), name.to_string()))
                .and_then(|p| p.containers.get_mut(container))
            {
                if let Some(run) = c.running.take() {
                    run.kill_execs();
                }
                if restarting && c.log.is_some() {
                    if let Some(old) = c.previous_log.take()
                        && c.log.as_ref() != Some(&old)
                    {
                        let _ = std::fs::remove_file(old);
                    }
                    c.previous_log = c.log.clone();
                }
            }
        });
    }

    /// Forgets a pod (torn down); its exec sessions end.
    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        self.with(|pods| {
            let key = (namespace.to_string(), name.to_string());
            if pods.get(&key).is_some_and(|p| p.uid == uid)
                && let Some(pod) = pods.remove(&key)
            {
                for run in pod.containers.values().filter_map(|c| c.running.as_ref()) {
                    run.kill_execs();
                }
            }
        });
    }

    /// A copy of what is known about a pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodEntry> {
        self.with(|pods| {
            pods.get(&(namespace.to_string(), name.to_string()))
                .cloned()
        })
    }

    /// `(generation, running)` of one container, for follows.
    pub fn run_state(&self, namespace: &str, name: &str, container: &str) -> Option<(u64, bool)> {
        self.with(|pods| {
            pods.get(&(namespace.to_string(), name.to_string()))
                .and_then(|p| p.containers.get(container))
                .map(|c| (c.generation, c.running.is_some()))
        })
    }
}
