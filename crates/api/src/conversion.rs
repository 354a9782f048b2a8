//! Conversion between the served versions of Ingress.
//!
//! Ferry stores Ingress as `networking.k8s.io/v1` only, but serves it in the
//! pre-1.22 versions too, `extensions/v1beta1` and `networking.k8s.io/v1beta1`,
//! so old manifests keep applying. The API server converts a legacy request
//! body with [`ingress_to_v1`] before defaulting, validation and storage, and
//! converts what it reads back with [`ingress_from_v1`] when a client GETs,
//! LISTs or WATCHes through a legacy version; [`deprecation_warning`] gives
//! the `Warning` header text for such requests.
//!
//! The rules follow k8s.io/kubernetes `pkg/apis/networking/v1beta1` (and the
//! identical `extensions/v1beta1`) conversion and defaulting:
//! * spec-level `backend` is v1's `spec.defaultBackend`;
//! * a backend's `serviceName`/`servicePort` is v1's
//!   `service: {name, port: {number} | {name}}`, the IntOrString port
//!   choosing `number` or `name`; `resource` backends are the same in both;
//! * a path without `pathType` gets `ImplementationSpecific`;
//! * everything else (metadata, `ingressClassName`, `tls`, `rules[].host`,
//!   `status.loadBalancer`) has the same JSON shape and is copied unchanged.
//!
//! The conversion works on JSON rather than typed structs so that fields it
//! does not know about survive, and key order is kept where a field maps
//! one-to-one, so `kubectl get -o yaml` output reads as the user wrote it.

use serde_json::{Map, Value};

/// The kind this module converts.
pub const INGRESS_KIND: &str = "Ingress";
/// The version Ingress is stored in.
pub const NETWORKING_V1: &str = "networking.k8s.io/v1";
/// Legacy version, deprecated in 1.19 and removed upstream in 1.22.
pub const NETWORKING_V1BETA1: &str = "networking.k8s.io/v1beta1";
/// Legacy version, deprecated in 1.14 and removed upstream in 1.22.
pub const EXTENSIONS_V1BETA1: &str = "extensions/v1beta1";

/// The path type a legacy path without `pathType` gets (upstream's
/// `SetDefaults_HTTPIngressPath`).
const DEFAULT_PATH_TYPE: &str = "ImplementationSpecific";

/// Why an Ingress could not be converted.
///
/// `object` is `namespace/name` (or just the name, or `<unnamed>`) so the
/// message says which Ingress was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// The document is not a JSON object at all.
    #[error("Ingress must be a JSON object, got {found}")]
    NotAnObject { found: &'static str },
    /// `kind` is present but is not `Ingress`.
    #[error("ingress {object}: kind {kind} cannot be converted as an Ingress")]
    WrongKind { object: String, kind: String },
    /// A legacy object to convert carries no `apiVersion`, so its shape is unknown.
    #[error("ingress {object}: apiVersion is missing; expected one of {expected}")]
    MissingApiVersion {
        object: String,
        expected: &'static str,
    },
    /// An apiVersion this conversion does not handle (in the object, or as
    /// the requested target).
    #[error(
        "ingress {object}: apiVersion {api_version} is not supported; expected one of {expected}"
    )]
    UnsupportedApiVersion {
        object: String,
        api_version: String,
        expected: &'static str,
    },
    /// A field does not have the shape its version requires.
    #[error("ingress {object}: {field}: {reason}")]
    InvalidField {
        object: String,
        field: String,
        reason: String,
    },
}

/// Converts an Ingress from `extensions/v1beta1` or `networking.k8s.io/v1beta1` to `networking.k8s.io/v1` (the stored version).
///
/// A `networking.k8s.io/v1` object is returned unchanged apart from `kind`
/// being set, so callers may pass any served version. Unknown fields are kept.
pub fn ingress_to_v1(obj: &Value) -> Result<Value, ConversionError> {
    let map = as_ingress_object(obj)?;
    let object = object_label(map);
    const EXPECTED: &str = "extensions/v1beta1, networking.k8s.io/v1beta1, networking.k8s.io/v1";
    let source = match map.get("apiVersion") {
        None | Some(Value::Null) => {
            return Err(ConversionError::MissingApiVersion {
                object,
                expected: EXPECTED,
            });
        }
        Some(value) => {
            IngressVersion::parse(value).ok_or_else(|| ConversionError::UnsupportedApiVersion {
                object: object.clone(),
                api_version: display_json(value),
                expected: EXPECTED,
            })?
        }
    };
    if source == IngressVersion::V1 {
        return Ok(Value::Object(with_type_meta(map, NETWORKING_V1)));
    }
    let converter = Converter {
        object,
        legacy: source.api_version(),
        direction: Direction::ToV1,
    };
    converter.convert(map, NETWORKING_V1)
}

