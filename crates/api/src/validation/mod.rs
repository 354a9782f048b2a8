//! Name, label and object-metadata validation with Kubernetes' exact messages.
//!
//! Ported from k8s.io/apimachinery: `pkg/util/validation` (the `Is*` checks),
//! `pkg/util/validation/field` (the error type and its text),
//! `pkg/api/validation` (`ValidateObjectMeta`, name functions per kind) and
//! `pkg/api/validation/path`. The API server returns these texts to clients
//! verbatim in `Status` causes, and users and tests match on them, so the
//! wording, quoting and order follow upstream byte for byte. The selectors in
//! [`crate::selector`] use the same checks for label keys and values.
//!
//! All checks work on bytes, as Go does: lengths are byte lengths and
//! anything outside ASCII fails the character rules.
//!
//! The submodules check the specs the rest of Ferry relies on, after
//! defaulting ([`crate::defaults`]): [`validate_create`] and
//! [`validate_update`] dispatch to Service, Pod, Deployment, ReplicaSet,
//! DaemonSet, Ingress and EndpointSlice rules ported from
//! k8s.io/kubernetes `pkg/apis/{core,apps,networking,discovery}/validation`.

use std::fmt;

use serde_json::{Map, Value};

mod common;
mod deployment;
mod endpointslice;
mod ingress;
mod pod;
mod service;
#[cfg(test)]
mod tests;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
/// Longest DNS (RFC 1123) label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;

const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
/// Longest DNS (RFC 1123) subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
/// Longest DNS (RFC 1035) label.
pub const DNS1035_LABEL_MAX_LENGTH: usize = 63;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MAX_LENGTH: usize = 63;

const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;

/// Upper bound on the summed byte length of all annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * (1 << 10);

const EMPTY_ERROR: &str = "must be non-empty";

fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Upstream's `RegexError`; note the doubled space before " or " that the
/// examples produce ("'my-name',  or '123-abc'"), which clients see.
fn regex_error(msg: &str, format: &str, examples: &[&str]) -> String {
    let mut out = String::from(msg);
    if examples.is_empty() {
        out.push_str(" (regex used for validation is '");
    } else {
        out.push_str(" (e.g. ");
        for (i, example) in examples.iter().enumerate() {
            if i > 0 {
                out.push_str(" or ");
            }
            out.push('\'');
            out.push_str(example);
            out.push_str("', ");
        }
        out.push_str("regex used for validation is '");
    }
    out.push_str(format);
    out.push_str("')");
    out
}

fn is_lower_alphanumeric(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
fn matches_dns1123_label(b: &[u8]) -> bool {
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alphanumeric(first)
                && is_lower_alphanumeric(last)
                && b.iter().all(|&c| is_lower_alphanumeric(c) || c == b'-')
        }
        _ => false,
    }
}

/// `^label(\.label)*$`
fn matches_dns1123_subdomain(b: &[u8]) -> bool {
    b.split(|&c| c == b'.').all(matches_dns1123_label)
}

/// `^[a-z]([-a-z0-9]*[a-z0-9])?$`
fn matches_dns1035_label(b: &[u8]) -> bool {
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_lowercase()
                && is_lower_alphanumeric(last)
                && b.iter().all(|&c| is_lower_alphanumeric(c) || c == b'-')
        }
        _ => false,
    }
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`
fn matches_qualified_name(b: &[u8]) -> bool {
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn dns1123_label_errors(b: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    if b.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(b) {
        errs.push(regex_error(
            DNS1123_LABEL_ERR_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

fn dns1123_subdomain_errors(b: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    if b.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(b) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

fn dns1035_label_errors(b: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    if b.len() > DNS1035_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1035_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(b) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsDNS1123Label`: a lowercase RFC 1123 label (namespace names, among others).
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    dns1123_label_errors(s.as_bytes())
}

/// `IsDNS1123Subdomain`: a lowercase RFC 1123 subdomain (most object names).
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    dns1123_subdomain_errors(s.as_bytes())
}

/// `IsDNS1035Label`: an RFC 1035 label (Service names).
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    dns1035_label_errors(s.as_bytes())
}

