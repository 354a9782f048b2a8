//! The Service registry's allocations: ClusterIPs, NodePorts and
//! healthCheckNodePorts, held in bitmaps that are rebuilt from the stored
//! Services at start (kube-apiserver's repair loops), reserved before a
//! write and released after a delete or a change that drops them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ferry_api::validation::{FieldError, FieldErrorReason};
use serde_json::{Value, json};

use crate::allocator::{AllocationError, ClusterIpRange, NodePortRange};
use crate::status::ApiError;

/// What one Service holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    pub ips: BTreeSet<Ipv4Addr>,
    pub ports: BTreeSet<i64>,
}

impl Holdings {
    /// The allocations recorded in a Service object.
    pub fn of(svc: &Value) -> Holdings {
        let spec = &svc["spec"];
        let mut h = Holdings::default();
        if needs_cluster_ip(svc) {
            for ip in spec["clusterIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&spec["clusterIP"]))
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse::<Ipv4Addr>().ok())
            {
                h.ips.insert(ip);
            }
        }
        for p in spec["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64().filter(|n| *n > 0) {
                h.ports.insert(n);
            }
        }
        if let Some(n) = spec["healthCheckNodePort"].as_i64().filter(|n| *n > 0) {
            h.ports.insert(n);
        }
        h
    }

    fn minus(&self, other: &Holdings) -> Holdings {
        Holdings {
            ips: self.ips.difference(&other.ips).copied().collect(),
            ports: self.ports.difference(&other.ports).copied().collect(),
        }
    }
}

