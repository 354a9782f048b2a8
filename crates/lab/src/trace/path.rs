//! What a trace is made of: the namespaces a packet is in ([`Place`]),
//! the hops between them, and paths that fork per Service endpoint.

use std::net::Ipv4Addr;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;

/// A network namespace the packet is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The namespace `ferry trace` runs in (the lab's root namespace).
    Host,
    /// A lab node: `/run/netns/<name>`.
    Node(String),
    Pod(PodPlace),
}

/// A pod with a network namespace of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlace {
    pub namespace: String,
    pub name: String,
    /// The CNI container ID the node agent uses: the pod's UID.
    pub uid: String,
    pub node: String,
    /// The sandbox: `<node>-<namespace>-<pod>`.
    pub netns: String,
}

impl PodPlace {
    pub fn of(pod: &Pod, node: &str) -> anyhow::Result<PodPlace> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        Ok(PodPlace {
            netns: ferry_node::sandbox_name(node, &namespace, &name),
            uid: pod
                .metadata
                .uid
                .clone()
                .with_context(|| format!("pod {namespace}/{name} has no uid"))?,
            namespace,
            name,
            node: node.to_string(),
        })
    }
}

impl Place {
    /// The named network namespace, `None` for the host.
    pub fn netns(&self) -> Option<&str> {
        match self {
            Place::Host => None,
            Place::Node(n) => Some(n),
            Place::Pod(p) => Some(&p.netns),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Place::Host => "the host".into(),
            Place::Node(n) => n.clone(),
            Place::Pod(p) => format!("pod {}/{}", p.namespace, p.name),
        }
    }
}

/// One step of the path, and the kernel objects that make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub title: String,
    pub detail: Vec<String>,
}

pub(super) fn hop(title: impl Into<String>, detail: impl Into<String>) -> Hop {
    Hop {
        title: title.into(),
        detail: vec![detail.into()],
    }
}

/// How a path ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// At an address (and port) of a pod, a node or the host.
    Delivered(Place, u16),
    Dropped,
    Rejected,
    /// The packet would leave the lab (never probed).
    LeavesLab,
    /// The trace could not follow it.
    Unknown,
    /// The path splits into [`Path::branches`].
    Forked,
}

/// A traced path: hops, then either an end or one branch per endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub hops: Vec<Hop>,
    pub branches: Vec<Branch>,
    pub end: End,
}

/// The rest of the path for one endpoint a Service may pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    pub endpoint: (Ipv4Addr, u16),
    pub label: String,
    pub path: Path,
}

impl Path {
    /// Every way this path (or one of its branches) ends.
    pub fn ends(&self) -> Vec<&End> {
        if self.end == End::Forked {
            self.branches.iter().flat_map(|b| b.path.ends()).collect()
        } else {
            vec![&self.end]
        }
    }

    /// Keeps only the branch of `endpoint` (the one a probe saw chosen).
    pub fn keep_endpoint(&mut self, endpoint: (Ipv4Addr, u16)) {
        if self.branches.iter().any(|b| b.endpoint == endpoint) {
            self.branches.retain(|b| b.endpoint == endpoint);
            for b in &mut self.branches {
                b.label.push_str(", chosen for the probe");
            }
        }
        for b in &mut self.branches {
            b.path.keep_endpoint(endpoint);
        }
    }

    /// The pods this path can end at, with the port they are reached on.
    pub fn destinations(&self) -> Vec<(PodPlace, u16)> {
        self.ends()
            .into_iter()
            .filter_map(|e| match e {
                End::Delivered(Place::Pod(p), port) => Some((p.clone(), *port)),
                _ => None,
            })
            .collect()
    }
}
