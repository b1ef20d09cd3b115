//! `evidenceosd`: the EvidenceOS verification kernel daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use evidenceos_core::environment::Settings;
use evidenceos_core::state::Policy;
use evidenceos_core::{Kernel, KernelConfig};
use evidenceos_grpc::auth::{Authenticator, BearerTokens, CertificateRoles, HmacKeys};
use evidenceos_grpc::server::TlsFiles;
use evidenceos_grpc::service::{EvidenceService, ServerFacts};
use evidenceos_io_sync::{DataDir, FileExecutor, SigningKeyStatus, drive, log_event, now};
use evidenceos_io_tokio::Stopped;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// Multi-threaded async runtime (tokio) serving gRPC.
    Tokio,
    /// Single-threaded blocking runtime serving the Connect protocol over HTTP/1.1.
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// EvidenceOS verification kernel daemon.
///
/// Serves the EvidenceOS gRPC API (packages evidenceos.v2 and evidenceos.v1, grpc.health.v1 and
/// server reflection) from one listener. All state lives in the data directory: the
/// transparency log (etl.log), the journal of accepted commands (journal.log), the checkpoint
/// (state.json) and the signing keys (keys/). A missing signing key is generated on first start.
/// One daemon per data directory: a second one is refused.
///
/// Logs go to stderr (filter with EVIDENCEOS_LOG, e.g. EVIDENCEOS_LOG=debug). Once serving, one
/// line on stdout says where it listens and which key signs tree heads. SIGTERM or SIGINT stops
/// accepting, finishes in-flight requests, writes a checkpoint and exits 0.
#[derive(Debug, Parser)]
#[command(name = "evidenceosd", version, about, long_about)]
struct Args {
    /// Address to listen on (use port 0 to pick a free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:50051", env = "EVIDENCEOS_LISTEN")]
    listen: SocketAddr,

    /// Data directory; created if absent.
    #[arg(long, default_value = "./evidenceos-data", env = "EVIDENCEOS_DATA_DIR")]
    data_dir: PathBuf,

