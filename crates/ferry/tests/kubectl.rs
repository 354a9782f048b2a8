//! The real `kubectl` against `ferry apiserver`, with manifests like the
//! ones in MISSION.md §6: create, apply (three-way merge), get in every
//! output format, watch, label, annotate, the three patch types, scale,
//! delete, describe, `get all -A`, and the `-o wide` columns of every kind
//! Ferry's components show.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Apiserver;

const NAMESPACE: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: yuchaoit
";

/// The nginx Deployment and its NodePort Service. Lines with `tier: web`
/// are the ones the three-way-merge test removes again.
const NGINX: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx
  namespace: yuchaoit
  labels:
    app: nginx
    tier: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.1
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: nginx
  namespace: yuchaoit
  labels:
    app: nginx
spec:
  type: NodePort
  selector:
    app: nginx
    tier: web
  ports:
  - name: http
    port: 80
    targetPort: 80
    nodePort: 30120
";

/// A pod of the nginx app, as its ReplicaSet would create it.
fn nginx_pod(name: &str, app: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: yuchaoit
  labels:
    app: {app}
spec:
  containers:
  - name: nginx
    image: nginx:1.14.1
    ports:
    - containerPort: 80
"
    )
}

fn without_tier(manifest: &str) -> String {
    manifest
        .lines()
        .filter(|l| !l.contains("tier: web"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Runs kubectl with `stdin` and returns stdout; fails the test on a
/// non-zero exit.
fn ok_stdin(server: &Apiserver, args: &[&str], stdin: &str) -> String {
    let out = server.kubectl_stdin(args, Some(stdin));
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs kubectl, expects it to fail, and returns stderr.
fn fails(server: &Apiserver, args: &[&str]) -> String {
    let out = server.kubectl(args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn get_json(server: &Apiserver, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).unwrap()
}

fn deployment(server: &Apiserver) -> Value {
    get_json(server, &["-n", "yuchaoit", "deployment", "nginx"])
}

fn service(server: &Apiserver) -> Value {
    get_json(server, &["-n", "yuchaoit", "service", "nginx"])
}

/// Creates the namespace, the Deployment and the Service from stdin.
fn create_nginx(server: &Apiserver) {
    ok_stdin(server, &["create", "-f", "-"], NAMESPACE);
    ok_stdin(server, &["create", "-f", "-"], NGINX);
}

/// Lines of kubectl's output, without trailing spaces.
fn lines(out: &str) -> Vec<&str> {
    out.lines().map(str::trim_end).collect()
}

/// The cells of a table line: columns are separated by at least two
/// spaces, so headers like `NOMINATED NODE` stay one cell.
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The table whose first row starts with `name` (kubectl prints one table
/// per kind, separated by blank lines): header cells and the row's cells.
fn table_row<'a>(out: &'a str, name: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    for block in out.split("\n\n") {
        let mut rows = block.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = rows.next() else { continue };
        for row in rows {
            let row_cells = cells(row);
            if row_cells.contains(&name) {
                return (cells(header), row_cells);
            }
        }
    }
    panic!("no row {name:?} in:\n{out}");
}

/// The value of `Field:` in `kubectl describe` output.
fn described<'a>(out: &'a str, field: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field:?} line in:\n{out}"))
        .trim()
}

#[test]
fn create_from_files_and_get_in_every_format() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    let ns_file = server.data_dir.join("namespace.yml");
    let app_file = server.data_dir.join("deploy-nginx.yml");
    std::fs::write(&ns_file, NAMESPACE).unwrap();
    std::fs::write(&app_file, NGINX).unwrap();
    let ns_file = ns_file.to_str().unwrap();
    let app_file = app_file.to_str().unwrap();

    let out = server.kubectl_ok(&["create", "-f", ns_file]);
    assert_eq!(lines(&out), ["namespace/yuchaoit created"]);
    let out = server.kubectl_ok(&["create", "-f", app_file]);
    assert_eq!(
        lines(&out),
        ["deployment.apps/nginx created", "service/nginx created"]
    );
    let err = fails(&server, &["create", "-f", app_file]);
    assert!(
        err.lines().any(|l| l
            .starts_with("Error from server (AlreadyExists): error when creating")
            && l.ends_with(r#"deployments.apps "nginx" already exists"#)),
        "{err}"
    );

    // -o json: the stored objects, with what the server fills in.
    let deploy = deployment(&server);
    assert_eq!(deploy["kind"], "Deployment");
    assert_eq!(deploy["apiVersion"], "apps/v1");
    assert_eq!(deploy["metadata"]["namespace"], "yuchaoit");
    assert_eq!(deploy["metadata"]["generation"], 1);
    assert!(
        deploy["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert!(deploy["metadata"]["creationTimestamp"].is_string());
    assert!(deploy["metadata"]["resourceVersion"].is_string());
    assert_eq!(deploy["spec"]["replicas"], 3);
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.14.1");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    let svc = service(&server);
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30120);
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": "nginx", "tier": "web"})
    );

    // -o yaml.
    let yaml = server.kubectl_ok(&["-n", "yuchaoit", "get", "deploy", "nginx", "-o", "yaml"]);
    for expected in [
        "apiVersion: apps/v1",
        "kind: Deployment",
        "  name: nginx",
        "  namespace: yuchaoit",
        "  replicas: 3",
        "      - image: nginx:1.14.1",
        "        - containerPort: 80",
    ] {
        assert!(
            yaml.lines().any(|l| l == expected),
            "no {expected:?} in:\n{yaml}"
        );
    }
    let yaml = server.kubectl_ok(&["-n", "yuchaoit", "get", "svc", "nginx", "-o", "yaml"]);
    assert!(
        yaml.lines().any(|l| l.trim() == "nodePort: 30120"),
        "{yaml}"
    );

    // A list as JSON.
    let list = get_json(&server, &["-n", "yuchaoit", "deploy,svc"]);
    assert_eq!(list["kind"], "List");
    let names: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("Deployment", "nginx"), ("Service", "nginx")]);

    // -o wide.
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "deploy", "-o", "wide"]);
    let (header, row) = table_row(&out, "nginx");
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(row[1], "0/3");
    assert_eq!(row[5..], ["nginx", "nginx:1.14.1", "app=nginx"]);
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "svc", "nginx", "-o", "wide"]);
    let (_, row) = table_row(&out, "nginx");
    assert_eq!(row[1], "NodePort");
    assert_eq!(row[4], "80:30120/TCP");
    assert_eq!(row[6], "app=nginx,tier=web");

    // -o name and a missing object.
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "deploy,svc", "-o", "name"]);
    assert_eq!(lines(&out), ["deployment.apps/nginx", "service/nginx"]);
    let err = fails(&server, &["-n", "yuchaoit", "get", "svc", "nope"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): services "nope" not found"#
    );
}

