//! Secure-by-default bootstrap: a cluster CA, a serving certificate, an admin
//! bearer token and an admin kubeconfig, all created on first start and kept
//! in the data directory.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// PEM material the server needs.
pub struct Pki {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ferry-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Loads the CA from `dir/pki`, creating it on first start, and issues a
/// fresh serving certificate for `hosts` (names and IP addresses).
pub fn load_or_create(dir: &Path, hosts: &[String]) -> anyhow::Result<Pki> {
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    let ca_cert_path = pki_dir.join("ca.crt");
    let ca_key_path = pki_dir.join("ca.key");
    let (ca_cert_pem, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        let key_pem = std::fs::read_to_string(&ca_key_path)?;
        let key = KeyPair::from_pem(&key_pem).context("parsing the CA key")?;
        (std::fs::read_to_string(&ca_cert_path)?, key)
    } else {
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = ca_params().self_signed(&key).context("signing the CA")?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_private(&ca_cert_path, cert.pem().as_bytes())?;
        (cert.pem(), key)
    };
    // The issuer is rebuilt from the same name and key as the stored CA, so
    // the chain verifies against ca.crt.
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ferry-apiserver");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.clone()
                    .try_into()
                    .with_context(|| format!("{host:?} is not a valid DNS name"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let key = KeyPair::generate().context("generating the serving key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the serving certificate")?;
    let server_key_pem = key.serialize_pem();
    let server_cert_pem = cert.pem();
    write_private(&pki_dir.join("apiserver.crt"), server_cert_pem.as_bytes())?;
    write_private(&pki_dir.join("apiserver.key"), server_key_pem.as_bytes())?;
    Ok(Pki {
        ca_cert_pem,
        server_cert_pem,
        server_key_pem,
    })
}

/// The admin bearer token, created on first start.
pub fn load_or_create_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("pki").join("admin.token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    std::fs::create_dir_all(dir.join("pki"))?;
    // Two v4 UUIDs carry 244 random bits from the OS generator.
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

/// Writes an admin kubeconfig for `server` (an https URL).
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_cert_pem: &str,
    token: &str,
) -> anyhow::Result<PathBuf> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_cert_pem);
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferry
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: ferry-admin
  user:
    token: {token}
contexts:
- name: ferry
  context:
    cluster: ferry
    user: ferry-admin
    namespace: default
current-context: ferry
"
    );
    write_private(path, config.as_bytes())?;
    Ok(path.to_path_buf())
}
