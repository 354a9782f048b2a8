//! The cluster behind `ferry dns`: a fresh `ferry apiserver`, loaded
//! through kube-rs with N ClusterIP Services, one EndpointSlice of M ready
//! endpoints per Service, and one Pod per endpoint (spec, then its
//! `status.podIP` through the status subresource). The ClusterIPs are the
//! ones the API server allocates, read back with a list.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, Namespace, ObjectReference, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use crate::proc::Child;

pub const NAMESPACE: &str = "bench";
const NODE: &str = "bench-node";
const PORT_NAME: &str = "http";
const SERVICE_PORT: i32 = 80;
const TARGET_PORT: i32 = 8080;
const FIRST_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);

pub fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

fn pod_name(i: usize) -> String {
    format!("pod-{i}")
}

/// Pod `i`'s address; endpoint `j` of Service `i` is Pod `i * M + j`.
fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST_POD_IP) + i as u32)
}

/// How long each part of the load took, and what it left.
#[derive(Debug, Default)]
pub struct Loaded {
    pub services: Duration,
    pub slices: Duration,
    pub pods: Duration,
    /// `status.podIP` writes (None: the status subresource refused them).
    pub pod_status: Option<Duration>,
    pub pod_status_error: Option<String>,
    /// ClusterIP of Service i, as listed back from the API.
    pub cluster_ips: Vec<Ipv4Addr>,
    pub list: Duration,
}

impl Loaded {
    pub fn total(&self) -> Duration {
        self.services + self.slices + self.pods + self.pod_status.unwrap_or_default()
    }
}

