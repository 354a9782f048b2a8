//! Pieces the per-kind validators share: reading loosely typed JSON, field
//! paths, Go's printing of non-string values, and the port, IP, DNS and
//! label-selector checks of k8s.io/apimachinery (`pkg/util/validation`,
//! `pkg/apis/meta/v1/validation`).
//!
//! Objects reach the validators already decoded against their schema, but
//! nothing here may panic on other input: a value of the wrong JSON type is
//! read as absent, which is what Go's zero value would give.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::{
    DNS1123_SUBDOMAIN_FMT, DNS1123_SUBDOMAIN_MAX_LENGTH, FieldError, FieldErrorReason,
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_label_value,
    matches_dns1123_subdomain, max_len_error, regex_error, validate_labels,
};
use crate::selector::LabelSelector;

pub(super) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The string at `v`, or "" (Go's zero value) when absent or not a string.
pub(super) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The integer at `v`, or 0 when absent or not an integer.
pub(super) fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The elements of the list at `v`; empty when absent or not a list.
pub(super) fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The number of entries of a list or map at `v`.
pub(super) fn len_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::Object(o) => o.len(),
        _ => 0,
    }
}

/// Whether a pointer field is set (present and not null).
pub(super) fn is_set(v: &Value) -> bool {
    !v.is_null()
}

/// `field.Invalid` for a value Go prints bare: a number (`%v`) or the `%#v`
/// of a slice, map or struct. The printed value travels in the message, as
/// in the API server's own allocation errors, so the text is upstream's.
pub(super) fn invalid_printed(field: impl Into<String>, printed: &str, detail: &str) -> FieldError {
    let message = if detail.is_empty() {
        printed.to_string()
    } else {
        format!("{printed}: {detail}")
    };
    FieldError::new(field, FieldErrorReason::Invalid, None, message)
}

pub(super) fn invalid_int(field: impl Into<String>, value: i64, detail: &str) -> FieldError {
    invalid_printed(field, &value.to_string(), detail)
}

/// `field.Duplicate` for a value Go prints bare.
pub(super) fn duplicate_printed(field: impl Into<String>, printed: &str) -> FieldError {
    FieldError::new(field, FieldErrorReason::Duplicate, None, printed)
}

/// `field.NotSupported` for a value Go prints bare.
pub(super) fn not_supported_printed(
    field: impl Into<String>,
    printed: &str,
    supported: &[&str],
) -> FieldError {
    let mut err = FieldError::not_supported(field, "", supported);
    err.value = None;
    err.message = if err.message.is_empty() {
        printed.to_string()
    } else {
        format!("{printed}: {}", err.message)
    };
    err
}

/// Field errors for each message of a string check.
pub(super) fn invalid_each(path: &str, value: &str, msgs: Vec<String>) -> Vec<FieldError> {
    msgs.into_iter()
        .map(|msg| FieldError::invalid(path, value, msg))
        .collect()
}

/// Go's `%#v` of a string: the Go-quoted text.
fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => super::go_quote(s),
        other => super::go_quote(&other.to_string()),
    }
}

/// `%#v` of a slice of (named) strings such as `[]string` or
/// `[]core.IPFamily`: `[]string{"a", "b"}`, or `[]string(nil)` when unset.
pub(super) fn go_slice_of(element_type: &str, v: &Value) -> String {
    match v.as_array() {
        None => format!("[]{element_type}(nil)"),
        Some(values) => {
            let parts: Vec<String> = values.iter().map(quoted).collect();
            format!("[]{element_type}{{{}}}", parts.join(", "))
        }
    }
}

/// `%#v` of a `[]string`.
pub(super) fn go_string_slice(v: &Value) -> String {
    go_slice_of("string", v)
}

/// `%#v` of a `map[string]string`, keys sorted as Go's fmt sorts them.
pub(super) fn go_string_map(v: &Value) -> String {
    match v.as_object() {
        None => "map[string]string(nil)".to_string(),
        Some(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", super::go_quote(k), quoted(&map[k.as_str()])))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    }
}

/// `%#v` of a (dereferenced) `metav1.LabelSelector`.
pub(super) fn go_label_selector(v: &Value) -> String {
    let expressions = match v["matchExpressions"].as_array() {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let parts: Vec<String> = list
                .iter()
                .map(|e| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        super::go_quote(text(&e["key"])),
                        super::go_quote(text(&e["operator"])),
                        go_string_slice(&e["values"])
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", parts.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
        go_string_map(&v["matchLabels"])
    )
}

/// `%#v` of an `intstr.IntOrString`.
pub(super) fn go_int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => format!(
            "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
            super::go_quote(s)
        ),
        other => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            int(other)
        ),
    }
}

