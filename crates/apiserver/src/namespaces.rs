//! Namespace lifecycle: the namespaces every cluster starts with, and the
//! finalizer that empties a terminating namespace and then removes it (the
//! job kube-controller-manager's namespace controller does upstream).

use std::sync::Arc;
use std::time::Duration;

use ferry_api::resources::{RESOURCES, find_kind};
use ferry_store::Op;
use serde_json::{Value, json};

use crate::registry::{
    DeleteOptions, FieldValidation, Filters, ObjectRef, Registry, WriteOptions, WriteOutcome,
    object_key,
};
use crate::status::{ApiError, ApiResult};

pub const INITIAL_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

fn namespaces() -> &'static ferry_api::resources::ResourceType {
    find_kind("", "Namespace").expect("namespaces are served")
}

/// Creates the initial namespaces that do not exist yet.
pub async fn bootstrap(registry: &Registry) -> ApiResult<()> {
    for ns in INITIAL_NAMESPACES {
        if registry
            .store
            .get(&object_key(namespaces(), None, ns))
            .is_some()
        {
            continue;
        }
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
        });
        let opts = WriteOptions {
            field_validation: FieldValidation::Strict,
            dry_run: false,
        };
        match registry.create(namespaces(), None, obj, opts).await {
            Ok(_) => tracing::info!(namespace = ns, "created initial namespace"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `PUT /api/v1/namespaces/<name>/finalize`: replaces `spec.finalizers`.
pub async fn finalize(registry: &Registry, name: &str, body: &Value) -> ApiResult<WriteOutcome> {
    let rt = namespaces();
    let r = ObjectRef {
        rt,
        namespace: None,
        name,
    };
    let (stored, mut current) = registry.get_value(r)?;
    current["spec"]["finalizers"] = body["spec"]["finalizers"].clone();
    let object = registry
        .store
        .write(Op::Update {
            key: object_key(rt, None, name),
            object: current,
            expected_revision: Some(stored.revision),
        })
        .await
        .map_err(|e| match e {
            ferry_store::StoreError::Conflict { .. } => ApiError::modified(rt, name),
            other => other.into(),
        })?;
    registry.namespace_deleted.notify_one();
    Ok(WriteOutcome {
        object: object.data,
        warnings: Vec::new(),
        created: false,
    })
}

/// Runs forever: whenever a namespace is terminating, deletes its content,
/// then the namespace itself once nothing is left.
pub async fn run_finalizer(registry: Arc<Registry>) {
    loop {
        let pending = match sweep(&registry).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e.message, "namespace cleanup failed");
                true
            }
        };
        if pending {
            // Content with finalizers or graceful pods may take a while.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                registry.namespace_deleted.notified(),
            )
            .await;
        } else {
            registry.namespace_deleted.notified().await;
        }
    }
}

/// One pass over terminating namespaces; true while any remain.
async fn sweep(registry: &Registry) -> ApiResult<bool> {
    let page = registry.list(namespaces(), None, &Filters::default(), None, None);
    let mut pending = false;
    for (_, stored) in page.items {
        let ns: Value =
            serde_json::from_slice(&stored.data).map_err(|e| ApiError::internal(e.to_string()))?;
        if ns["metadata"]
            .get("deletionTimestamp")
            .is_none_or(Value::is_null)
        {
            continue;
        }
        let Some(name) = ns["metadata"]["name"].as_str() else {
            continue;
        };
        pending = true;
        let mut remaining = 0;
        for rt in RESOURCES
            .iter()
            .filter(|r| r.namespaced && !r.is_legacy_version())
        {
            let items = registry
                .list(rt, Some(name), &Filters::default(), None, None)
                .items;
            remaining += items.len();
            for (_, item) in items {
                let obj: Value = serde_json::from_slice(&item.data).unwrap_or(Value::Null);
                let Some(item_name) = obj["metadata"]["name"].as_str() else {
                    continue;
                };
                let r = ObjectRef {
                    rt,
                    namespace: Some(name),
                    name: item_name,
                };
                match registry.delete(r, &DeleteOptions::default()).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(namespace = name, object = item_name, error = %e.message, "deleting namespace content failed")
                    }
                }
            }
        }
        let finalizers_left = ns["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x != "kubernetes"));
        if remaining == 0 && !finalizers_left {
            let key = object_key(namespaces(), None, name);
            match registry
                .store
                .write(Op::Delete {
                    key,
                    expected_revision: Some(stored.revision),
                })
                .await
            {
                Ok(_) => tracing::info!(namespace = name, "namespace deleted"),
                Err(e) => {
                    tracing::debug!(namespace = name, error = %e, "namespace removal retried")
                }
            }
        }
    }
    Ok(pending)
}
