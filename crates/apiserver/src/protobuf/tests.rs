#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;
use serde_json::json;

/// A tiny protobuf encoder, enough to write test objects the way gogo
/// does.
#[derive(Default, Clone)]
struct Enc(Vec<u8>);

impl Enc {
    fn new() -> Self {
        Enc::default()
    }

    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(mut self, field: u32, wire_type: u8) -> Self {
        self.put_varint((u64::from(field) << 3) | u64::from(wire_type));
        self
    }

    fn varint(self, field: u32, v: u64) -> Self {
        let mut e = self.key(field, 0);
        e.put_varint(v);
        e
    }

    fn int(self, field: u32, v: i64) -> Self {
        self.varint(field, v as u64)
    }

    fn bytes(self, field: u32, b: &[u8]) -> Self {
        let mut e = self.key(field, 2);
        e.put_varint(b.len() as u64);
        e.0.extend_from_slice(b);
        e
    }

    fn str(self, field: u32, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }

    fn msg(self, field: u32, m: Enc) -> Self {
        self.bytes(field, &m.0)
    }

    /// A map entry with a string value.
    fn entry(self, field: u32, key: &str, value: &str) -> Self {
        self.msg(field, Enc::new().str(1, key).str(2, value))
    }

    /// A map entry with a message value.
    fn entry_msg(self, field: u32, key: &str, value: Enc) -> Self {
        self.msg(field, Enc::new().str(1, key).msg(2, value))
    }
}

/// `k8s\0` + runtime.Unknown around `raw`.
fn body(api_version: &str, kind: &str, raw: Enc) -> Vec<u8> {
    let unknown = Enc::new()
        .msg(1, Enc::new().str(1, api_version).str(2, kind))
        .msg(2, raw)
        .str(3, "")
        .str(4, "");
    [MAGIC, &unknown.0].concat()
}

/// ObjectMeta as gogo writes it: every value field, even empty ones.
fn meta(name: &str, namespace: &str) -> Enc {
    Enc::new()
        .str(1, name)
        .str(2, "")
        .str(3, namespace)
        .str(4, "")
        .str(5, "")
        .str(6, "")
        .varint(7, 0)
        .msg(8, Enc::new())
}

fn quantity(s: &str) -> Enc {
    Enc::new().str(1, s)
}

fn int_or_string_int(v: i32) -> Enc {
    Enc::new().varint(1, 0).int(2, i64::from(v)).str(3, "")
}

fn int_or_string_str(s: &str) -> Enc {
    Enc::new().varint(1, 1).varint(2, 0).str(3, s)
}

#[test]
fn config_map() {
    let raw = Enc::new()
        .msg(1, meta("app", "default"))
        .entry(2, "a", "1")
        .entry(2, "b", "two words");
    assert_eq!(
        decode(&body("v1", "ConfigMap", raw)).unwrap(),
        json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "app", "namespace": "default", "creationTimestamp": null},
            "data": {"a": "1", "b": "two words"}
        })
    );
}

#[test]
fn secret_bytes_are_base64() {
    let raw = Enc::new()
        .msg(1, meta("s", ""))
        .msg(2, Enc::new().str(1, "p").bytes(2, b"x"))
        .msg(2, Enc::new().str(1, "bin").bytes(2, &[0, 0xff, 0x10]))
        .str(3, "Opaque")
        .varint(5, 0);
    assert_eq!(
        decode(&body("v1", "Secret", raw)).unwrap(),
        json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": "s", "creationTimestamp": null},
            "data": {"p": "eA==", "bin": "AP8Q"},
            "type": "Opaque",
            // A pointer field: false was set on purpose.
            "immutable": false
        })
    );
}

#[test]
fn service_ports_with_target_port() {
    let port = |name: &str, port: i64, target: Enc| {
        Enc::new()
            .str(1, name)
            .str(2, "TCP")
            .int(3, port)
            .msg(4, target)
            .varint(5, 0)
    };
    let spec = Enc::new()
        .msg(1, port("http", 80, int_or_string_int(8080)))
        .msg(1, port("https", 443, int_or_string_str("https")))
        // No target port: the zero IntOrString means unset.
        .msg(1, port("dns", 53, int_or_string_int(0)))
        .entry(2, "app", "web")
        .str(3, "")
        .str(4, "ClusterIP")
        .str(7, "")
        .str(8, "")
        .str(10, "")
        .str(11, "")
        .varint(12, 0)
        .varint(13, 0);
    let status = Enc::new().msg(1, Enc::new());
    let raw = Enc::new()
        .msg(1, meta("web", ""))
        .msg(2, spec)
        .msg(3, status);
    assert_eq!(
        decode(&body("v1", "Service", raw)).unwrap(),
        json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                    {"name": "dns", "protocol": "TCP", "port": 53}
                ],
                "selector": {"app": "web"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        })
    );
}

