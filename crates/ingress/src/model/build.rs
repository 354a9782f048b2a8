//! Ingresses, Services, EndpointSlices and Secrets to what the dataplane
//! serves: the router, the certificate index, and the problems found
//! (which become Events on the Ingress that has them). A bad Ingress only
//! loses its own rules; everything else is built as usual.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::annotations::{Diagnostic, IngressAnnotations};
use super::objects::{
    BackendRef, IngressClassInfo, IngressInfo, PortRef, SecretInfo, ServiceInfo, SliceInfo,
};
use super::paths::{PathRule, PathType};
use super::route::{BackendProtocol, Balance, Canary, Location, ObjectRef, Routes, Upstream};
use super::router::HostRule;
use super::tls::{CertIndex, Certificate};

/// Which Ingresses are ours.
#[derive(Clone, Debug)]
pub struct Classes {
    /// Our IngressClass name (`--ingress-class`, default `ferry`).
    pub class: String,
    /// `spec.controller` of IngressClasses that are ours.
    pub controller: String,
    /// Serve Ingresses without any class (ingress-nginx's
    /// `--watch-ingress-without-class`).
    pub without_class: bool,
}

impl Default for Classes {
    fn default() -> Self {
        Classes {
            class: "ferry".into(),
            controller: "ferry.dev/ingress-controller".into(),
            without_class: false,
        }
    }
}

/// Everything watched, compact, keyed by namespace/name.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub ingresses: HashMap<ObjectRef, IngressInfo>,
    pub classes: HashMap<String, IngressClassInfo>,
    pub services: HashMap<ObjectRef, ServiceInfo>,
    /// Keyed by slice namespace/name.
    pub slices: HashMap<ObjectRef, SliceInfo>,
    pub secrets: HashMap<ObjectRef, SecretInfo>,
}

/// A problem to report on an Ingress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressEvent {
    pub ingress: ObjectRef,
    pub uid: String,
    pub diagnostic: Diagnostic,
}

/// The result of a build.
pub struct Built {
    pub routes: Routes,
    pub certificates: CertIndex,
    pub events: Vec<IngressEvent>,
    /// The Ingresses served (their status gets the node addresses).
    pub owned: Vec<ObjectRef>,
    /// Upstream names in use (balancer state of others can go).
    pub upstreams: HashSet<String>,
}

impl Classes {
    /// Whether `ing` is ours: `ingressClassName`, else the legacy
    /// annotation, else (no class at all) the default IngressClass being
    /// ours or `without_class`.
    pub fn owns(&self, ing: &IngressInfo, classes: &HashMap<String, IngressClassInfo>) -> bool {
        if let Some(name) = &ing.class_name {
            return *name == self.class
                || classes
                    .get(name)
                    .is_some_and(|c| c.controller == self.controller);
        }
        if let Some(legacy) = &ing.legacy_class {
            return *legacy == self.class;
        }
        self.without_class
            || classes.iter().any(|(name, c)| {
                c.is_default && (*name == self.class || c.controller == self.controller)
            })
    }
}

fn warning(reason: &'static str, message: String) -> Diagnostic {
    Diagnostic {
        warning: true,
        reason,
        message,
    }
}