/// Starts `ferry apiserver` in `dir` (pinned to `cpus` if given); returns
/// it and its kubeconfig.
pub fn start_apiserver(
    ferry_bin: &Path,
    cpus: Option<&str>,
    dir: &Path,
) -> anyhow::Result<(Child, PathBuf)> {
    let out_path = dir.join("apiserver.out");
    let log_path = dir.join("apiserver.log");
    let data = dir.join("apiserver-data");
    let mut cmd = crate::proc::pinned(cpus, ferry_bin);
    cmd.arg("apiserver")
        .arg("--data-dir")
        .arg(&data)
        .args(["--bind-address", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&log_path)?);
    let mut child = Child::spawn(cmd, "ferry apiserver")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("listening on") {
            break;
        }
        if let Some(status) = child.exited() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("ferry apiserver exited ({status}): {log}");
        }
        if Instant::now() > deadline {
            bail!("ferry apiserver did not start in 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((child, data.join("kubeconfig")))
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the client")
}

/// Runs `op` on every item with `concurrency` requests in flight; fails
/// with the first error and the count of failures.
async fn for_all<'a, T, F, Fut, R>(
    items: &'a [T],
    concurrency: usize,
    op: F,
) -> anyhow::Result<Duration>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = Result<R, kube::Error>>,
{
    let start = Instant::now();
    let mut results = futures::stream::iter(items)
        .map(&op)
        .buffer_unordered(concurrency);
    let mut errors = 0usize;
    let mut first_error = None;
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(anyhow::Error::new(e).context(format!("{errors} of {} failed", items.len())));
    }
    Ok(start.elapsed())
}

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(service_name(i)),
            namespace: Some(NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            // No clusterIP: the API server allocates it.
            selector: Some(BTreeMap::from([("app".to_string(), service_name(i))])),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: SERVICE_PORT,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(TARGET_PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn slice(i: usize, endpoints: usize) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{}-bench", service_name(i))),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                service_name(i),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some(PORT_NAME.into()),
            port: Some(TARGET_PORT),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
        endpoints: (0..endpoints)
            .map(|j| {
                let p = i * endpoints + j;
                Endpoint {
                    addresses: vec![pod_ip(p).to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: Some(NODE.into()),
                    target_ref: Some(ObjectReference {
                        kind: Some("Pod".into()),
                        name: Some(pod_name(p)),
                        namespace: Some(NAMESPACE.into()),
                        ..ObjectReference::default()
                    }),
                    ..Endpoint::default()
                }
            })
            .collect(),
    }
}

fn pod(p: usize, endpoints: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(p)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([(
                "app".to_string(),
                service_name(p / endpoints.max(1)),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Creates the namespace, Services, EndpointSlices and Pods, sets the
/// Pods' addresses, and lists the Services back.
pub fn load(
    kubeconfig: &Path,
    services: usize,
    endpoints: usize,
    pods: usize,
    concurrency: usize,
    progress: impl Fn(&str),
) -> anyhow::Result<Loaded> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = client(kubeconfig).await?;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(anyhow::Error::new(e).context("creating the namespace")),
        }
        let pp = PostParams::default();
        let mut loaded = Loaded::default();

        let svc_api = Api::<Service>::namespaced(client.clone(), NAMESPACE);
        let objects: Vec<Service> = (0..services).map(service).collect();
        loaded.services = for_all(&objects, concurrency, |o| svc_api.create(&pp, o))
            .await
            .context("creating Services")?;
        progress(&format!(
            "{services} Services created in {:.1} s",
            loaded.services.as_secs_f64()
        ));

        let slice_api = Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE);
        let objects: Vec<EndpointSlice> = (0..services).map(|i| slice(i, endpoints)).collect();
        loaded.slices = for_all(&objects, concurrency, |o| slice_api.create(&pp, o))
            .await
            .context("creating EndpointSlices")?;
        progress(&format!(
            "{services} EndpointSlices ({} endpoints) created in {:.1} s",
            services * endpoints,
            loaded.slices.as_secs_f64()
        ));

        let pod_api = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
        let objects: Vec<Pod> = (0..pods).map(|p| pod(p, endpoints)).collect();
        loaded.pods = for_all(&objects, concurrency, |o| pod_api.create(&pp, o))
            .await
            .context("creating Pods")?;
        progress(&format!(
            "{pods} Pods created in {:.1} s",
            loaded.pods.as_secs_f64()
        ));

        let indices: Vec<usize> = (0..pods).collect();
        let patch_params = PatchParams::default();
        let status = for_all(&indices, concurrency, |&p| {
            let ip = pod_ip(p).to_string();
            let patch = serde_json::json!({"status": {
                "phase": "Running",
                "hostIP": "192.0.2.1",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
            }});
            let (api, pp, name) = (&pod_api, &patch_params, pod_name(p));
            async move { api.patch_status(&name, pp, &Patch::Merge(&patch)).await }
        })
        .await;
        match status {
            Ok(d) => {
                progress(&format!(
                    "{pods} Pod statuses (podIP) written in {:.1} s",
                    d.as_secs_f64()
                ));
                loaded.pod_status = Some(d);
            }
            Err(e) => {
                progress(&format!("Pod status writes failed: {e:#}"));
                loaded.pod_status_error = Some(format!("{e:#}"));
            }
        }
        // The Pods really carry their addresses?
        if loaded.pod_status.is_some() && pods > 0 {
            let last = pod_api.get(&pod_name(pods - 1)).await?;
            let ip = last.status.and_then(|s| s.pod_ip).unwrap_or_default();
            if ip != pod_ip(pods - 1).to_string() {
                loaded.pod_status_error = Some(format!(
                    "status write accepted but {} reads back podIP {ip:?}",
                    pod_name(pods - 1)
                ));
                loaded.pod_status = None;
            }
        }

        let start = Instant::now();
        let list = svc_api
            .list(&ListParams::default())
            .await
            .context("listing the Services")?;
        loaded.list = start.elapsed();
        let mut ips = vec![None; services];
        for s in list.items {
            let name = s.metadata.name.unwrap_or_default();
            let Some(i) = name
                .strip_prefix("svc-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|i| *i < services)
            else {
                continue;
            };
            ips[i] = s
                .spec
                .and_then(|s| s.cluster_ip)
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        }
        loaded.cluster_ips = ips
            .into_iter()
            .enumerate()
            .map(|(i, ip)| ip.with_context(|| format!("{} has no IPv4 ClusterIP", service_name(i))))
            .collect::<anyhow::Result<_>>()?;
        Ok(loaded)
    })
}
