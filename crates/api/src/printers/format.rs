//! Helpers shared by the printers: lenient JSON access, ages, and labels and
//! selectors written the way apimachinery writes them.

use jiff::Timestamp;
use jiff::tz::Offset;
use serde_json::Value;

/// Upstream abbreviates endpoint, port, host and address lists after three.
pub(super) const LIST_MAX: usize = 3;

/// A string field; missing or not a string reads as empty, like Go's zero value.
pub(super) fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// An integer field; missing or not an integer reads as 0.
pub(super) fn integer(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// An array field; missing or not an array reads as empty.
pub(super) fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// The entries of a map field; missing or not an object reads as empty.
pub(super) fn entries(value: &Value) -> impl Iterator<Item = (&str, &Value)> {
    value
        .as_object()
        .into_iter()
        .flat_map(|map| map.iter().map(|(key, value)| (key.as_str(), value)))
}

pub(super) fn name(obj: &Value) -> &str {
    text(&obj["metadata"]["name"])
}

/// `s`, or `<none>` when it is empty.
pub(super) fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>" } else { s }.to_string()
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which metav1 treats as unset.
const GO_ZERO_TIME_SECOND: i64 = -62_135_596_800;

/// A `metav1.Time`/`MicroTime` field; `None` when unset, zero or unparsable.
pub(super) fn timestamp(value: &Value) -> Option<Timestamp> {
    let time: Timestamp = value.as_str()?.parse().ok()?;
    let is_zero = time.as_second() == GO_ZERO_TIME_SECOND && time.subsec_nanosecond() == 0;
    (!is_zero).then_some(time)
}

/// `translateTimestampSince`: how long ago `value` was, or `<unknown>`.
pub(super) fn since(value: &Value, now: Timestamp) -> String {
    timestamp(value).map_or_else(|| "<unknown>".to_string(), |time| elapsed(time, now))
}

pub(super) fn elapsed(time: Timestamp, now: Timestamp) -> String {
    super::human_signed_duration(now.duration_since(time))
}

/// The AGE cell.
pub(super) fn age(obj: &Value, now: Timestamp) -> String {
    since(&obj["metadata"]["creationTimestamp"], now)
}

/// Go's `time.RFC3339` layout in UTC, whole seconds; unset is the zero time.
pub(super) fn rfc3339(value: &Value) -> String {
    let Some(time) = timestamp(value) else {
        return "0001-01-01T00:00:00Z".to_string();
    };
    let t = Offset::UTC.to_datetime(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Joins an abbreviated list: `a,b,c + 2 more...`, or `<unset>` when empty
/// (upstream's `listWithMoreString`).
pub(super) fn list_with_more(list: &[String], more: bool, count: usize) -> String {
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(LIST_MAX))
    } else if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

/// `labels.FormatLabels`: `k=v` pairs sorted and comma-joined, or `<none>`.
pub(super) fn format_labels(labels: &Value) -> String {
    let mut pairs: Vec<String> = entries(labels)
        .map(|(key, value)| format!("{key}={}", text(value)))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when it
/// selects everything or nothing, `<error>` when it is invalid.
pub(super) fn format_label_selector(selector: &Value) -> String {
    match label_selector(selector) {
        None => "<error>".to_string(),
        Some(s) => or_none(&s),
    }
}

/// `metav1.LabelSelectorAsSelector(selector).String()`: requirements sorted
/// by key, e.g. `app=web,tier in (a,b),!legacy`. `None` when invalid.
pub(super) fn label_selector(selector: &Value) -> Option<String> {
    let mut requirements: Vec<(&str, String)> = Vec::new();
    for (key, value) in entries(&selector["matchLabels"]) {
        let value = text(value);
        if !is_label_key(key) || !is_label_value(value) {
            return None;
        }
        requirements.push((key, format!("{key}={value}")));
    }
    for expression in items(&selector["matchExpressions"]) {
        let key = text(&expression["key"]);
        let mut values: Vec<&str> = items(&expression["values"]).iter().map(text).collect();
        if !is_label_key(key) || !values.iter().all(|v| is_label_value(v)) {
            return None;
        }
        values.sort_unstable();
        let rendered = match text(&expression["operator"]) {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key, rendered));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    let rendered: Vec<String> = requirements.into_iter().map(|(_, r)| r).collect();
    Some(rendered.join(","))
}

/// A qualified name (`[prefix/]name`), as label keys must be.
fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    }
}

fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value)
}

/// At most 63 alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric.
fn is_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(first), Some(last))
        if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric())
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain: dot-separated lower-case labels, at most 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            matches!((bytes.first(), bytes.last()), (Some(first), Some(last))
                if is_lower_alphanumeric(*first) && is_lower_alphanumeric(*last))
                && bytes.iter().all(|&b| is_lower_alphanumeric(b) || b == b'-')
        })
}

fn is_lower_alphanumeric(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `layoutContainerCells`: container names and images of a pod spec, each
/// comma-joined.
pub(super) fn containers_and_images(pod_spec: &Value) -> (String, String) {
    let containers = items(&pod_spec["containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(&c["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(&c["image"])).collect();
    (names.join(","), images.join(","))
}