#[test]
fn apply_is_a_three_way_merge() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    let manifest = format!("{NAMESPACE}---\n{NGINX}");
    let out = ok_stdin(&server, &["apply", "-f", "-"], &manifest);
    assert_eq!(
        lines(&out),
        [
            "namespace/yuchaoit created",
            "deployment.apps/nginx created",
            "service/nginx created"
        ]
    );

    // The same manifest again changes nothing.
    let before = deployment(&server)["metadata"]["resourceVersion"].clone();
    let out = ok_stdin(&server, &["apply", "-f", "-"], &manifest);
    assert_eq!(
        lines(&out),
        [
            "namespace/yuchaoit unchanged",
            "deployment.apps/nginx unchanged",
            "service/nginx unchanged"
        ]
    );
    assert_eq!(deployment(&server)["metadata"]["resourceVersion"], before);

    // A label set by someone else is not part of the manifest; apply
    // must leave it alone.
    server.kubectl_ok(&["-n", "yuchaoit", "label", "deploy", "nginx", "owner=ops"]);

    // A changed field is stored.
    let changed = manifest
        .replace("replicas: 3", "replicas: 4")
        .replace("image: nginx:1.14.1", "image: nginx:1.15.0");
    let out = ok_stdin(&server, &["apply", "-f", "-"], &changed);
    assert_eq!(
        lines(&out),
        [
            "namespace/yuchaoit unchanged",
            "deployment.apps/nginx configured",
            "service/nginx unchanged"
        ]
    );
    let deploy = deployment(&server);
    assert_eq!(deploy["spec"]["replicas"], 4);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.15.0"
    );
    assert_eq!(deploy["metadata"]["generation"], 2);

    // Fields removed from the manifest are removed from the object, and
    // only those: the other client's label stays.
    let out = ok_stdin(&server, &["apply", "-f", "-"], &without_tier(&changed));
    assert_eq!(
        lines(&out),
        [
            "namespace/yuchaoit unchanged",
            "deployment.apps/nginx configured",
            "service/nginx configured"
        ]
    );
    let deploy = deployment(&server);
    assert_eq!(
        deploy["metadata"]["labels"],
        json!({"app": "nginx", "owner": "ops"})
    );
    assert_eq!(deploy["spec"]["replicas"], 4);
    let svc = service(&server);
    assert_eq!(svc["spec"]["selector"], json!({"app": "nginx"}));
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30120);
    let last_applied: Value = serde_json::from_str(
        svc["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last_applied["spec"]["selector"], json!({"app": "nginx"}));
}

/// Kills the child process when the test ends, even on a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `kubectl get -w` prints a line with all of `cells`.
fn wait_for_row(lines: &mpsc::Receiver<String>, seen: &mut Vec<String>, wanted: &[&str]) {
    // Not a timing assertion: only a bound so a broken watch fails the
    // test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(line) = seen.iter().find(|l| cells(l).starts_with(wanted)) {
            let line = line.clone();
            seen.retain(|l| *l != line);
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("kubectl get -w never printed {wanted:?}; it printed {seen:#?}"),
        }
    }
}

