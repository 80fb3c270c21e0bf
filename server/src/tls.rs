//! TLS 1.3 server configuration: load the configured PEM files, or generate a development
//! CA and server certificate under `DATA_DIR/tls/` on first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// The rustls config, and the CA file clients should trust when it was generated here.
pub fn server_config(config: &Config) -> anyhow::Result<(Arc<ServerConfig>, Option<PathBuf>)> {
    let (cert, key, ca) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), None),
        _ => {
            let dir = config.data_dir.join("tls");
            let (cert, key, ca) = dev_files(&dir);
            if !cert.exists() || !key.exists() || !ca.exists() {
                generate_dev_certs(&dir)?;
            }
            (cert, key, Some(ca))
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok((Arc::new(tls), ca))
}

fn dev_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    )
}

/// A CA valid for development, and a server certificate it signs for localhost, 127.0.0.1
/// and ::1. The CA key is kept beside it so more certificates can be signed later.
fn generate_dev_certs(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "chatd development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".into(),
        "::1".into(),
    ])?;
    params.distinguished_name.push(DnType::CommonName, "chatd");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;

    let (cert_path, key_path, ca_path) = dev_files(dir);
    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&ca_path, ca.pem())?;
    tracing::info!(
        "generated a development CA: clients must trust {}",
        ca_path.display()
    );
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}
