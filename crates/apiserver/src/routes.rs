//! Request paths, parsed into what they name.

use ferry_api::resources::{self, ResourceType};

use crate::status::ApiError;

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    Metrics,
    ApiRoot,
    ApisRoot,
    Group(String),
    ResourceList { group: String, version: String },
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3 { group: String, version: String },
    Resource(ResourcePath),
}

/// A path under a served group-version.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourcePath {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix was used.
    pub watch_prefix: bool,
}

pub fn parse(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["metrics"] => Route::Metrics,
        ["api"] => Route::ApiRoot,
        ["apis"] => Route::ApisRoot,
        ["apis", group] => Route::Group(group.to_string()),
        ["api", version] => Route::ResourceList {
            group: String::new(),
            version: version.to_string(),
        },
        ["apis", group, version] => Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", version] => Route::OpenApiV3 {
            group: String::new(),
            version: version.to_string(),
        },
        ["openapi", "v3", "apis", group, version] => Route::OpenApiV3 {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["api", version, rest @ ..] => resource_path("", version, rest)?,
        ["apis", group, version, rest @ ..] => resource_path(group, version, rest)?,
        _ => return Err(ApiError::path_not_found()),
    };
    Ok(route)
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let (watch_prefix, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let lookup =
        |plural: &str| resources::find(group, version, plural).ok_or_else(ApiError::path_not_found);
    let owned = |s: &str| Some(s.to_string());
    let (rt, namespace, name, subresource) = match rest {
        // The namespace object itself and its subresources.
        ["namespaces", ns, sub @ ("status" | "finalize")] => {
            (lookup("namespaces")?, None, owned(ns), owned(sub))
        }
        ["namespaces", ns, plural, tail @ ..] => {
            let rt = lookup(plural)?;
            if !rt.namespaced {
                return Err(ApiError::path_not_found());
            }
            match tail {
                [] => (rt, owned(ns), None, None),
                [name] => (rt, owned(ns), owned(name), None),
                [name, sub] => (rt, owned(ns), owned(name), owned(sub)),
                _ => return Err(ApiError::path_not_found()),
            }
        }
        [plural] => (lookup(plural)?, None, None, None),
        [plural, name] => {
            let rt = lookup(plural)?;
            if rt.namespaced {
                return Err(ApiError::path_not_found());
            }
            (rt, None, owned(name), None)
        }
        [plural, name, sub] => {
            let rt = lookup(plural)?;
            if rt.namespaced {
                return Err(ApiError::path_not_found());
            }
            (rt, None, owned(name), owned(sub))
        }
        _ => return Err(ApiError::path_not_found()),
    };
    if let Some(sub) = subresource.as_deref() {
        let known = match sub {
            "status" => rt.has_status,
            "scale" => rt.has_scale,
            "finalize" => rt.kind == "Namespace",
            "binding" | "log" | "exec" | "attach" | "portforward" => {
                rt.kind == "Pod" && rt.group.is_empty()
            }
            _ => false,
        };
        if !known {
            return Err(ApiError::path_not_found());
        }
    }
    Ok(Route::Resource(ResourcePath {
        rt,
        namespace,
        name,
        subresource,
        watch_prefix,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match parse(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path} parsed as {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = resource("/api/v1/namespaces/default/services/web");
        assert_eq!(
            (r.rt.kind, r.namespace.as_deref(), r.name.as_deref()),
            ("Service", Some("default"), Some("web"))
        );
        let r = resource("/apis/apps/v1/namespaces/x/deployments/d/scale");
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        let r = resource("/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.rt.kind, r.name.as_deref()),
            ("Namespace", Some("kube-system"))
        );
        let r = resource("/api/v1/namespaces/kube-system/status");
        assert_eq!(
            (r.rt.kind, r.subresource.as_deref()),
            ("Namespace", Some("status"))
        );
        let r = resource("/api/v1/pods");
        assert!(r.namespace.is_none() && r.name.is_none());
        let r = resource("/api/v1/watch/namespaces/default/pods");
        assert!(r.watch_prefix);
        assert_eq!(
            parse("/api/v1").unwrap(),
            Route::ResourceList {
                group: String::new(),
                version: "v1".into()
            }
        );
        assert!(parse("/api/v1/namespaces/default/widgets").is_err());
        assert!(parse("/api/v1/namespaces/default/configmaps/x/scale").is_err());
        assert!(parse("/api/v1/nodes/n1/status").is_ok());
        assert!(parse("/api/v1/pods/p").is_err());
    }
}
