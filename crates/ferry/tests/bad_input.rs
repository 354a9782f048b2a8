//! Bad input to `ferry apiserver` gets the error kube-apiserver gives, as
//! a `Status` object, and stores nothing: malformed bodies, unknown kinds
//! and paths, mismatched kinds, invalid names, objects over the size
//! limit, unknown fields under each field-validation mode, patches that do
//! not apply, and requests without a valid token. Raw requests go through
//! `curl`, so the HTTP status and headers are visible; what users see goes
//! through the real `kubectl`.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::Apiserver;

/// Whether curl is available. Under CI it must be: a missing curl fails
/// the test instead of skipping it.
fn curl_available() -> bool {
    let found = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is required under CI=true"
        );
        eprintln!("skipping: curl is not on PATH");
    }
    found
}

/// The bearer token from the server's admin kubeconfig.
fn token(server: &Apiserver) -> String {
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .expect("the kubeconfig has a token")
        .trim()
        .trim_matches('"')
        .to_string()
}

/// One HTTP exchange.
struct Reply {
    code: u16,
    /// Response headers as curl wrote them (names in lower case on HTTP/2).
    headers: String,
    body: String,
}

impl Reply {
    /// The body as a `Status`, checked to be a failure with this code.
    fn status(&self, code: u16, reason: &str) -> Value {
        assert_eq!(self.code, code, "HTTP status; body: {}", self.body);
        let status: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body));
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["apiVersion"], "v1", "{status}");
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["code"], code, "{status}");
        assert_eq!(status["reason"], reason, "{status}");
        assert!(status["message"].is_string(), "{status}");
        status
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// Values of the `Warning` headers.
    fn warnings(&self) -> Vec<&str> {
        self.headers
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("warning").then(|| value.trim())
            })
            .collect()
    }
}

/// A raw HTTPS request, trusting the server's CA; `token` None sends no
/// Authorization header.
struct Request<'a> {
    server: &'a Apiserver,
    method: &'a str,
    path: &'a str,
    content_type: Option<&'a str>,
    body: Option<&'a [u8]>,
    token: Option<String>,
    answered_unread: bool,
}

impl<'a> Request<'a> {
    fn new(server: &'a Apiserver, method: &'a str, path: &'a str) -> Self {
        Request {
            server,
            method,
            path,
            content_type: None,
            body: None,
            token: Some(token(server)),
            answered_unread: false,
        }
    }

    /// The server answers this request without reading its body (401,
    /// unknown paths), as kube-apiserver does. Over HTTP/2 it then ends
    /// the stream while curl 7.x may still be about to upload, and such a
    /// curl drops the response; HTTP/1.1 with `Expect: 100-continue` lets
    /// curl wait for the answer before it sends the body.
    fn answered_unread(mut self) -> Self {
        self.answered_unread = true;
        self
    }

    fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.content_type = Some(content_type);
        self.body = Some(body);
        self
    }

    fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    fn send(self) -> Reply {
        let headers = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--request", self.method])
            .arg("--cacert")
            .arg(self.server.data_dir.join("pki/ca.crt"))
            .arg("--dump-header")
            .arg(headers.path())
            .args(["--write-out", "\n%{http_code}"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = &self.token {
            cmd.args(["--header", &format!("Authorization: Bearer {t}")]);
        }
        if self.answered_unread {
            cmd.args(["--http1.1", "--header", "Expect: 100-continue"]);
        }
        if let Some(ct) = self.content_type {
            cmd.args(["--header", &format!("Content-Type: {ct}")]);
        }
        if self.body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        cmd.arg(format!(
            "https://127.0.0.1:{}{}",
            self.server.port, self.path
        ));
        let mut child = cmd.spawn().expect("curl runs");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(body) = self.body {
            stdin.write_all(body).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl {} {} failed: {}",
            self.method,
            self.path,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let (body, code) = stdout.rsplit_once('\n').unwrap();
        Reply {
            code: code.trim().parse().unwrap(),
            headers: std::fs::read_to_string(headers.path()).unwrap(),
            body: body.to_string(),
        }
    }
}

fn get(server: &Apiserver, path: &str) -> Reply {
    Request::new(server, "GET", path).send()
}

fn post_json(server: &Apiserver, path: &str, body: &Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    Request::new(server, "POST", path)
        .body("application/json", &body)
        .send()
}

/// A POST the server refuses without reading its body.
fn post_json_answered_unread(server: &Apiserver, path: &str, body: &Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    Request::new(server, "POST", path)
        .answered_unread()
        .body("application/json", &body)
        .send()
}

/// Names of the objects in a collection, leaving out the API server's own
/// `kubernetes` Service (and its endpoints), which every cluster has.
fn names(server: &Apiserver, collection: &str) -> Vec<String> {
    let reply = get(server, collection);
    assert_eq!(reply.code, 200, "{}", reply.body);
    reply.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .filter(|n| n != "kubernetes")
        .collect()
}

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const SERVICES: &str = "/api/v1/namespaces/default/services";

fn configmap(name: &str, value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"key": value},
    })
}

