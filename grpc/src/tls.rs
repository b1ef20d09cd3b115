//! TLS material as the operator gives it, for either runtime's server.

/// PEM material for TLS. With `client_ca`, client certificates are required and verified
/// against it (mTLS); there is no optional-client-certificate mode.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").field("mtls", &self.client_ca_pem.is_some()).finish_non_exhaustive()
    }
}