/// `IsQualifiedName`: label keys, annotation keys and finalizers, an optional
/// DNS subdomain prefix and '/' followed by a name of up to 63 characters.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {EMPTY_ERROR}"));
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|msg| format!("prefix part {msg}")),
                );
            }
            name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {EMPTY_ERROR}"));
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LENGTH)
        ));
    }
    // Upstream runs the pattern even on an empty name, so "" yields two errors.
    if !matches_qualified_name(name.as_bytes()) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`: empty, or a qualified name part of up to 63 characters.
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !(s.is_empty() || matches_qualified_name(s.as_bytes())) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `path.IsValidPathSegmentName`: the minimal rule every name must meet to be
/// used in a URL path (RBAC objects use only this).
pub fn is_valid_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    is_valid_path_segment_prefix(s)
}

/// `path.IsValidPathSegmentPrefix`: as [`is_valid_path_segment_name`] but for
/// a `generateName`, which a suffix may still make valid.
pub fn is_valid_path_segment_prefix(s: &str) -> Vec<String> {
    ["/", "%"]
        .into_iter()
        .filter(|bad| s.contains(bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// Which name rule a kind uses (upstream's `ValidateNameFunc` per type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameValidator {
    /// `NameIsDNSSubdomain`: the default for most kinds and all custom resources.
    Dns1123Subdomain,
    /// `NameIsDNSLabel`: Namespace.
    Dns1123Label,
    /// `NameIsDNS1035Label`: Service.
    Dns1035Label,
    /// `path.IsValidPathSegmentName`: Role, ClusterRole, RoleBinding,
    /// ClusterRoleBinding and APIService. These ignore the prefix flag.
    PathSegment,
}

impl NameValidator {
    /// The rule for `kind` in API `group` ("" for the core group).
    pub fn for_kind(group: &str, kind: &str) -> Self {
        match (group, kind) {
            ("", "Namespace") => Self::Dns1123Label,
            ("", "Service") => Self::Dns1035Label,
            (
                "rbac.authorization.k8s.io",
                "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding",
            )
            | ("apiregistration.k8s.io", "APIService") => Self::PathSegment,
            _ => Self::Dns1123Subdomain,
        }
    }

    /// Check `name`; `prefix` is true for a `generateName`, where a trailing
    /// '-' is allowed because a random suffix follows.
    pub fn validate(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let bytes = if prefix && self != Self::PathSegment {
            masked = mask_trailing_dash(name.as_bytes());
            masked.as_slice()
        } else {
            name.as_bytes()
        };
        match self {
            Self::Dns1123Subdomain => dns1123_subdomain_errors(bytes),
            Self::Dns1123Label => dns1123_label_errors(bytes),
            Self::Dns1035Label => dns1035_label_errors(bytes),
            Self::PathSegment => is_valid_path_segment_name(name),
        }
    }
}

/// Upstream's `maskTrailingDash`, including its quirk of dropping the
/// character before the dash too ("ab-" is checked as "aa").
fn mask_trailing_dash(name: &[u8]) -> Vec<u8> {
    match name {
        [head @ .., _, b'-'] => {
            let mut out = head.to_vec();
            out.push(b'a');
            out
        }
        _ => name.to_vec(),
    }
}

/// Name validation for an object of `kind` in `group` ("" for core):
/// Namespace uses DNS-1123 labels, Service DNS-1035 labels, RBAC kinds the
/// path-segment rule and everything else DNS-1123 subdomains.
pub fn validate_object_name(group: &str, kind: &str, name: &str) -> Vec<String> {
    NameValidator::for_kind(group, kind).validate(name, false)
}

/// The kind of a [`FieldError`] (upstream's `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorReason {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    TooFew,
    TooShort,
    Internal,
    TypeInvalid,
}

impl FieldErrorReason {
    /// The machine-readable type, used as `reason` in `Status` causes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::TooFew => "FieldValueTooFew",
            Self::TooShort => "FieldValueTooShort",
            Self::Internal => "InternalError",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human-readable type that starts the error body.
    pub fn description(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::TooFew => "Too few",
            Self::TooShort => "Too short",
            Self::Internal => "Internal error",
        }
    }

    /// Whether upstream prints the bad value in the body.
    fn shows_value(self) -> bool {
        !matches!(
            self,
            Self::Required | Self::Forbidden | Self::TooLong | Self::TooShort | Self::Internal
        )
    }
}

