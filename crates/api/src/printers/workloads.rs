//! Tables for the apps/v1 workloads: Deployment, ReplicaSet and DaemonSet.

use jiff::Timestamp;
use serde_json::Value;

use super::format::{
    age, containers_and_images, format_label_selector, format_labels, integer, label_selector, name,
};
use super::{AGE, CONTAINERS, Column, IMAGES, NAME, column, wide};

pub(super) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column(
        "Up-to-date",
        "string",
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
    ),
    column(
        "Available",
        "string",
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(column(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
    )),
];

pub(super) fn deployment(deployment: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &deployment["spec"];
    let status = &deployment["status"];
    let (containers, images) = containers_and_images(&spec["template"]["spec"]);
    let selector = label_selector(&spec["selector"]).unwrap_or_else(|| "<invalid>".to_string());
    vec![
        name(deployment).into(),
        format!(
            "{}/{}",
            integer(&status["readyReplicas"]),
            desired_replicas(spec)
        )
        .into(),
        integer(&status["updatedReplicas"]).into(),
        integer(&status["availableReplicas"]).into(),
        age(deployment, now).into(),
        containers.into(),
        images.into(),
        selector.into(),
    ]
}

pub(super) const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    column(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
    ),
    column(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(column(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    )),
];

pub(super) fn replica_set(replica_set: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &replica_set["spec"];
    let status = &replica_set["status"];
    let (containers, images) = containers_and_images(&spec["template"]["spec"]);
    vec![
        name(replica_set).into(),
        desired_replicas(spec).into(),
        integer(&status["replicas"]).into(),
        integer(&status["readyReplicas"]).into(),
        age(replica_set, now).into(),
        containers.into(),
        images.into(),
        format_label_selector(&spec["selector"]).into(),
    ]
}

pub(super) const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    column(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
    ),
    column(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    column(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    column(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    column(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(column(
        "Selector",
        "string",
        "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
    )),
];

pub(super) fn daemon_set(daemon_set: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &daemon_set["spec"];
    let status = &daemon_set["status"];
    let pod_spec = &spec["template"]["spec"];
    let (containers, images) = containers_and_images(pod_spec);
    vec![
        name(daemon_set).into(),
        integer(&status["desiredNumberScheduled"]).into(),
        integer(&status["currentNumberScheduled"]).into(),
        integer(&status["numberReady"]).into(),
        integer(&status["updatedNumberScheduled"]).into(),
        integer(&status["numberAvailable"]).into(),
        format_labels(&pod_spec["nodeSelector"]).into(),
        age(daemon_set, now).into(),
        containers.into(),
        images.into(),
        format_label_selector(&spec["selector"]).into(),
    ]
}

/// `spec.replicas`, which defaults to 1.
fn desired_replicas(spec: &Value) -> i64 {
    spec["replicas"].as_i64().unwrap_or(1)
}
