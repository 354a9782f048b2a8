//! The garbage collector's dependency graph, after upstream's
//! `garbagecollector/graph_builder.go`: every watched object by uid with
//! its ownerReferences, deletion state and the GC finalizers, plus the
//! reverse index owner → dependents. Applying a change tells which objects
//! the collector must look at next. Pure: no I/O.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// One object as the collector knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Index into the collector's table of watched resources.
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    pub fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Being deleted in the foreground: waits for its blocking dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }

    /// Being deleted with `orphan`: its dependents are to be released.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.has_finalizer(ORPHAN)
    }

    fn blocks(&self, owner: &str) -> bool {
        self.owners
            .iter()
            .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
    }
}

/// What the collector should do next.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// Check whether the object's owners are gone (or it is a foreground
    /// deletion waiting for dependents).
    AttemptToDelete(String),
    /// Release the dependents of an object deleted with `orphan`.
    AttemptToOrphan(String),
}

#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → uids of objects that name it, whether or not the owner
    /// is (still) in the graph.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.nodes.get(uid))
            .collect()
    }

    /// Dependents whose reference to `owner` has `blockOwnerDeletion`.
    pub fn blocking_dependents(&self, owner: &str) -> Vec<&Node> {
        self.dependents(owner)
            .into_iter()
            .filter(|d| d.blocks(owner))
            .collect()
    }

    /// Uids of the objects of one resource (to drop the ones a relist no
    /// longer shows).
    pub fn uids_of(&self, resource: usize) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.resource == resource)
            .map(|n| n.uid.clone())
            .collect()
    }

    /// An object was added or changed.
    pub fn upsert(&mut self, node: Node) -> Vec<Work> {
        let mut work = Vec::new();
        let uid = node.uid.clone();
        let old = self.nodes.get(&uid).cloned();
        let old_owners = old.as_ref().map(|o| o.owners.clone()).unwrap_or_default();
        for r in &old_owners {
            let still = node.owners.iter().find(|n| n.uid == r.uid);
            if still.is_none()
                && let Some(set) = self.dependents.get_mut(&r.uid)
            {
                set.remove(&uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            // A dependent that no longer blocks may let its owner go.
            let unblocked = r.block_owner_deletion == Some(true)
                && still.is_none_or(|n| n.block_owner_deletion != Some(true));
            if unblocked
                && self
                    .nodes
                    .get(&r.uid)
                    .is_some_and(Node::deleting_dependents)
            {
                work.push(Work::AttemptToDelete(r.uid.clone()));
            }
        }
        let mut unknown_owner = false;
        for r in &node.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
            if !self.nodes.contains_key(&r.uid) {
                unknown_owner = true;
            }
        }
        // An owner the graph has never seen may not exist: check.
        let owners_changed = old.as_ref().is_none_or(|o| o.owners != node.owners);
        if unknown_owner && owners_changed {
            work.push(Work::AttemptToDelete(uid.clone()));
        }
        if node.orphaning() {
            work.push(Work::AttemptToOrphan(uid.clone()));
        }
        if node.deleting_dependents() {
            work.push(Work::AttemptToDelete(uid.clone()));
            for d in self.dependents.get(&uid).into_iter().flatten() {
                work.push(Work::AttemptToDelete(d.clone()));
            }
        }
        self.nodes.insert(uid, node);
        work
    }

    /// An object is gone.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let mut work = Vec::new();
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        for r in &node.owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(Node::deleting_dependents)
            {
                work.push(Work::AttemptToDelete(r.uid.clone()));
            }
        }
        // Its dependents now point at nothing.
        for d in self.dependents.get(uid).into_iter().flatten() {
            work.push(Work::AttemptToDelete(d.clone()));
        }
        work
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: 0,
            namespace: Some("ns".into()),
            name: uid.into(),
            uid: uid.into(),
            owners,
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    #[test]
    fn owner_deletion_wakes_its_dependents() {
        let mut g = Graph::default();
        assert!(g.upsert(node("rs", vec![])).is_empty());
        assert!(
            g.upsert(node("pod-a", vec![owner_ref("rs", true)]))
                .is_empty()
        );
        assert!(
            g.upsert(node("pod-b", vec![owner_ref("rs", true)]))
                .is_empty()
        );
        let mut work = g.remove("rs");
        work.sort();
        assert_eq!(
            work,
            [
                Work::AttemptToDelete("pod-a".into()),
                Work::AttemptToDelete("pod-b".into())
            ]
        );
        // The dependents still point at the missing owner.
        assert_eq!(g.dependents("rs").len(), 2);
        g.remove("pod-a");
        assert_eq!(g.dependents("rs").len(), 1);
    }

    #[test]
    fn unknown_owners_are_checked_once() {
        let mut g = Graph::default();
        let pod = node("pod", vec![owner_ref("ghost", true)]);
        assert_eq!(g.upsert(pod.clone()), [Work::AttemptToDelete("pod".into())]);
        assert!(g.upsert(pod).is_empty(), "a status update does not recheck");
    }

    #[test]
    fn orphan_and_foreground_deletions() {
        let mut g = Graph::default();
        g.upsert(node("rs", vec![]));
        g.upsert(node("pod", vec![owner_ref("rs", true)]));
        let mut orphaning = node("rs", vec![]);
        orphaning.deleting = true;
        orphaning.finalizers = vec![ORPHAN.into()];
        assert_eq!(g.upsert(orphaning), [Work::AttemptToOrphan("rs".into())]);

        let mut g = Graph::default();
        g.upsert(node("rs", vec![]));
        g.upsert(node("pod", vec![owner_ref("rs", true)]));
        g.upsert(node("other", vec![owner_ref("rs", false)]));
        let mut foreground = node("rs", vec![]);
        foreground.deleting = true;
        foreground.finalizers = vec![FOREGROUND.into()];
        let mut work = g.upsert(foreground);
        work.sort();
        assert_eq!(
            work,
            [
                Work::AttemptToDelete("other".into()),
                Work::AttemptToDelete("pod".into()),
                Work::AttemptToDelete("rs".into())
            ]
        );
        let blocking: Vec<&str> = g
            .blocking_dependents("rs")
            .iter()
            .map(|n| n.uid.as_str())
            .collect();
        assert_eq!(blocking, ["pod"]);
        // The blocking dependent going away lets the owner finish.
        assert_eq!(g.remove("pod"), [Work::AttemptToDelete("rs".into())]);
        assert!(g.blocking_dependents("rs").is_empty());
        // So does one that stops blocking.
        g.upsert(node("pod2", vec![owner_ref("rs", true)]));
        assert_eq!(
            g.upsert(node("pod2", vec![owner_ref("rs", false)])),
            [Work::AttemptToDelete("rs".into())]
        );
    }
}
