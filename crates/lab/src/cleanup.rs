//! Teardown: removes everything a lab created, whether it stopped cleanly
//! or crashed. Everything is found by name or by namespace membership, so
//! it works without any state from the run that created it.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{BRIDGE, NODE_PREFIX, VETH_PREFIX};

/// What a cleanup removed, for the user.
#[derive(Debug, Default)]
pub struct Removed {
    pub processes: usize,
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.processes == 0 && self.namespaces.is_empty() && self.links.is_empty()
    }
}

/// Network namespaces that belong to a lab: the nodes (`lab-node-<i>`) and
/// the pod sandboxes (`lab-node-<i>-<ns>-<pod>`).
pub fn lab_namespaces() -> Vec<String> {
    ferry_netlink::netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(NODE_PREFIX))
        .collect()
}

/// Processes that live in one of the lab's network namespaces, or whose
/// command line names the lab's data directory (agents that stayed in the
/// root namespace). Never the calling process.
pub fn lab_processes(data_dir: &Path) -> Vec<i32> {
    let files: Vec<std::path::PathBuf> = lab_namespaces()
        .iter()
        .map(|n| Path::new(ferry_netlink::netns::NETNS_RUN_DIR).join(n))
        .collect();
    let mut pids = ferry_netlink::netns::processes_in(&files);
    let me = std::process::id();
    let marker = data_dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(pid_i) = i32::try_from(pid) else {
            continue;
        };
        if pid == me || pids.contains(&pid_i) {
            continue;
        }
        let names_data_dir = std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            // The agents of this lab, not a `ferry down` naming it.
            args.get(1)
                .is_some_and(|a| crate::AGENTS.iter().any(|agent| agent.as_bytes() == *a))
                && args
                    .iter()
                    .any(|a| String::from_utf8_lossy(a).contains(&marker))
        });
        if names_data_dir {
            pids.push(pid_i);
        }
    }
    pids
}

/// SIGTERM, a short wait, then SIGKILL for whatever is left.
pub fn stop_processes(pids: &[i32], grace: Duration) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let alive = |pid: i32| kill(Pid::from_raw(pid), None).is_ok() && !is_zombie(pid);
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids {
        if alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Removes every process, namespace and link of a lab whose data lives in
/// `data_dir`, plus the lab's runtime files there.
pub async fn cleanup(data_dir: &Path) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    // Processes first: a namespace with processes in it outlives its
    // bind mount, and they would keep pod servers answering.
    for _ in 0..3 {
        let pids = lab_processes(data_dir);
        if pids.is_empty() {
            break;
        }
        removed.processes += pids.len();
        stop_processes(&pids, Duration::from_secs(2));
    }
    // Sandboxes before nodes: a sandbox's veth peer lives in its node.
    let mut namespaces = lab_namespaces();
    namespaces.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for ns in namespaces {
        match ferry_netlink::netns::delete(&ns) {
            Ok(()) => removed.namespaces.push(ns),
            Err(e) => tracing::warn!("deleting netns {ns}: {e}"),
        }
    }
    let nl = ferry_netlink::Netlink::connect()?;
    for link in nl.links().await? {
        if (link.name == BRIDGE || link.name.starts_with(VETH_PREFIX))
            && nl.delete_link(&link.name).await?
        {
            removed.links.push(link.name.clone());
        }
    }
    for dir in ["nodes", "run"] {
        let path = data_dir.join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
    }
    Ok(removed)
}

/// Reaps every exited child (orphans handed to us as subreaper); waits up
/// to a second for the last ones.
pub fn reap_orphans() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
