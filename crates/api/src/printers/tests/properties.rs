//! `cells` must never panic and must fill every column, whatever the JSON.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::Value;

use super::now;
use crate::printers::{cells, columns, human_duration, human_signed_duration};
use crate::resources::RESOURCES;

const KEYS: &[&str] = &[
    "metadata",
    "name",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "spec",
    "status",
    "containers",
    "initContainers",
    "containerStatuses",
    "initContainerStatuses",
    "state",
    "lastState",
    "terminated",
    "waiting",
    "running",
    "reason",
    "exitCode",
    "signal",
    "restartCount",
    "finishedAt",
    "ready",
    "started",
    "restartPolicy",
    "phase",
    "conditions",
    "type",
    "status",
    "conditionType",
    "readinessGates",
    "podIP",
    "podIPs",
    "ip",
    "nodeName",
    "nominatedNodeName",
    "ports",
    "port",
    "nodePort",
    "protocol",
    "clusterIP",
    "clusterIPs",
    "externalIPs",
    "loadBalancer",
    "ingress",
    "hostname",
    "externalName",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "subsets",
    "addresses",
    "endpoints",
    "addressType",
    "rules",
    "host",
    "tls",
    "ingressClassName",
    "parameters",
    "apiGroup",
    "kind",
    "controller",
    "data",
    "stringData",
    "binaryData",
    "secrets",
    "holderIdentity",
    "involvedObject",
    "fieldPath",
    "source",
    "component",
    "reportingComponent",
    "reportingInstance",
    "series",
    "count",
    "lastObservedTime",
    "eventTime",
    "firstTimestamp",
    "lastTimestamp",
    "message",
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "availableReplicas",
    "template",
    "nodeSelector",
    "unschedulable",
    "nodeInfo",
    "kubeletVersion",
    "address",
    "node-role.kubernetes.io/worker",
    "kubernetes.io/role",
    "desiredNumberScheduled",
    "image",
];

const WORDS: &[&str] = &[
    "",
    "2024-05-01T11:55:00Z",
    "2024-05-01T12:00:30Z",
    "0001-01-01T00:00:00Z",
    "9999-12-30T00:00:00Z",
    "-009999-01-03T00:00:00Z",
    "1970-01-01T00:00:00.5Z",
    "Always",
    "True",
    "False",
    "Ready",
    "Initialized",
    "PodScheduled",
    "SchedulingGated",
    "NodeLost",
    "Succeeded",
    "Failed",
    "Completed",
    "PodInitializing",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
    "InternalIP",
    "ExternalIP",
    "fd00::1",
    "10.0.0.1",
    "app",
    "a/b",
    "-x",
    "é",
];

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..7).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key.to_string(), value))
                        .collect(),
                )
            }),
        ]
    })
}

fn arbitrary_object() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec((prop::sample::select(KEYS), arbitrary_json()), 0..8).prop_map(
            |entries| Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect()
            )
        ),
        arbitrary_json(),
    ]
}

fn arbitrary_now() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(now()),
        (-62_135_596_800i64..=253_402_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

proptest! {
    #[test]
    fn cells_never_panic_and_fill_every_column(obj in arbitrary_object(), now in arbitrary_now()) {
        let kinds = RESOURCES
            .iter()
            .map(|r| (r.group, r.kind))
            .chain([("example.com", "Widget")]);
        for (group, kind) in kinds {
            let row = cells(group, kind, &obj, now);
            prop_assert_eq!(row.len(), columns(group, kind).len(), "{}/{}", group, kind);
            prop_assert!(row.iter().all(|c| c.is_string() || c.is_i64() || c.is_u64()));
        }
    }

    #[test]
    fn human_durations_never_panic(seconds in any::<u64>(), nanos in 0u32..1_000_000_000, signed in any::<i64>()) {
        let text = human_duration(Duration::new(seconds, nanos));
        prop_assert!(!text.is_empty() && text != "<invalid>");
        let text = human_signed_duration(SignedDuration::new(signed, 0));
        prop_assert!(!text.is_empty());
    }
}
