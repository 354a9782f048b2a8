//! Compact copies of the objects the router is built from. Each watch
//! event is converted at once, keeping only what routing needs (and, for
//! Secrets, the parsed certificate instead of the PEM).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::annotations::{self, Diagnostic, IngressAnnotations};
use super::paths::PathType;
use super::route::ObjectRef;
use super::tls::{Certificate, TlsError};

/// Annotation prefixes whose keys are kept (the rest is never read).
const KEPT_PREFIXES: [&str; 3] = [
    "nginx.ingress.kubernetes.io/",
    "ingress.kubernetes.io/",
    "ferry.dev/",
];
/// The class annotation older Ingresses use instead of `ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// A Service port as a backend names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// Where a rule or the default backend sends traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendRef {
    Service {
        name: String,
        port: PortRef,
    },
    /// A `resource` backend (not supported: the rule answers 503).
    Resource(String),
    /// Neither, or a port missing.
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    pub path_type: PathType,
    pub backend: BackendRef,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// Lowercase; `None` for a rule without host.
    pub host: Option<String>,
    pub paths: Vec<PathInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    pub hosts: Vec<String>,
    pub secret: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressInfo {
    pub key: ObjectRef,
    pub uid: String,
    /// RFC 3339; the oldest Ingress wins a conflict.
    pub created: String,
    pub class_name: Option<String>,
    pub legacy_class: Option<String>,
    /// Only keys under the ingress-nginx and Ferry prefixes.
    pub annotations: BTreeMap<String, String>,
    /// `annotations` parsed, with their problems: once per change of the
    /// Ingress, not at every rebuild.
    pub parsed: Arc<(IngressAnnotations, Vec<Diagnostic>)>,
    pub default_backend: Option<BackendRef>,
    pub rules: Vec<RuleInfo>,
    pub tls: Vec<TlsInfo>,
}

fn backend(b: &IngressBackend) -> BackendRef {
    if let Some(s) = &b.service {
        let port = s.port.as_ref().and_then(|p| match (&p.name, p.number) {
            (Some(n), _) if !n.is_empty() => Some(PortRef::Name(n.clone())),
            (_, Some(n)) => Some(PortRef::Number(n)),
            _ => None,
        });
        return match port {
            Some(port) => BackendRef::Service {
                name: s.name.clone(),
                port,
            },
            None => BackendRef::Invalid(format!("service {} has no port", s.name)),
        };
    }
    if let Some(r) = &b.resource {
        return BackendRef::Resource(format!("{}/{}", r.kind, r.name));
    }
    BackendRef::Invalid("backend names neither a service nor a resource".into())
}

impl IngressInfo {
    pub fn from_ingress(ing: &Ingress) -> IngressInfo {
        let meta = &ing.metadata;
        let spec = ing.spec.clone().unwrap_or_default();
        let annotations = meta.annotations.clone().unwrap_or_default();
        let key = ObjectRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        };
        let legacy_class = annotations.get(LEGACY_CLASS_ANNOTATION).cloned();
        let annotations: BTreeMap<String, String> = annotations
            .into_iter()
            .filter(|(k, _)| KEPT_PREFIXES.iter().any(|p| k.starts_with(p)))
            .collect();
        let parsed = Arc::new(annotations::parse(&key.to_string(), &annotations));
        IngressInfo {
            key,
            uid: meta.uid.clone().unwrap_or_default(),
            created: meta
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            class_name: spec.ingress_class_name.clone(),
            legacy_class,
            annotations,
            parsed,
            default_backend: spec.default_backend.as_ref().map(backend),
            rules: spec
                .rules
                .iter()
                .flatten()
                .map(|r| RuleInfo {
                    host: r
                        .host
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(str::to_ascii_lowercase),
                    paths: r
                        .http
                        .iter()
                        .flat_map(|h| h.paths.iter())
                        .map(|p| PathInfo {
                            path: p.path.clone().unwrap_or_else(|| "/".into()),
                            path_type: match p.path_type.as_str() {
                                "Exact" => PathType::Exact,
                                "Prefix" => PathType::Prefix,
                                _ => PathType::ImplementationSpecific,
                            },
                            backend: backend(&p.backend),
                        })
                        .collect(),
                })
                .collect(),
            tls: spec
                .tls
                .iter()
                .flatten()
                .map(|t| TlsInfo {
                    hosts: t
                        .hosts
                        .iter()
                        .flatten()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                    secret: t.secret_name.clone().filter(|s| !s.is_empty()),
                })
                .collect(),
        }
    }
}

/// A Service port: its name, number and target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: i32,
    /// `targetPort` as a number, when it is one.
    pub target_port: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub ports: Vec<ServicePortInfo>,
}

impl ServiceInfo {
    pub fn from_service(s: &Service) -> ServiceInfo {
        ServiceInfo {
            ports: s
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .map(|p| ServicePortInfo {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: p.port,
                    target_port: match &p.target_port {
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                            Some(*n)
                        }
                        None => Some(p.port),
                        _ => None,
                    },
                })
                .collect(),
        }
    }
}

/// One endpoint address of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    /// `conditions.ready`, unset counting as ready.
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub service: String,
    /// (port name, port number).
    pub ports: Vec<(Option<String>, u16)>,
    pub endpoints: Vec<EndpointInfo>,
}

impl SliceInfo {
    pub fn from_slice(s: &EndpointSlice) -> Option<SliceInfo> {
        let service = s
            .metadata
            .labels
            .as_ref()?
            .get("kubernetes.io/service-name")?
            .clone();
        Some(SliceInfo {
            service,
            ports: s
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.name.clone().filter(|n| !n.is_empty()),
                        u16::try_from(p.port?).ok()?,
                    ))
                })
                .collect(),
            endpoints: s
                .endpoints
                .iter()
                .flat_map(|e| {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                    e.addresses.iter().filter_map(move |a| {
                        Some(EndpointInfo {
                            ip: a.parse().ok()?,
                            ready,
                        })
                    })
                })
                .collect(),
        })
    }

    /// Ready endpoints for the Service port named `name` (or, for an
    /// unnamed port, the only port).
    pub fn ready_for(&self, name: Option<&str>) -> Vec<SocketAddr> {
        let Some(port) = self
            .ports
            .iter()
            .find(|(n, _)| n.as_deref() == name)
            .or(if self.ports.len() == 1 && name.is_none() {
                self.ports.first()
            } else {
                None
            })
            .map(|(_, p)| *p)
        else {
            return Vec::new();
        };
        self.endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| SocketAddr::new(e.ip, port))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressClassInfo {
    pub controller: String,
    pub is_default: bool,
}

impl IngressClassInfo {
    pub fn from_class(c: &IngressClass) -> IngressClassInfo {
        IngressClassInfo {
            controller: c
                .spec
                .as_ref()
                .and_then(|s| s.controller.clone())
                .unwrap_or_default(),
            is_default: c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true"),
        }
    }
}

/// A Secret as TLS sees it: the parsed certificate, or why it is not one.
pub type SecretInfo = Result<Arc<Certificate>, TlsError>;

/// Parses a Secret's `tls.crt`/`tls.key`.
pub fn secret_info(s: &Secret) -> SecretInfo {
    let key = format!(
        "{}/{}",
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default()
    );
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    super::tls::certificate_from_secret(&key, &data).map(Arc::new)
}
