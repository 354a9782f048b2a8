//! The writers: `clients` tasks, each with its own `kube::Client` (so its
//! own HTTP/1.1 connection; kube-rs speaks HTTP/1 only), taking the next
//! object index from a shared counter and creating it. Latency is measured
//! from just before `Api::create` to its typed response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

use crate::stats::Latencies;

/// Annotation carrying the creating client's send time (Unix nanoseconds),
/// read back by the watchers.
pub const SENT_ANNOTATION: &str = "bench.ferry.dev/sent-unix-ns";
/// Label that spreads pods over watchers when they watch one shard each.
pub const SHARD_LABEL: &str = "bench.ferry.dev/shard";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    Pod,
}

/// What one create phase measured.
pub struct PhaseResult {
    pub created: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

impl PhaseResult {
    pub fn per_second(&self) -> f64 {
        self.created as f64 / self.elapsed.as_secs_f64()
    }
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Creates `count` objects of `kind` in `namespace`, spread over `clients`.
pub async fn create_phase(
    clients: &[kube::Client],
    namespace: &str,
    kind: Kind,
    count: usize,
    shards: usize,
) -> PhaseResult {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let client = client.clone();
            let namespace = namespace.to_string();
            let next = next.clone();
            tokio::spawn(
                async move { writer(client, &namespace, kind, count, shards, &next).await },
            )
        })
        .collect();
    let mut result = PhaseResult {
        created: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Latencies::with_capacity(count),
    };
    for task in tasks {
        match task.await {
            Ok(w) => {
                result.created += w.created;
                result.errors += w.errors;
                result.first_error = result.first_error.or(w.first_error);
                result.latencies.merge(w.latencies);
            }
            Err(e) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert(format!("writer task: {e}"));
            }
        }
    }
    result.elapsed = start.elapsed();
    result
}

struct WriterResult {
    created: usize,
    errors: usize,
    first_error: Option<String>,
    latencies: Latencies,
}

async fn writer(
    client: kube::Client,
    namespace: &str,
    kind: Kind,
    count: usize,
    shards: usize,
    next: &AtomicUsize,
) -> WriterResult {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let params = PostParams::default();
    let mut out = WriterResult {
        created: 0,
        errors: 0,
        first_error: None,
        latencies: Latencies::with_capacity(count / 8),
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            return out;
        }
        let started = Instant::now();
        let outcome = match kind {
            Kind::Service => services.create(&params, &service(i)).await.map(drop),
            Kind::Pod => pods.create(&params, &pod(i, shards)).await.map(drop),
        };
        out.latencies.record(started.elapsed());
        match outcome {
            Ok(()) => out.created += 1,
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i:05}")),
            labels: Some(BTreeMap::from([("app".to_string(), format!("app-{i:05}"))])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(BTreeMap::from([("app".to_string(), format!("app-{i:05}"))])),
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                protocol: Some("TCP".to_string()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A pod of a typical Deployment's shape, five per service. The send time
/// is stamped last, right before the request goes out.
fn pod(i: usize, shards: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pod-{i:05}")),
            labels: Some(BTreeMap::from([
                ("app".to_string(), format!("app-{:05}", i / 5)),
                (SHARD_LABEL.to_string(), (i % shards.max(1)).to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                SENT_ANNOTATION.to_string(),
                unix_nanos().to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".to_string(),
                image: Some("registry.k8s.io/pause:3.10".to_string()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".to_string()),
                    container_port: 8080,
                    protocol: Some("TCP".to_string()),
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}
