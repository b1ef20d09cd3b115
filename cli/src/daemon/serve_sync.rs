//! `--runtime sync`: the Connect protocol over HTTP/1.1 on this one thread, no tokio. The
//! commands of every request ready in one loop turn share one batch of effects (group commit),
//! carried out inline before their replies are written.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use evidenceos_core::Kernel;
use evidenceos_grpc::connect::http::Limits;
use evidenceos_grpc::connect::server::{Control, ServeConfig, ServeEnd};
use evidenceos_io_sync::{BlockingRuntime, DataDir, FileExecutor, Observe, Stopped, now};

use crate::Args;
use crate::security::Security;

/// Flags raised by SIGTERM/SIGINT (stop) and SIGHUP (reload); each signal also writes to a pipe
/// the server watches, so it wakes at once.
fn install_signals() -> Result<Control, String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let (wake_read, wake_write) = UnixStream::pair().map_err(|e| format!("signal pipe: {e}"))?;
    wake_write.set_nonblocking(true).map_err(|e| format!("signal pipe: {e}"))?;
    for (signal, flag) in [(SIGTERM, &stop), (SIGINT, &stop), (SIGHUP, &reload)] {
        signal_hook::flag::register(signal, flag.clone()).map_err(|e| format!("signal {signal}: {e}"))?;
        let pipe = wake_write.try_clone().map_err(|e| format!("signal pipe: {e}"))?;
        signal_hook::low_level::pipe::register(signal, pipe).map_err(|e| format!("signal {signal}: {e}"))?;
    }
    Ok(Control { stop, reload, wakeup: Some(wake_read) })
}

pub(crate) fn serve(
    args: Args,
    security: Security,
    kernel: Kernel,
    executor: FileExecutor,
    dir: DataDir,
) -> Result<ExitCode, String> {
    let Security { tls, auth } = security;
    let tls = tls.as_ref().map(evidenceos_grpc::connect::tls::server_config).transpose()?;
    let config = ServeConfig {
        tls,
        authenticator: auth,
        server_info: crate::serving::server_info(&args),
        limits: Limits { max_body_bytes: args.max_request_bytes, ..Limits::default() },
        metrics: args.metrics_listen.map(|_| Arc::new(evidenceos_grpc::metrics::Metrics::new())),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
    };
    let key_id = kernel.active_key_id();
    let tree_size = kernel.durable_tree_size();
    let listener =
        std::net::TcpListener::bind(args.listen).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match args.metrics_listen {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen on --metrics-listen {addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(event = "metrics_listening", addr = %local, "serving /metrics");
            Some(listener)
        }
        None => None,
    };
    let control = install_signals()?;
    let observe = Observe::Notifications { cap: evidenceos_grpc::connect::server::NOTIFICATIONS_PER_STEP };
    let mut runtime = BlockingRuntime::new(kernel, executor, observe);
    crate::publish::start(&args.publish, &dir, runtime.shared_stats())?;
    crate::tiles::start(&args.tiles, args.publish.publish_dir.as_deref())?;
    let settings = crate::settings_from(&args);

    crate::serving::announce(local, &key_id, tree_size, &dir, crate::RuntimeKind::Sync);
    let reload = |runtime: &mut BlockingRuntime| {
        if let Some(request) = crate::reload::read_request(&dir, settings.clone()) {
            crate::reload::log_outcome(runtime.call(now(), crate::reload::principal(), request));
        }
    };
    let ended =
        evidenceos_grpc::connect::server::serve(listener, metrics_listener, &config, &mut runtime, control, reload)
            .map_err(|e| format!("serving failed: {e}"))?;
    if ended == ServeEnd::StopRequested {
        tracing::info!(event = "shutdown_requested", signal = "SIGTERM/SIGINT", "writing the checkpoint");
    }
    let (stopped, _) = runtime.shutdown(now());
    drop(dir); // the data directory lock goes with the process
    // A stop the loop did not ask for (storage failed) exits 2 even if the checkpoint was written.
    let stopped = if ended == ServeEnd::StopRequested { stopped } else { Stopped::StorageFailed };
    Ok(crate::serving::exit_code(stopped))
}
