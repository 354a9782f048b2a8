//! The `default/kubernetes` Service and its endpoints, which point at this
//! API server. kube-apiserver reconciles them at start; so does Ferry.

use std::net::SocketAddr;

use ferry_api::resources::{ResourceType, find_kind};
use serde_json::{Value, json};

use crate::registry::{FieldValidation, ObjectRef, Registry, WriteOptions};
use crate::status::ApiResult;
use crate::strategy::Target;

fn kind(group: &str, kind: &str) -> &'static ResourceType {
    find_kind(group, kind).expect("built-in kinds are served")
}

const OPTIONS: WriteOptions = WriteOptions {
    field_validation: FieldValidation::Strict,
    dry_run: false,
};

/// Creates the object, or replaces it when it differs from `desired`.
async fn ensure(registry: &Registry, rt: &'static ResourceType, desired: Value) -> ApiResult<()> {
    let r = ObjectRef {
        rt,
        namespace: Some("default"),
        name: "kubernetes",
    };
    match registry.get_value(r) {
        Err(e) if e.code == 404 => {
            registry
                .create(rt, Some("default"), desired, OPTIONS)
                .await?;
        }
        Err(e) => return Err(e),
        Ok((_, current)) => {
            let mut merged = current.clone();
            for field in ["spec", "subsets", "addressType", "endpoints", "ports"] {
                if let Some(v) = desired.get(field) {
                    // Keep what the server allocated (clusterIP) and
                    // defaulted; replace what the endpoint addresses say.
                    if field == "spec" {
                        for (k, val) in v.as_object().into_iter().flatten() {
                            merged["spec"][k] = val.clone();
                        }
                    } else {
                        merged[field] = v.clone();
                    }
                }
            }
            merged["metadata"]["labels"] = desired["metadata"]["labels"].clone();
            if merged != current {
                registry.update(r, Target::Main, merged, OPTIONS).await?;
            }
        }
    }
    Ok(())
}

/// Makes `default/kubernetes` (Service, Endpoints, EndpointSlice) point at
/// `advertise` (the address other components reach this server on).
pub async fn reconcile(registry: &Registry, advertise: SocketAddr) -> ApiResult<()> {
    let ip = advertise.ip().to_string();
    let port = advertise.port();
    let cluster_ip = registry.services.first_ip().to_string();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    ensure(
        registry,
        kind("", "Service"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": labels},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": cluster_ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                "sessionAffinity": "None",
            },
        }),
    )
    .await?;
    // Endpoints may not point at loopback (upstream validation refuses it,
    // and no pod could reach it); a server bound to 127.0.0.1 alone needs
    // --advertise-address for its Service to have endpoints.
    if advertise.ip().is_loopback() {
        tracing::warn!(
            %advertise,
            "the advertise address is a loopback address; the kubernetes Service gets no endpoints (set --advertise-address)"
        );
        return Ok(());
    }
    ensure(
        registry,
        kind("", "Endpoints"),
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{
                "addresses": [{"ip": ip}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }],
        }),
    )
    .await?;
    ensure(
        registry,
        kind("discovery.k8s.io", "EndpointSlice"),
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
    )
    .await
}
