//! Kernel types ↔ protobuf messages. Field-shape rules live in core; this is translation only.

use evidenceos_core::request::{CapsuleBytes, FetchedCapsule, RevocationFeed};
use evidenceos_core::{ErrorCode, KernelError, Response, SignedTreeHead};

use crate::v2;

/// gRPC status code numbers (stable across gRPC implementations).
pub fn grpc_code(code: ErrorCode) -> i32 {
    match code {
        ErrorCode::InvalidArgument => 3,
        ErrorCode::NotFound => 5,
        ErrorCode::AlreadyExists => 6,
        ErrorCode::PermissionDenied => 7,
        ErrorCode::ResourceExhausted => 8,
        ErrorCode::FailedPrecondition => 9,
        ErrorCode::Aborted => 10,
        ErrorCode::Internal => 13,
        ErrorCode::Unavailable => 14,
        ErrorCode::Unauthenticated => 16,
    }
}

pub fn signed_tree_head(sth: &SignedTreeHead) -> v2::GetSignedTreeHeadResponse {
    v2::GetSignedTreeHeadResponse {
        tree_size: sth.tree_size,
        root_hash: sth.root_hash.to_vec(),
        signature: sth.signature.to_vec(),
        key_id: sth.key_id.0.to_vec(),
    }
}

