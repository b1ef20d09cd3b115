//! Certificates made in the test (rcgen): a CA for the daemon's certificate, one for client
//! certificates, and leaves they issue, written as PEM files a command line can name.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub(crate) struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pub(crate) pem: String,
}

impl Authority {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A leaf certificate for `names`: (certificate PEM, key PEM, certificate DER).
    pub(crate) fn issue(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// `server.pem`/`server.key` for `localhost`, `server-ca.pem` and `client-ca.pem` in `dir`.
pub(crate) struct Pki {
    pub(crate) dir: PathBuf,
    pub(crate) client_ca: Authority,
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Self {
        let server_ca = Authority::new("server ca");
        let pki = Self { dir: dir.to_path_buf(), client_ca: Authority::new("client ca") };
        let (cert, key, _) = server_ca.issue(&["localhost"]);
        std::fs::write(pki.path("server.pem"), cert).unwrap();
        std::fs::write(pki.path("server.key"), key).unwrap();
        std::fs::write(pki.path("server-ca.pem"), &server_ca.pem).unwrap();
        std::fs::write(pki.path("client-ca.pem"), &pki.client_ca.pem).unwrap();
        pki
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A client certificate from the client CA, written as `NAME.pem` and `NAME.key`; returns
    /// the hex SHA-256 of its DER (what --auditor-cert-fingerprints lists).
    pub(crate) fn client(&self, name: &str) -> String {
        let (cert, key, der) = self.client_ca.issue(&[&format!("{name}.example")]);
        std::fs::write(self.path(&format!("{name}.pem")), cert).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key).unwrap();
        hex::encode(evidenceos_core::hash::sha256(&der))
    }

    pub(crate) fn tls_flags(&self) -> Vec<String> {
        vec!["--tls-cert".into(), self.path("server.pem"), "--tls-key".into(), self.path("server.key")]
    }

    pub(crate) fn mtls_flags(&self) -> Vec<String> {
        let mut flags = self.tls_flags();
        flags.extend(["--mtls-client-ca".into(), self.path("client-ca.pem"), "--require-client-cert".into()]);
        flags
    }
}
