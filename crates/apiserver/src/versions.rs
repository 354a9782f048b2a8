//! Serving a resource in a version other than the one it is stored in:
//! legacy `extensions/v1beta1` and `networking.k8s.io/v1beta1` Ingresses
//! are converted to the stored `networking.k8s.io/v1` on the way in and
//! back on the way out, with Kubernetes' deprecation warning.

use bytes::Bytes;
use ferry_api::conversion;
use ferry_api::resources::ResourceType;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// Converts an object the client sent in `view`'s version to storage form.
pub fn to_storage(view: &'static ResourceType, obj: Value) -> ApiResult<Value> {
    if !view.is_legacy_version() {
        return Ok(obj);
    }
    let mut obj = obj;
    // A body without apiVersion is in the version of the URL.
    if obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && let Some(o) = obj.as_object_mut()
    {
        o.insert("apiVersion".into(), Value::String(view.api_version()));
    }
    conversion::ingress_to_v1(&obj).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Converts a stored object to `view`'s version.
pub fn from_storage(view: &'static ResourceType, obj: &Value) -> ApiResult<Value> {
    if !view.is_legacy_version() {
        return Ok(obj.clone());
    }
    conversion::ingress_from_v1(obj, &view.api_version())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Converts stored JSON bytes to `view`'s version.
pub fn bytes_from_storage(view: &'static ResourceType, data: Bytes) -> ApiResult<Bytes> {
    if !view.is_legacy_version() {
        return Ok(data);
    }
    let obj: Value =
        serde_json::from_slice(&data).map_err(|e| ApiError::internal(e.to_string()))?;
    let converted = from_storage(view, &obj)?;
    Ok(Bytes::from(
        serde_json::to_vec(&converted).unwrap_or_default(),
    ))
}

/// Kubernetes' deprecation warning for requests in `view`'s version.
pub fn deprecation(view: &ResourceType) -> Option<&'static str> {
    conversion::deprecation_warning(view.group, view.version, view.kind)
}