/// Builds everything from `state`. `default_cert` serves unknown names.
pub fn build<'s>(state: &'s State, classes: &Classes, default_cert: Certificate) -> Built {
    let mut owned: Vec<&IngressInfo> = state
        .ingresses
        .values()
        .filter(|i| classes.owns(i, &state.classes))
        .collect();
    // Oldest first: the oldest Ingress wins a host and path (keys are
    // unique, so the unstable sort is deterministic).
    owned.sort_unstable_by(|a, b| a.created.cmp(&b.created).then(a.key.cmp(&b.key)));

    let mut events = Vec::new();
    // Annotations were parsed when each Ingress was last changed.
    let parsed: Vec<(&IngressInfo, &IngressAnnotations)> = owned
        .iter()
        .map(|ing| {
            let (a, diagnostics) = &*ing.parsed;
            events.extend(diagnostics.iter().map(|d| IngressEvent {
                ingress: ing.key.clone(),
                uid: ing.uid.clone(),
                diagnostic: d.clone(),
            }));
            (*ing, a)
        })
        .collect();
    // ingress-nginx: use-regex (or a rewrite-target) on any Ingress of a
    // host turns every path of that host into a regex.
    let mut regex_hosts: HashSet<HostRule> = HashSet::new();
    for (ing, a) in &parsed {
        if a.use_regex || a.rewrite_target.is_some() {
            for r in &ing.rules {
                regex_hosts.insert(HostRule::parse(r.host.as_deref()));
            }
        }
    }

    let slices = slices_by_service(state);
    let mut upstreams: HashMap<String, Arc<Upstream>> = HashMap::new();
    // Most rules name a backend some other rule already resolved.
    type ResolveKey<'s> = (&'s str, &'s str, &'s PortRef, BackendProtocol, &'s Balance);
    let mut resolved: HashMap<ResolveKey<'_>, Result<Arc<Upstream>, String>> = HashMap::new();
    let mut resolve_new =
        |ns: &str, backend: &BackendRef, a: &IngressAnnotations| -> Result<Arc<Upstream>, String> {
            let (name, port) = match backend {
                BackendRef::Service { name, port } => (name, port),
                BackendRef::Resource(r) => {
                    return Err(format!("resource backend {r} is not supported"));
                }
                BackendRef::Invalid(why) => return Err(why.clone()),
            };
            let key = ObjectRef {
                namespace: ns.to_string(),
                name: name.clone(),
            };
            let svc = state
                .services
                .get(&key)
                .ok_or_else(|| format!("service {key} does not exist"))?;
            let sp = svc
                .ports
                .iter()
                .find(|p| match port {
                    PortRef::Number(n) => p.port == *n,
                    PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
                })
                .ok_or_else(|| format!("service {key} has no port {port}"))?;
            let upstream_name = format!("{ns}-{name}-{}", sp.port);
            // Upstreams are shared unless annotations make them differ.
            let id = format!("{upstream_name}/{:?}/{:?}", a.backend_protocol, a.balance);
            if let Some(u) = upstreams.get(&id) {
                return Ok(u.clone());
            }
            let mut endpoints: Vec<std::net::SocketAddr> = slices
                .get(&(ns, name.as_str()))
                .into_iter()
                .flatten()
                .flat_map(|s| s.ready_for(sp.name.as_deref()))
                .collect();
            endpoints.sort();
            endpoints.dedup();
            let u = Arc::new(Upstream {
                name: upstream_name,
                service: Some(key),
                endpoints,
                protocol: a.backend_protocol,
                balance: a.balance.clone(),
            });
            upstreams.insert(id, u.clone());
            Ok(u)
        };
    let mut resolve = |ns: &'s str,
                       backend: &'s BackendRef,
                       a: &'s IngressAnnotations|
     -> Result<Arc<Upstream>, String> {
        let BackendRef::Service { name, port } = backend else {
            return resolve_new(ns, backend, a);
        };
        resolved
            .entry((ns, name, port, a.backend_protocol, &a.balance))
            .or_insert_with(|| resolve_new(ns, backend, a))
            .clone()
    };

    // (host, path type, path) → index in `locations`, oldest first;
    // canaries attach to what is there.
    let rule_count: usize = parsed
        .iter()
        .flat_map(|(ing, _)| &ing.rules)
        .map(|r| r.paths.len())
        .sum();
    let mut slots: HashMap<(&str, u8, String), usize> = HashMap::with_capacity(rule_count);
    let mut locations: Vec<(HostRule, PathRule, Location)> = Vec::with_capacity(rule_count);
    let mut default_backend: Option<Location> = None;
    let empty_upstream = |ns: &str| {
        Arc::new(Upstream {
            name: format!("{ns}-unresolved"),
            ..Upstream::default()
        })
    };
    for (ing, a) in &parsed {
        let ns = ing.key.namespace.as_str();
        let report = |events: &mut Vec<IngressEvent>, reason: &'static str, message: String| {
            events.push(IngressEvent {
                ingress: ing.key.clone(),
                uid: ing.uid.clone(),
                diagnostic: warning(reason, message),
            });
        };
        if let Some(db) = &ing.default_backend
            && default_backend.is_none()
            && a.canary.is_none()
        {
            let upstream = resolve(ns, db, a).unwrap_or_else(|e| {
                report(&mut events, "BackendError", format!("defaultBackend: {e}"));
                empty_upstream(ns)
            });
            let mut loc = Location::new(
                ing.key.clone(),
                String::new(),
                PathRule::Prefix(String::new()),
                upstream,
            );
            a.apply(&mut loc);
            default_backend = Some(loc);
        }
        for rule in &ing.rules {
            let host = HostRule::parse(rule.host.as_deref());
            let regex = regex_hosts.contains(&host);
            let host_name = rule.host.as_deref().unwrap_or_default();
            for p in &rule.paths {
                let path = match PathRule::new(&p.path, p.path_type, regex) {
                    Ok(path) => path,
                    Err(e) => {
                        report(
                            &mut events,
                            "InvalidPath",
                            format!("host {host_name:?}: {e}"),
                        );
                        continue;
                    }
                };
                let kind = match (p.path_type, regex) {
                    (_, true) => 2,
                    (PathType::Exact, _) => 0,
                    _ => 1,
                };
                let normalized = match &path {
                    PathRule::Exact(s) | PathRule::Prefix(s) => s.clone(),
                    PathRule::Regex { source, .. } => source.clone(),
                };
                let slot = (host_name, kind, normalized);
                let upstream = match resolve(ns, &p.backend, a) {
                    Ok(u) => u,
                    Err(e) => {
                        report(
                            &mut events,
                            "BackendError",
                            format!("host {host_name:?} path {}: {e}", p.path),
                        );
                        empty_upstream(ns)
                    }
                };
                if let Some(spec) = &a.canary {
                    match slots.get(&slot).map(|&i| &mut locations[i].2) {
                        Some(primary) if primary.canary.is_none() => {
                            primary.canary = Some(Canary {
                                upstream,
                                ingress: ing.key.clone(),
                                header: spec.header.clone(),
                                header_value: spec.header_value.clone(),
                                cookie: spec.cookie.clone(),
                                weight: spec.weight,
                                weight_total: spec.weight_total,
                            });
                        }
                        Some(_) => report(
                            &mut events,
                            "CanaryConflict",
                            format!("host {host_name:?} path {} already has a canary", p.path),
                        ),
                        None => report(
                            &mut events,
                            "CanaryWithoutPrimary",
                            format!(
                                "host {host_name:?} path {}: no Ingress serves it to add a canary to",
                                p.path
                            ),
                        ),
                    }
                    continue;
                }
                if let Some(holder) = slots.get(&slot).map(|&i| &locations[i].2) {
                    report(
                        &mut events,
                        "HostPathConflict",
                        format!(
                            "host {host_name:?} path {} ({:?}) is already served by ingress {}, which is older; this rule is ignored",
                            p.path, p.path_type, holder.ingress
                        ),
                    );
                    continue;
                }
                let mut loc = Location::new(
                    ing.key.clone(),
                    host_name.to_string(),
                    path.clone(),
                    upstream,
                );
                a.apply(&mut loc);
                slots.insert(slot, locations.len());
                locations.push((host.clone(), path, loc));
            }
        }
    }

    // Into the router in (host, type, path) order, so that equal-length
    // regexes of a host keep one order whatever the Ingresses' ages.
    let mut order: Vec<((&str, u8, String), usize)> = slots.into_iter().collect();
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut locations: Vec<Option<(HostRule, PathRule, Location)>> =
        locations.into_iter().map(Some).collect();
    let mut routes = Routes::default();
    for (_, i) in order {
        if let Some((host, path, loc)) = locations[i].take() {
            routes.router.insert(&host, path, Arc::new(loc));
        }
    }
    routes.router.default_backend = default_backend.map(Arc::new);

    let mut certificates = CertIndex::new(default_cert);
    for (ing, _) in &parsed {
        for tls in &ing.tls {
            let Some(secret) = &tls.secret else { continue };
            let key = ObjectRef {
                namespace: ing.key.namespace.clone(),
                name: secret.clone(),
            };
            let hosts: Vec<String> = if tls.hosts.is_empty() {
                ing.rules
                    .iter()
                    .filter_map(|r| r.host.clone())
                    .map(|h| h.to_ascii_lowercase())
                    .collect()
            } else {
                tls.hosts.clone()
            };
            let report = |events: &mut Vec<IngressEvent>, reason: &'static str, message: String| {
                events.push(IngressEvent {
                    ingress: ing.key.clone(),
                    uid: ing.uid.clone(),
                    diagnostic: warning(reason, message),
                });
            };
            match state.secrets.get(&key) {
                None => report(
                    &mut events,
                    "TLSSecretNotFound",
                    format!(
                        "secret {key} not found, serving the default certificate for {}",
                        hosts.join(", ")
                    ),
                ),
                Some(Err(e)) => report(
                    &mut events,
                    "TLSSecretInvalid",
                    format!("secret {key}: {e}; serving the default certificate"),
                ),
                Some(Ok(cert)) => {
                    for host in hosts {
                        if !cert.covers(&host) {
                            if !tls.hosts.is_empty() {
                                report(
                                    &mut events,
                                    "TLSCertificateMismatch",
                                    format!(
                                        "the certificate of secret {key} does not cover {host}; serving the default certificate"
                                    ),
                                );
                            }
                            continue;
                        }
                        if !routes.tls_hosts.contains(&host) {
                            certificates.insert(&host, cert.clone());
                            routes.tls_hosts.insert(host);
                        }
                    }
                }
            }
        }
    }

    Built {
        upstreams: upstreams.values().map(|u| u.name.clone()).collect(),
        routes,
        certificates,
        events,
        owned: owned.iter().map(|i| i.key.clone()).collect(),
    }
}

fn slices_by_service(state: &State) -> HashMap<(&str, &str), Vec<&SliceInfo>> {
    let mut out: HashMap<(&str, &str), Vec<&SliceInfo>> = HashMap::new();
    for (key, slice) in &state.slices {
        out.entry((key.namespace.as_str(), slice.service.as_str()))
            .or_default()
            .push(slice);
    }
    out
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
