//! Service updates, after upstream's `ValidateServiceUpdate` and its
//! `validateUpgradeDowngrade*` helpers: which cluster IPs and IP families
//! may change, and the fields fixed while they apply.

use serde_json::Value;

use super::super::FieldError;
use super::super::common::{
    go_slice_of, go_string_slice, index, int, invalid_printed, items, text,
};
use super::{
    go_optional_string, is_headless, needs_health_check, validate_load_balancer_class,
    validate_service,
};

/// `ValidateServiceUpdate` without the metadata checks: the primary
/// cluster IP and IP family may not change (a secondary may be added, or
/// released with `ipFamilyPolicy: SingleStack`), except to, from or on
/// ExternalName; `loadBalancerClass` and `healthCheckNodePort` are fixed
/// while they apply. Any type may change into any other as long as the new
/// object is valid.
pub(in crate::validation) fn validate_service_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let (spec, old_spec) = (&new["spec"], &old["spec"]);
    let mut errs = validate_cluster_ips_change(old_spec, spec);
    errs.extend(validate_ip_families_change(old_spec, spec));
    // Upstream checks the class here and again in `ValidateService`, so a
    // malformed class is reported twice on update; so is it here.
    errs.extend(validate_load_balancer_class(Some(old_spec), spec));
    if needs_health_check(old_spec)
        && needs_health_check(spec)
        && int(&spec["healthCheckNodePort"]) != int(&old_spec["healthCheckNodePort"])
    {
        errs.push(FieldError::forbidden(
            "spec.healthCheckNodePort",
            "field is immutable",
        ));
    }
    errs.extend(validate_service(new));
    errs
}

fn involves_external_name(old: &Value, new: &Value) -> bool {
    text(&old["type"]) == "ExternalName" || text(&new["type"]) == "ExternalName"
}

fn single_stack(spec: &Value) -> bool {
    text(&spec["ipFamilyPolicy"]) == "SingleStack"
}

/// `validateUpgradeDowngradeClusterIPs`.
fn validate_cluster_ips_change(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if involves_external_name(old, new) || (is_headless(old) && is_headless(new)) {
        return errs;
    }
    let old_ips: Vec<&str> = items(&old["clusterIPs"]).iter().map(text).collect();
    let new_ips: Vec<&str> = items(&new["clusterIPs"]).iter().map(text).collect();
    let printed = go_string_slice(&new["clusterIPs"]);
    let changed = |i: usize| {
        invalid_printed(
            index("spec.clusterIPs", i),
            &printed,
            "may not change once set",
        )
    };
    if old_ips.len() == new_ips.len() {
        for (i, (was, is)) in old_ips.iter().zip(&new_ips).enumerate() {
            if was != is {
                errs.push(changed(i));
            }
        }
    } else if old_ips.len() > new_ips.len() {
        match new_ips.first() {
            None => errs.push(invalid_printed(
                "spec.clusterIPs[0]",
                &printed,
                "primary clusterIP can not be unset",
            )),
            Some(first) if Some(first) != old_ips.first() => errs.push(changed(0)),
            Some(_) => {}
        }
        if new_ips.len() == 1 && !single_stack(new) {
            errs.push(invalid_printed(
                "spec.ipFamilyPolicy",
                &go_optional_string(&new["ipFamilyPolicy"]),
                "must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if let Some(first) = old_ips.first()
        && new_ips.first() != Some(first)
    {
        errs.push(changed(0));
    }
    errs
}

/// `validateUpgradeDowngradeIPFamilies`, including upstream's habit of
/// printing `clusterIPs` as the value of some `ipFamilies` errors.
fn validate_ip_families_change(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if involves_external_name(old, new) || is_headless(old) || is_headless(new) {
        return errs;
    }
    let old_families: Vec<&str> = items(&old["ipFamilies"]).iter().map(text).collect();
    let new_families: Vec<&str> = items(&new["ipFamilies"]).iter().map(text).collect();
    let printed_families = go_slice_of("core.IPFamily", &new["ipFamilies"]);
    let printed_ips = go_string_slice(&new["clusterIPs"]);
    let path = "spec.ipFamilies[0]";
    if old_families.len() == new_families.len() {
        for (was, is) in old_families.iter().zip(&new_families) {
            if was != is {
                errs.push(invalid_printed(
                    path,
                    &printed_families,
                    "may not change once set",
                ));
            }
        }
    } else if old_families.len() > new_families.len() {
        if items(&new["clusterIPs"]).is_empty() {
            errs.push(invalid_printed(
                path,
                &printed_families,
                "primary ipFamily can not be unset",
            ));
        }
        if let Some(first) = new_families.first()
            && Some(first) != old_families.first()
        {
            errs.push(invalid_printed(
                path,
                &printed_ips,
                "may not change once set",
            ));
        }
        if new_families.len() == 1 && !single_stack(new) {
            errs.push(invalid_printed(
                "spec.ipFamilyPolicy",
                &go_optional_string(&new["ipFamilyPolicy"]),
                "must be set to 'SingleStack' when releasing the secondary ipFamily",
            ));
        }
    } else if let (Some(was), Some(is)) = (old_families.first(), new_families.first())
        && was != is
    {
        errs.push(invalid_printed(
            path,
            &printed_ips,
            "may not change once set",
        ));
    }
    errs
}
