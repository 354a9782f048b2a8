//! UDP: one blocking worker thread per core, each with its own
//! `SO_REUSEPORT` socket, so the kernel spreads clients over the threads
//! and no lock or queue sits between a packet and its answer. A query the
//! index and the cache cannot answer goes to the async forwarder, which
//! replies on the same socket.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

use super::{Handled, Shared};
use crate::metrics::Proto;

/// Binds one socket per worker on `addr` (SO_REUSEPORT). With port 0 the
/// first socket picks the port and the others join it.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<UdpSocket>> {
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(workers.max(1));
    for _ in 0..workers.max(1) {
        let at = match sockets.first() {
            Some(first) => first.local_addr()?,
            None => addr,
        };
        let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        // Bursts from many clients queue here rather than being dropped.
        let _ = socket.set_recv_buffer_size(4 << 20);
        socket.bind(&at.into())?;
        sockets.push(socket.into());
    }
    Ok(sockets)
}

/// Starts the workers; they run for the life of the process.
pub fn start(sockets: Vec<UdpSocket>, shared: Arc<Shared>, runtime: tokio::runtime::Handle) {
    for (shard, socket) in sockets.into_iter().enumerate() {
        let shared = shared.clone();
        let runtime = runtime.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dns-udp-{shard}"))
            .spawn(move || worker(Arc::new(socket), shared, runtime, shard));
        if let Err(e) = spawned {
            tracing::error!("cannot start UDP worker {shard}: {e}");
        }
    }
}

fn worker(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    shard: usize,
) {
    let mut packet = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    let mut rotation = shard;
    loop {
        let (len, peer) = match socket.recv_from(&mut packet) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("udp receive: {e}");
                continue;
            }
        };
        rotation = rotation.wrapping_add(1);
        let query = &packet[..len];
        match shared.handle(query, Proto::Udp, peer.is_ipv6(), rotation, shard, &mut out) {
            Handled::Reply => {
                if let Err(e) = socket.send_to(&out, peer) {
                    tracing::debug!("udp send to {peer}: {e}");
                }
            }
            Handled::Drop => {}
            Handled::Forward { limit } => {
                let started = Instant::now();
                let query = query.to_vec();
                let (socket, shared) = (socket.clone(), shared.clone());
                runtime.spawn(async move {
                    let reply = shared.forwarder.resolve(&query, limit).await;
                    let _ = socket.send_to(&reply, peer);
                    shared.observe_forwarded(
                        shard,
                        Proto::Udp,
                        peer.is_ipv6(),
                        &query,
                        &reply,
                        started,
                    );
                });
            }
        }
    }
}
