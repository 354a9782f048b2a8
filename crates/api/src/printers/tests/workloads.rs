//! Deployment, ReplicaSet and DaemonSet rows, and label selector formatting.

use serde_json::{Value, json};

use super::{CREATED_5M_AGO, CREATED_10D_AGO, meta, row};
use crate::printers::format;

#[test]
fn deployment_rows() {
    let deployment = json!({
        "metadata": meta("nginx", CREATED_5M_AGO),
        "spec": {
            "replicas": 3,
            "selector": {
                "matchLabels": {"app": "nginx"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "backend"]}],
            },
            "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.27"},
                {"name": "log", "image": "busybox:1.36"},
            ]}},
        },
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    });
    assert_eq!(
        row("apps", "Deployment", &deployment),
        json!([
            "nginx",
            "2/3",
            3,
            2,
            "5m",
            "nginx,log",
            "nginx:1.27,busybox:1.36",
            "app=nginx,tier in (backend,frontend)"
        ])
    );

    let fresh = json!({
        "metadata": meta("fresh", CREATED_5M_AGO),
        "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Matches"}]}},
    });
    assert_eq!(
        row("apps", "Deployment", &fresh),
        json!(["fresh", "0/1", 0, 0, "5m", "", "", "<invalid>"])
    );
}

#[test]
fn replica_set_rows() {
    let rs = json!({
        "metadata": meta("nginx-7c5b8d6f9", CREATED_5M_AGO),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"pod-template-hash": "7c5b8d6f9", "app": "nginx"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}},
        },
        "status": {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3},
    });
    assert_eq!(
        row("apps", "ReplicaSet", &rs),
        json!([
            "nginx-7c5b8d6f9",
            3,
            3,
            3,
            "5m",
            "nginx",
            "nginx:1.27",
            "app=nginx,pod-template-hash=7c5b8d6f9"
        ])
    );
    let scaled_down = json!({"metadata": meta("old", CREATED_5M_AGO), "spec": {"replicas": 0}});
    assert_eq!(
        row("apps", "ReplicaSet", &scaled_down),
        json!(["old", 0, 0, 0, "5m", "", "", "<none>"])
    );
}

#[test]
fn daemon_set_rows() {
    let ds = json!({
        "metadata": meta("kube-proxy", CREATED_10D_AGO),
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "template": {"spec": {
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "containers": [{"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.32.0"}],
            }},
        },
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 3, "numberAvailable": 2},
    });
    assert_eq!(
        row("apps", "DaemonSet", &ds),
        json!([
            "kube-proxy",
            3,
            3,
            2,
            3,
            2,
            "kubernetes.io/os=linux",
            "10d",
            "kube-proxy",
            "registry.k8s.io/kube-proxy:v1.32.0",
            "k8s-app=kube-proxy"
        ])
    );
}

#[test]
fn label_selectors_format_like_apimachinery() {
    let format = |selector: Value| format::format_label_selector(&selector);
    assert_eq!(format(json!(null)), "<none>");
    assert_eq!(format(json!({})), "<none>");
    assert_eq!(
        format(json!({"matchExpressions": [
            {"key": "legacy", "operator": "DoesNotExist"},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "app", "operator": "Exists"},
        ]})),
        "app,env notin (prod),!legacy"
    );
    assert_eq!(
        format(json!({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]})),
        "<error>"
    );
    assert_eq!(
        format(
            json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]})
        ),
        "<error>"
    );
    assert_eq!(format(json!({"matchLabels": {"bad key": "x"}})), "<error>");
    assert_eq!(format(json!({"matchLabels": {"app": "-bad"}})), "<error>");
    assert_eq!(
        format(json!({"matchLabels": {"example.com/app": "web", "app": ""}})),
        "app=,example.com/app=web"
    );
}
