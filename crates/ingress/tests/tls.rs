//! TLS listener behaviour over real loopback handshakes (127.0.0.1 only):
//! certificate choice by SNI, the default certificate, rotation without
//! dropping connections, protocol versions, ALPN and resumption.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_ingress::dataplane::tls::{CertResolver, server_config};
use ferry_ingress::model::tls::{
    CertIndex, Certificate, DEFAULT_COMMON_NAME, TlsError, certificate_from_secret,
    crypto_provider, default_certificate,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, HandshakeKind, ProtocolVersion, SignatureScheme,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

type Secret = BTreeMap<String, Vec<u8>>;

/// A test CA issuing leaf certificates as Secret data (leaf + CA chain).
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Ferry test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    fn secret(&self, cn: &str, sans: &[&str]) -> Secret {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let leaf = params.signed_by(&key, &*self.0).unwrap();
        BTreeMap::from([
            (
                "tls.crt".into(),
                format!("{}{}", leaf.pem(), self.0.pem()).into_bytes(),
            ),
            ("tls.key".into(), key.serialize_pem().into_bytes()),
        ])
    }

    fn cert(&self, cn: &str, sans: &[&str]) -> Arc<Certificate> {
        Arc::new(certificate_from_secret("default/test", &self.secret(cn, sans)).unwrap())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.0.der().clone()).unwrap();
        roots
    }
}

fn index(entries: &[(&str, &Arc<Certificate>)]) -> CertIndex {
    let mut index = CertIndex::new(default_certificate());
    for (host, cert) in entries {
        index.insert(host, Arc::clone(cert));
    }
    index
}

/// A TLS listener on 127.0.0.1 that greets with "hello\n" and echoes lines.
async fn serve(resolver: Arc<CertResolver>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(resolver));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (read, mut write) = tokio::io::split(tls);
                if write.write_all(b"hello\n").await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Accepts any certificate (still checking handshake signatures), so the
/// test can look at whatever the server chose, default certificate included.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config: trusting `ca` (full verification incl. host name) or
/// anything, restricted to `versions`, offering `alpn`.
fn client(
    ca: Option<&Ca>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .unwrap();
    let mut config = match ca {
        Some(ca) => builder
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn any_client() -> Arc<ClientConfig> {
    client(None, rustls::ALL_VERSIONS, &[])
}

/// Handshakes as `name` (a DNS name is sent as SNI unless the config
/// disables it; an IP never is) and reads the greeting.
async fn connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let mut greeting = [0u8; 6];
    tls.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"hello\n");
    tls
}

