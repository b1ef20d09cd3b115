//! Command line of `evidenceos-bench`.

use std::path::PathBuf;

use clap::Parser;

/// Load generator for EvidenceOS: drives complete claim lifecycles (CreateClaimV2 → CommitArtifacts
/// → FreezeGates → SealClaim → ExecuteClaimV2) against any endpoint speaking the EvidenceOS
/// protocol (SPEC §1), with C concurrent clients, each on its own connection.
///
/// Reports lifecycles/s, per-RPC latency p50/p95/p99, outcome counts and errors by status: a
/// human summary, then exactly one JSON line on stdout. Progress goes to stderr every 2 s.
///
/// Every lifecycle spends the holdout's pool budget (4 bits with the defaults), so give the
/// benchmark holdout a large `holdout_k_bits_budget` and `holdout_access_credit_budget` in its
/// manifest (or raise them with SetHoldoutPoolBudgets), or runs end in FAILED_PRECONDITION. All
/// clients share one principal, whose open reservations (128 bits per fast 4-symbol lifecycle)
/// must stay within the daemon's `--max-principal-reservation-share-percent` of that budget, or
/// creates end in RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Connect,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "evidenceos-bench", version, about, long_about)]
pub struct Args {
    /// Endpoint URL: http://HOST:PORT, or https://HOST:PORT for TLS (needs --ca-cert).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "EVIDENCEOS_BENCH_ENDPOINT")]
    pub endpoint: String,

    /// Wire protocol: gRPC over HTTP/2 (`evidenceosd --runtime tokio`), or the Connect protocol's
    /// unary form over HTTP/1.1 with protobuf bodies (`evidenceosd --runtime sync`; http:// only).
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,

    /// Complete claim lifecycles to run and measure.
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub lifecycles: u64,

    /// Concurrent clients, each with its own connection, each running one lifecycle at a time.
    #[arg(long, default_value_t = 1, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,

    /// Grow the log to at least N leaves before measuring, with unmeasured lifecycles (each adds
    /// its capsule leaf; names never repeat, so a first certification only sets its canary's baseline);
    /// the time it took is reported.
    #[arg(long, value_name = "N")]
    pub pregrow_leaves: Option<u64>,

    /// Holdout the claims are judged against (`holdouts/<ref>/` on the daemon).
    #[arg(long, default_value = "demo", value_name = "REF")]
    pub holdout_ref: String,

    /// Claim code: a WebAssembly module (.wasm) or its text (.wat). Default: the shipped
    /// examples/claim_mod3.wat, which certifies against the demo holdout.
    #[arg(long, value_name = "PATH")]
    pub wasm: Option<PathBuf>,

    /// CA certificate (PEM) that signs the server's certificate; needed for https.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Server name to verify in the server's certificate (default: the endpoint's host).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Client certificate (PEM) for mTLS; needs --client-key.
    #[arg(long, value_name = "PEM", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Client private key (PEM) for mTLS; needs --client-cert.
    #[arg(long, value_name = "PEM", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Sign every request with the HMAC key KID (SPEC §2.3, with a timestamp and a fresh
    /// x-request-id); the secret comes from --hmac-key-file or else EVIDENCEOS_HMAC_KEYS.
    #[arg(long, value_name = "KID")]
    pub hmac_key_id: Option<String>,

    /// HMAC keys in the daemon's --auth-hmac-key-file format (`KID:HEXSECRET[:ROLE]` per line);
    /// the entry of --hmac-key-id is used. Without it, EVIDENCEOS_HMAC_KEYS (comma-separated).
    #[arg(long, value_name = "FILE", requires = "hmac_key_id")]
    pub hmac_key_file: Option<PathBuf>,

    /// Sent as `authorization: Bearer <token>` on every RPC.
    #[arg(long, env = "EVIDENCEOS_BENCH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub bearer_token: Option<String>,

    /// Extra metadata header on every RPC, as NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Per-RPC deadline.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout_secs: u64,

    /// Times raw fdatasync of a small appended write to a scratch file in DIR (put it on the
    /// daemon's data-dir disk), in the same run, to compare concurrency-1 latencies against.
    #[arg(long, value_name = "DIR")]
    pub measure_fdatasync: Option<PathBuf>,

    /// How many fdatasync samples --measure-fdatasync takes.
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub fdatasync_samples: u32,

    /// Print only the final JSON line on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json_only: bool,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `name:value` → a lowercase metadata name and its value (gRPC metadata names are lowercase).
fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("expected NAME:VALUE, got {text:?}"))?;
    let name = name.trim().to_ascii_lowercase();
    let value = value.trim().to_string();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("bad header name {name:?}: use letters, digits, '-', '_' or '.'"));
    }
    if name.ends_with("-bin") {
        return Err("binary (-bin) headers are not supported".into());
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!("header {name} must have a printable ASCII value"));
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from([&["evidenceos-bench"][..], extra].concat())
    }

    #[test]
    fn defaults_run_a_thousand_lifecycles_on_one_client() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.lifecycles, args.concurrency), (1000, 1));
        assert_eq!(args.endpoint, "http://127.0.0.1:50051");
        assert_eq!(args.holdout_ref, "demo");
        assert!(args.headers.is_empty() && args.pregrow_leaves.is_none() && !args.json_only);
    }

    #[test]
    fn headers_repeat_and_are_normalised() {
        let args = parse(&["--header", "X-Tenant: blue", "--header", "x-trace:a:b"]).unwrap();
        assert_eq!(args.headers, [("x-tenant".to_string(), "blue".to_string()), ("x-trace".into(), "a:b".into())]);
        assert!(parse(&["--header", "novalue"]).is_err());
        assert!(parse(&["--header", "bad name:v"]).is_err());
        assert!(parse(&["--header", "x-bin:v"]).is_err());
    }

    #[test]
    fn client_cert_and_key_come_together_and_counts_are_bounded() {
        assert!(parse(&["--client-cert", "c.pem"]).is_err());
        assert!(parse(&["--client-cert", "c.pem", "--client-key", "k.pem"]).is_ok());
        assert!(parse(&["--lifecycles", "0"]).is_err());
        assert!(parse(&["--concurrency", "0"]).is_err());
        let args = parse(&["--lifecycles", "50", "--concurrency", "64", "--pregrow-leaves", "1000000"]).unwrap();
        assert_eq!((args.lifecycles, args.concurrency, args.pregrow_leaves), (50, 64, Some(1_000_000)));
    }
}
