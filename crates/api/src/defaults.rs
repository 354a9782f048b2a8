//! Defaulting, as kube-apiserver applies it when it decodes an object.
//!
//! Ported from k8s.io/kubernetes `pkg/apis/core/v1/defaults.go`,
//! `pkg/apis/apps/v1/defaults.go`, `pkg/apis/discovery/v1/defaults.go`, the
//! `+default` markers of k8s.io/api, and the Service registry's
//! normalisation of `clusterIPs`, `ipFamilies` and `ipFamilyPolicy`. The API
//! server runs [`apply_defaults`] on every object it is given, before
//! validation ([`crate::validation::validate_create`]), so stored objects and
//! what `kubectl get -o yaml` shows match a real cluster's.
//!
//! Not here: what admission plugins add (`serviceAccountName`, `priority`,
//! default tolerations) and what allocators decide (`clusterIP`,
//! `nodePort`, `healthCheckNodePort`).
//!
//! A Go string field that is "" counts as unset, as in upstream; pointer
//! fields are set only when absent or null. Values of the wrong JSON type
//! are left alone for validation to report.

use serde_json::{Map, Value, json};

mod workloads;

use workloads::{daemon_set, deployment, pod, pod_template};

/// Fills in the defaults for an object of `kind` in API `group` ("" for
/// core). Kinds without defaults are left unchanged. Idempotent.
///
/// Services are defaulted for a single-stack IPv4 cluster: `ipFamilies`
/// follows the family of a user-chosen `clusterIP`, else `["IPv4"]`.
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Service") => service(obj),
        ("", "Pod") => pod(obj),
        ("", "Endpoints") => endpoints(obj),
        ("", "Secret") => {
            if let Some(secret) = obj.as_object_mut() {
                default_string(secret, "type", "Opaque");
            }
        }
        ("", "Namespace") => namespace(obj),
        ("apps", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") => {
            if let Some(spec) = object_at(obj, "spec") {
                default_value(spec, "replicas", json!(1));
            }
            pod_template(obj);
        }
        ("apps", "DaemonSet") => daemon_set(obj),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(obj),
        ("networking.k8s.io", "IngressClass") => {
            if let Some(parameters) = object_at(obj, "spec")
                .and_then(|spec| spec.get_mut("parameters"))
                .and_then(Value::as_object_mut)
            {
                default_value(parameters, "scope", json!("Cluster"));
            }
        }
        _ => {}
    }
}

/// The registry's `dropTypeDependentFields` for a Service update: when the
/// type changes so that a field no longer applies, and the user left that
/// field as it was, it is cleared rather than rejected. This is what makes
/// e.g. NodePort → ClusterIP or ClusterIP → ExternalName work with
/// `kubectl apply`, `edit` and `patch`. Run it after [`apply_defaults`] and
/// before validation; the allocator releases what was cleared.
pub fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let old_spec = &old["spec"];
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let old_type = old_spec["type"].as_str().unwrap_or("");
    let new_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let unchanged = |spec: &Map<String, Value>, key: &str| {
        spec.get(key).unwrap_or(&Value::Null) == &old_spec[key]
    };
    let clear_if_unchanged = |spec: &mut Map<String, Value>, key: &str| {
        if unchanged(spec, key) {
            spec.remove(key);
        }
    };
    if old_type != "ExternalName" && new_type == "ExternalName" {
        if unchanged(spec, "clusterIP") && unchanged(spec, "clusterIPs") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        clear_if_unchanged(spec, "ipFamilies");
        clear_if_unchanged(spec, "ipFamilyPolicy");
    }
    let needs_node_ports = |t: &str| matches!(t, "NodePort" | "LoadBalancer");
    if needs_node_ports(old_type) && !needs_node_ports(&new_type) {
        let node_ports = |ports: &[Value]| -> Vec<i64> {
            ports
                .iter()
                .filter_map(|p| p["nodePort"].as_i64())
                .filter(|n| *n != 0)
                .collect()
        };
        let old_ports = node_ports(old_spec["ports"].as_array().map_or(&[], Vec::as_slice));
        // Only ports the Service already held may be dropped; a new one
        // is the user's and must fail validation.
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut)
            && node_ports(ports).iter().all(|p| old_ports.contains(p))
        {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                port.remove("nodePort");
            }
        }
    }
    let needs_health_check = |t: &str, policy: &Value| t == "LoadBalancer" && policy == "Local";
    if needs_health_check(old_type, &old_spec["externalTrafficPolicy"])
        && !needs_health_check(
            &new_type,
            spec.get("externalTrafficPolicy").unwrap_or(&Value::Null),
        )
    {
        clear_if_unchanged(spec, "healthCheckNodePort");
    }
    if old_type == "LoadBalancer" && new_type != "LoadBalancer" {
        if spec
            .get("allocateLoadBalancerNodePorts")
            .is_some_and(Value::is_boolean)
        {
            clear_if_unchanged(spec, "allocateLoadBalancerNodePorts");
        }
        clear_if_unchanged(spec, "loadBalancerClass");
    }
    let externally_accessible = |t: &str, external_ips: &Value| match t {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => external_ips.as_array().is_some_and(|ips| !ips.is_empty()),
        _ => false,
    };
    if externally_accessible(old_type, &old_spec["externalIPs"])
        && !externally_accessible(&new_type, spec.get("externalIPs").unwrap_or(&Value::Null))
    {
        clear_if_unchanged(spec, "externalTrafficPolicy");
    }
    if old_type == "LoadBalancer"
        && new_type != "LoadBalancer"
        && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut)
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