#[test]
fn deployment_with_pod_template() {
    let container = Enc::new()
        .str(1, "nginx")
        .str(2, "nginx:1.27")
        .str(4, "--port")
        .str(4, "80")
        .msg(
            6,
            Enc::new()
                .str(1, "http")
                .varint(2, 0)
                .varint(3, 80)
                .str(4, "TCP")
                .str(5, ""),
        )
        .msg(7, Enc::new().str(1, "MODE").str(2, "prod"))
        .msg(
            8,
            Enc::new()
                .entry_msg(1, "cpu", quantity("500m"))
                .entry_msg(1, "memory", quantity("128Mi"))
                .entry_msg(2, "cpu", quantity("250m")),
        )
        .msg(
            10,
            Enc::new()
                .msg(
                    1,
                    Enc::new().msg(
                        2,
                        Enc::new()
                            .str(1, "/healthz")
                            .msg(2, int_or_string_str("http")),
                    ),
                )
                .varint(2, 5)
                .varint(3, 0),
        )
        .str(13, "")
        .str(14, "IfNotPresent")
        .varint(16, 0)
        .varint(17, 0)
        .varint(18, 0);
    let pod_spec = Enc::new()
        .msg(
            1,
            Enc::new().str(1, "config").msg(
                2,
                Enc::new().msg(19, Enc::new().msg(1, Enc::new().str(1, "app-config"))),
            ),
        )
        .msg(2, container)
        .str(3, "")
        .varint(4, 30)
        .str(6, "")
        .varint(11, 0)
        .msg(14, Enc::new().int(2, 0));
    let template = Enc::new()
        .msg(1, Enc::new().entry(11, "app", "web").msg(8, Enc::new()))
        .msg(2, pod_spec);
    let strategy = Enc::new().str(1, "RollingUpdate").msg(
        2,
        Enc::new()
            .msg(1, int_or_string_int(0))
            .msg(2, int_or_string_str("25%")),
    );
    let spec = Enc::new()
        .varint(1, 2)
        .msg(2, Enc::new().entry(1, "app", "web"))
        .msg(3, template)
        .msg(4, strategy)
        .varint(5, 0)
        .varint(7, 0);
    let raw = Enc::new()
        .msg(1, meta("web", "default").entry(11, "app", "web"))
        .msg(2, spec)
        .msg(3, Enc::new());
    assert_eq!(
        decode(&body("apps/v1", "Deployment", raw)).unwrap(),
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "creationTimestamp": null,
                "labels": {"app": "web"}
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "args": ["--port", "80"],
                            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                            "env": [{"name": "MODE", "value": "prod"}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "250m"}
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "initialDelaySeconds": 5
                            },
                            "imagePullPolicy": "IfNotPresent"
                        }],
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": {"runAsUser": 0}
                    }
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}
                }
            },
            "status": {}
        })
    );
}

#[test]
fn times_and_durations() {
    // 2026-01-02T03:04:05.123456789Z
    let at = Enc::new().int(1, 1_767_323_045).int(2, 123_456_789);
    let lease = Enc::new().msg(1, meta("l", "kube-node-lease")).msg(
        2,
        Enc::new()
            .str(1, "node-a")
            .varint(2, 40)
            .msg(3, at.clone())
            .msg(4, at.clone())
            .varint(5, 0),
    );
    let v = decode(&body("coordination.k8s.io/v1", "Lease", lease)).unwrap();
    assert_eq!(
        v["spec"],
        json!({
            "holderIdentity": "node-a",
            "leaseDurationSeconds": 40,
            "acquireTime": "2026-01-02T03:04:05.123456Z",
            "renewTime": "2026-01-02T03:04:05.123456Z",
            "leaseTransitions": 0
        })
    );
    let meta = Enc::new().str(1, "x").msg(9, at);
    let v = decode(&body("v1", "Namespace", Enc::new().msg(1, meta))).unwrap();
    // Like Go, a Time read from protobuf keeps whole seconds.
    assert_eq!(v["metadata"]["deletionTimestamp"], "2026-01-02T03:04:05Z");

    assert_eq!(rfc3339(-1, 0, false).unwrap(), "1969-12-31T23:59:59Z");
    assert_eq!(
        rfc3339(0, -1000, true).unwrap(),
        "1969-12-31T23:59:59.999999Z"
    );
    assert!(rfc3339(i64::MAX, 0, false).is_none());
    assert_eq!(
        rfc3339(-62_167_219_200, 0, false).unwrap(),
        "0000-01-01T00:00:00Z"
    );
    assert!(rfc3339(-62_167_219_201, 0, false).is_none()); // year -1

    for (nanos, text) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (1_000_000_000, "1s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-2_000_000, "-2ms"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ] {
        assert_eq!(go_duration(nanos), text);
    }
}