/// `InclusiveRangeError(1, 65535)`.
pub(super) const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

/// `IsValidPortNum`.
pub(super) fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![PORT_RANGE_MSG.to_string()]
    }
}

/// `IsValidPortName`: an IANA_SVC_NAME (RFC 6335), at most 15 characters
/// of `[-a-z0-9]` with at least one letter and no leading, trailing or
/// doubled hyphen.
pub(super) fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    let charset_ok = !port.is_empty()
        && port
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !charset_ok {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// `ValidatePortNumOrName` for an `IntOrString` port (e.g. `targetPort`).
pub(super) fn validate_port_num_or_name(port: &Value, path: &str) -> Vec<FieldError> {
    match port {
        Value::String(name) => invalid_each(path, name, is_valid_port_name(name)),
        other => {
            let n = int(other);
            is_valid_port_num(n)
                .into_iter()
                .map(|msg| invalid_int(path, n, &msg))
                .collect()
        }
    }
}

/// Go's `net.ParseIP` as forked in k8s.io/utils (`ParseIPSloppy`): IPv4
/// octets may carry leading zeros, which are read as decimal.
pub(super) fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        return s.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut n: u32 = 0;
        for b in part.bytes() {
            n = n * 10 + u32::from(b - b'0');
            if n > 255 {
                return None;
            }
        }
        *octet = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// An address as Go sees it: IPv4-mapped IPv6 addresses count as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub(super) fn is_ipv6_string(s: &str) -> bool {
    parse_ip_sloppy(s).is_some_and(|ip| canonical(ip).is_ipv6())
}

/// `IsValidIP` in its legacy form (strict IP validation is off in 1.33).
pub(super) fn is_valid_ip(path: &str, value: &str) -> Vec<FieldError> {
    if parse_ip_sloppy(value).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )]
    }
}

/// `IsValidCIDR` in its legacy form.
pub(super) fn is_valid_cidr(path: &str, value: &str) -> Vec<FieldError> {
    let valid = value.split_once('/').is_some_and(|(ip, bits)| {
        let max = match parse_ip_sloppy(ip) {
            Some(IpAddr::V4(_)) => 32,
            Some(IpAddr::V6(_)) => 128,
            None => return false,
        };
        !bits.is_empty()
            && bits.bytes().all(|b| b.is_ascii_digit())
            && bits.parse::<u32>().is_ok_and(|n| n <= max)
    });
    if valid {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        )]
    }
}

