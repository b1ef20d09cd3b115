//! The reference run: a vector driven through the kernel over `MemDisk`, every output kept.
//!
//! Boot on an empty disk with the vector's key, run the recovery effects, then one step at a time:
//! `handle` the request at the step's time and carry out every effect before the next step.
//! A clean shutdown ends the run: `Input::Checkpoint` at the last step's time, as io-tokio does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use evidenceos_core::hash::sha256;
use evidenceos_core::memdisk::MemDisk;
use evidenceos_core::{FileId, Input, Kernel, KernelError, Output, Response, RowFile};

use crate::data_dir::{ACTIVE_KEY_FILE, DataDirContents, KEYS_DIR};
use crate::error::HarnessError;
use crate::transcript::{
    render_hex_block, render_output, render_quoted_or_hex, render_reply, render_state_log, render_text_or_hex,
};
use crate::vector::{Vector, request_id};

pub type Reply = Result<Response, KernelError>;

#[derive(Debug, Clone)]
pub struct ReferenceRun {
    pub vector: Vector,
    /// Outputs of recovery on the empty disk.
    pub boot: Vec<Output>,
    /// Outputs while handling and draining each step, by step index.
    pub steps: Vec<Vec<Output>>,
    /// Outputs of the shutdown checkpoint.
    pub shutdown: Vec<Output>,
    /// The reply to each step, by step index.
    pub replies: Vec<Reply>,
    /// The disk after the last step, before the shutdown checkpoint compacts the journal.
    pub disk_before_shutdown: MemDisk,
    /// The disk at the end of the run.
    pub disk: MemDisk,
}

pub fn run_reference(vector: &Vector) -> Result<ReferenceRun, HarnessError> {
    let mut disk = MemDisk::new();
    let files = disk.recovery_files(vector.key_files(), vector.active_key_id_file());
    let mut kernel = Kernel::recover(vector.kernel_config(), files)?;
    let boot = disk.drive(&mut kernel, vector.boot_time());
    ensure_booted(vector, &kernel)?;
    let mut steps = Vec::with_capacity(vector.steps.len());
    let mut replies_so_far = Vec::with_capacity(vector.steps.len());
    for (index, step) in vector.steps.iter().enumerate() {
        kernel.handle(step.now(), vector.input(index, &replies_so_far)?);
        let outputs = disk.drive(&mut kernel, step.now());
        replies_so_far.push(reply_in(vector, index, &outputs)?);
        steps.push(outputs);
    }
    let disk_before_shutdown = disk.clone();
    kernel.handle(vector.end_time(), Input::Checkpoint);
    let shutdown = disk.drive(&mut kernel, vector.end_time());
    ensure_stopped_cleanly(vector, &kernel)?;
    let all_outputs = boot.iter().chain(steps.iter().flatten()).chain(&shutdown);
    let replies = replies_by_step(vector, all_outputs)?;
    Ok(ReferenceRun { vector: vector.clone(), boot, steps, shutdown, replies, disk_before_shutdown, disk })
}

/// Recovery effects are done and the kernel serves.
pub(crate) fn ensure_booted(vector: &Vector, kernel: &Kernel) -> Result<(), HarnessError> {
    if kernel.is_recovering() || kernel.is_failed() || !kernel.is_idle() {
        return Err(HarnessError::Runtime {
            vector: vector.name.clone(),
            reason: format!(
                "kernel did not finish booting (recovering: {}, failed: {}, idle: {})",
                kernel.is_recovering(),
                kernel.is_failed(),
                kernel.is_idle()
            ),
        });
    }
    Ok(())
}

/// Nothing staged or in flight, no storage failure.
pub(crate) fn ensure_stopped_cleanly(vector: &Vector, kernel: &Kernel) -> Result<(), HarnessError> {
    if kernel.is_failed() || !kernel.is_idle() {
        return Err(HarnessError::Runtime {
            vector: vector.name.clone(),
            reason: format!("kernel did not stop cleanly (failed: {}, idle: {})", kernel.is_failed(), kernel.is_idle()),
        });
    }
    Ok(())
}

