//! Prometheus metrics (text exposition) on `--metrics-listen`: requests by method and code,
//! duration by method, and the runtime's durable sizes and sync latency. Label sets are bounded:
//! the method label is one of a fixed set of paths (the RPC table's, in both packages, plus
//! WatchRevocations and `grpc.health.v1`), anything else counts as "other".

#[cfg(feature = "server")]
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use evidenceos_core::totals::LedgerTotals;
use evidenceos_io_sync::{BATCH_BUCKETS, RuntimeStats, SYNC_BUCKETS_US};
#[cfg(feature = "server")]
use evidenceos_io_tokio::KernelHandle;
#[cfg(feature = "server")]
use tokio::io::{AsyncReadExt, AsyncWriteExt};
#[cfg(feature = "server")]
use tokio::net::TcpListener;

use crate::rpc::Method;

/// Unary methods of the table; each has a series slot per package.
const METHODS: usize = Method::ALL.len();
/// Served paths that are not rows of the table.
const EXTRA_PATHS: [&str; 4] = [
    "/evidenceos.v2.EvidenceOS/WatchRevocations",
    "/evidenceos.v1.EvidenceOS/WatchRevocations",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];
/// v2 methods, v1 methods, the extra paths, and "other".
const SLOTS: usize = 2 * METHODS + EXTRA_PATHS.len() + 1;
const OTHER: usize = SLOTS - 1;
/// gRPC codes 0..=16, then a transport error (no status at all).
const CODES: usize = 18;
const TRANSPORT_ERROR: usize = CODES - 1;
/// Upper bounds of the duration buckets: 50 µs .. ~26 s, doubling.
const DURATION_BUCKETS_US: [u64; 20] = {
    let mut bounds = [50; 20];
    let mut i = 1;
    while i < bounds.len() {
        bounds[i] = bounds[i - 1] * 2;
        i += 1;
    }
    bounds
};

/// The series slot of a request path: its own for every path the daemon serves, else "other".
/// Compares against fixed names only, so no client input becomes a label.
fn slot_of(path: &str) -> usize {
    match Method::from_path(path) {
        Some(("evidenceos.v2", method)) => method.index(),
        Some((_, method)) => METHODS + method.index(),
        None => EXTRA_PATHS.iter().position(|served| *served == path).map_or(OTHER, |i| 2 * METHODS + i),
    }
}

/// The method label of a slot (the inverse of [`slot_of`]).
fn label_of(slot: usize) -> &'static str {
    assert!(slot < SLOTS, "slot {slot} out of range");
    match slot {
        s if s < METHODS => Method::ALL[s].paths().0,
        s if s < 2 * METHODS => {
            Method::ALL[s - METHODS].paths().1.expect("only methods of evidenceos.v1 are counted under it")
        }
        OTHER => "other",
        s => EXTRA_PATHS[s - 2 * METHODS],
    }
}

/// The series a request path is counted under: resolved once per call, it names the method
/// without keeping the client's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(usize);

impl Route {
    pub fn of(path: &str) -> Self {
        Self(slot_of(path))
    }

    /// The method label: the served path, or "other".
    pub fn label(self) -> &'static str {
        label_of(self.0)
    }

    pub fn is_other(self) -> bool {
        self.0 == OTHER
    }
}

/// The code slot of a gRPC status number; anything else is a transport error.
fn code_of(code: &str) -> usize {
    code.parse::<u8>().ok().filter(|c| usize::from(*c) < TRANSPORT_ERROR).map_or(TRANSPORT_ERROR, usize::from)
}

fn code_label(code: usize) -> String {
    if code == TRANSPORT_ERROR { "transport_error".to_string() } else { code.to_string() }
}

/// One method's counters: requests per code, and its duration histogram (per bucket, not
/// cumulative; the last cell is over the largest bound).
#[derive(Debug)]
struct Series {
    requests: [AtomicU64; CODES],
    buckets: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    duration_ns: AtomicU64,
}

impl Series {
    fn new() -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_ns: AtomicU64::new(0),
        }
    }
}

