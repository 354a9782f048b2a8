//! Strategic merge patch (`application/strategic-merge-patch+json`), following
//! `k8s.io/apimachinery/pkg/util/strategicpatch`.
//!
//! The API server calls [`apply`] on a PATCH with the stored object and the
//! request body. [`schema_for`] plays the part of the `patchStrategy` and
//! `patchMergeKey` tags on the Go types: it says which lists of a kind merge
//! (and by which key) instead of being replaced.
//!
//! Merged lists are ordered as upstream orders them: `$setElementOrder/<field>`
//! (which `kubectl apply` always sends) first, then the order of the patch
//! list, then the live order. Without `$setElementOrder`, an element that is
//! new to the list comes before the live-only elements it cannot be ordered
//! against. This is why `kubectl patch` puts an added container first.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

type Object = Map<String, Value>;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Deeper patches are refused so that hostile input cannot overflow the stack.
/// JSON decoded by serde_json is never deeper than 128 levels.
pub const MAX_DEPTH: usize = 256;

/// Why a strategic merge patch could not be applied. Where upstream has a
/// message for the same failure, the message is the same.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid JSON document: the {0} is not a JSON object")]
    NotAnObject(&'static str),
    #[error("unknown patch type: {value} in map: {map}")]
    UnknownPatchType { value: String, map: String },
    #[error("unknown patch directive {key:?} in map: {map}")]
    UnknownDirective { key: String, map: String },
    #[error("map: {map} does not contain declared merge key: {key}")]
    MissingMergeKey { map: String, key: String },
    #[error("list {path} merges by key {key:?}, but its element {element} is not an object")]
    ElementNotObject {
        path: String,
        key: &'static str,
        element: String,
    },
    #[error("cannot merge lists without merge key for {path}")]
    NoMergeKey { path: String },
    #[error("lists of lists are not supported")]
    ListOfLists,
    #[error("merging lists cannot yet be specified in the patch")]
    MergeListDirective,
    #[error("invalid patch format of retainKeys")]
    BadRetainKeys,
    #[error("patch content doesn't match retainKeys list")]
    RetainKeysMismatch,
    #[error("invalid patch format of primitive list")]
    BadPrimitiveList,
    #[error("invalid patch format of setElementOrder list")]
    BadSetElementOrder,
    #[error("patch is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// How a list with `patchStrategy:"merge"` merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// Object elements are matched by this field (`patchMergeKey`).
    ByKey(&'static str),
    /// A list of primitives is merged as a set: union, order kept.
    Set,
}

/// The patch tags of one field, like `patchStrategy:"merge,retainKeys"
/// patchMergeKey:"name"` on a Go struct field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldPatch {
    /// `Some` for a list with the `merge` strategy; other lists are replaced.
    pub merge: Option<ListMerge>,
    /// `patchStrategy:"replace"`: a map is replaced instead of merged.
    pub replace: bool,
    /// The strategy includes `retainKeys`. Only patch generators (kubectl)
    /// need it: they send `$retainKeys`, which the engine honours anywhere.
    pub retain_keys: bool,
}

impl FieldPatch {
    const fn new(merge: Option<ListMerge>, replace: bool, retain_keys: bool) -> Self {
        Self {
            merge,
            replace,
            retain_keys,
        }
    }

    pub const fn merge_by_key(key: &'static str) -> Self {
        Self::new(Some(ListMerge::ByKey(key)), false, false)
    }

    pub const fn merge_set() -> Self {
        Self::new(Some(ListMerge::Set), false, false)
    }

    pub const fn replace() -> Self {
        Self::new(None, true, false)
    }

    pub const fn retaining_keys() -> Self {
        Self::new(None, false, true)
    }

    pub const fn with_retain_keys(mut self) -> Self {
        self.retain_keys = true;
        self
    }
}

/// The patch tags of one kind, by field path from the object root: map keys
/// joined by `.`, and `[]` for "each element of the list", as in
/// `spec.template.spec.containers[].ports`. Fields not listed have no tags:
/// maps merge and lists are replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchSchema {
    fields: BTreeMap<String, FieldPatch>,
}

impl PatchSchema {
    /// A schema without tags: every list is replaced.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or overrides) the tags of the field at `path`.
    pub fn with(mut self, path: &str, patch: FieldPatch) -> Self {
        self.fields.insert(path.to_owned(), patch);
        self
    }

    /// Adds a table of fields whose paths are relative to `prefix`.
    pub fn with_table(mut self, prefix: &str, table: &[(&str, FieldPatch)]) -> Self {
        for (path, patch) in table {
            self = self.with(&join(prefix, path), *patch);
        }
        self
    }

