//! One pod's lifecycle, like a kubelet pod worker: sandbox (CNI), init
//! containers, containers with restart policy and back-off, probes,
//! status, and graceful termination.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Event, ObjectReference, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use tokio::sync::{mpsc, watch};

use crate::Config;
use crate::probes::{Kind, ProbeState, Timing};
use crate::runtime::{self, ContainerSpec, Exit, ProbeOutcome, Process, Sandbox};
use crate::sandbox::{self, CniPod};
use crate::status::{ContainerView, PodView, State};

/// Shared by all pod workers.
pub struct Ctx {
    pub client: kube::Client,
    pub config: Config,
    pub exe: PathBuf,
    pub pod_cidr: watch::Receiver<Option<String>>,
    pub mtu: u32,
    pub host_resolv: String,
    /// What the streaming endpoint (logs, exec, attach) sees of the pods.
    pub streams: Arc<crate::streaming::Registry>,
}

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

enum Signal {
    Term,
    Kill,
}

struct Running {
    signals: mpsc::UnboundedSender<Signal>,
    since: Instant,
    started_at: jiff::Timestamp,
    /// Each probe with its spec and the last failure message reported as an
    /// Event (repeats of the same message are not reported again).
    probes: Vec<(
        ProbeState,
        k8s_openapi::api::core::v1::Probe,
        Option<String>,
    )>,
    /// Killed by the agent (liveness/startup failure): restart unless Never.
    killed_for_restart: bool,
}

struct Ctr {
    spec: Container,
    init: bool,
    restart_count: i32,
    state: State,
    last_state: Option<State>,
    ready: bool,
    started: bool,
    running: Option<Running>,
    backoff: Duration,
    next_start: Instant,
    generation: u64,
    /// Finished for good (init succeeded, or no restart by policy).
    done: bool,
}

impl Ctr {
    fn new(spec: Container, init: bool) -> Ctr {
        Ctr {
            spec,
            init,
            restart_count: 0,
            state: State::Waiting {
                reason: if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                }
                .into(),
                message: None,
            },
            last_state: None,
            ready: false,
            started: false,
            running: None,
            backoff: Duration::ZERO,
            next_start: Instant::now(),
            generation: 0,
            done: false,
        }
    }

    fn view(&self, uid: &str) -> ContainerView {
        ContainerView {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            state: self.state.clone(),
            last_state: self.last_state.clone(),
            ready: self.ready,
            started: self.started,
            restart_count: self.restart_count,
            container_id: (self.generation > 0)
                .then(|| format!("ferry://{uid}/{}/{}", self.spec.name, self.generation - 1)),
        }
    }
}

fn pod_key(pod: &Pod) -> (String, String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Records a core/v1 Event on the pod, as kubelet does.
async fn event(ctx: &Ctx, pod: &Pod, kind: &str, reason: &str, message: String) {
    let (ns, name, uid) = pod_key(pod);
    let now = jiff::Timestamp::now();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(ns.clone()),
            uid: Some(uid),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(kind.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("kubelet".into()),
            host: Some(ctx.config.node_name.clone()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(ctx.config.node_name.clone()),
        ..Default::default()
    };
    if let Err(e) = Api::<Event>::namespaced(ctx.client.clone(), &ns)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::debug!("recording event {reason}: {e}");
    }
}

/// The string data of a ConfigMap or a Secret (`None`: no such object).
async fn key_source(
    ctx: &Ctx,
    ns: &str,
    secret: bool,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    if secret {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        Ok(api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .map(|s| {
                let mut data: BTreeMap<String, String> = s.string_data.unwrap_or_default();
                for (k, v) in s.data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                data
            }))
    } else {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        Ok(api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .map(|cm| cm.data.unwrap_or_default()))
    }
}

/// Values of `configMapKeyRef`/`secretKeyRef` env entries, with kubelet's
/// messages for what is missing; `optional` ones may be absent.
async fn resolve_refs(
    ctx: &Ctx,
    ns: &str,
    c: &Container,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for var in c.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        let (secret, name, key, optional) = match (&from.config_map_key_ref, &from.secret_key_ref) {
            (Some(r), _) => (false, &r.name, &r.key, r.optional == Some(true)),
            (None, Some(r)) => (true, &r.name, &r.key, r.optional == Some(true)),
            (None, None) => {
                if from.resource_field_ref.is_some() {
                    out.insert(var.name.clone(), "0".into());
                }
                continue;
            }
        };
        let (kind, lower) = if secret {
            ("Secret", "secret")
        } else {
            ("ConfigMap", "configmap")
        };
        match key_source(ctx, ns, secret, name).await? {
            Some(data) => match data.get(key) {
                Some(v) => {
                    out.insert(var.name.clone(), v.clone());
                }
                None if optional => {}
                None => return Err(format!("couldn't find key {key} in {kind} {ns}/{name}")),
            },
            None if optional => {}
            None => return Err(format!("{lower} \"{name}\" not found")),
        }
    }
    Ok(out)
}

