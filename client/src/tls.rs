//! How a client decides to trust a shard: by the SHA-256 fingerprint of its
//! certificate (development, self-signed shards) or by a CA. Verification is
//! never switched off.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

pub use rally_protocol::ALPN;

/// What the client trusts.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// Exactly the certificate with this SHA-256 (hex, colons allowed).
    Fingerprint(String),
    /// Certificates chaining to the CAs in this PEM file.
    CaFile(PathBuf),
}

/// Builds a quinn client config for `trust`.
pub fn client_config(trust: &ServerTrust) -> anyhow::Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with ring")?;
    let mut crypto = match trust {
        ServerTrust::Fingerprint(hex) => {
            let fingerprint = parse_fingerprint(hex)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate { fingerprint, provider }))
                .with_no_client_auth()
        }
        ServerTrust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(path).with_context(|| format!("reading CA file {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("parsing CA file {}", path.display()))?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).context("QUIC TLS config")?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

fn parse_fingerprint(hex: &str) -> anyhow::Result<[u8; 32]> {
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    if digits.chars().count() != 64 {
        bail!("a certificate fingerprint is 64 hex digits (SHA-256), got {} characters", digits.chars().count());
    }
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(&digits, &mut out).with_context(|| format!("fingerprint {hex:?} is not hex"))?;
    Ok(out)
}

/// Accepts exactly one certificate, by hash, and still checks the handshake
/// signatures so the server must hold that certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if actual == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the shard's certificate does not match the pinned SHA-256 fingerprint".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&plain).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        // 62 ASCII digits and one two-byte character: 64 bytes, which byte
        // offsets once sliced through the middle of (a panic on bad input).
        let non_ascii = format!("{}é", "a".repeat(62));
        assert_eq!(non_ascii.len(), 64);
        assert!(parse_fingerprint(&non_ascii).is_err());
    }
}