/// Converts a stored v1 Ingress to the requested apiVersion (`networking.k8s.io/v1`, `networking.k8s.io/v1beta1` or `extensions/v1beta1`), for GET/LIST/WATCH through a legacy version.
///
/// The input may omit `apiVersion` (it can only be v1); if present it must
/// be `networking.k8s.io/v1`. v1 port fields without a v1beta1 equivalent
/// (unknown keys inside `service` or `service.port`) are dropped, as
/// upstream's typed conversion drops them.
pub fn ingress_from_v1(obj: &Value, api_version: &str) -> Result<Value, ConversionError> {
    let map = as_ingress_object(obj)?;
    let object = object_label(map);
    let target =
        IngressVersion::parse(&Value::String(api_version.to_owned())).ok_or_else(|| {
            ConversionError::UnsupportedApiVersion {
                object: object.clone(),
                api_version: api_version.to_owned(),
                expected: "networking.k8s.io/v1, networking.k8s.io/v1beta1, extensions/v1beta1",
            }
        })?;
    match map.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(stored)) if stored == NETWORKING_V1 => {}
        Some(other) => {
            return Err(ConversionError::UnsupportedApiVersion {
                object,
                api_version: display_json(other),
                expected: NETWORKING_V1,
            });
        }
    }
    if target == IngressVersion::V1 {
        return Ok(Value::Object(with_type_meta(map, NETWORKING_V1)));
    }
    let converter = Converter {
        object,
        legacy: target.api_version(),
        direction: Direction::FromV1,
    };
    converter.convert(map, target.api_version())
}

