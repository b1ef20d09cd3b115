//! One place that turns kernel events into structured log lines, for every runtime.
//! Each line carries `event=<snake_case name>` so operators can grep for it.

use evidenceos_core::LogEvent;

pub fn log_event(event: &LogEvent) {
    match event {
        LogEvent::TornTailTruncated { file, valid_len, dropped_bytes } => tracing::warn!(
            event = "torn_tail_truncated",
            file = file.file_name(),
            valid_len,
            dropped_bytes,
            "truncated a torn final record left by a crash"
        ),
        LogEvent::MissingLeavesReappended { count } => {
            tracing::warn!(
                event = "missing_leaves_reappended",
                count,
                "re-appended ETL leaves regenerated from the journal"
            )
        }
        LogEvent::JournalReplayed { records, from_seq, to_seq } => {
            tracing::info!(event = "journal_replayed", records, from_seq, to_seq, "replayed journal records")
        }
        LogEvent::Recovered { tree_size, journal_seq } => {
            tracing::info!(event = "recovered", tree_size, journal_seq, "data directory recovered and durable")
        }
        LogEvent::CheckpointMigrated { from_format, capsule_copies_dropped, code_dropped } => tracing::info!(
            event = "checkpoint_migrated",
            from_format = from_format.as_str(),
            capsule_copies_dropped,
            code_dropped,
            "loaded a checkpoint of an older format; the next checkpoint is written in the current one"
        ),
        LogEvent::CheckpointWritten { journal_seq, tree_size, rows, row_bytes, checkpoint_bytes } => tracing::debug!(
            event = "checkpoint_written",
            journal_seq,
            tree_size,
            rows,
            row_bytes,
            checkpoint_bytes,
            "checkpoint written"
        ),
        LogEvent::RowsCompacted { generation, records, bytes } => tracing::info!(
            event = "rows_compacted",
            generation,
            records,
            bytes,
            "row files compacted: state.json names one file holding every live row once"
        ),
        LogEvent::BatchDurable { commands, leaves } => {
            tracing::trace!(event = "batch_durable", commands, leaves, "batch durable")
        }
        LogEvent::StorageFailed { file, reason } => tracing::error!(
            event = "storage_failed",
            file = file.file_name(),
            reason = reason.as_str(),
            "storage failure; refusing further commands"
        ),
        LogEvent::ProtocolViolation { reason } => {
            tracing::error!(event = "runtime_protocol_violation", reason = reason.as_str(), "runtime bug")
        }
    }
}
