//! The lab's Ingress controller: IngressClass `ferry` (the cluster
//! default, so Ingresses without a class are served too) and DaemonSet
//! `kube-system/ferry-ingress`, `ferry ingress` with host networking on
//! every node, on :80 and :443 of the node's address, as ingress-nginx is
//! commonly deployed on bare metal. `deploy/ingress.yaml` is the same for a
//! real cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::networking::v1::IngressClass;
use kube::api::{Api, PostParams};

use crate::dns::{NAMESPACE, ignore_exists};

/// The DaemonSet and its container.
pub const DAEMONSET: &str = "ferry-ingress";
/// The IngressClass (also `ferry ingress --ingress-class`).
pub const CLASS: &str = "ferry";
/// `spec.controller` of the class.
pub const CONTROLLER: &str = "ferry.dev/ingress-controller";
const APP_LABEL: (&str, &str) = ("app.kubernetes.io/name", "ferry-ingress");

fn labels() -> serde_json::Value {
    serde_json::json!({ APP_LABEL.0: APP_LABEL.1 })
}

/// IngressClass `ferry`, marked as the default class.
pub fn ingress_class() -> IngressClass {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": CLASS,
            "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
        },
        "spec": {"controller": CONTROLLER},
    }))
    .expect("the ferry IngressClass is a valid IngressClass")
}

/// DaemonSet `kube-system/ferry-ingress` with host networking.
pub fn daemonset(kubeconfig: &Path) -> DaemonSet {
    let value = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": DAEMONSET, "namespace": NAMESPACE, "labels": labels()},
        "spec": {
            "selector": {"matchLabels": labels()},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "hostNetwork": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "containers": [{
                        "name": DAEMONSET,
                        "image": format!("ferry/ferry:{}", env!("CARGO_PKG_VERSION")),
                        "args": ["ingress", "--kubeconfig", kubeconfig.display().to_string()],
                        "ports": [
                            {"name": "http", "containerPort": 80, "protocol": "TCP"},
                            {"name": "https", "containerPort": 443, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 10254, "protocol": "TCP"},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": 10254, "scheme": "HTTP"},
                            "periodSeconds": 1,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": 10254, "scheme": "HTTP"},
                            "initialDelaySeconds": 10,
                            "timeoutSeconds": 5,
                            "failureThreshold": 5,
                        },
                    }],
                },
            },
        },
    });
    serde_json::from_value(value).expect("the ferry-ingress DaemonSet is a valid DaemonSet")
}

/// Creates the IngressClass and the DaemonSet (kept when they exist).
pub async fn install(client: &kube::Client, kubeconfig: &Path) -> anyhow::Result<()> {
    let classes: Api<IngressClass> = Api::all(client.clone());
    ignore_exists(
        classes
            .create(&PostParams::default(), &ingress_class())
            .await,
    )
    .with_context(|| format!("creating IngressClass {CLASS}"))?;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    ignore_exists(
        daemonsets
            .create(&PostParams::default(), &daemonset(kubeconfig))
            .await,
    )
    .with_context(|| format!("creating DaemonSet {NAMESPACE}/{DAEMONSET}"))?;
    Ok(())
}

/// Waits until the DaemonSet has a ready pod on each of `nodes` nodes.
pub async fn wait_ready(
    client: &kube::Client,
    nodes: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + timeout;
    loop {
        let ready = daemonsets
            .get_opt(DAEMONSET)
            .await?
            .and_then(|d| d.status)
            .map_or(0, |s| s.number_ready);
        if usize::try_from(ready).unwrap_or(0) >= nodes {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the {DAEMONSET} DaemonSet has {ready} of {nodes} ready pods after {}s; see \
                 `kubectl -n {NAMESPACE} describe pods -l {}={}` and the container logs",
                timeout.as_secs(),
                APP_LABEL.0,
                APP_LABEL.1
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_valid_and_use_host_networking() {
        let ds = daemonset(Path::new("/var/lib/ferry/lab/node-kubeconfig"));
        let spec = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
        assert_eq!(spec.host_network, Some(true));
        let c = &spec.containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(
                &[
                    "ingress".to_string(),
                    "--kubeconfig".into(),
                    "/var/lib/ferry/lab/node-kubeconfig".into()
                ][..]
            )
        );
        let class = ingress_class();
        assert_eq!(
            class.spec.and_then(|s| s.controller).as_deref(),
            Some(CONTROLLER)
        );
    }
}
