//! Pod rows: readiness, the STATUS reason (init containers, sidecars, deletion) and restarts.

use serde_json::{Value, json};

use super::{CREATED_5M_AGO, CREATED_10D_AGO, meta, row};

fn running_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("nginx-7c5b8d6f9-x2x4q", CREATED_5M_AGO),
        "spec": {
            "containers": [{"name": "nginx", "image": "nginx:1.27"}],
            "nodeName": "worker-1",
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "podIP": "10.244.1.5",
            "podIPs": [{"ip": "10.244.1.5"}],
            "containerStatuses": [{
                "name": "nginx",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2024-05-01T11:55:03Z"}},
            }],
        },
    })
}

#[test]
fn pod_running() {
    assert_eq!(
        row("", "Pod", &running_pod()),
        json!([
            "nginx-7c5b8d6f9-x2x4q",
            "1/1",
            "Running",
            "0",
            "5m",
            "10.244.1.5",
            "worker-1",
            "<none>",
            "<none>"
        ])
    );
}

#[test]
fn pod_crash_loop_shows_last_restart() {
    let pod = json!({
        "metadata": meta("api", "2024-04-29T12:00:00Z"),
        "spec": {"containers": [{"name": "api", "image": "api:2"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "api",
                "ready": false,
                "restartCount": 5,
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:57:00Z"}},
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
            }],
        },
    });
    let cells = row("", "Pod", &pod);
    assert_eq!(cells[1], "0/1");
    assert_eq!(cells[2], "CrashLoopBackOff");
    assert_eq!(cells[3], "5 (3m ago)");
    assert_eq!(cells[4], "2d");
    assert_eq!(cells[5], "<none>");
    assert_eq!(cells[6], "<none>");
}

#[test]
fn pod_init_containers() {
    let pod = |init_state: Value, restarts: i64| {
        json!({
            "metadata": meta("web", CREATED_5M_AGO),
            "spec": {
                "initContainers": [{"name": "migrate"}, {"name": "warm-cache"}],
                "containers": [{"name": "web"}],
            },
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "migrate", "ready": false, "restartCount": restarts, "state": init_state,
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:57:00Z"}}},
                    {"name": "warm-cache", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
                ],
                "containerStatuses": [
                    {"name": "web", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
                ],
            },
        })
    };
    let status = |state: Value, restarts: i64| {
        let cells = row("", "Pod", &pod(state, restarts));
        (
            cells[1].as_str().unwrap().to_string(),
            cells[2].as_str().unwrap().to_string(),
            cells[3].as_str().unwrap().to_string(),
        )
    };
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(status(json!({"running": {}}), 0), s("0/1", "Init:0/2", "0"));
    assert_eq!(
        status(json!({"waiting": {"reason": "CrashLoopBackOff"}}), 3),
        s("0/1", "Init:CrashLoopBackOff", "3 (3m ago)")
    );
    assert_eq!(
        status(json!({"terminated": {"exitCode": 1, "reason": "Error"}}), 0),
        s("0/1", "Init:Error", "0")
    );
    assert_eq!(
        status(json!({"terminated": {"exitCode": 137, "signal": 9}}), 0),
        s("0/1", "Init:Signal:9", "0")
    );
    assert_eq!(
        status(json!({"terminated": {"exitCode": 2}}), 0),
        s("0/1", "Init:ExitCode:2", "0")
    );
    // The first init container finished; the second is next.
    assert_eq!(
        status(
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            0
        ),
        s("0/1", "Init:1/2", "0")
    );
}

#[test]
fn pod_with_started_sidecar_counts_it_as_a_container() {
    let pod = json!({
        "metadata": meta("app", CREATED_10D_AGO),
        "spec": {
            "initContainers": [
                {"name": "setup"},
                {"name": "proxy", "restartPolicy": "Always"},
            ],
            "containers": [{"name": "app"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
            "initContainerStatuses": [
                {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "proxy", "restartCount": 1, "started": true, "ready": true, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T07:00:00Z"}}},
            ],
            "containerStatuses": [
                {"name": "app", "restartCount": 0, "ready": true, "state": {"running": {}}},
            ],
        },
    });
    let cells = row("", "Pod", &pod);
    assert_eq!(cells[1], "2/2");
    assert_eq!(cells[2], "Running");
    assert_eq!(cells[3], "1 (5h ago)");
}

#[test]
fn pod_terminating_and_lost() {
    let mut pod = running_pod();
    pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:50Z");
    assert_eq!(row("", "Pod", &pod)[2], "Terminating");

    pod["status"]["reason"] = json!("NodeLost");
    assert_eq!(row("", "Pod", &pod)[2], "Unknown");

    // A pod that already finished keeps its final status while deleted.
    let mut done = json!({
        "metadata": {"name": "job-1", "deletionTimestamp": "2024-05-01T11:59:50Z"},
        "spec": {"containers": [{"name": "job"}]},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"name": "job", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        },
    });
    assert_eq!(
        row("", "Pod", &done),
        json!([
            "job-1",
            "0/1",
            "Completed",
            "0",
            "<unknown>",
            "<none>",
            "<none>",
            "<none>",
            "<none>"
        ])
    );
    done["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    assert_eq!(row("", "Pod", &done)[2], "Completed");
}

#[test]
fn pod_completed_container_with_another_running() {
    let pod = |ready: &str| {
        json!({
            "metadata": meta("batch", CREATED_5M_AGO),
            "spec": {"containers": [{"name": "main"}, {"name": "log"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    {"name": "main", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}},
                ],
            },
        })
    };
    assert_eq!(row("", "Pod", &pod("False"))[2], "NotReady");
    assert_eq!(row("", "Pod", &pod("True"))[2], "Running");
    assert_eq!(row("", "Pod", &pod("True"))[1], "1/2");
}

#[test]
fn pod_scheduling_gated_and_readiness_gates() {
    let gated = json!({
        "metadata": meta("gated", CREATED_5M_AGO),
        "spec": {"containers": [{"name": "c"}], "schedulingGates": [{"name": "example.com/quota"}]},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
    });
    assert_eq!(row("", "Pod", &gated)[2], "SchedulingGated");

    let mut gates = running_pod();
    gates["spec"]["readinessGates"] = json!([
        {"conditionType": "example.com/lb-ready"},
        {"conditionType": "example.com/dns-ready"},
    ]);
    gates["status"]["conditions"] = json!([
        {"type": "example.com/lb-ready", "status": "True"},
        {"type": "example.com/dns-ready", "status": "False"},
    ]);
    gates["status"]["nominatedNodeName"] = json!("worker-2");
    let cells = row("", "Pod", &gates);
    assert_eq!(cells[7], "worker-2");
    assert_eq!(cells[8], "1/2");
}

#[test]
fn pod_ip_prefers_pod_ip_over_pod_ips() {
    let mut pod = running_pod();
    pod["status"]["podIP"] = json!("");
    pod["status"]["podIPs"] = json!([{"ip": "fd00::5"}, {"ip": "10.244.1.9"}]);
    assert_eq!(row("", "Pod", &pod)[5], "fd00::5");
}