#[test]
fn get_watch_prints_changes_made_by_another_client() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    create_nginx(&server);

    let mut watch = Command::new("kubectl")
        .args([
            "-n",
            "yuchaoit",
            "get",
            "deploy",
            "-w",
            "--output-watch-events",
        ])
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", &server.data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let _watch = KillOnDrop(watch);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    wait_for_row(
        &rx,
        &mut seen,
        &["EVENT", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
    );
    // The initial list; changes after it arrive as watch events.
    wait_for_row(&rx, &mut seen, &["ADDED", "nginx", "0/3"]);

    server.kubectl_ok(&["-n", "yuchaoit", "scale", "deploy", "nginx", "--replicas=5"]);
    wait_for_row(&rx, &mut seen, &["MODIFIED", "nginx", "0/5"]);

    let web = NGINX
        .split("---")
        .next()
        .unwrap()
        .replace("name: nginx\n", "name: web\n");
    ok_stdin(&server, &["create", "-f", "-"], &web);
    wait_for_row(&rx, &mut seen, &["ADDED", "web", "0/3"]);

    server.kubectl_ok(&["-n", "yuchaoit", "delete", "deploy", "web"]);
    wait_for_row(&rx, &mut seen, &["DELETED", "web"]);
}

#[test]
fn label_and_annotate() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    create_nginx(&server);
    let ns = ["-n", "yuchaoit"];
    let run = |args: &[&str]| {
        let all: Vec<&str> = ns.iter().chain(args).copied().collect();
        server.kubectl_ok(&all)
    };

    assert_eq!(
        run(&["label", "svc", "nginx", "env=prod"]).trim(),
        "service/nginx labeled"
    );
    assert_eq!(
        service(&server)["metadata"]["labels"],
        json!({"app": "nginx", "env": "prod"})
    );
    let err = fails(
        &server,
        &["-n", "yuchaoit", "label", "svc", "nginx", "env=dev"],
    );
    assert!(
        err.contains("'env' already has a value (prod), and --overwrite is false"),
        "{err}"
    );
    run(&["label", "svc", "nginx", "env=dev", "--overwrite"]);
    assert_eq!(service(&server)["metadata"]["labels"]["env"], "dev");
    assert_eq!(
        run(&["label", "svc", "nginx", "env-"]).trim(),
        "service/nginx unlabeled"
    );
    assert_eq!(
        service(&server)["metadata"]["labels"],
        json!({"app": "nginx"})
    );

    // By label selector, over several kinds.
    let out = run(&["label", "deploy,svc", "-l", "app=nginx", "team=web"]);
    assert_eq!(
        lines(&out),
        ["deployment.apps/nginx labeled", "service/nginx labeled"]
    );
    assert_eq!(deployment(&server)["metadata"]["labels"]["team"], "web");
    let out = run(&["get", "deploy,svc", "-l", "team=web", "-o", "name"]);
    assert_eq!(lines(&out), ["deployment.apps/nginx", "service/nginx"]);

    assert_eq!(
        run(&[
            "annotate",
            "deploy",
            "nginx",
            "description=the web frontend"
        ])
        .trim(),
        "deployment.apps/nginx annotated"
    );
    let deploy = deployment(&server);
    assert_eq!(
        deploy["metadata"]["annotations"]["description"],
        "the web frontend"
    );
    // Metadata changes do not move the generation.
    assert_eq!(deploy["metadata"]["generation"], 1);
    run(&["annotate", "deploy", "nginx", "description-"]);
    let annotations = &deployment(&server)["metadata"]["annotations"];
    assert!(
        annotations.get("description").is_none(),
        "annotation still there: {annotations}"
    );
}