#[test]
fn malformed_json_and_yaml_are_refused_and_nothing_is_stored() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start();
    let bad_bodies: [(&str, &[u8]); 5] = [
        // JSON cut short.
        (
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"broken""#,
        ),
        // JSON with a trailing comma.
        (
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"broken",}}"#,
        ),
        // Not an object.
        ("application/json", br#"["ConfigMap", "broken"]"#),
        // YAML with an unclosed flow sequence.
        (
            "application/yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  key: [a, b\n",
        ),
        // YAML with inconsistent indentation.
        (
            "application/yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n name: broken\n  labels: x\n",
        ),
    ];
    for (content_type, body) in bad_bodies {
        let reply = Request::new(&server, "POST", CONFIGMAPS)
            .body(content_type, body)
            .send();
        let status = reply.status(400, "BadRequest");
        assert!(!status["message"].as_str().unwrap().is_empty(), "{status}");
    }
    // A body in a format the server does not read.
    let reply = Request::new(&server, "POST", CONFIGMAPS)
        .body("text/plain", b"name=broken")
        .send();
    reply.status(415, "UnsupportedMediaType");

    assert!(names(&server, CONFIGMAPS).is_empty());
    let status = get(&server, &format!("{CONFIGMAPS}/broken")).status(404, "NotFound");
    assert_eq!(status["message"], r#"configmaps "broken" not found"#);
    assert_eq!(
        status["details"],
        json!({"name": "broken", "kind": "configmaps"})
    );

    // The same object, well formed, is accepted in both formats.
    let reply = Request::new(&server, "POST", CONFIGMAPS)
        .body(
            "application/yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\ndata:\n  key: '[a, b'\n",
        )
        .send();
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(reply.json()["data"]["key"], "[a, b");
    assert_eq!(names(&server, CONFIGMAPS), ["fine"]);
}

#[test]
fn unknown_kinds_and_paths_are_not_found() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start();
    for path in [
        "/api/v1/namespaces/default/widgets",
        "/api/v1/widgets",
        "/apis/example.com/v1/widgets",
        "/apis/example.com/v1",
        "/apis/example.com",
        "/apis/apps/v2/namespaces/default/deployments",
        "/apis/apps/v2",
        "/api/v2/pods",
        "/api/v1/namespaces/default/services/web/bogus",
        "/no/such/path",
    ] {
        let status = get(&server, path).status(404, "NotFound");
        assert_eq!(
            status["message"], "the server could not find the requested resource",
            "{path}"
        );
    }
    let reply = post_json_answered_unread(
        &server,
        "/apis/example.com/v1/namespaces/default/widgets",
        &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
    );
    reply.status(404, "NotFound");
    let reply = post_json_answered_unread(
        &server,
        "/apis/apps/v2/namespaces/default/deployments",
        &json!({"apiVersion": "apps/v2", "kind": "Deployment", "metadata": {"name": "d"}}),
    );
    reply.status(404, "NotFound");
    assert!(names(&server, "/apis/apps/v1/deployments").is_empty());
}