/// Kubernetes' deprecation warning text for a legacy group/version of Ingress, e.g. for extensions/v1beta1: "extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in v1.22+; use networking.k8s.io/v1 Ingress" and for networking.k8s.io/v1beta1: "networking.k8s.io/v1beta1 Ingress is deprecated in v1.19+, unavailable in v1.22+; use networking.k8s.io/v1 Ingress".
///
/// Returns `None` for every other group, version or kind.
pub fn deprecation_warning(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    match (group, version, kind) {
        ("extensions", "v1beta1", INGRESS_KIND) => Some(
            "extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in v1.22+; use networking.k8s.io/v1 Ingress",
        ),
        ("networking.k8s.io", "v1beta1", INGRESS_KIND) => Some(
            "networking.k8s.io/v1beta1 Ingress is deprecated in v1.19+, unavailable in v1.22+; use networking.k8s.io/v1 Ingress",
        ),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngressVersion {
    V1,
    NetworkingV1beta1,
    ExtensionsV1beta1,
}

impl IngressVersion {
    fn parse(api_version: &Value) -> Option<Self> {
        match api_version.as_str()? {
            NETWORKING_V1 => Some(Self::V1),
            NETWORKING_V1BETA1 => Some(Self::NetworkingV1beta1),
            EXTENSIONS_V1BETA1 => Some(Self::ExtensionsV1beta1),
            _ => None,
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Self::V1 => NETWORKING_V1,
            Self::NetworkingV1beta1 => NETWORKING_V1BETA1,
            Self::ExtensionsV1beta1 => EXTENSIONS_V1BETA1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Legacy → v1: the request path.
    ToV1,
    /// v1 → legacy: the read path.
    FromV1,
}

/// One conversion of one object; carries what error messages need.
struct Converter {
    object: String,
    /// The legacy apiVersion on the other side of the conversion.
    legacy: &'static str,
    direction: Direction,
}

impl Converter {
    fn invalid(&self, field: &str, reason: impl Into<String>) -> ConversionError {
        ConversionError::InvalidField {
            object: self.object.clone(),
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// The apiVersion of the input, for "not a field of ..." messages.
    fn source_version(&self) -> &'static str {
        match self.direction {
            Direction::ToV1 => self.legacy,
            Direction::FromV1 => NETWORKING_V1,
        }
    }

    fn convert(
        &self,
        map: &Map<String, Value>,
        api_version: &str,
    ) -> Result<Value, ConversionError> {
        let mut out = type_meta(api_version);
        for (key, value) in map {
            match key.as_str() {
                "apiVersion" | "kind" => {}
                "spec" => {
                    out.insert(key.clone(), self.spec(value)?);
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn spec(&self, spec: &Value) -> Result<Value, ConversionError> {
        let spec = match spec {
            Value::Null => return Ok(Value::Null),
            Value::Object(spec) => spec,
            other => return Err(self.invalid("spec", must_be("an object", other))),
        };
        let (from_key, to_key) = match self.direction {
            Direction::ToV1 => ("backend", "defaultBackend"),
            Direction::FromV1 => ("defaultBackend", "backend"),
        };
        if spec.get(to_key).is_some_and(|v| !v.is_null()) {
            return Err(self.invalid(
                &format!("spec.{to_key}"),
                format!(
                    "not a field of {} Ingress; use spec.{from_key}",
                    self.source_version()
                ),
            ));
        }
        let mut out = Map::new();
        for (key, value) in spec {
            match key.as_str() {
                k if k == to_key => {}
                k if k == from_key => {
                    if !value.is_null() {
                        let field = format!("spec.{from_key}");
                        out.insert(to_key.to_owned(), self.backend(value, &field)?);
                    }
                }
                "rules" => {
                    out.insert(key.clone(), self.rules(value)?);
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn rules(&self, rules: &Value) -> Result<Value, ConversionError> {
        let rules = match rules {
            Value::Null => return Ok(Value::Null),
            Value::Array(rules) => rules,
            other => return Err(self.invalid("spec.rules", must_be("an array", other))),
        };
        let mut out = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            let field = format!("spec.rules[{index}]");
            let rule = match rule {
                Value::Object(rule) => rule,
                other => return Err(self.invalid(&field, must_be("an object", other))),
            };
            let mut converted = Map::new();
            for (key, value) in rule {
                let value = if key == "http" {
                    self.http_rule(value, &format!("{field}.http"))?
                } else {
                    value.clone()
                };
                converted.insert(key.clone(), value);
            }
            out.push(Value::Object(converted));
        }
        Ok(Value::Array(out))
    }

    fn http_rule(&self, http: &Value, field: &str) -> Result<Value, ConversionError> {
        let http = match http {
            Value::Null => return Ok(Value::Null),
            Value::Object(http) => http,
            other => return Err(self.invalid(field, must_be("an object", other))),
        };
        let mut out = Map::new();
        for (key, value) in http {
            let value = if key == "paths" {
                self.paths(value, &format!("{field}.paths"))?
            } else {
                value.clone()
            };
            out.insert(key.clone(), value);
        }
        Ok(Value::Object(out))
    }

    fn paths(&self, paths: &Value, field: &str) -> Result<Value, ConversionError> {
        let paths = match paths {
            Value::Null => return Ok(Value::Null),
            Value::Array(paths) => paths,
            other => return Err(self.invalid(field, must_be("an array", other))),
        };
        let mut out = Vec::with_capacity(paths.len());
        for (index, path) in paths.iter().enumerate() {
            out.push(self.path(path, &format!("{field}[{index}]"))?);
        }
        Ok(Value::Array(out))
    }

    /// One HTTPIngressPath, rebuilt in upstream's field order (path,
    /// pathType, backend) so a defaulted `pathType` lands next to `path`.
    fn path(&self, path: &Value, field: &str) -> Result<Value, ConversionError> {
        let path = match path {
            Value::Object(path) => path,
            other => return Err(self.invalid(field, must_be("an object", other))),
        };
        let mut out = Map::new();
        if let Some(value) = path.get("path") {
            out.insert("path".to_owned(), value.clone());
        }
        match path.get("pathType") {
            Some(Value::Null) | None if self.direction == Direction::ToV1 => {
                out.insert(
                    "pathType".to_owned(),
                    Value::String(DEFAULT_PATH_TYPE.to_owned()),
                );
            }
            Some(value) => {
                out.insert("pathType".to_owned(), value.clone());
            }
            None => {}
        }
        match path.get("backend") {
            None => {}
            Some(Value::Null) => {
                out.insert("backend".to_owned(), Value::Null);
            }
            Some(backend) => {
                let backend = self.backend(backend, &format!("{field}.backend"))?;
                out.insert("backend".to_owned(), backend);
            }
        }
        for (key, value) in path {
            if !matches!(key.as_str(), "path" | "pathType" | "backend") {
                out.insert(key.clone(), value.clone());
            }
        }
        Ok(Value::Object(out))
    }

    fn backend(&self, backend: &Value, field: &str) -> Result<Value, ConversionError> {
        let backend = match backend {
            Value::Object(backend) => backend,
            other => return Err(self.invalid(field, must_be("an object", other))),
        };
        let (service, foreign_keys, service_keys): (Option<_>, &[&str], &[&str]) =
            match self.direction {
                Direction::ToV1 => (
                    self.legacy_service_to_v1(backend, field)?,
                    &["service"],
                    &["serviceName", "servicePort"],
                ),
                Direction::FromV1 => (
                    self.v1_service_to_legacy(backend, field)?,
                    &["serviceName", "servicePort"],
                    &["service"],
                ),
            };
        if let Some(key) = foreign_keys.iter().find(|k| backend.contains_key(**k)) {
            let hint = match self.direction {
                Direction::ToV1 => "use serviceName and servicePort",
                Direction::FromV1 => "use service",
            };
            return Err(self.invalid(
                &format!("{field}.{key}"),
                format!(
                    "not a field of {} IngressBackend; {hint}",
                    self.source_version()
                ),
            ));
        }
        let has_resource = backend.get("resource").is_some_and(|r| !r.is_null());
        if service.is_some() && has_resource {
            let service_fields = match self.direction {
                Direction::ToV1 => "serviceName/servicePort",
                Direction::FromV1 => "service",
            };
            return Err(self.invalid(
                field,
                format!(
                    "cannot set both a service backend ({service_fields}) and a resource backend"
                ),
            ));
        }

        // The service fields are replaced where the first of them stood, so
        // the converted backend keeps the author's order.
        let mut service = service;
        let mut out = Map::new();
        for (key, value) in backend {
            if service_keys.contains(&key.as_str()) {
                if let Some(fields) = service.take() {
                    out.extend(fields);
                }
            } else if key == "resource" && value.is_null() {
                // An explicit null means "no resource backend"; drop it.
            } else {
                out.insert(key.clone(), value.clone());
            }
        }
        Ok(Value::Object(out))
    }

    /// `serviceName`/`servicePort` → `service: {name, port}`; `None` when
    /// neither is set. A missing half stays missing, for validation to report.
    fn legacy_service_to_v1(
        &self,
        backend: &Map<String, Value>,
        field: &str,
    ) -> Result<Option<Map<String, Value>>, ConversionError> {
        let name = match backend.get("serviceName") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(other) => {
                return Err(
                    self.invalid(&format!("{field}.serviceName"), must_be("a string", other))
                );
            }
        };
        let port = match backend.get("servicePort") {
            None | Some(Value::Null) => None,
            Some(Value::String(port_name)) => {
                Some(single("name", Value::String(port_name.clone())))
            }
            Some(Value::Number(number)) if is_int32(number) => {
                Some(single("number", Value::Number(number.clone())))
            }
            Some(other) => {
                return Err(self.invalid(
                    &format!("{field}.servicePort"),
                    must_be("an int32 port number or a port name (IntOrString)", other),
                ));
            }
        };
        if name.is_none() && port.is_none() {
            return Ok(None);
        }
        let mut service = Map::new();
        if let Some(name) = name {
            service.insert("name".to_owned(), Value::String(name));
        }
        if let Some(port) = port {
            service.insert("port".to_owned(), Value::Object(port));
        }
        Ok(Some(single("service", Value::Object(service))))
    }

    /// `service: {name, port}` → `serviceName`/`servicePort`; `None` when
    /// there is no service.
    fn v1_service_to_legacy(
        &self,
        backend: &Map<String, Value>,
        field: &str,
    ) -> Result<Option<Map<String, Value>>, ConversionError> {
        let field = format!("{field}.service");
        let service = match backend.get("service") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(service)) => service,
            Some(other) => return Err(self.invalid(&field, must_be("an object", other))),
        };
        let mut out = Map::new();
        match service.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) => {
                out.insert("serviceName".to_owned(), Value::String(name.clone()));
            }
            Some(other) => {
                return Err(self.invalid(&format!("{field}.name"), must_be("a string", other)));
            }
        }
        let port_field = format!("{field}.port");
        let port = match service.get("port") {
            None | Some(Value::Null) => return Ok(Some(out)),
            Some(Value::Object(port)) => port,
            Some(other) => return Err(self.invalid(&port_field, must_be("an object", other))),
        };
        let name = match port.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(other) => {
                return Err(self.invalid(&format!("{port_field}.name"), must_be("a string", other)));
            }
        };
        let number = match port.get("number") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) if is_int32(number) => Some(number),
            Some(other) => {
                return Err(
                    self.invalid(&format!("{port_field}.number"), must_be("an int32", other))
                );
            }
        };
        let service_port = match (name, number) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    &port_field,
                    "cannot set both name and number; servicePort holds only one",
                ));
            }
            (Some(name), None) => Value::String(name.clone()),
            (None, Some(number)) => Value::Number(number.clone()),
            (None, None) => return Ok(Some(out)),
        };
        out.insert("servicePort".to_owned(), service_port);
        Ok(Some(out))
    }
}