/// A kernel answer of the wrong kind is a bug in the caller's request mapping.
pub fn unexpected(response: &Response) -> KernelError {
    KernelError::new(ErrorCode::Internal, format!("unexpected kernel response {}", response_kind(response)))
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::PublicKey { .. } => "PublicKey",
        Response::SignedTreeHead(_) => "SignedTreeHead",
        Response::InclusionProof { .. } => "InclusionProof",
        Response::ConsistencyProof { .. } => "ConsistencyProof",
        Response::CreditBalance { .. } => "CreditBalance",
        Response::CreditLimit { .. } => "CreditLimit",
        Response::ClaimCreated { .. } => "ClaimCreated",
        Response::ClaimState { .. } => "ClaimState",
        Response::Executed(_) => "Executed",
        Response::Capsule { .. } => "Capsule",
        Response::FetchedCapsule(_) => "FetchedCapsule",
        Response::Revoked { .. } => "Revoked",
        Response::RevocationFeed(_) => "RevocationFeed",
        Response::PoolBudgets { .. } => "PoolBudgets",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

pub fn sth_message(sth: &SignedTreeHead) -> v2::SignedTreeHead {
    v2::SignedTreeHead {
        tree_size: sth.tree_size,
        root_hash: sth.root_hash.to_vec(),
        signature: sth.signature.to_vec(),
        key_id: sth.key_id.0.to_vec(),
    }
}

pub fn claim_created(response: Response) -> Result<(Vec<u8>, Vec<u8>, i32), KernelError> {
    match response {
        Response::ClaimCreated { claim_id, topic_id, state } => {
            Ok((claim_id.to_vec(), topic_id.to_vec(), state.wire()))
        }
        other => Err(unexpected(&other)),
    }
}

pub fn claim_state(response: Response) -> Result<i32, KernelError> {
    match response {
        Response::ClaimState { state } => Ok(state.wire()),
        other => Err(unexpected(&other)),
    }
}

pub fn executed(response: Response) -> Result<v2::ExecuteClaimV2Response, KernelError> {
    match response {
        Response::Executed(execution) => Ok(v2::ExecuteClaimV2Response {
            state: execution.state.wire(),
            decision: execution.decision.wire() as i32,
            reason_codes: execution.reason_codes,
            canonical_output: execution.canonical_output,
            e_value: execution.e_value,
            certified: execution.certified,
            capsule_hash: execution.capsule_hash.to_vec(),
            etl_index: execution.etl_index,
        }),
        other => Err(unexpected(&other)),
    }
}

/// The capsule's bytes, which the runtime has read from `etl.log` by now.
fn read_capsule(capsule: CapsuleBytes) -> Result<Vec<u8>, KernelError> {
    capsule.into_read().ok_or_else(|| KernelError::new(ErrorCode::Internal, "capsule bytes were not read from etl.log"))
}

pub fn capsule(response: Response) -> Result<v2::GetCapsuleResponse, KernelError> {
    match response {
        Response::Capsule { capsule, capsule_hash, etl_index } => Ok(v2::GetCapsuleResponse {
            capsule_bytes: read_capsule(capsule)?,
            capsule_hash: capsule_hash.to_vec(),
            etl_index,
        }),
        other => Err(unexpected(&other)),
    }
}

pub fn fetched_capsule(response: Response) -> Result<v2::FetchCapsuleResponse, KernelError> {
    let Response::FetchedCapsule(fetched) = response else { return Err(unexpected(&response)) };
    let FetchedCapsule { capsule, capsule_hash, etl_index, sth, inclusion_path, leaf_hash, consistency_path } =
        *fetched;
    Ok(v2::FetchCapsuleResponse {
        capsule_bytes: read_capsule(capsule)?,
        capsule_hash: capsule_hash.to_vec(),
        etl_index,
        signed_tree_head: Some(sth_message(&sth)),
        inclusion_proof: Some(v2::MerkleInclusionProof {
            leaf_hash: leaf_hash.to_vec(),
            leaf_index: etl_index,
            tree_size: sth.tree_size,
            audit_path: inclusion_path.iter().map(|h| h.to_vec()).collect(),
        }),
        consistency_proof: Some(v2::MerkleConsistencyProof {
            old_tree_size: etl_index + 1,
            new_tree_size: sth.tree_size,
            path: consistency_path.iter().map(|h| h.to_vec()).collect(),
        }),
        root_hash: sth.root_hash.to_vec(),
        tree_size: sth.tree_size,
    })
}

pub fn revoked(response: Response) -> Result<v2::RevokeClaimResponse, KernelError> {
    match response {
        Response::Revoked { state, timestamp_unix } => {
            Ok(v2::RevokeClaimResponse { state: state.wire(), timestamp_unix })
        }
        other => Err(unexpected(&other)),
    }
}

/// Feed entries carry the revoked capsule's hash in `claim_id`: it is the id the signature covers.
pub fn revocation_entries(feed: &RevocationFeed) -> Vec<v2::RevocationEntry> {
    feed.entries
        .iter()
        .map(|e| v2::RevocationEntry {
            claim_id: e.capsule_hash.to_vec(),
            timestamp_unix: e.timestamp_unix,
            reason: e.reason.clone(),
        })
        .collect()
}

pub fn revocation_feed(response: Response) -> Result<v2::GetRevocationFeedResponse, KernelError> {
    let Response::RevocationFeed(feed) = response else { return Err(unexpected(&response)) };
    Ok(v2::GetRevocationFeedResponse {
        entries: revocation_entries(&feed),
        signature: feed.signature.to_vec(),
        key_id: feed.sth.key_id.0.to_vec(),
        signed_tree_head: Some(sth_message(&feed.sth)),
    })
}

pub fn watch_message(feed: &RevocationFeed) -> v2::WatchRevocationsResponse {
    v2::WatchRevocationsResponse {
        entries: revocation_entries(feed),
        signature: feed.signature.to_vec(),
        signed_tree_head: Some(sth_message(&feed.sth)),
        key_id: feed.sth.key_id.0.to_vec(),
    }
}

pub fn pool_budgets(response: Response) -> Result<v2::HoldoutPoolBudgets, KernelError> {
    match response {
        Response::PoolBudgets { holdout_id, scope, k_bits_budget, access_credit_budget } => {
            Ok(v2::HoldoutPoolBudgets { holdout_id, scope, k_bits_budget, access_credit_budget })
        }
        other => Err(unexpected(&other)),
    }
}

pub fn public_key(response: Response) -> Result<v2::GetPublicKeyResponse, KernelError> {
    match response {
        Response::PublicKey { key_id, public_key } => {
            Ok(v2::GetPublicKeyResponse { ed25519_public_key: public_key.to_vec(), key_id: key_id.0.to_vec() })
        }
        other => Err(unexpected(&other)),
    }
}

pub fn tree_head(response: Response) -> Result<v2::GetSignedTreeHeadResponse, KernelError> {
    match response {
        Response::SignedTreeHead(sth) => Ok(signed_tree_head(&sth)),
        other => Err(unexpected(&other)),
    }
}

pub fn inclusion_proof(response: Response) -> Result<v2::GetInclusionProofResponse, KernelError> {
    match response {
        Response::InclusionProof { tree_size, leaf_hash, path, root_hash, .. } => Ok(v2::GetInclusionProofResponse {
            leaf_hash: leaf_hash.to_vec(),
            sibling_hashes: path.iter().map(|h| h.to_vec()).collect(),
            root_hash: root_hash.to_vec(),
            tree_size,
        }),
        other => Err(unexpected(&other)),
    }
}

pub fn consistency_proof(response: Response) -> Result<v2::GetConsistencyProofResponse, KernelError> {
    match response {
        Response::ConsistencyProof { first_root_hash, second_root_hash, path, .. } => {
            Ok(v2::GetConsistencyProofResponse {
                consistent: true,
                first_root_hash: first_root_hash.to_vec(),
                second_root_hash: second_root_hash.to_vec(),
                path: path.iter().map(|h| h.to_vec()).collect(),
            })
        }
        other => Err(unexpected(&other)),
    }
}

pub fn credit_balance(response: Response) -> Result<v2::GrantCreditResponse, KernelError> {
    match response {
        Response::CreditBalance { credit_balance } => Ok(v2::GrantCreditResponse { credit_balance }),
        other => Err(unexpected(&other)),
    }
}

pub fn credit_limit(response: Response) -> Result<v2::SetCreditLimitResponse, KernelError> {
    match response {
        Response::CreditLimit { credit_limit } => Ok(v2::SetCreditLimitResponse { credit_limit }),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_match_grpc_numbers() {
        assert_eq!(grpc_code(ErrorCode::InvalidArgument), 3);
        assert_eq!(grpc_code(ErrorCode::FailedPrecondition), 9);
        assert_eq!(grpc_code(ErrorCode::Unauthenticated), 16);
        assert_eq!(grpc_code(ErrorCode::Unavailable), 14);
    }

    #[test]
    fn a_mismatched_response_is_an_internal_error() {
        let err = public_key(Response::CreditLimit { credit_limit: 1 }).unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
    }
}
