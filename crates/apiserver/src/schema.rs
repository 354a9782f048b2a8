//! Schema checks by round-tripping through the typed Kubernetes structs of
//! `k8s-openapi`.
//!
//! Decoding into the typed struct rejects wrongly-typed values; encoding it
//! back yields the canonical object with unknown fields dropped. Comparing
//! the two finds the unknown fields, which server-side field validation
//! (`fieldValidation=Strict|Warn|Ignore`) reports.

use k8s_openapi::api::{apps, coordination, core, discovery, networking};
use serde_json::Value;

/// The result of decoding an object against its kind's schema.
pub struct Decoded {
    /// The canonical object: known fields only.
    pub object: Value,
    /// Paths of fields the schema does not know, as `spec.foo` or
    /// `spec.ports[0].bar`.
    pub unknown_fields: Vec<String>,
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decodes `obj` as `group`/`kind`. Kinds without a typed schema pass
/// through unchanged.
pub fn decode(group: &str, kind: &str, obj: &Value) -> Result<Decoded, String> {
    let canonical = match (group, kind) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>(obj),
        ("", "Node") => round_trip::<core::v1::Node>(obj),
        ("", "Pod") => round_trip::<core::v1::Pod>(obj),
        ("", "Service") => round_trip::<core::v1::Service>(obj),
        ("", "Endpoints") => round_trip::<core::v1::Endpoints>(obj),
        ("", "Secret") => round_trip::<core::v1::Secret>(obj),
        ("", "ConfigMap") => round_trip::<core::v1::ConfigMap>(obj),
        ("", "Event") => round_trip::<core::v1::Event>(obj),
        ("", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(obj),
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>(obj),
        ("apps", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>(obj),
        ("apps", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(obj),
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<discovery::v1::EndpointSlice>(obj),
        ("networking.k8s.io", "Ingress") => round_trip::<networking::v1::Ingress>(obj),
        ("networking.k8s.io", "IngressClass") => round_trip::<networking::v1::IngressClass>(obj),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>(obj),
        ("autoscaling", "Scale") => round_trip::<k8s_openapi::api::autoscaling::v1::Scale>(obj),
        _ => Ok(obj.clone()),
    }?;
    let mut unknown_fields = Vec::new();
    diff_unknown(obj, &canonical, &mut String::new(), &mut unknown_fields);
    Ok(Decoded {
        object: canonical,
        unknown_fields,
    })
}

/// Collects paths present in `input` but absent from `known`.
fn diff_unknown(input: &Value, known: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, value) in i {
                // null means "unset"; it is never an unknown field.
                if value.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match k.get(key) {
                    Some(known_value) => diff_unknown(value, known_value, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (idx, (iv, kv)) in i.iter().zip(k).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{idx}]"));
                diff_unknown(iv, kv, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_and_keeps_known_ones() {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"ports": [{"port": 80, "nope": true}], "selector": {"app": "web"}, "typo": "x", "clusterIP": null}
        });
        let d = decode("", "Service", &svc).unwrap();
        assert_eq!(
            d.unknown_fields,
            vec!["metadata.bogus", "spec.ports[0].nope", "spec.typo"]
        );
        assert_eq!(d.object["spec"]["ports"][0]["port"], 80);
        assert!(d.object["spec"].get("typo").is_none());
        assert_eq!(d.object["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn rejects_wrong_types() {
        let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": "eighty"}]}});
        assert!(decode("", "Service", &bad).is_err());
    }
}