#[test]
fn patch_json_merge_and_strategic() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    create_nginx(&server);
    let patch = |kind: &str, patch_type: &str, p: &str| {
        server.kubectl_ok(&[
            "-n", "yuchaoit", "patch", kind, "nginx", "--type", patch_type, "-p", p,
        ])
    };

    // JSON patch (RFC 6902).
    let out = patch(
        "deploy",
        "json",
        r#"[{"op":"replace","path":"/spec/replicas","value":5},
            {"op":"add","path":"/metadata/labels/patched","value":"json"},
            {"op":"remove","path":"/metadata/labels/tier"}]"#,
    );
    assert_eq!(out.trim(), "deployment.apps/nginx patched");
    let deploy = deployment(&server);
    assert_eq!(deploy["spec"]["replicas"], 5);
    assert_eq!(
        deploy["metadata"]["labels"],
        json!({"app": "nginx", "patched": "json"})
    );

    // A patch that changes nothing.
    let out = patch("deploy", "merge", r#"{"spec":{"replicas":5}}"#);
    assert_eq!(out.trim(), "deployment.apps/nginx patched (no change)");

    // JSON merge patch (RFC 7386): null removes a key.
    let out = patch(
        "svc",
        "merge",
        r#"{"metadata":{"labels":{"merged":"yes"}},"spec":{"selector":{"tier":null}}}"#,
    );
    assert_eq!(out.trim(), "service/nginx patched");
    let svc = service(&server);
    assert_eq!(svc["spec"]["selector"], json!({"app": "nginx"}));
    assert_eq!(svc["metadata"]["labels"]["merged"], "yes");

    // Strategic merge patch: lists merge by their merge keys.
    let out = patch(
        "svc",
        "strategic",
        r#"{"spec":{"ports":[{"name":"https","port":443,"targetPort":443}]}}"#,
    );
    assert_eq!(out.trim(), "service/nginx patched");
    let ports: Vec<i64> = service(&server)["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(ports.contains(&80) && ports.contains(&443), "{ports:?}");

    let containers = |server: &Apiserver| -> Vec<(String, String)> {
        deployment(server)["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["image"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // Adding a container keeps the existing one (merge key: name).
    patch(
        "deploy",
        "strategic",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#,
    );
    let mut names: Vec<String> = containers(&server).into_iter().map(|c| c.0).collect();
    names.sort();
    assert_eq!(names, ["nginx", "sidecar"]);
    // Changing one field of a container keeps its other fields.
    patch(
        "deploy",
        "strategic",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.15.0"}]}}}}"#,
    );
    let deploy = deployment(&server);
    let nginx = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nginx")
        .unwrap();
    assert_eq!(nginx["image"], "nginx:1.15.0");
    assert_eq!(
        nginx["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    // The $patch: delete directive removes one element.
    patch(
        "deploy",
        "strategic",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#,
    );
    assert_eq!(
        containers(&server),
        [("nginx".to_string(), "nginx:1.15.0".to_string())]
    );
    // strategic is kubectl's default patch type.
    server.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "patch",
        "deploy",
        "nginx",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.16.0"}]}}}}"#,
    ]);
    assert_eq!(
        containers(&server),
        [("nginx".to_string(), "nginx:1.16.0".to_string())]
    );
}

#[test]
fn scale_deployment_and_replicaset() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    create_nginx(&server);
    let out = server.kubectl_ok(&["-n", "yuchaoit", "scale", "deploy", "nginx", "--replicas=2"]);
    assert_eq!(out.trim(), "deployment.apps/nginx scaled");
    let deploy = deployment(&server);
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["metadata"]["generation"], 2);
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "deploy", "nginx"]);
    assert_eq!(table_row(&out, "nginx").1[1], "0/2");

    // --current-replicas is a precondition.
    let err = fails(
        &server,
        &[
            "-n",
            "yuchaoit",
            "scale",
            "deploy",
            "nginx",
            "--current-replicas=3",
            "--replicas=1",
        ],
    );
    assert!(err.contains("Expected replicas to be 3, was 2"), "{err}");
    assert_eq!(deployment(&server)["spec"]["replicas"], 2);
    server.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "scale",
        "deploy",
        "nginx",
        "--current-replicas=2",
        "--replicas=0",
    ]);
    assert_eq!(deployment(&server)["spec"]["replicas"], 0);

    // ReplicaSets have /scale too.
    let rs = NGINX
        .split("---")
        .next()
        .unwrap()
        .replace("kind: Deployment", "kind: ReplicaSet")
        .replace("name: nginx\n", "name: nginx-5c7588df\n");
    ok_stdin(&server, &["create", "-f", "-"], &rs);
    let out = server.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "scale",
        "rs",
        "nginx-5c7588df",
        "--replicas=1",
    ]);
    assert_eq!(out.trim(), "replicaset.apps/nginx-5c7588df scaled");
    let rs = get_json(&server, &["-n", "yuchaoit", "rs", "nginx-5c7588df"]);
    assert_eq!(rs["spec"]["replicas"], 1);
}

