//! LoadBalancer IPAM: `type: LoadBalancer` Services get an address from a
//! configured pool (`--load-balancer-pool`, single IPs, CIDRs or
//! `first-last` ranges) in `status.loadBalancer.ingress[].ip`, as MetalLB
//! or Cilium's LB IPAM would hand them out.
//!
//! The assignment lives in each Service's status, so it survives
//! restarts: on start the controller reads the addresses already given
//! out before handing out new ones. `spec.loadBalancerIP` asks for a
//! given address; `spec.loadBalancerClass` selects the implementation
//! (Services of another class are left alone). The address goes back to
//! the pool when the Service is deleted or stops being a LoadBalancer.
//! A Service that gets no address keeps `<pending>` and an
//! `AllocationFailed` Event, and is retried whenever an address frees up.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Context;
use crate::events::{EventType, Recorder};

pub mod pool;

pub use pool::{AllocationError, BadPoolEntry, Family, Pool};

fn key_of(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether this controller hands `svc` an address: a LoadBalancer of the
/// configured class (no class configured: only Services without one).
pub fn served(svc: &Service, class: Option<&str>) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec.load_balancer_class.as_deref() == class
        && svc.metadata.deletion_timestamp.is_none()
}

fn requested_ip(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()?
        .load_balancer_ip
        .as_deref()
        .filter(|s| !s.is_empty())
}

fn family(svc: &Service) -> Family {
    let first = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first());
    if first.is_some_and(|f| f == "IPv6") {
        Family::V6
    } else {
        Family::V4
    }
}

/// The addresses the Service's status shows.
fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn creation_order(svc: &Service) -> (String, String) {
    let created = svc
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (created, key_of(svc))
}

/// A write the controller makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    SetIngress {
        service: String,
        ip: IpAddr,
    },
    ClearIngress {
        service: String,
    },
    Event {
        regarding: ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: String,
    },
}

/// The allocation state, driven by Service events; every method returns
/// the writes that bring the cluster in line.
#[derive(Debug, Clone)]
pub struct Ipam {
    pool: Pool,
    class: Option<String>,
    /// Served Services that got no address, with the failure last
    /// reported, retried when an address frees up.
    waiting: HashMap<String, (Service, String)>,
}

