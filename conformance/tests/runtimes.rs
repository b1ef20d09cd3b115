//! Every vector on all three executors: the MemDisk reference, io-sync and io-tokio against real
//! temporary directories. Replies must be equal and the data directories byte-identical.

use std::path::Path;

use evidenceos_conformance::{
    ReferenceRun, RuntimeRun, VECTORS_DIR, Vector, differences, load_dir, reply_differences, run_io_sync, run_io_tokio,
    run_reference,
};

/// Everything in which `run` differs from the reference run.
fn disagreements_with_reference(reference: &ReferenceRun, label: &str, run: &RuntimeRun) -> Vec<String> {
    let mut found = reply_differences("memdisk", &reference.replies, label, &run.replies);
    if let Some(before) = &run.data_dir_before_shutdown {
        let expected = reference.expected_data_dir_before_shutdown();
        let before_label = format!("{label} before shutdown");
        found.extend(differences("memdisk", &expected, &before_label, &before.without_empty_lock_file()));
    }
    found.extend(differences(
        "memdisk",
        &reference.expected_data_dir(),
        label,
        &run.data_dir.without_empty_lock_file(),
    ));
    if let Some(outputs) = &run.observed_outputs
        && *outputs != reference.non_effect_outputs()
    {
        found.push(format!(
            "{label} replies, events and wake-ups differ:\nmemdisk: {:?}\n{label}: {outputs:?}",
            reference.non_effect_outputs()
        ));
    }
    found
}

async fn run_everywhere(vector: Vector) -> Vec<String> {
    let reference = run_reference(&vector).unwrap_or_else(|e| panic!("{e}"));
    let sync_vector = vector.clone();
    let sync = tokio::task::spawn_blocking(move || run_io_sync(&sync_vector))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("io-sync: {e}"));
    let tokio =
        run_io_tokio(&vector, reference.at_rest_after_last_command()).await.unwrap_or_else(|e| panic!("io-tokio: {e}"));
    // Journal entries (with their times) live only until the shutdown compaction: compare them
    // before it on every runtime where that point is deterministic.
    assert!(sync.data_dir_before_shutdown.is_some(), "{}: io-sync always reads before shutdown", vector.name);
    assert!(
        tokio.data_dir_before_shutdown.is_some(),
        "{}: the last command is followed by a checkpoint, so io-tokio's directory before shutdown cannot be compared; \
         end the vector with a command that does not checkpoint",
        vector.name
    );
    let mut found = disagreements_with_reference(&reference, "io-sync", &sync);
    found.extend(disagreements_with_reference(&reference, "io-tokio", &tokio));
    found.extend(differences("io-sync", &sync.data_dir, "io-tokio", &tokio.data_dir));
    found.iter().map(|problem| format!("{}: {problem}", vector.name)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_runs_identically_on_memdisk_io_sync_and_io_tokio() {
    let vectors = load_dir(Path::new(VECTORS_DIR)).unwrap_or_else(|e| panic!("{e}"));
    assert!(vectors.len() >= 4, "expected at least 4 vectors, found {}", vectors.len());
    let mut problems = Vec::new();
    for vector in vectors {
        problems.extend(run_everywhere(vector).await);
    }
    assert!(problems.is_empty(), "runtimes disagree:\n{}", problems.join("\n"));
}
