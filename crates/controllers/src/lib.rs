//! `ferry controllers`: Ferry's kube-controller-manager (plus a small
//! scheduler).
//!
//! Every controller is a kube-rs client: it watches the API, computes the
//! desired state with a pure model where there is real logic (endpoint
//! slices, rollouts, scheduling, IPAM), and writes the difference back.
//! Only the leader of a `coordination.k8s.io/v1` Lease acts, so two
//! instances can run side by side.

pub mod config;
pub mod controller_utils;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod lb_ipam;
pub mod leader;
pub mod mirroring;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod scheduler;

pub use config::Config;

use std::sync::Arc;

use anyhow::Context as _;

/// What every controller gets.
pub struct Context {
    pub client: kube::Client,
    pub config: Config,
}

/// Runs the controllers until the process stops or leadership is lost.
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let ctx = Arc::new(Context { client, config });
    let elector = leader::Elector::new(ctx.client.clone(), &ctx.config);
    if ctx.config.leader_elect {
        elector
            .acquire()
            .await
            .context("acquiring the leader lease")?;
    }
    let mut controllers = tokio::task::JoinSet::new();
    start_all(&mut controllers, ctx.clone());
    tokio::select! {
        lost = elector.keep(ctx.config.leader_elect) => {
            controllers.abort_all();
            lost
        }
        done = controllers.join_next() => match done {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(anyhow::anyhow!("a controller panicked: {e}")),
            _ => Ok(()),
        },
    }
}

/// Each controller runs until an unrecoverable error; the first one to
/// stop stops the process, which its supervisor restarts.
fn start_all(set: &mut tokio::task::JoinSet<anyhow::Result<()>>, ctx: Arc<Context>) {
    set.spawn(node_ipam::run(ctx.clone()));
    set.spawn(endpointslice::run(ctx.clone()));
    set.spawn(endpoints::run(ctx.clone()));
    set.spawn(mirroring::run(ctx.clone()));
    set.spawn(scheduler::run(ctx.clone()));
    set.spawn(lb_ipam::run(ctx.clone()));
    set.spawn(node_lifecycle::run(ctx.clone()));
    set.spawn(replicaset::run(ctx.clone()));
    set.spawn(deployment::run(ctx.clone()));
    set.spawn(daemonset::run(ctx.clone()));
    set.spawn(gc::run(ctx.clone()));
}
