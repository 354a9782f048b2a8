//! Per-kind rules for create and update, after kube-apiserver's registry
//! strategies: what the server owns in metadata, which part a write may
//! change (main resource vs `/status`), and when `generation` moves.

use ferry_api::resources::ResourceType;
use serde_json::{Map, Value, json};

/// RFC 3339 with seconds, as Kubernetes writes timestamps.
pub fn now_rfc3339() -> String {
    timestamp_rfc3339(jiff::Timestamp::now())
}

pub fn timestamp_rfc3339(t: jiff::Timestamp) -> String {
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t).unwrap_or_default()
}

pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Characters kube-apiserver uses for generated name suffixes.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn generated_name(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Fills in what the server owns on a new object.
pub fn prepare_for_create(rt: &ResourceType, obj: &mut Value) {
    let meta = metadata_mut(obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    for owned in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
        "generation",
    ] {
        meta.remove(owned);
    }
    if rt.tracks_generation {
        meta.insert("generation".into(), json!(1));
    }
    match (rt.group, rt.kind) {
        ("", "Namespace") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "Pod") => {
            let qos = qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "Service") | ("networking.k8s.io", "Ingress") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("apps", _) => {
            obj["status"] = json!({});
        }
        _ => {}
    }
}

/// Pod QoS class from container requests and limits, as the API reports it.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"].as_array();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers.into_iter().flatten() {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let full_limits = ["cpu", "memory"]
            .iter()
            .all(|r| limits.is_some_and(|l| l.contains_key(*r)));
        let requests_match = requests
            .map(|r| {
                r.iter()
                    .all(|(k, v)| limits.and_then(|l| l.get(k)) == Some(v))
            })
            .unwrap_or(true);
        if !full_limits || !requests_match {
            guaranteed = false;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// What a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Main,
    Status,
}

/// Merges an incoming object with the stored one: server-owned metadata
/// stays, and each target may only change its own part.
pub fn prepare_for_update(rt: &ResourceType, new: &mut Value, old: &Value, target: Target) {
    if target == Target::Status {
        // A status write changes the status and nothing else.
        let status = new.get("status").cloned();
        let rv = new["metadata"].get("resourceVersion").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        if let Some(rv) = rv {
            metadata_mut(new).insert("resourceVersion".into(), rv);
        }
        return;
    }
    let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
    let meta = metadata_mut(new);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(owned) {
            Some(v) => meta.insert(owned.into(), v.clone()),
            None => meta.remove(owned),
        };
    }
    meta.remove("selfLink");
    meta.remove("managedFields");
    if rt.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    if rt.kind == "Namespace" && rt.group.is_empty() {
        // Namespace finalizers change only through /finalize.
        new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    }
    if rt.tracks_generation && spec_changed(new, old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        metadata_mut(new).insert("generation".into(), json!(generation));
    }
}

/// Everything but metadata and status.
fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(new) != strip(old)
}

/// True once a deleted object has no finalizers left and can go.
pub fn ready_to_remove(obj: &Value) -> bool {
    let meta = &obj["metadata"];
    meta.get("deletionTimestamp").is_some_and(|t| !t.is_null())
        && meta["finalizers"].as_array().is_none_or(|f| f.is_empty())
}

/// Converts a Secret's `stringData` into base64 `data`, as the API does.
pub fn fold_secret_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in entries {
        if let Some(s) = v.as_str() {
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ferry_api::resources::find;

    #[test]
    fn status_is_owned_by_the_status_subresource() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u1", "generation": 3},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "d", "uid": "zzz"},
            "spec": {"replicas": 2}, "status": {"replicas": 9}});
        prepare_for_update(deploy, &mut new, &old, Target::Main);
        assert_eq!(new["status"]["replicas"], 1);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["generation"], 4);

        let mut status_write = json!({"metadata": {"name": "d"},
            "spec": {"replicas": 5}, "status": {"replicas": 2}});
        prepare_for_update(deploy, &mut status_write, &old, Target::Status);
        assert_eq!(status_write["spec"]["replicas"], 1);
        assert_eq!(status_write["status"]["replicas"], 2);
        assert_eq!(status_write["metadata"]["generation"], 3);
    }

    #[test]
    fn generated_names_have_five_char_suffix() {
        let n = generated_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n[4..].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
    }

    #[test]
    fn secret_string_data() {
        let mut s = json!({"stringData": {"user": "admin"}, "data": {"x": "eQ=="}});
        fold_secret_string_data(&mut s);
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert_eq!(s["data"]["x"], "eQ==");
        assert!(s.get("stringData").is_none());
    }

    #[test]
    fn qos() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&pod), "BestEffort");
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&pod), "Guaranteed");
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&pod), "Burstable");
    }
}
