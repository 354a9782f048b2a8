//! Controller settings; the defaults are kube-controller-manager's.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Take part in leader election (off: act at once, alone).
    pub leader_elect: bool,
    /// This instance's identity in the Lease.
    pub identity: String,
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// Pod network of the cluster, split into one subnet per node.
    pub cluster_cidr: String,
    pub node_cidr_mask_size: u8,
    /// Addresses handed to `type: LoadBalancer` Services.
    pub load_balancer_pool: Vec<String>,
    /// `spec.loadBalancerClass` this controller serves (None: Services
    /// without a class).
    pub load_balancer_class: Option<String>,
    pub max_endpoints_per_slice: usize,
    /// How long a node may miss heartbeats before it is NotReady.
    pub node_monitor_grace_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            leader_elect: true,
            identity: format!(
                "{}_{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry".into()),
                std::process::id()
            ),
            lease_namespace: "kube-system".into(),
            lease_name: "ferry-controllers".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask_size: 24,
            load_balancer_pool: Vec::new(),
            load_balancer_class: None,
            max_endpoints_per_slice: 100,
            node_monitor_grace_period: Duration::from_secs(40),
        }
    }
}