/// The object at `v[key]`, created when absent or null; `None` when `v` or
/// the field is something other than an object.
fn object_at<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    object_at_map(v.as_object_mut()?, key)
}

/// Like [`object_at`], on a field of a map.
fn object_at_map<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// Sets a pointer-like field that is absent or null.
fn default_value(map: &mut Map<String, Value>, key: &str, value: Value) {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = value;
    }
}

/// Sets a string field that is absent, null or "".
fn default_string(map: &mut Map<String, Value>, key: &str, value: &str) {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() || slot == "" {
        *slot = Value::String(value.to_string());
    }
}

/// Sets an integer field that is absent, null or 0.
fn default_int(map: &mut Map<String, Value>, key: &str, value: i64) {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() || slot == 0 {
        *slot = json!(value);
    }
}

fn str_of<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The objects in the list at `map[key]`.
fn objects_in<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn service(obj: &mut Value) {
    let is_load_balancer = obj["spec"]["type"] == "LoadBalancer";
    let Some(spec) = object_at(obj, "spec") else {
        return;
    };
    default_string(spec, "sessionAffinity", "None");
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP"
            if spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_none_or(Value::is_null) =>
        {
            spec.insert(
                "sessionAffinityConfig".into(),
                json!({"clientIP": {"timeoutSeconds": 10800}}),
            );
        }
        _ => {}
    }
    default_string(spec, "type", "ClusterIP");
    for port in objects_in(spec, "ports") {
        default_string(port, "protocol", "TCP");
        let target = port.get("targetPort").unwrap_or(&Value::Null);
        if target.is_null() || target == 0 || target == "" {
            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            port.insert("targetPort".into(), json!(number));
        }
    }
    let service_type = str_of(spec, "type").to_string();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    let externally_accessible = match service_type.as_str() {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => has_external_ips,
        _ => false,
    };
    if externally_accessible {
        default_string(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        default_value(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        default_value(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    // Old clients set only `clusterIP`; the registry mirrors it.
    let cluster_ip = str_of(spec, "clusterIP").to_string();
    let has_cluster_ips = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .is_some_and(|ips| !ips.is_empty());
    if !cluster_ip.is_empty() && !has_cluster_ips {
        spec.insert("clusterIPs".into(), json!([cluster_ip]));
    }
    if service_type != "ExternalName" {
        ip_families(spec);
    }
    if is_load_balancer
        && let Some(ingress) = obj
            .get_mut("status")
            .and_then(|s| s.get_mut("loadBalancer"))
            .and_then(|lb| lb.get_mut("ingress"))
            .and_then(Value::as_array_mut)
    {
        for entry in ingress.iter_mut().filter_map(Value::as_object_mut) {
            if entry
                .get("ip")
                .and_then(Value::as_str)
                .is_some_and(|ip| !ip.is_empty())
            {
                default_value(entry, "ipMode", json!("VIP"));
            }
        }
    }
}

/// The registry's `initIPFamilyFields` on a single-stack IPv4 cluster.
fn ip_families(spec: &mut Map<String, Value>) {
    let headless_without_selector = str_of(spec, "clusterIP") == "None"
        && spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
    let policy = if headless_without_selector {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    default_value(spec, "ipFamilyPolicy", json!(policy));

    let Some(mut families) = (match spec.get("ipFamilies") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(families)) => Some(families.clone()),
        Some(_) => None,
    }) else {
        return;
    };
    let cluster_ips: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|ip| ip.as_str().unwrap_or("").to_string())
        .collect();
    for (i, ip) in cluster_ips.iter().enumerate() {
        if ip == "None" {
            break;
        }
        if i >= families.len() {
            match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                    families.push(json!("IPv6"))
                }
                Ok(_) => families.push(json!("IPv4")),
                // Left for validation to report.
                Err(_) => break,
            }
        }
    }
    if families.is_empty() {
        families.push(json!("IPv4"));
    }
    // Headless Services without a selector are allowed both families even
    // on a single-stack cluster.
    if headless_without_selector
        && families.len() < 2
        && str_of(spec, "ipFamilyPolicy") != "SingleStack"
    {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(json!(other));
    }
    spec.insert("ipFamilies".into(), Value::Array(families));
}

