//! Discovery (`/api`, `/apis`, per group-version resource lists, aggregated
//! discovery v2), `/version`, the OpenAPI v3 documents kubectl reads to
//! decide on server-side field validation, and an empty OpenAPI v2
//! document for the kinds those do not cover.

use ferry_api::resources::{RESOURCES, ResourceType, group_versions};
use serde_json::{Value, json};

/// The Kubernetes API version Ferry's server implements.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+ferry.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, arch()),
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceType> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// `/api`
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

fn named_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

/// `/apis`
pub fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": named_groups().into_iter().map(group_entry).collect::<Vec<_>>(),
    })
}

/// `/apis/<group>`, or `None` when the group is not served.
pub fn group(group: &str) -> Option<Value> {
    named_groups().contains(&group).then(|| {
        let mut g = group_entry(group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

fn status_verbs() -> Value {
    json!(["get", "patch", "update"])
}

/// `/api/v1` or `/apis/<group>/<version>`.
/// The Pod subresources that stream (`pods/log`, `exec`, `attach`,
/// `portforward`): name, response kind and verbs, as kube-apiserver lists
/// them.
fn stream_subresources(
    r: &ResourceType,
) -> &'static [(&'static str, &'static str, &'static [&'static str])] {
    if r.kind == "Pod" && r.group.is_empty() {
        &[
            ("attach", "PodAttachOptions", &["create", "get"]),
            ("exec", "PodExecOptions", &["create", "get"]),
            ("log", "Pod", &["get"]),
            ("portforward", "PodPortForwardOptions", &["create", "get"]),
        ]
    } else {
        &[]
    }
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in in_group_version(group, version) {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        resources.push(main);
        if r.has_status {
            resources.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": status_verbs(),
            }));
        }
        for (sub, kind, verbs) in stream_subresources(r) {
            resources.push(json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
        if r.has_scale {
            resources.push(json!({
                "name": format!("{}/scale", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": status_verbs(),
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn aggregated_resource(r: &ResourceType) -> Value {
    let mut subresources = Vec::new();
    if r.has_status {
        subresources.push(json!({
            "subresource": "status",
            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "verbs": status_verbs(),
        }));
    }
    if r.has_scale {
        subresources.push(json!({
            "subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": status_verbs(),
        }));
    }
    for (sub, kind, verbs) in stream_subresources(r) {
        subresources.push(json!({
            "subresource": sub,
            "responseKind": {"group": "", "version": "v1", "kind": kind},
            "verbs": verbs,
        }));
    }
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        v["subresources"] = Value::Array(subresources);
    }
    v
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`): the core group for
/// `/api`, the named groups for `/apis`.
pub fn aggregated(core: bool) -> Value {
    let groups: Vec<&str> = if core { vec![""] } else { named_groups() };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let versions: Vec<Value> = group_versions()
                .into_iter()
                .filter(|(gg, _)| *gg == g)
                .map(|(_, v)| {
                    json!({
                        "version": v,
                        "resources": in_group_version(g, v).map(aggregated_resource).collect::<Vec<_>>(),
                        "freshness": "Current",
                    })
                })
                .collect();
            let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": versions});
            if !g.is_empty() {
                item["metadata"]["name"] = json!(g);
            }
            item
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `/openapi/v3`: where each group-version's document lives.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions() {
        let path = openapi_path(g, v);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", openapi_hash())}),
        );
    }
    json!({"paths": paths})
}

fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Changes whenever the served API changes (with the binary's version).
fn openapi_hash() -> String {
    format!("ferry-{}-{}", env!("CARGO_PKG_VERSION"), RESOURCES.len())
}

/// Content type of the protobuf-encoded OpenAPI v2 document. Clients ask
/// for `...spec.v2@v1.0+protobuf`, but `@` is not allowed in a media type,
/// so kube-apiserver answers with this spelling.
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2`: a Swagger 2.0 document without definitions. kubectl
/// reads it for client-side validation only for kinds the v3 documents do
/// not cover, that is kinds this server does not serve. Finding no schema
/// there, it goes on and reports the real problem, as against
/// kube-apiserver (`no matches for kind "Widget" in version
/// "example.com/v1"`), instead of failing on a missing document.
pub fn openapi_v2() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0")},
        "paths": {},
        "definitions": {},
    })
}

/// The same document in gnostic's `openapi_v2.Document` protobuf
/// encoding, which is what kubectl asks for: `swagger` (field 1) and
/// `info` (field 2) with its `title` (1) and `version` (2).
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn string_field(out: &mut Vec<u8>, field: u8, value: &[u8]) {
        out.push(field << 3 | 2);
        out.push(u8::try_from(value.len()).expect("short strings only"));
        out.extend_from_slice(value);
    }
    let version = format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0");
    let mut info = Vec::new();
    string_field(&mut info, 1, b"Kubernetes");
    string_field(&mut info, 2, version.as_bytes());
    let mut doc = Vec::new();
    string_field(&mut doc, 1, b"2.0");
    string_field(&mut doc, 2, &info);
    doc
}

/// `/openapi/v3/<api|apis/group>/<version>`: the operations of each
/// resource, each declaring the `fieldValidation` and `dryRun` parameters.
/// kubectl reads the PATCH operations to learn that this server validates
/// fields itself. PATCH operations carry no request body schema, so
/// `kubectl apply` builds its strategic merge patches from its own
/// compiled-in types, which match the served kinds.
pub fn openapi_v3(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let params = json!([
        {"name": "dryRun", "in": "query", "description": "When present, indicates that modifications should not be persisted.", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "description": "How the server treats unknown fields: Ignore, Warn (default) or Strict.", "schema": {"type": "string", "uniqueItems": true}},
    ]);
    for r in in_group_version(group, version) {
        let base = format!("/{}", openapi_path(group, version));
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(collection.clone(), json!({"post": op("post")}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"put": op("put"), "patch": op("patch")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_documents() {
        let core = resource_list("", "v1").expect("core is served");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"services/status"));
        assert!(names.contains(&"pods/exec") && names.contains(&"pods/log"));
        assert!(names.contains(&"pods"));
        let apps = resource_list("apps", "v1").expect("apps is served");
        assert!(apps.to_string().contains("deployments/scale"));
        assert!(resource_list("batch", "v1").is_none());
        let v2 = openapi_v2_protobuf();
        assert_eq!(&v2[..5], b"\x0a\x032.0");
        assert_eq!(usize::from(v2[6]), v2.len() - 7, "info fills the rest");
        assert!(group("apps").is_some() && group("batch").is_none());
        let agg = aggregated(false).to_string();
        assert!(
            agg.contains("\"scope\":\"Namespaced\"") && agg.contains("\"categories\":[\"all\"]")
        );
        let doc = openapi_v3("apps", "v1")
            .expect("apps has a document")
            .to_string();
        assert!(doc.contains("fieldValidation") && doc.contains("\"kind\":\"Deployment\""));
    }
}
