//! Workload validation, after upstream's apps validation
//! (k8s.io/kubernetes pkg/apis/apps/validation): `ValidateDeploymentSpec`,
//! `ValidateReplicaSetSpec` and `ValidateDaemonSetSpec`, plus the
//! registry's rule that `spec.selector` is immutable in apps/v1.
//!
//! The selector must be present, non-empty and match the template's labels;
//! the template is checked as a pod template whose `restartPolicy` is
//! `Always`.

use serde_json::Value;

use super::FieldError;
use super::common::{
    child, go_int_or_string, go_label_selector, go_string_map, int, invalid_int, invalid_printed,
    is_set, label_selector, labels_of, len_of, not_supported_printed, text,
    validate_label_selector, validate_nonnegative,
};
use super::pod::validate_pod_template_spec;

/// Which workload, for the few messages that name it.
#[derive(Clone, Copy)]
enum Workload {
    Deployment,
    ReplicaSet,
    DaemonSet,
}

pub(super) fn validate_deployment(obj: &Value) -> Vec<FieldError> {
    let spec = &obj["spec"];
    let mut errs = validate_nonnegative(int(&spec["replicas"]), "spec.replicas");
    errs.extend(validate_selector_and_template(spec, Workload::Deployment));
    errs.extend(validate_deployment_strategy(&spec["strategy"]));
    let min_ready = int(&spec["minReadySeconds"]);
    errs.extend(validate_nonnegative(min_ready, "spec.minReadySeconds"));
    if is_set(&spec["revisionHistoryLimit"]) {
        errs.extend(validate_nonnegative(
            int(&spec["revisionHistoryLimit"]),
            "spec.revisionHistoryLimit",
        ));
    }
    if is_set(&spec["progressDeadlineSeconds"]) {
        let deadline = int(&spec["progressDeadlineSeconds"]);
        errs.extend(validate_nonnegative(
            deadline,
            "spec.progressDeadlineSeconds",
        ));
        if deadline <= min_ready {
            errs.push(invalid_int(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

pub(super) fn validate_replica_set(obj: &Value) -> Vec<FieldError> {
    let spec = &obj["spec"];
    let mut errs = validate_nonnegative(int(&spec["replicas"]), "spec.replicas");
    errs.extend(validate_nonnegative(
        int(&spec["minReadySeconds"]),
        "spec.minReadySeconds",
    ));
    errs.extend(validate_selector_and_template(spec, Workload::ReplicaSet));
    errs
}

pub(super) fn validate_daemon_set(obj: &Value) -> Vec<FieldError> {
    let spec = &obj["spec"];
    let mut errs = validate_selector_and_template(spec, Workload::DaemonSet);
    errs.extend(validate_nonnegative(
        int(&spec["minReadySeconds"]),
        "spec.minReadySeconds",
    ));
    errs.extend(validate_daemon_set_strategy(&spec["updateStrategy"]));
    if is_set(&spec["revisionHistoryLimit"]) {
        errs.extend(validate_nonnegative(
            int(&spec["revisionHistoryLimit"]),
            "spec.revisionHistoryLimit",
        ));
    }
    errs
}

/// The apps/v1 update rule shared by all three kinds: the selector may not
/// change (extensions/v1beta1 allowed it; Ferry does not serve that).
pub(super) fn validate_selector_unchanged(new: &Value, old: &Value) -> Vec<FieldError> {
    let (selector, old_selector) = (&new["spec"]["selector"], &old["spec"]["selector"]);
    if super::common::semantically_equal(selector, old_selector) {
        Vec::new()
    } else {
        vec![invalid_printed(
            "spec.selector",
            &go_label_selector(selector),
            "field is immutable",
        )]
    }
}

/// Selector checks, then the template against the selector. Deployments
/// and ReplicaSets skip the template when the selector cannot be built;
/// DaemonSets check it anyway, as upstream does.
fn validate_selector_and_template(spec: &Value, workload: Workload) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let selector = &spec["selector"];
    let template = &spec["template"];
    let labels_path = "spec.template.metadata.labels";
    let labels = &template["metadata"]["labels"];
    let mismatch = || {
        invalid_printed(
            labels_path,
            &go_string_map(labels),
            "`selector` does not match template `labels`",
        )
    };
    if !is_set(selector) {
        errs.push(FieldError::required("spec.selector", ""));
    }
    let empty = is_set(selector)
        && len_of(&selector["matchLabels"]) + len_of(&selector["matchExpressions"]) == 0;
    let empty_detail = match workload {
        // Upstream's ReplicaSet check reuses the Deployment wording.
        Workload::Deployment | Workload::ReplicaSet => "empty selector is invalid for deployment",
        Workload::DaemonSet => "empty selector is invalid for daemonset",
    };
    errs.extend(validate_label_selector(selector, "spec.selector"));
    let built = label_selector(selector);

    if let Workload::DaemonSet = workload {
        if let Some(sel) = &built
            && !sel.matches(&labels_of(labels))
        {
            errs.push(mismatch());
        }
        if empty {
            errs.push(invalid_printed(
                "spec.selector",
                &go_label_selector(selector),
                empty_detail,
            ));
        }
        errs.extend(validate_pod_template_spec(template, "spec.template"));
        errs.extend(validate_template_restart_rules(template, workload));
        return errs;
    }

    if empty {
        errs.push(invalid_printed(
            "spec.selector",
            &go_label_selector(selector),
            empty_detail,
        ));
    }
    match built {
        None => errs.push(invalid_printed(
            "spec.selector",
            &go_label_selector(selector),
            "invalid label selector",
        )),
        Some(sel) => {
            if !sel.is_empty() && !sel.matches(&labels_of(labels)) {
                errs.push(mismatch());
            }
            errs.extend(validate_pod_template_spec(template, "spec.template"));
            errs.extend(validate_template_restart_rules(template, workload));
        }
    }
    errs
}

/// Controllers restart their Pods, so templates must say `Always` and may
/// not set a deadline.
fn validate_template_restart_rules(template: &Value, workload: Workload) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &template["spec"];
    let restart_policy = text(&spec["restartPolicy"]);
    if restart_policy != "Always" {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            restart_policy,
            &["Always"],
        ));
    }
    if is_set(&spec["activeDeadlineSeconds"]) {
        let kind = match workload {
            Workload::Deployment | Workload::ReplicaSet => "ReplicaSet",
            Workload::DaemonSet => "DaemonSet",
        };
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
    errs
}

/// The `%#v` of an (internal) update strategy struct whose rolling-update
/// pointer Go would print as an address; only nil can be printed exactly.
fn go_strategy(strategy: &Value, go_type: &str, rolling_type: &str) -> String {
    let rolling = if is_set(&strategy["rollingUpdate"]) {
        format!("(*apps.{rolling_type})(0xc000010000)")
    } else {
        format!("(*apps.{rolling_type})(nil)")
    };
    format!(
        "apps.{go_type}{{Type:{}, RollingUpdate:{rolling}}}",
        super::go_quote(text(&strategy["type"]))
    )
}

fn validate_deployment_strategy(strategy: &Value) -> Vec<FieldError> {
    let path = "spec.strategy";
    let rolling_path = child(path, "rollingUpdate");
    let rolling = &strategy["rollingUpdate"];
    match text(&strategy["type"]) {
        "Recreate" if is_set(rolling) => vec![FieldError::forbidden(
            rolling_path,
            "may not be specified when strategy `type` is 'Recreate'",
        )],
        "Recreate" => Vec::new(),
        "RollingUpdate" if !is_set(rolling) => vec![FieldError::required(
            rolling_path,
            "this should be defaulted and never be nil",
        )],
        "RollingUpdate" => {
            let unavailable = &rolling["maxUnavailable"];
            let surge = &rolling["maxSurge"];
            let unavailable_path = child(&rolling_path, "maxUnavailable");
            let mut errs = validate_positive_int_or_percent(unavailable, &unavailable_path);
            errs.extend(validate_positive_int_or_percent(
                surge,
                &child(&rolling_path, "maxSurge"),
            ));
            if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
                errs.push(invalid_printed(
                    &unavailable_path,
                    &go_int_or_string(unavailable),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            errs.extend(not_more_than_100_percent(unavailable, &unavailable_path));
            errs
        }
        _ => vec![not_supported_printed(
            path,
            &go_strategy(strategy, "DeploymentStrategy", "RollingUpdateDeployment"),
            &["Recreate", "RollingUpdate"],
        )],
    }
}

fn validate_daemon_set_strategy(strategy: &Value) -> Vec<FieldError> {
    let path = "spec.updateStrategy";
    let rolling_path = child(path, "rollingUpdate");
    let rolling = &strategy["rollingUpdate"];
    match text(&strategy["type"]) {
        "OnDelete" => Vec::new(),
        "RollingUpdate" if !is_set(rolling) => vec![FieldError::required(rolling_path, "")],
        "RollingUpdate" => {
            let unavailable = &rolling["maxUnavailable"];
            let surge = &rolling["maxSurge"];
            let unavailable_path = child(&rolling_path, "maxUnavailable");
            let surge_path = child(&rolling_path, "maxSurge");
            let mut errs = validate_positive_int_or_percent(unavailable, &unavailable_path);
            errs.extend(validate_positive_int_or_percent(surge, &surge_path));
            errs.extend(not_more_than_100_percent(unavailable, &unavailable_path));
            errs.extend(not_more_than_100_percent(surge, &surge_path));
            let has_unavailable = int_or_percent_value(unavailable) != 0;
            let has_surge = int_or_percent_value(surge) != 0;
            if has_unavailable && has_surge {
                errs.push(invalid_printed(
                    surge_path,
                    &go_int_or_string(surge),
                    "may not be set when maxUnavailable is non-zero",
                ));
            } else if !has_unavailable && !has_surge {
                errs.push(FieldError::required(
                    unavailable_path,
                    "cannot be 0 when maxSurge is 0",
                ));
            }
            errs
        }
        _ => vec![not_supported_printed(
            path,
            &go_strategy(
                strategy,
                "DaemonSetUpdateStrategy",
                "RollingUpdateDaemonSet",
            ),
            &["RollingUpdate", "OnDelete"],
        )],
    }
}

/// `IsValidPercent`'s pattern `^[0-9]+%$`, returning the number.
fn percent_value(v: &Value) -> Option<u64> {
    let digits = v.as_str()?.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// `getIntOrPercentValue`: the percentage, the integer, or (like Go's
/// `IntValue` on a non-numeric string) 0.
fn int_or_percent_value(v: &Value) -> i64 {
    match (percent_value(v), v) {
        (Some(p), _) => i64::try_from(p).unwrap_or(i64::MAX),
        (None, Value::String(s)) => s.parse().unwrap_or(0),
        (None, other) => int(other),
    }
}

/// `ValidatePositiveIntOrPercent`.
fn validate_positive_int_or_percent(v: &Value, path: &str) -> Vec<FieldError> {
    match v {
        Value::String(_) if percent_value(v).is_none() => vec![invalid_printed(
            path,
            &go_int_or_string(v),
            &super::regex_error(
                "a valid percent string must be a numeric string followed by an ending '%'",
                "[0-9]+%",
                &["1%", "93%"],
            ),
        )],
        Value::String(_) => Vec::new(),
        other => validate_nonnegative(int(other), path),
    }
}

/// `IsNotMoreThan100Percent`.
fn not_more_than_100_percent(v: &Value, path: &str) -> Vec<FieldError> {
    match percent_value(v) {
        Some(p) if p > 100 => vec![invalid_printed(
            path,
            &go_int_or_string(v),
            "must not be greater than 100%",
        )],
        _ => Vec::new(),
    }
}
