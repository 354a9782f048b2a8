//! TCP (RFC 7766): two-byte length framing, several queries per
//! connection, answered in order. Clients come here after a truncated UDP
//! answer, so every answer fits (65535 bytes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Handled, Shared};
use crate::metrics::Proto;

/// An idle connection is closed after this long (RFC 7766 6.2.3 suggests
/// seconds, not minutes).
const IDLE: Duration = Duration::from_secs(10);
/// Most open connections; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;

/// Serves TCP on `listener` until the task is aborted. `shard` is the
/// metrics shard of the async side.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shard: usize) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let (shared, open) = (shared.clone(), open.clone());
        tokio::spawn(async move {
            let _ = connection(stream, peer.is_ipv6(), &shared, shard).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    ipv6: bool,
    shared: &Shared,
    shard: usize,
) -> std::io::Result<()> {
    let mut packet = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4096);
    let mut rotation = 0usize;
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            // Idle, closed by the client, or reset: done.
            _ => return Ok(()),
        }
        packet.resize(usize::from(u16::from_be_bytes(len)), 0);
        tokio::time::timeout(IDLE, stream.read_exact(&mut packet))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        rotation = rotation.wrapping_add(1);
        let reply: &[u8] = match shared.handle(&packet, Proto::Tcp, ipv6, rotation, shard, &mut out)
        {
            Handled::Reply => &out,
            Handled::Drop => return Ok(()),
            Handled::Forward { limit } => {
                let started = Instant::now();
                out = shared.forwarder.resolve(&packet, limit).await;
                shared.observe_forwarded(shard, Proto::Tcp, ipv6, &packet, &out, started);
                &out
            }
        };
        framed.clear();
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(reply);
        stream.write_all(&framed).await?;
    }
}