#[test]
fn delete_from_file_and_by_label_selector() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    let ns_file = server.data_dir.join("namespace.yml");
    let app_file = server.data_dir.join("deploy-nginx.yml");
    std::fs::write(&ns_file, NAMESPACE).unwrap();
    std::fs::write(&app_file, NGINX).unwrap();
    let ns_file = ns_file.to_str().unwrap();
    let app_file = app_file.to_str().unwrap();
    server.kubectl_ok(&["create", "-f", ns_file]);
    server.kubectl_ok(&["create", "-f", app_file]);
    for (name, app) in [
        ("nginx-a", "nginx"),
        ("nginx-b", "nginx"),
        ("tools", "debug"),
    ] {
        ok_stdin(&server, &["create", "-f", "-"], &nginx_pod(name, app));
    }

    // By label selector: only the matching pods go.
    let out = server.kubectl_ok(&["-n", "yuchaoit", "delete", "pods", "-l", "app=nginx"]);
    let mut deleted = lines(&out);
    deleted.sort();
    assert_eq!(
        deleted,
        [r#"pod "nginx-a" deleted"#, r#"pod "nginx-b" deleted"#]
    );
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "pods", "-o", "name"]);
    assert_eq!(lines(&out), ["pod/tools"]);
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "pods", "-l", "app=nginx"]);
    assert_eq!(out, "");

    // By manifest.
    let out = server.kubectl_ok(&["delete", "-f", app_file]);
    assert_eq!(
        lines(&out),
        [
            r#"deployment.apps "nginx" deleted"#,
            r#"service "nginx" deleted"#
        ]
    );
    let out = server.kubectl(&["-n", "yuchaoit", "get", "deploy,svc"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "No resources found in yuchaoit namespace."
    );
    let err = fails(&server, &["delete", "-f", app_file]);
    assert!(
        err.contains(r#"Error from server (NotFound): error when deleting"#)
            && err.contains(r#"deployments.apps "nginx" not found"#),
        "{err}"
    );

    // Deleting the namespace deletes what is left in it; kubectl waits
    // until the namespace is gone.
    let out = server.kubectl_ok(&["delete", "-f", ns_file]);
    assert_eq!(out.trim(), r#"namespace "yuchaoit" deleted"#);
    let err = fails(&server, &["get", "ns", "yuchaoit"]);
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): namespaces "yuchaoit" not found"#
    );
    let out = server.kubectl_ok(&["get", "pods", "-A", "-o", "name"]);
    assert_eq!(out, "");
}

#[test]
fn describe_service_pod_and_deployment() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    create_nginx(&server);
    ok_stdin(
        &server,
        &["create", "-f", "-"],
        &nginx_pod("nginx-a", "nginx"),
    );

    let out = server.kubectl_ok(&["-n", "yuchaoit", "describe", "svc", "nginx"]);
    assert_eq!(described(&out, "Name:"), "nginx");
    assert_eq!(described(&out, "Namespace:"), "yuchaoit");
    assert_eq!(described(&out, "Labels:"), "app=nginx");
    assert_eq!(described(&out, "Selector:"), "app=nginx,tier=web");
    assert_eq!(described(&out, "Type:"), "NodePort");
    assert!(described(&out, "Port:").starts_with("http  80/"), "{out}");
    assert!(
        described(&out, "NodePort:").starts_with("http  30120/"),
        "{out}"
    );
    assert_eq!(described(&out, "Events:"), "<none>");

    let out = server.kubectl_ok(&["-n", "yuchaoit", "describe", "deploy", "nginx"]);
    assert_eq!(described(&out, "Name:"), "nginx");
    assert_eq!(described(&out, "Namespace:"), "yuchaoit");
    assert_eq!(described(&out, "Selector:"), "app=nginx");
    assert!(
        described(&out, "Replicas:").starts_with("3 desired"),
        "{out}"
    );
    assert_eq!(described(&out, "Image:"), "nginx:1.14.1");

    let out = server.kubectl_ok(&["-n", "yuchaoit", "describe", "pod", "nginx-a"]);
    assert_eq!(described(&out, "Name:"), "nginx-a");
    assert_eq!(described(&out, "Namespace:"), "yuchaoit");
    assert_eq!(described(&out, "Labels:"), "app=nginx");
    assert_eq!(described(&out, "Status:"), "Pending");
    assert_eq!(described(&out, "Image:"), "nginx:1.14.1");
    assert_eq!(described(&out, "QoS Class:"), "BestEffort");

    // Describing by label selector finds the same objects.
    let out = server.kubectl_ok(&["-n", "yuchaoit", "describe", "pods", "-l", "app=nginx"]);
    assert_eq!(described(&out, "Name:"), "nginx-a");
    let err = fails(&server, &["-n", "yuchaoit", "describe", "svc", "nope"]);
    assert!(err.contains(r#"services "nope" not found"#), "{err}");
}

#[test]
fn get_all_across_namespaces() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    create_nginx(&server);
    let web = NGINX
        .split("---")
        .nth(1)
        .unwrap()
        .replace("name: nginx\n", "name: web\n")
        .replace("namespace: yuchaoit", "namespace: default")
        .replace("nodePort: 30120", "nodePort: 30121");
    ok_stdin(&server, &["create", "-f", "-"], &web);

    let out = server.kubectl_ok(&["get", "all", "-A"]);
    let (header, row) = table_row(&out, "service/nginx");
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(row[0], "yuchaoit");
    assert_eq!(row[5], "80:30120/TCP");
    let (_, row) = table_row(&out, "service/web");
    assert_eq!(row[0], "default");
    let (header, row) = table_row(&out, "deployment.apps/nginx");
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE"
        ]
    );
    assert_eq!(row[..3], ["yuchaoit", "deployment.apps/nginx", "0/3"]);

    // In one namespace there is no NAMESPACE column.
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "all"]);
    let (header, _) = table_row(&out, "deployment.apps/nginx");
    assert_eq!(header[0], "NAME");
    assert!(!out.contains("service/web"), "{out}");
}

