//! Deterministic text renderings of a run, made to be read in a snapshot diff.
//!
//! One line per kernel output. Hashes, keys and signatures are lowercase hex. Log bytes are shown
//! record by record as `[<le32 length hex> <payload> <le32 crc hex>]`, the payload as text when it
//! is printable UTF-8 (not starting with `hex:`) and as `hex:<bytes>` otherwise; bytes that do not
//! form whole records are shown as `hex:<bytes>`. Every byte can be rebuilt from the text.

use std::fmt::Write as _;

use evidenceos_core::frame::{self, FRAME_OVERHEAD};
use evidenceos_core::hash::Hash;
use evidenceos_core::{Effect, FileId, KernelError, Output, Response};

/// Bytes per line when a whole log is printed as hex.
const HEX_BYTES_PER_LINE: usize = 32;

pub fn render_output(output: &Output) -> String {
    match output {
        Output::Effect(id, effect) => format!("effect {} {}", id.0, render_effect(effect)),
        Output::Reply(id, reply) => format!("reply {} {}", id.0, render_reply(reply)),
        Output::Event(event) => format!("event {event:?}"),
        Output::Wake(at) => format!("wake {}", at.0),
        Output::Notify(evidenceos_core::Notification::Revocation(feed)) => {
            format!("notify revocation {}", render_feed(feed))
        }
    }
}

fn render_feed(feed: &evidenceos_core::request::RevocationFeed) -> String {
    let entries: Vec<String> = feed
        .entries
        .iter()
        .map(|e| {
            format!(
                "{{ capsule_hash: {}, timestamp_unix: {}, reason: {:?} }}",
                hex::encode(e.capsule_hash),
                e.timestamp_unix,
                e.reason
            )
        })
        .collect();
    format!(
        "{{ entries: [{}], tree_size: {}, root_hash: {}, key_id: {}, signature: {} }}",
        entries.join(", "),
        feed.sth.tree_size,
        hex::encode(feed.sth.root_hash),
        feed.sth.key_id,
        hex::encode(feed.signature)
    )
}

pub fn render_effect(effect: &Effect) -> String {
    match effect {
        Effect::Append { file, bytes } => {
            format!("append {} {} bytes: {}", file.file_name(), bytes.len(), render_file_bytes(*file, bytes))
        }
        Effect::Sync { file } => format!("sync {}", file.file_name()),
        Effect::Replace { file, bytes } => {
            format!("replace {} {} bytes: {}", file.file_name(), bytes.len(), render_file_bytes(*file, bytes))
        }
        Effect::Truncate { file, len } => format!("truncate {} to {len}", file.file_name()),
    }
}

pub fn render_reply(reply: &Result<Response, KernelError>) -> String {
    match reply {
        Ok(response) => format!("ok {}", render_response(response)),
        Err(error) => format!("err {} {}", error_code_name(error), error.message),
    }
}

/// The code as it appears on the wire (`NOT_FOUND`, ...), from the code's own serde names.
pub fn error_code_name(error: &KernelError) -> String {
    match serde_json::to_value(error.code) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{:?}", error.code),
    }
}

