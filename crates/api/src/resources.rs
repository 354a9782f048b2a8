//! The resource types Ferry's API server serves, with the facts discovery,
//! routing and storage need about each one.

/// One served resource type (a group/version/resource with its kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core ("legacy") group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural name used in URLs (`services`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource.
    pub has_status: bool,
    /// Has a `/scale` subresource (autoscaling/v1 Scale).
    pub has_scale: bool,
    /// Whether `metadata.generation` is bumped on spec changes.
    pub tracks_generation: bool,
}

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The version objects of this resource are stored in: legacy
    /// versions (`extensions/v1beta1` Ingress) are served by converting
    /// to and from it.
    pub fn storage(&'static self) -> &'static ResourceType {
        if self.kind == "Ingress" && self.version != "v1" {
            find("networking.k8s.io", "v1", "ingresses").expect("v1 Ingress is served")
        } else {
            self
        }
    }

    pub fn is_legacy_version(&'static self) -> bool {
        !std::ptr::eq(self.storage(), self)
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `services` or `deployments.apps`, as used in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Verbs advertised in discovery for the main resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.kind == "Namespace" || self.kind == "Node" {
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

const fn rt(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        categories: &[],
        has_status: false,
        has_scale: false,
        tracks_generation: false,
    }
}

const fn with_status(mut r: ResourceType) -> ResourceType {
    r.has_status = true;
    r
}

const fn in_all(mut r: ResourceType) -> ResourceType {
    r.categories = &["all"];
    r
}

const fn workload(mut r: ResourceType) -> ResourceType {
    r.has_status = true;
    r.tracks_generation = true;
    r.categories = &["all"];
    r
}

const fn legacy_beta(mut r: ResourceType) -> ResourceType {
    r.version = "v1beta1";
    r
}

const fn scalable(mut r: ResourceType) -> ResourceType {
    r.has_scale = true;
    r
}

/// Every resource type served, in discovery order.
pub static RESOURCES: &[ResourceType] = &[
    with_status(rt(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
    )),
    with_status(rt("", "Node", "nodes", "node", false, &["no"])),
    in_all(with_status(rt("", "Pod", "pods", "pod", true, &["po"]))),
    in_all(with_status(rt(
        "",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
    ))),
    rt("", "Endpoints", "endpoints", "endpoints", true, &["ep"]),
    rt("", "Secret", "secrets", "secret", true, &[]),
    rt("", "ConfigMap", "configmaps", "configmap", true, &["cm"]),
    rt("", "Event", "events", "event", true, &["ev"]),
    rt(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
    ),
    scalable(workload(rt(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
    ))),
    scalable(workload(rt(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
    ))),
    workload(rt(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
    )),
    rt(
        "discovery.k8s.io",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        &[],
    ),
    with_status(rt(
        "networking.k8s.io",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &["ing"],
    )),
    rt(
        "networking.k8s.io",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        &[],
    ),
    rt("coordination.k8s.io", "Lease", "leases", "lease", true, &[]),
    // Served for manifests written before Kubernetes 1.22; stored as v1.
    legacy_beta(with_status(rt(
        "networking.k8s.io",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &[],
    ))),
    legacy_beta(with_status(rt(
        "extensions",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &[],
    ))),
];

/// Find a resource by the URL triple.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Find a resource by its kind within a group.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The group/versions served, in discovery order, each with its resources.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        for r in RESOURCES {
            assert_eq!(find(r.group, r.version, r.plural), Some(r));
            // find_kind gives the stored version.
            assert_eq!(
                find_kind(r.group, r.kind).map(|k| k.storage()),
                Some(r.storage())
            );
        }
        let legacy = find("extensions", "v1beta1", "ingresses").expect("served");
        assert!(legacy.is_legacy_version());
        assert_eq!(legacy.storage().api_version(), "networking.k8s.io/v1");
        assert_eq!(
            find("apps", "v1", "deployments").map(|r| r.api_version()),
            Some("apps/v1".to_string())
        );
        assert!(find("", "v1", "deployments").is_none());
    }

    #[test]
    fn split() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(
            split_api_version("networking.k8s.io/v1"),
            ("networking.k8s.io", "v1")
        );
    }
}
