//! The field-selector labels each kind supports, as kube-apiserver's
//! `GetAttrs`/field label conversion functions define them.

use ferry_api::resources::ResourceType;
use serde_json::Value;

/// Fields every kind supports.
const COMMON: &[&str] = &["metadata.name", "metadata.namespace"];

fn kind_fields(rt: &ResourceType) -> &'static [&'static str] {
    match (rt.group, rt.kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        _ => &[],
    }
}

/// Checks that every field in a selector is supported for `rt`, with
/// kube-apiserver's message otherwise.
pub fn check_supported<'a>(
    rt: &ResourceType,
    fields: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    for f in fields {
        if !COMMON.contains(&f) && !kind_fields(rt).contains(&f) {
            return Err(format!("field label not supported: {f}"));
        }
    }
    Ok(())
}

/// What selectors match on in `obj`: its labels and the value of every
/// field label `rt` supports.
pub fn selectable(rt: &ResourceType, obj: &Value) -> ferry_store::Selectable {
    ferry_store::Selectable {
        labels: obj["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
        fields: COMMON
            .iter()
            .chain(kind_fields(rt))
            .filter_map(|f| value(rt, obj, f).map(|v| (f.to_string(), v)))
            .collect(),
    }
}

/// The value of a supported field in `obj`; missing fields read as "".
pub fn value(rt: &ResourceType, obj: &Value, field: &str) -> Option<String> {
    let path: &str = match (rt.kind, field) {
        // Event `source` means the reporting component.
        ("Event", "source") => "source.component",
        _ => field,
    };
    let mut cur = obj;
    for segment in path.split('.') {
        cur = cur.get(segment)?;
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::resources::find;
    use serde_json::json;

    #[test]
    fn pod_fields() {
        let pods = find("", "v1", "pods").expect("pods are served");
        assert!(check_supported(pods, ["spec.nodeName", "status.phase"]).is_ok());
        assert_eq!(
            check_supported(pods, ["spec.bogus"]).expect_err("unknown field"),
            "field label not supported: spec.bogus"
        );
        let pod =
            json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1", "hostNetwork": true}});
        assert_eq!(value(pods, &pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(
            value(pods, &pod, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(value(pods, &pod, "status.phase"), None);
    }
}
