//! Container environment: `env` entries with the downward API, and
//! Kubernetes' `$(VAR)` expansion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Default PATH when the pod sets none (the one container images use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Expands `$(NAME)` references as Kubernetes does: `$$` is a literal `$`,
/// a reference to an unknown name (or an unterminated one) stays as
/// written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API field path.
fn field_value(
    pod: &Pod,
    path: &str,
    pod_ip: Option<&str>,
    host_ip: Option<&str>,
) -> Option<String> {
    let meta = &pod.metadata;
    let subscript = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(key) = subscript("metadata.labels['") {
        return Some(meta.labels.as_ref()?.get(&key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations['") {
        return Some(
            meta.annotations
                .as_ref()?
                .get(&key)
                .cloned()
                .unwrap_or_default(),
        );
    }
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => pod_ip.unwrap_or_default().to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.unwrap_or_default().to_string(),
        _ => return None,
    })
}

/// The container's environment: `env` entries in order, each value
/// `$(VAR)`-expanded against the entries before it; `valueFrom.fieldRef`
/// from the pod; other `valueFrom` kinds from `resolved` (looked up by the
/// caller). Adds `HOSTNAME` and a default `PATH` unless the pod sets them.
/// An unresolvable entry is an error (kubelet: CreateContainerConfigError).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    pod_ip: Option<&str>,
    host_ip: Option<&str>,
    resolved: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(pod, &field.field_path, pod_ip, host_ip).ok_or_else(|| {
                    format!(
                        "unsupported fieldRef {:?} in env var {:?}",
                        field.field_path, var.name
                    )
                })?
            } else if let Some(v) = resolved.get(&var.name) {
                v.clone()
            } else if from
                .config_map_key_ref
                .as_ref()
                .is_some_and(|r| r.optional == Some(true))
                || from
                    .secret_key_ref
                    .as_ref()
                    .is_some_and(|r| r.optional == Some(true))
            {
                continue;
            } else {
                return Err(format!(
                    "couldn't resolve the value of env var {:?}",
                    var.name
                ));
            }
        } else {
            expand(var.value.as_deref().unwrap_or_default(), &env)
        };
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    let hostname = if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    } else {
        pod.spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or_else(|| pod.metadata.name.clone())
            .unwrap_or_default()
    };
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.insert(0, ("HOSTNAME".into(), hostname));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env = kv(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &env), "1-two");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(C)", &env), "$(C)");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("cost $5 $", &env), "cost $5 $");
        assert_eq!(expand("", &env), "");
    }

    #[test]
    fn downward_api_and_order() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "lab-node-1", "containers": [{"name": "c", "image": "x",
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "GREETING", "value": "hi $(POD_NAME) on $(NODE)"},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                ]}]}
        }))
        .expect("pod");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let mut resolved = BTreeMap::new();
        resolved.insert("FROM_CM".to_string(), "v".to_string());
        let env = container_env(&pod, c, Some("10.244.1.5"), Some("172.30.0.11"), &resolved)
            .expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_NAME"), Some("web-0"));
        assert_eq!(get("POD_IP"), Some("10.244.1.5"));
        assert_eq!(get("APP"), Some("web"));
        // NODE is defined after GREETING, so it stays unexpanded.
        assert_eq!(get("GREETING"), Some("hi web-0 on $(NODE)"));
        assert_eq!(get("FROM_CM"), Some("v"));
        assert_eq!(get("HOSTNAME"), Some("web-0"));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        let err = container_env(&pod, c, None, None, &BTreeMap::new()).expect_err("unresolved");
        assert!(err.contains("FROM_CM"));
    }
}
