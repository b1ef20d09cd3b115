//! Raw fdatasync latency of the disk under a directory: the floor of any durable reply.

use std::io::Write;
use std::path::Path;

use crate::stats::{Latencies, LatencySummary};

/// Bytes appended before each sync: about one small journal record plus its ETL leaf.
const WRITE_BYTES: usize = 512;

/// Appends [`WRITE_BYTES`] to a scratch file in `dir` and fdatasyncs it, `samples` times, timing
/// each sync. The file is removed afterwards.
pub fn measure(dir: &Path, samples: u32) -> std::io::Result<LatencySummary> {
    let path = dir.join(format!(".evidenceos-bench-fdatasync-{}", std::process::id()));
    let result = measure_file(&path, samples);
    let _ = std::fs::remove_file(&path);
    result
}

fn measure_file(path: &Path, samples: u32) -> std::io::Result<LatencySummary> {
    let mut file = std::fs::OpenOptions::new().create_new(true).append(true).open(path)?;
    let block = vec![0x5a; WRITE_BYTES];
    let mut latencies = Latencies::default();
    for _ in 0..samples {
        file.write_all(&block)?;
        let started = std::time::Instant::now();
        // `sync_data` is fdatasync(2) on Linux, the call the daemon's executor makes.
        file.sync_data()?;
        latencies.record(started.elapsed());
    }
    Ok(latencies.summary())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_every_sample_and_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let summary = measure(dir.path(), 5).unwrap();
        assert_eq!(summary.count, 5);
        assert!(summary.p50_us <= summary.max_us);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(measure(&dir.path().join("absent"), 1).is_err());
    }
}
