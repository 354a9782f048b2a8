//! Server-side table printing: the columns and cells kube-apiserver returns
//! for `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`.
//!
//! `kubectl get` asks the server for a `meta.k8s.io/v1` Table and prints it
//! verbatim (upper-casing the column names, hiding priority-1 columns unless
//! `-o wide`). These printers follow `pkg/printers/internalversion` in
//! kubernetes/kubernetes, so Ferry's tables read exactly like a real
//! cluster's. Like kube-apiserver, a row always carries every cell (the
//! server prints "wide" and lets kubectl drop columns).
//!
//! Inputs are the stored JSON objects. Missing or wrongly-typed fields are
//! treated as unset; printing never fails. Fields that kube-apiserver always
//! fills in through defaulting (`Service.spec.type`, port protocols,
//! `replicas`, `Secret.type`, `Namespace.status.phase`) fall back to their
//! API defaults so that an undefaulted object prints like a defaulted one.

mod format;
mod networking;
mod objects;
mod pod;
#[cfg(test)]
mod tests;
mod workloads;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::Value;

/// One column of a Table (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Upstream spelling (`Cluster-IP`, `Nominated Node`); kubectl upper-cases it.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `date`, ...
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `name` for the column that holds the object's name, empty otherwise.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 = always shown, 1 = shown only with `-o wide`.
    pub priority: i32,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESCRIPTION: &str = "Names of each container in the template.";
const IMAGES_DESCRIPTION: &str = "Images referenced by each container in the template.";

/// The object's name, first column of nearly every table.
const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESCRIPTION,
    priority: 0,
};
const AGE: Column = column("Age", "string", CREATION_TIMESTAMP_DESCRIPTION);
const CONTAINERS: Column = wide(column("Containers", "string", CONTAINERS_DESCRIPTION));
const IMAGES: Column = wide(column("Images", "string", IMAGES_DESCRIPTION));

const fn column(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// Marks a column as `-o wide` only.
const fn wide(mut column: Column) -> Column {
    column.priority = 1;
    column
}

/// kube-apiserver's default table (`rest.NewDefaultTableConvertor`), used for
/// kinds without a dedicated printer.
const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    column("Created At", "date", CREATION_TIMESTAMP_DESCRIPTION),
];

type CellsFn = fn(&Value, Timestamp) -> Vec<Value>;

fn printer(group: &str, kind: &str) -> (&'static [Column], CellsFn) {
    match (group, kind) {
        ("", "Pod") => (pod::COLUMNS, pod::cells),
        ("", "Service") => (networking::SERVICE_COLUMNS, networking::service),
        ("", "Endpoints") => (networking::ENDPOINTS_COLUMNS, networking::endpoints),
        ("", "Node") => (objects::NODE_COLUMNS, objects::node),
        ("", "Namespace") => (objects::NAMESPACE_COLUMNS, objects::namespace),
        ("", "Secret") => (objects::SECRET_COLUMNS, objects::secret),
        ("", "ConfigMap") => (objects::CONFIG_MAP_COLUMNS, objects::config_map),
        ("", "ServiceAccount") => (objects::SERVICE_ACCOUNT_COLUMNS, objects::service_account),
        ("", "Event") => (objects::EVENT_COLUMNS, objects::event),
        ("apps", "Deployment") => (workloads::DEPLOYMENT_COLUMNS, workloads::deployment),
        ("apps", "ReplicaSet") => (workloads::REPLICA_SET_COLUMNS, workloads::replica_set),
        ("apps", "DaemonSet") => (workloads::DAEMON_SET_COLUMNS, workloads::daemon_set),
        ("discovery.k8s.io", "EndpointSlice") => (
            networking::ENDPOINT_SLICE_COLUMNS,
            networking::endpoint_slice,
        ),
        ("networking.k8s.io" | "extensions", "Ingress") => {
            (networking::INGRESS_COLUMNS, networking::ingress)
        }
        ("networking.k8s.io", "IngressClass") => {
            (networking::INGRESS_CLASS_COLUMNS, networking::ingress_class)
        }
        ("coordination.k8s.io", "Lease") => (objects::LEASE_COLUMNS, objects::lease),
        _ => (DEFAULT_COLUMNS, default_cells),
    }
}

/// The table columns for a kind (`group` is empty for the core group).
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    printer(group, kind).0.to_vec()
}

/// One table row for `obj`; always `columns(group, kind).len()` cells.
/// Cells are JSON strings or integers, exactly as kube-apiserver sends them.
pub fn cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    (printer(group, kind).1)(obj, now)
}

fn default_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    vec![
        format::name(obj).into(),
        format::rfc3339(&obj["metadata"]["creationTimestamp"]).into(),
    ]
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`: about two
/// significant figures (`45s`, `3m10s`, `70m`, `5h3m`, `2d1h`, `367d`, `2y1d`).
pub fn human_duration(d: std::time::Duration) -> String {
    human_duration_nanos(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// [`human_duration`] for a signed duration, as used for ages: up to two
/// seconds in the future counts as clock skew (`0s`), more is `<invalid>`.
pub fn human_signed_duration(d: SignedDuration) -> String {
    // Go's time.Duration saturates at ±292 years; so do we.
    let nanos = d
        .as_nanos()
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    human_duration_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

fn human_duration_nanos(nanos: i64) -> String {
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    const DAYS_PER_YEAR: i64 = 365;

    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 2 * 60 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    } else if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    let days = hours / 24;
    if hours < 8 {
        with_remainder(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with_remainder(days, "d", hours % 24, "h")
    } else if hours < 24 * DAYS_PER_YEAR * 2 {
        format!("{days}d")
    } else if hours < 24 * DAYS_PER_YEAR * 8 {
        with_remainder(days / DAYS_PER_YEAR, "y", days % DAYS_PER_YEAR, "d")
    } else {
        format!("{}y", days / DAYS_PER_YEAR)
    }
}

/// `3m10s`, or just `3m` when the smaller unit is zero.
fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}
