//! The cluster the controller works on: a few Nodes, `services` Services
//! (`s<i>`, selector `app: s<i>`, one port), and `pods_per_service` Pods
//! each (`s<i>-<j>`), placed on the Nodes, whose status is then written
//! through `pods/status` as a node agent would: phase Running, a unique
//! pod IP in 10.244.0.0/16, `Ready=True`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::stats::Latencies;

/// First address of the pod network (10.244.0.0/16, Kubernetes' default).
const POD_NETWORK: u32 = u32::from_be_bytes([10, 244, 0, 0]);

/// The shape of the cluster.
#[derive(Clone)]
pub struct Shape {
    pub namespace: String,
    pub nodes: usize,
    pub services: usize,
    pub pods_per_service: usize,
}

impl Shape {
    pub fn pods(&self) -> usize {
        self.services * self.pods_per_service
    }

    pub fn node_name(n: usize) -> String {
        format!("lab-node-{}", n + 1)
    }

    /// Pod number `k` (0-based, Service by Service).
    pub fn pod_name(&self, k: usize) -> String {
        format!(
            "s{}-{}",
            k / self.pods_per_service,
            k % self.pods_per_service
        )
    }

    fn pod_ip(k: usize) -> Ipv4Addr {
        // `k + 1` skips the network address; the caller checked the size.
        Ipv4Addr::from(POD_NETWORK + u32::try_from(k + 1).unwrap_or(u32::MAX))
    }
}

/// What a parallel write phase did.
pub struct Writes {
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

/// Runs `write(client, i)` for `i` in `0..count` on one task per client.
/// Each call's time is recorded (a Pod's create and status write count as
/// one).
pub async fn in_parallel<F, Fut>(clients: &[kube::Client], count: usize, write: F) -> Writes
where
    F: Fn(kube::Client, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, next, write) = (client.clone(), next.clone(), write.clone());
            tokio::spawn(async move {
                let mut out = Writes {
                    ok: 0,
                    errors: 0,
                    first_error: None,
                    elapsed: Duration::ZERO,
                    latencies: Latencies::default(),
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return out;
                    }
                    let t = Instant::now();
                    let result = write(client.clone(), i).await;
                    out.latencies.record(t.elapsed());
                    match result {
                        Ok(()) => out.ok += 1,
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            })
        })
        .collect();
    let mut all = Writes {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Latencies::with_capacity(count),
    };
    for task in tasks {
        match task.await {
            Ok(w) => {
                all.ok += w.ok;
                all.errors += w.errors;
                all.first_error = all.first_error.or(w.first_error);
                all.latencies.merge(w.latencies);
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("writer task: {e}"));
            }
        }
    }
    all.elapsed = started.elapsed();
    all
}

/// Creates Node `n`; one left by an earlier run on the same server is
/// fine.
pub async fn create_node(client: kube::Client, n: usize) -> anyhow::Result<()> {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(Shape::node_name(n)),
            labels: Some(BTreeMap::from([(
                "topology.kubernetes.io/zone".to_string(),
                format!("zone-{}", n % 3),
            )])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match Api::<Node>::all(client)
        .create(&PostParams::default(), &node)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("creating Node {}", Shape::node_name(n))))
        }
    }
}

pub async fn create_service(client: kube::Client, shape: &Shape, i: usize) -> anyhow::Result<()> {
    let name = format!("s{i}");
    let service = Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), name.clone())])),
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
    };
    Api::<Service>::namespaced(client, &shape.namespace)
        .create(&PostParams::default(), &service)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("creating Service {name}")))?;
    Ok(())
}

/// Creates Pod `k` on its Node, then writes its status: Running, Ready.
pub async fn create_pod(client: kube::Client, shape: &Shape, k: usize) -> anyhow::Result<()> {
    let name = shape.pod_name(k);
    let service = format!("s{}", k / shape.pods_per_service);
    let node = Shape::node_name(k % shape.nodes);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([("app".to_string(), service)])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node),
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
    };
    let api = Api::<Pod>::namespaced(client, &shape.namespace);
    api.create(&PostParams::default(), &pod)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("creating Pod {name}")))?;
    let ip = Shape::pod_ip(k).to_string();
    let now = now_rfc3339();
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("writing the status of Pod {name}")))?;
    Ok(())
}

/// The flip a node agent would send: the `Ready` condition only, merged by
/// type (strategic merge patch, as kubelet's status manager sends).
pub fn ready_patch(ready: bool) -> serde_json::Value {
    let status = if ready { "True" } else { "False" };
    json!({"status": {"conditions": [
        {"type": "Ready", "status": status, "lastTransitionTime": now_rfc3339()},
    ]}})
}

/// Now, as an RFC 3339 UTC timestamp (seconds).
fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(|_| "1970-01-01T00:00:00Z".to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_unique_and_in_the_pod_network() {
        let shape = Shape {
            namespace: "b".into(),
            nodes: 3,
            services: 1000,
            pods_per_service: 10,
        };
        assert_eq!(shape.pod_name(0), "s0-0");
        assert_eq!(shape.pod_name(9_999), "s999-9");
        assert_eq!(Shape::pod_ip(0), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(Shape::pod_ip(9_999), Ipv4Addr::new(10, 244, 39, 16));
        assert!(now_rfc3339().ends_with('Z'));
    }
}
