//! PATCH for main resources, `/status` and `/scale`: JSON patch (RFC 6902),
//! JSON merge patch (RFC 7386) and Kubernetes strategic merge patch.

use std::sync::Mutex;

use ferry_api::selector::LabelSelector;
use ferry_api::strategic_merge;
use serde_json::{Value, json};

use crate::registry::{ObjectRef, ObjectSource, Registry, WriteOptions, WriteOutcome};
use crate::status::{ApiError, ApiResult};
use crate::strategy::{self, Target};
use crate::versions;
use ferry_api::resources::ResourceType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> ApiResult<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies a patch document to `doc`.
pub fn apply_patch(
    doc: &Value,
    patch_type: PatchType,
    patch: &Value,
    group: &str,
    kind: &str,
) -> ApiResult<Value> {
    let mut out = doc.clone();
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &ops)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut out, patch);
        }
        PatchType::Strategic => {
            let schema = strategic_merge::schema_for(group, kind);
            out = strategic_merge::apply(doc, patch, &schema)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        }
    }
    Ok(out)
}

/// PATCH of an object or its status.
pub async fn patch_object(
    registry: &Registry,
    r: ObjectRef<'_>,
    view: &'static ResourceType,
    target: Target,
    patch_type: PatchType,
    patch: &Value,
    opts: WriteOptions,
) -> ApiResult<WriteOutcome> {
    let warnings = Mutex::new(Vec::new());
    let mut outcome = registry
        .guaranteed_update(
            r,
            None,
            opts,
            |current| {
                // The patch is written against the version the client
                // speaks; legacy versions are converted around it.
                let current_view = versions::from_storage(view, current)?;
                let patched = apply_patch(&current_view, patch_type, patch, view.group, view.kind)?;
                let patched = versions::to_storage(view, patched)?;
                // A resourceVersion in the patch is a precondition.
                if patched["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
                {
                    return Err(ApiError::modified(r.rt, r.name));
                }
                if patched["metadata"]["name"] != current["metadata"]["name"] {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({})",
                        patched["metadata"]["name"].as_str().unwrap_or(""),
                        r.name
                    )));
                }
                let mut w = Vec::new();
                let decoded = registry.decode_incoming(
                    r.rt,
                    r.namespace,
                    patched,
                    ObjectSource::Patch,
                    &opts,
                    &mut w,
                )?;
                warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(w);
                Ok(decoded)
            },
            target,
            false,
        )
        .await?;
    outcome
        .warnings
        .extend(warnings.into_inner().unwrap_or_else(|p| p.into_inner()));
    Ok(outcome)
}

/// The autoscaling/v1 Scale view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = LabelSelector::from_label_selector_json(&obj["spec"]["selector"])
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

/// How a `/scale` write describes the new Scale.
pub enum ScaleChange<'a> {
    Replace(&'a Value),
    Patch(PatchType, &'a Value),
}

/// PUT or PATCH of `/scale`: computes the new Scale from the current one
/// and writes its replicas into the object's spec.
pub async fn write_scale(
    registry: &Registry,
    r: ObjectRef<'_>,
    change: ScaleChange<'_>,
    opts: WriteOptions,
) -> ApiResult<Value> {
    let precondition = match &change {
        ScaleChange::Replace(body) => body["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))
            })
            .transpose()?,
        ScaleChange::Patch(..) => None,
    };
    let outcome = registry
        .guaranteed_update(
            r,
            precondition,
            opts,
            |current| {
                let scale = scale_of(current);
                let new_scale = match &change {
                    ScaleChange::Replace(body) => (*body).clone(),
                    ScaleChange::Patch(t, p) => apply_patch(&scale, *t, p, "autoscaling", "Scale")?,
                };
                // `replicas` is `omitempty` in the Go type, so clients
                // (kubectl scale --replicas=0 with a precondition) leave
                // it out to mean zero.
                let replicas = match &new_scale["spec"]["replicas"] {
                    Value::Null => 0,
                    v => v.as_i64().ok_or_else(|| {
                        ApiError::bad_request("Scale.spec.replicas must be an integer")
                    })?,
                };
                if replicas < 0 {
                    let kind = "Scale";
                    return Err(ApiError::unprocessable(format!(
                        "{kind}.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0",
                        r.name
                    )));
                }
                let mut new = current.clone();
                new["spec"]["replicas"] = json!(replicas);
                strategy::metadata_mut(&mut new).remove("resourceVersion");
                Ok(new)
            },
            Target::Main,
            false,
        )
        .await?;
    let obj: Value =
        serde_json::from_slice(&outcome.object).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(scale_of(&obj))
}