/// Like `Debug`, with every hash, key and signature as hex.
pub fn render_response(response: &Response) -> String {
    match response {
        Response::PublicKey { key_id, public_key } => {
            format!("PublicKey {{ key_id: {key_id}, public_key: {} }}", hex::encode(public_key))
        }
        Response::SignedTreeHead(sth) => format!(
            "SignedTreeHead {{ tree_size: {}, root_hash: {}, key_id: {}, signature: {} }}",
            sth.tree_size,
            hex::encode(sth.root_hash),
            sth.key_id,
            hex::encode(sth.signature)
        ),
        Response::InclusionProof { leaf_index, tree_size, leaf_hash, path, root_hash } => format!(
            "InclusionProof {{ leaf_index: {leaf_index}, tree_size: {tree_size}, leaf_hash: {}, path: {}, root_hash: {} }}",
            hex::encode(leaf_hash),
            render_path(path),
            hex::encode(root_hash)
        ),
        Response::ConsistencyProof { first_tree_size, second_tree_size, first_root_hash, second_root_hash, path } => {
            format!(
                "ConsistencyProof {{ first_tree_size: {first_tree_size}, second_tree_size: {second_tree_size}, \
                 first_root_hash: {}, second_root_hash: {}, path: {} }}",
                hex::encode(first_root_hash),
                hex::encode(second_root_hash),
                render_path(path)
            )
        }
        Response::CreditBalance { credit_balance } => format!("CreditBalance {{ credit_balance: {credit_balance} }}"),
        Response::CreditLimit { credit_limit } => format!("CreditLimit {{ credit_limit: {credit_limit} }}"),
        Response::ClaimCreated { claim_id, topic_id, state } => format!(
            "ClaimCreated {{ claim_id: {}, topic_id: {}, state: {} }}",
            hex::encode(claim_id),
            hex::encode(topic_id),
            state.name()
        ),
        Response::ClaimState { state } => format!("ClaimState {{ state: {} }}", state.name()),
        Response::Executed(e) => format!(
            "Executed {{ state: {}, decision: {:?}, reason_codes: {:?}, canonical_output: {}, e_value: {:?}, \
             certified: {}, capsule_hash: {}, etl_index: {} }}",
            e.state.name(),
            e.decision,
            e.reason_codes,
            hex::encode(&e.canonical_output),
            e.e_value,
            e.certified,
            hex::encode(e.capsule_hash),
            e.etl_index
        ),
        Response::Capsule { capsule, capsule_hash, etl_index } => format!(
            "Capsule {{ capsule: {}, capsule_hash: {}, etl_index: {etl_index} }}",
            render_capsule(capsule),
            hex::encode(capsule_hash)
        ),
        Response::FetchedCapsule(f) => format!(
            "FetchedCapsule {{ capsule: {}, capsule_hash: {}, etl_index: {}, tree_size: {}, root_hash: {}, key_id: {}, \
             signature: {}, leaf_hash: {}, inclusion_path: {}, consistency_path: {} }}",
            render_capsule(&f.capsule),
            hex::encode(f.capsule_hash),
            f.etl_index,
            f.sth.tree_size,
            hex::encode(f.sth.root_hash),
            f.sth.key_id,
            hex::encode(f.sth.signature),
            hex::encode(f.leaf_hash),
            render_path(&f.inclusion_path),
            render_path(&f.consistency_path)
        ),
        Response::Revoked { state, timestamp_unix } => {
            format!("Revoked {{ state: {}, timestamp_unix: {timestamp_unix} }}", state.name())
        }
        Response::RevocationFeed(feed) => format!("RevocationFeed {}", render_feed(feed)),
        Response::LedgerTotals(totals) => format!("{totals:?}"),
        Response::EnvironmentReloaded { before, after } => {
            format!("EnvironmentReloaded {{ before: {before:?}, after: {after:?} }}")
        }
        Response::PoolBudgets { holdout_id, scope, k_bits_budget, access_credit_budget } => format!(
            "PoolBudgets {{ holdout_id: {holdout_id}, scope: {scope}, k_bits_budget: {k_bits_budget:?}, \
             access_credit_budget: {access_credit_budget:?} }}"
        ),
    }
}

fn render_path(path: &[Hash]) -> String {
    let hashes: Vec<String> = path.iter().map(hex::encode).collect();
    format!("[{}]", hashes.join(", "))
}

/// Logs as records, the checkpoint as text.
fn render_file_bytes(file: FileId, bytes: &[u8]) -> String {
    match file {
        FileId::Etl | FileId::Journal | FileId::StateLog(_) => render_records(bytes),
        FileId::Checkpoint => render_text_or_hex(bytes),
    }
}

/// Each record as `[len payload crc]`, or the whole buffer as hex if it is not whole records.
pub fn render_records(bytes: &[u8]) -> String {
    match rendered_records(bytes) {
        Some(records) => records.join(" "),
        None => format!("hex:{}", hex::encode(bytes)),
    }
}

/// A row file for a files snapshot: one indented `[len payload crc]` line per row, or the whole
/// file as hex lines if it is not whole records.
pub fn render_state_log(bytes: &[u8]) -> String {
    match rendered_records(bytes) {
        Some(records) => records.iter().map(|record| format!("  {record}\n")).collect(),
        None => render_hex_block(bytes),
    }
}