/// MISSION.md §6's `-o wide` views, one object of each kind.
const CLUSTER: &str = "\
apiVersion: v1
kind: Node
metadata:
  name: lab-node-1
  labels:
    kubernetes.io/hostname: lab-node-1
---
apiVersion: v1
kind: Pod
metadata:
  name: nginx-7c5ddbdf54-x8f2k
  namespace: yuchaoit
  labels:
    app: nginx
    tier: web
spec:
  nodeName: lab-node-1
  containers:
  - name: nginx
    image: nginx:1.14.1
    ports:
    - containerPort: 80
---
apiVersion: v1
kind: Endpoints
metadata:
  name: nginx
  namespace: yuchaoit
subsets:
- addresses:
  - ip: 10.244.1.5
    nodeName: lab-node-1
  ports:
  - name: http
    port: 80
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: nginx-7c5ddbdf54
  namespace: yuchaoit
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.1
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: nginx
  namespace: yuchaoit
spec:
  rules:
  - host: www.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: nginx
            port:
              number: 80
";

#[test]
fn wide_tables_show_kubernetes_columns() {
    if !support::kubectl_available() {
        return;
    }
    let server = Apiserver::start();
    create_nginx(&server);
    let out = ok_stdin(&server, &["create", "-f", "-"], CLUSTER);
    assert_eq!(
        lines(&out),
        [
            "node/lab-node-1 created",
            "pod/nginx-7c5ddbdf54-x8f2k created",
            "endpoints/nginx created",
            "replicaset.apps/nginx-7c5ddbdf54 created",
            "ingress.networking.k8s.io/nginx created"
        ]
    );
    // What the node agent would report, through /status.
    server.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "patch",
        "pod",
        "nginx-7c5ddbdf54-x8f2k",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"10.244.1.5","podIPs":[{"ip":"10.244.1.5"}]}}"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "node",
        "lab-node-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],
            "addresses":[{"type":"InternalIP","address":"192.168.56.11"}],
            "nodeInfo":{"kubeletVersion":"v1.32.4","osImage":"Debian GNU/Linux 12 (bookworm)",
              "kernelVersion":"6.1.0-28-amd64","containerRuntimeVersion":"containerd://1.7.24"}}}"#,
    ]);

    let out = server.kubectl_ok(&[
        "-n",
        "yuchaoit",
        "get",
        "pods,svc,ep,deploy,rs,ing,nodes",
        "-o",
        "wide",
    ]);
    let (header, row) = table_row(&out, "pod/nginx-7c5ddbdf54-x8f2k");
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    assert_eq!(row[1..4], ["0/1", "Running", "0"]);
    assert_eq!(row[5..], ["10.244.1.5", "lab-node-1", "<none>", "<none>"]);

    let (header, row) = table_row(&out, "service/nginx");
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    assert_eq!(row[1], "NodePort");
    assert_eq!(row[4], "80:30120/TCP");
    assert_eq!(row[6], "app=nginx,tier=web");

    let (header, row) = table_row(&out, "endpoints/nginx");
    assert_eq!(header, ["NAME", "ENDPOINTS", "AGE"]);
    assert_eq!(row[1], "10.244.1.5:80");

    let (header, row) = table_row(&out, "deployment.apps/nginx");
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(row[1..4], ["0/3", "0", "0"]);
    assert_eq!(row[5..], ["nginx", "nginx:1.14.1", "app=nginx"]);

    let (header, row) = table_row(&out, "replicaset.apps/nginx-7c5ddbdf54");
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(row[1..4], ["3", "0", "0"]);
    assert_eq!(row[5..], ["nginx", "nginx:1.14.1", "app=nginx"]);

    let (header, row) = table_row(&out, "ingress.networking.k8s.io/nginx");
    assert_eq!(
        header,
        ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    );
    // ADDRESS is empty, so the row has one cell less than the header.
    assert_eq!(row[1..4], ["<none>", "www.example.com", "80"]);

    let (header, row) = table_row(&out, "node/lab-node-1");
    assert_eq!(
        header,
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    assert_eq!(row[1..3], ["Ready", "<none>"]);
    assert_eq!(
        row[4..],
        [
            "v1.32.4",
            "192.168.56.11",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-28-amd64",
            "containerd://1.7.24"
        ]
    );

    // Without -o wide, the priority-1 columns are left out.
    let out = server.kubectl_ok(&["-n", "yuchaoit", "get", "pods,svc,ep,deploy,rs,ing,nodes"]);
    for (name, expected) in [
        (
            "pod/nginx-7c5ddbdf54-x8f2k",
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"][..],
        ),
        (
            "service/nginx",
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
        ),
        ("endpoints/nginx", &["NAME", "ENDPOINTS", "AGE"]),
        (
            "deployment.apps/nginx",
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ),
        (
            "replicaset.apps/nginx-7c5ddbdf54",
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ),
        (
            "ingress.networking.k8s.io/nginx",
            &["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
        ),
        (
            "node/lab-node-1",
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        ),
    ] {
        assert_eq!(table_row(&out, name).0, expected, "columns of {name}");
    }
}