/// Per-RPC counters, indexed by table position: recording an RPC is three relaxed atomic adds,
/// without a lock, a hash or an allocation.
pub struct Metrics {
    series: Box<[Series]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("series", &self.series.len()).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self { series: (0..SLOTS).map(|_| Series::new()).collect() }
    }

    /// Counts one answered RPC: `path` is its request path, `code` its gRPC status number.
    pub fn record_rpc(&self, path: &str, code: &str, elapsed: Duration) {
        self.record(Route::of(path), code, elapsed);
    }

    /// As [`Metrics::record_rpc`], for a caller that resolved the path already.
    pub fn record(&self, route: Route, code: &str, elapsed: Duration) {
        let series = &self.series[route.0];
        series.requests[code_of(code)].fetch_add(1, Ordering::Relaxed);
        let micros = elapsed.as_micros();
        let bucket = DURATION_BUCKETS_US.iter().position(|bound| micros <= u128::from(*bound));
        series.buckets[bucket.unwrap_or(DURATION_BUCKETS_US.len())].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        series.duration_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `evidenceos_rpc_requests_total{method,code}` and `evidenceos_rpc_duration_seconds{method}`,
    /// in table order, each series once it has counted something.
    fn render_rpcs(&self, text: &mut String) {
        let name = "evidenceos_rpc_requests";
        text.push_str(&format!(
            "# HELP {name} RPCs answered, by method (gRPC path) and gRPC status code.\n# TYPE {name} counter\n"
        ));
        for (slot, series) in self.series.iter().enumerate() {
            for (code, count) in series.requests.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let (method, code) = (label_of(slot), code_label(code));
                    text.push_str(&format!("{name}_total{{method=\"{method}\",code=\"{code}\"}} {count}\n"));
                }
            }
        }
        let name = "evidenceos_rpc_duration_seconds";
        text.push_str(&format!("# HELP {name} RPC duration, by method (gRPC path).\n# TYPE {name} histogram\n"));
        for (slot, series) in self.series.iter().enumerate() {
            let counts: Vec<u64> = series.buckets.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            if counts.iter().all(|c| *c == 0) {
                continue;
            }
            let method = label_of(slot);
            let mut cumulative = 0;
            for (bound, count) in DURATION_BUCKETS_US.iter().zip(&counts) {
                cumulative += count;
                let le = *bound as f64 / 1e6;
                text.push_str(&format!("{name}_bucket{{method=\"{method}\",le=\"{le}\"}} {cumulative}\n"));
            }
            cumulative += counts[DURATION_BUCKETS_US.len()];
            text.push_str(&format!("{name}_bucket{{method=\"{method}\",le=\"+Inf\"}} {cumulative}\n"));
            let seconds = series.duration_ns.load(Ordering::Relaxed) as f64 / 1e9;
            text.push_str(&format!("{name}_sum{{method=\"{method}\"}} {seconds}\n"));
            text.push_str(&format!("{name}_count{{method=\"{method}\"}} {cumulative}\n"));
        }
    }

    /// The exposition text: the per-RPC families, then the runtime's and the ledger's.
    pub fn render(&self, runtime: &RuntimeStats, ledger: Option<&LedgerTotals>) -> String {
        let mut text = String::new();
        self.render_rpcs(&mut text);
        let load = RuntimeStats::load;
        let mut gauges = vec![
            (
                "evidenceos_etl_durable_tree_size",
                "Leaves of the ETL that are durable (and signable)",
                load(&runtime.durable_tree_size),
            ),
            (
                "evidenceos_journal_durable_seq",
                "Sequence number of the last durable journal record",
                load(&runtime.durable_journal_seq),
            ),
        ];
        if runtime.publishing.load(std::sync::atomic::Ordering::Relaxed) {
            let (durable, published) = (load(&runtime.durable_tree_size), load(&runtime.published_tree_size));
            gauges.push(("evidenceos_etl_published_tree_size", "Size of the last published checkpoint", published));
            gauges.push((
                "evidenceos_etl_publish_lag",
                "Durable ETL leaves not yet in a published checkpoint",
                durable.saturating_sub(published),
            ));
        }
        if load(&runtime.witnesses) > 0 {
            let cosigned = load(&runtime.witness_cosignatures);
            gauges.push((
                "evidenceos_witness_cosignatures",
                "Valid witness cosignatures on the last published checkpoint",
                cosigned,
            ));
            gauges.push((
                "evidenceos_witness_quorum",
                "Witness cosignatures expected on each checkpoint (--witness-quorum)",
                load(&runtime.witness_quorum),
            ));
        }
        for (name, help, value) in gauges {
            text.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"));
        }
        let counters = [
            ("evidenceos_storage_effects", "Storage effects carried out", load(&runtime.effects)),
            (
                "evidenceos_storage_appended_bytes",
                "Bytes appended to the journal and the ETL",
                load(&runtime.bytes_appended),
            ),
        ];
        for (name, help, value) in counters {
            text.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} counter\n{name}_total {value}\n"));
        }
        let name = "evidenceos_storage_sync_seconds";
        text.push_str(&format!(
            "# HELP {name} fdatasync latency of the journal and the ETL.\n# TYPE {name} histogram\n"
        ));
        let mut cumulative = 0;
        for (i, bound) in SYNC_BUCKETS_US.iter().enumerate() {
            cumulative += load(&runtime.sync_buckets[i]);
            text.push_str(&format!("{name}_bucket{{le=\"{}\"}} {cumulative}\n", *bound as f64 / 1e6));
        }
        cumulative += load(&runtime.sync_buckets[SYNC_BUCKETS_US.len()]);
        text.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
        text.push_str(&format!("{name}_sum {}\n", load(&runtime.sync_micros_total) as f64 / 1e6));
        text.push_str(&format!("{name}_count {}\n", load(&runtime.syncs)));
        let name = "evidenceos_storage_batch_commands";
        text.push_str(&format!(
            "# HELP {name} Commands made durable by one sync (group commit).\n# TYPE {name} histogram\n"
        ));
        let mut cumulative = 0;
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            cumulative += load(&runtime.batch_buckets[i]);
            text.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n"));
        }
        cumulative += load(&runtime.batch_buckets[BATCH_BUCKETS.len()]);
        text.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
        text.push_str(&format!(
            "{name}_sum {}\n{name}_count {}\n",
            load(&runtime.batched_commands),
            load(&runtime.batches)
        ));
        if let Some(ledger) = ledger {
            let name = "evidenceos_claims";
            text.push_str(&format!("# HELP {name} Claims by lifecycle state.\n# TYPE {name} gauge\n"));
            for (state, count) in &ledger.claims_by_state {
                text.push_str(&format!("{name}{{state=\"{state}\"}} {count}\n"));
            }
            let gauges = [
                ("evidenceos_ledger_k_bits_charged", "Bits charged to claim ledgers, summed", ledger.k_bits_charged),
                ("evidenceos_ledger_frozen", "Claim ledgers frozen by a budget overrun", ledger.frozen_ledgers as f64),
                ("evidenceos_revocations", "Revocations recorded", ledger.revocations as f64),
            ];
            for (name, help, value) in gauges {
                text.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}\n"));
            }
            render_pool_reservations(&mut text, ledger);
        }
        text.push_str("# EOF\n");
        text
    }
}

