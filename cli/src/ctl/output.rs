//! Rendering results: enum names, aligned `key: value` lines, stdout and stderr.

use std::io::Write;

use evidenceos_grpc::v2;

/// `CERTIFIED` for `CLAIM_STATE_CERTIFIED`; unknown numbers as `UNKNOWN(n)`.
pub(crate) fn state_name(state: i32) -> String {
    match v2::ClaimState::try_from(state) {
        Ok(state) => state.as_str_name().trim_start_matches("CLAIM_STATE_").to_string(),
        Err(_) => format!("UNKNOWN({state})"),
    }
}

/// `APPROVE` for `DECISION_APPROVE`; unknown numbers as `UNKNOWN(n)`.
pub(crate) fn decision_name(decision: i32) -> String {
    match v2::Decision::try_from(decision) {
        Ok(decision) => decision.as_str_name().trim_start_matches("DECISION_").to_string(),
        Err(_) => format!("UNKNOWN({decision})"),
    }
}

/// `key: value` lines with the values aligned in one column.
pub(crate) fn aligned(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    rows.iter().map(|(key, value)| format!("{:<width$} {value}\n", format!("{key}:"))).collect()
}

/// Writes a result to stdout. A closed pipe (`… | head`) is not an error worth reporting.
pub(crate) fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// One progress line on stderr: the step name in a fixed-width column, then what happened.
pub(crate) fn progress(step: &str, detail: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{step:<8} {detail}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_drop_the_enum_prefix() {
        assert_eq!(state_name(6), "CERTIFIED");
        assert_eq!(state_name(10), "FROZEN");
        assert_eq!(state_name(42), "UNKNOWN(42)");
        assert_eq!(decision_name(2), "REJECT");
        assert_eq!(decision_name(-1), "UNKNOWN(-1)");
    }

    #[test]
    fn values_line_up() {
        let text = aligned(&[("claim_id", "ab".into()), ("state", "CERTIFIED".into())]);
        assert_eq!(text, "claim_id: ab\nstate:    CERTIFIED\n");
    }
}