/// What a pod's sandbox gave it.
struct SandboxInfo {
    sandbox: Sandbox,
    pod_ip: String,
    netns_name: Option<String>,
}

struct Worker {
    ctx: Arc<Ctx>,
    pod: Pod,
    ctrs: Vec<Ctr>,
    sandbox: Option<SandboxInfo>,
    start_time: jiff::Timestamp,
    exits: mpsc::UnboundedSender<(usize, u64, Exit)>,
    /// Container exits: (container index, generation, how it ended).
    exit_rx: mpsc::UnboundedReceiver<(usize, u64, Exit)>,
    last_status: Option<serde_json::Value>,
}

/// Runs one pod until it is deleted and torn down.
pub async fn run(ctx: Arc<Ctx>, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(pod) = updates.borrow().clone() else {
        return;
    };
    let (exits, exit_rx) = mpsc::unbounded_channel();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ctrs: Vec<Ctr> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| Ctr::new(c.clone(), true))
        .collect();
    ctrs.extend(spec.containers.iter().map(|c| Ctr::new(c.clone(), false)));
    // After an agent restart: carry on the counts, so the next start of a
    // container that ran before counts as a restart.
    let previous = pod.status.as_ref();
    for c in &mut ctrs {
        let statuses = if c.init {
            previous.and_then(|s| s.init_container_statuses.as_ref())
        } else {
            previous.and_then(|s| s.container_statuses.as_ref())
        };
        if let Some(prev) = statuses
            .into_iter()
            .flatten()
            .find(|s| s.name == c.spec.name)
        {
            c.restart_count = prev.restart_count;
            if let Some(generation) = prev
                .container_id
                .as_deref()
                .and_then(|id| id.rsplit('/').next())
                .and_then(|g| g.parse::<u64>().ok())
            {
                c.generation = generation + 1;
            }
            if c.init
                && prev
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0)
            {
                c.done = true;
                c.state = crate::status::State::Terminated {
                    exit_code: 0,
                    signal: None,
                    reason: "Completed".into(),
                    started_at: None,
                    finished_at: jiff::Timestamp::now(),
                };
            }
        }
    }
    let mut w = Worker {
        ctx,
        pod,
        ctrs,
        sandbox: None,
        start_time: jiff::Timestamp::now(),
        exits,
        exit_rx,
        last_status: None,
    };
    let mut sandbox_backoff = Duration::from_secs(1);
    let mut sandbox_retry = Instant::now();
    loop {
        let current = updates.borrow_and_update().clone();
        match current {
            None => {
                w.terminate(Duration::ZERO).await;
                w.teardown().await;
                return;
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                let grace = p
                    .metadata
                    .deletion_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(30);
                w.pod = p;
                w.terminate(Duration::from_secs(grace)).await;
                w.teardown().await;
                w.delete_from_api().await;
                return;
            }
            Some(p) => w.pod = p,
        }
        if w.sandbox.is_none() && Instant::now() >= sandbox_retry {
            match w.create_sandbox().await {
                Ok(info) => {
                    let (ns, name, uid) = pod_key(&w.pod);
                    w.ctx.streams.pod_ready(
                        &ns,
                        &name,
                        &uid,
                        info.sandbox.netns.clone(),
                        sandbox::pod_dir(&w.ctx.config, &uid),
                    );
                    w.sandbox = Some(info);
                }
                Err(e) => {
                    let msg = format!("Failed to create pod sandbox: {e:#}");
                    tracing::warn!(pod = ?pod_key(&w.pod), "{msg}");
                    event(&w.ctx, &w.pod, "Warning", "FailedCreatePodSandBox", msg).await;
                    sandbox_retry = Instant::now() + sandbox_backoff;
                    sandbox_backoff = (sandbox_backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        if w.sandbox.is_some() {
            w.start_due().await;
            w.run_probes().await;
        }
        w.write_status().await;
        // Sleep until something is due: a start, a probe, a sandbox retry,
        // or a status write that failed; updates and exits wake us too.
        let mut wake = w.next_wake();
        if w.sandbox.is_none() {
            wake = wake.min(sandbox_retry);
        }
        if w.last_status.is_none() {
            wake = wake.min(Instant::now() + Duration::from_secs(1));
        }
        let exited = tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    // The manager is gone (agent stopping): leave the pod running.
                    return;
                }
                None
            }
            Some(exit) = w.exit_rx.recv() => Some(exit),
            _ = tokio::time::sleep_until(wake.into()) => None,
        };
        if let Some((i, generation, exit)) = exited {
            w.on_exit(i, generation, exit).await;
        }
    }
}

