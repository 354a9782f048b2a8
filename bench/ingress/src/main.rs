//! `ferry-bench-ingress`: the API side of bench/ingress (run.sh drives
//! wrk, openssl s_time, nginx and HAProxy).
//!
//! * `setup`: the namespace, IngressClass `ferry`, one Service and its
//!   EndpointSlice (the backend on 127.0.0.1), the config-change Ingress
//!   `cc` (host `cc.bench`, Exact `/cc-0`) and Ingresses `h<i>` (host
//!   `h<i>.bench`, Prefix `/`) for i in `--from..--to`, created through
//!   kube-rs; with `--http`, then waits until every new host answers 200
//!   through the controller. Prints the times.
//! * `change`: config-change latency: patches `cc`'s path to `/cc-<n>`
//!   and polls the controller until that path answers 200, `--samples`
//!   times; prints p50/p90/p99/max.
//! * `poll`: waits until a host and path answer 200; prints the wait.
//! * `sweep`: checks that hosts `h0..h<n>` all answer 200.

mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
    IngressRule, IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};

const NS: &str = "bench";
const SERVICE: &str = "backend";

#[derive(Parser)]
enum Cmd {
    Setup {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[arg(long)]
        backend_ip: String,
        #[arg(long)]
        backend_port: u16,
        #[arg(long, default_value_t = 0)]
        from: usize,
        #[arg(long)]
        to: usize,
        /// Requests in flight to the API server.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// The controller's HTTP address: wait until every new host is served.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    Change {
        #[arg(long)]
        kubeconfig: PathBuf,
        #[arg(long)]
        http: SocketAddr,
        #[arg(long, default_value_t = 100)]
        samples: usize,
        /// `cc` currently serves `/cc-<first - 1>`.
        #[arg(long, default_value_t = 1)]
        first: usize,
    },
    Poll {
        #[arg(long)]
        http: SocketAddr,
        #[arg(long)]
        host: String,
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    Sweep {
        #[arg(long)]
        http: SocketAddr,
        #[arg(long)]
        hosts: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match Cmd::parse() {
        Cmd::Setup {
            kubeconfig,
            backend_ip,
            backend_port,
            from,
            to,
            concurrency,
            http,
        } => {
            let client = rt.block_on(client(&kubeconfig))?;
            let start = Instant::now();
            if from == 0 {
                rt.block_on(base(&client, &backend_ip, backend_port))?;
            }
            let ings: Api<Ingress> = Api::namespaced(client, NS);
            let items: Vec<usize> = (from..to).collect();
            let created = rt.block_on(async {
                let mut results = futures::stream::iter(&items)
                    .map(|&i| {
                        let ings = ings.clone();
                        async move {
                            ings.create(
                                &PostParams::default(),
                                &ingress(&format!("h{i}"), &format!("h{i}.bench"), "/", "Prefix"),
                            )
                            .await
                        }
                    })
                    .buffer_unordered(concurrency);
                let mut n = 0usize;
                while let Some(r) = results.next().await {
                    r.context("creating an Ingress")?;
                    n += 1;
                }
                anyhow::Ok(n)
            })?;
            let create = start.elapsed();
            println!(
                "created {created} Ingresses (h{from}..h{}) in {:.3} s ({:.0}/s)",
                to.saturating_sub(1),
                create.as_secs_f64(),
                created as f64 / create.as_secs_f64()
            );
            if let Some(addr) = http {
                // The last one created first, then every one.
                let last = format!("h{}.bench", to.saturating_sub(1));
                wait_200(addr, &last, "/tiny", Duration::from_secs(300))?;
                let last_served = start.elapsed();
                let mut c = http::Client::new(addr);
                let mut pending: Vec<usize> = items.clone();
                while !pending.is_empty() {
                    if start.elapsed() > Duration::from_secs(300) {
                        bail!("{} hosts still not served after 300 s", pending.len());
                    }
                    pending.retain(|i| c.status(&format!("h{i}.bench"), "/tiny").ok() != Some(200));
                }
                let all = start.elapsed();
                println!(
                    "first create -> last host served: {:.3} s; -> every host checked 200: {:.3} s",
                    last_served.as_secs_f64(),
                    all.as_secs_f64()
                );
            }
        }
        Cmd::Change {
            kubeconfig,
            http,
            samples,
            first,
        } => {
            let client = rt.block_on(client(&kubeconfig))?;
            let ings: Api<Ingress> = Api::namespaced(client, NS);
            wait_200(
                http,
                "cc.bench",
                &format!("/cc-{}", first - 1),
                Duration::from_secs(60),
            )?;
            let mut c = http::Client::new(http);
            let mut ms = Vec::with_capacity(samples);
            for n in first..first + samples {
                let path = format!("/cc-{n}");
                let patch =
                    serde_json::json!({ "spec": ingress("cc", "cc.bench", &path, "Exact").spec });
                let start = Instant::now();
                rt.block_on(ings.patch("cc", &PatchParams::default(), &Patch::Merge(&patch)))?;
                loop {
                    if c.status("cc.bench", &path).ok() == Some(200) {
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(30) {
                        bail!("{path} not served 30 s after the patch");
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            let q = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
            println!(
                "config change (patch -> new path served), {} samples: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                ms.len(),
                q(0.5),
                q(0.9),
                q(0.99),
                ms[ms.len() - 1]
            );
        }
        Cmd::Poll {
            http,
            host,
            path,
            timeout_s,
        } => {
            let waited = wait_200(http, &host, &path, Duration::from_secs(timeout_s))?;
            println!("{:.1}", waited.as_secs_f64() * 1e3);
        }
        Cmd::Sweep { http, hosts } => {
            let start = Instant::now();
            let mut c = http::Client::new(http);
            let bad = (0..hosts)
                .filter(|i| c.status(&format!("h{i}.bench"), "/tiny").ok() != Some(200))
                .count();
            println!(
                "{} of {hosts} hosts answered 200 ({:.3} s)",
                hosts - bad,
                start.elapsed().as_secs_f64()
            );
            if bad > 0 {
                bail!("{bad} hosts did not answer 200");
            }
        }
    }
    Ok(())
}

/// Polls until `host` + `path` answer 200; returns how long that took.
fn wait_200(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut c = http::Client::new(addr);
    loop {
        if c.status(host, path).ok() == Some(200) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{host}{path} did not answer 200 in {timeout:?}");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the client")
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..ObjectMeta::default()
    }
}

/// Namespace, IngressClass, the backend Service and its slice, Ingress `cc`.
async fn base(client: &kube::Client, backend_ip: &str, backend_port: u16) -> anyhow::Result<()> {
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(NS.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .context("namespace")?;
    Api::<IngressClass>::all(client.clone())
        .create(
            &pp,
            &IngressClass {
                metadata: ObjectMeta {
                    name: Some("ferry".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(IngressClassSpec {
                    controller: Some("ferry.dev/ingress-controller".into()),
                    ..IngressClassSpec::default()
                }),
            },
        )
        .await
        .context("ingressclass")?;
    Api::<Service>::namespaced(client.clone(), NS)
        .create(
            &pp,
            &Service {
                metadata: meta(SERVICE),
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".into()),
                    ports: Some(vec![ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        protocol: Some("TCP".into()),
                        target_port: Some(IntOrString::Int(backend_port.into())),
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            },
        )
        .await
        .context("service")?;
    let mut slice_meta = meta("backend-1");
    slice_meta.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        SERVICE.to_string(),
    )]));
    Api::<EndpointSlice>::namespaced(client.clone(), NS)
        .create(
            &pp,
            &EndpointSlice {
                metadata: slice_meta,
                address_type: "IPv4".into(),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: Some(backend_port.into()),
                    protocol: Some("TCP".into()),
                    ..EndpointPort::default()
                }]),
                endpoints: vec![Endpoint {
                    addresses: vec![backend_ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..Endpoint::default()
                }],
            },
        )
        .await
        .context("endpointslice")?;
    Api::<Ingress>::namespaced(client.clone(), NS)
        .create(&pp, &ingress("cc", "cc.bench", "/cc-0", "Exact"))
        .await
        .context("ingress cc")?;
    Ok(())
}

fn ingress(name: &str, host: &str, path: &str, path_type: &str) -> Ingress {
    Ingress {
        metadata: meta(name),
        spec: Some(IngressSpec {
            ingress_class_name: Some("ferry".into()),
            rules: Some(vec![IngressRule {
                host: Some(host.into()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(path.into()),
                        path_type: path_type.into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: SERVICE.into(),
                                port: Some(ServiceBackendPort {
                                    number: Some(80),
                                    name: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}
