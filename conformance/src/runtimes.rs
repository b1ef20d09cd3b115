//! The same vector on the real runtimes, each against a fresh temporary data directory.
//!
//! Both runs provision `keys/` from the vector's seed before boot, run the recovery effects with
//! io-sync, feed the steps at the vector's times and stop cleanly; what they leave on disk and
//! what they answered is returned for comparison with the reference run.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use evidenceos_core::{Kernel, Output, Timestamp};
use evidenceos_io_sync::{BlockingRuntime, DataDir, FileExecutor, Observe, Stopped as SyncStopped, drive};
use evidenceos_io_tokio::{Clock, Stopped};
use tempfile::TempDir;

use crate::data_dir::{ACTIVE_KEY_FILE, DataDirContents, KEYS_DIR};
use crate::error::{HarnessError, io_error};
use crate::run::{Reply, ensure_booted, replies_by_step};
use crate::vector::Vector;

#[derive(Debug, Clone)]
pub struct RuntimeRun {
    /// The reply to each step, by step index.
    pub replies: Vec<Reply>,
    /// Replies, events and wake-ups in order, where the runtime hands them out (io-sync only:
    /// io-tokio logs events itself and routes replies to callers).
    pub observed_outputs: Option<Vec<Output>>,
    /// The data directory after the last step's reply, before shutdown, where it was read.
    pub data_dir_before_shutdown: Option<DataDirContents>,
    /// Every file the run left in its data directory.
    pub data_dir: DataDirContents,
}

/// A fresh data directory, locked, with the vector's key, and a kernel that has finished recovery.
struct Booted {
    tmp: TempDir,
    dir: DataDir,
    kernel: Kernel,
    executor: FileExecutor,
    outputs: Vec<Output>,
}

fn boot(vector: &Vector) -> Result<Booted, HarnessError> {
    let tmp = tempfile::tempdir().map_err(io_error(std::env::temp_dir()))?;
    let dir = DataDir::open(tmp.path())?;
    write_keys(vector, tmp.path())?;
    let mut kernel = Kernel::recover(vector.kernel_config(), dir.read_recovery_files()?)?;
    let mut executor = FileExecutor::new(&dir)?;
    let outputs = drive(&mut kernel, &mut executor, vector.boot_time());
    ensure_booted(vector, &kernel)?;
    Ok(Booted { tmp, dir, kernel, executor, outputs })
}

/// `keys/<key id>.key` (mode 0600) and `keys/active_key_id`, as an operator would provision them.
fn write_keys(vector: &Vector, root: &Path) -> Result<(), HarnessError> {
    let keys_dir = root.join(KEYS_DIR);
    std::fs::create_dir_all(&keys_dir).map_err(io_error(&keys_dir))?;
    let mut files: Vec<(String, Vec<u8>)> = vector.key_files().into_iter().map(|key| (key.name, key.bytes)).collect();
    files.push((ACTIVE_KEY_FILE.to_string(), vector.active_key_id_file()));
    for (name, bytes) in files {
        let path = keys_dir.join(name);
        let mut file =
            OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path).map_err(io_error(&path))?;
        file.write_all(&bytes).map_err(io_error(&path))?;
    }
    Ok(())
}

/// io-sync: the blocking runtime of `evidenceosd --runtime sync`: every step one call, its
/// effects carried out inline before it returns, then the shutdown checkpoint.
pub fn run_io_sync(vector: &Vector) -> Result<RuntimeRun, HarnessError> {
    let Booted { tmp, dir, kernel, executor, mut outputs } = boot(vector)?;
    let mut runtime = BlockingRuntime::new(kernel, executor, Observe::Keep);
    let mut replies = Vec::with_capacity(vector.steps.len());
    for (index, step) in vector.steps.iter().enumerate() {
        let request = vector.request(index, &replies)?;
        replies.push(runtime.call(step.now(), step.principal(), request));
    }
    let data_dir_before_shutdown = DataDirContents::read(tmp.path())?;
    let (stopped, observed) = runtime.shutdown(vector.end_time());
    if stopped != SyncStopped::Clean {
        return Err(HarnessError::Runtime {
            vector: vector.name.clone(),
            reason: format!("io-sync stopped with {stopped:?}"),
        });
    }
    outputs.extend(observed);
    let replies_observed = replies_by_step(vector, &outputs)?;
    if replies_observed != replies {
        return Err(HarnessError::Runtime {
            vector: vector.name.clone(),
            reason: "io-sync returned replies that differ from the ones it put out".into(),
        });
    }
    let data_dir = DataDirContents::read(tmp.path())?;
    drop(dir);
    Ok(RuntimeRun {
        replies,
        observed_outputs: Some(outputs),
        data_dir_before_shutdown: Some(data_dir_before_shutdown),
        data_dir,
    })
}

/// io-tokio: the kernel task and effect thread of the daemon, a scripted clock set to each step's
/// time before its call, calls awaited one by one, then `shutdown`. Boot (fsyncs) and reading the
/// directory back run on the blocking pool.
///
/// io-tokio may still be writing (a checkpoint) after it answers, so the directory is read before
/// shutdown only when `read_before_shutdown` says the caller knows it is at rest by then (see
/// `ReferenceRun::at_rest_after_last_command`).
pub async fn run_io_tokio(vector: &Vector, read_before_shutdown: bool) -> Result<RuntimeRun, HarnessError> {
    let boot_vector = vector.clone();
    let booted =
        tokio::task::spawn_blocking(move || boot(&boot_vector)).await.map_err(task_failed(vector, "boot"))??;
    let Booted { tmp, dir, kernel, executor, outputs: _ } = booted;
    let scripted_ms = Arc::new(AtomicU64::new(vector.boot_time().0));
    let clock_ms = Arc::clone(&scripted_ms);
    let clock: Clock = Arc::new(move || Timestamp(clock_ms.load(Ordering::SeqCst)));
    let (handle, task) = evidenceos_io_tokio::spawn(kernel, executor, clock);
    let mut replies = Vec::with_capacity(vector.steps.len());
    for (index, step) in vector.steps.iter().enumerate() {
        let request = vector.request(index, &replies)?;
        scripted_ms.store(step.now_ms, Ordering::SeqCst);
        replies.push(handle.call(step.principal(), request).await);
    }
    let data_dir_before_shutdown = if read_before_shutdown {
        let root = tmp.path().to_path_buf();
        let read = tokio::task::spawn_blocking(move || DataDirContents::read(&root)).await;
        Some(read.map_err(task_failed(vector, "read-back"))??)
    } else {
        None
    };
    scripted_ms.store(vector.end_time().0, Ordering::SeqCst);
    handle.shutdown().await;
    let stopped = task.await.map_err(task_failed(vector, "kernel"))?;
    if stopped != Stopped::Clean {
        return Err(HarnessError::Runtime {
            vector: vector.name.clone(),
            reason: format!("io-tokio stopped with {stopped:?}"),
        });
    }
    let read = tokio::task::spawn_blocking(move || {
        let contents = DataDirContents::read(tmp.path());
        drop(dir);
        contents
    });
    let data_dir = read.await.map_err(task_failed(vector, "read-back"))??;
    Ok(RuntimeRun { replies, observed_outputs: None, data_dir_before_shutdown, data_dir })
}

fn task_failed(vector: &Vector, task: &str) -> impl FnOnce(tokio::task::JoinError) -> HarnessError {
    let vector = vector.name.clone();
    let task = task.to_string();
    move |e| HarnessError::Runtime { vector, reason: format!("{task} task failed: {e}") }
}