fn endpoint_slice(obj: &mut Value) {
    if let Some(slice) = obj.as_object_mut() {
        for port in objects_in(slice, "ports") {
            default_value(port, "name", json!(""));
            default_value(port, "protocol", json!("TCP"));
        }
    }
}

fn endpoints(obj: &mut Value) {
    if let Some(endpoints) = obj.as_object_mut() {
        for subset in objects_in(endpoints, "subsets") {
            for port in objects_in(subset, "ports") {
                default_string(port, "protocol", "TCP");
            }
        }
    }
}

/// Every named Namespace carries its name as a label.
fn namespace(obj: &mut Value) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        return;
    }
    if let Some(labels) = object_at(obj, "metadata").and_then(|m| object_at_map(m, "labels")) {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::workloads::image_tag;
    use super::{apply_defaults, drop_type_dependent_fields};

    fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
        apply_defaults(group, kind, &mut obj);
        obj
    }

    fn service_spec(spec: Value) -> Value {
        defaulted("", "Service", json!({"spec": spec}))["spec"].clone()
    }

    #[test]
    fn cluster_ip_service() {
        assert_eq!(
            service_spec(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})),
            json!({
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "sessionAffinity": "None",
                "type": "ClusterIP",
                "internalTrafficPolicy": "Cluster",
                "ipFamilyPolicy": "SingleStack",
                "ipFamilies": ["IPv4"],
            })
        );
    }

    #[test]
    fn externally_reachable_services() {
        let node_port = service_spec(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        assert_eq!(node_port["externalTrafficPolicy"], "Cluster");
        assert!(node_port.get("allocateLoadBalancerNodePorts").is_none());
        let external_ips =
            service_spec(json!({"externalIPs": ["192.0.2.1"], "ports": [{"port": 80}]}));
        assert_eq!(external_ips["externalTrafficPolicy"], "Cluster");

        let lb = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}, {"hostname": "lb.example.com"}]}}}),
        );
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(
            lb["status"]["loadBalancer"]["ingress"],
            json!([{"ip": "192.0.2.7", "ipMode": "VIP"}, {"hostname": "lb.example.com"}])
        );
    }

    #[test]
    fn external_name_gets_no_cluster_fields() {
        assert_eq!(
            service_spec(json!({"type": "ExternalName", "externalName": "db.example.com"})),
            json!({"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"})
        );
    }

    #[test]
    fn session_affinity() {
        let client_ip = service_spec(json!({"sessionAffinity": "ClientIP"}));
        assert_eq!(
            client_ip["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        let kept = service_spec(json!({"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
        assert_eq!(
            kept["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            60
        );
        let none =
            service_spec(json!({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
        assert!(none.get("sessionAffinityConfig").is_none());
    }

    #[test]
    fn target_port() {
        let spec = service_spec(json!({"ports": [
            {"port": 80}, {"port": 81, "targetPort": 0}, {"port": 82, "targetPort": ""},
            {"port": 83, "targetPort": 8083}, {"port": 84, "targetPort": "http"},
        ]}));
        let targets: Vec<&Value> = spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| &p["targetPort"])
            .collect();
        assert_eq!(
            targets,
            [
                &json!(80),
                &json!(81),
                &json!(82),
                &json!(8083),
                &json!("http")
            ]
        );
    }

    #[test]
    fn cluster_ips_and_families() {
        let v4 = service_spec(json!({"clusterIP": "10.96.0.10"}));
        assert_eq!(v4["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(v4["ipFamilies"], json!(["IPv4"]));
        let v6 = service_spec(json!({"clusterIP": "fd00::10"}));
        assert_eq!(v6["ipFamilies"], json!(["IPv6"]));
        let headless = service_spec(json!({"clusterIP": "None", "selector": {"app": "db"}}));
        assert_eq!(headless["clusterIPs"], json!(["None"]));
        assert_eq!(headless["ipFamilyPolicy"], "SingleStack");
        assert_eq!(headless["ipFamilies"], json!(["IPv4"]));
        let selectorless = service_spec(json!({"clusterIP": "None"}));
        assert_eq!(selectorless["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(selectorless["ipFamilies"], json!(["IPv4", "IPv6"]));
        let chosen = service_spec(json!({"ipFamilyPolicy": "PreferDualStack"}));
        assert_eq!(chosen["ipFamilyPolicy"], "PreferDualStack");
        assert_eq!(chosen["ipFamilies"], json!(["IPv4"]));
    }

    #[test]
    fn pod() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}),
        );
        assert_eq!(
            pod["spec"],
            json!({
                "containers": [{
                    "name": "web", "image": "nginx",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "imagePullPolicy": "Always",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }],
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30,
                "schedulerName": "default-scheduler",
                "enableServiceLinks": true,
            })
        );
        let user = defaulted(
            "",
            "Pod",
            json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0, "containers": []}}),
        );
        assert_eq!(user["spec"]["restartPolicy"], "Never");
        assert_eq!(user["spec"]["terminationGracePeriodSeconds"], 0);
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, tag) in [
            ("nginx", Some("latest")),
            ("nginx:latest", Some("latest")),
            ("nginx:1.27", Some("1.27")),
            ("localhost:5000/nginx", Some("latest")),
            ("localhost:5000/nginx:1.27", Some("1.27")),
            ("nginx@sha256:0123", None),
            ("nginx:latest@sha256:0123", Some("latest")),
            ("", None),
            ("Nginx", None),
        ] {
            assert_eq!(image_tag(image), tag, "{image}");
        }
    }

    #[test]
    fn pod_parts() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {
                "hostNetwork": true,
                "containers": [{
                    "name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}},
                    "readinessProbe": {"httpGet": {"port": 80}},
                    "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                }],
                "volumes": [{"name": "scratch"}, {"name": "config", "configMap": {"name": "web"}}],
            }}),
        );
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        assert_eq!(container["ports"][0]["hostPort"], 80);
        assert_eq!(
            container["resources"]["requests"],
            json!({"memory": "1Gi", "cpu": "1"})
        );
        assert_eq!(
            container["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(
            container["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
            "v1"
        );
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "scratch", "emptyDir": {}}, {"name": "config", "configMap": {"name": "web", "defaultMode": 420}}])
        );
    }

    #[test]
    fn deployment() {
        let deployment = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        );
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let pod_spec = &spec["template"]["spec"];
        assert_eq!(pod_spec["restartPolicy"], "Always");
        assert_eq!(pod_spec["containers"][0]["imagePullPolicy"], "Always");
        // Only Pods get enableServiceLinks.
        assert!(pod_spec.get("enableServiceLinks").is_none());

        let recreate = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(recreate["spec"]["replicas"], 0);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn replica_and_daemon_sets() {
        let rs = defaulted("apps", "ReplicaSet", json!({"spec": {}}));
        assert_eq!(rs["spec"]["replicas"], 1);
        assert_eq!(rs["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        let ds = defaulted("apps", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn other_kinds() {
        let slice = defaulted(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"ports": [{"port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        );
        assert_eq!(
            slice["ports"],
            json!([{"port": 80, "name": "", "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}])
        );
        let endpoints = defaulted(
            "",
            "Endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
        );
        assert_eq!(endpoints["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(defaulted("", "Secret", json!({}))["type"], "Opaque");
        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        let ingress = json!({"spec": {"rules": []}});
        assert_eq!(
            defaulted("networking.k8s.io", "Ingress", ingress.clone()),
            ingress
        );
        let unknown = json!({"spec": 5});
        assert_eq!(defaulted("example.com", "Widget", unknown.clone()), unknown);
    }

    #[test]
    fn type_dependent_fields_are_dropped_when_unchanged() {
        let old = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                "ports": [{"port": 80, "nodePort": 30080}]}}),
        );
        let mut cluster_ip = old.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        drop_type_dependent_fields(&mut cluster_ip, &old);
        assert!(cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert!(cluster_ip["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(cluster_ip["spec"]["clusterIP"], "10.96.0.10");

        let mut new_port = cluster_ip.clone();
        new_port["spec"]["ports"][0]["nodePort"] = json!(30081);
        drop_type_dependent_fields(&mut new_port, &old);
        assert_eq!(new_port["spec"]["ports"][0]["nodePort"], 30081);

        let mut external = old.clone();
        external["spec"]["type"] = json!("ExternalName");
        drop_type_dependent_fields(&mut external, &old);
        for gone in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            assert!(external["spec"].get(gone).is_none(), "{gone}");
        }
    }
}