    /// The tags of the field at `path`, if it has any.
    pub fn field(&self, path: &str) -> Option<FieldPatch> {
        self.fields.get(path).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn with_pod_spec(self, prefix: &str) -> Self {
        let mut schema = self.with_table(prefix, POD_SPEC);
        for list in CONTAINER_LISTS {
            schema = schema.with_table(&join(prefix, &format!("{list}[]")), CONTAINER);
        }
        schema
    }

    fn with_pod_template(self, prefix: &str) -> Self {
        self.with_table(&join(prefix, "metadata"), OBJECT_META)
            .with_pod_spec(&join(prefix, "spec"))
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (_, true) => prefix.to_owned(),
        _ => format!("{prefix}.{path}"),
    }
}

const fn by(key: &'static str) -> FieldPatch {
    FieldPatch::merge_by_key(key)
}

const SET: FieldPatch = FieldPatch::merge_set();

// The tables copy the tags of the k8s.io/api Go types. A type without tags
// (Endpoints, EndpointSlice, Ingress, IngressClass, Lease, ConfigMap, Secret,
// Event; Node taints; Service status load balancer) has no table.

/// `ObjectMeta`: `metadata` of every kind and of pod templates.
const OBJECT_META: &[(&str, FieldPatch)] = &[("finalizers", SET), ("ownerReferences", by("uid"))];

/// `PodSpec`: `spec` of a Pod, `spec.template.spec` of a workload.
const POD_SPEC: &[(&str, FieldPatch)] = &[
    ("volumes", by("name").with_retain_keys()),
    ("initContainers", by("name")),
    ("containers", by("name")),
    ("ephemeralContainers", by("name")),
    ("imagePullSecrets", by("name")),
    ("hostAliases", by("ip")),
    ("topologySpreadConstraints", by("topologyKey")),
    ("resourceClaims", by("name").with_retain_keys()),
    ("schedulingGates", by("name")),
];

/// The lists of a `PodSpec` whose elements are `Container`-like.
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// `Container` and `EphemeralContainerCommon`.
const CONTAINER: &[(&str, FieldPatch)] = &[
    ("ports", by("containerPort")),
    ("env", by("name")),
    ("volumeMounts", by("mountPath")),
    ("volumeDevices", by("devicePath")),
];

const POD_STATUS: &[(&str, FieldPatch)] = &[
    ("conditions", by("type")),
    ("podIPs", by("ip")),
    ("hostIPs", by("ip")),
    ("resourceClaimStatuses", by("name").with_retain_keys()),
];

/// Status of Namespace, Service, Deployment, ReplicaSet and DaemonSet.
const STATUS_CONDITIONS: &[(&str, FieldPatch)] = &[("conditions", by("type"))];

const NODE_SPEC: &[(&str, FieldPatch)] = &[("podCIDRs", SET)];

const NODE_STATUS: &[(&str, FieldPatch)] = &[("conditions", by("type")), ("addresses", by("type"))];

const SERVICE_SPEC: &[(&str, FieldPatch)] = &[("ports", by("port"))];

const SERVICE_ACCOUNT: &[(&str, FieldPatch)] = &[("secrets", by("name"))];

/// The patch schema of a served kind. Kinds Ferry does not serve get an empty
/// schema, so every list in them is replaced.
pub fn schema_for(group: &str, kind: &str) -> PatchSchema {
    let base = PatchSchema::new().with_table("metadata", OBJECT_META);
    let group = if group == "core" { "" } else { group };
    match (group, kind) {
        ("", "Pod") => base.with_pod_spec("spec").with_table("status", POD_STATUS),
        ("", "Node") => base
            .with_table("spec", NODE_SPEC)
            .with_table("status", NODE_STATUS),
        ("", "Service") => base
            .with_table("spec", SERVICE_SPEC)
            .with_table("status", STATUS_CONDITIONS),
        ("", "Namespace") => base.with_table("status", STATUS_CONDITIONS),
        ("", "ServiceAccount") => base.with_table("", SERVICE_ACCOUNT),
        ("", "Endpoints" | "ConfigMap" | "Secret" | "Event")
        | ("discovery.k8s.io", "EndpointSlice")
        | ("networking.k8s.io", "Ingress" | "IngressClass")
        | ("coordination.k8s.io", "Lease") => base,
        ("apps", "Deployment") => base
            .with_pod_template("spec.template")
            .with("spec.strategy", FieldPatch::retaining_keys())
            .with_table("status", STATUS_CONDITIONS),
        ("apps", "ReplicaSet" | "DaemonSet") => base
            .with_pod_template("spec.template")
            .with_table("status", STATUS_CONDITIONS),
        _ => PatchSchema::new(),
    }
}

/// Applies the strategic merge patch `patch` to `original` and returns the
/// patched object. `original` may be `null` (no object yet).
pub fn apply(original: &Value, patch: &Value, kind: &PatchSchema) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject("patch"));
    };
    let original = match original {
        Value::Object(object) => object.clone(),
        Value::Null => Object::new(),
        _ => return Err(PatchError::NotAnObject("original object")),
    };
    let engine = Engine { schema: kind };
    Ok(Value::Object(engine.merge_map(
        original,
        patch,
        &Location::root(),
    )?))
}

/// Where the engine is in the document: the schema path (`None` once a map
/// key cannot be part of a schema path, e.g. a label key with dots) and depth.
struct Location {
    path: Option<String>,
    depth: usize,
}

impl Location {
    fn root() -> Self {
        Self {
            path: Some(String::new()),
            depth: 0,
        }
    }

    fn field(&self, key: &str) -> Self {
        let path = match &self.path {
            Some(path) if !key.contains(['.', '[', ']']) => Some(join(path, key)),
            _ => None,
        };
        Self {
            path,
            depth: self.depth + 1,
        }
    }

