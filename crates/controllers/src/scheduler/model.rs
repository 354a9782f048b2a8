//! The scheduler's pure model: which nodes a Pod fits (kube-scheduler's
//! NodeUnschedulable, TaintToleration and NodeAffinity filters, in that
//! order) and which of them it goes to (fewest Pods, then node name).
//! Failures are described in kube-scheduler's words, so `kubectl describe
//! pod` reads as it does on any cluster.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

/// Taints the node lifecycle (and kubelet) put on nodes that are not Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// What a Pod must tolerate to land on a cordoned node.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// `Toleration.ToleratesTaint` from k8s.io/api: an empty effect matches
/// every effect, an empty key (with `Exists`) every key.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        "Exists" => true,
        _ => false,
    }
}

/// The first `NoSchedule`/`NoExecute` taint no toleration covers
/// (`FindMatchingUntoleratedTaint` with the scheduler's filter).
pub fn untolerated_taint<'a>(
    taints: impl IntoIterator<Item = &'a Taint>,
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    taints.into_iter().find(|taint| {
        (taint.effect == NO_SCHEDULE || taint.effect == NO_EXECUTE)
            && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

/// The `status` of a node's Ready condition (`None`: never reported).
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// A node that is not Ready is treated as carrying the taint Kubernetes
/// puts on such nodes (`not-ready`, or `unreachable` when its state is
/// Unknown), unless it already does. Pods that tolerate it (DaemonSet
/// Pods do) still go there; the rest see the usual "untolerated taint".
fn readiness_taint(node: &Node) -> Option<Taint> {
    let key = match ready_status(node) {
        Some("True") => return None,
        Some("Unknown") => UNREACHABLE_TAINT,
        _ => NOT_READY_TAINT,
    };
    let tainted = node_taints(node)
        .iter()
        .any(|t| t.key == key && t.effect == NO_SCHEDULE);
    (!tainted).then(|| Taint {
        key: key.to_string(),
        effect: NO_SCHEDULE.to_string(),
        ..Taint::default()
    })
}

fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Why a Pod does not fit a node, worded as kube-scheduler's filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// `spec.unschedulable` (cordoned) and not tolerated.
    Unschedulable,
    UntoleratedTaint {
        key: String,
        value: String,
    },
    /// `nodeSelector` or required node affinity does not match.
    NodeAffinity,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::Unschedulable => f.write_str("node(s) were unschedulable"),
            Unfit::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Unfit::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
        }
    }
}

/// Runs the filters in kube-scheduler's order; the first failure counts.
pub fn fits(pod: &PodSpec, node: &Node) -> Result<(), Unfit> {
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if cordoned {
        let taint = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            effect: NO_SCHEDULE.into(),
            ..Taint::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Err(Unfit::Unschedulable);
        }
    }
    let synthetic = readiness_taint(node);
    if let Some(taint) = untolerated_taint(node_taints(node).iter().chain(&synthetic), tolerations)
    {
        return Err(Unfit::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
        });
    }
    if !matches_node_selector(pod, node) {
        return Err(Unfit::NodeAffinity);
    }
    Ok(())
}

/// `nodeSelector` and required node affinity (terms are ORed, the
/// requirements of one term ANDed; an empty term matches nothing).
pub fn matches_node_selector(pod: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    let selector_matches = pod
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    if !selector_matches {
        return false;
    }
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|term| term_matches(term, labels, name)),
    }
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // Only `metadata.name` with In/NotIn is a valid field selector.
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(name))
        })
}

/// One node selector requirement against the value found (None: absent).
pub fn requirement_matches(r: &NodeSelectorRequirement, found: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => found.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => found.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => found.is_some(),
        "DoesNotExist" => found.is_none(),
        op @ ("Gt" | "Lt") => {
            let [bound] = values else {
                return false;
            };
            let (Some(found), Ok(bound)) = (
                found.and_then(|v| v.parse::<i64>().ok()),
                bound.parse::<i64>(),
            ) else {
                return false;
            };
            if op == "Gt" {
                found > bound
            } else {
                found < bound
            }
        }
        _ => false,
    }
}

/// No node fits: counts of nodes per reason, shown as kube-scheduler's
/// `FitError` (with the default preemption plugin's verdict: every reason
/// here is one that evicting Pods cannot fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: HashMap<String, usize>,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.nodes;
        if n == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        // Sorted as strings, counts included, as upstream does.
        let mut reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        reasons.sort();
        write!(
            f,
            "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
            reasons.join(", ")
        )
    }
}