impl Ipam {
    pub fn new(pool: Pool, class: Option<String>) -> Ipam {
        Ipam {
            pool,
            class,
            waiting: HashMap::new(),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Starts over from a full list: addresses already in Services'
    /// status are kept (oldest Service first, should two claim one), then
    /// every Service is reconciled.
    pub fn rebuild(&mut self, mut services: Vec<Service>) -> Vec<Action> {
        self.pool.clear();
        self.waiting.clear();
        services.sort_by_key(creation_order);
        for svc in &services {
            if !served(svc, self.class.as_deref()) {
                continue;
            }
            let requested = requested_ip(svc).and_then(|r| r.parse::<IpAddr>().ok());
            if let Some(ip) = status_ips(svc)
                .into_iter()
                .find(|ip| self.pool.contains(*ip))
                && requested.is_none_or(|r| r == ip)
            {
                let _ = self.pool.assign(&key_of(svc), ip);
            }
        }
        services.iter().flat_map(|s| self.apply(s)).collect()
    }

    /// A Service was added or changed.
    pub fn apply(&mut self, svc: &Service) -> Vec<Action> {
        let key = key_of(svc);
        let mut actions = Vec::new();
        if !served(svc, self.class.as_deref()) {
            self.waiting.remove(&key);
            if let Some(ip) = self.pool.release(&key) {
                tracing::info!(service = %key, %ip, "released load balancer IP");
                if status_ips(svc).contains(&ip) {
                    actions.push(Action::ClearIngress {
                        service: key.clone(),
                    });
                }
                actions.extend(self.retry_waiting());
            }
            return actions;
        }
        let previous = self.pool.holder(&key);
        let result = match requested_ip(svc) {
            Some(requested) => match requested.parse::<IpAddr>() {
                Ok(ip) => self.pool.assign(&key, ip).map(|()| ip),
                Err(_) => Err(AllocationError::Invalid(requested.to_string())),
            },
            None => self.pool.allocate(&key, family(svc)),
        };
        let shown = status_ips(svc);
        match result {
            Ok(ip) => {
                self.waiting.remove(&key);
                if shown != [ip] {
                    actions.push(Action::SetIngress {
                        service: key.clone(),
                        ip,
                    });
                }
                if previous != Some(ip) {
                    tracing::info!(service = %key, %ip, "assigned load balancer IP");
                    actions.push(Action::Event {
                        regarding: svc.object_ref(&()),
                        type_: EventType::Normal,
                        reason: "IPAllocated",
                        message: format!("Assigned IP [\"{ip}\"]"),
                    });
                    if previous.is_some() {
                        // A new loadBalancerIP was asked for; the old one
                        // is free for others.
                        actions.extend(self.retry_waiting());
                    }
                }
            }
            Err(error) => {
                // A failed request for another address gives up the one
                // held so far: the Service asked to move.
                let released = self.pool.release(&key);
                let message = format!("Failed to allocate IP for \"{key}\": {error}");
                let repeated = self
                    .waiting
                    .get(&key)
                    .is_some_and(|(_, last)| *last == message);
                if !repeated {
                    tracing::warn!(service = %key, %error, "no load balancer IP");
                    actions.push(Action::Event {
                        regarding: svc.object_ref(&()),
                        type_: EventType::Warning,
                        reason: "AllocationFailed",
                        message: message.clone(),
                    });
                }
                if shown.iter().any(|ip| self.pool.contains(*ip)) {
                    actions.push(Action::ClearIngress {
                        service: key.clone(),
                    });
                }
                self.waiting.insert(key, (svc.clone(), message));
                if released.is_some() {
                    actions.extend(self.retry_waiting());
                }
            }
        }
        actions
    }

    /// A Service is gone.
    pub fn delete(&mut self, svc: &Service) -> Vec<Action> {
        let key = key_of(svc);
        self.waiting.remove(&key);
        match self.pool.release(&key) {
            Some(ip) => {
                tracing::info!(service = %key, %ip, "released load balancer IP");
                self.retry_waiting()
            }
            None => Vec::new(),
        }
    }

    /// Tries the waiting Services again, oldest first.
    fn retry_waiting(&mut self) -> Vec<Action> {
        let mut waiting: Vec<Service> = self.waiting.values().map(|(s, _)| s.clone()).collect();
        waiting.sort_by_key(creation_order);
        waiting.iter().flat_map(|s| self.apply(s)).collect()
    }
}

/// Pause before retrying a Service whose write failed.
const WRITE_RETRY: Duration = Duration::from_secs(2);

/// Runs the LoadBalancer IPAM controller.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let pool = Pool::parse(&ctx.config.load_balancer_pool)?;
    if pool.is_empty() {
        tracing::info!("no --load-balancer-pool: LoadBalancer Services stay pending");
        return std::future::pending().await;
    }
    let mut ipam = Ipam::new(pool, ctx.config.load_balancer_class.clone());
    let services: Api<Service> = Api::all(ctx.client.clone());
    let recorder = Recorder::new(ctx.client.clone(), "lb-ipam-controller");
    let mut events = watcher(services.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut initial: Vec<Service> = Vec::new();
    let mut synced = false;
    // Latest version of every Service, to retry failed writes.
    let mut latest: HashMap<String, Service> = HashMap::new();
    let mut retry: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep(WRITE_RETRY), if !retry.is_empty() => {
                let mut actions = Vec::new();
                for key in std::mem::take(&mut retry) {
                    if let Some(svc) = latest.get(&key) {
                        actions.extend(ipam.apply(svc));
                    }
                }
                execute(&ctx.client, &recorder, actions, &mut retry).await;
                continue;
            }
        };
        let Some(event) = event else {
            anyhow::bail!("the Service watch ended");
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "service watch failed; retrying");
                continue;
            }
        };
        let actions = match event {
            watcher::Event::Init => {
                initial.clear();
                synced = false;
                Vec::new()
            }
            watcher::Event::InitApply(svc) => {
                latest.insert(key_of(&svc), svc.clone());
                initial.push(svc);
                Vec::new()
            }
            watcher::Event::InitDone => {
                synced = true;
                let services = std::mem::take(&mut initial);
                latest = services.iter().map(|s| (key_of(s), s.clone())).collect();
                ipam.rebuild(services)
            }
            watcher::Event::Apply(svc) => {
                latest.insert(key_of(&svc), svc.clone());
                if synced { ipam.apply(&svc) } else { Vec::new() }
            }
            watcher::Event::Delete(svc) => {
                latest.remove(&key_of(&svc));
                retry.remove(&key_of(&svc));
                if synced {
                    ipam.delete(&svc)
                } else {
                    Vec::new()
                }
            }
        };
        execute(&ctx.client, &recorder, actions, &mut retry).await;
    }
}