    /// Which runtime serves requests.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Tokio)]
    runtime: RuntimeKind,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "EVIDENCEOS_LOG_FORMAT")]
    log_format: LogFormat,

    /// Enforce principal access credit: each new principal starts with balance = limit = N.
    /// Off when not given (no credit is charged).
    #[arg(long, value_name = "N")]
    default_credit_limit: Option<u64>,

    /// On SIGTERM/SIGINT, how long in-flight RPCs may take before open connections are cut.
    /// The kernel's own work (journal, ETL, checkpoint) always completes.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    shutdown_grace_secs: u64,

    /// Production mode: refuses to start without TLS, without authentication, or with insecure
    /// development switches; claims need an operator-activated NullSpec.
    #[arg(long, env = "EVIDENCEOS_PRODUCTION_MODE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    production: bool,

    /// Server certificate chain (PEM). Enables TLS 1.2/1.3; needs --tls-key.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,

    /// CA certificate (PEM) that signs client certificates; with --require-client-cert, every
    /// client must present a certificate it verifies (mTLS).
    #[arg(long, value_name = "PEM")]
    mtls_client_ca: Option<PathBuf>,

    /// Require client certificates (needs --mtls-client-ca).
    #[arg(long)]
    require_client_cert: bool,

    /// Client certificates with the operator role, by hex SHA-256 of the certificate (DER),
    /// comma-separated. Other verified certificates are agents.
    #[arg(long, value_delimiter = ',', value_name = "SHA256")]
    operator_cert_fingerprints: Vec<String>,

    /// Client certificates with the auditor role, by hex SHA-256 of the certificate (DER).
    #[arg(long, value_delimiter = ',', value_name = "SHA256")]
    auditor_cert_fingerprints: Vec<String>,

    /// HMAC request-signing key `KID:HEXSECRET[:ROLE]` (role agent|auditor|operator, default
    /// agent); repeatable. Prefer EVIDENCEOS_HMAC_KEYS (comma list) or --auth-hmac-key-file.
    #[arg(long, env = "EVIDENCEOS_HMAC_KEYS", hide_env_values = true, value_delimiter = ',', value_name = "KID:HEX")]
    auth_hmac_key: Vec<String>,

    /// File with one HMAC key `KID:HEXSECRET[:ROLE]` per line (# comments allowed).
    #[arg(long, value_name = "FILE")]
    auth_hmac_key_file: Option<PathBuf>,

    /// Bearer token with the auditor role (SPEC §2.2). Prefer the EVIDENCEOS_AUTH_TOKEN variable:
    /// command lines are visible to other local users.
    #[arg(long, env = "EVIDENCEOS_AUTH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    auth_token: Option<String>,

    /// File holding the auditor bearer token (first line; surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,

    /// Bearer tokens with the agent role (comma-separated or repeated). Env: EVIDENCEOS_AGENT_TOKENS.
    #[arg(long, env = "EVIDENCEOS_AGENT_TOKENS", hide_env_values = true, value_delimiter = ',', value_name = "TOKENS")]
    agent_tokens: Vec<String>,

    /// Bearer tokens with the auditor role. Env: EVIDENCEOS_AUDITOR_TOKENS.
    #[arg(
        long,
        env = "EVIDENCEOS_AUDITOR_TOKENS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "TOKENS"
    )]
    auditor_tokens: Vec<String>,

    /// Bearer tokens with the operator role. Env: EVIDENCEOS_OPERATOR_TOKENS.
    #[arg(
        long,
        env = "EVIDENCEOS_OPERATOR_TOKENS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "TOKENS"
    )]
    operator_tokens: Vec<String>,

    /// Serve Prometheus/OpenMetrics text at http://ADDR/metrics (plain HTTP: keep it on a
    /// private interface). Off when not given.
    #[arg(long, env = "EVIDENCEOS_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Largest request message accepted, in bytes; larger ones get RESOURCE_EXHAUSTED before
    /// they are decoded. Size it for your largest claim module.
    #[arg(long, default_value_t = evidenceos_grpc::server::DEFAULT_MAX_REQUEST_BYTES, value_name = "BYTES")]
    max_request_bytes: usize,

    /// Serve the legacy ExecuteClaim, whose decision the client supplies (no oracle, no e-value).
    /// Only for migrating old clients; such capsules say `eprocess_kind: client_decision_v1`.
    #[arg(long)]
    enable_insecure_v1: bool,

    /// Write a checkpoint after this many journal records (bounds replay time at restart).
    #[arg(long, default_value_t = 4096, value_name = "RECORDS", value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVIDENCEOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Token flags whose values came from the command line rather than the environment.
