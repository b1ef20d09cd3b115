//! rustls settings for the blocking server, from the same PEM files as the gRPC server: TLS 1.2
//! and 1.3 with the ring provider, `http/1.1` by ALPN, client certificates required and verified
//! when a client CA is given (mTLS).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::TlsFiles;

pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("--tls-cert", &files.cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key_pem)
        .map_err(|e| format!("--tls-key: no private key in the PEM file ({e})"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match &files.client_ca_pem {
        Some(ca_pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates("--mtls-client-ca", ca_pem)? {
                roots.add(ca).map_err(|e| format!("--mtls-client-ca: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--mtls-client-ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(chain, key).map_err(|e| format!("--tls-cert/--tls-key do not form a pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(flag: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag}: not a PEM certificate file ({e})"))?;
    if chain.is_empty() {
        return Err(format!("{flag}: the file holds no CERTIFICATE block"));
    }
    Ok(chain)
}
