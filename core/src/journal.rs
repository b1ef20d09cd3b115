//! `journal.log`: every accepted command, framed like `etl.log`, appended and synced before its
//! reply. A header record opens the file after each compaction. Replaying the journal from the
//! checkpoint reproduces state and ETL leaves byte for byte.

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::frame;
use crate::io::Timestamp;
use crate::request::{Command, IdempotencyKey, Principal};
use crate::state::Policy;

pub const JOURNAL_FORMAT: &str = "evidenceos.journal.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case", deny_unknown_fields)]
pub enum JournalRecord {
    /// First record of the file: entries that follow start at `base_seq + 1`.
    Header {
        format: String,
        kernel_version: String,
        base_seq: u64,
        policy: Policy,
        /// The environment in force at `base_seq` (absent in journals written before it was
        /// journaled: replay then uses the one the daemon starts with).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<Box<crate::environment::Environment>>,
    },
    Entry {
        seq: u64,
        now_ms: u64,
        principal: Principal,
        command: Command,
        /// Present for idempotent retries, so replay rebuilds the idempotency records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency: Option<IdempotencyKey>,
    },
}

impl JournalRecord {
    pub fn header(base_seq: u64, policy: &Policy, environment: &crate::environment::Environment) -> Self {
        Self::Header {
            format: JOURNAL_FORMAT.to_string(),
            kernel_version: crate::KERNEL_VERSION.to_string(),
            base_seq,
            policy: policy.clone(),
            environment: Some(Box::new(environment.clone())),
        }
    }

    pub fn entry(
        seq: u64,
        now: Timestamp,
        principal: &Principal,
        command: &Command,
        idempotency: Option<&IdempotencyKey>,
    ) -> Self {
        Self::Entry {
            seq,
            now_ms: now.0,
            principal: principal.clone(),
            command: command.clone(),
            idempotency: idempotency.cloned(),
        }
    }

    /// The framed bytes of this record, ready to append.
    pub fn to_frame(&self) -> Vec<u8> {
        let payload = canonical::to_vec(self).expect("journal records are plain JSON");
        frame::encode(&payload)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Role;

    #[test]
    fn records_round_trip_through_frames() {
        let records = [
            JournalRecord::header(
                7,
                &Policy { default_credit_limit: Some(3), ..Policy::default() },
                &Default::default(),
            ),
            JournalRecord::entry(
                8,
                Timestamp(1_700_000_000_000),
                &Principal::new("op", Role::Operator),
                &Command::SetCreditLimit { principal_id: "a".into(), limit: 9 },
                None,
            ),
        ];
        let mut log = Vec::new();
        for record in &records {
            log.extend(record.to_frame());
        }
        let scan = frame::scan(&log, 0).unwrap();
        let decoded: Vec<JournalRecord> =
            scan.records.iter().map(|r| JournalRecord::from_payload(r.payload).unwrap()).collect();
        assert_eq!(decoded, records);
    }

    #[test]
    fn entry_bytes_are_canonical() {
        let entry = JournalRecord::entry(
            1,
            Timestamp(5),
            &Principal::new("op", Role::Operator),
            &Command::SetCreditLimit { principal_id: "a".into(), limit: 9 },
            None,
        );
        let frame = entry.to_frame();
        assert_eq!(
            std::str::from_utf8(&frame[4..frame.len() - 4]).unwrap(),
            r#"{"command":{"limit":9,"principal_id":"a","type":"set_credit_limit"},"now_ms":5,"principal":{"id":"op","role":"operator"},"record":"entry","seq":1}"#
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let payload = br#"{"record":"header","format":"x","kernel_version":"v","base_seq":0,"policy":{"default_credit_limit":null},"extra":1}"#;
        assert!(JournalRecord::from_payload(payload).is_err());
    }
}
