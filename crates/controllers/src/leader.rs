//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection does it: the holder renews `renewTime`; others take the
//! lease over once `renewTime + leaseDurationSeconds` has passed. Writes
//! carry the resourceVersion, so two candidates never both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use crate::Config;

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    Following,
}

impl Elector {
    pub fn new(client: kube::Client, config: &Config) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.lease_namespace),
            name: config.lease_name.clone(),
            identity: config.identity.clone(),
            lease_duration: config.lease_duration,
            renew_deadline: config.renew_deadline,
            retry_period: config.retry_period,
        }
    }

    /// Waits until this instance holds the lease.
    pub async fn acquire(&self) -> anyhow::Result<()> {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
                    return Ok(());
                }
                Ok(Attempt::Following) if !announced => {
                    tracing::info!(identity = %self.identity, "waiting for the leader lease");
                    announced = true;
                }
                Ok(Attempt::Following) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Keeps renewing; returns (with an error) once leadership is lost.
    /// Without leader election it never returns.
    pub async fn keep(&self, enabled: bool) -> anyhow::Result<()> {
        if !enabled {
            return std::future::pending().await;
        }
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => last_renew = Instant::now(),
                Ok(Attempt::Following) => {
                    anyhow::bail!("leader lease {} was taken by another instance", self.name)
                }
                Err(e) if last_renew.elapsed() > self.renew_deadline => {
                    anyhow::bail!("could not renew the leader lease within the deadline: {e}")
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease failed; retrying"),
            }
        }
    }

    fn now() -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::now())
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let current = match self.api.get_opt(&self.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
                        acquire_time: Some(Self::now()),
                        renew_time: Some(Self::now()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Leading),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = current.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => {
                let deadline =
                    renewed.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(secs));
                deadline < k8s_openapi::jiff::Timestamp::now()
            }
            _ => true,
        };
        if !mine
            && !expired
            && spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty())
        {
            return Ok(Attempt::Following);
        }
        let mut lease = current.clone();
        let new_spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        new_spec.renew_time = Some(Self::now());
        new_spec.lease_duration_seconds = Some(self.lease_duration.as_secs() as i32);
        if !mine {
            new_spec.holder_identity = Some(self.identity.clone());
            new_spec.acquire_time = Some(Self::now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        // The resourceVersion from the read makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following),
            Err(e) => Err(e),
        }
    }
}