    fn item(&self) -> Self {
        Self {
            path: self.path.as_ref().map(|path| format!("{path}[]")),
            depth: self.depth + 1,
        }
    }

    fn describe(&self) -> String {
        match self.path.as_deref() {
            Some("") => "<root>".to_owned(),
            Some(path) => path.to_owned(),
            None => "<unnamed list>".to_owned(),
        }
    }
}

/// An element of a list being merged, with its index in the live list.
struct Entry {
    value: Value,
    origin: Option<usize>,
}

/// What identifies a list element when ordering: a merge key, or the value.
#[derive(Clone, Copy)]
enum Identity {
    Key(&'static str),
    Value,
}

impl Identity {
    fn of(self, value: &Value) -> Option<&Value> {
        match self {
            Identity::Key(key) => value.get(key),
            Identity::Value => Some(value),
        }
    }
}

struct Engine<'s> {
    schema: &'s PatchSchema,
}

impl Engine<'_> {
    fn tags(&self, at: &Location) -> FieldPatch {
        at.path
            .as_deref()
            .and_then(|path| self.schema.field(path))
            .unwrap_or_default()
    }

    /// Merges `patch` into `original` (`None` when the field is absent).
    fn merge_value(
        &self,
        original: Option<Value>,
        patch: &Value,
        at: &Location,
    ) -> Result<Value, PatchError> {
        match (original, patch) {
            (Some(Value::Object(original)), Value::Object(patch)) if !self.tags(at).replace => {
                Ok(Value::Object(self.merge_map(original, patch, at)?))
            }
            (Some(Value::Array(original)), Value::Array(patch)) => {
                Ok(Value::Array(self.merge_list(original, patch, at, None)?))
            }
            // A new value still goes through the engine, so that its nulls
            // and directives do not end up in the stored object.
            (_, Value::Object(patch)) => {
                Ok(Value::Object(self.merge_map(Object::new(), patch, at)?))
            }
            (_, Value::Array(patch)) => Ok(Value::Array(self.merge_list(
                Vec::new(),
                patch,
                at,
                None,
            )?)),
            (_, scalar) => Ok(scalar.clone()),
        }
    }

    fn merge_map(
        &self,
        mut original: Object,
        patch: &Object,
        at: &Location,
    ) -> Result<Object, PatchError> {
        if at.depth > MAX_DEPTH {
            return Err(PatchError::TooDeep);
        }
        if let Some(directive) = patch.get(DIRECTIVE) {
            let mut rest = patch.clone();
            rest.shift_remove(DIRECTIVE);
            return match directive.as_str() {
                Some("replace") => self.merge_map(Object::new(), &rest, at),
                // Upstream empties the map rather than removing its key;
                // `null` removes the key.
                Some("delete") => Ok(Object::new()),
                Some("merge") => self.merge_map(original, &rest, at),
                _ => Err(unknown_patch_type(directive, patch)),
            };
        }
        if let Some(keys) = patch.get(RETAIN_KEYS) {
            retain_keys(&mut original, patch, keys)?;
        }
        // Deletions from primitive lists first, so that a patch that both
        // deletes and adds (as kubectl sends) does not depend on key order.
        for (key, value) in patch {
            if let Some(field) = directive_field(key, DELETE_FROM_PRIMITIVE_LIST)? {
                let Value::Array(doomed) = value else {
                    return Err(PatchError::BadPrimitiveList);
                };
                if let Some(Value::Array(list)) = original.get_mut(field) {
                    list.retain(|item| !doomed.iter().any(|gone| same(item, gone)));
                }
            }
        }
        let mut ordered = HashSet::new();
        for (key, value) in patch {
            if let Some(field) = directive_field(key, SET_ELEMENT_ORDER)?
                && self.set_element_order(&mut original, patch, field, value, at)?
            {
                ordered.insert(field);
            }
        }
        for (key, value) in patch {
            if key.starts_with('$') {
                if key == DIRECTIVE
                    || key == RETAIN_KEYS
                    || directive_field(key, SET_ELEMENT_ORDER)?.is_some()
                    || directive_field(key, DELETE_FROM_PRIMITIVE_LIST)?.is_some()
                {
                    continue;
                }
                return Err(PatchError::UnknownDirective {
                    key: key.clone(),
                    map: Value::Object(patch.clone()).to_string(),
                });
            }
            if ordered.contains(key.as_str()) {
                continue;
            }
            if value.is_null() {
                original.shift_remove(key);
                continue;
            }
            let child = at.field(key);
            match original.get_mut(key) {
                Some(slot) => *slot = self.merge_value(Some(slot.take()), value, &child)?,
                None => {
                    let merged = self.merge_value(None, value, &child)?;
                    original.insert(key.clone(), merged);
                }
            }
        }
        Ok(original)
    }

    /// Handles `$setElementOrder/<field>`: merges the field's list (if the
    /// schema merges it) and orders it. Returns whether the field is done.
    fn set_element_order(
        &self,
        original: &mut Object,
        patch: &Object,
        field: &str,
        order: &Value,
        at: &Location,
    ) -> Result<bool, PatchError> {
        let Value::Array(order) = order else {
            return Err(PatchError::BadSetElementOrder);
        };
        let child = at.field(field);
        // A replaced list takes the order of the patch list itself.
        if self.tags(&child).merge.is_none() {
            return Ok(false);
        }
        let patch_list = match patch.get(field) {
            None => None,
            Some(Value::Array(list)) => Some(list.as_slice()),
            Some(_) => return Ok(false),
        };
        let live = match original.get_mut(field) {
            Some(Value::Array(list)) => Some(std::mem::take(list)),
            _ => None,
        };
        if live.is_none() && patch_list.is_none() {
            return Ok(false);
        }
        let merged = self.merge_list(
            live.unwrap_or_default(),
            patch_list.unwrap_or_default(),
            &child,
            Some(order),
        )?;
        match original.get_mut(field) {
            Some(slot) => *slot = Value::Array(merged),
            None => {
                original.insert(field.to_owned(), Value::Array(merged));
            }
        }
        Ok(true)
    }

    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        at: &Location,
        order: Option<&[Value]>,
    ) -> Result<Vec<Value>, PatchError> {
        if at.depth > MAX_DEPTH {
            return Err(PatchError::TooDeep);
        }
        match self.tags(at).merge {
            None => self.replace_list(patch, at),
            Some(ListMerge::Set) => merge_set(original, patch, at, order),
            Some(ListMerge::ByKey(key)) => self.merge_by_key(original, patch, key, at, order),
        }
    }

    /// A list without merge strategy is the patch list. Directive elements
    /// add nothing to it: the list is replaced anyway.
    fn replace_list(&self, patch: &[Value], at: &Location) -> Result<Vec<Value>, PatchError> {
        let item = at.item();
        let mut out = Vec::with_capacity(patch.len());
        for element in patch {
            let marked = element
                .as_object()
                .and_then(|map| Some((map, map.get(DIRECTIVE)?)));
            match marked {
                None => out.push(self.merge_value(None, element, &item)?),
                Some((map, directive)) => match directive.as_str() {
                    Some("replace" | "delete") => {}
                    Some("merge") => return Err(PatchError::MergeListDirective),
                    _ => return Err(unknown_patch_type(directive, map)),
                },
            }
        }
        Ok(out)
    }

    fn merge_by_key(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        key: &'static str,
        at: &Location,
        order: Option<&[Value]>,
    ) -> Result<Vec<Value>, PatchError> {
        let item = at.item();
        let mut replace = false;
        let mut deleted = Vec::new();
        let mut elements = Vec::new();
        for element in patch {
            let Value::Object(map) = element else {
                return Err(PatchError::ElementNotObject {
                    path: at.describe(),
                    key,
                    element: element.to_string(),
                });
            };
            match map.get(DIRECTIVE) {
                None => elements.push(map),
                Some(directive) => match directive.as_str() {
                    Some("delete") => deleted.push(merge_key(map, key)?),
                    Some("replace") => replace = true,
                    // `merge` is what the list does anyway: keep the element
                    // (merge_map drops the marker), drop a bare marker.
                    Some("merge") if map.contains_key(key) => elements.push(map),
                    Some("merge") => {}
                    _ => return Err(unknown_patch_type(directive, map)),
                },
            }
        }
        let mut entries = Vec::new();
        if replace {
            for map in &elements {
                let value = Value::Object(self.merge_map(Object::new(), map, &item)?);
                entries.push(Entry {
                    value,
                    origin: None,
                });
            }
            if order.is_none() {
                return Ok(entries.into_iter().map(|entry| entry.value).collect());
            }
        } else {
            for (index, value) in original.into_iter().enumerate() {
                let doomed = value
                    .get(key)
                    .is_some_and(|id| deleted.iter().any(|gone| same(id, gone)));
                if !doomed {
                    entries.push(Entry {
                        value,
                        origin: Some(index),
                    });
                }
            }
            for map in &elements {
                let id = merge_key(map, key)?;
                let live = entries
                    .iter_mut()
                    .find(|entry| entry.value.get(key).is_some_and(|other| same(other, id)));
                match live {
                    Some(Entry {
                        value: Value::Object(live),
                        ..
                    }) => {
                        // Keep the live spelling of the key (`80`, not `80.0`).
                        let live_id = live.get(key).cloned();
                        *live = self.merge_map(std::mem::take(live), map, &item)?;
                        if let Some(live_id) = live_id {
                            live.insert(key.to_owned(), live_id);
                        }
                    }
                    _ => {
                        let value = Value::Object(self.merge_map(Object::new(), map, &item)?);
                        entries.push(Entry {
                            value,
                            origin: None,
                        });
                    }
                }
            }
        }
        let wanted = match order {
            Some(order) => order
                .iter()
                .map(|element| match element {
                    Value::Object(map) => merge_key(map, key),
                    _ => Err(PatchError::BadSetElementOrder),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => elements
                .iter()
                .map(|map| merge_key(map, key))
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(order_entries(entries, &wanted, Identity::Key(key)))
    }
}

fn merge_set(
    original: Vec<Value>,
    patch: &[Value],
    at: &Location,
    order: Option<&[Value]>,
) -> Result<Vec<Value>, PatchError> {
    let mut replace = false;
    let mut added = Vec::new();
    for element in patch {
        match element {
            Value::Array(_) => return Err(PatchError::ListOfLists),
            // Only bare markers make sense in a list without merge key.
            Value::Object(map) if map.len() == 1 => {
                match map.get(DIRECTIVE).and_then(Value::as_str) {
                    Some("replace") => replace = true,
                    Some("merge") => {}
                    _ => {
                        return Err(PatchError::NoMergeKey {
                            path: at.describe(),
                        });
                    }
                }
            }
            Value::Object(_) => {
                return Err(PatchError::NoMergeKey {
                    path: at.describe(),
                });
            }
            scalar => added.push(scalar),
        }
    }
    let mut entries: Vec<Entry> = Vec::new();
    let live = if replace { Vec::new() } else { original };
    for (index, value) in live.into_iter().enumerate() {
        if !entries.iter().any(|entry| same(&entry.value, &value)) {
            entries.push(Entry {
                value,
                origin: Some(index),
            });
        }
    }
    for value in &added {
        if !entries.iter().any(|entry| same(&entry.value, value)) {
            entries.push(Entry {
                value: (*value).clone(),
                origin: None,
            });
        }
    }
    let wanted: Vec<&Value> = match order {
        Some(order) => order.iter().collect(),
        None => added,
    };
    Ok(order_entries(entries, &wanted, Identity::Value))
}

/// Orders a merged list like upstream's `normalizeElementOrder`: elements
/// named in `wanted` keep that order, the others keep their live order, and
/// the two runs interleave by live position where both elements have one.
fn order_entries(entries: Vec<Entry>, wanted: &[&Value], identity: Identity) -> Vec<Value> {
    let position = |value: &Value| {
        identity
            .of(value)
            .and_then(|id| wanted.iter().position(|want| same(want, id)))
    };
    let (mut patched, mut live_only): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .map(|entry| (position(&entry.value), entry))
        .partition(|(position, _)| position.is_some());
    patched.sort_by_key(|(position, _)| *position);
    live_only.sort_by_key(|(_, entry)| entry.origin.unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patched.len() + live_only.len());
    let mut left = live_only.into_iter().map(|(_, entry)| entry).peekable();
    let mut right = patched.into_iter().map(|(_, entry)| entry).peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!((l.origin, r.origin), (Some(l), Some(r)) if l < r),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next.map(|entry| entry.value));
    }
    out
}