/// Reservations per holdout (over its global and per-principal pools). Holdout refs are a
/// bounded set of `[A-Za-z0-9._:/-]` names, so they need no label escaping.
fn render_pool_reservations(text: &mut String, ledger: &LedgerTotals) {
    let name = "evidenceos_pool_reservations";
    text.push_str(&format!("# HELP {name} Open reservations in the holdout's pools.\n# TYPE {name} gauge\n"));
    for (holdout, counts) in &ledger.pool_reservations {
        text.push_str(&format!("{name}{{holdout=\"{holdout}\"}} {}\n", counts.open));
    }
    let name = "evidenceos_pool_reservations_expired";
    text.push_str(&format!(
        "# HELP {name} Reservations in the holdout's pools that expired unused.\n# TYPE {name} counter\n"
    ));
    for (holdout, counts) in &ledger.pool_reservations {
        text.push_str(&format!("{name}_total{{holdout=\"{holdout}\"}} {}\n", counts.expired));
    }
}

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Most bytes read of a scrape request before answering.
#[cfg(feature = "server")]
const MAX_SCRAPE_REQUEST_BYTES: usize = 8 * 1024;
#[cfg(feature = "server")]
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` (HTTP/1.1, one response per connection) until the process exits.
#[cfg(feature = "server")]
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, kernel: KernelHandle) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let (metrics, kernel) = (metrics.clone(), kernel.clone());
        tokio::spawn(async move {
            let mut request = Vec::with_capacity(512);
            let mut buffer = [0u8; 1024];
            let read_head = async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_SCRAPE_REQUEST_BYTES {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                true
            };
            if !matches!(tokio::time::timeout(SCRAPE_TIMEOUT, read_head).await, Ok(true)) {
                return;
            }
            let (status, content_type, body) = if request.starts_with(b"GET /metrics ") {
                let monitor = evidenceos_core::Principal::new("system:metrics", evidenceos_core::Role::Auditor);
                let ledger = match kernel
                    .call(monitor, evidenceos_core::Request::Query(evidenceos_core::Query::LedgerTotals))
                    .await
                {
                    Ok(evidenceos_core::Response::LedgerTotals(totals)) => Some(totals),
                    _ => None,
                };
                let body = metrics.render(kernel.stats(), ledger.as_ref());
                ("200 OK", CONTENT_TYPE, body)
            } else {
                ("404 Not Found", "text/plain; charset=utf-8", "only GET /metrics is served here\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_services_share_one_label() {
        let metrics = Metrics::new();
        for served in ["/evidenceos.v2.EvidenceOS/ExecuteClaimV2", "/evidenceos.v1.EvidenceOS/Health"] {
            assert_eq!(label_of(slot_of(served)), served);
        }
        assert_eq!(label_of(slot_of("/grpc.health.v1.Health/Check")), "/grpc.health.v1.Health/Check");
        assert_eq!(slot_of("/evidenceos.v1.EvidenceOS/GetHoldoutPoolBudgets"), OTHER, "not served in v1");
        assert!(Route::of("/x/y").is_other() && Route::of("/x/y").label() == "other");
        assert!(!Route::of("/evidenceos.v2.EvidenceOS/Health").is_other());
        metrics.record_rpc("/evidenceos.v2.EvidenceOS/Health", "0", Duration::from_millis(1));
        for junk in ["/x/y", "/evidenceos.v2.EvidenceOS/Nope", "/a/b"] {
            metrics.record_rpc(junk, "12", Duration::from_millis(1));
        }
        metrics.record_rpc("/x/y", "999", Duration::from_millis(1));
        let mut ledger = LedgerTotals { k_bits_charged: 8.0, revocations: 1, ..LedgerTotals::default() };
        ledger.claims_by_state.insert("CERTIFIED", 2);
        let counts = evidenceos_core::totals::PoolReservations { open: 3, expired: 5 };
        ledger.pool_reservations.insert("demo".into(), counts);
        let text = metrics.render(&RuntimeStats::default(), Some(&ledger));
        assert!(text.contains("evidenceos_claims{state=\"CERTIFIED\"} 2"), "{text}");
        assert!(text.contains("evidenceos_ledger_k_bits_charged 8"));
        assert!(
            text.contains(
                "# TYPE evidenceos_pool_reservations gauge\nevidenceos_pool_reservations{holdout=\"demo\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE evidenceos_pool_reservations_expired counter\nevidenceos_pool_reservations_expired_total{holdout=\"demo\"} 5\n"), "{text}");
        assert!(text.contains(r#"evidenceos_rpc_requests_total{method="other",code="12"} 3"#), "{text}");
        assert!(text.contains(r#"code="transport_error""#));
        assert!(
            text.contains(r#"evidenceos_rpc_requests_total{method="/evidenceos.v2.EvidenceOS/Health",code="0"} 1"#)
        );
        assert!(text.contains("evidenceos_storage_sync_seconds_bucket{le=\"+Inf\"} 0"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// Every method of the descriptor sets the servers register has its own label: the label set
    /// is fixed, and a served path never falls into "other".
    #[test]
    fn every_served_path_has_its_own_label() {
        use prost::Message as _;
        #[cfg(feature = "server")]
        let sets = [crate::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
        #[cfg(not(feature = "server"))]
        let sets = [crate::FILE_DESCRIPTOR_SET];
        let (mut paths, mut slots) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        for bytes in sets {
            for file in prost_types::FileDescriptorSet::decode(bytes).unwrap().file {
                for service in &file.service {
                    for method in &service.method {
                        let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        assert_eq!(label_of(slot_of(&path)), path);
                        assert!(slots.insert(slot_of(&path)), "{path} shares a slot");
                        paths.insert(path);
                    }
                }
            }
        }
        // And every label of the table is a path of the descriptors.
        for method in Method::ALL {
            let (v2, v1) = method.paths();
            assert!(paths.contains(v2) && v1.is_none_or(|v1| paths.contains(v1)), "{method:?}");
        }
        assert!(EXTRA_PATHS[..2].iter().all(|watch| paths.contains(*watch)));
    }

    #[test]
    fn durations_fill_cumulative_buckets_by_method() {
        let metrics = Metrics::new();
        let path = "/evidenceos.v1.EvidenceOS/Seal";
        for micros in [50, 51, 30_000_000] {
            metrics.record_rpc(path, "0", Duration::from_micros(micros));
        }
        metrics.record_rpc(path, "9", Duration::from_micros(100));
        let text = metrics.render(&RuntimeStats::default(), None);
        let name = "evidenceos_rpc_duration_seconds";
        for (le, count) in [("0.00005", 1), ("0.0001", 3), ("26.2144", 3), ("+Inf", 4)] {
            let line = format!("{name}_bucket{{method=\"{path}\",le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains(&format!("{name}_count{{method=\"{path}\"}} 4\n")), "{text}");
        assert!(text.contains(&format!("{name}_sum{{method=\"{path}\"}} 30.000201\n")), "{text}");
        assert!(text.contains(&format!("evidenceos_rpc_requests_total{{method=\"{path}\",code=\"9\"}} 1\n")));
        assert_eq!(text.matches(&format!("{name}_count")).count(), 1, "only methods that were called");
    }

    #[test]
    fn the_publish_lag_is_exported_only_while_publishing() {
        let runtime = RuntimeStats::default();
        runtime.durable_tree_size.store(10, std::sync::atomic::Ordering::Relaxed);
        runtime.published_tree_size.store(7, std::sync::atomic::Ordering::Relaxed);
        let text = Metrics::new().render(&runtime, None);
        assert!(!text.contains("evidenceos_etl_publish_lag"), "{text}");
        runtime.publishing.store(true, std::sync::atomic::Ordering::Relaxed);
        let text = Metrics::new().render(&runtime, None);
        assert!(text.contains("evidenceos_etl_publish_lag 3\n"), "{text}");
        assert!(text.contains("evidenceos_etl_published_tree_size 7\n"), "{text}");
    }

    #[test]
    fn witness_gauges_are_exported_only_with_witnesses() {
        let runtime = RuntimeStats::default();
        runtime.witness_cosignatures.store(1, std::sync::atomic::Ordering::Relaxed);
        assert!(!Metrics::new().render(&runtime, None).contains("evidenceos_witness"));
        runtime.witnesses.store(2, std::sync::atomic::Ordering::Relaxed);
        runtime.witness_quorum.store(2, std::sync::atomic::Ordering::Relaxed);
        let text = Metrics::new().render(&runtime, None);
        assert!(text.contains("evidenceos_witness_cosignatures 1\n"), "{text}");
        assert!(text.contains("evidenceos_witness_quorum 2\n"), "{text}");
    }
}