#[test]
fn kubectl_reports_unknown_kinds_and_api_versions() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    let out = server.kubectl(&["get", "widgets"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"error: the server doesn't have a resource type "widgets""#
    );

    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n";
    let out = server.kubectl_stdin(&["create", "-f", "-"], Some(widget));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"no matches for kind "Widget" in version "example.com/v1""#),
        "{err}"
    );

    let deployment = "\
apiVersion: apps/v2
kind: Deployment
metadata:
  name: nginx
spec:
  replicas: 1
";
    for verb in ["create", "apply"] {
        let out = server.kubectl_stdin(&[verb, "-f", "-"], Some(deployment));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(r#"no matches for kind "Deployment" in version "apps/v2""#),
            "{verb}: {err}"
        );
    }
    let out = server.kubectl(&["get", "deploy", "-A", "-o", "name"]);
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn a_body_that_does_not_match_the_url_is_a_bad_request() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start();
    let cases = [
        (
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
            "the API version in the data (apps/v1) does not match the expected API version (v1)",
        ),
        (
            json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            "the API version in the data (v2) does not match the expected API version (v1)",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
            "the kind in the data (Secret) does not match the expected kind (ConfigMap)",
        ),
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}),
            "the namespace of the provided object does not match the namespace sent on the request",
        ),
    ];
    for (body, message) in cases {
        let status = post_json(&server, CONFIGMAPS, &body).status(400, "BadRequest");
        assert_eq!(status["message"], message);
    }
    assert!(names(&server, CONFIGMAPS).is_empty());
    assert!(names(&server, "/api/v1/namespaces/kube-system/configmaps").is_empty());
    assert!(names(&server, "/apis/apps/v1/deployments").is_empty());

    // A PUT whose body names another object.
    let reply = post_json(&server, CONFIGMAPS, &configmap("a", "1"));
    assert_eq!(reply.code, 201, "{}", reply.body);
    let body = serde_json::to_vec(&configmap("b", "2")).unwrap();
    let status = Request::new(&server, "PUT", &format!("{CONFIGMAPS}/a"))
        .body("application/json", &body)
        .send()
        .status(400, "BadRequest");
    assert_eq!(
        status["message"],
        "the name of the object (b) does not match the name on the URL (a)"
    );
    assert_eq!(names(&server, CONFIGMAPS), ["a"]);
    assert_eq!(
        get(&server, &format!("{CONFIGMAPS}/a")).json()["data"]["key"],
        "1"
    );
}

#[test]
fn names_that_are_not_dns_1123_are_invalid() {
    if !support::kubectl_available() || !curl_available() {
        return;
    }
    let server = Apiserver::start();
    let service = "\
apiVersion: v1
kind: Service
metadata:
  name: Bad_Name
spec:
  ports:
  - port: 80
";
    let out = server.kubectl_stdin(&["create", "-f", "-"], Some(service));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(r#"The Service "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a DNS-1035 label must consist of lower case alphanumeric characters or '-'"#),
        "{err}"
    );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], Some(service));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"The Service "Bad_Name" is invalid"#));

    // The Status behind it.
    let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "Bad_Name"},
        "spec": {"ports": [{"port": 80}]}});
    let status = post_json(&server, SERVICES, &body).status(422, "Invalid");
    assert_eq!(status["details"]["name"], "Bad_Name");
    assert_eq!(status["details"]["kind"], "Service");
    let causes = status["details"]["causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{status}");
    assert_eq!(causes[0]["field"], "metadata.name");
    assert_eq!(causes[0]["reason"], "FieldValueInvalid");
    assert!(
        causes[0]["message"]
            .as_str()
            .unwrap()
            .starts_with(r#"Invalid value: "Bad_Name""#),
        "{status}"
    );

    // Names of most kinds are DNS-1123 subdomains: dots are fine,
    // underscores and capitals are not, and 253 characters at most.
    let status = post_json(&server, CONFIGMAPS, &configmap("Bad_Name", "x")).status(422, "Invalid");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with(r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#),
        "{message}"
    );
    let long = "a".repeat(254);
    let status = post_json(&server, CONFIGMAPS, &configmap(&long, "x")).status(422, "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("must be no more than 253 characters"),
        "{status}"
    );
    let reply = post_json(&server, CONFIGMAPS, &configmap("web.config", "x"));
    assert_eq!(reply.code, 201, "{}", reply.body);

    // A missing name.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    let status = post_json(&server, CONFIGMAPS, &body).status(422, "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");

    assert!(names(&server, SERVICES).is_empty());
    assert_eq!(names(&server, CONFIGMAPS), ["web.config"]);
    let out = server.kubectl_ok(&["get", "svc", "-o", "name"]);
    assert_eq!(out.trim(), "service/kubernetes");
}