async fn execute(
    client: &kube::Client,
    recorder: &Recorder,
    actions: Vec<Action>,
    retry: &mut HashSet<String>,
) {
    for action in actions {
        let (service, patch) = match action {
            Action::Event {
                regarding,
                type_,
                reason,
                message,
            } => {
                recorder.record(&regarding, type_, reason, &message).await;
                continue;
            }
            Action::SetIngress { service, ip } => {
                let patch = json!({"status": {"loadBalancer": {
                    "ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
                (service, patch)
            }
            Action::ClearIngress { service } => (
                service,
                json!({"status": {"loadBalancer": {"ingress": null}}}),
            ),
        };
        let Some((namespace, name)) = service.split_once('/') else {
            continue;
        };
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile: the watch reports it and frees the IP.
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => {
                tracing::warn!(%service, error = %e, "writing load balancer status failed; retrying");
                retry.insert(service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn pool(entries: &[&str]) -> Pool {
        Pool::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(name: &str, extra: serde_json::Value) -> Service {
        let mut spec = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "creationTimestamp": format!("2025-01-01T00:00:{:02}Z", name.len())},
            "spec": spec,
        }))
        .unwrap()
    }

    fn with_status(mut s: Service, ip: &str) -> Service {
        s.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": ip}]}})).unwrap(),
        );
        s
    }

    fn ingress(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SetIngress { service, ip } => Some((service.clone(), ip.to_string())),
                _ => None,
            })
            .collect()
    }

    fn reasons(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn exhaustion_waits_for_a_release() {
        let mut ipam = Ipam::new(pool(&["10.0.0.1"]), None);
        let a = ingress(&ipam.apply(&svc("a", json!({}))));
        assert_eq!(a, [("default/a".to_string(), "10.0.0.1".to_string())]);
        let b = ipam.apply(&svc("bb", json!({})));
        assert_eq!(reasons(&b), ["AllocationFailed"]);
        assert!(matches!(&b[0], Action::Event { message, .. }
            if message == "Failed to allocate IP for \"default/bb\": no available IPs"));
        // The same failure is not reported twice.
        assert!(ipam.apply(&svc("bb", json!({}))).is_empty());
        // Deleting "a" hands the address to "bb".
        let after = ipam.delete(&svc("a", json!({})));
        assert_eq!(
            ingress(&after),
            [("default/bb".to_string(), "10.0.0.1".to_string())]
        );
        assert_eq!(reasons(&after), ["IPAllocated"]);
    }

    #[test]
    fn classes_and_type_changes() {
        let mut ipam = Ipam::new(pool(&["10.0.0.0/31"]), None);
        assert!(
            ipam.apply(&svc("other", json!({"loadBalancerClass": "x.io/lb"})))
                .is_empty()
        );
        let mut cip = svc("c", json!({}));
        cip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(ipam.apply(&cip).is_empty());
        // A LoadBalancer turned ClusterIP loses its address and status.
        let lb = svc("c", json!({}));
        assert_eq!(ingress(&ipam.apply(&lb)).len(), 1);
        let mut cip = with_status(cip, "10.0.0.0");
        cip.metadata.resource_version = Some("2".into());
        let actions = ipam.apply(&cip);
        assert_eq!(
            actions,
            [Action::ClearIngress {
                service: "default/c".into()
            }]
        );
        assert_eq!(ipam.pool().holder("default/c"), None);
        // With a class configured, only that class is served.
        let mut ipam = Ipam::new(pool(&["10.0.0.0/31"]), Some("x.io/lb".into()));
        assert!(ipam.apply(&svc("plain", json!({}))).is_empty());
        assert_eq!(
            ingress(&ipam.apply(&svc("other", json!({"loadBalancerClass": "x.io/lb"})))).len(),
            1
        );
    }

    #[test]
    fn load_balancer_ip_is_honoured() {
        let mut ipam = Ipam::new(pool(&["10.0.0.0/30"]), None);
        let want = |name: &str, ip: &str| svc(name, json!({"loadBalancerIP": ip}));
        assert_eq!(
            ingress(&ipam.apply(&want("a", "10.0.0.2"))),
            [("default/a".to_string(), "10.0.0.2".to_string())]
        );
        let taken = ipam.apply(&want("bb", "10.0.0.2"));
        assert!(matches!(&taken[0], Action::Event { message, .. }
            if message == "Failed to allocate IP for \"default/bb\": 10.0.0.2 is already assigned to default/a"));
        let outside = ipam.apply(&want("ccc", "192.0.2.1"));
        assert!(matches!(&outside[0], Action::Event { message, .. }
            if message.ends_with("192.0.2.1 is not in the load balancer pool")));
        let invalid = ipam.apply(&want("dddd", "banana"));
        assert!(matches!(&invalid[0], Action::Event { message, .. }
            if message.ends_with("spec.loadBalancerIP \"banana\" is not a valid IP address")));
        // "a" moves elsewhere; "bb" gets the address it asked for.
        let moved = ipam.apply(&with_status(want("a", "10.0.0.3"), "10.0.0.2"));
        assert_eq!(
            ingress(&moved),
            [
                ("default/a".to_string(), "10.0.0.3".to_string()),
                ("default/bb".to_string(), "10.0.0.2".to_string())
            ]
        );
    }

    #[test]
    fn rebuild_keeps_existing_assignments() {
        let mut ipam = Ipam::new(pool(&["10.0.0.0/30"]), None);
        let actions = ipam.rebuild(vec![
            svc("new", json!({})),
            with_status(svc("old1", json!({})), "10.0.0.2"),
            with_status(svc("old22", json!({})), "10.0.0.0"),
            // Claims an address someone older has: gets a fresh one.
            with_status(svc("clash333", json!({})), "10.0.0.2"),
            // Status from a pool no longer configured: replaced.
            with_status(svc("moved4444", json!({})), "192.0.2.9"),
        ]);
        assert_eq!(
            ingress(&actions),
            [
                ("default/new".to_string(), "10.0.0.1".to_string()),
                ("default/clash333".to_string(), "10.0.0.3".to_string()),
            ]
        );
        assert!(actions.iter().any(
            |a| matches!(a, Action::Event { reason: "AllocationFailed", regarding, .. }
            if regarding.name.as_deref() == Some("moved4444"))
        ));
        assert_eq!(ipam.pool().holder("default/old1"), Some(ip("10.0.0.2")));
        assert_eq!(ipam.pool().holder("default/old22"), Some(ip("10.0.0.0")));
    }

    proptest! {
        /// Whatever happens, no address is held twice, every address held
        /// is in the pool, and a Service holds at most one.
        #[test]
        fn allocations_stay_consistent(ops in prop::collection::vec((0u8..4, 0usize..6, 0u8..6), 0..60)) {
            let mut ipam = Ipam::new(pool(&["10.0.0.0/30", "10.0.1.9"]), None);
            for (op, who, addr) in ops {
                let name = format!("s{who}");
                let s = match op {
                    0 => svc(&name, json!({})),
                    1 => svc(&name, json!({"loadBalancerIP": format!("10.0.0.{addr}")})),
                    2 => {
                        let mut s = svc(&name, json!({}));
                        s.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
                        s
                    }
                    _ => {
                        ipam.delete(&svc(&name, json!({})));
                        continue;
                    }
                };
                ipam.apply(&s);
                let p = ipam.pool();
                let mut owners = HashSet::new();
                for (ip, owner) in p.assignments() {
                    prop_assert!(p.contains(ip));
                    prop_assert!(owners.insert(owner.to_string()), "{} holds two", owner);
                    prop_assert_eq!(p.holder(owner), Some(ip));
                }
            }
        }
    }
}
