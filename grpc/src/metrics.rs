//! Prometheus metrics (text exposition) on `--metrics-listen`: requests by method and code,
//! latency by method, and the runtime's durable sizes and sync latency. Label sets are bounded:
//! methods outside the served services count as "other".

use std::collections::BTreeSet;
#[cfg(feature = "server")]
use std::sync::Arc;
use std::time::Duration;

use evidenceos_core::totals::LedgerTotals;
use evidenceos_io_sync::{BATCH_BUCKETS, RuntimeStats, SYNC_BUCKETS_US};
#[cfg(feature = "server")]
use evidenceos_io_tokio::KernelHandle;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
#[cfg(feature = "server")]
use tokio::io::{AsyncReadExt, AsyncWriteExt};
#[cfg(feature = "server")]
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type LatencyFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RpcLabels, Counter>,
    latency: LatencyFamily,
    /// Every gRPC path the server answers; anything else is labelled "other".
    known_methods: BTreeSet<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("known_methods", &self.known_methods.len()).finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 20))
}

/// Paths of every service method in the descriptor sets the server registers (grpc.health only
/// over gRPC).
fn known_methods() -> BTreeSet<String> {
    use prost::Message as _;
    let mut methods = BTreeSet::new();
    #[cfg(feature = "server")]
    let sets = [crate::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
    #[cfg(not(feature = "server"))]
    let sets = [crate::FILE_DESCRIPTOR_SET];
    for bytes in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else { continue };
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
    }
    methods
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RpcLabels, Counter>::default();
        registry.register("evidenceos_rpc_requests", "RPCs answered, by gRPC path and status code", requests.clone());
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register("evidenceos_rpc_latency_seconds", "RPC latency by gRPC path", latency.clone());
        Self { registry, requests, latency, known_methods: known_methods() }
    }

    pub fn record_rpc(&self, path: &str, code: &str, elapsed: Duration) {
        let method = if self.known_methods.contains(path) { path.to_string() } else { "other".to_string() };
        // gRPC codes are 0..=16; anything else (a transport error) is one more label value.
        let code = if code.parse::<u8>().is_ok_and(|c| c <= 16) { code.to_string() } else { "transport_error".into() };
        self.requests.get_or_create(&RpcLabels { method: method.clone(), code }).inc();
        self.latency.get_or_create(&MethodLabels { method }).observe(elapsed.as_secs_f64());
    }

    /// The exposition text: the registry's families, then the runtime's and the ledger's.
    pub fn render(&self, runtime: &RuntimeStats, ledger: Option<&LedgerTotals>) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &self.registry).expect("writing to a String");
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
        assert!(metrics.known_methods.contains("/evidenceos.v2.EvidenceOS/ExecuteClaimV2"));
        assert!(metrics.known_methods.contains("/evidenceos.v1.EvidenceOS/Health"));
        #[cfg(feature = "server")]
        assert!(metrics.known_methods.contains("/grpc.health.v1.Health/Check"));
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