impl fmt::Display for FieldErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validation failure on one field (upstream's `field.Error`).
///
/// `value` is the offending string value, printed Go-quoted; `None` leaves it
/// out of the text. For `TooMany`/`TooFew` it holds the count, printed bare.
/// `to_string()` gives upstream's `Error()` text, e.g.
/// `metadata.name: Required value: name or generateName is required`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `metadata.labels`.
    pub field: String,
    pub reason: FieldErrorReason,
    pub value: Option<String>,
    /// Upstream's `Detail`; may be empty.
    pub message: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        reason: FieldErrorReason,
        value: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason,
            value,
            message: message.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorReason::Required, None, detail)
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(field, FieldErrorReason::Invalid, Some(value.into()), detail)
    }

    /// A value of the wrong JSON type; the value itself is left out.
    pub fn type_invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorReason::TypeInvalid, None, detail)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(field, FieldErrorReason::Forbidden, None, detail)
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(field, FieldErrorReason::Duplicate, Some(value.into()), "")
    }

    pub fn not_found(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(field, FieldErrorReason::NotFound, Some(value.into()), "")
    }

    /// `field.NotSupported`: lists the supported values, Go-quoted.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        supported: &[&str],
    ) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|v| go_quote(v)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            field,
            FieldErrorReason::NotSupported,
            Some(value.into()),
            detail,
        )
    }

    /// `field.TooLong` for a byte limit, worded "must have at most N bytes"
    /// as in the long-standing upstream text; the newest releases say "may
    /// not be more than N bytes" instead.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        Self::new(
            field,
            FieldErrorReason::TooLong,
            None,
            format!("must have at most {max_bytes} bytes"),
        )
    }

    /// The text without the field path (upstream's `ErrorBody`), as used in
    /// `Status` causes.
    pub fn error_body(&self) -> String {
        let mut body = self.reason.description().to_string();
        if self.reason.shows_value()
            && let Some(value) = &self.value
        {
            body.push_str(": ");
            if matches!(
                self.reason,
                FieldErrorReason::TooMany | FieldErrorReason::TooFew
            ) {
                body.push_str(value);
            } else {
                body.push_str(&go_quote(value));
            }
        }
        if !self.message.is_empty() {
            body.push_str(": ");
            body.push_str(&self.message);
        }
        body
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error_body())
    }
}

impl std::error::Error for FieldError {}

/// Go's `strconv.Quote` (`%q`): double quotes, Go escapes, non-printable
/// runes as `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
///
/// Printability follows Go's `unicode.IsPrint` for all assigned characters;
/// unassigned code points (which Go also escapes) are kept as they are.
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space; not controls, other spaces, format characters, private
/// use or noncharacters.
fn is_go_printable(c: char) -> bool {
    let cp = c as u32;
    if cp < 0x80 {
        return (0x20..0x7f).contains(&cp);
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    const NOT_PRINTABLE: &[(u32, u32)] = &[
        (0x00a0, 0x00a0),
        (0x00ad, 0x00ad),
        (0x0600, 0x0605),
        (0x061c, 0x061c),
        (0x06dd, 0x06dd),
        (0x070f, 0x070f),
        (0x0890, 0x0891),
        (0x08e2, 0x08e2),
        (0x180e, 0x180e),
        (0x200b, 0x200f),
        (0x202a, 0x202f),
        (0x205f, 0x2064),
        (0x2066, 0x206f),
        (0xd800, 0xf8ff),
        (0xfdd0, 0xfdef),
        (0xfeff, 0xfeff),
        (0xfff9, 0xfffb),
        (0x110bd, 0x110bd),
        (0x110cd, 0x110cd),
        (0x13430, 0x1343f),
        (0x1bca0, 0x1bca3),
        (0x1d173, 0x1d17a),
        (0xe0001, 0xe0001),
        (0xe0020, 0xe007f),
        (0xf0000, 0x10ffff),
    ];
    if (cp & 0xfffe) == 0xfffe {
        return false;
    }
    !NOT_PRINTABLE
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&cp))
}

/// A string field of `metadata`; "" when absent or null.
fn string_field<'a>(
    meta: &'a Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> &'a str {
    match meta.get(key) {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(_) => {
            errs.push(FieldError::type_invalid(path, "must be a string"));
            ""
        }
    }
}

/// The entries of a `map[string]string` field (labels, annotations); wrong
/// JSON types are reported and skipped.
fn string_map<'a>(
    value: &'a Value,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Vec<(&'a str, &'a str)> {
    match value {
        Value::Null => Vec::new(),
        Value::Object(map) => map
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.as_str(), s.as_str())),
                _ => {
                    errs.push(FieldError::type_invalid(
                        format!("{path}[{k}]"),
                        "must be a string",
                    ));
                    None
                }
            })
            .collect(),
        _ => {
            errs.push(FieldError::type_invalid(
                path,
                "must be an object of string values",
            ));
            Vec::new()
        }
    }
}