/// Applies `$retainKeys`: live keys not in the list are cleared, and the
/// patch may only set listed keys.
fn retain_keys(original: &mut Object, patch: &Object, keys: &Value) -> Result<(), PatchError> {
    let Value::Array(keys) = keys else {
        return Err(PatchError::BadRetainKeys);
    };
    let keep = keys
        .iter()
        .map(|key| key.as_str().ok_or(PatchError::BadRetainKeys))
        .collect::<Result<HashSet<_>, _>>()?;
    let strays = patch.iter().any(|(key, value)| {
        !value.is_null() && !key.starts_with('$') && !keep.contains(key.as_str())
    });
    if strays {
        return Err(PatchError::RetainKeysMismatch);
    }
    original.retain(|key, _| keep.contains(key.as_str()));
    Ok(())
}

/// `Some(field)` for a `<prefix>/<field>` key, `None` for unrelated keys.
fn directive_field<'k>(key: &'k str, prefix: &str) -> Result<Option<&'k str>, PatchError> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    match rest.strip_prefix('/') {
        Some(field) if !field.is_empty() => Ok(Some(field)),
        _ if prefix == SET_ELEMENT_ORDER => Err(PatchError::BadSetElementOrder),
        _ => Err(PatchError::BadPrimitiveList),
    }
}