const SECRET_FLAGS: [&str; 5] = ["auth_token", "agent_tokens", "auditor_tokens", "operator_tokens", "auth_hmac_key"];

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    init_logging(args.log_format);
    for flag in SECRET_FLAGS {
        if matches.value_source(flag) == Some(clap::parser::ValueSource::CommandLine) {
            let variable = format!("EVIDENCEOS_{}", flag.to_ascii_uppercase());
            tracing::warn!(event = "secret_on_command_line", flag = %flag.replace('_', "-"), "secrets on the command line are visible to other local users; use {variable} instead");
        }
    }
    match run(args) {
        Ok(code) => code,
        Err(message) => {
            tracing::error!(event = "startup_failed", "{message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, String> {
    if args.runtime == RuntimeKind::Sync {
        return Err("--runtime sync (Connect over HTTP/1.1, no tokio) is not available in this version yet; use --runtime tokio".into());
    }
    // Configuration errors first: nothing is touched on disk for a daemon that will not start.
    let security = security(&args)?;
    let dir = DataDir::open(&args.data_dir).map_err(|e| e.to_string())?;
    match dir.ensure_signing_key().map_err(|e| e.to_string())? {
        SigningKeyStatus::Generated(id) => {
            tracing::info!(event = "signing_key_generated", key_id = %id, "generated a new ETL signing key")
        }
        SigningKeyStatus::Existing(id) => {
            tracing::info!(event = "signing_key_loaded", key_id = %id, "using the existing ETL signing key")
        }
    }
    let config = KernelConfig {
        policy: Policy { default_credit_limit: args.default_credit_limit },
        checkpoint_every: args.checkpoint_every,
        ..KernelConfig::default()
    };
    match args.default_credit_limit {
        Some(limit) => tracing::info!(
            event = "credit_enforcement",
            enabled = true,
            default_limit = limit,
            "principal credit is enforced"
        ),
        None => tracing::info!(
            event = "credit_enforcement",
            enabled = false,
            "principal credit is not enforced (no --default-credit-limit)"
        ),
    }

    let settings = settings_from(&args);
    if settings.insecure_v1 {
        tracing::warn!(event = "insecure_v1_enabled", "legacy ExecuteClaim with client-supplied decisions is enabled");
    }
    let environment = dir.read_environment(settings).map_err(|e| e.to_string())?;
    tracing::info!(
        event = "environment_loaded",
        holdouts = environment.holdouts.len(),
        nullspecs = environment.nullspecs.len(),
        active_nullspecs = environment.active_nullspecs.len(),
        "operator material loaded"
    );
    if !environment.settings.production {
        tracing::warn!(
            event = "development_nullspec",
            "development mode: claims without an active NullSpec are judged under the development NullSpec (fair-coin guessing of the holdout labels); production refuses them"
        );
    }
    let config = KernelConfig { environment, ..config };
    let files = dir.read_recovery_files().map_err(|e| e.to_string())?;
    let mut kernel =
        Kernel::recover(config, files).map_err(|e| format!("recovery of {} failed: {e}", args.data_dir.display()))?;
    let mut executor = FileExecutor::new(&dir).map_err(|e| e.to_string())?;
    for output in drive(&mut kernel, &mut executor, now()) {
        if let evidenceos_core::Output::Event(event) = output {
            log_event(&event);
        }
    }
    if kernel.is_failed() || kernel.is_recovering() {
        return Err("could not make the recovered data directory durable (see storage_failed above)".into());
    }
    let resets = evidenceos_io_sync::apply_pending_governance(&mut kernel, &mut executor)
        .map_err(|e| format!("applying signed canary resets from the governance log failed: {e}"))?;
    if resets > 0 {
        tracing::info!(event = "canary_reset_applied", canaries = resets, "applied signed canary resets at start-up");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(serve(args, security, kernel, executor, std::sync::Arc::new(dir)))
}

/// Transport security and identity as configured, checked for consistency (SPEC §2.1): an
/// inconsistent combination is a start-up error naming the fix, never a silent downgrade.
struct Security {
    tls: Option<TlsFiles>,
    auth: Authenticator,
}

fn settings_from(args: &Args) -> Settings {
    Settings { insecure_v1: args.enable_insecure_v1, production: args.production, ..Settings::default() }
}

/// One SIGHUP: validate every operator file, then swap atomically through the kernel.
async fn reload(dir: &std::sync::Arc<DataDir>, kernel: &evidenceos_io_tokio::KernelHandle, settings: Settings) {
    let reader = dir.clone();
    let loaded = tokio::task::spawn_blocking(move || reader.read_environment(settings)).await;
    let environment = match loaded {
        Ok(Ok(environment)) => environment,
        Ok(Err(error)) => {
            let reason = error.to_string();
            tracing::warn!(
                event = "config_reload_rejected",
                reason = reason.as_str(),
                "keeping the last good configuration"
            );
            return;
        }
        Err(join) => {
            let reason = join.to_string();
            tracing::error!(
                event = "config_reload_rejected",
                reason = reason.as_str(),
                "reading operator files failed"
            );
            return;
        }
    };
    let system = evidenceos_core::Principal::new("system:reload", evidenceos_core::Role::Operator);
    let request = evidenceos_core::Request::Command(evidenceos_core::Command::ReloadEnvironment(Box::new(environment)));
    match kernel.call(system, request).await {
        Ok(evidenceos_core::Response::EnvironmentReloaded { before, after }) => tracing::info!(
            event = "config_reload",
            holdouts_before = before.holdouts,
            holdouts_after = after.holdouts,
            nullspecs_before = before.nullspecs,
            nullspecs_after = after.nullspecs,
            active_nullspecs_before = before.active_nullspecs,
            active_nullspecs_after = after.active_nullspecs,
            oracles_before = before.oracles,
            oracles_after = after.oracles,
            epoch_before = before.epoch,
            epoch_after = after.epoch,
            canary_resets_before = before.canary_resets,
            canary_resets_after = after.canary_resets,
            "operator files reloaded"
        ),
        Ok(_) => tracing::error!(event = "config_reload_rejected", reason = "unexpected kernel answer"),
        Err(error) => {
            let reason = error.message;
            tracing::warn!(
                event = "config_reload_rejected",
                reason = reason.as_str(),
                "keeping the last good configuration"
            );
        }
    }
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

fn security(args: &Args) -> Result<Security, String> {
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
    let auth = Authenticator::new(tokens, hmac, certificates);
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

async fn serve(
    args: Args,
    security: Security,
    kernel: Kernel,
    executor: FileExecutor,
    dir: std::sync::Arc<DataDir>,
) -> Result<ExitCode, String> {
    let key_id = kernel.active_key_id();
    let tree_size = kernel.durable_tree_size();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    #[cfg(feature = "crash-test-failpoints")]
    {
        tracing::warn!(
            event = "failpoints_armed",
            "crash-test failpoints are armed: never run this build in production"
        );
        evidenceos_io_sync::arm_failpoints();
    }
    let (handle, kernel_task) = evidenceos_io_tokio::spawn(kernel, executor, evidenceos_io_tokio::wall_clock());
    let facts = ServerFacts {
        daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        build_git_commit: env!("EVIDENCEOS_BUILD_GIT_COMMIT").to_string(),
        build_time_utc: env!("EVIDENCEOS_BUILD_TIME_UTC").to_string(),
        feature_flags: evidenceos_grpc::v2::FeatureFlags {
            insecure_v1_enabled: args.enable_insecure_v1,
            tls_enabled: args.tls_cert.is_some(),
            mtls_enabled: args.require_client_cert,
            ..Default::default()
        },
    };
    let metrics = std::sync::Arc::new(evidenceos_grpc::metrics::Metrics::new());
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on --metrics-listen {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(event = "metrics_listening", addr = %local, "serving /metrics");
        tokio::spawn(evidenceos_grpc::metrics::serve_metrics(listener, metrics.clone(), handle.clone()));
    }
    let Security { tls, auth } = security;
    let service = EvidenceService::new(handle.clone(), facts, auth);

    // The kernel task ends early only on a storage failure; that also stops the server.
    let (stopped_tx, mut stopped_rx) = tokio::sync::watch::channel(None::<Stopped>);
    tokio::spawn(async move {
        let stopped = kernel_task.await.unwrap_or(Stopped::StorageFailed);
        let _ = stopped_tx.send(Some(stopped));
    });
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    // SIGHUP: re-read the operator files; apply them through the kernel (journaled) if they
    // all validate, else keep the last good configuration. Never fatal.
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let settings = settings_from(&args);
    let (reload_dir, reload_kernel) = (dir.clone(), handle.clone());
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload(&reload_dir, &reload_kernel, settings.clone()).await;
        }
    });
    let mut kernel_watch = stopped_rx.clone();
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(event = "shutdown_requested", signal = "SIGTERM", "draining"),
            _ = interrupt.recv() => tracing::info!(event = "shutdown_requested", signal = "SIGINT", "draining"),
            _ = kernel_watch.wait_for(Option::is_some) => {}
        }
        let _ = draining_tx.send(());
    };

    tracing::info!(event = "listening", addr = %local, key_id = %key_id, tree_size, data_dir = %dir.root().display(), "evidenceosd is serving");
    #[allow(clippy::print_stdout)]
    {
        println!("evidenceosd listening on {local} (signing key id {key_id}, data dir {})", dir.root().display());
    }
    // Graceful shutdown waits for clients to close their connections; idle HTTP/2 clients may
    // never do so, so the drain is bounded.
    let grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
    let drain_deadline = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = evidenceos_grpc::server::serve(listener, service, args.max_request_bytes, tls, metrics, shutdown) => served.map_err(|e| e.to_string())?,
        () = drain_deadline => tracing::warn!(event = "drain_timeout", grace_secs = args.shutdown_grace_secs, "closing connections still open after the grace period"),
    }

    handle.shutdown().await;
    let stopped = stopped_rx.wait_for(Option::is_some).await.map(|s| s.clone()).ok().flatten();
    drop(dir); // the data directory lock goes with the process
    match stopped {
        Some(Stopped::Clean) => {
            tracing::info!(event = "stopped", "checkpoint written; exiting");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            tracing::error!(
                event = "stopped",
                reason = "storage_failed",
                "exiting non-zero so a supervisor restarts into recovery"
            );
            Ok(ExitCode::from(2))
        }
    }
}
