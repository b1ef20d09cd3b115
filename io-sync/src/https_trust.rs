//! Which servers an `https://` exchange of [`crate::http_client`] trusts: Mozilla's public roots
//! (as shipped by `webpki-roots`, so the answer does not depend on the host's certificate store),
//! or only the CAs of a PEM file an operator names (a private witness, an internal mirror).
//! TLS 1.2 and 1.3 with the ring provider, `http/1.1` by ALPN, no client certificate.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A client TLS configuration; cheap to clone.
#[derive(Clone)]
pub struct HttpsTrust {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for HttpsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpsTrust")
    }
}

/// Why a CA file cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustError {
    NotPem(String),
    NoCertificate,
    BadCertificate(String),
}

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotPem(why) => write!(f, "not a PEM certificate file ({why})"),
            Self::NoCertificate => f.write_str("the file holds no CERTIFICATE block"),
            Self::BadCertificate(why) => write!(f, "a certificate cannot be a trust anchor: {why}"),
        }
    }
}

impl std::error::Error for TrustError {}

impl HttpsTrust {
    /// Servers whose chain ends at one of Mozilla's root CAs.
    pub fn public_roots() -> Self {
        static PUBLIC: OnceLock<HttpsTrust> = OnceLock::new();
        PUBLIC
            .get_or_init(|| {
                let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
                Self::with_roots(roots)
            })
            .clone()
    }

    /// Only servers whose chain ends at a certificate of `pem` (public roots are not trusted).
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TrustError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrustError::NotPem(e.to_string()))?;
        if certificates.is_empty() {
            return Err(TrustError::NoCertificate);
        }
        let mut roots = rustls::RootCertStore::empty();
        for certificate in certificates {
            roots.add(certificate).map_err(|e| TrustError::BadCertificate(e.to_string()))?;
        }
        Ok(Self::with_roots(roots))
    }

    fn with_roots(roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("https: the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { config: Arc::new(config) }
    }

    pub(crate) fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}