impl Worker {
    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn host_network(&self) -> bool {
        self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
    }

    async fn create_sandbox(&mut self) -> anyhow::Result<SandboxInfo> {
        let ctx = self.ctx.clone();
        let (ns, name, uid) = pod_key(&self.pod);
        let dir = sandbox::pod_dir(&ctx.config, &uid);
        let hosts_file = dir.join("hosts");
        let resolv_path = dir.join("resolv.conf");
        let resolv = sandbox::resolv_conf(
            &self.pod,
            &ctx.config.cluster_dns,
            &ctx.config.cluster_domain,
            &ctx.host_resolv,
        );
        sandbox::write_file(&resolv_path, &resolv)?;
        if self.host_network() {
            let ip = ctx.config.internal_ip.clone().unwrap_or_default();
            sandbox::write_file(
                &hosts_file,
                &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            )?;
            return Ok(SandboxInfo {
                sandbox: Sandbox {
                    netns: None,
                    hostname: ctx.config.node_name.clone(),
                    hosts_file,
                    resolv_conf: resolv_path,
                },
                pod_ip: ip,
                netns_name: None,
            });
        }
        let cidr = ctx
            .pod_cidr
            .borrow()
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the node has no podCIDR yet"))?;
        let netns_name = sandbox::sandbox_name(&ctx.config.node_name, &ns, &name);
        let netns_path = ferry_netlink::netns::named_path(&netns_name)?;
        let cni_pod = CniPod {
            uid: &uid,
            namespace: &ns,
            name: &name,
            netns: &netns_path,
        };
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name.clone());
        if ferry_netlink::netns::exists(&netns_name) {
            // Left from before an agent restart. Its processes go (their
            // containers restart), but a sandbox that still holds the
            // Pod's IP is kept, as a runtime keeps its sandboxes.
            sandbox::kill_processes_in(&netns_name);
            let known = self.pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            if let Some(ip) = known
                && sandbox::holds_address(&netns_name, &ip).await
            {
                tracing::info!(sandbox = %netns_name, %ip, "reusing the pod sandbox");
                sandbox::write_file(
                    &hosts_file,
                    &sandbox::hosts_file(&self.pod, &ip, &ctx.config.cluster_domain),
                )?;
                return Ok(SandboxInfo {
                    sandbox: Sandbox {
                        netns: Some(netns_path),
                        hostname,
                        hosts_file,
                        resolv_conf: resolv_path,
                    },
                    pod_ip: ip,
                    netns_name: Some(netns_name),
                });
            }
            let _ = sandbox::run_cni(&ctx.config, "DEL", &cni_pod, &cidr, ctx.mtu).await;
            ferry_netlink::netns::delete(&netns_name)?;
        }
        let netns = ferry_netlink::netns::create(&netns_name)?;
        let added = async {
            let out = sandbox::run_cni(&ctx.config, "ADD", &cni_pod, &cidr, ctx.mtu).await?;
            let ip = sandbox::result_ip(&out)?;
            let nl = ferry_netlink::Netlink::connect_in(&netns).await?;
            nl.set_up("lo").await?;
            anyhow::Ok(ip)
        }
        .await;
        let ip = match added {
            Ok(ip) => ip,
            Err(e) => {
                // A failed ADD leaves nothing behind.
                let _ = sandbox::run_cni(&ctx.config, "DEL", &cni_pod, &cidr, ctx.mtu).await;
                let _ = ferry_netlink::netns::delete(&netns_name);
                return Err(e);
            }
        };
        sandbox::write_file(
            &hosts_file,
            &sandbox::hosts_file(&self.pod, &ip, &ctx.config.cluster_domain),
        )?;
        Ok(SandboxInfo {
            sandbox: Sandbox {
                netns: Some(netns_path),
                hostname,
                hosts_file,
                resolv_conf: resolv_path,
            },
            pod_ip: ip,
            netns_name: Some(netns_name),
        })
    }

    /// Starts containers whose turn it is: init containers one at a time,
    /// in order; the others once every init container succeeded.
    async fn start_due(&mut self) {
        let now = Instant::now();
        let mut order = Vec::new();
        for (i, c) in self.ctrs.iter().enumerate() {
            if c.init {
                if c.done {
                    continue;
                }
                order.push(i);
                break;
            }
        }
        let init_pending = self.ctrs.iter().any(|c| c.init && !c.done);
        if !init_pending {
            order.extend((0..self.ctrs.len()).filter(|&i| !self.ctrs[i].init));
        }
        for i in order {
            let c = &self.ctrs[i];
            if c.running.is_none() && !c.done && now >= c.next_start {
                self.start(i).await;
            }
        }
    }

    async fn start(&mut self, i: usize) {
        let ctx = self.ctx.clone();
        let Some(info) = &self.sandbox else { return };
        let (ns, name, uid) = pod_key(&self.pod);
        let spec = self.ctrs[i].spec.clone();
        let resolved = match resolve_refs(&ctx, &ns, &spec).await {
            Ok(r) => r,
            Err(msg) => {
                self.waiting(i, "CreateContainerConfigError", Some(msg.clone()));
                event(
                    &ctx,
                    &self.pod,
                    "Warning",
                    "Failed",
                    format!("Error: {msg}"),
                )
                .await;
                return;
            }
        };
        let env = match runtime::container_env(
            &self.pod,
            &spec,
            Some(&info.pod_ip),
            ctx.config.internal_ip.as_deref(),
            &resolved,
        ) {
            Ok(env) => env,
            Err(msg) => {
                self.waiting(i, "CreateContainerConfigError", Some(msg));
                return;
            }
        };
        let program = match runtime::program_for(&spec, &name, &env) {
            Ok(p) => p,
            Err(unsupported) => {
                if !matches!(&self.ctrs[i].state, State::Waiting { reason, .. } if *reason == unsupported.reason)
                {
                    event(
                        &ctx,
                        &self.pod,
                        "Warning",
                        "Failed",
                        unsupported.message.clone(),
                    )
                    .await;
                }
                self.waiting(i, &unsupported.reason, Some(unsupported.message));
                return;
            }
        };
        let pod_dir = sandbox::pod_dir(&ctx.config, &uid);
        let mut mounts = Vec::new();
        if let runtime::Program::Builtin(runtime::Builtin::Web { root, .. }) = &program {
            // The pod's own document root, writable through `kubectl exec`.
            let html = pod_dir.join("html").join(&spec.name);
            let index = html.join("index.html");
            if let Err(e) = std::fs::create_dir_all(&html).and_then(|()| {
                if index.exists() {
                    Ok(())
                } else {
                    std::fs::write(&index, runtime::web_page(&name))
                }
            }) {
                self.waiting(
                    i,
                    "RunContainerError",
                    Some(format!("{}: {e}", html.display())),
                );
                return;
            }
            mounts.push((html, root.clone()));
        }
        // Each run writes its own log; the registry keeps this run's and
        // the previous one's for `kubectl logs [--previous]`.
        let log_path =
            crate::streaming::log_path(&pod_dir, &spec.name, self.ctrs[i].generation + 1);
        let working_dir = spec
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let spec_run = ContainerSpec {
            sandbox: info.sandbox.clone(),
            program,
            env: env.clone(),
            working_dir: working_dir.clone(),
            log_path: log_path.clone(),
            join_pid: None,
            tty: spec.tty == Some(true),
            mounts,
        };
        let mut process = match Process::spawn(&ctx.exe, &spec_run, spec.stdin == Some(true)) {
            Ok(p) => p,
            Err(e) => {
                self.waiting(i, "RunContainerError", Some(e.to_string()));
                return;
            }
        };
        let c = &mut self.ctrs[i];
        if c.generation > 0 {
            c.restart_count += 1;
        }
        c.generation += 1;
        let generation = c.generation;
        let (sig_tx, mut sig_rx) = mpsc::unbounded_channel();
        let exits = self.exits.clone();
        let pid = process.pid();
        ctx.streams.started(
            &ns,
            &name,
            &spec.name,
            spec.stdin_once == Some(true),
            log_path,
            crate::streaming::RunningEntry {
                pid,
                env,
                working_dir,
                console: process.console(),
                attached: Default::default(),
                execs: Default::default(),
            },
        );
        tokio::spawn(async move {
            let exit = loop {
                tokio::select! {
                    exit = process.wait() => break exit,
                    Some(sig) = sig_rx.recv() => match sig {
                        Signal::Term => process.terminate(),
                        Signal::Kill => process.kill(),
                    },
                }
            };
            let _ = exits.send((i, generation, exit));
        });
        let now = Instant::now();
        let started_at = jiff::Timestamp::now();
        let mut probes = Vec::new();
        for (kind, probe) in [
            (Kind::Startup, &spec.startup_probe),
            (Kind::Liveness, &spec.liveness_probe),
            (Kind::Readiness, &spec.readiness_probe),
        ] {
            if let Some(p) = probe {
                probes.push((ProbeState::new(kind, Timing::of(p), now), p.clone(), None));
            }
        }
        c.started = spec.startup_probe.is_none();
        c.ready = c.started && spec.readiness_probe.is_none() && !c.init;
        c.state = State::Running { started_at };
        c.running = Some(Running {
            signals: sig_tx,
            since: now,
            started_at,
            probes,
            killed_for_restart: false,
        });
        tracing::info!(pod = %format!("{ns}/{name}"), container = %spec.name, pid, "container started");
    }

    fn waiting(&mut self, i: usize, reason: &str, message: Option<String>) {
        let c = &mut self.ctrs[i];
        c.state = State::Waiting {
            reason: reason.into(),
            message,
        };
        c.ready = false;
        // Try again later (a ConfigMap may appear).
        c.next_start = Instant::now() + Duration::from_secs(5);
    }

    async fn on_exit(&mut self, i: usize, generation: u64, exit: Exit) {
        let policy = self.restart_policy();
        let (_, name, uid) = pod_key(&self.pod);
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let Some(c) = self.ctrs.get_mut(i) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        let Some(run) = c.running.take() else { return };
        let terminated = State::Terminated {
            exit_code: exit.code,
            signal: exit.signal,
            reason: if exit.code == 0 { "Completed" } else { "Error" }.into(),
            started_at: Some(run.started_at),
            finished_at: jiff::Timestamp::now(),
        };
        c.ready = false;
        let restart = if c.init {
            exit.code != 0 && policy != "Never"
        } else {
            match policy.as_str() {
                "Never" => false,
                "OnFailure" => exit.code != 0 || run.killed_for_restart,
                _ => true,
            }
        };
        self.ctx.streams.exited(
            &ns,
            &name,
            &c.spec.name,
            restart && !(c.init && exit.code == 0),
        );
        if c.init && exit.code == 0 {
            c.done = true;
            c.state = terminated;
            return;
        }
        if !restart {
            c.done = true;
            c.state = terminated;
            return;
        }
        // Back-off: the first restart is immediate, then 10 s doubling to
        // 5 min; a container that ran for 10 min starts over.
        if run.since.elapsed() > BACKOFF_MAX * 2 {
            c.backoff = Duration::ZERO;
        }
        let delay = c.backoff;
        c.backoff = if delay.is_zero() {
            BACKOFF_START
        } else {
            (delay * 2).min(BACKOFF_MAX)
        };
        c.last_state = Some(terminated.clone());
        c.next_start = Instant::now() + delay;
        c.state = if delay.is_zero() {
            terminated
        } else {
            State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={name}_{ns}({uid})",
                    delay.as_secs(),
                    c.spec.name
                )),
            }
        };
    }

    /// Runs the probes that are due and acts on their results.
    async fn run_probes(&mut self) {
        let ctx = self.ctx.clone();
        let Some(info) = &self.sandbox else { return };
        let pod_ip = info.pod_ip.clone();
        let sandbox = info.sandbox.clone();
        let pod_grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        for i in 0..self.ctrs.len() {
            let now = Instant::now();
            let started = self.ctrs[i].started;
            let spec = self.ctrs[i].spec.clone();
            let Some(run) = self.ctrs[i].running.as_mut() else {
                continue;
            };
            if run.killed_for_restart {
                continue;
            }
            let mut actions = Vec::new();
            for (state, probe, reported) in run.probes.iter_mut() {
                // Startup gates the others; once it succeeded it stops.
                let active = match state.kind {
                    Kind::Startup => !started,
                    _ => started,
                };
                if !active || !state.due(now) {
                    continue;
                }
                let outcome =
                    attempt(&ctx, probe, &spec, &pod_ip, &sandbox, state.timing.timeout).await;
                let ok = outcome == ProbeOutcome::Success;
                let flipped = state.record(ok, Instant::now());
                match &outcome {
                    ProbeOutcome::Failure(msg) if reported.as_ref() != Some(msg) => {
                        actions.push((state.kind, None, Some(msg.clone())));
                        *reported = Some(msg.clone());
                    }
                    ProbeOutcome::Success => *reported = None,
                    ProbeOutcome::Failure(_) => {}
                }
                if let Some(result) = flipped {
                    actions.push((state.kind, Some(result), None));
                }
            }
            for (kind, flipped, failure) in actions {
                if let Some(msg) = failure {
                    event(
                        &ctx,
                        &self.pod,
                        "Warning",
                        "Unhealthy",
                        format!("{} probe failed: {msg}", kind.label()),
                    )
                    .await;
                }
                let c = &mut self.ctrs[i];
                match (kind, flipped) {
                    (Kind::Startup, Some(true)) => {
                        c.started = true;
                        c.ready = !c.init && c.spec.readiness_probe.is_none();
                    }
                    (Kind::Readiness, Some(r)) => c.ready = r && c.started,
                    (Kind::Liveness | Kind::Startup, Some(false)) => {
                        let probe = match kind {
                            Kind::Liveness => c.spec.liveness_probe.as_ref(),
                            _ => c.spec.startup_probe.as_ref(),
                        };
                        let grace = probe
                            .and_then(|p| p.termination_grace_period_seconds)
                            .unwrap_or(pod_grace);
                        let label = kind.label().to_lowercase();
                        let name = c.spec.name.clone();
                        c.ready = false;
                        if let Some(run) = c.running.as_mut() {
                            run.killed_for_restart = true;
                            let _ = run.signals.send(Signal::Term);
                            let signals = run.signals.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_secs(
                                    u64::try_from(grace).unwrap_or(0),
                                ))
                                .await;
                                let _ = signals.send(Signal::Kill);
                            });
                        }
                        event(
                            &ctx,
                            &self.pod,
                            "Normal",
                            "Killing",
                            format!("Container {name} failed {label} probe, will be restarted"),
                        )
                        .await;
                    }
                    _ => {}
                }
            }
        }
    }

    /// The earliest moment something is due (a start or a probe).
    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(60);
        for c in &self.ctrs {
            if c.running.is_none() && !c.done {
                wake = wake.min(c.next_start);
            }
            for (state, _, _) in c.running.iter().flat_map(|r| &r.probes) {
                wake = wake.min(state.next_at());
            }
        }
        wake
    }

    async fn write_status(&mut self) {
        let (ns, name, uid) = pod_key(&self.pod);
        let view = PodView {
            pod: &self.pod,
            pod_ip: self.sandbox.as_ref().map(|s| s.pod_ip.clone()),
            host_ip: self.ctx.config.internal_ip.clone(),
            sandbox_ready: self.sandbox.is_some(),
            init: self
                .ctrs
                .iter()
                .filter(|c| c.init)
                .map(|c| c.view(&uid))
                .collect(),
            containers: self
                .ctrs
                .iter()
                .filter(|c| !c.init)
                .map(|c| c.view(&uid))
                .collect(),
            start_time: self.start_time,
        };
        let status = crate::status::status(&view, jiff::Timestamp::now());
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let patch = serde_json::json!({ "status": status });
        match Api::<Pod>::namespaced(self.ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(p) => {
                self.pod = p;
                self.last_status = Some(status);
            }
            Err(e) => {
                // Retried within a second (see the worker loop).
                self.last_status = None;
                tracing::warn!(pod = %format!("{ns}/{name}"), "status update failed: {e}");
            }
        }
    }

    /// SIGTERM to every running container, SIGKILL after `grace`.
    async fn terminate(&mut self, grace: Duration) {
        let running: Vec<usize> = (0..self.ctrs.len())
            .filter(|&i| self.ctrs[i].running.is_some())
            .collect();
        if running.is_empty() {
            return;
        }
        for &i in &running {
            if let Some(r) = &self.ctrs[i].running {
                let _ = r.signals.send(if grace.is_zero() {
                    Signal::Kill
                } else {
                    Signal::Term
                });
            }
            let name = self.ctrs[i].spec.name.clone();
            if !grace.is_zero() {
                event(
                    &self.ctx,
                    &self.pod,
                    "Normal",
                    "Killing",
                    format!("Stopping container {name}"),
                )
                .await;
            }
        }
        // Exits arrive on the worker's channel; SIGKILL what is left at
        // the deadline.
        let deadline = tokio::time::Instant::now() + grace;
        let mut killed = grace.is_zero();
        while self.ctrs.iter().any(|c| c.running.is_some()) {
            let wait_until = if killed {
                tokio::time::Instant::now() + Duration::from_secs(10)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wait_until, self.exit_rx.recv()).await {
                Ok(Some((i, generation, _))) => {
                    if let Some(c) = self.ctrs.get_mut(i)
                        && c.generation == generation
                    {
                        c.running = None;
                    }
                }
                Ok(None) => break,
                Err(_) if !killed => {
                    for r in self.ctrs.iter().filter_map(|c| c.running.as_ref()) {
                        let _ = r.signals.send(Signal::Kill);
                    }
                    killed = true;
                }
                // Killed, yet not reported within 10 s: give up waiting.
                Err(_) => break,
            }
        }
        for c in &mut self.ctrs {
            c.running = None;
        }
    }

    /// CNI DEL, the netns and the pod's files.
    async fn teardown(&mut self) {
        let ctx = self.ctx.clone();
        let (ns, name, uid) = pod_key(&self.pod);
        ctx.streams.remove(&ns, &name, &uid);
        if let Some(SandboxInfo {
            netns_name: Some(netns_name),
            ..
        }) = &self.sandbox
        {
            sandbox::kill_processes_in(netns_name);
            let cidr = ctx.pod_cidr.borrow().clone().unwrap_or_default();
            if let Ok(path) = ferry_netlink::netns::named_path(netns_name) {
                let cni_pod = CniPod {
                    uid: &uid,
                    namespace: &ns,
                    name: &name,
                    netns: &path,
                };
                if let Err(e) = sandbox::run_cni(&ctx.config, "DEL", &cni_pod, &cidr, ctx.mtu).await
                {
                    tracing::warn!(pod = %format!("{ns}/{name}"), "CNI DEL: {e:#}");
                }
            }
            if let Err(e) = ferry_netlink::netns::delete(netns_name) {
                tracing::warn!("deleting netns {netns_name}: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(sandbox::pod_dir(&ctx.config, &uid));
    }

    /// The final delete, as kubelet does once the pod is stopped.
    async fn delete_from_api(&self) {
        let (ns, name, uid) = pod_key(&self.pod);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = Api::<Pod>::namespaced(self.ctx.client.clone(), &ns)
            .delete(&name, &dp)
            .await
        {
            tracing::debug!(pod = %format!("{ns}/{name}"), "final delete: {e}");
        }
    }
}

/// Resolves a probe port (number or container port name).
fn probe_port(
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    c: &Container,
) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

async fn attempt(
    ctx: &Ctx,
    probe: &k8s_openapi::api::core::v1::Probe,
    c: &Container,
    pod_ip: &str,
    sandbox: &Sandbox,
    timeout: Duration,
) -> ProbeOutcome {
    if let Some(h) = &probe.http_get {
        let Some(port) = probe_port(&h.port, c) else {
            return ProbeOutcome::Failure(format!("unknown port {:?}", h.port));
        };
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return runtime::probe_http(
            h.scheme.as_deref().unwrap_or("HTTP"),
            &host,
            port,
            h.path.as_deref().unwrap_or("/"),
            &headers,
            timeout,
        )
        .await;
    }
    if let Some(t) = &probe.tcp_socket {
        let Some(port) = probe_port(&t.port, c) else {
            return ProbeOutcome::Failure(format!("unknown port {:?}", t.port));
        };
        let host = t
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return runtime::probe_tcp(&host, port, timeout).await;
    }
    if let Some(e) = &probe.exec {
        let argv = e.command.clone().unwrap_or_default();
        let env = vec![("PATH".to_string(), runtime::DEFAULT_PATH.to_string())];
        return match runtime::exec_in(&ctx.exe, sandbox, &argv, &env, timeout).await {
            Ok(out) if out.code == 0 => ProbeOutcome::Success,
            Ok(out) if out.code == -1 => {
                ProbeOutcome::Failure(format!("command {:?} timed out", argv.join(" ")))
            }
            Ok(out) => ProbeOutcome::Failure(format!(
                "command {:?} exited with {}: {}",
                argv.join(" "),
                out.code,
                String::from_utf8_lossy(&out.stdout).trim()
            )),
            Err(e) => ProbeOutcome::Failure(e.to_string()),
        };
    }
    if probe.grpc.is_some() {
        return ProbeOutcome::Failure(
            "gRPC probes are not supported by the ferry lab runtime".into(),
        );
    }
    ProbeOutcome::Success
}