#[test]
fn objects_over_the_size_limit_are_refused() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start_with(&["--max-object-bytes", "4096"]);
    let status =
        post_json_answered_unread(&server, CONFIGMAPS, &configmap("big", &"x".repeat(8000)))
            .status(413, "RequestEntityTooLarge");
    assert_eq!(status["message"], "Request entity too large: limit is 4096");
    assert!(names(&server, CONFIGMAPS).is_empty());

    // A small object is fine; a patch that would make it too big is not,
    // even though the patch itself is small.
    let reply = post_json(&server, CONFIGMAPS, &configmap("small", &"x".repeat(2500)));
    assert_eq!(reply.code, 201, "{}", reply.body);
    let before = reply.json();
    let patch = serde_json::to_vec(&json!({"data": {"more": "y".repeat(2500)}})).unwrap();
    Request::new(&server, "PATCH", &format!("{CONFIGMAPS}/small"))
        .body("application/merge-patch+json", &patch)
        .send()
        .status(413, "RequestEntityTooLarge");
    // So is an update.
    let mut bigger = before.clone();
    bigger["data"]["more"] = json!("y".repeat(2500));
    let body = serde_json::to_vec(&bigger).unwrap();
    Request::new(&server, "PUT", &format!("{CONFIGMAPS}/small"))
        .answered_unread()
        .body("application/json", &body)
        .send()
        .status(413, "RequestEntityTooLarge");
    let after = get(&server, &format!("{CONFIGMAPS}/small")).json();
    assert_eq!(after, before, "the refused writes changed the object");
}

#[test]
fn default_size_limit_is_three_mebibytes() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start();
    let status = post_json_answered_unread(
        &server,
        CONFIGMAPS,
        &configmap("big", &"x".repeat(3 * 1024 * 1024)),
    )
    .status(413, "RequestEntityTooLarge");
    assert_eq!(
        status["message"],
        "Request entity too large: limit is 3145728"
    );
    assert!(names(&server, CONFIGMAPS).is_empty());
    let reply = post_json(
        &server,
        CONFIGMAPS,
        &configmap("big", &"x".repeat(1024 * 1024)),
    );
    assert_eq!(reply.code, 201, "a 1 MiB object fits");
}

#[test]
fn kubectl_reports_objects_over_the_size_limit() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start_with(&["--max-object-bytes", "4096"]);
    let manifest = serde_json::to_string(&configmap("big", &"x".repeat(8000))).unwrap();
    let out = server.kubectl_stdin(&["create", "-f", "-"], Some(&manifest));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (RequestEntityTooLarge): error when creating "STDIN": Request entity too large: limit is 4096"#
    );
    let out = server.kubectl(&["get", "configmaps", "-o", "name"]);
    assert!(out.status.success() && out.stdout.is_empty());
}

/// A Service with one field its schema does not have.
fn service_with_unknown_field(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"bogus": true, "ports": [{"port": 80}]},
    })
}