#[test]
fn delete_options_in_any_group_version() {
    let raw = Enc::new()
        .int(1, 0)
        .msg(2, Enc::new().str(1, "uid-1"))
        .str(4, "Foreground")
        .str(5, "All");
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1"] {
        assert_eq!(
            decode(&body(api_version, "DeleteOptions", raw.clone())).unwrap(),
            json!({
                "kind": "DeleteOptions",
                "apiVersion": api_version,
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "uid-1"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"]
            })
        );
    }
}

#[test]
fn wire_details() {
    // An unknown field (99) is skipped, a packed repeated int64 is read,
    // and a later zero value of an omitempty field removes an earlier one.
    let spec = Enc::new()
        .str(99, "from the future")
        .msg(
            2,
            Enc::new().str(1, "c").bytes(3, &[]).msg(
                15,
                Enc::new().bytes(
                    // Not in SecurityContext: ignored too.
                    42,
                    &[1, 2, 3],
                ),
            ),
        )
        .str(10, "node-a")
        .str(10, "")
        .msg(14, Enc::new().bytes(4, &[1, 2, 0x80, 0x01]));
    let pod = Enc::new().msg(2, spec);
    let v = decode(&body("v1", "Pod", pod)).unwrap();
    assert_eq!(
        v["spec"],
        json!({
            "containers": [{"name": "c", "command": [""], "securityContext": {}}],
            "securityContext": {"supplementalGroups": [1, 2, 128]}
        })
    );
    // Negative int32s are sent sign-extended to ten bytes.
    let container = Enc::new().str(1, "c").msg(10, Enc::new().int(7, -1));
    let v = decode(&body(
        "v1",
        "Pod",
        Enc::new().msg(2, Enc::new().msg(2, container)),
    ))
    .unwrap();
    assert_eq!(
        v["spec"]["containers"][0]["livenessProbe"]["terminationGracePeriodSeconds"],
        -1
    );
    // Invalid UTF-8 becomes U+FFFD, as Go's JSON encoder does.
    let v = decode(&body(
        "v1",
        "Namespace",
        Enc::new().msg(1, Enc::new().bytes(1, b"a\xffb")),
    ))
    .unwrap();
    assert_eq!(v["metadata"]["name"], "a\u{fffd}b");
    // Managed fields carry embedded JSON.
    let entry = Enc::new()
        .str(1, "kubectl")
        .str(2, "Update")
        .str(6, "FieldsV1")
        .msg(7, Enc::new().bytes(1, br#"{"f:data":{}}"#));
    let v = decode(&body(
        "v1",
        "ConfigMap",
        Enc::new().msg(1, Enc::new().msg(17, entry)),
    ))
    .unwrap();
    assert_eq!(
        v["metadata"]["managedFields"],
        json!([{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}])
    );
}

#[test]
fn errors_name_the_problem() {
    let err = |bytes: &[u8]| decode(bytes).unwrap_err();
    assert!(err(b"{}").contains("prefix"));
    assert!(
        err(&body("v1", "Widget", Enc::new()))
            .contains(r#"no kind "Widget" is registered for version "v1""#)
    );
    assert!(err(&body("apps/v1", "ConfigMap", Enc::new())).contains("no kind"));
    let mut gzip = body("v1", "ConfigMap", Enc::new());
    gzip.extend(Enc::new().str(3, "gzip").0);
    assert!(err(&gzip).contains("gzip"));
    // A string where a message belongs, deep in the object.
    let container = Enc::new().str(1, "c").varint(6, 1);
    let pod = Enc::new().msg(2, Enc::new().msg(2, container));
    assert_eq!(
        err(&body("v1", "Pod", pod)),
        "Pod v1: spec.containers[0].ports[0]: \
         expected a length-delimited api.core.v1.ContainerPort message, got a varint value"
    );
    let bad_secret = Enc::new().msg(2, Enc::new().str(1, "k").varint(2, 1));
    assert_eq!(
        err(&body("v1", "Secret", bad_secret)),
        "Secret v1: data.k: expected a length-delimited value, got a varint one"
    );
    let bad_int_or_string = Enc::new().msg(
        2,
        Enc::new().msg(1, Enc::new().msg(4, Enc::new().varint(1, 7))),
    );
    assert!(
        err(&body("v1", "Service", bad_int_or_string)).contains("IntOrString has unknown type 7")
    );
    // Truncated inside the object.
    let mut truncated = body("v1", "ConfigMap", Enc::new().msg(1, meta("app", "")));
    truncated.truncate(truncated.len() - 3);
    assert!(decode(&truncated).is_err());
}

/// Bodies sent by the real kubectl (`-v=9` hex dumps) and the JSON that
/// `kubectl ... --dry-run=client -o json` prints for the same command:
/// Kubernetes' own JSON for the object.
#[test]
fn real_kubectl_bodies() {
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "create configmap app --from-literal=a=1",
            include_bytes!("testdata/configmap.bin"),
            include_str!("testdata/configmap.json"),
        ),
        (
            "create secret generic s --from-literal=p=x",
            include_bytes!("testdata/secret.bin"),
            include_str!("testdata/secret.json"),
        ),
        (
            "create deployment web --image=nginx --replicas=2 --port=80",
            include_bytes!("testdata/deployment.bin"),
            include_str!("testdata/deployment.json"),
        ),
        (
            "create service clusterip web --tcp=80:8080",
            include_bytes!("testdata/service.bin"),
            include_str!("testdata/service.json"),
        ),
        (
            "create service nodeport np --tcp=5678:8080 --node-port=30080",
            include_bytes!("testdata/service-nodeport.bin"),
            include_str!("testdata/service-nodeport.json"),
        ),
        (
            "create ingress ing1 --rule=foo.com/bar*=svc1:8080,tls=my-cert --class=nginx",
            include_bytes!("testdata/ingress.bin"),
            include_str!("testdata/ingress.json"),
        ),
        (
            "create secret docker-registry reg --docker-server=r.io --docker-username=u \
             --docker-password=p",
            include_bytes!("testdata/secret-docker.bin"),
            include_str!("testdata/secret-docker.json"),
        ),
        (
            "create service externalname ext --external-name=example.com",
            include_bytes!("testdata/service-externalname.bin"),
            include_str!("testdata/service-externalname.json"),
        ),
        (
            "create serviceaccount sa1",
            include_bytes!("testdata/serviceaccount.bin"),
            include_str!("testdata/serviceaccount.json"),
        ),
        (
            "create namespace ns1",
            include_bytes!("testdata/namespace.bin"),
            include_str!("testdata/namespace.json"),
        ),
    ];
    for (command, bytes, expected) in cases {
        let expected: Value = serde_json::from_str(expected).unwrap();
        assert_eq!(decode(bytes).unwrap(), expected, "kubectl {command}");
    }
}

/// Every message reachable from the served kinds has its fields sorted by
/// number (the decoder binary-searches them) and named.
#[test]
fn schema_tables_are_well_formed() {
    let mut stack: Vec<&Message> = schema::KINDS.iter().map(|(_, _, m)| *m).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(m) = stack.pop() {
        if !seen.insert(m.name) {
            continue;
        }
        assert!(
            m.fields.windows(2).all(|w| w[0].number < w[1].number),
            "{} fields are not sorted",
            m.name
        );
        for f in m.fields {
            match f.kind {
                Kind::Message(inner) => stack.push(inner),
                Kind::Inline(inner) => {
                    assert!(f.name.is_empty() && f.label == Label::One, "{}", m.name);
                    stack.push(inner);
                }
                _ => assert!(!f.name.is_empty(), "{} field {}", m.name, f.number),
            }
        }
    }
    assert!(seen.len() > 100, "only {} messages", seen.len());
}

fn real_bodies() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("testdata/configmap.bin").to_vec(),
        include_bytes!("testdata/deployment.bin").to_vec(),
        include_bytes!("testdata/service.bin").to_vec(),
        include_bytes!("testdata/ingress.bin").to_vec(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let _ = decode(&[MAGIC, &bytes].concat());
    }

    #[test]
    fn random_objects_never_panic(
        kind in 0..schema::KINDS.len(),
        raw in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let (api_version, kind, _) = schema::KINDS[kind];
        let api_version = if api_version == "*" { "v1" } else { api_version };
        let mut bytes = body(api_version, kind, Enc::new());
        // Replace the (empty) raw object with random bytes.
        let unknown = Enc::new()
            .msg(1, Enc::new().str(1, api_version).str(2, kind))
            .bytes(2, &raw);
        bytes.truncate(MAGIC.len());
        bytes.extend(unknown.0);
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_kubectl_bodies_never_panic(
        which in 0..4usize,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = real_bodies().swap_remove(which);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = decode(&bytes);
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = decode(&bytes);
    }
}