fn rendered_records(bytes: &[u8]) -> Option<Vec<String>> {
    let scan = frame::scan(bytes, 0).ok()?;
    if scan.torn_bytes > 0 || scan.valid_len != bytes.len() as u64 {
        return None;
    }
    let records = scan
        .records
        .iter()
        .map(|record| {
            let start = record.offset as usize;
            let payload_end = start + 4 + record.payload.len();
            let end = start + record.payload.len() + FRAME_OVERHEAD;
            format!(
                "[{} {} {}]",
                hex::encode(&bytes[start..start + 4]),
                render_text_or_hex(record.payload),
                hex::encode(&bytes[payload_end..end])
            )
        })
        .collect();
    Some(records)
}

/// A capsule as read from `etl.log`; one still unread shows where the kernel located it (the
/// harness reads every capsule, so a transcript showing that is a harness bug made visible).
fn render_capsule(capsule: &evidenceos_core::request::CapsuleBytes) -> String {
    match capsule {
        evidenceos_core::request::CapsuleBytes::Read(bytes) => render_text_or_hex(bytes),
        evidenceos_core::request::CapsuleBytes::InLog(at) => {
            format!("unread(etl.log offset {}, {} bytes)", at.offset, at.len)
        }
    }
}

/// Printable UTF-8 as is; anything else (or text that could be mistaken for hex) as `hex:...`.
pub fn render_text_or_hex(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.starts_with("hex:") && !text.chars().any(char::is_control) => text.to_string(),
        _ => format!("hex:{}", hex::encode(bytes)),
    }
}

/// UTF-8 as a quoted, escaped string (`"abc\n"`); anything else as `hex:...`.
pub fn render_quoted_or_hex(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("hex:{}", hex::encode(bytes)),
    }
}

/// A whole log as indented hex lines.
pub fn render_hex_block(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(HEX_BYTES_PER_LINE) {
        let _ = writeln!(out, "  {}", hex::encode(chunk));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::{EffectId, RequestId};

    #[test]
    fn records_render_with_raw_length_and_crc() {
        let bytes = frame::encode(br#"{"kind":"example","n":0}"#);
        assert_eq!(render_records(&bytes), r#"[18000000 {"kind":"example","n":0} 055fa6db]"#);
        let binary = frame::encode(&[0, 1, 2]);
        assert!(render_records(&binary).contains(" hex:000102 "));
        assert_eq!(render_records(&bytes[..5]), format!("hex:{}", hex::encode(&bytes[..5])));
    }

    #[test]
    fn text_that_looks_like_hex_marker_is_rendered_as_hex() {
        assert_eq!(render_text_or_hex(b"hex:00"), format!("hex:{}", hex::encode("hex:00")));
        assert_eq!(render_text_or_hex(b"line\n"), "hex:6c696e650a");
        assert_eq!(render_text_or_hex(b"{}"), "{}");
        assert_eq!(render_quoted_or_hex(b"ab\n"), r#""ab\n""#);
        assert_eq!(render_quoted_or_hex(&[0xff]), "hex:ff");
    }

    #[test]
    fn outputs_render_one_line_each() {
        let sync = Output::Effect(EffectId(4), Effect::Sync { file: FileId::Journal });
        assert_eq!(render_output(&sync), "effect 4 sync journal.log");
        let refused = Output::Reply(RequestId(2), Err(KernelError::not_found("unknown key_id")));
        assert_eq!(render_output(&refused), "reply 2 err NOT_FOUND unknown key_id");
        let balance = Output::Reply(RequestId(3), Ok(Response::CreditBalance { credit_balance: 5 }));
        assert_eq!(render_output(&balance), "reply 3 ok CreditBalance { credit_balance: 5 }");
    }

    #[test]
    fn hex_blocks_wrap_at_32_bytes() {
        let block = render_hex_block(&[0xab; 40]);
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(lines, vec![format!("  {}", "ab".repeat(32)), format!("  {}", "ab".repeat(8))]);
    }
}