fn served_leaf(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn echo(tls: &mut TlsStream<TcpStream>, line: &str) {
    tls.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut back = vec![0u8; line.len() + 1];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(back, format!("{line}\n").as_bytes());
}

#[tokio::test]
async fn shared_san_certificate_for_both_hosts() {
    let ca = Ca::new();
    let ab = ca.cert("ab", &["a.test", "b.test"]);
    let addr = serve(CertResolver::new(index(&[
        ("a.test", &ab),
        ("B.Test", &ab),
    ])))
    .await;
    for host in ["a.test", "b.test", "A.TEST"] {
        // Full verification: the chain is the test CA's and the name matches.
        let config = client(Some(&ca), rustls::ALL_VERSIONS, &[]);
        let mut tls = connect(addr, config, host).await;
        assert_eq!(served_leaf(&tls), ab.leaf_der(), "{host}");
        assert_eq!(tls.get_ref().1.peer_certificates().unwrap().len(), 2);
        echo(&mut tls, host).await;
    }
}

#[tokio::test]
async fn unknown_or_missing_sni_gets_default_certificate() {
    let ca = Ca::new();
    let ab = ca.cert("ab", &["a.test", "b.test"]);
    let resolver = CertResolver::new(index(&[("a.test", &ab), ("b.test", &ab)]));
    let default = resolver.current().default_certificate().clone();
    assert_eq!(default.common_name.as_deref(), Some(DEFAULT_COMMON_NAME));
    assert_eq!(default.names, ["ingress.local"]);
    let addr = serve(resolver).await;

    let unknown = connect(addr, any_client(), "c.test").await;
    assert_eq!(served_leaf(&unknown), default.leaf_der());
    let ip = connect(addr, any_client(), "127.0.0.1").await;
    assert_eq!(served_leaf(&ip), default.leaf_der());
    let mut no_sni = (*any_client()).clone();
    no_sni.enable_sni = false;
    let no_sni = connect(addr, Arc::new(no_sni), "a.test").await;
    assert_eq!(served_leaf(&no_sni), default.leaf_der());
    let cn = DEFAULT_COMMON_NAME.as_bytes();
    assert!(served_leaf(&no_sni).windows(cn.len()).any(|w| w == cn));
}

#[tokio::test]
async fn wildcard_covers_exactly_one_label() {
    let ca = Ca::new();
    let wild = ca.cert("wild", &["*.wild.test"]);
    let resolver = CertResolver::new(index(&[("*.wild.test", &wild)]));
    let default = resolver.current().default_certificate().clone();
    let addr = serve(resolver).await;
    let config = client(Some(&ca), rustls::ALL_VERSIONS, &[]);
    assert_eq!(
        served_leaf(&connect(addr, config, "x.wild.test").await),
        wild.leaf_der()
    );
    for host in ["y.x.wild.test", "wild.test"] {
        let tls = connect(addr, any_client(), host).await;
        assert_eq!(served_leaf(&tls), default.leaf_der(), "{host}");
    }
}

#[tokio::test]
async fn rotation_serves_new_certificate_and_keeps_open_connections() {
    let ca = Ca::new();
    let v1 = ca.cert("ab", &["a.test", "b.test"]);
    let v2 = ca.cert("ab", &["a.test", "b.test"]);
    assert_ne!(v1.serial, v2.serial);
    let resolver = CertResolver::new(index(&[("a.test", &v1), ("b.test", &v1)]));
    let addr = serve(resolver.clone()).await;
    let mut old = connect(addr, client(Some(&ca), rustls::ALL_VERSIONS, &[]), "a.test").await;
    assert_eq!(served_leaf(&old), v1.leaf_der());

    let swapped = Instant::now();
    resolver.swap(index(&[("a.test", &v2), ("b.test", &v2)]));
    // Behaviour, not timing: poll fresh handshakes (new session store each,
    // so none resumes the old session) until the new certificate shows.
    loop {
        let config = client(Some(&ca), rustls::ALL_VERSIONS, &[]);
        let tls = connect(addr, config, "b.test").await;
        if served_leaf(&tls) == v2.leaf_der() {
            break;
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(1),
            "still the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(resolver.current().lookup(Some("a.test")).serial, v2.serial);

    // The connection opened before the swap is untouched.
    echo(&mut old, "still here").await;
    assert_eq!(served_leaf(&old), v1.leaf_der());
}

#[tokio::test]
async fn missing_or_bad_secret_gives_default_certificate_and_event_reason() {
    let ca = Ca::new();
    let good = ca.secret("ab", &["a.test", "b.test"]);
    let mut mismatched = ca.secret("c", &["c.test"]);
    mismatched.insert("tls.key".into(), good["tls.key"].clone());
    let secrets = BTreeMap::from([("default/ab", good), ("default/c", mismatched)]);
    let hosts = [
        ("a.test", "default/ab"),
        ("b.test", "default/gone"),
        ("c.test", "default/c"),
        ("d.test", "default/ab"),
    ];
    let (index, errors) = CertIndex::build(default_certificate(), hosts, |name| {
        let data = secrets.get(name).ok_or_else(|| TlsError::SecretNotFound {
            secret: name.to_string(),
        })?;
        certificate_from_secret(name, data).map(Arc::new)
    });
    let events: Vec<_> = errors
        .iter()
        .map(|(i, host, e)| (*i, host.as_str(), e.reason(), e.to_string()))
        .collect();
    assert_eq!(
        events[0],
        (
            1,
            "b.test",
            "TLSSecretNotFound",
            "secret default/gone not found".into()
        )
    );
    assert_eq!(events[1].0, 2);
    assert_eq!((events[1].1, events[1].2), ("c.test", "TLSSecretInvalid"));
    assert!(
        events[1].3.contains("matching public key"),
        "{}",
        events[1].3
    );
    assert_eq!((events[2].0, events[2].1), (3, "d.test"));
    assert_eq!(events[2].2, "TLSCertificateMismatch");
    assert_eq!(events.len(), 3);

    let resolver = CertResolver::new(index);
    let default = resolver.current().default_certificate().clone();
    let addr = serve(resolver).await;
    let a = connect(addr, any_client(), "a.test").await;
    assert_ne!(served_leaf(&a), default.leaf_der());
    for host in ["b.test", "c.test", "d.test"] {
        let tls = connect(addr, any_client(), host).await;
        assert_eq!(served_leaf(&tls), default.leaf_der(), "{host}");
    }
}

#[tokio::test]
async fn tls12_and_tls13_negotiate_alpn() {
    let ca = Ca::new();
    let ab = ca.cert("ab", &["a.test"]);
    let addr = serve(CertResolver::new(index(&[("a.test", &ab)]))).await;
    let cases: [(&'static rustls::SupportedProtocolVersion, ProtocolVersion); 2] = [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ];
    for (version, wire) in cases {
        // (client's ALPN list, protocol the server picks)
        type Offer = (&'static [&'static [u8]], Option<&'static [u8]>);
        let offers: [Offer; 4] = [
            (&[b"h2", b"http/1.1"], Some(b"h2")),
            (&[b"http/1.1", b"h2"], Some(b"h2")),
            (&[b"http/1.1"], Some(b"http/1.1")),
            (&[], None),
        ];
        for (alpn, want) in offers {
            let config = client(Some(&ca), &[version], alpn);
            let mut tls = connect(addr, config, "a.test").await;
            let conn = tls.get_ref().1;
            assert_eq!(conn.protocol_version(), Some(wire));
            assert_eq!(conn.alpn_protocol(), want, "{wire:?} {alpn:?}");
            echo(&mut tls, "ok").await;
        }
    }
}

#[tokio::test]
async fn sessions_resume() {
    let ca = Ca::new();
    let ab = ca.cert("ab", &["a.test"]);
    let addr = serve(CertResolver::new(index(&[("a.test", &ab)]))).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = client(Some(&ca), &[version], &[b"h2"]);
        let first = connect(addr, config.clone(), "a.test").await;
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        let second = connect(addr, config, "a.test").await;
        let kind = second.get_ref().1.handshake_kind();
        assert_eq!(kind, Some(HandshakeKind::Resumed), "{version:?}");
    }
}

/// A TLS 1.1 ClientHello (client_version 3.2, no supported_versions
/// extension) for `a.test`, optionally with signature_algorithms (which
/// TLS 1.1 clients such as OpenSSL do not send).
fn tls11_client_hello(signature_algorithms: bool) -> Vec<u8> {
    let mut extensions = [&[0, 0, 0, 11, 0, 9, 0, 0, 6][..], b"a.test"].concat();
    if signature_algorithms {
        extensions.extend([0, 13, 0, 6, 0, 4, 4, 3, 4, 1]); // ecdsa_p256_sha256, rsa_pkcs1_sha256
    }
    let mut body = vec![3, 2]; // client_version TLS 1.1
    body.extend([0x42; 32]); // random
    body.push(0); // no session id
    body.extend([0, 4, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE_RSA/RSA AES128-CBC-SHA
    body.extend([1, 0]); // null compression
    body.extend(u16::try_from(extensions.len()).unwrap().to_be_bytes());
    body.extend(&extensions);
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let handshake = [&[1, len[1], len[2], len[3]][..], &body].concat();
    let hlen = u16::try_from(handshake.len()).unwrap().to_be_bytes();
    [&[0x16, 3, 2, hlen[0], hlen[1]][..], &handshake].concat()
}

/// rustls clients cannot speak TLS 1.1, so send hand-made ClientHellos and
/// expect a fatal alert and a close, never a ServerHello.
#[tokio::test]
async fn tls11_client_hello_is_refused() {
    let ca = Ca::new();
    let ab = ca.cert("ab", &["a.test"]);
    let addr = serve(CertResolver::new(index(&[("a.test", &ab)]))).await;
    // protocol_version (70) once the hello is otherwise acceptable;
    // handshake_failure (40) for a typical TLS 1.1 hello without signature_algorithms.
    for (signature_algorithms, alert) in [(true, 70u8), (false, 40)] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&tls11_client_hello(signature_algorithms))
            .await
            .unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply))
            .await
            .expect("server closes the connection")
            .unwrap();
        // One alert record (content type 21), fatal (2), then EOF.
        assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
        assert_eq!(reply.get(5..), Some(&[2u8, alert][..]), "{reply:?}");
    }
}
