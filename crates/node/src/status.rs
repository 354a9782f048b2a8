//! Pod status as kubelet computes it: container states, phase and
//! conditions. Pure: the worker feeds it what it observed.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// A container's state.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: jiff::Timestamp,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        started_at: Option<jiff::Timestamp>,
        finished_at: jiff::Timestamp,
    },
}

impl State {
    fn to_json(&self) -> Value {
        match self {
            State::Waiting { reason, message } => {
                let mut w = json!({ "reason": reason });
                if let Some(m) = message {
                    w["message"] = m.clone().into();
                }
                json!({ "waiting": w })
            }
            State::Running { started_at } => json!({ "running": { "startedAt": started_at } }),
            State::Terminated {
                exit_code,
                signal,
                reason,
                started_at,
                finished_at,
            } => {
                let mut t =
                    json!({ "exitCode": exit_code, "reason": reason, "finishedAt": finished_at });
                if let Some(s) = signal {
                    t["signal"] = (*s).into();
                }
                if let Some(s) = started_at {
                    t["startedAt"] = json!(s);
                }
                json!({ "terminated": t })
            }
        }
    }
}

/// What the worker knows of one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_state: Option<State>,
    pub ready: bool,
    pub started: bool,
    pub restart_count: i32,
    pub container_id: Option<String>,
}

impl ContainerView {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name, "image": self.image, "imageID": "",
            "ready": self.ready, "started": self.started,
            "restartCount": self.restart_count, "state": self.state.to_json(),
            "lastState": self.last_state.as_ref().map(State::to_json).unwrap_or_else(|| json!({})),
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = id.clone().into();
        }
        v
    }
}

/// Everything the status is computed from.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub sandbox_ready: bool,
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub start_time: jiff::Timestamp,
}

fn succeeded(state: &State) -> bool {
    matches!(state, State::Terminated { exit_code: 0, .. })
}

/// The pod phase (kubelet's getPhase).
pub fn phase(
    restart_policy: &str,
    init: &[ContainerView],
    containers: &[ContainerView],
) -> &'static str {
    let init_done = init.iter().all(|c| succeeded(&c.state));
    if !init_done {
        let failed = init.iter().any(|c| {
            matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0)
                || matches!(c.last_state, Some(State::Terminated { exit_code, .. }) if exit_code != 0)
        });
        return if failed && restart_policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut ok) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    ok += 1;
                }
            }
            State::Waiting { .. } => {
                if matches!(c.last_state, Some(State::Terminated { .. })) {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Always" => "Running",
            _ if stopped == ok => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

/// The `status` object to merge into the Pod. Conditions keep their
/// `lastTransitionTime` while their status does not change.
pub fn status(view: &PodView<'_>, now: jiff::Timestamp) -> Value {
    let policy = view
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let phase = phase(&policy, &view.init, &view.containers);
    let initialized = view.init.iter().all(|c| succeeded(&c.state));
    let containers_ready =
        initialized && !view.containers.is_empty() && view.containers.iter().all(|c| c.ready);
    let old: Vec<_> = view
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = |kind: &str, ok: bool, reason: Option<&str>| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .map(|t| t.0)
            .unwrap_or(now);
        let mut c = json!({ "type": kind, "status": status, "lastTransitionTime": since, "lastProbeTime": null });
        if let (false, Some(r)) = (ok, reason) {
            c["reason"] = r.into();
        }
        c
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox_ready, None),
        condition("Initialized", initialized, Some("ContainersNotInitialized")),
        condition("Ready", containers_ready, Some("ContainersNotReady")),
        condition(
            "ContainersReady",
            containers_ready,
            Some("ContainersNotReady"),
        ),
    ];
    if let Some(scheduled) = old.iter().find(|c| c.type_ == "PodScheduled") {
        conditions.push(serde_json::to_value(scheduled).unwrap_or(Value::Null));
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "startTime": view.start_time,
        "containerStatuses": view.containers.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
    });
    if !view.init.is_empty() {
        status["initContainerStatuses"] = view
            .init
            .iter()
            .map(ContainerView::to_json)
            .collect::<Vec<_>>()
            .into();
    }
    if let Some(ip) = &view.pod_ip {
        status["podIP"] = ip.clone().into();
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    if let Some(ip) = &view.host_ip {
        status["hostIP"] = ip.clone().into();
        status["hostIPs"] = json!([{ "ip": ip }]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: State, last: Option<State>, ready: bool) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "nginx".into(),
            state,
            last_state: last,
            ready,
            started: true,
            restart_count: 0,
            container_id: None,
        }
    }

    fn terminated(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: None,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let running = State::Running {
            started_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let backoff = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        assert_eq!(
            phase("Always", &[], &[view(waiting.clone(), None, false)]),
            "Pending"
        );
        assert_eq!(
            phase("Always", &[], &[view(running.clone(), None, true)]),
            "Running"
        );
        assert_eq!(
            phase("Always", &[], &[view(backoff, Some(terminated(1)), false)]),
            "Running"
        );
        assert_eq!(
            phase("Never", &[], &[view(terminated(0), None, false)]),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", &[], &[view(terminated(2), None, false)]),
            "Failed"
        );
        assert_eq!(
            phase("OnFailure", &[], &[view(terminated(0), None, false)]),
            "Succeeded"
        );
        assert_eq!(
            phase(
                "Always",
                &[view(running, None, false)],
                &[view(waiting, None, false)]
            ),
            "Pending",
            "init containers not done"
        );
        assert_eq!(
            phase("Never", &[view(terminated(1), None, false)], &[]),
            "Failed"
        );
    }

    #[test]
    fn conditions_keep_transition_times() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]}
        }))
        .expect("pod");
        let now: jiff::Timestamp = "2026-02-01T00:00:00Z".parse().expect("time");
        let v = PodView {
            pod: &pod,
            pod_ip: Some("10.244.1.5".into()),
            host_ip: Some("172.30.0.11".into()),
            sandbox_ready: true,
            init: vec![],
            containers: vec![view(State::Running { started_at: now }, None, false)],
            start_time: now,
        };
        let s = status(&v, now);
        let cond = |t: &str| {
            s["conditions"]
                .as_array()
                .expect("conditions")
                .iter()
                .find(|c| c["type"] == t)
                .cloned()
                .expect("condition")
        };
        assert_eq!(cond("Ready")["status"], "False");
        assert_eq!(cond("Ready")["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(cond("Ready")["reason"], "ContainersNotReady");
        assert_eq!(cond("PodScheduled")["status"], "True");
        assert_eq!(cond("Initialized")["status"], "True");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIPs"][0]["ip"], "10.244.1.5");
        assert_eq!(
            s["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2026-02-01T00:00:00Z"
        );
    }
}