fn service_type(svc: &Value) -> &str {
    svc["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

/// Every type but ExternalName has a ClusterIP, unless headless.
fn needs_cluster_ip(svc: &Value) -> bool {
    service_type(svc) != "ExternalName" && svc["spec"]["clusterIP"].as_str() != Some("None")
}

fn needs_node_ports(svc: &Value) -> bool {
    match service_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc["spec"]["allocateLoadBalancerNodePorts"].as_bool() != Some(false),
        _ => false,
    }
}

fn needs_health_check_port(svc: &Value) -> bool {
    service_type(svc) == "LoadBalancer"
        && svc["spec"]["externalTrafficPolicy"].as_str() == Some("Local")
}

struct Ranges {
    ips: ClusterIpRange,
    ports: NodePortRange,
}

/// The allocator state of the API server.
pub struct ServiceAllocator {
    ranges: Mutex<Ranges>,
}

/// Invalid-value error whose value prints as Go's `%v`/`%#v` would.
fn invalid(field: &str, printed_value: &str, detail: &str) -> FieldError {
    FieldError::new(
        field,
        FieldErrorReason::Invalid,
        None,
        format!("{printed_value}: {detail}"),
    )
}

impl ServiceAllocator {
    pub fn new(service_cidr: &str, node_port_range: &str) -> Result<Self, String> {
        Ok(ServiceAllocator {
            ranges: Mutex::new(Ranges {
                ips: ClusterIpRange::parse(service_cidr)?,
                ports: NodePortRange::parse(node_port_range)?,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ranges> {
        self.ranges.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address of the `kubernetes` Service.
    pub fn first_ip(&self) -> Ipv4Addr {
        self.lock().ips.first()
    }

    /// Prometheus gauges with kube-apiserver's allocator metric names.
    pub fn metrics(&self) -> String {
        let r = self.lock();
        let cidr = r.ips.cidr();
        let ports = r.ports.describe();
        format!(
            "# HELP kube_apiserver_clusterip_allocator_allocated_ips Gauge measuring the number of allocated IPs for Services\n\
             # TYPE kube_apiserver_clusterip_allocator_allocated_ips gauge\n\
             kube_apiserver_clusterip_allocator_allocated_ips{{cidr=\"{cidr}\"}} {}\n\
             # HELP kube_apiserver_clusterip_allocator_available_ips Gauge measuring the number of available IPs for Services\n\
             # TYPE kube_apiserver_clusterip_allocator_available_ips gauge\n\
             kube_apiserver_clusterip_allocator_available_ips{{cidr=\"{cidr}\"}} {}\n\
             # HELP kube_apiserver_nodeport_allocator_allocated_ports Gauge measuring the number of allocated NodePorts for Services\n\
             # TYPE kube_apiserver_nodeport_allocator_allocated_ports gauge\n\
             kube_apiserver_nodeport_allocator_allocated_ports{{range=\"{ports}\"}} {}\n\
             # HELP kube_apiserver_nodeport_allocator_available_ports Gauge measuring the number of available NodePorts for Services\n\
             # TYPE kube_apiserver_nodeport_allocator_available_ports gauge\n\
             kube_apiserver_nodeport_allocator_available_ports{{range=\"{ports}\"}} {}\n",
            r.ips.used(),
            r.ips.free(),
            r.ports.used(),
            r.ports.free(),
        )
    }

    /// Marks what stored Services hold; returns the conflicts found (the
    /// same value held twice, or a value outside the range).
    pub fn repair<'a>(&self, services: impl Iterator<Item = (&'a str, Value)>) -> Vec<String> {
        let mut r = self.lock();
        let mut problems = Vec::new();
        for (key, svc) in services {
            let h = Holdings::of(&svc);
            for ip in h.ips {
                if let Err(e) = r.ips.allocate(ip) {
                    problems.push(format!("{key}: ClusterIP {ip}: {e:?}"));
                }
            }
            for port in h.ports {
                if let Err(e) = r.ports.allocate(port) {
                    problems.push(format!("{key}: NodePort {port}: {e:?}"));
                }
            }
        }
        problems
    }

    /// Frees what a deleted Service held.
    pub fn release(&self, h: &Holdings) {
        let mut r = self.lock();
        for ip in &h.ips {
            r.ips.release(*ip);
        }
        for port in &h.ports {
            r.ports.release(*port);
        }
    }

    /// Fills in and reserves what `svc` needs that `old` (the stored
    /// version, if any) does not already hold. Returns what was newly
    /// reserved (to release if the write fails); on error nothing stays
    /// reserved.
    pub fn reserve(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> Result<Holdings, ApiError> {
        let held = old.map(Holdings::of).unwrap_or_default();
        let mut r = self.lock();
        let mut reserved = Holdings::default();
        let result = self.reserve_locked(&mut r, svc, &held, &mut reserved);
        match result {
            Ok(()) => Ok(reserved),
            Err(e) => {
                for ip in &reserved.ips {
                    r.ips.release(*ip);
                }
                for port in &reserved.ports {
                    r.ports.release(*port);
                }
                Err(match e {
                    Reservation::Invalid(errors) => {
                        let services = ferry_api::resources::find_kind("", "Service")
                            .expect("services are served");
                        ApiError::invalid(services, name, &errors)
                    }
                    Reservation::Full(what) => {
                        ApiError::internal(format!("failed to allocate a {what}: range is full"))
                    }
                })
            }
        }
    }

    fn reserve_locked(
        &self,
        r: &mut Ranges,
        svc: &mut Value,
        held: &Holdings,
        reserved: &mut Holdings,
    ) -> Result<(), Reservation> {
        if needs_cluster_ip(svc) {
            let requested = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
            let ip = if requested.is_empty() {
                let ip = r
                    .ips
                    .allocate_next()
                    .map_err(|_| Reservation::Full("serviceIP"))?;
                reserved.ips.insert(ip);
                ip
            } else {
                let ip: Ipv4Addr = requested.parse().map_err(|_| {
                    Reservation::Invalid(vec![invalid(
                        "spec.clusterIPs",
                        &format!("[]string{{\"{requested}\"}}"),
                        "must be a valid IP address",
                    )])
                })?;
                if !held.ips.contains(&ip) {
                    match r.ips.allocate(ip) {
                        Ok(()) => {
                            reserved.ips.insert(ip);
                        }
                        Err(e) => {
                            let detail = match e {
                                AllocationError::OutOfRange => format!(
                                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                                    r.ips.cidr()
                                ),
                                _ => format!(
                                    "failed to allocate IP {ip}: provided IP is already allocated"
                                ),
                            };
                            return Err(Reservation::Invalid(vec![invalid(
                                "spec.clusterIPs",
                                &format!("[]string{{\"{ip}\"}}"),
                                &detail,
                            )]));
                        }
                    }
                }
                ip
            };
            svc["spec"]["clusterIP"] = json!(ip.to_string());
            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
        }

        let node_ports = needs_node_ports(svc);
        let mut errors = Vec::new();
        // Ports of one Service may share a nodePort when their protocols
        // differ (TCP and UDP on 53, say).
        let mut mine: BTreeSet<i64> = BTreeSet::new();
        let ports_len = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..ports_len {
            let port = &mut svc["spec"]["ports"][i];
            let requested = port["nodePort"].as_i64().filter(|n| *n != 0);
            let value = match requested {
                Some(n) => n,
                None if node_ports => {
                    let n = r
                        .ports
                        .allocate_next()
                        .map_err(|_| Reservation::Full("nodePort"))?;
                    reserved.ports.insert(n);
                    mine.insert(n);
                    port["nodePort"] = json!(n);
                    continue;
                }
                None => continue,
            };
            if held.ports.contains(&value) || mine.contains(&value) {
                mine.insert(value);
                continue;
            }
            match r.ports.allocate(value) {
                Ok(()) => {
                    reserved.ports.insert(value);
                    mine.insert(value);
                }
                Err(AllocationError::OutOfRange) => errors.push(invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    &value.to_string(),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {}",
                        r.ports.describe()
                    ),
                )),
                Err(_) => errors.push(invalid(
                    &format!("spec.ports[{i}].nodePort"),
                    &value.to_string(),
                    "provided port is already allocated",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(Reservation::Invalid(errors));
        }

        if needs_health_check_port(svc) {
            match svc["spec"]["healthCheckNodePort"]
                .as_i64()
                .filter(|n| *n != 0)
            {
                None => {
                    let n = r
                        .ports
                        .allocate_next()
                        .map_err(|_| Reservation::Full("nodePort"))?;
                    reserved.ports.insert(n);
                    svc["spec"]["healthCheckNodePort"] = json!(n);
                }
                Some(n) if held.ports.contains(&n) => {}
                Some(n) => {
                    if let Err(e) = r.ports.allocate(n) {
                        let detail = match e {
                            AllocationError::OutOfRange => format!(
                                "provided port is not in the valid range. The range of valid ports is {}",
                                r.ports.describe()
                            ),
                            _ => "provided port is already allocated".to_string(),
                        };
                        return Err(Reservation::Invalid(vec![invalid(
                            "spec.healthCheckNodePort",
                            &n.to_string(),
                            &detail,
                        )]));
                    }
                    reserved.ports.insert(n);
                }
            }
        }
        Ok(())
    }

    /// What an update frees once it is stored: held before, not after.
    pub fn released_by_update(old: &Value, new: &Value) -> Holdings {
        Holdings::of(old).minus(&Holdings::of(new))
    }

    #[cfg(test)]
    pub fn holds_port(&self, port: i64) -> bool {
        self.lock().ports.has(port)
    }
}

enum Reservation {
    Invalid(Vec<FieldError>),
    Full(&'static str),
}

/// Carries allocated values over an update that leaves them out, as
/// kube-apiserver's `patchAllocatedValues` does (`kubectl apply` never
/// sends the clusterIP or nodePorts the server chose). Dropping values a
/// new type no longer uses is `defaults::drop_type_dependent_fields`.
pub fn carry_over_allocations(new: &mut Value, old: &Value) {
    let old_spec = &old["spec"];
    if needs_cluster_ip(new)
        && needs_cluster_ip(old)
        && new["spec"]["clusterIP"].as_str().is_none_or(str::is_empty)
    {
        new["spec"]["clusterIP"] = old_spec["clusterIP"].clone();
        new["spec"]["clusterIPs"] = old_spec["clusterIPs"].clone();
    }
    if needs_node_ports(new) && needs_node_ports(old) {
        let old_ports = old_spec["ports"].as_array().cloned().unwrap_or_default();
        let ports_len = new["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..ports_len {
            let port = &mut new["spec"]["ports"][i];
            if port["nodePort"].as_i64().is_some_and(|n| n != 0) {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o["port"] == port["port"]
                    && o["protocol"].as_str().unwrap_or("TCP")
                        == port["protocol"].as_str().unwrap_or("TCP")
            });
            if let Some(o) = same {
                port["nodePort"] = o["nodePort"].clone();
            }
        }
    }
    if needs_health_check_port(new)
        && needs_health_check_port(old)
        && new["spec"]["healthCheckNodePort"]
            .as_i64()
            .is_none_or(|n| n == 0)
    {
        new["spec"]["healthCheckNodePort"] = old_spec["healthCheckNodePort"].clone();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn alloc() -> ServiceAllocator {
        ServiceAllocator::new("10.96.0.0/12", "30000-32767").unwrap()
    }

    #[test]
    fn node_port_conflicts_use_kubernetes_message() {
        let a = alloc();
        let mut first =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 30120}]}});
        a.reserve(&mut first, None, "a").unwrap();
        assert!(
            first["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .starts_with("10.")
        );
        let mut second =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30120}]}});
        let err = a.reserve(&mut second, None, "b").unwrap_err();
        assert_eq!(
            err.message,
            "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30120: provided port is already allocated"
        );
        // The failed create kept nothing: its ClusterIP went back.
        let ip_count = a.lock().ips.used();
        assert_eq!(ip_count, 1);
    }

    #[test]
    fn type_change_releases_node_ports() {
        let a = alloc();
        let mut old =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        a.reserve(&mut old, None, "s").unwrap();
        let port = old["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        ferry_api::defaults::drop_type_dependent_fields(&mut new, &old);
        carry_over_allocations(&mut new, &old);
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        a.reserve(&mut new, Some(&old), "s").unwrap();
        let freed = ServiceAllocator::released_by_update(&old, &new);
        assert_eq!(freed.ports, BTreeSet::from([port]));
        a.release(&freed);
        assert!(!a.holds_port(port));
    }

    #[test]
    fn health_check_port_for_local_load_balancers() {
        let a = alloc();
        let mut lb = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}});
        a.reserve(&mut lb, None, "lb").unwrap();
        let hc = lb["spec"]["healthCheckNodePort"].as_i64().unwrap();
        assert!(a.holds_port(hc));
        let mut no_ports = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}});
        a.reserve(&mut no_ports, None, "lb2").unwrap();
        assert!(no_ports["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn out_of_range_ip() {
        let a = alloc();
        let mut s = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        let err = a.reserve(&mut s, None, "x").unwrap_err();
        assert!(err.message.contains("spec.clusterIPs: Invalid value: []string{\"10.0.0.1\"}: failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"), "{}", err.message);
        let mut headless = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        a.reserve(&mut headless, None, "h").unwrap();
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }
}