/// `ValidateLabels` on a JSON labels map (null is an empty map): keys must be
/// qualified names and values label values. Errors carry `path` as field.
pub fn validate_labels(labels: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (key, value) in string_map(labels, path, &mut errs) {
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        for msg in is_valid_label_value(value) {
            errs.push(FieldError::invalid(path, value, msg));
        }
    }
    errs
}

/// `ValidateAnnotations`: keys must be qualified names (case-insensitively)
/// and all keys and values together at most 256 KiB.
pub fn validate_annotations(annotations: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let entries = string_map(annotations, path, &mut errs);
    let mut total = 0usize;
    for (key, value) in entries {
        total += key.len() + value.len();
        // Go's strings.ToLower maps each rune on its own.
        let lower: String = key
            .chars()
            .map(|c| c.to_lowercase().next().unwrap_or(c))
            .collect();
        for msg in is_qualified_name(&lower) {
            errs.push(FieldError::invalid(path, key, msg));
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
        errs.push(FieldError::too_long(
            path,
            TOTAL_ANNOTATION_SIZE_LIMIT_BYTES,
        ));
    }
    errs
}

/// `ValidateFinalizerName` on each entry of a finalizers list.
fn validate_finalizers(finalizers: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match finalizers {
        Value::Null => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(name) => {
                        for msg in is_qualified_name(name) {
                            errs.push(FieldError::invalid(path, name.as_str(), msg));
                        }
                    }
                    _ => errs.push(FieldError::type_invalid(
                        format!("{path}[{i}]"),
                        "must be a string",
                    )),
                }
            }
        }
        _ => errs.push(FieldError::type_invalid(path, "must be a list of strings")),
    }
    errs
}