#[test]
fn unknown_fields_follow_field_validation() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start();
    let body = service_with_unknown_field("strict");
    let status = post_json(
        &server,
        &format!("{SERVICES}?fieldValidation=Strict"),
        &body,
    )
    .status(400, "BadRequest");
    assert_eq!(
        status["message"],
        r#"Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.bogus""#
    );
    assert!(names(&server, SERVICES).is_empty());

    // Warn (the default) stores the object without the field and says so.
    for (name, query) in [("warn", "?fieldValidation=Warn"), ("default", "")] {
        let reply = post_json(
            &server,
            &format!("{SERVICES}{query}"),
            &service_with_unknown_field(name),
        );
        assert_eq!(reply.code, 201, "{}", reply.body);
        assert_eq!(
            reply.warnings(),
            [r#"299 - "unknown field \"spec.bogus\"""#],
            "{}",
            reply.headers
        );
        assert!(reply.json()["spec"].get("bogus").is_none());
    }

    // Ignore drops it silently.
    let reply = post_json(
        &server,
        &format!("{SERVICES}?fieldValidation=Ignore"),
        &service_with_unknown_field("ignore"),
    );
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert!(reply.warnings().is_empty(), "{}", reply.headers);
    let stored = get(&server, &format!("{SERVICES}/ignore")).json();
    // Stored with the API's defaults and without the unknown field.
    assert_eq!(
        stored["spec"]["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
    );
    assert!(stored["spec"].get("bogus").is_none(), "{stored}");

    // Strict applies to the result of a patch as well.
    let patch = br#"{"spec":{"bogus":true}}"#;
    let status = Request::new(
        &server,
        "PATCH",
        &format!("{SERVICES}/ignore?fieldValidation=Strict"),
    )
    .body("application/strategic-merge-patch+json", patch)
    .send()
    .status(400, "BadRequest");
    assert_eq!(
        status["message"],
        r#"strict decoding error: unknown field "spec.bogus""#
    );
    assert_eq!(get(&server, &format!("{SERVICES}/ignore")).json(), stored);

    // An unknown mode is refused.
    let status = post_json(
        &server,
        &format!("{SERVICES}?fieldValidation=Loose"),
        &service_with_unknown_field("loose"),
    )
    .status(400, "BadRequest");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("fieldValidation")
    );
    let mut stored_names = names(&server, SERVICES);
    stored_names.sort();
    assert_eq!(stored_names, ["default", "ignore", "warn"]);
}

#[test]
fn kubectl_validation_of_unknown_fields() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    let manifest = "\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  bogus: true
  ports:
  - port: 80
";
    // kubectl validates strictly by default, on the server.
    for verb in ["create", "apply"] {
        let out = server.kubectl_stdin(&[verb, "-f", "-"], Some(manifest));
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            r#"Error from server (BadRequest): error when creating "STDIN": Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.bogus""#,
            "{verb}"
        );
    }
    let out = server.kubectl_ok(&["get", "svc", "-o", "name"]);
    assert_eq!(out.trim(), "service/kubernetes");

    let out = server.kubectl_stdin(&["create", "--validate=warn", "-f", "-"], Some(manifest));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "service/web created"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Warning: unknown field "spec.bogus""#
    );
    let out = server.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec}"]);
    assert!(!out.contains("bogus"), "{out}");

    // apply on the existing object sends a patch: strict too.
    let changed = manifest.replace("  name: web\n", "  name: web\n  labels:\n    tier: web\n");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], Some(&changed));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );
    let out = server.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.metadata.labels}"]);
    assert_eq!(out, "");

    let out = server.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(&changed));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("bogus"));
    let out = server.kubectl_ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.metadata.labels.tier}",
    ]);
    assert_eq!(out, "web");
}

