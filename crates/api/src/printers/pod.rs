//! The Pod table, whose STATUS column condenses phase, init containers,
//! sidecars and container states the way `printPod` does.

use jiff::Timestamp;
use serde_json::Value;

use super::format::{age, elapsed, integer, items, name, or_none, text, timestamp};
use super::{AGE, Column, NAME, column, wide};

pub(super) const COLUMNS: &[Column] = &[
    NAME,
    column(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    column(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(column(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    )),
    wide(column(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
    )),
    wide(column(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
    )),
    wide(column(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
    )),
];

pub(super) fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let summary = summarize(pod);
    let restarts = match summary.restarts.last {
        Some(last) if summary.restarts.count != 0 => {
            format!("{} ({} ago)", summary.restarts.count, elapsed(last, now))
        }
        _ => summary.restarts.count.to_string(),
    };
    vec![
        name(pod).into(),
        format!("{}/{}", summary.ready, summary.total).into(),
        summary.reason.into(),
        restarts.into(),
        age(pod, now).into(),
        or_none(pod_ip(status)).into(),
        or_none(text(&spec["nodeName"])).into(),
        or_none(text(&status["nominatedNodeName"])).into(),
        readiness_gates(spec, status).into(),
    ]
}

struct Summary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: Restarts,
}

/// Restart count and the latest `lastState.terminated.finishedAt` seen.
#[derive(Default, Clone, Copy)]
struct Restarts {
    count: i64,
    last: Option<Timestamp>,
}

impl Restarts {
    fn add(&mut self, container_status: &Value) {
        self.count = self
            .count
            .saturating_add(integer(&container_status["restartCount"]));
        if let Some(finished) =
            timestamp(&container_status["lastState"]["terminated"]["finishedAt"])
            && self.last.is_none_or(|last| last < finished)
        {
            self.last = Some(finished);
        }
    }
}

fn summarize(pod: &Value) -> Summary {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let init_containers = items(&spec["initContainers"]);
    // Sidecars are init containers with restartPolicy Always; they count as
    // regular containers once started. Later duplicates win, as in upstream's map.
    let is_sidecar = |container_name: &str| {
        init_containers
            .iter()
            .rev()
            .find(|c| text(&c["name"]) == container_name)
            .is_some_and(is_restartable)
    };
    let total = items(&spec["containers"]).len()
        + init_containers.iter().filter(|c| is_restartable(c)).count();

    let phase = text(&status["phase"]);
    let mut reason = match text(&status["reason"]) {
        "" => phase.to_string(),
        status_reason => status_reason.to_string(),
    };
    let conditions = items(&status["conditions"]);
    if conditions
        .iter()
        .any(|c| text(&c["type"]) == "PodScheduled" && text(&c["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut ready = 0;
    let mut restarts = Restarts::default();
    let mut sidecar_restarts = Restarts::default();
    let mut initializing = false;
    for (index, container) in items(&status["initContainerStatuses"]).iter().enumerate() {
        restarts.add(container);
        let sidecar = is_sidecar(text(&container["name"]));
        if sidecar {
            sidecar_restarts.add(container);
        }
        let state = &container["state"];
        let terminated = &state["terminated"];
        if terminated.is_object() && integer(&terminated["exitCode"]) == 0 {
            continue;
        }
        if sidecar && container["started"].as_bool() == Some(true) {
            if container["ready"].as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        }
        // The first init container that has not finished names the status.
        let waiting = text(&state["waiting"]["reason"]);
        reason = if terminated.is_object() {
            terminated_reason(terminated, "Init:")
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{index}/{}", init_containers.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_is_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        let mut has_running = false;
        for container in items(&status["containerStatuses"]).iter().rev() {
            restarts.add(container);
            let state = &container["state"];
            let waiting = text(&state["waiting"]["reason"]);
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if state["terminated"].is_object() {
                reason = terminated_reason(&state["terminated"], "");
            } else if container["ready"].as_bool() == Some(true) && state["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed but another still runs is not done.
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| text(&c["type"]) == "Ready" && text(&c["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if pod["metadata"]["deletionTimestamp"].is_string() {
        if text(&status["reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    Summary {
        ready,
        total,
        reason,
        restarts,
    }
}

fn is_restartable(container: &Value) -> bool {
    text(&container["restartPolicy"]) == "Always"
}

/// `Completed`, `Signal:9`, `ExitCode:1` (with `Init:` for init containers).
fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    let reason = text(&terminated["reason"]);
    let signal = integer(&terminated["signal"]);
    if !reason.is_empty() {
        format!("{prefix}{reason}")
    } else if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", integer(&terminated["exitCode"]))
    }
}

/// Whether the first condition of `type_` has status True.
fn condition_is_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .find(|c| text(&c["type"]) == type_)
        .is_some_and(|c| text(&c["status"]) == "True")
}

/// The primary pod IP. When `podIP` and `podIPs` disagree, `podIP` wins, as
/// in the v1 to internal conversion.
fn pod_ip(status: &Value) -> &str {
    match text(&status["podIP"]) {
        "" => items(&status["podIPs"])
            .first()
            .map_or("", |ip| text(&ip["ip"])),
        ip => ip,
    }
}

/// `2/3`: readiness-gate conditions that are True, of those declared.
fn readiness_gates(spec: &Value, status: &Value) -> String {
    let gates = items(&spec["readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = items(&status["conditions"]);
    let passing = gates
        .iter()
        .filter(|gate| condition_is_true(conditions, text(&gate["conditionType"])))
        .count();
    format!("{passing}/{}", gates.len())
}
