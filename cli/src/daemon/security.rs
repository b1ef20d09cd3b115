//! Transport security and identity from the flags, for both runtimes.

use evidenceos_grpc::auth::{Authenticator, BearerTokens, CertificateRoles, HmacKeys};
use evidenceos_grpc::tls::TlsFiles;

use crate::Args;

/// Transport security and identity as configured, checked for consistency (SPEC §2.1): an
/// inconsistent combination is a start-up error naming the fix, never a silent downgrade.
pub(crate) struct Security {
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) auth: Authenticator,
}

fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

fn fingerprints(flag: &str, list: &[String]) -> Result<std::collections::BTreeSet<String>, String> {
    list.iter()
        .filter(|f| !f.is_empty())
        .map(|f| {
            let f = f.trim().to_ascii_lowercase().replace(':', "");
            evidenceos_core::hash::parse_hash_hex(&f)
                .map(|_| f.clone())
                .ok_or_else(|| format!("{flag}: {f} is not a SHA-256 fingerprint (64 hex characters)"))
        })
        .collect()
}

pub(crate) fn security(args: &Args) -> Result<Security, String> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((read_pem("--tls-cert", cert)?, read_pem("--tls-key", key)?)),
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key (the certificate's private key)".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
    };
    let client_ca = match (&args.mtls_client_ca, args.require_client_cert) {
        (Some(ca), true) => Some(read_pem("--mtls-client-ca", ca)?),
        (None, false) => None,
        (Some(_), false) => {
            return Err(
                "--mtls-client-ca needs --require-client-cert (optional client certificates are not supported)".into(),
            );
        }
        (None, true) => {
            return Err("--require-client-cert needs --mtls-client-ca (the CA that signs client certificates)".into());
        }
    };
    if client_ca.is_some() && tls.is_none() {
        return Err("mTLS needs TLS: add --tls-cert and --tls-key".into());
    }
    let operators = fingerprints("--operator-cert-fingerprints", &args.operator_cert_fingerprints)?;
    let auditors = fingerprints("--auditor-cert-fingerprints", &args.auditor_cert_fingerprints)?;
    if client_ca.is_none() && !(operators.is_empty() && auditors.is_empty()) {
        return Err("certificate fingerprint roles need mTLS: add --mtls-client-ca and --require-client-cert".into());
    }
    let mut tokens = BearerTokens::default();
    let roles = [
        (&args.agent_tokens, evidenceos_core::Role::Agent),
        (&args.auditor_tokens, evidenceos_core::Role::Auditor),
        (&args.operator_tokens, evidenceos_core::Role::Operator),
    ];
    for (list, role) in roles {
        for token in list.iter().filter(|t| !t.is_empty()) {
            tokens.add(token, role);
        }
    }
    if let Some(token) = &args.auth_token {
        tokens.add(token, evidenceos_core::Role::Auditor);
    }
    if let Some(path) = &args.auth_token_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--auth-token-file {}: {e}", path.display()))?;
        let token = text.lines().next().map(str::trim).unwrap_or_default();
        if token.is_empty() {
            return Err(format!("--auth-token-file {}: the file holds no token", path.display()));
        }
        tokens.add(token, evidenceos_core::Role::Auditor);
    }
    let mut hmac = HmacKeys::default();
    let from_file = match &args.auth_hmac_key_file {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("--auth-hmac-key-file {}: {e}", path.display()))?
        }
        None => String::new(),
    };
    let file_entries = from_file.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    for entry in args.auth_hmac_key.iter().map(String::as_str).filter(|e| !e.is_empty()).chain(file_entries) {
        hmac.add_entry(entry)?;
    }
    if args.production {
        hmac.require_timestamps();
    }
    let certificates = client_ca.is_some().then_some(CertificateRoles { operators, auditors });
    let auth = Authenticator::new(tokens, hmac, certificates).map_err(|e| e.to_string())?;
    if args.production {
        if tls.is_none() {
            return Err("production mode refuses plaintext: add --tls-cert and --tls-key".into());
        }
        if auth.is_development() {
            return Err(
                "production mode needs authentication: add role tokens or --mtls-client-ca with --require-client-cert"
                    .into(),
            );
        }
        if args.enable_insecure_v1 {
            return Err("production mode refuses --enable-insecure-v1 (client-supplied decisions)".into());
        }
    }
    let tls = tls.map(|(cert_pem, key_pem)| TlsFiles { cert_pem, key_pem, client_ca_pem: client_ca });
    let mode = match (&tls, auth.is_development()) {
        (_, true) => "development (anonymous agent)",
        (Some(TlsFiles { client_ca_pem: Some(_), .. }), false) => "mTLS client certificates",
        _ => "bearer tokens",
    };
    tracing::info!(
        event = "security",
        tls = tls.is_some(),
        mtls = tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        production = args.production,
        authentication = mode,
        "transport security configured"
    );
    if auth.is_development() {
        tracing::warn!(
            event = "authentication",
            mode = "development",
            "no authentication configured: every caller is the anonymous agent"
        );
    }
    Ok(Security { tls, auth })
}
