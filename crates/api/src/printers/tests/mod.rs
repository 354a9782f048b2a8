//! Expected rows for realistic objects of every served kind, checked
//! against what kube-apiserver prints for the same objects.

#![allow(clippy::unwrap_used)]

mod networking;
mod objects;
mod pod;
mod properties;
mod workloads;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;
use crate::resources::RESOURCES;

const CREATED_5M_AGO: &str = "2024-05-01T11:55:00Z";
const CREATED_10D_AGO: &str = "2024-04-21T12:00:00Z";

fn now() -> Timestamp {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

/// One row, checked to have a cell per column.
fn row(group: &str, kind: &str, obj: &Value) -> Value {
    let row = cells(group, kind, obj, now());
    assert_eq!(row.len(), columns(group, kind).len(), "{group}/{kind}");
    Value::Array(row)
}

/// The header line kubectl prints, with or without `-o wide`.
fn headers(group: &str, kind: &str, wide: bool) -> String {
    columns(group, kind)
        .iter()
        .filter(|c| wide || c.priority == 0)
        .map(|c| c.name.to_uppercase())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn meta(name: &str, created: &str) -> Value {
    json!({"name": name, "namespace": "default", "uid": "3f1c", "creationTimestamp": created})
}

#[test]
fn human_duration_matches_upstream() {
    let hour = 3600;
    let cases = [
        (1, "1s"),
        (70, "70s"),
        (190, "3m10s"),
        (70 * 60, "70m"),
        (47 * hour, "47h"),
        (49 * hour, "2d1h"),
        ((8 * 24 + 2) * hour, "8d"),
        (367 * 24 * hour, "367d"),
        ((365 * 2 * 24 + 25) * hour, "2y1d"),
        ((365 * 8 * 24 + 2) * hour, "8y"),
    ];
    for (seconds, want) in cases {
        assert_eq!(
            human_duration(Duration::from_secs(seconds)),
            want,
            "{seconds}s"
        );
    }
}

#[test]
fn human_duration_boundaries_match_upstream() {
    let ms = Duration::from_millis(1);
    let s = Duration::from_secs(1);
    let m = 60 * s;
    let h = 60 * m;
    let d = 24 * h;
    let y = 365 * d;
    let cases = [
        (Duration::ZERO, "0s"),
        (s - ms, "0s"),
        (2 * m - ms, "119s"),
        (2 * m, "2m"),
        (2 * m + s, "2m1s"),
        (10 * m - ms, "9m59s"),
        (10 * m, "10m"),
        (10 * m + s, "10m"),
        (3 * h - ms, "179m"),
        (3 * h, "3h"),
        (3 * h + m, "3h1m"),
        (8 * h - ms, "7h59m"),
        (8 * h, "8h"),
        (8 * h + 59 * m, "8h"),
        (2 * d - ms, "47h"),
        (2 * d, "2d"),
        (2 * d + h, "2d1h"),
        (8 * d - ms, "7d23h"),
        (8 * d, "8d"),
        (8 * d + 23 * h, "8d"),
        (2 * y - ms, "729d"),
        (2 * y, "2y"),
        (2 * y + 23 * h, "2y"),
        (2 * y + 23 * h + 59 * m, "2y"),
        (2 * y + d - ms, "2y"),
        (2 * y + d, "2y1d"),
        (3 * y, "3y"),
        (4 * y, "4y"),
        (5 * y, "5y"),
        (6 * y, "6y"),
        (7 * y, "7y"),
        (8 * y - ms, "7y364d"),
        (8 * y, "8y"),
        (8 * y + 364 * d, "8y"),
        (9 * y, "9y"),
        // Beyond Go's time.Duration range it saturates at ~292 years.
        (Duration::from_secs(u64::MAX), "292y"),
    ];
    for (duration, want) in cases {
        assert_eq!(human_duration(duration), want, "{duration:?}");
    }
}

#[test]
fn negative_durations_tolerate_two_seconds_of_skew() {
    assert_eq!(
        human_signed_duration(SignedDuration::from_secs(-2)),
        "<invalid>"
    );
    assert_eq!(
        human_signed_duration(SignedDuration::new(-1, -999_999_999)),
        "0s"
    );
    assert_eq!(human_signed_duration(SignedDuration::from_secs(-1)), "0s");
    assert_eq!(human_signed_duration(SignedDuration::MIN), "<invalid>");
    assert_eq!(
        human_signed_duration(SignedDuration::from_secs(190)),
        "3m10s"
    );
}

#[test]
fn headers_match_kubectl() {
    let cases = [
        ("", "Pod", "NAME | READY | STATUS | RESTARTS | AGE"),
        (
            "",
            "Service",
            "NAME | TYPE | CLUSTER-IP | EXTERNAL-IP | PORT(S) | AGE",
        ),
        ("", "Endpoints", "NAME | ENDPOINTS | AGE"),
        ("", "Node", "NAME | STATUS | ROLES | AGE | VERSION"),
        ("", "Namespace", "NAME | STATUS | AGE"),
        ("", "Secret", "NAME | TYPE | DATA | AGE"),
        ("", "ConfigMap", "NAME | DATA | AGE"),
        ("", "ServiceAccount", "NAME | SECRETS | AGE"),
        ("", "Event", "LAST SEEN | TYPE | REASON | OBJECT | MESSAGE"),
        (
            "apps",
            "Deployment",
            "NAME | READY | UP-TO-DATE | AVAILABLE | AGE",
        ),
        (
            "apps",
            "ReplicaSet",
            "NAME | DESIRED | CURRENT | READY | AGE",
        ),
        (
            "apps",
            "DaemonSet",
            "NAME | DESIRED | CURRENT | READY | UP-TO-DATE | AVAILABLE | NODE SELECTOR | AGE",
        ),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            "NAME | ADDRESSTYPE | PORTS | ENDPOINTS | AGE",
        ),
        (
            "networking.k8s.io",
            "Ingress",
            "NAME | CLASS | HOSTS | ADDRESS | PORTS | AGE",
        ),
        (
            "networking.k8s.io",
            "IngressClass",
            "NAME | CONTROLLER | PARAMETERS | AGE",
        ),
        ("coordination.k8s.io", "Lease", "NAME | HOLDER | AGE"),
        ("example.com", "Widget", "NAME | CREATED AT"),
    ];
    for (group, kind, want) in cases {
        assert_eq!(headers(group, kind, false), want, "{group}/{kind}");
    }
}

#[test]
fn wide_headers_match_kubectl() {
    let cases = [
        (
            "",
            "Pod",
            "NAME | READY | STATUS | RESTARTS | AGE | IP | NODE | NOMINATED NODE | READINESS GATES",
        ),
        (
            "",
            "Service",
            "NAME | TYPE | CLUSTER-IP | EXTERNAL-IP | PORT(S) | AGE | SELECTOR",
        ),
        (
            "",
            "Node",
            "NAME | STATUS | ROLES | AGE | VERSION | INTERNAL-IP | EXTERNAL-IP | OS-IMAGE | KERNEL-VERSION | CONTAINER-RUNTIME",
        ),
        (
            "",
            "Event",
            "LAST SEEN | TYPE | REASON | OBJECT | SUBOBJECT | SOURCE | MESSAGE | FIRST SEEN | COUNT | NAME",
        ),
        (
            "apps",
            "Deployment",
            "NAME | READY | UP-TO-DATE | AVAILABLE | AGE | CONTAINERS | IMAGES | SELECTOR",
        ),
        (
            "apps",
            "ReplicaSet",
            "NAME | DESIRED | CURRENT | READY | AGE | CONTAINERS | IMAGES | SELECTOR",
        ),
        (
            "apps",
            "DaemonSet",
            "NAME | DESIRED | CURRENT | READY | UP-TO-DATE | AVAILABLE | NODE SELECTOR | AGE | CONTAINERS | IMAGES | SELECTOR",
        ),
    ];
    for (group, kind, want) in cases {
        assert_eq!(headers(group, kind, true), want, "{group}/{kind}");
    }
}

#[test]
fn every_served_kind_has_its_own_printer_with_one_name_column() {
    for resource in RESOURCES {
        let columns = columns(resource.group, resource.kind);
        assert_ne!(columns, DEFAULT_COLUMNS, "{}", resource.kind);
        let names: Vec<_> = columns.iter().filter(|c| c.format == "name").collect();
        assert_eq!(names.len(), 1, "{}", resource.kind);
        assert_eq!(names[0].name, "Name");
        assert!(columns.iter().all(|c| c.priority == 0 || c.priority == 1));
        assert!(columns.iter().all(|c| !c.description.is_empty()));
    }
}

#[test]
fn columns_serialize_as_table_column_definitions() {
    let age = &columns("", "Pod")[4];
    assert_eq!(
        serde_json::to_value(age).unwrap(),
        json!({
            "name": "Age",
            "type": "string",
            "format": "",
            "description": CREATION_TIMESTAMP_DESCRIPTION,
            "priority": 0,
        })
    );
}

#[test]
fn group_must_match() {
    assert_eq!(columns("apps", "Pod"), DEFAULT_COLUMNS);
    assert_eq!(columns("", "Deployment"), DEFAULT_COLUMNS);
}

#[test]
fn unknown_kinds_get_the_default_table() {
    let widget =
        json!({"metadata": {"name": "w", "creationTimestamp": "2024-05-01T11:55:00.25+02:00"}});
    assert_eq!(
        row("example.com", "Widget", &widget),
        json!(["w", "2024-05-01T09:55:00Z"])
    );
    assert_eq!(
        row("example.com", "Widget", &json!({})),
        json!(["", "0001-01-01T00:00:00Z"])
    );
}

#[test]
fn ages() {
    let age_of = |created: Value| {
        row(
            "",
            "ConfigMap",
            &json!({"metadata": {"creationTimestamp": created}}),
        )[2]
        .clone()
    };
    assert_eq!(age_of(json!(null)), "<unknown>");
    assert_eq!(age_of(json!("0001-01-01T00:00:00Z")), "<unknown>");
    assert_eq!(age_of(json!("yesterday")), "<unknown>");
    assert_eq!(age_of(json!("2024-05-01T12:00:01Z")), "0s");
    assert_eq!(age_of(json!("2024-05-01T12:00:10Z")), "<invalid>");
    assert_eq!(age_of(json!("2024-05-01T08:57:00Z")), "3h3m");
    assert_eq!(age_of(json!("2019-05-01T12:00:00Z")), "5y2d");
}

#[test]
fn wrongly_typed_fields_read_as_unset() {
    let svc =
        json!({"metadata": {"name": 7}, "spec": {"ports": "80", "selector": ["app"], "type": 3}});
    assert_eq!(
        row("", "Service", &svc),
        json!([
            "",
            "ClusterIP",
            "<none>",
            "<none>",
            "<none>",
            "<unknown>",
            "<none>"
        ])
    );
}