#[test]
fn patches_that_do_not_apply_change_nothing() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start();
    let reply = post_json(&server, CONFIGMAPS, &configmap("settings", "1"));
    assert_eq!(reply.code, 201, "{}", reply.body);
    let before = reply.json();
    let path = format!("{CONFIGMAPS}/settings");
    let json_patch = |patch: &str| {
        Request::new(&server, "PATCH", &path)
            .body("application/json-patch+json", patch.as_bytes())
            .send()
    };

    // A failing test operation stops the whole patch.
    json_patch(r#"[{"op":"add","path":"/data/other","value":"2"},{"op":"test","path":"/data/key","value":"0"}]"#)
        .status(422, "Invalid");
    // Removing or replacing what is not there.
    json_patch(r#"[{"op":"remove","path":"/data/missing"}]"#).status(422, "Invalid");
    json_patch(r#"[{"op":"replace","path":"/spec/nothing","value":1}]"#).status(422, "Invalid");
    // Not a JSON patch at all.
    json_patch(r#"{"data":{"key":"2"}}"#).status(400, "BadRequest");
    json_patch(r#"[{"op":"add","#).status(400, "BadRequest");
    // Malformed merge and strategic patches.
    for content_type in [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        Request::new(&server, "PATCH", &path)
            .body(content_type, br#"{"data":"#)
            .send()
            .status(400, "BadRequest");
    }
    // A patch type the server does not know.
    Request::new(&server, "PATCH", &path)
        .answered_unread()
        .body("application/json", br#"{"data":{"key":"2"}}"#)
        .send()
        .status(415, "UnsupportedMediaType");
    // A patch that would make the object invalid.
    Request::new(&server, "PATCH", &path)
        .body(
            "application/merge-patch+json",
            br#"{"metadata":{"labels":{"bad label":"x"}}}"#,
        )
        .send()
        .status(422, "Invalid");
    // A patch of something that does not exist.
    Request::new(&server, "PATCH", &format!("{CONFIGMAPS}/missing"))
        .body("application/merge-patch+json", br#"{"data":{"key":"2"}}"#)
        .send()
        .status(404, "NotFound");

    assert_eq!(
        get(&server, &path).json(),
        before,
        "a refused patch changed the object"
    );
    assert_eq!(names(&server, CONFIGMAPS), ["settings"]);
}

#[test]
fn kubectl_patch_that_does_not_apply() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    let manifest = serde_json::to_string(&configmap("settings", "1")).unwrap();
    server.kubectl_stdin(&["create", "-f", "-"], Some(&manifest));
    let before = server.kubectl_ok(&["get", "cm", "settings", "-o", "json"]);
    let out = server.kubectl(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/key","value":"0"},{"op":"replace","path":"/data/key","value":"2"}]"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("The request is invalid"), "{err}");
    let out = server.kubectl(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "settings", "-o", "json"]),
        before
    );
}

#[test]
fn requests_without_a_valid_token_are_unauthorized() {
    if !curl_available() {
        return;
    }
    let server = Apiserver::start();
    for token in [None, Some("wrong"), Some("")] {
        for path in [
            "/api",
            "/apis",
            "/api/v1/namespaces",
            "/openapi/v3",
            "/api/v1/namespaces/default/configmaps/x",
        ] {
            let reply = Request::new(&server, "GET", path).token(token).send();
            let status = reply.status(401, "Unauthorized");
            assert_eq!(status["message"], "Unauthorized");
        }
        let body = serde_json::to_vec(&configmap("sneaky", "x")).unwrap();
        Request::new(&server, "POST", CONFIGMAPS)
            .answered_unread()
            .token(token)
            .body("application/json", &body)
            .send()
            .status(401, "Unauthorized");
    }
    assert!(names(&server, CONFIGMAPS).is_empty());

    // Health and version answer everyone.
    for path in ["/healthz", "/livez", "/readyz"] {
        let reply = Request::new(&server, "GET", path).token(None).send();
        assert_eq!((reply.code, reply.body.as_str()), (200, "ok"), "{path}");
    }
    let reply = Request::new(&server, "GET", "/version").token(None).send();
    assert_eq!(reply.code, 200);
    let version = reply.json();
    assert_eq!(version["major"], "1");
    assert!(
        version["gitVersion"].as_str().unwrap().starts_with("v1."),
        "{version}"
    );
}

#[test]
fn kubectl_with_a_wrong_token_is_unauthorized() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    let out = server.kubectl(&["get", "ns", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    // With no discovery cache yet, kubectl fails on discovery and words
    // the 401 as client-go does there.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("error: You must be logged in to the server (")),
        "{err}"
    );
    // With the cache filled by an authorised call, the 401 comes from the
    // list itself.
    server.kubectl_ok(&["get", "ns"]);
    let out = server.kubectl(&["get", "ns", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: You must be logged in to the server (Unauthorized)"
    );
    // The version command still shows the server's version.
    let out = server.kubectl(&["version", "--token", "wrong", "-o", "json"]);
    let version: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(version["serverVersion"]["major"], "1");
}
