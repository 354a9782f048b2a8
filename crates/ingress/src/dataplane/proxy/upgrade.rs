//! WebSocket (and any HTTP/1.1 `Upgrade`) tunnels. Once the endpoint
//! answered 101 and the client got it, both connections are handed over
//! by hyper and spliced byte for byte. The tunnel holds no route state
//! (no `Routes`, no `Location`), so swapping routes never touches it; it
//! counts as an open connection for [`super::Proxy::drain`] and ends when
//! either side closes or the drain's grace period is over.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::{Phase, Tracked};

pub(super) fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    tracked: Tracked,
    mut phase: watch::Receiver<Phase>,
) {
    tokio::spawn(async move {
        let _tracked = tracked;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            done = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "tunnel ended");
                }
            }
            _ = super::until(&mut phase, |p| p == Phase::Closing) => {}
        }
    });
}