/// `ValidateObjectMeta` for a create, on the JSON `metadata` of an object of
/// `kind` in `group`.
///
/// Checks, in upstream's order: `generateName` and `name` with the kind's
/// name rule (a missing name is fine when `generateName` is set, since the
/// server generates it), `namespace` (required and a DNS label when
/// `namespaced`, forbidden otherwise; the caller fills it in from the URL or
/// clears it first, as the upstream registry does), labels, annotations and
/// finalizer names. Wrong JSON types are reported as `FieldValueTypeInvalid`.
/// Not covered: `generation`, `ownerReferences`, `managedFields` and the
/// orphan/foreground finalizer conflict.
pub fn validate_object_meta(
    group: &str,
    kind: &str,
    meta: &Value,
    namespaced: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = Map::new();
    let meta = match meta {
        Value::Object(map) => map,
        Value::Null => &empty,
        _ => {
            errs.push(FieldError::type_invalid("metadata", "must be an object"));
            return errs;
        }
    };
    let name_rule = NameValidator::for_kind(group, kind);
    let generate_name = string_field(meta, "generateName", "metadata.generateName", &mut errs);
    let name = string_field(meta, "name", "metadata.name", &mut errs);
    let namespace = string_field(meta, "namespace", "metadata.namespace", &mut errs);

    if !generate_name.is_empty() {
        for msg in name_rule.validate(generate_name, true) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in name_rule.validate(name, false) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errs.push(FieldError::invalid("metadata.namespace", namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    let field = |key: &str| meta.get(key).unwrap_or(&Value::Null);
    errs.extend(validate_labels(field("labels"), "metadata.labels"));
    errs.extend(validate_annotations(
        field("annotations"),
        "metadata.annotations",
    ));
    errs.extend(validate_finalizers(
        field("finalizers"),
        "metadata.finalizers",
    ));
    errs
}

/// Validates the spec of a new object of `kind` in API `group` ("" for
/// core), after defaulting. Metadata is not checked here (see
/// [`validate_object_meta`]); kinds without spec rules yield no errors.
///
/// Legacy Ingress groups are validated as networking.k8s.io/v1, which they
/// are converted to before storage.
pub fn validate_create(group: &str, kind: &str, obj: &Value) -> Vec<FieldError> {
    match (group, kind) {
        ("", "Service") => service::validate_service(obj),
        ("", "Pod") => pod::validate_pod(obj),
        ("apps", "Deployment") => deployment::validate_deployment(obj),
        ("apps", "ReplicaSet") => deployment::validate_replica_set(obj),
        ("apps", "DaemonSet") => deployment::validate_daemon_set(obj),
        ("networking.k8s.io" | "extensions", "Ingress") => ingress::validate_ingress(obj),
        ("discovery.k8s.io", "EndpointSlice") => endpointslice::validate_endpoint_slice(obj),
        _ => Vec::new(),
    }
}

/// Validates an update of `old` to `new` (both defaulted): the create rules
/// on `new` plus what may not change, e.g. a Service's cluster IPs, a
/// workload's selector, a Pod's spec apart from images.
pub fn validate_update(group: &str, kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    match (group, kind) {
        ("", "Service") => service::validate_service_update(new, old),
        ("", "Pod") => pod::validate_pod_update(new, old),
        ("apps", "Deployment") => {
            let mut errs = deployment::validate_deployment(new);
            errs.extend(deployment::validate_selector_unchanged(new, old));
            errs
        }
        ("apps", "ReplicaSet") => {
            let mut errs = deployment::validate_replica_set(new);
            errs.extend(deployment::validate_selector_unchanged(new, old));
            errs
        }
        ("apps", "DaemonSet") => {
            let mut errs = deployment::validate_daemon_set(new);
            errs.extend(deployment::validate_selector_unchanged(new, old));
            errs
        }
        ("networking.k8s.io" | "extensions", "Ingress") => {
            ingress::validate_ingress_update(new, old)
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            endpointslice::validate_endpoint_slice_update(new, old)
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod name_and_meta_tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    fn strings(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dns1123_label() {
        for ok in ["a", "0", "a-b", "123-abc", "a".repeat(63).as_str()] {
            assert!(is_dns1123_label(ok).is_empty(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "ä"] {
            assert_eq!(is_dns1123_label(bad), vec![LABEL_MSG], "{bad}");
        }
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert_eq!(
            is_dns1123_label(&format!("{}-", "a".repeat(64))),
            vec!["must be no more than 63 characters", LABEL_MSG]
        );
    }

    #[test]
    fn dns1123_subdomain() {
        for ok in ["a", "a.b", "example.com", "1.2.3", "a-b.c-d"] {
            assert!(is_dns1123_subdomain(ok).is_empty(), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "A.b", "a_b", "a.-b"] {
            assert_eq!(is_dns1123_subdomain(bad), vec![SUBDOMAIN_MSG], "{bad}");
        }
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(53));
        assert_eq!(long.len(), 254);
        assert_eq!(
            is_dns1123_subdomain(&long),
            vec!["must be no more than 253 characters"]
        );
    }

    #[test]
    fn dns1035_label() {
        for ok in ["a", "a-1", "my-name", "abc-123"] {
            assert!(is_dns1035_label(ok).is_empty(), "{ok}");
        }
        for bad in ["", "1a", "-a", "a-", "a.b", "A"] {
            assert_eq!(is_dns1035_label(bad), vec![DNS1035_MSG], "{bad}");
        }
        assert_eq!(
            is_dns1035_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn qualified_name() {
        for ok in [
            "a",
            "A",
            "MyName",
            "my.name",
            "123-abc",
            "a_b",
            "example.com/MyName",
            "app.kubernetes.io/name",
            "a".repeat(63).as_str(),
            format!("{}/{}", "a".repeat(253), "b".repeat(63)).as_str(),
        ] {
            assert!(is_qualified_name(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            is_qualified_name(""),
            vec![
                "name part must be non-empty".to_string(),
                NAME_PART_MSG.into()
            ]
        );
        assert_eq!(is_qualified_name("-a"), vec![NAME_PART_MSG]);
        assert_eq!(is_qualified_name("a b"), vec![NAME_PART_MSG]);
        assert_eq!(
            is_qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            is_qualified_name("Example.com/a"),
            vec![format!("prefix part {SUBDOMAIN_MSG}")]
        );
        assert_eq!(
            is_qualified_name("a/"),
            vec![
                "name part must be non-empty".to_string(),
                NAME_PART_MSG.into()
            ]
        );
        assert_eq!(
            is_qualified_name("a/b/c"),
            vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        );
    }

    #[test]
    fn label_value() {
        for ok in [
            "",
            "a",
            "MyValue",
            "my_value",
            "12345",
            "a.b-c_d",
            "a".repeat(63).as_str(),
        ] {
            assert!(is_valid_label_value(ok).is_empty(), "{ok}");
        }
        for bad in ["-a", "a-", "a b", "a/b", "_", "ü"] {
            assert_eq!(is_valid_label_value(bad), vec![LABEL_VALUE_MSG], "{bad}");
        }
        assert_eq!(
            is_valid_label_value(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn path_segment() {
        assert!(is_valid_path_segment_name("system:admin").is_empty());
        assert_eq!(is_valid_path_segment_name("."), vec!["may not be '.'"]);
        assert_eq!(is_valid_path_segment_name(".."), vec!["may not be '..'"]);
        assert_eq!(
            is_valid_path_segment_name("a/b%c"),
            vec!["may not contain '/'", "may not contain '%'"]
        );
        assert!(is_valid_path_segment_prefix("..").is_empty());
    }

    #[test]
    fn name_validator_per_kind() {
        assert_eq!(
            NameValidator::for_kind("", "Namespace"),
            NameValidator::Dns1123Label
        );
        assert_eq!(
            NameValidator::for_kind("", "Service"),
            NameValidator::Dns1035Label
        );
        assert_eq!(
            NameValidator::for_kind("rbac.authorization.k8s.io", "ClusterRole"),
            NameValidator::PathSegment
        );
        for (group, kind) in [
            ("", "Pod"),
            ("", "ConfigMap"),
            ("", "Endpoints"),
            ("apps", "Deployment"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("example.com", "Widget"),
        ] {
            assert_eq!(
                NameValidator::for_kind(group, kind),
                NameValidator::Dns1123Subdomain
            );
        }
        assert!(validate_object_name("", "Pod", "a.b").is_empty());
        assert_eq!(
            validate_object_name("", "Namespace", "a.b"),
            vec![LABEL_MSG]
        );
        assert_eq!(
            validate_object_name("", "Service", "1abc"),
            vec![DNS1035_MSG]
        );
        assert!(validate_object_name("rbac.authorization.k8s.io", "Role", "system:x").is_empty());
        assert_eq!(
            validate_object_name("", "ConfigMap", "Foo_bar"),
            vec![SUBDOMAIN_MSG]
        );
    }

    #[test]
    fn generate_name_prefix_allows_trailing_dash() {
        assert!(
            NameValidator::Dns1123Subdomain
                .validate("web-", true)
                .is_empty()
        );
        assert!(
            NameValidator::Dns1035Label
                .validate("web-", true)
                .is_empty()
        );
        assert_eq!(
            NameValidator::Dns1123Label.validate("web-", false),
            vec![LABEL_MSG]
        );
        // "-" alone is not masked, and the character before the dash is
        // dropped as upstream does: "A-" is checked as "a".
        assert_eq!(
            NameValidator::Dns1123Label.validate("-", true),
            vec![LABEL_MSG]
        );
        assert!(NameValidator::Dns1123Label.validate("A-", true).is_empty());
        assert_eq!(mask_trailing_dash(b"ab-"), b"aa");
        assert_eq!(mask_trailing_dash(b"ab"), b"ab");
        assert_eq!(
            NameValidator::PathSegment.validate("a/", true),
            vec!["may not contain '/'"]
        );
    }

    #[test]
    fn field_error_text_for_every_reason() {
        let cases = [
            (
                FieldError::invalid("metadata.name", "Foo_bar", "bad"),
                "metadata.name: Invalid value: \"Foo_bar\": bad",
            ),
            (
                FieldError::required("metadata.name", "name or generateName is required"),
                "metadata.name: Required value: name or generateName is required",
            ),
            (
                FieldError::required("metadata.namespace", ""),
                "metadata.namespace: Required value",
            ),
            (
                FieldError::too_long("metadata.annotations", 262144),
                "metadata.annotations: Too long: must have at most 262144 bytes",
            ),
            (
                FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "NodePort"]),
                "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\"",
            ),
            (
                FieldError::duplicate("spec.ports[1].port", "80"),
                "spec.ports[1].port: Duplicate value: \"80\"",
            ),
            (
                FieldError::forbidden("metadata.namespace", "not allowed on this type"),
                "metadata.namespace: Forbidden: not allowed on this type",
            ),
            (
                FieldError::not_found("spec.x", "y"),
                "spec.x: Not found: \"y\"",
            ),
            (
                FieldError::type_invalid("metadata.labels[a]", "must be a string"),
                "metadata.labels[a]: Invalid value: must be a string",
            ),
            (
                FieldError::new(
                    "spec.x",
                    FieldErrorReason::TooMany,
                    Some("5".into()),
                    "must have at most 4 items",
                ),
                "spec.x: Too many: 5: must have at most 4 items",
            ),
            (
                FieldError::new(
                    "spec.x",
                    FieldErrorReason::Internal,
                    Some("e".into()),
                    "boom",
                ),
                "spec.x: Internal error: boom",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(FieldErrorReason::Required.as_str(), "FieldValueRequired");
        assert_eq!(FieldErrorReason::Invalid.to_string(), "FieldValueInvalid");
        assert_eq!(
            FieldErrorReason::NotSupported.as_str(),
            "FieldValueNotSupported"
        );
        assert_eq!(FieldErrorReason::TooLong.as_str(), "FieldValueTooLong");
        assert_eq!(FieldErrorReason::Internal.as_str(), "InternalError");
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\u{0}\u{7f}"), r#""\n\t\x00\x7f""#);
        assert_eq!(go_quote("héllo 世界"), "\"héllo 世界\"");
        assert_eq!(
            go_quote("\u{a0}\u{200b}\u{feff}"),
            r#""\u00a0\u200b\ufeff""#
        );
        assert_eq!(go_quote("\u{85}"), r#""\u0085""#);
        assert_eq!(go_quote("\u{10ffff}"), r#""\U0010ffff""#);
        assert_eq!(go_quote("😀"), "\"😀\"");
    }

    #[test]
    fn object_meta_valid() {
        let meta = json!({
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "app.kubernetes.io/part-of": ""},
            "annotations": {"Example.com/Note": "anything at all"},
            "finalizers": ["example.com/cleanup"],
        });
        assert!(validate_object_meta("apps", "Deployment", &meta, true).is_empty());
        let ns = json!({"name": "kube-system"});
        assert!(validate_object_meta("", "Namespace", &ns, false).is_empty());
    }

    #[test]
    fn object_meta_name_errors() {
        assert_eq!(
            strings(&validate_object_meta(
                "",
                "Pod",
                &json!({"namespace": "d"}),
                true
            )),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        assert!(
            validate_object_meta(
                "",
                "Pod",
                &json!({"generateName": "web-", "namespace": "d"}),
                true
            )
            .is_empty()
        );
        assert_eq!(
            strings(&validate_object_meta(
                "",
                "Namespace",
                &json!({"name": "Foo_bar"}),
                false
            )),
            vec![format!(
                "metadata.name: Invalid value: \"Foo_bar\": {LABEL_MSG}"
            )]
        );
        assert_eq!(
            strings(&validate_object_meta(
                "",
                "Service",
                &json!({"generateName": "1web-", "name": "1web-x", "namespace": "d"}),
                true
            )),
            vec![
                format!("metadata.generateName: Invalid value: \"1web-\": {DNS1035_MSG}"),
                format!("metadata.name: Invalid value: \"1web-x\": {DNS1035_MSG}"),
            ]
        );
        let errs = validate_object_meta("", "Pod", &json!({"name": 5, "namespace": "d"}), true);
        assert_eq!(errs[0].reason, FieldErrorReason::TypeInvalid);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(
            strings(&validate_object_meta("", "Pod", &json!("x"), true)),
            vec!["metadata: Invalid value: must be an object"]
        );
    }

    #[test]
    fn object_meta_namespace_errors() {
        assert_eq!(
            strings(&validate_object_meta(
                "",
                "Pod",
                &json!({"name": "a"}),
                true
            )),
            vec!["metadata.namespace: Required value"]
        );
        assert_eq!(
            strings(&validate_object_meta(
                "",
                "Pod",
                &json!({"name": "a", "namespace": "a.b"}),
                true
            )),
            vec![format!(
                "metadata.namespace: Invalid value: \"a.b\": {LABEL_MSG}"
            )]
        );
        assert_eq!(
            strings(&validate_object_meta(
                "",
                "Node",
                &json!({"name": "a", "namespace": "x"}),
                false
            )),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
    }

    #[test]
    fn object_meta_label_and_annotation_errors() {
        let meta = json!({
            "name": "a",
            "labels": {"bad key": "ok", "k": "-bad", "n": 1},
            "annotations": {"a/b/c": "x", "UPPER/Ok": "fine"},
            "finalizers": ["a/b/c", 7],
        });
        let errs = validate_object_meta("", "Node", &meta, false);
        let text = strings(&errs);
        assert_eq!(
            text,
            vec![
                "metadata.labels[n]: Invalid value: must be a string".to_string(),
                format!("metadata.labels: Invalid value: \"bad key\": {NAME_PART_MSG}"),
                format!("metadata.labels: Invalid value: \"-bad\": {LABEL_VALUE_MSG}"),
                format!(
                    "metadata.annotations: Invalid value: \"a/b/c\": {}",
                    is_qualified_name("a/b/c")[0]
                ),
                format!(
                    "metadata.finalizers: Invalid value: \"a/b/c\": {}",
                    is_qualified_name("a/b/c")[0]
                ),
                "metadata.finalizers[1]: Invalid value: must be a string".to_string(),
            ]
        );
        assert!(
            errs.iter()
                .skip(1)
                .take(2)
                .all(|e| e.field == "metadata.labels")
        );
        assert_eq!(errs[1].value.as_deref(), Some("bad key"));
    }

    #[test]
    fn annotation_size_limit() {
        let at_limit = json!({"name": "a", "annotations": {"k": "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES - 1)}});
        assert!(validate_object_meta("", "Node", &at_limit, false).is_empty());
        let over = json!({"name": "a", "annotations": {"k": "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES)}});
        let errs = validate_object_meta("", "Node", &over, false);
        assert_eq!(
            strings(&errs),
            vec!["metadata.annotations: Too long: must have at most 262144 bytes"]
        );
        assert_eq!(errs[0].reason, FieldErrorReason::TooLong);
    }

    /// A straightforward char-level reading of the upstream regexes.
    fn reference_label(s: &str, first: fn(char) -> bool) -> bool {
        let chars: Vec<char> = s.chars().collect();
        let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        !chars.is_empty()
            && first(chars[0])
            && lower_alnum(chars[chars.len() - 1])
            && chars.iter().all(|&c| lower_alnum(c) || c == '-')
    }

    proptest! {
        #[test]
        fn validators_never_panic(s in ".{0,300}") {
            let _ = is_dns1123_label(&s);
            let _ = is_dns1123_subdomain(&s);
            let _ = is_dns1035_label(&s);
            let _ = is_qualified_name(&s);
            let _ = is_valid_label_value(&s);
            for rule in [NameValidator::Dns1123Label, NameValidator::Dns1123Subdomain, NameValidator::Dns1035Label, NameValidator::PathSegment] {
                let _ = rule.validate(&s, true);
                let _ = rule.validate(&s, false);
            }
            let _ = go_quote(&s);
            let _ = validate_object_meta("", "Pod", &json!({"name": s, "namespace": s, "labels": {s.clone(): s}}), true);
        }

        #[test]
        fn labels_agree_with_reference(s in "[-a-z0-9.A_]{0,70}") {
            let label_ok = reference_label(&s, |c| c.is_ascii_lowercase() || c.is_ascii_digit());
            prop_assert_eq!(is_dns1123_label(&s).is_empty(), label_ok && s.len() <= 63);
            let dns1035_ok = reference_label(&s, |c| c.is_ascii_lowercase());
            prop_assert_eq!(is_dns1035_label(&s).is_empty(), dns1035_ok && s.len() <= 63);
            let subdomain_ok = s.split('.').all(|p| reference_label(p, |c| c.is_ascii_lowercase() || c.is_ascii_digit()));
            prop_assert_eq!(is_dns1123_subdomain(&s).is_empty(), subdomain_ok && s.len() <= 253);
        }

        #[test]
        fn generated_valid_names_pass(
            label in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
            dns1035 in "[a-z]([-a-z0-9]{0,61}[a-z0-9])?",
            prefix in "[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?){0,3}",
            name in "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?",
        ) {
            prop_assert!(is_dns1123_label(&label).is_empty());
            prop_assert!(is_dns1035_label(&dns1035).is_empty());
            prop_assert!(is_dns1123_subdomain(&prefix).is_empty());
            prop_assert!(is_qualified_name(&name).is_empty());
            let prefixed = format!("{prefix}/{name}");
            prop_assert!(is_qualified_name(&prefixed).is_empty());
            prop_assert!(is_valid_label_value(&name).is_empty());
            let generate_name = format!("{label}-");
            prop_assert!(NameValidator::Dns1123Subdomain.validate(&generate_name, true).is_empty());
        }

        #[test]
        fn qualified_name_rejects_what_label_values_reject(s in "[-a-zA-Z0-9_. ]{1,70}") {
            // Without a '/', a qualified name is exactly a non-empty label value.
            prop_assert_eq!(is_qualified_name(&s).is_empty(), is_valid_label_value(&s).is_empty());
        }
    }
}
