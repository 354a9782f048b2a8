//! The generic registry: create, read, update, patch and delete for every
//! served kind, on top of the store. Kind-specific rules live in
//! `strategy`; this module owns the flow (decode, validate, precondition,
//! optimistic retry) that kube-apiserver's generic registry implements.

use std::sync::Arc;

use bytes::Bytes;
use ferry_api::resources::{ResourceType, find_kind};
use ferry_api::selector::{FieldSelector, LabelSelector};
use ferry_api::{defaults, validation};
use ferry_store::{Op, Store, StoreError, Stored};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::fields;
use crate::schema;
use crate::services::{self, Holdings, ServiceAllocator};
use crate::status::{ApiError, ApiResult};
use crate::strategy::{self, Target};

/// How unknown fields in a write are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> ApiResult<Self> {
        match v {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Where the full object of a write comes from. kube-apiserver words a
/// strict decoding error differently for a request body (create, update)
/// and for the result of a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectSource {
    Body,
    Patch,
}

/// Options shared by create, update and patch.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    pub field_validation: FieldValidation,
    pub dry_run: bool,
}

/// The result of a write: the object as stored, plus warnings for the
/// `Warning` header.
pub struct WriteOutcome {
    pub object: Bytes,
    pub warnings: Vec<String>,
    pub created: bool,
}

/// Which object a request names.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    pub rt: &'static ResourceType,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

/// Parsed list/watch filters.
#[derive(Default)]
pub struct Filters {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Filters {
    pub fn parse(
        rt: &ResourceType,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> ApiResult<Filters> {
        let labels = label_selector
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?
            .filter(|s| !s.is_empty());
        let fields = field_selector
            .map(FieldSelector::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .filter(|s| !s.is_empty());
        if let Some(f) = &fields {
            fields::check_supported(rt, f.requirements().iter().map(|r| r.field.as_str()))
                .map_err(ApiError::bad_request)?;
        }
        Ok(Filters { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, rt: &ResourceType, obj: &Value) -> bool {
        self.is_empty() || self.matches_selectable(&fields::selectable(rt, obj))
    }

    /// Matches pre-extracted labels and fields (see `fields::selectable`).
    pub fn matches_selectable(&self, s: &ferry_store::Selectable) -> bool {
        if let Some(l) = &self.labels
            && !l.matches(&s.labels)
        {
            return false;
        }
        if let Some(f) = &self.fields
            && !f.matches(|field| {
                s.fields
                    .iter()
                    .find(|(name, _)| name == field)
                    .map(|(_, v)| v.clone())
            })
        {
            return false;
        }
        true
    }

    pub fn matches_bytes(&self, rt: &ResourceType, data: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        serde_json::from_slice::<Value>(data).is_ok_and(|v| self.matches(rt, &v))
    }
}

/// Store key of an object: `<plural>[.<group>]/<namespace>/<name>`.
pub fn object_key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    format!(
        "{}/{}/{}",
        rt.qualified_plural(),
        namespace.unwrap_or(""),
        name
    )
}

/// Store key prefix of a collection, in one namespace or all.
pub fn collection_prefix(rt: &ResourceType, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{}/{}/", rt.qualified_plural(), ns),
        None => format!("{}/", rt.qualified_plural()),
    }
}

pub struct Registry {
    pub store: Store,
    pub services: ServiceAllocator,
    pub max_object_bytes: usize,
    /// Woken when a namespace starts terminating.
    pub namespace_deleted: Arc<Notify>,
}

fn is_service(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.kind == "Service"
}

fn parse_stored(stored: &Stored) -> ApiResult<Value> {
    serde_json::from_slice(&stored.data)
        .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))
}

fn revision_of(obj: &Value) -> ApiResult<Option<u64>> {
    match obj["metadata"]
        .get("resourceVersion")
        .and_then(Value::as_str)
    {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
    }
}

/// How many times a write retries after losing an optimistic race.
const MAX_RETRIES: usize = 16;

impl Registry {
    pub fn get(&self, r: ObjectRef<'_>) -> ApiResult<Stored> {
        self.store
            .get(&object_key(r.rt, r.namespace, r.name))
            .ok_or_else(|| ApiError::not_found(r.rt, r.name))
    }