/// Picks the node for a Pod among `nodes` (each with the number of Pods
/// already on it): the feasible node with the fewest Pods, ties to the
/// lowest name, so Pods spread evenly and decisions are reproducible.
pub fn select_node<'a>(
    pod: &PodSpec,
    nodes: impl IntoIterator<Item = (&'a Node, usize)>,
) -> Result<&'a str, FitError> {
    let mut best: Option<(usize, &str)> = None;
    let mut error = FitError {
        nodes: 0,
        reasons: HashMap::new(),
    };
    for (node, pods) in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        error.nodes += 1;
        match fits(pod, node) {
            Ok(()) => {
                if best.is_none_or(|b| (pods, name) < b) {
                    best = Some((pods, name));
                }
            }
            Err(unfit) => *error.reasons.entry(unfit.to_string()).or_default() += 1,
        }
    }
    best.map(|(_, name)| name).ok_or(error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn ready(name: &str) -> Node {
        node(name, json!({}), json!([]))
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut v = v;
        v["containers"] = json!([{"name": "c", "image": "nginx"}]);
        serde_json::from_value(v).unwrap()
    }

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, op: &str, value: Option<&str>, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.to_string()),
            operator: (!op.is_empty()).then(|| op.to_string()),
            value: value.map(str::to_string),
            effect: (!effect.is_empty()).then(|| effect.to_string()),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let cp = taint("node-role.kubernetes.io/control-plane", None, NO_SCHEDULE);
        assert!(tolerates(
            &toleration(
                "node-role.kubernetes.io/control-plane",
                "Exists",
                None,
                NO_SCHEDULE
            ),
            &cp
        ));
        assert!(tolerates(
            &toleration("node-role.kubernetes.io/control-plane", "Exists", None, ""),
            &cp
        ));
        // Equal with no value matches a taint with no value.
        assert!(tolerates(
            &toleration(
                "node-role.kubernetes.io/control-plane",
                "",
                None,
                NO_SCHEDULE
            ),
            &cp
        ));
        assert!(!tolerates(
            &toleration(
                "node-role.kubernetes.io/control-plane",
                "Exists",
                None,
                NO_EXECUTE
            ),
            &cp
        ));
        assert!(!tolerates(&toleration("other", "Exists", None, ""), &cp));
        // Empty key with Exists tolerates everything.
        assert!(tolerates(&toleration("", "Exists", None, ""), &cp));
        let gpu = taint("gpu", Some("true"), NO_SCHEDULE);
        assert!(tolerates(
            &toleration("gpu", "Equal", Some("true"), ""),
            &gpu
        ));
        assert!(!tolerates(
            &toleration("gpu", "Equal", Some("false"), ""),
            &gpu
        ));
        assert!(!tolerates(
            &toleration("gpu", "Bogus", Some("true"), ""),
            &gpu
        ));
    }

    #[test]
    fn prefer_no_schedule_does_not_filter() {
        let taints = [taint("soft", None, "PreferNoSchedule")];
        assert!(untolerated_taint(&taints, &[]).is_none());
        let taints = [taint("hard", Some("x"), NO_EXECUTE)];
        assert_eq!(untolerated_taint(&taints, &[]).unwrap().key, "hard");
    }

    #[test]
    fn spreads_by_pod_count_then_name() {
        let nodes = [ready("b"), ready("a"), ready("c")];
        let pod = spec(json!({}));
        let pick = |counts: [usize; 3]| {
            select_node(&pod, nodes.iter().zip(counts))
                .unwrap()
                .to_string()
        };
        assert_eq!(pick([0, 0, 0]), "a");
        assert_eq!(pick([0, 1, 0]), "b");
        assert_eq!(pick([1, 1, 0]), "c");
        assert_eq!(pick([2, 2, 2]), "a");
    }

    #[test]
    fn control_plane_taint_and_selector_message_matches_upstream() {
        let nodes = [
            node(
                "cp",
                json!({"disk": "ssd"}),
                json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
            ),
            node("w1", json!({}), json!([])),
            node("w2", json!({"disk": "hdd"}), json!([])),
        ];
        let pod = spec(json!({"nodeSelector": {"disk": "ssd"}}));
        let err = select_node(&pod, nodes.iter().map(|n| (n, 0))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        // Tolerating the taint makes the control plane the only fit.
        let pod = spec(json!({"nodeSelector": {"disk": "ssd"}, "tolerations": [
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(
            select_node(&pod, nodes.iter().map(|n| (n, 5))).unwrap(),
            "cp"
        );
    }

    #[test]
    fn no_nodes_at_all() {
        let err = select_node(&spec(json!({})), std::iter::empty()).unwrap_err();
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
    }

    #[test]
    fn not_ready_and_cordoned_nodes() {
        let mut not_ready = ready("n1");
        not_ready.status = None;
        let unknown: Node = serde_json::from_value(json!({"metadata": {"name": "n2"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}))
        .unwrap();
        let cordoned: Node = serde_json::from_value(json!({"metadata": {"name": "n3"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap();
        let pod = spec(json!({}));
        let err = select_node(&pod, [(&not_ready, 0), (&unknown, 0), (&cordoned, 0)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        // DaemonSet-style tolerations get through all three.
        let tolerant = spec(json!({"tolerations": [
            {"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoSchedule"},
            {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
            {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(
            select_node(&tolerant, [(&not_ready, 2), (&unknown, 1), (&cordoned, 3)]).unwrap(),
            "n2"
        );
    }

    #[test]
    fn node_affinity_terms() {
        let n = node("lab-node-2", json!({"zone": "a", "cores": "8"}), json!([]));
        let affinity = |terms: serde_json::Value| {
            spec(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
        };
        let yes = [
            json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]),
            json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]}]),
            json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]),
            json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}]),
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["lab-node-2"]}]}]),
            // ORed terms: the second matches.
            json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                   {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]),
        ];
        for terms in yes {
            assert!(
                matches_node_selector(&affinity(terms.clone()), &n),
                "{terms}"
            );
        }
        let no = [
            json!([]),
            json!([{}]),
            json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]}]),
            json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["x"]}]}]),
            json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                         {"key": "gpu", "operator": "Exists"}]}]),
            json!([{"matchFields": [{"key": "metadata.name", "operator": "Exists"}]}]),
            json!([{"matchFields": [{"key": "metadata.labels", "operator": "In", "values": ["x"]}]}]),
        ];
        for terms in no {
            assert!(
                !matches_node_selector(&affinity(terms.clone()), &n),
                "{terms}"
            );
        }
    }

    fn arb_taint() -> impl Strategy<Value = Taint> {
        (
            prop::sample::select(vec!["a", "b", "c"]),
            prop::option::of(prop::sample::select(vec!["x", "y"])),
            prop::sample::select(vec![NO_SCHEDULE, NO_EXECUTE, "PreferNoSchedule"]),
        )
            .prop_map(|(k, v, e)| taint(k, v, e))
    }

    fn arb_toleration() -> impl Strategy<Value = Toleration> {
        (
            prop::sample::select(vec!["", "a", "b", "c"]),
            prop::sample::select(vec!["", "Equal", "Exists"]),
            prop::option::of(prop::sample::select(vec!["x", "y"])),
            prop::sample::select(vec!["", NO_SCHEDULE, NO_EXECUTE, "PreferNoSchedule"]),
        )
            .prop_map(|(k, op, v, e)| toleration(k, op, v, e))
    }

    proptest! {
        #[test]
        fn exists_with_empty_key_tolerates_every_taint(t in arb_taint()) {
            prop_assert!(tolerates(&toleration("", "Exists", None, ""), &t));
        }

        #[test]
        fn a_toleration_never_matches_another_key_or_effect(
            tol in arb_toleration(), t in arb_taint()
        ) {
            if tolerates(&tol, &t) {
                prop_assert!(tol.key.as_deref().is_none_or(|k| k == t.key));
                prop_assert!(tol.effect.as_deref().is_none_or(|e| e == t.effect));
            }
        }

        #[test]
        fn an_untolerated_taint_is_a_hard_taint_nothing_tolerates(
            taints in prop::collection::vec(arb_taint(), 0..5),
            tols in prop::collection::vec(arb_toleration(), 0..4),
        ) {
            match untolerated_taint(&taints, &tols) {
                Some(t) => {
                    prop_assert!(t.effect != "PreferNoSchedule");
                    prop_assert!(!tols.iter().any(|tol| tolerates(tol, t)));
                }
                None => prop_assert!(taints.iter().all(|t| t.effect == "PreferNoSchedule"
                    || tols.iter().any(|tol| tolerates(tol, t)))),
            }
        }

        #[test]
        fn the_chosen_node_fits_and_has_the_fewest_pods(
            counts in prop::collection::vec(0usize..5, 0..6),
            tainted in prop::collection::vec(any::<bool>(), 6),
        ) {
            let nodes: Vec<Node> = counts.iter().enumerate().map(|(i, _)| {
                let taints = if tainted[i] {
                    json!([{"key": "k", "effect": "NoSchedule"}])
                } else {
                    json!([])
                };
                node(&format!("n{i}"), json!({}), taints)
            }).collect();
            let pod = spec(json!({}));
            match select_node(&pod, nodes.iter().zip(counts.iter().copied())) {
                Ok(name) => {
                    let i: usize = name[1..].parse().unwrap();
                    prop_assert!(!tainted[i]);
                    for (j, c) in counts.iter().enumerate() {
                        if !tainted[j] {
                            prop_assert!((counts[i], i) <= (*c, j));
                        }
                    }
                }
                Err(e) => {
                    prop_assert!(counts.iter().enumerate().all(|(i, _)| tainted[i]));
                    prop_assert_eq!(e.nodes, counts.len());
                    prop_assert_eq!(e.reasons.values().sum::<usize>(), counts.len());
                }
            }
        }
    }
}