/// `ValidateNonSpecialIP`: endpoints and external IPs may not be
/// unspecified, loopback or link-local.
pub(super) fn validate_non_special_ip(value: &str, path: &str) -> Vec<FieldError> {
    let Some(ip) = parse_ip_sloppy(value).map(canonical) else {
        return vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address",
        )];
    };
    let (unspecified, loopback, link_local, link_local_multicast) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                v4.is_unspecified(),
                v4.is_loopback(),
                o[0] == 169 && o[1] == 254,
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (
                v6.is_unspecified(),
                v6.is_loopback(),
                s[0] & 0xffc0 == 0xfe80,
                s[0] & 0xff0f == 0xff02,
            )
        }
    };
    let mut errs = Vec::new();
    if unspecified {
        errs.push(FieldError::invalid(
            path,
            value,
            format!("may not be unspecified ({value})"),
        ));
    }
    if loopback {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    if link_local {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_multicast {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}

pub(super) fn is_valid_ipv4_address(path: &str, value: &str) -> Vec<FieldError> {
    match parse_ip_sloppy(value).map(canonical) {
        Some(IpAddr::V4(_)) => Vec::new(),
        _ => vec![FieldError::invalid(
            path,
            value,
            "must be a valid IPv4 address",
        )],
    }
}

pub(super) fn is_valid_ipv6_address(path: &str, value: &str) -> Vec<FieldError> {
    match parse_ip_sloppy(value).map(canonical) {
        Some(IpAddr::V6(_)) => Vec::new(),
        _ => vec![FieldError::invalid(
            path,
            value,
            "must be a valid IPv6 address",
        )],
    }
}

const WILDCARD_DNS1123_SUBDOMAIN_ERR_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character";

/// `IsWildcardDNS1123Subdomain`: `*.` followed by a DNS subdomain.
pub(super) fn is_wildcard_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let ok = value
        .strip_prefix("*.")
        .is_some_and(|rest| matches_dns1123_subdomain(rest.as_bytes()));
    if !ok {
        errs.push(regex_error(
            WILDCARD_DNS1123_SUBDOMAIN_ERR_MSG,
            &format!("\\*\\.{DNS1123_SUBDOMAIN_FMT}"),
            &["*.example.com"],
        ));
    }
    errs
}

/// `IsFullyQualifiedDomainName`: a subdomain of at least two labels, with
/// an optional trailing dot.
pub(super) fn is_fully_qualified_domain_name(path: &str, name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(path, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let errs = is_dns1123_subdomain(name);
    if !errs.is_empty() {
        return vec![FieldError::invalid(path, name, errs.join(","))];
    }
    if name.split('.').count() < 2 {
        return vec![FieldError::invalid(
            path,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let errs = is_dns1123_label(label);
        if !errs.is_empty() {
            return vec![FieldError::invalid(path, label, errs.join(","))];
        }
    }
    Vec::new()
}

/// `ValidateLabelSelector` on a `metav1.LabelSelector` JSON object.
pub(super) fn validate_label_selector(selector: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if selector.is_null() {
        return errs;
    }
    errs.extend(validate_labels(
        &selector["matchLabels"],
        &child(path, "matchLabels"),
    ));
    let expressions_path = child(path, "matchExpressions");
    for (i, expression) in items(&selector["matchExpressions"]).iter().enumerate() {
        let expr_path = index(&expressions_path, i);
        let values = &expression["values"];
        match text(&expression["operator"]) {
            "In" | "NotIn" => {
                if len_of(values) == 0 {
                    errs.push(FieldError::required(
                        child(&expr_path, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if len_of(values) > 0 {
                    errs.push(FieldError::forbidden(
                        child(&expr_path, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                child(&expr_path, "operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let key = text(&expression["key"]);
        errs.extend(invalid_each(
            &child(&expr_path, "key"),
            key,
            is_qualified_name(key),
        ));
        let values_path = child(&expr_path, "values");
        for (j, value) in items(values).iter().enumerate() {
            let value = text(value);
            errs.extend(invalid_each(
                &index(&values_path, j),
                value,
                is_valid_label_value(value),
            ));
        }
    }
    errs
}

/// `LabelSelectorAsSelector`: `None` when the selector cannot be built.
pub(super) fn label_selector(selector: &Value) -> Option<LabelSelector> {
    LabelSelector::from_label_selector_json(selector).ok()
}

/// The labels at `v` as a map (absent labels match as an empty set).
pub(super) fn labels_of(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// `ValidateNonnegativeField`.
pub(super) fn validate_nonnegative(value: i64, path: &str) -> Vec<FieldError> {
    if value < 0 {
        vec![invalid_int(
            path,
            value,
            "must be greater than or equal to 0",
        )]
    } else {
        Vec::new()
    }
}

/// Names checked with a `[]string`-returning rule as `field.Invalid`.
pub(super) fn check_name(
    path: &str,
    value: &str,
    rule: fn(&str) -> Vec<String>,
) -> Vec<FieldError> {
    invalid_each(path, value, rule(value))
}

/// Go's `apiequality.Semantic.DeepEqual` on decoded JSON: key order does not
/// matter, and a null or missing value equals an empty list or map.
pub(super) fn semantically_equal(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(x) => x.is_empty(),
        Value::Object(x) => x.is_empty(),
        _ => false,
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.keys().chain(y.keys()).all(|k| {
            semantically_equal(
                x.get(k).unwrap_or(&Value::Null),
                y.get(k).unwrap_or(&Value::Null),
            )
        }),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| semantically_equal(a, b))
        }
        _ if empty(a) && empty(b) => true,
        _ => a == b,
    }
}