    pub fn get_value(&self, r: ObjectRef<'_>) -> ApiResult<(Stored, Value)> {
        let stored = self.get(r)?;
        let value = parse_stored(&stored)?;
        Ok((stored, value))
    }

    /// Checks and normalises an incoming full object for `rt`.
    pub(crate) fn decode_incoming(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        mut obj: Value,
        source: ObjectSource,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON or YAML object",
            ));
        }
        let expected_version = rt.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => obj["apiVersion"] = json!(expected_version),
            Some(v) if v == expected_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({expected_version})"
                )));
            }
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => obj["kind"] = json!(rt.kind),
            Some(k) if k == rt.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
        }
        if rt.kind == "Secret" && rt.group.is_empty() {
            strategy::fold_secret_string_data(&mut obj);
        }
        let decoded = schema::decode(rt.group, rt.kind, &obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {}",
                rt.kind, rt.version, rt.kind, e
            ))
        })?;
        if !decoded.unknown_fields.is_empty() {
            let messages: Vec<String> = decoded
                .unknown_fields
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            match opts.field_validation {
                FieldValidation::Strict => {
                    let strict = format!("strict decoding error: {}", messages.join(", "));
                    return Err(ApiError::bad_request(match source {
                        ObjectSource::Body => format!(
                            "{} in version \"{}\" cannot be handled as a {}: {strict}",
                            rt.kind, rt.version, rt.kind
                        ),
                        ObjectSource::Patch => strict,
                    }));
                }
                FieldValidation::Warn => warnings.extend(messages),
                FieldValidation::Ignore => {}
            }
        }
        let mut obj = decoded.object;
        // The namespace comes from the URL; a different one in the body is
        // refused, a missing one filled in.
        let meta = strategy::metadata_mut(&mut obj);
        match (namespace, meta.get("namespace").and_then(Value::as_str)) {
            (Some(url_ns), Some(body_ns)) if !body_ns.is_empty() && body_ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (Some(url_ns), _) => {
                meta.insert("namespace".into(), json!(url_ns));
            }
            (None, _) => {
                meta.remove("namespace");
            }
        }
        Ok(obj)
    }

    fn validate(&self, rt: &'static ResourceType, obj: &Value, name: &str) -> ApiResult<()> {
        let errors =
            validation::validate_object_meta(rt.group, rt.kind, &obj["metadata"], rt.namespaced);
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt, name, &errors));
        }
        let size = serde_json::to_vec(obj).map(|v| v.len()).unwrap_or(0);
        if size > self.max_object_bytes {
            return Err(ApiError::too_large(self.max_object_bytes));
        }
        Ok(())
    }

    /// New objects may only go into a namespace that exists and is not
    /// being deleted.
    fn check_namespace(&self, rt: &ResourceType, namespace: Option<&str>) -> ApiResult<()> {
        let Some(ns) = namespace.filter(|_| rt.namespaced) else {
            return Ok(());
        };
        let namespaces = find_kind("", "Namespace").expect("namespaces are served");
        let stored = self
            .store
            .get(&object_key(namespaces, None, ns))
            .ok_or_else(|| ApiError::not_found(namespaces, ns))?;
        let v = parse_stored(&stored)?;
        if v["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            let mut e = ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ));
            e.details.name = Some(ns.to_string());
            e.details.kind = Some("namespaces".into());
            return Err(e);
        }
        Ok(())
    }

    pub async fn create(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        body: Value,
        opts: WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        let mut warnings = Vec::new();
        let mut obj = self.decode_incoming(
            rt,
            namespace,
            body,
            ObjectSource::Body,
            &opts,
            &mut warnings,
        )?;
        if revision_of(&obj)?.is_some() {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let meta = strategy::metadata_mut(&mut obj);
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let n = strategy::generated_name(prefix);
                    meta.insert("name".into(), json!(n));
                    n
                }
                _ => String::new(),
            },
        };
        defaults::apply_defaults(rt.group, rt.kind, &mut obj);
        strategy::prepare_for_create(rt, &mut obj);
        self.validate(rt, &obj, &name)?;
        self.check_namespace(rt, namespace)?;
        let key = object_key(rt, namespace, &name);
        if opts.dry_run && self.store.get(&key).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let reserved = self.reserve(rt, &mut obj, None, &name)?;
        // Allocation comes first, as upstream: validation checks the
        // allocated values too.
        let errors = validation::validate_create(rt.group, rt.kind, &obj);
        if !errors.is_empty() {
            self.services.release(&reserved);
            return Err(ApiError::invalid(rt, &name, &errors));
        }
        if opts.dry_run {
            self.services.release(&reserved);
            return Ok(WriteOutcome {
                object: Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
                warnings,
                created: true,
            });
        }
        let result = self.store.write(Op::Create { key, object: obj }).await;
        if result.is_err() {
            self.services.release(&reserved);
        }
        match result {
            Ok(stored) => Ok(WriteOutcome {
                object: stored.data,
                warnings,
                created: true,
            }),
            Err(StoreError::AlreadyExists(_)) => Err(ApiError::already_exists(rt, &name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reserves the ClusterIP and NodePorts a Service needs (nothing for
    /// other kinds).
    fn reserve(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> ApiResult<Holdings> {
        if is_service(rt) {
            self.services.reserve(obj, old, name)
        } else {
            Ok(Holdings::default())
        }
    }

    /// PUT: replaces the object (or its status).
    pub async fn update(
        &self,
        r: ObjectRef<'_>,
        target: Target,
        body: Value,
        opts: WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        let mut warnings = Vec::new();
        let obj = self.decode_incoming(
            r.rt,
            r.namespace,
            body,
            ObjectSource::Body,
            &opts,
            &mut warnings,
        )?;
        match obj["metadata"].get("name").and_then(Value::as_str) {
            Some(n) if n == r.name => {}
            Some(n) if !n.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({})",
                    r.name
                )));
            }
            _ => {}
        }
        let precondition = revision_of(&obj)?;
        let allow_create = matches!((r.rt.group, r.rt.kind), ("", "Endpoints" | "Event"));
        let mut outcome = self
            .guaranteed_update(
                r,
                precondition,
                opts,
                |_current| {
                    let mut new = obj.clone();
                    strategy::metadata_mut(&mut new).insert("name".into(), json!(r.name));
                    Ok(new)
                },
                target,
                allow_create,
            )
            .await?;
        outcome.warnings.extend(warnings);
        Ok(outcome)
    }

    /// The read-modify-write loop shared by update and patch: `mutate`
    /// gets the current object and returns the desired one; a lost race
    /// retries unless the caller pinned a resourceVersion.
    pub async fn guaranteed_update(
        &self,
        r: ObjectRef<'_>,
        precondition: Option<u64>,
        opts: WriteOptions,
        mutate: impl Fn(&Value) -> ApiResult<Value>,
        target: Target,
        allow_create: bool,
    ) -> ApiResult<WriteOutcome> {
        let key = object_key(r.rt, r.namespace, r.name);
        for _ in 0..MAX_RETRIES {
            let Some(stored) = self.store.get(&key) else {
                if allow_create && target == Target::Main {
                    let new = mutate(&Value::Null)?;
                    return self.create(r.rt, r.namespace, new, opts).await;
                }
                return Err(ApiError::not_found(r.rt, r.name));
            };
            if let Some(p) = precondition
                && p != stored.revision
            {
                return Err(ApiError::modified(r.rt, r.name));
            }
            let old = parse_stored(&stored)?;
            let mut new = mutate(&old)?;
            defaults::apply_defaults(r.rt.group, r.rt.kind, &mut new);
            if is_service(r.rt) {
                defaults::drop_type_dependent_fields(&mut new, &old);
                services::carry_over_allocations(&mut new, &old);
            }
            strategy::prepare_for_update(r.rt, &mut new, &old, target);
            self.validate(r.rt, &new, r.name)?;
            let reserved = self.reserve(r.rt, &mut new, Some(&old), r.name)?;
            let errors = validation::validate_update(r.rt.group, r.rt.kind, &new, &old);
            if !errors.is_empty() {
                self.services.release(&reserved);
                return Err(ApiError::invalid(r.rt, r.name, &errors));
            }
            if opts.dry_run {
                self.services.release(&reserved);
                return Ok(WriteOutcome {
                    object: Bytes::from(serde_json::to_vec(&new).unwrap_or_default()),
                    warnings: Vec::new(),
                    created: false,
                });
            }
            // A write that changes nothing is answered with the stored
            // object and no new revision, as kube-apiserver does.
            let mut comparable = new.clone();
            strategy::metadata_mut(&mut comparable)
                .insert("resourceVersion".into(), json!(stored.revision.to_string()));
            if comparable == old {
                self.services.release(&reserved);
                return Ok(WriteOutcome {
                    object: stored.data,
                    warnings: Vec::new(),
                    created: false,
                });
            }
            let removing = strategy::ready_to_remove(&new) && r.rt.kind != "Namespace";
            let freed = if !is_service(r.rt) {
                Holdings::default()
            } else if removing {
                Holdings::of(&old)
            } else {
                ServiceAllocator::released_by_update(&old, &new)
            };
            let op = if removing {
                Op::Delete {
                    key: key.clone(),
                    expected_revision: Some(stored.revision),
                }
            } else {
                Op::Update {
                    key: key.clone(),
                    object: new,
                    expected_revision: Some(stored.revision),
                }
            };
            let result = self.store.write(op).await;
            if result.is_ok() {
                self.services.release(&freed);
            } else {
                self.services.release(&reserved);
            }
            match result {
                Ok(stored) => {
                    return Ok(WriteOutcome {
                        object: stored.data,
                        warnings: Vec::new(),
                        created: false,
                    });
                }
                Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_))
                    if precondition.is_none() => {}
                Err(StoreError::Conflict { .. }) => return Err(ApiError::modified(r.rt, r.name)),
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(r.rt, r.name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            r.rt,
            r.name,
            "too many concurrent writes; please try again",
        ))
    }

    /// DELETE, honouring finalizers, graceful pod deletion, propagation
    /// policy and preconditions. Returns the object as it stands after the
    /// call (gone, or marked for deletion).
    pub async fn delete(&self, r: ObjectRef<'_>, opts: &DeleteOptions) -> ApiResult<Bytes> {
        let key = object_key(r.rt, r.namespace, r.name);
        for _ in 0..MAX_RETRIES {
            let (stored, current) = self.get_value(r)?;
            opts.check_preconditions(r, &stored, &current)?;
            let mut marked = current.clone();
            let meta = strategy::metadata_mut(&mut marked);
            let already_deleting = meta.get("deletionTimestamp").is_some_and(|t| !t.is_null());
            let original_finalizers: Vec<Value> = meta
                .get("finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let finalizers =
                gc_finalizers(&original_finalizers, opts.propagation_policy.as_deref());
            let graceful_pod = r.rt.kind == "Pod"
                && r.rt.group.is_empty()
                && self.pod_needs_grace(&current, opts.grace_period_seconds);
            let is_namespace = r.rt.kind == "Namespace" && r.rt.group.is_empty();
            if !finalizers.is_empty() || graceful_pod || is_namespace {
                if already_deleting && !graceful_pod && finalizers == original_finalizers {
                    return Ok(stored.data);
                }
                let grace = if graceful_pod {
                    opts.grace_period_seconds
                        .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
                        .unwrap_or(30)
                } else {
                    0
                };
                if !already_deleting {
                    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                    meta.insert(
                        "deletionTimestamp".into(),
                        json!(strategy::timestamp_rfc3339(at)),
                    );
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if finalizers != original_finalizers {
                    meta.insert("finalizers".into(), Value::Array(finalizers));
                }
                if is_namespace {
                    marked["status"]["phase"] = json!("Terminating");
                }
                if opts.dry_run {
                    return Ok(Bytes::from(serde_json::to_vec(&marked).unwrap_or_default()));
                }
                let write = self
                    .store
                    .write(Op::Update {
                        key: key.clone(),
                        object: marked,
                        expected_revision: Some(stored.revision),
                    })
                    .await;
                match write {
                    Ok(s) => {
                        if is_namespace {
                            self.namespace_deleted.notify_one();
                        }
                        return Ok(s.data);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(r.rt, r.name)),
                    Err(e) => return Err(e.into()),
                }
            }
            if opts.dry_run {
                return Ok(stored.data);
            }
            match self
                .store
                .write(Op::Delete {
                    key: key.clone(),
                    expected_revision: Some(stored.revision),
                })
                .await
            {
                Ok(s) => {
                    if is_service(r.rt) {
                        self.services.release(&Holdings::of(&current));
                    }
                    return Ok(s.data);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(r.rt, r.name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            r.rt,
            r.name,
            "too many concurrent writes; please try again",
        ))
    }

    /// `pods/binding`: puts an unbound Pod on a node and marks it
    /// `PodScheduled`, as kube-apiserver's BindingREST does. This is the
    /// one way a Pod's `spec.nodeName` changes (a plain update may not), so
    /// it writes the store directly instead of going through the update
    /// validation.
    pub async fn bind_pod(&self, r: ObjectRef<'_>, binding: &Value) -> ApiResult<()> {
        let Some(node) = binding["target"]["name"].as_str().filter(|n| !n.is_empty()) else {
            return Err(ApiError::invalid(
                r.rt,
                r.name,
                &[validation::FieldError::required("target.name", "")],
            ));
        };
        let key = object_key(r.rt, r.namespace, r.name);
        let binding_rt = r.rt;
        for _ in 0..MAX_RETRIES {
            let (stored, mut pod) = self.get_value(r)?;
            let fail = |why: String| Err(ApiError::conflict(binding_rt, r.name, &why));
            if let Some(uid) = binding["metadata"]["uid"]
                .as_str()
                .filter(|u| !u.is_empty())
                && pod["metadata"]["uid"].as_str() != Some(uid)
            {
                return fail(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    pod["metadata"]["uid"].as_str().unwrap_or("")
                ));
            }
            if pod["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null())
            {
                return fail(format!(
                    "pod {} is being deleted, cannot be assigned to a host",
                    r.name
                ));
            }
            if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return fail(format!(
                    "pod {} is already assigned to node {current:?}",
                    r.name
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let scheduled = json!({"type": "PodScheduled", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": strategy::now_rfc3339()});
            if !pod["status"].is_object() {
                pod["status"] = json!({});
            }
            match pod["status"]["conditions"].as_array_mut() {
                Some(conditions) => {
                    conditions.retain(|c| c["type"] != "PodScheduled");
                    conditions.push(scheduled);
                }
                None => pod["status"]["conditions"] = json!([scheduled]),
            }
            match self
                .store
                .write(Op::Update {
                    key: key.clone(),
                    object: pod,
                    expected_revision: Some(stored.revision),
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(r.rt, r.name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(
            r.rt,
            r.name,
            "too many concurrent writes; please try again",
        ))
    }

    /// A pod bound to a node is deleted gracefully: its node agent stops
    /// it and then removes it. Unbound and finished pods go at once, as do
    /// deletions with a zero grace period.
    fn pod_needs_grace(&self, pod: &Value, grace: Option<i64>) -> bool {
        let bound = pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        bound && !finished && grace != Some(0)
    }

    /// Items of a collection (after filters), for list and
    /// deletecollection.
    pub fn list(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        filters: &Filters,
        start: Option<&str>,
        limit: Option<usize>,
    ) -> ferry_store::ListPage {
        let prefix = collection_prefix(rt, namespace);
        self.store.list(&prefix, start, limit, |s| {
            filters.matches_bytes(rt, &s.data)
        })
    }
}

/// The finalizers an object keeps for the garbage collector under a
/// propagation policy, as kube-apiserver's
/// `deletionFinalizersForGarbageCollection`: Orphan and Foreground exclude
/// each other, and an explicit Background drops both.
fn gc_finalizers(current: &[Value], policy: Option<&str>) -> Vec<Value> {
    let (add, remove): (Option<&str>, &[&str]) = match policy {
        Some("Orphan") => (Some("orphan"), &["foregroundDeletion"]),
        Some("Foreground") => (Some("foregroundDeletion"), &["orphan"]),
        Some("Background") => (None, &["orphan", "foregroundDeletion"]),
        _ => (None, &[]),
    };
    let mut out: Vec<Value> = current
        .iter()
        .filter(|f| !remove.iter().any(|r| *f == r))
        .cloned()
        .collect();
    if let Some(a) = add
        && !out.iter().any(|f| f == a)
    {
        out.push(json!(a));
    }
    out
}

/// Parsed `DeleteOptions` (body or query).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn from_parts(body: Option<&Value>, query: &crate::http::Query) -> ApiResult<Self> {
        let mut o = DeleteOptions {
            grace_period_seconds: query.int("gracePeriodSeconds")?,
            propagation_policy: query.get("propagationPolicy").map(str::to_string),
            dry_run: query.get("dryRun") == Some("All"),
            ..Default::default()
        };
        if query.flag("orphanDependents") {
            o.propagation_policy = Some("Orphan".into());
        }
        if let Some(b) = body {
            if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period_seconds = Some(g);
            }
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation_policy = Some(p.to_string());
            }
            if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                o.propagation_policy = Some("Orphan".into());
            }
            if let Some(dr) = b.get("dryRun").and_then(Value::as_array) {
                o.dry_run |= dr.iter().any(|v| v == "All");
            }
            let pre = &b["preconditions"];
            o.precondition_uid = pre["uid"].as_str().map(str::to_string);
            o.precondition_resource_version = pre["resourceVersion"].as_str().map(str::to_string);
        }
        match o.propagation_policy.as_deref() {
            None | Some("Orphan" | "Foreground" | "Background") => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        }
        if o.grace_period_seconds.is_some_and(|g| g < 0) {
            o.grace_period_seconds = Some(0);
        }
        Ok(o)
    }

    fn check_preconditions(&self, r: ObjectRef<'_>, stored: &Stored, obj: &Value) -> ApiResult<()> {
        if let Some(uid) = &self.precondition_uid {
            let actual = obj["metadata"]["uid"].as_str().unwrap_or("");
            if uid != actual {
                return Err(ApiError::conflict(
                    r.rt,
                    r.name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &self.precondition_resource_version
            && *rv != stored.revision.to_string()
        {
            return Err(ApiError::conflict(
                r.rt,
                r.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    stored.revision
                ),
            ));
        }
        Ok(())
    }
}

/// Parses a request body as JSON or YAML, by content type.
pub fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the YAML body is not valid UTF-8"))?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}"))
            })
        }
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode the protobuf body: {e}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_policies_exclude_each_other() {
        let both = [
            json!("orphan"),
            json!("foregroundDeletion"),
            json!("example.com/x"),
        ];
        assert_eq!(
            gc_finalizers(&both, Some("Orphan")),
            [json!("orphan"), json!("example.com/x")]
        );
        assert_eq!(
            gc_finalizers(&both, Some("Foreground")),
            [json!("foregroundDeletion"), json!("example.com/x")]
        );
        assert_eq!(
            gc_finalizers(&both, Some("Background")),
            [json!("example.com/x")]
        );
        assert_eq!(gc_finalizers(&both, None), both);
        assert_eq!(gc_finalizers(&[], Some("Orphan")), [json!("orphan")]);
    }
}