/// The reply to step `index` among the outputs of driving it: every step is answered before the
/// next is sent, so later steps can refer to it.
pub(crate) fn reply_in(vector: &Vector, index: usize, outputs: &[Output]) -> Result<Reply, HarnessError> {
    outputs
        .iter()
        .find_map(|output| match output {
            Output::Reply(id, reply) if *id == request_id(index) => Some(reply.clone()),
            _ => None,
        })
        .ok_or(HarnessError::MissingReply { vector: vector.name.clone(), step: index })
}

/// Exactly one reply per step, in step order.
pub(crate) fn replies_by_step<'a>(
    vector: &Vector,
    outputs: impl IntoIterator<Item = &'a Output>,
) -> Result<Vec<Reply>, HarnessError> {
    let mut by_id = BTreeMap::new();
    for output in outputs {
        if let Output::Reply(id, reply) = output
            && by_id.insert(id.0, reply.clone()).is_some()
        {
            return Err(HarnessError::Runtime {
                vector: vector.name.clone(),
                reason: format!("request {} was answered twice", id.0),
            });
        }
    }
    let replies = (0..vector.steps.len())
        .map(|index| {
            by_id
                .remove(&request_id(index).0)
                .ok_or(HarnessError::MissingReply { vector: vector.name.clone(), step: index })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(stray) = by_id.keys().next() {
        return Err(HarnessError::Runtime {
            vector: vector.name.clone(),
            reason: format!("reply to request {stray}, which no step sent"),
        });
    }
    Ok(replies)
}

impl ReferenceRun {
    /// Every output in order, each section headed by what caused it.
    pub fn transcript(&self) -> String {
        let vector = &self.vector;
        let mut out = String::new();
        let _ = writeln!(out, "# {}: {}", vector.name, vector.description);
        let _ = writeln!(out, "key_id {}", vector.key_id());
        for holdout in &vector.holdouts {
            let _ = writeln!(
                out,
                "holdout {} handle {} created_at_unix {} labels ({}): {}",
                holdout.holdout_ref,
                hex::encode(&holdout.handle_hex.0),
                holdout.created_at_unix,
                holdout.labels.len(),
                holdout.labels
            );
        }
        for (path, module) in &vector.modules {
            let _ = writeln!(out, "module {path} {} bytes sha256 {}", module.len(), hex::encode(sha256(module)));
        }
        let _ = writeln!(out, "== boot at {}", vector.boot_time().0);
        write_outputs(&mut out, &self.boot);
        for (index, (step, outputs)) in vector.steps.iter().zip(&self.steps).enumerate() {
            let request = serde_json::to_string(&step.request).unwrap_or_else(|e| format!("<unprintable: {e}>"));
            let role = serde_json::to_value(step.principal.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", step.principal.role));
            let _ = writeln!(out, "== step {index} at {} by {} ({role}): {request}", step.now_ms, step.principal.id);
            write_outputs(&mut out, outputs);
        }
        let _ = writeln!(out, "== shutdown at {}: checkpoint", vector.end_time().0);
        write_outputs(&mut out, &self.shutdown);
        out
    }

    /// The data directory at the end of the run: keys, both logs as hex, the checkpoint as text.
    pub fn files(&self) -> String {
        let vector = &self.vector;
        let mut out = String::new();
        let _ = writeln!(out, "key_id {}", vector.key_id());
        for key in vector.key_files() {
            let _ = writeln!(out, "{KEYS_DIR}/{} {} bytes: hex:{}", key.name, key.bytes.len(), hex::encode(&key.bytes));
        }
        let active = vector.active_key_id_file();
        let _ = writeln!(out, "keys/{ACTIVE_KEY_FILE} {} bytes: {}", active.len(), render_quoted_or_hex(&active));
        for file in [FileId::Etl, FileId::Journal] {
            let bytes = self.disk.contents(file);
            let _ = writeln!(out, "{} {} bytes:", file.file_name(), bytes.len());
            out.push_str(&render_hex_block(bytes));
        }
        let checkpoint = self.disk.contents(FileId::Checkpoint);
        let _ = writeln!(out, "{} {} bytes:", FileId::Checkpoint.file_name(), checkpoint.len());
        let _ = writeln!(out, "  {}", render_text_or_hex(checkpoint));
        // Rows as text, one record a line: claim states such as TAINTED show here.
        for slot in RowFile::ALL {
            let rows = self.disk.contents(FileId::StateLog(slot));
            let _ = writeln!(out, "{} {} bytes:", FileId::StateLog(slot).file_name(), rows.len());
            out.push_str(&render_state_log(rows));
        }
        out
    }

    /// What a runtime's data directory must hold after this vector: the kernel's files as the
    /// MemDisk has them, and the key files written before boot.
    pub fn expected_data_dir(&self) -> DataDirContents {
        DataDirContents::expected(&self.vector, &self.disk)
    }

    /// [`Self::expected_data_dir`] after the last step, before the shutdown checkpoint.
    pub fn expected_data_dir_before_shutdown(&self) -> DataDirContents {
        DataDirContents::expected(&self.vector, &self.disk_before_shutdown)
    }

    /// Whether the disk is at rest once the last command is answered: no effect follows that
    /// reply. Then a runtime that answered the same way holds exactly
    /// [`Self::expected_data_dir_before_shutdown`] at that point, even one (io-tokio) that keeps
    /// writing after a reply, since queries that follow never write.
    pub fn at_rest_after_last_command(&self) -> bool {
        let last_command = self.vector.steps.iter().rposition(|step| step.request.is_command());
        let Some(index) = last_command else {
            return true;
        };
        let outputs = &self.steps[index];
        let reply_at = outputs.iter().position(|o| matches!(o, Output::Reply(id, _) if *id == request_id(index)));
        reply_at.is_some_and(|at| !outputs[at..].iter().any(|o| matches!(o, Output::Effect(..))))
    }

    /// Replies, events and wake-ups in order: what io-sync's `drive` hands back.
    pub fn non_effect_outputs(&self) -> Vec<Output> {
        let all = self.boot.iter().chain(self.steps.iter().flatten()).chain(&self.shutdown);
        all.filter(|output| !matches!(output, Output::Effect(..))).cloned().collect()
    }
}

fn write_outputs(out: &mut String, outputs: &[Output]) {
    for output in outputs {
        out.push_str(&render_output(output));
        out.push('\n');
    }
}

/// Every step where two runs answered differently, with both replies rendered.
pub fn reply_differences(a_label: &str, a: &[Reply], b_label: &str, b: &[Reply]) -> Vec<String> {
    let mut found = Vec::new();
    if a.len() != b.len() {
        found.push(format!("{a_label} answered {} steps, {b_label} {}", a.len(), b.len()));
    }
    for (index, (a_reply, b_reply)) in a.iter().zip(b).enumerate() {
        if a_reply != b_reply {
            found.push(format!(
                "step {index}: {a_label} replied {}, {b_label} replied {}",
                render_reply(a_reply),
                render_reply(b_reply)
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_differences_name_the_step_and_both_replies() {
        let a = vec![Ok(Response::CreditLimit { credit_limit: 1 }), Err(KernelError::not_found("gone"))];
        assert!(reply_differences("x", &a, "y", &a.clone()).is_empty());
        let b = vec![Ok(Response::CreditLimit { credit_limit: 1 }), Ok(Response::CreditBalance { credit_balance: 2 })];
        assert_eq!(
            reply_differences("x", &a, "y", &b),
            vec!["step 1: x replied err NOT_FOUND gone, y replied ok CreditBalance { credit_balance: 2 }".to_string()]
        );
        assert_eq!(reply_differences("x", &a, "y", &b[..1]), vec!["x answered 2 steps, y 1".to_string()]);
    }
}