fn merge_key<'m>(map: &'m Object, key: &str) -> Result<&'m Value, PatchError> {
    map.get(key).ok_or_else(|| PatchError::MissingMergeKey {
        map: Value::Object(map.clone()).to_string(),
        key: key.to_owned(),
    })
}

fn unknown_patch_type(directive: &Value, map: &Object) -> PatchError {
    PatchError::UnknownPatchType {
        value: directive
            .as_str()
            .map_or_else(|| directive.to_string(), str::to_owned),
        map: Value::Object(map.clone()).to_string(),
    }
}

/// JSON equality, except that numbers compare by value (`80` matches `80.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x != y => {
            (x.is_f64() || y.is_f64()) && x.as_f64().is_some() && x.as_f64() == y.as_f64()
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Applies `patch` with the schema of `kind` ("Kind" in core, or "group/Kind").
    fn run(kind: &str, original: Value, patch: Value) -> Result<Value, PatchError> {
        let (group, kind) = kind.split_once('/').unwrap_or(("", kind));
        apply(&original, &patch, &schema_for(group, kind))
    }

    fn check(kind: &str, original: Value, patch: Value, expected: Value) {
        assert_eq!(run(kind, original, patch).unwrap(), expected);
    }

    fn error(kind: &str, original: Value, patch: Value) -> String {
        run(kind, original, patch).unwrap_err().to_string()
    }

    fn pod_with(containers: Value) -> Value {
        json!({"spec": {"containers": containers}})
    }

    #[test]
    fn maps_merge_recursively_and_null_deletes_keys() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "name": "x"}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3", "gone": null}}});
        let expected = json!({"metadata": {"labels": {"b": "2", "c": "3"}, "name": "x"}});
        check("Pod", original, patch, expected);
    }

    #[test]
    fn new_values_lose_their_nulls_and_directives() {
        let patch = json!({"spec": {"nodeSelector": {"a": "1", "b": null},
            "containers": [{"name": "x", "$patch": "delete"}, {"name": "y", "env": null}]}});
        let expected = json!({"spec": {"nodeSelector": {"a": "1"}, "containers": [{"name": "y"}]}});
        check("Pod", Value::Null, patch, expected);
    }

    #[test]
    fn lists_without_a_strategy_are_replaced() {
        let original = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}});
        let patch = json!({"spec": {"tolerations": [{"key": "c"}]}});
        check("Pod", original, patch.clone(), patch);
        // Unknown kinds have no tags, not even for containers.
        let patch = pod_with(json!([{"name": "b"}]));
        check(
            "example.com/Widget",
            pod_with(json!([{"name": "a"}])),
            patch.clone(),
            patch,
        );
        let original = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
        let patch = json!({"subsets": [{"addresses": []}]});
        check("Endpoints", original, patch.clone(), patch);
    }

    #[test]
    fn containers_merge_by_name_and_their_lists_by_their_keys() {
        let original = pod_with(json!([
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"mountPath": "/d", "name": "d"}]},
            {"name": "sidecar", "image": "envoy:1"}]));
        let patch = pod_with(json!([{"name": "web", "image": "nginx:2",
            "ports": [{"containerPort": 80.0, "name": "http"}, {"containerPort": 443}],
            "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
            "volumeMounts": [{"mountPath": "/d", "readOnly": true}]}]));
        let expected = pod_with(json!([
            {"name": "web", "image": "nginx:2",
             "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}],
             "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
             "volumeMounts": [{"mountPath": "/d", "name": "d", "readOnly": true}]},
            {"name": "sidecar", "image": "envoy:1"}]));
        check("Pod", original, patch, expected);
    }

    #[test]
    fn new_elements_are_ordered_like_upstream() {
        let original = pod_with(json!([{"name": "a"}, {"name": "b"}]));
        // Alone, a new element cannot be ordered against live ones: it goes
        // first, as `kubectl patch` shows against a real API server.
        let patch = pod_with(json!([{"name": "c"}]));
        let expected = pod_with(json!([{"name": "c"}, {"name": "a"}, {"name": "b"}]));
        check("Pod", original.clone(), patch, expected);
        // After a patched element, it follows that element.
        let patch = pod_with(json!([{"name": "b", "image": "x"}, {"name": "c"}]));
        let expected = pod_with(json!([{"name": "a"}, {"name": "b", "image": "x"}, {"name": "c"}]));
        check("Pod", original, patch, expected);
    }

    #[test]
    fn primitive_lists_with_merge_strategy_are_sets() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
        check(
            "ConfigMap",
            original,
            patch,
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        );
        let original = json!({"spec": {"podCIDRs": ["10.244.1.0/24"]}});
        check("Node", original.clone(), original.clone(), original);
    }

    #[test]
    fn kubectl_apply_patch_with_set_element_order() {
        let original = json!({"metadata": {"name": "web", "annotations": {"note": "keep"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.25", "resources": {},
                 "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 8080}]},
                {"name": "sidecar", "image": "envoy:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "metrics"}, {"name": "web"}, {"name": "sidecar"}],
            "containers": [
                {"name": "metrics", "image": "prom:2", "ports": [{"containerPort": 9090}]},
                {"name": "web", "image": "nginx:1.27",
                 "$setElementOrder/ports": [{"containerPort": 443}, {"containerPort": 80}],
                 "ports": [{"containerPort": 443}, {"containerPort": 8080, "$patch": "delete"}]}]}}}});
        let expected = json!({"metadata": {"name": "web", "annotations": {"note": "keep"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "metrics", "image": "prom:2", "ports": [{"containerPort": 9090}]},
                {"name": "web", "image": "nginx:1.27", "resources": {},
                 "ports": [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}]},
                {"name": "sidecar", "image": "envoy:1"}]}}}});
        check("apps/Deployment", original, patch, expected);
    }

    #[test]
    fn set_element_order_leaves_live_only_elements_in_place() {
        let original = pod_with(json!([{"name": "injected"}, {"name": "a"}, {"name": "b"}]));
        let patch =
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}});
        let expected = pod_with(json!([{"name": "injected"}, {"name": "b"}, {"name": "a"}]));
        check("Pod", original, patch, expected);
    }

    #[test]
    fn primitive_lists_take_order_and_deletions() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["d", "c", "a"],
            "$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]}});
        check(
            "Pod",
            original,
            patch,
            json!({"metadata": {"finalizers": ["d", "c", "a"]}}),
        );
    }

    #[test]
    fn three_way_apply_removes_a_selector_key() {
        let original = json!({"spec": {"selector": {"app": "web", "tier": "frontend"}}});
        let patch = json!({"spec": {"selector": {"tier": null}}});
        check(
            "Service",
            original,
            patch,
            json!({"spec": {"selector": {"app": "web"}}}),
        );
    }

    #[test]
    fn patch_delete_removes_a_container() {
        let original = pod_with(json!([{"name": "web"}, {"name": "sidecar"}, {"name": "log"}]));
        let patch = pod_with(json!([{"name": "sidecar", "$patch": "delete"}]));
        check(
            "Pod",
            original,
            patch,
            pod_with(json!([{"name": "web"}, {"name": "log"}])),
        );
    }

    #[test]
    fn patch_replace_on_a_map_and_in_a_list() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "c": "3", "d": null}}});
        check(
            "Pod",
            original,
            patch,
            json!({"metadata": {"labels": {"c": "3"}}}),
        );
        let original = pod_with(json!([{"name": "a", "image": "1"}, {"name": "b"}]));
        let patch = pod_with(json!([{"name": "c"}, {"$patch": "replace"}]));
        check("Pod", original, patch, pod_with(json!([{"name": "c"}])));
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let patch = json!({"metadata": {"finalizers": [{"$patch": "replace"}, "b"]}});
        check(
            "Pod",
            original,
            patch,
            json!({"metadata": {"finalizers": ["b"]}}),
        );
    }

    #[test]
    fn patch_delete_empties_a_map_and_patch_merge_merges() {
        let original = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}});
        let expected = json!({"spec": {"strategy": {"rollingUpdate": {}}}});
        check("apps/Deployment", original.clone(), patch, expected);
        let patch = json!({"spec": {"strategy": {"$patch": "merge", "type": "RollingUpdate"}}});
        let expected = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}, "type": "RollingUpdate"}}});
        check("apps/Deployment", original, patch, expected);
        let (original, patch) = (json!({"a": 1}), json!({"$patch": "delete"}));
        check("Pod", original, patch, json!({}));
    }

    #[test]
    fn retain_keys_clears_other_fields() {
        let original =
            json!({"spec": {"strategy": {"type": "A", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let expected = json!({"spec": {"strategy": {"type": "Recreate"}}});
        check("apps/Deployment", original.clone(), patch, expected);
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
        let message = error("apps/Deployment", original, patch);
        assert_eq!(message, "patch content doesn't match retainKeys list");
    }

    #[test]
    fn merge_keys_of_other_served_kinds() {
        let original = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let expected = json!({"spec": {"ports": [{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443}]}});
        check("Service", original, patch, expected);
        let original = json!({"status": {"conditions": [{"type": "Ready", "status": "False"},
            {"type": "MemoryPressure"}], "addresses": [{"type": "InternalIP"}]}});
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let expected = json!({"status": {"conditions": [{"type": "Ready", "status": "True"},
            {"type": "MemoryPressure"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        check("Node", original, patch, expected);
        let original =
            json!({"metadata": {"ownerReferences": [{"uid": "1", "kind": "ReplicaSet"}]}});
        let patch = json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]}});
        let expected = json!({"metadata": {"ownerReferences":
            [{"uid": "1", "kind": "ReplicaSet", "controller": true}]}});
        check("coordination.k8s.io/Lease", original, patch, expected);
    }

    #[test]
    fn schemas_describe_served_kinds() {
        let by = |key| Some(ListMerge::ByKey(key));
        #[rustfmt::skip]
        let cases = [
            ("apps", "Deployment", "spec.template.spec.containers", by("name")),
            ("apps", "DaemonSet", "spec.template.spec.initContainers[].env", by("name")),
            ("apps", "ReplicaSet", "spec.template.spec.containers[].ports", by("containerPort")),
            ("apps", "Deployment", "spec.template.metadata.finalizers", Some(ListMerge::Set)),
            ("", "Pod", "spec.topologySpreadConstraints", by("topologyKey")),
            ("", "Pod", "status.podIPs", by("ip")),
            ("", "Secret", "metadata.finalizers", Some(ListMerge::Set)),
            ("", "Node", "spec.taints", None),
            ("example.com", "Widget", "metadata.finalizers", None),
        ];
        for (group, kind, path, merge) in cases {
            let field = schema_for(group, kind).field(path);
            assert_eq!(field.and_then(|f| f.merge), merge, "{kind} {path}");
        }
        let deployment = schema_for("apps", "Deployment");
        assert!(deployment.field("spec.strategy").unwrap().retain_keys);
        assert!(schema_for("apps", "Pod").is_empty());
    }

    #[test]
    fn errors_read_like_upstream() {
        let err = apply(&json!({}), &json!([]), &PatchSchema::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid JSON document: the patch is not a JSON object"
        );
        let original = pod_with(json!([{"name": "a"}]));
        #[rustfmt::skip]
        let cases = [
            (json!({"spec": {"$patch": "explode"}}),
             r#"unknown patch type: explode in map: {"$patch":"explode"}"#),
            (pod_with(json!([{"image": "x"}])),
             r#"map: {"image":"x"} does not contain declared merge key: name"#),
            (pod_with(json!([{"$patch": "delete"}])),
             r#"map: {"$patch":"delete"} does not contain declared merge key: name"#),
            (json!({"spec": {"$foo": 1}}), r#"unknown patch directive "$foo" in map: {"$foo":1}"#),
            (pod_with(json!(["a"])),
             r#"list spec.containers merges by key "name", but its element "a" is not an object"#),
            (json!({"spec": {"$setElementOrder/containers": {}}}),
             "invalid patch format of setElementOrder list"),
            (json!({"spec": {"$setElementOrder": []}}), "invalid patch format of setElementOrder list"),
            (json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
             "invalid patch format of primitive list"),
            (json!({"spec": {"$retainKeys": [1]}}), "invalid patch format of retainKeys"),
            (json!({"metadata": {"finalizers": [["a"]]}}), "lists of lists are not supported"),
            (json!({"metadata": {"finalizers": [{"a": 1}]}}),
             "cannot merge lists without merge key for metadata.finalizers"),
            (json!({"spec": {"tolerations": [{"$patch": "merge"}]}}),
             "merging lists cannot yet be specified in the patch"),
        ];
        for (patch, message) in cases {
            assert_eq!(error("Pod", original.clone(), patch), message);
        }
        let mut deep = json!({});
        for _ in 0..=MAX_DEPTH {
            deep = json!({ "a": deep });
        }
        let message = format!("patch is nested deeper than {MAX_DEPTH} levels");
        assert_eq!(error("Pod", json!({}), deep), message);
    }

    /// RFC 7386 JSON merge patch, the reference for patches of plain maps.
    fn json_merge_patch(target: &Value, patch: &Value) -> Value {
        let Value::Object(patch) = patch else {
            return patch.clone();
        };
        let mut target = target.as_object().cloned().unwrap_or_default();
        for (key, value) in patch {
            if value.is_null() {
                target.shift_remove(key);
            } else {
                let merged = json_merge_patch(target.get(key).unwrap_or(&Value::Null), value);
                target.insert(key.clone(), merged);
            }
        }
        Value::Object(target)
    }

    /// Keys that exercise directives and tagged fields, mixed with random ones.
    fn keys() -> BoxedStrategy<String> {
        let special = prop::sample::select(vec![
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$setElementOrder/finalizers",
            "$deleteFromPrimitiveList/finalizers",
            "$bogus",
            "spec",
            "metadata",
            "finalizers",
            "containers",
            "name",
            "ports",
            "containerPort",
            "status",
            "conditions",
            "type",
        ]);
        prop_oneof![special.prop_map(str::to_owned), "[a-c]{1,2}"].boxed()
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let words = prop::sample::select(vec!["replace", "delete", "merge", "a", "name"]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..300).prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            words.prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((keys(), inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// Objects of objects and scalars (nulls included), without lists or `$` keys.
    fn plain_map() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from)
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop::collection::vec(("[a-e]{1,2}", inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        })
        .prop_filter("an object", Value::is_object)
    }

    fn containers(names: &'static [&'static str]) -> impl Strategy<Value = Vec<Value>> {
        let names = prop::sample::subsequence(names.to_vec(), 0..=names.len()).prop_shuffle();
        names.prop_flat_map(|names| {
            let images = prop::collection::vec("[a-z]{1,3}", names.len());
            images.prop_map(move |images| {
                let pairs = names.iter().zip(images);
                pairs
                    .map(|(name, image)| json!({"name": name, "image": image}))
                    .collect()
            })
        })
    }

    proptest! {
        #[test]
        fn empty_patch_is_identity(original in any_json()) {
            let original = json!({"spec": original});
            for schema in [schema_for("", "Pod"), PatchSchema::new()] {
                prop_assert_eq!(apply(&original, &json!({}), &schema).unwrap(), original.clone());
            }
        }

        #[test]
        fn plain_map_patch_is_json_merge_patch(original in any_json(), patch in plain_map()) {
            let expected = json_merge_patch(&original, &patch);
            let original = if original.is_object() { original } else { Value::Null };
            prop_assert_eq!(apply(&original, &patch, &schema_for("", "Pod")).unwrap(), expected);
        }

        #[test]
        fn merge_by_key_keeps_every_element(
            live in containers(&["a", "b", "c", "d"]),
            update in containers(&["b", "d", "e", "f"]),
        ) {
            let schema = schema_for("", "Pod");
            let patch = pod_with(Value::from(update.clone()));
            let result = apply(&pod_with(Value::from(live.clone())), &patch, &schema).unwrap();
            let merged = result["spec"]["containers"].as_array().unwrap();
            let added = update.iter().filter(|u| !live.iter().any(|l| l["name"] == u["name"]));
            prop_assert_eq!(merged.len(), live.len() + added.count());
            for element in live.iter().chain(&update) {
                let found = merged.iter().find(|m| m["name"] == element["name"]);
                let newest = update.iter().find(|u| u["name"] == element["name"]);
                prop_assert_eq!(found, Some(newest.unwrap_or(element)));
            }
            prop_assert_eq!(apply(&result, &patch, &schema).unwrap(), result.clone());
        }

        #[test]
        fn never_panics(original in any_json(), patch in any_json()) {
            let keyed = schema_for("", "Pod").with("spec", FieldPatch::merge_by_key("name"));
            for schema in [schema_for("", "Pod"), keyed] {
                let _ = apply(&original, &patch, &schema);
                for key in ["spec", "metadata"] {
                    let _ = apply(&json!({key: original}), &json!({key: patch}), &schema);
                }
            }
        }
    }
}
