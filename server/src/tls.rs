//! The shard's TLS identity: a certificate and key from files, or for
//! development a self-signed certificate generated once and kept in the data
//! directory, so clients can pin its fingerprint across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

pub use rally_protocol::ALPN;

/// Where the shard's certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files given by the operator (`--cert`, `--key`).
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A self-signed certificate for `names`, created in `dir` on first use.
    SelfSigned {
        /// The data directory holding `shard-cert.pem` and `shard-key.pem`.
        dir: PathBuf,
        /// DNS names and IPs the certificate is valid for.
        names: Vec<String>,
    },
}

/// A loaded certificate chain and key.
#[derive(Debug)]
pub struct TlsIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl TlsIdentity {
    /// Loads or creates the identity.
    pub fn load(source: &TlsSource) -> anyhow::Result<Self> {
        match source {
            TlsSource::Files { cert, key } => Self::from_files(cert, key),
            TlsSource::SelfSigned { dir, names } => {
                let cert = dir.join("shard-cert.pem");
                let key = dir.join("shard-key.pem");
                if !cert.exists() || !key.exists() {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
                    let generated = rcgen::generate_simple_self_signed(names.clone())
                        .context("generating a self-signed certificate")?;
                    std::fs::write(&cert, generated.cert.pem())
                        .with_context(|| format!("writing {}", cert.display()))?;
                    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
                    tracing::info!(cert = %cert.display(), "generated a self-signed development certificate");
                }
                Self::from_files(&cert, &key)
            }
        }
    }

    fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading certificate {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing certificate {}", cert.display()))?;
        if chain.is_empty() {
            bail!("no certificate found in {}", cert.display());
        }
        let key =
            PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading private key {}", key.display()))?;
        Ok(Self { chain, key })
    }

    /// SHA-256 of the leaf certificate, lower-case hex: what clients pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.chain[0])
    }

    /// A QUIC server config with this identity, TLS 1.3 only, ALPN `rally/1`.
    pub fn server_config(&self, transport: quinn::TransportConfig) -> anyhow::Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 with ring")?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("certificate and key do not match")?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).context("QUIC TLS config")?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// SHA-256 of a DER certificate, lower-case hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
