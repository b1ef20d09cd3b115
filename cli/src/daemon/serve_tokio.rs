//! `--runtime tokio`: gRPC (HTTP/2) on a multi-threaded tokio runtime; the kernel on its own task,
//! effects on a dedicated thread, group commit.

use std::process::ExitCode;
use std::sync::Arc;

use evidenceos_core::Kernel;
use evidenceos_core::environment::Settings;
use evidenceos_grpc::rpc::Availability;
use evidenceos_grpc::service::EvidenceService;
use evidenceos_io_sync::{DataDir, FileExecutor};
use evidenceos_io_tokio::{KernelHandle, Stopped};
use tokio::signal::unix::{SignalKind, signal};

use crate::Args;
use crate::security::Security;

/// One SIGHUP: the operator files are read on the blocking pool, then applied through the kernel.
async fn reload(dir: &Arc<DataDir>, kernel: &KernelHandle, settings: Settings) {
    let reader = dir.clone();
    let request = match tokio::task::spawn_blocking(move || crate::reload::read_request(&reader, settings)).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
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
    crate::reload::log_outcome(kernel.call(crate::reload::principal(), request).await);
}

pub(crate) async fn serve(
    args: Args,
    security: Security,
    kernel: Kernel,
    executor: FileExecutor,
    dir: Arc<DataDir>,
) -> Result<ExitCode, String> {
    let key_id = kernel.active_key_id();
    let tree_size = kernel.durable_tree_size();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let (handle, kernel_task) = evidenceos_io_tokio::spawn(kernel, executor, evidenceos_io_tokio::wall_clock());
    crate::publish::start(&args.publish, &dir, handle.shared_stats())?;
    crate::tiles::start(&args.tiles, args.publish.publish_dir.as_deref())?;
    let metrics = Arc::new(evidenceos_grpc::metrics::Metrics::new());
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on --metrics-listen {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(event = "metrics_listening", addr = %local, "serving /metrics");
        tokio::spawn(evidenceos_grpc::metrics::serve_metrics(listener, metrics.clone(), handle.clone()));
    }
    let Security { tls, auth } = security;
    let (availability_tx, availability) = tokio::sync::watch::channel(Availability::Serving);
    let service = EvidenceService::new(handle.clone(), crate::serving::server_info(&args), auth, availability);

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
    let settings = crate::settings_from(&args);
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
        // Health turns NOT_SERVING before the drain starts, so probes stop sending work.
        let _ = availability_tx.send(Availability::NotServing);
        let _ = draining_tx.send(());
    };

    crate::serving::announce(local, &key_id, tree_size, &dir, crate::RuntimeKind::Tokio);
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
    let limits = evidenceos_grpc::connection_limits::ConnectionLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout_secs),
        request_timeout: std::time::Duration::from_millis(args.request_timeout_ms),
    };
    tokio::select! {
        served = evidenceos_grpc::server::serve(listener, service, args.max_request_bytes, limits, tls, metrics, shutdown) => served.map_err(|e| e.to_string())?,
        () = drain_deadline => tracing::warn!(event = "drain_timeout", grace_secs = args.shutdown_grace_secs, "closing connections still open after the grace period"),
    }

    handle.shutdown().await;
    let stopped = stopped_rx.wait_for(Option::is_some).await.ok().and_then(|s| *s);
    drop(dir); // the data directory lock goes with the process
    Ok(crate::serving::exit_code(stopped.unwrap_or(Stopped::StorageFailed)))
}
