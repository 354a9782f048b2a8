//! SNI certificate selection for the TLS listener. The `ServerConfig` is
//! built once and never replaced; only the [`CertIndex`] inside the
//! resolver is swapped (arc-swap), so a Secret change reaches the next
//! handshake at once, a handshake never waits on a lock, and connections
//! already established keep the certificate they were opened with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use crate::model::tls::{CertIndex, crypto_provider};

/// Stateful resumption entries kept when no ticketer is available.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// SNI-based certificate resolver over an atomically swapped [`CertIndex`].
/// It always answers (the default certificate for unknown or missing SNI),
/// so no handshake is aborted for lack of a certificate.
pub struct CertResolver {
    index: ArcSwap<CertIndex>,
}

impl CertResolver {
    pub fn new(index: CertIndex) -> Arc<Self> {
        Arc::new(CertResolver {
            index: ArcSwap::from_pointee(index),
        })
    }

    /// Publishes a new table and returns the previous one; handshakes in
    /// flight finish with the old one.
    pub fn swap(&self, index: CertIndex) -> Arc<CertIndex> {
        self.index.swap(Arc::new(index))
    }

    pub fn current(&self) -> Arc<CertIndex> {
        self.index.load_full()
    }
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let index = self.index.load();
        let cert = index.lookup(hello.server_name());
        tracing::trace!(sni = ?hello.server_name(), serial = %cert.serial, "serving certificate");
        Some(cert.key.clone())
    }
}

/// The listener's config: TLS 1.3 and 1.2 only (ring), ALPN `h2` then
/// `http/1.1`, session resumption by stateless tickets (TLS 1.2 and 1.3)
/// with an in-memory session cache as fallback, certificates from `resolver`.
///
/// # Panics
/// Never in practice: ring supports both protocol versions.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(e) => tracing::warn!(error = %e, "no TLS session tickets; using the session cache"),
    }
    Arc::new(config)
}
