//! Server-side `meta.k8s.io/v1` Tables, which `kubectl get` asks for. The
//! columns and cells come from `ferry_api::printers`.

use ferry_api::printers;
use ferry_api::resources::ResourceType;
use serde_json::{Value, json};

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

pub fn column_definitions(rt: &ResourceType) -> Value {
    Value::Array(
        printers::columns(rt.group, rt.kind)
            .into_iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

pub fn row(rt: &ResourceType, obj: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let cells = printers::cells(rt.group, rt.kind, obj, now);
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = obj.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            });
        }
    }
    row
}

/// A Table of `objects`; `list_metadata` becomes the table's metadata.
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    include: IncludeObject,
    list_metadata: Value,
) -> Value {
    let now = jiff::Timestamp::now();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": column_definitions(rt),
        "rows": objects.iter().map(|o| row(rt, o, include, now)).collect::<Vec<_>>(),
    })
}

/// A Table of stored objects, written row by row: an unpaged `kubectl get`
/// of every Pod never holds all objects and rows in memory at once.
pub fn table_bytes<'a>(
    rt: &ResourceType,
    objects: impl Iterator<Item = &'a [u8]>,
    include: IncludeObject,
    list_metadata: Value,
) -> Vec<u8> {
    let now = jiff::Timestamp::now();
    let head = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": column_definitions(rt),
    });
    let mut out = serde_json::to_vec(&head).unwrap_or_default();
    out.pop(); // the closing brace; rows follow
    out.extend_from_slice(b",\"rows\":[");
    let mut first = true;
    for data in objects {
        let Ok(obj) = serde_json::from_slice::<Value>(data) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &row(rt, &obj, include, now));
    }
    out.extend_from_slice(b"]}");
    out
}
