//! Kernel types ↔ protobuf messages. Field-shape rules live in core; this is translation only.

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
        #[allow(unreachable_patterns)]
        _ => "other",
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