fn as_ingress_object(obj: &Value) -> Result<&Map<String, Value>, ConversionError> {
    let map = obj.as_object().ok_or(ConversionError::NotAnObject {
        found: json_type(obj),
    })?;
    match map.get("kind") {
        None | Some(Value::Null) => Ok(map),
        Some(Value::String(kind)) if kind == INGRESS_KIND => Ok(map),
        Some(other) => Err(ConversionError::WrongKind {
            object: object_label(map),
            kind: display_json(other),
        }),
    }
}

/// `namespace/name`, as the API server names objects in messages.
fn object_label(map: &Map<String, Value>) -> String {
    let metadata = map.get("metadata");
    let field = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (field("namespace"), field("name")) {
        (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (None, Some(name)) => name.to_owned(),
        (_, None) => "<unnamed>".to_owned(),
    }
}

fn type_meta(api_version: &str) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "apiVersion".to_owned(),
        Value::String(api_version.to_owned()),
    );
    out.insert("kind".to_owned(), Value::String(INGRESS_KIND.to_owned()));
    out
}

/// A copy of `map` with apiVersion and kind set (and first).
fn with_type_meta(map: &Map<String, Value>, api_version: &str) -> Map<String, Value> {
    let mut out = type_meta(api_version);
    for (key, value) in map {
        if key != "apiVersion" && key != "kind" {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

fn single(key: &str, value: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    map
}

/// IntOrString and ServiceBackendPort.number are int32 upstream.
fn is_int32(number: &serde_json::Number) -> bool {
    number.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn must_be(expected: &str, found: &Value) -> String {
    format!("must be {expected}, got {}", display_json(found))
}

/// A value as JSON text, shortened so a huge value cannot flood a message.
fn display_json(value: &Value) -> String {
    const LIMIT: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= LIMIT {
        text
    } else {
        let mut short: String = text.chars().take(LIMIT).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The legacy manifest from issue 3: two hosts, TLS, and
    /// serviceName/servicePort backends with numeric and named ports.
    fn legacy_manifest() -> Value {
        json!({
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {
                "name": "legacy",
                "namespace": "default",
                "annotations": {"kubernetes.io/ingress.class": "ferry"}
            },
            "spec": {
                "backend": {"serviceName": "fallback", "servicePort": 80},
                "tls": [
                    {"hosts": ["foo.example.com", "bar.example.com"], "secretName": "example-tls"}
                ],
                "rules": [
                    {
                        "host": "foo.example.com",
                        "http": {"paths": [
                            {"path": "/", "backend": {"serviceName": "foo", "servicePort": 8080}},
                            {"path": "/api", "pathType": "Prefix",
                             "backend": {"serviceName": "foo-api", "servicePort": "http"}}
                        ]}
                    },
                    {
                        "host": "bar.example.com",
                        "http": {"paths": [
                            {"backend": {"serviceName": "bar", "servicePort": "web"}}
                        ]}
                    }
                ]
            }
        })
    }

    fn expected_v1() -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "legacy",
                "namespace": "default",
                "annotations": {"kubernetes.io/ingress.class": "ferry"}
            },
            "spec": {
                "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                "tls": [
                    {"hosts": ["foo.example.com", "bar.example.com"], "secretName": "example-tls"}
                ],
                "rules": [
                    {
                        "host": "foo.example.com",
                        "http": {"paths": [
                            {"path": "/", "pathType": "ImplementationSpecific",
                             "backend": {"service": {"name": "foo", "port": {"number": 8080}}}},
                            {"path": "/api", "pathType": "Prefix",
                             "backend": {"service": {"name": "foo-api", "port": {"name": "http"}}}}
                        ]}
                    },
                    {
                        "host": "bar.example.com",
                        "http": {"paths": [
                            {"pathType": "ImplementationSpecific",
                             "backend": {"service": {"name": "bar", "port": {"name": "web"}}}}
                        ]}
                    }
                ]
            }
        })
    }

    /// Equality including key order (serde_json's Map equality ignores order).
    fn assert_same(actual: &Value, expected: &Value) {
        assert_eq!(
            serde_json::to_string_pretty(actual).unwrap(),
            serde_json::to_string_pretty(expected).unwrap()
        );
    }

    #[test]
    fn legacy_manifest_converts_to_v1() {
        assert_same(&ingress_to_v1(&legacy_manifest()).unwrap(), &expected_v1());
    }

    #[test]
    fn networking_v1beta1_converts_like_extensions() {
        let mut legacy = legacy_manifest();
        legacy["apiVersion"] = json!("networking.k8s.io/v1beta1");
        assert_same(&ingress_to_v1(&legacy).unwrap(), &expected_v1());
    }

    #[test]
    fn legacy_round_trip_fills_path_type() {
        for version in [EXTENSIONS_V1BETA1, NETWORKING_V1BETA1] {
            let mut legacy = legacy_manifest();
            legacy["apiVersion"] = json!(version);
            let back = ingress_from_v1(&ingress_to_v1(&legacy).unwrap(), version).unwrap();

            let mut expected = legacy.clone();
            expected["spec"]["rules"][0]["http"]["paths"][0] = json!({"path": "/", "pathType": "ImplementationSpecific",
                       "backend": {"serviceName": "foo", "servicePort": 8080}});
            expected["spec"]["rules"][1]["http"]["paths"][0] = json!({"pathType": "ImplementationSpecific",
                       "backend": {"serviceName": "bar", "servicePort": "web"}});
            assert_same(&back, &expected);
        }
    }

    #[test]
    fn v1_with_named_port_converts_to_extensions() {
        let v1 = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42"},
            "spec": {
                "ingressClassName": "ferry",
                "defaultBackend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "static"}},
                "rules": [{"host": "shop.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Exact",
                     "backend": {"service": {"name": "web", "port": {"name": "https"}}}}
                ]}}]
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10", "ports": [{"port": 443, "protocol": "TCP"}]}
            ]}}
        });
        let legacy = ingress_from_v1(&v1, EXTENSIONS_V1BETA1).unwrap();
        let expected = json!({
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42"},
            "spec": {
                "ingressClassName": "ferry",
                "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "static"}},
                "rules": [{"host": "shop.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Exact",
                     "backend": {"serviceName": "web", "servicePort": "https"}}
                ]}}]
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10", "ports": [{"port": 443, "protocol": "TCP"}]}
            ]}}
        });
        assert_same(&legacy, &expected);
        assert_same(&ingress_to_v1(&legacy).unwrap(), &v1);
    }

    #[test]
    fn v1_is_served_unchanged() {
        let v1 = expected_v1();
        assert_same(&ingress_from_v1(&v1, NETWORKING_V1).unwrap(), &v1);
        assert_same(&ingress_to_v1(&v1).unwrap(), &v1);
    }

    #[test]
    fn deprecation_warnings_match_kubernetes() {
        assert_eq!(
            deprecation_warning("extensions", "v1beta1", "Ingress"),
            Some(
                "extensions/v1beta1 Ingress is deprecated in v1.14+, unavailable in v1.22+; use networking.k8s.io/v1 Ingress"
            )
        );
        assert_eq!(
            deprecation_warning("networking.k8s.io", "v1beta1", "Ingress"),
            Some(
                "networking.k8s.io/v1beta1 Ingress is deprecated in v1.19+, unavailable in v1.22+; use networking.k8s.io/v1 Ingress"
            )
        );
        assert_eq!(
            deprecation_warning("networking.k8s.io", "v1", "Ingress"),
            None
        );
        assert_eq!(
            deprecation_warning("extensions", "v1beta1", "Deployment"),
            None
        );
        assert_eq!(deprecation_warning("", "v1", "Service"), None);
    }

    fn legacy_with_backend(backend: Value) -> Value {
        json!({
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": backend}]}}]}
        })
    }

    #[test]
    fn invalid_input_is_refused_with_a_clear_message() {
        let cases = [
            (
                json!("Ingress"),
                "Ingress must be a JSON object, got a string",
            ),
            (
                json!({"kind": "Ingress", "metadata": {"name": "x"}}),
                "ingress x: apiVersion is missing; expected one of extensions/v1beta1, networking.k8s.io/v1beta1, networking.k8s.io/v1",
            ),
            (
                json!({"apiVersion": "networking.k8s.io/v2", "kind": "Ingress"}),
                "ingress <unnamed>: apiVersion \"networking.k8s.io/v2\" is not supported; expected one of extensions/v1beta1, networking.k8s.io/v1beta1, networking.k8s.io/v1",
            ),
            (
                json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment"}),
                "ingress <unnamed>: kind \"Deployment\" cannot be converted as an Ingress",
            ),
            (
                legacy_with_backend(json!({
                    "serviceName": "web", "servicePort": 80,
                    "resource": {"kind": "StorageBucket", "name": "b"}
                })),
                "ingress default/bad: spec.rules[0].http.paths[0].backend: cannot set both a service backend (serviceName/servicePort) and a resource backend",
            ),
            (
                legacy_with_backend(json!({"serviceName": "web", "servicePort": true})),
                "ingress default/bad: spec.rules[0].http.paths[0].backend.servicePort: must be an int32 port number or a port name (IntOrString), got true",
            ),
            (
                legacy_with_backend(json!({"serviceName": "web", "servicePort": 80.5})),
                "ingress default/bad: spec.rules[0].http.paths[0].backend.servicePort: must be an int32 port number or a port name (IntOrString), got 80.5",
            ),
            (
                legacy_with_backend(json!({"serviceName": 7, "servicePort": 80})),
                "ingress default/bad: spec.rules[0].http.paths[0].backend.serviceName: must be a string, got 7",
            ),
            (
                legacy_with_backend(json!({"service": {"name": "web", "port": {"number": 80}}})),
                "ingress default/bad: spec.rules[0].http.paths[0].backend.service: not a field of extensions/v1beta1 IngressBackend; use serviceName and servicePort",
            ),
            (
                json!({"apiVersion": "networking.k8s.io/v1beta1", "metadata": {"name": "m"},
                       "spec": {"defaultBackend": {"serviceName": "a", "servicePort": 1}}}),
                "ingress m: spec.defaultBackend: not a field of networking.k8s.io/v1beta1 Ingress; use spec.backend",
            ),
            (
                json!({"apiVersion": "extensions/v1beta1", "spec": {"rules": {"host": "a"}}}),
                "ingress <unnamed>: spec.rules: must be an array, got {\"host\":\"a\"}",
            ),
        ];
        for (input, message) in cases {
            let error = ingress_to_v1(&input).unwrap_err();
            assert_eq!(error.to_string(), message, "input: {input}");
        }
    }

    #[test]
    fn invalid_stored_objects_are_refused() {
        let v1 = |backend: Value| {
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "s", "namespace": "ns"},
                "spec": {"defaultBackend": backend}
            })
        };
        let cases = [
            (
                v1(json!({"service": {"name": "a", "port": {"number": 80}},
                          "resource": {"kind": "K", "name": "n"}})),
                "ingress ns/s: spec.defaultBackend: cannot set both a service backend (service) and a resource backend",
            ),
            (
                v1(json!({"service": {"name": "a", "port": {"number": 80, "name": "http"}}})),
                "ingress ns/s: spec.defaultBackend.service.port: cannot set both name and number; servicePort holds only one",
            ),
            (
                v1(json!({"service": {"name": "a", "port": {"number": 4_294_967_296_u64}}})),
                "ingress ns/s: spec.defaultBackend.service.port.number: must be an int32, got 4294967296",
            ),
            (
                v1(json!({"serviceName": "a", "servicePort": 80})),
                "ingress ns/s: spec.defaultBackend.serviceName: not a field of networking.k8s.io/v1 IngressBackend; use service",
            ),
        ];
        for (input, message) in cases {
            let error = ingress_from_v1(&input, NETWORKING_V1BETA1).unwrap_err();
            assert_eq!(error.to_string(), message, "input: {input}");
        }

        let error = ingress_from_v1(&expected_v1(), "extensions/v1").unwrap_err();
        assert!(matches!(
            error,
            ConversionError::UnsupportedApiVersion { .. }
        ));
        let error = ingress_from_v1(&legacy_manifest(), NETWORKING_V1BETA1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ingress default/legacy: apiVersion \"extensions/v1beta1\" is not supported; expected one of networking.k8s.io/v1"
        );
    }

    #[test]
    fn backend_without_service_or_resource_stays_empty() {
        let v1 = ingress_to_v1(&legacy_with_backend(json!({}))).unwrap();
        assert_eq!(
            v1["spec"]["rules"][0]["http"]["paths"][0]["backend"],
            json!({})
        );
        // A port without a name (or the reverse) is kept for validation to report.
        let v1 = ingress_to_v1(&legacy_with_backend(json!({"servicePort": 0}))).unwrap();
        assert_eq!(
            v1["spec"]["rules"][0]["http"]["paths"][0]["backend"],
            json!({"service": {"port": {"number": 0}}})
        );
    }

    // --- property tests -------------------------------------------------

    /// Keys that steer arbitrary JSON into the converter's interesting paths.
    const KEYS: &[&str] = &[
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "spec",
        "status",
        "backend",
        "defaultBackend",
        "rules",
        "host",
        "http",
        "paths",
        "path",
        "pathType",
        "service",
        "serviceName",
        "servicePort",
        "port",
        "number",
        "resource",
        "tls",
        "x",
    ];

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(vec![
                "Ingress",
                "extensions/v1beta1",
                "networking.k8s.io/v1beta1",
                "networking.k8s.io/v1",
                "http",
                "",
            ])
            .prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(
                    |entries| {
                        Value::Object(
                            entries
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect(),
                        )
                    }
                ),
            ]
        })
    }

    /// Arbitrary JSON placed where an Ingress keeps its backends, so the
    /// deep code paths see garbage too.
    fn arbitrary_ingress() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec![EXTENSIONS_V1BETA1, NETWORKING_V1BETA1, NETWORKING_V1]),
            prop::sample::select(vec!["backend", "defaultBackend"]),
            arbitrary_json(),
            arbitrary_json(),
            arbitrary_json(),
        )
            .prop_map(
                |(api_version, backend_key, spec_backend, path, path_backend)| {
                    let mut spec = Map::new();
                    spec.insert(backend_key.to_owned(), spec_backend);
                    spec.insert(
                        "rules".to_owned(),
                        json!([{"http": {"paths": [path, {"backend": path_backend}]}}]),
                    );
                    json!({"apiVersion": api_version, "kind": "Ingress", "spec": spec})
                },
            )
    }

    fn v1_backend() -> impl Strategy<Value = Value> {
        let port = prop_oneof![
            (1..=65535_i64).prop_map(|n| json!({"number": n})),
            "[a-z][a-z0-9-]{0,14}".prop_map(|n| json!({"name": n})),
        ];
        prop_oneof![
            ("[a-z][a-z0-9-]{0,20}", port)
                .prop_map(|(name, port)| json!({"service": {"name": name, "port": port}})),
            ("[a-z.]{0,12}", "[A-Z][a-zA-Z]{0,10}", "[a-z]{1,10}").prop_map(
                |(group, kind, name)| {
                    json!({"resource": {"apiGroup": group, "kind": kind, "name": name}})
                }
            ),
        ]
    }

    fn v1_path() -> impl Strategy<Value = Value> {
        (
            prop::option::of("/[a-z/]{0,10}"),
            prop::sample::select(vec!["Exact", "Prefix", "ImplementationSpecific"]),
            v1_backend(),
        )
            .prop_map(|(path, path_type, backend)| {
                let mut out = Map::new();
                if let Some(path) = path {
                    out.insert("path".to_owned(), json!(path));
                }
                out.insert("pathType".to_owned(), json!(path_type));
                out.insert("backend".to_owned(), backend);
                Value::Object(out)
            })
    }

    fn v1_rule() -> impl Strategy<Value = Value> {
        (
            prop::option::of("[a-z]{1,8}\\.example\\.com"),
            prop::collection::vec(v1_path(), 1..4),
        )
            .prop_map(|(host, paths)| {
                let mut out = Map::new();
                if let Some(host) = host {
                    out.insert("host".to_owned(), json!(host));
                }
                out.insert("http".to_owned(), json!({"paths": paths}));
                Value::Object(out)
            })
    }

    fn v1_ingress() -> impl Strategy<Value = Value> {
        (
            "[a-z][a-z0-9-]{0,20}",
            prop::option::of("[a-z]{1,10}"),
            prop::option::of(v1_backend()),
            prop::collection::vec(
                (
                    prop::collection::vec("[a-z]{1,8}\\.example\\.com", 0..3),
                    "[a-z-]{1,12}",
                ),
                0..3,
            ),
            prop::collection::vec(v1_rule(), 0..4),
            prop::option::of(prop::collection::vec(
                prop_oneof![
                    "192\\.0\\.2\\.[0-9]{1,2}".prop_map(|ip| json!({"ip": ip})),
                    "[a-z]{1,8}\\.lb\\.example".prop_map(|h| json!({"hostname": h})),
                ],
                0..3,
            )),
        )
            .prop_map(|(name, class, default_backend, tls, rules, lb)| {
                let mut spec = Map::new();
                if let Some(class) = class {
                    spec.insert("ingressClassName".to_owned(), json!(class));
                }
                if let Some(backend) = default_backend {
                    spec.insert("defaultBackend".to_owned(), backend);
                }
                if !tls.is_empty() {
                    let tls: Vec<Value> = tls
                        .into_iter()
                        .map(|(hosts, secret)| json!({"hosts": hosts, "secretName": secret}))
                        .collect();
                    spec.insert("tls".to_owned(), Value::Array(tls));
                }
                spec.insert("rules".to_owned(), Value::Array(rules));
                let mut ingress = json!({
                    "apiVersion": NETWORKING_V1,
                    "kind": "Ingress",
                    "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                    "spec": spec,
                });
                if let Some(lb) = lb {
                    ingress["status"] = json!({"loadBalancer": {"ingress": lb}});
                }
                ingress
            })
    }

    proptest! {
        #[test]
        fn conversion_never_panics_on_arbitrary_json(value in arbitrary_json()) {
            let _ = ingress_to_v1(&value);
            for version in [NETWORKING_V1, NETWORKING_V1BETA1, EXTENSIONS_V1BETA1, "v1"] {
                let _ = ingress_from_v1(&value, version);
            }
        }

        #[test]
        fn conversion_never_panics_on_malformed_ingress(value in arbitrary_ingress()) {
            if let Ok(v1) = ingress_to_v1(&value) {
                prop_assert_eq!(&v1["apiVersion"], &json!(NETWORKING_V1));
            }
            // The read path accepts objects without apiVersion, so reach its
            // deep paths for every shape too.
            let mut stored = value.clone();
            if let Some(map) = stored.as_object_mut() {
                map.shift_remove("apiVersion");
            }
            for version in [NETWORKING_V1, NETWORKING_V1BETA1, EXTENSIONS_V1BETA1] {
                let _ = ingress_from_v1(&value, version);
                let _ = ingress_from_v1(&stored, version);
            }
        }

        #[test]
        fn valid_v1_ingresses_round_trip(v1 in v1_ingress()) {
            let expected = serde_json::to_string(&v1).unwrap();
            for version in [EXTENSIONS_V1BETA1, NETWORKING_V1BETA1] {
                let legacy = ingress_from_v1(&v1, version).unwrap();
                prop_assert_eq!(&legacy["apiVersion"], &json!(version));
                let back = ingress_to_v1(&legacy).unwrap();
                prop_assert_eq!(serde_json::to_string(&back).unwrap(), expected.clone());
                // And the legacy form is stable through v1 as well.
                let legacy_again = ingress_from_v1(&back, version).unwrap();
                prop_assert_eq!(
                    serde_json::to_string(&legacy_again).unwrap(),
                    serde_json::to_string(&legacy).unwrap()
                );
            }
        }
    }
}
