//! Shape tests for the `EvidenceOS` protos.
//!
//! * `v1_mirrors_v2`: the evidenceos.v1 package repeats evidenceos.v2 exactly
//!   (messages, enums), and its service is v2's minus the holdout-pool RPCs.
//! * `spec`: every RPC, message field and enum value is pinned against the
//!   API spec, to catch typos in the .proto files.
//! * `shared_types`: the generated v1 service takes and returns the v2 Rust
//!   types, so one implementation serves both packages, each under its own
//!   gRPC path.

use std::collections::BTreeMap;

use evidenceos_grpc::FILE_DESCRIPTOR_SET;
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

const V1: &str = "evidenceos.v1";
const V2: &str = "evidenceos.v2";
const V2_ONLY_RPCS: [&str; 2] = ["SetHoldoutPoolBudgets", "GetHoldoutPoolBudgets"];

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn file(fds: &FileDescriptorSet, package: &str) -> FileDescriptorProto {
    let mut files = fds.file.iter().filter(|f| f.package() == package);
    let found = files.next().unwrap_or_else(|| panic!("no file for {package}"));
    assert!(files.next().is_none(), "several files for {package}");
    found.clone()
}

fn messages(file: &FileDescriptorProto) -> BTreeMap<String, DescriptorProto> {
    file.message_type.iter().map(|m| (m.name().to_owned(), m.clone())).collect()
}

fn enums(file: &FileDescriptorProto) -> BTreeMap<String, EnumDescriptorProto> {
    file.enum_type.iter().map(|e| (e.name().to_owned(), e.clone())).collect()
}

fn service(file: &FileDescriptorProto) -> ServiceDescriptorProto {
    assert_eq!(file.service.len(), 1, "{}: one service", file.package());
    let svc = file.service[0].clone();
    assert_eq!(svc.name(), "EvidenceOS");
    svc
}

/// `.evidenceos.v1.Foo` -> `Foo`; panics if the name is not in `package`.
fn local_type_name<'a>(type_name: &'a str, package: &str) -> &'a str {
    type_name
        .strip_prefix('.')
        .and_then(|n| n.strip_prefix(package))
        .and_then(|n| n.strip_prefix('.'))
        .unwrap_or_else(|| panic!("type {type_name} is not in package {package}"))
}

/// Everything about a field that must match across packages, with type
/// names made package-relative.
fn field_shape(f: &FieldDescriptorProto, package: &str) -> String {
    let type_name = if f.type_name.is_some() { local_type_name(f.type_name(), package) } else { "" };
    format!(
        "{}={} {:?} {:?} type_name={} proto3_optional={} oneof_index={:?} json_name={}",
        f.name(),
        f.number(),
        f.r#type(),
        f.label(),
        type_name,
        f.proto3_optional(),
        f.oneof_index,
        f.json_name(),
    )
}

fn message_shape(m: &DescriptorProto, package: &str) -> Vec<String> {
    let mut shape: Vec<String> = m.field.iter().map(|f| field_shape(f, package)).collect();
    shape.extend(m.oneof_decl.iter().map(|o| format!("oneof {}", o.name())));
    shape.extend(m.nested_type.iter().map(|n| format!("nested {}", n.name())));
    shape.extend(m.enum_type.iter().map(|e| format!("nested enum {}", e.name())));
    shape
}

/// Method name -> (input, output, client streaming, server streaming).
fn methods(svc: &ServiceDescriptorProto, package: &str) -> Vec<(String, String, String, bool, bool)> {
    svc.method
        .iter()
        .map(|m| {
            (
                m.name().to_owned(),
                local_type_name(m.input_type(), package).to_owned(),
                local_type_name(m.output_type(), package).to_owned(),
                m.client_streaming(),
                m.server_streaming(),
            )
        })
        .collect()
}

mod v1_mirrors_v2 {
    use super::*;

    #[test]
    fn descriptor_set_holds_exactly_the_two_packages() {
        let fds = descriptor_set();
        let mut packages: Vec<&str> = fds.file.iter().map(FileDescriptorProto::package).collect();
        packages.sort_unstable();
        assert_eq!(packages, [V1, V2]);
        for f in &fds.file {
            assert_eq!(f.syntax(), "proto3", "{}", f.name());
            assert!(f.dependency.is_empty(), "{} imports {:?}", f.name(), f.dependency);
        }
    }

    #[test]
    fn every_message_matches_field_for_field() {
        let fds = descriptor_set();
        let (v1, v2) = (messages(&file(&fds, V1)), messages(&file(&fds, V2)));
        assert_eq!(v1.keys().collect::<Vec<_>>(), v2.keys().collect::<Vec<_>>(), "v1 and v2 declare the same messages");
        for (name, m1) in &v1 {
            let m2 = &v2[name];
            assert_eq!(message_shape(m1, V1), message_shape(m2, V2), "message {name} differs between v1 and v2");
        }
    }

    #[test]
    fn every_enum_matches_value_for_value() {
        let fds = descriptor_set();
        let (v1, v2) = (enums(&file(&fds, V1)), enums(&file(&fds, V2)));
        assert_eq!(v1.keys().collect::<Vec<_>>(), v2.keys().collect::<Vec<_>>());
        for (name, e1) in &v1 {
            let values = |e: &EnumDescriptorProto| -> Vec<(String, i32)> {
                e.value.iter().map(|v| (v.name().to_owned(), v.number())).collect()
            };
            assert_eq!(values(e1), values(&v2[name]), "enum {name}");
        }
    }

    #[test]
    fn v1_service_is_v2_minus_holdout_pool_rpcs() {
        let fds = descriptor_set();
        let v1 = methods(&service(&file(&fds, V1)), V1);
        let v2: Vec<_> = methods(&service(&file(&fds, V2)), V2)
            .into_iter()
            .filter(|m| !V2_ONLY_RPCS.contains(&m.0.as_str()))
            .collect();
        assert_eq!(v1, v2);
        assert_eq!(v1.len() + V2_ONLY_RPCS.len(), 24);
    }

    #[test]
    fn watch_revocations_is_server_streaming_only_in_both() {
        let fds = descriptor_set();
        for package in [V1, V2] {
            let svc = service(&file(&fds, package));
            for m in &svc.method {
                let streaming = m.name() == "WatchRevocations";
                assert_eq!(m.server_streaming(), streaming, "{package}.{}", m.name());
                assert!(!m.client_streaming(), "{package}.{}", m.name());
            }
        }
    }
}

mod spec {
    use super::*;

    const RPCS: [&str; 24] = [
        "Health",
        "GetServerInfo",
        "CreateClaim",
        "CreateClaimV2",
        "CommitArtifacts",
        "Freeze",
        "FreezeGates",
        "Seal",
        "SealClaim",
        "ExecuteClaim",
        "ExecuteClaimV2",
        "GetCapsule",
        "GetPublicKey",
        "GetSignedTreeHead",
        "GetInclusionProof",
        "GetConsistencyProof",
        "GetRevocationFeed",
        "FetchCapsule",
        "RevokeClaim",
        "GrantCredit",
        "SetCreditLimit",
        "SetHoldoutPoolBudgets",
        "GetHoldoutPoolBudgets",
        "WatchRevocations",
    ];

    /// The API spec, one message per line: `Name: number:field [label] type, ...`.
    const MESSAGES: &str = "
        HealthRequest:
        HealthResponse: 1:status string
        GetServerInfoRequest:
        FeatureFlags: 1:tls_enabled bool, 2:mtls_enabled bool, 3:oracle_registry_enabled bool, 4:insecure_v1_enabled bool, 5:synthetic_holdout_enabled bool, 6:offline_settlement_ingest_enabled bool, 7:disjointness_attestation_required bool
        GetServerInfoResponse: 1:protocol_semver string, 2:proto_hash string, 3:build_git_commit string, 4:build_time_utc string, 5:daemon_version string, 6:feature_flags FeatureFlags
        CreateClaimRequest: 1:topic_id bytes, 2:holdout_handle_id bytes, 3:phys_hir_hash bytes, 4:epoch_size uint64, 5:oracle_num_symbols uint32, 6:alpha double, 7:access_credit uint64
        CreateClaimResponse: 1:claim_id bytes, 2:state ClaimState
        ClaimMetadataV2: 1:lane string, 2:alpha_micros uint32, 3:epoch_config_ref string, 4:output_schema_id string
        TopicSignalsV2: 1:semantic_hash bytes, 2:phys_hir_signature_hash bytes, 3:dependency_merkle_root bytes
        CreateClaimV2Request: 1:claim_name string, 2:metadata ClaimMetadataV2, 3:signals TopicSignalsV2, 4:holdout_ref string, 5:epoch_size uint64, 6:oracle_num_symbols uint32, 7:access_credit uint64, 8:oracle_id string, 9:nullspec_id string, 10:dp_epsilon_budget optional double, 11:dp_delta_budget optional double
        CreateClaimV2Response: 1:claim_id bytes, 2:topic_id bytes, 3:state ClaimState
        Artifact: 1:artifact_hash bytes, 2:kind string
        CommitArtifactsRequest: 1:claim_id bytes, 2:artifacts repeated Artifact, 3:wasm_module bytes
        CommitArtifactsResponse: 1:state ClaimState
        FreezeGatesRequest: 1:claim_id bytes
        FreezeRequest: 1:claim_id bytes
        FreezeGatesResponse: 1:state ClaimState
        FreezeResponse: 1:state ClaimState
        SealClaimRequest: 1:claim_id bytes
        SealRequest: 1:claim_id bytes
        SealClaimResponse: 1:state ClaimState
        SealResponse: 1:state ClaimState
        ExecuteClaimRequest: 1:claim_id bytes, 2:decision Decision, 3:reason_codes repeated uint32, 4:canonical_output bytes
        ExecuteClaimResponse: 1:state ClaimState, 2:capsule_hash bytes, 3:etl_index uint64
        ExecuteClaimV2Request: 1:claim_id bytes
        ExecuteClaimV2Response: 1:state ClaimState, 2:decision Decision, 3:reason_codes repeated uint32, 4:canonical_output bytes, 5:e_value double, 6:certified bool, 7:capsule_hash bytes, 8:etl_index uint64
        GetCapsuleRequest: 1:claim_id bytes
        GetCapsuleResponse: 1:capsule_bytes bytes, 2:capsule_hash bytes, 3:etl_index uint64
        GetPublicKeyRequest: 1:key_id bytes
        GetPublicKeyResponse: 1:ed25519_public_key bytes, 2:key_id bytes
        GetSignedTreeHeadRequest:
        GetSignedTreeHeadResponse: 1:tree_size uint64, 2:root_hash bytes, 3:signature bytes, 4:key_id bytes
        GetInclusionProofRequest: 1:leaf_index uint64
        GetInclusionProofResponse: 1:leaf_hash bytes, 2:sibling_hashes repeated bytes, 3:root_hash bytes, 4:tree_size uint64
        GetConsistencyProofRequest: 1:first_tree_size uint64, 2:second_tree_size uint64
        GetConsistencyProofResponse: 1:consistent bool, 2:first_root_hash bytes, 3:second_root_hash bytes, 4:path repeated bytes
        GetRevocationFeedRequest:
        GetRevocationFeedResponse: 1:entries repeated RevocationEntry, 2:signature bytes, 3:key_id bytes, 4:signed_tree_head SignedTreeHead
        SignedTreeHead: 1:tree_size uint64, 2:root_hash bytes, 3:signature bytes, 4:key_id bytes
        MerkleInclusionProof: 1:leaf_hash bytes, 2:leaf_index uint64, 3:tree_size uint64, 4:audit_path repeated bytes
        MerkleConsistencyProof: 1:old_tree_size uint64, 2:new_tree_size uint64, 3:path repeated bytes
        FetchCapsuleRequest: 1:claim_id bytes
        FetchCapsuleResponse: 1:capsule_bytes bytes, 2:capsule_hash bytes, 3:etl_index uint64, 4:signed_tree_head SignedTreeHead, 5:inclusion_proof MerkleInclusionProof, 6:consistency_proof MerkleConsistencyProof, 7:root_hash bytes, 8:tree_size uint64
        RevokeClaimRequest: 1:claim_id bytes, 2:reason string
        RevokeClaimResponse: 1:state ClaimState, 2:timestamp_unix uint64
        GrantCreditRequest: 1:principal_id string, 2:amount uint64, 3:reason string
        GrantCreditResponse: 1:credit_balance uint64
        SetCreditLimitRequest: 1:principal_id string, 2:limit uint64
        SetCreditLimitResponse: 1:credit_limit uint64
        HoldoutPoolBudgets: 1:holdout_id string, 2:scope string, 3:k_bits_budget optional double, 4:access_credit_budget optional double
        SetHoldoutPoolBudgetsRequest: 1:holdout_id string, 2:scope string, 3:new_k_bits_budget optional double, 4:new_access_credit_budget optional double
        SetHoldoutPoolBudgetsResponse: 1:budgets HoldoutPoolBudgets
        GetHoldoutPoolBudgetsRequest: 1:holdout_id string, 2:scope string
        GetHoldoutPoolBudgetsResponse: 1:budgets HoldoutPoolBudgets
        WatchRevocationsRequest:
        RevocationEntry: 1:claim_id bytes, 2:timestamp_unix uint64, 3:reason string
        WatchRevocationsResponse: 1:entries repeated RevocationEntry, 2:signature bytes, 3:signed_tree_head SignedTreeHead, 4:key_id bytes
    ";

    const CLAIM_STATE: [&str; 11] = [
        "CLAIM_STATE_UNSPECIFIED",
        "CLAIM_STATE_UNCOMMITTED",
        "CLAIM_STATE_COMMITTED",
        "CLAIM_STATE_SEALED",
        "CLAIM_STATE_EXECUTING",
        "CLAIM_STATE_SETTLED",
        "CLAIM_STATE_CERTIFIED",
        "CLAIM_STATE_REVOKED",
        "CLAIM_STATE_TAINTED",
        "CLAIM_STATE_STALE",
        "CLAIM_STATE_FROZEN",
    ];

    const DECISION: [&str; 4] = ["DECISION_UNSPECIFIED", "DECISION_APPROVE", "DECISION_REJECT", "DECISION_DEFER"];

    /// `(message, [(number, "name [optional|repeated] type")])` from [`MESSAGES`].
    fn spec_messages() -> Vec<(String, Vec<(i32, String)>)> {
        MESSAGES
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let (name, fields) = line.split_once(':').expect("`Name:` prefix");
                let fields = fields
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(|f| {
                        let (number, rest) = f.split_once(':').expect("`number:field`");
                        (number.parse().expect("field number"), rest.to_owned())
                    })
                    .collect();
                (name.to_owned(), fields)
            })
            .collect()
    }

    /// A descriptor field written the way [`MESSAGES`] writes it.
    fn spec_form(f: &FieldDescriptorProto, package: &str) -> String {
        let ty = match f.r#type() {
            Type::Message | Type::Enum => local_type_name(f.type_name(), package),
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Bool => "bool",
            Type::Double => "double",
            Type::Uint32 => "uint32",
            Type::Uint64 => "uint64",
            other => panic!("{}: type {other:?} is not used by the spec", f.name()),
        };
        let label = match (f.label(), f.proto3_optional()) {
            (Label::Repeated, false) => "repeated ",
            (Label::Optional, true) => "optional ",
            (Label::Optional, false) => "",
            other => panic!("{}: unexpected label {other:?}", f.name()),
        };
        format!("{} {label}{ty}", f.name())
    }

    #[test]
    fn rpc_names_in_order() {
        let fds = descriptor_set();
        let v2: Vec<String> = service(&file(&fds, V2)).method.iter().map(|m| m.name().to_owned()).collect();
        assert_eq!(v2, RPCS);
        for m in &service(&file(&fds, V2)).method {
            assert_eq!(local_type_name(m.input_type(), V2), format!("{}Request", m.name()));
            assert_eq!(local_type_name(m.output_type(), V2), format!("{}Response", m.name()));
        }
        let v1: Vec<String> = service(&file(&fds, V1)).method.iter().map(|m| m.name().to_owned()).collect();
        let expected: Vec<&str> = RPCS.into_iter().filter(|r| !V2_ONLY_RPCS.contains(r)).collect();
        assert_eq!(v1, expected);
    }

    #[test]
    fn every_message_matches_the_spec_in_both_packages() {
        let spec = spec_messages();
        assert_eq!(spec.len(), 57);
        let fds = descriptor_set();
        for package in [V1, V2] {
            let declared = messages(&file(&fds, package));
            assert_eq!(
                declared.keys().cloned().collect::<std::collections::BTreeSet<_>>(),
                spec.iter().map(|(n, _)| n.clone()).collect(),
                "{package}: message names"
            );
            for (name, fields) in &spec {
                let actual: Vec<(i32, String)> =
                    declared[name].field.iter().map(|f| (f.number(), spec_form(f, package))).collect();
                assert_eq!(&actual, fields, "{package}.{name}");
            }
        }
    }

    #[test]
    fn execute_claim_v2_response_has_fields_1_to_8() {
        let fds = descriptor_set();
        let m = &messages(&file(&fds, V2))["ExecuteClaimV2Response"];
        let fields: Vec<(i32, &str)> = m.field.iter().map(|f| (f.number(), f.name())).collect();
        assert_eq!(
            fields,
            [
                (1, "state"),
                (2, "decision"),
                (3, "reason_codes"),
                (4, "canonical_output"),
                (5, "e_value"),
                (6, "certified"),
                (7, "capsule_hash"),
                (8, "etl_index"),
            ]
        );
    }

    #[test]
    fn proto3_optional_doubles() {
        let fds = descriptor_set();
        let declared = messages(&file(&fds, V2));
        let optional = |msg: &str| -> Vec<(i32, &str)> {
            declared[msg]
                .field
                .iter()
                .filter(|f| f.proto3_optional())
                .inspect(|f| assert_eq!(f.r#type(), Type::Double, "{msg}.{}", f.name()))
                .map(|f| (f.number(), f.name()))
                .collect()
        };
        assert_eq!(optional("CreateClaimV2Request"), [(10, "dp_epsilon_budget"), (11, "dp_delta_budget")]);
        assert_eq!(optional("HoldoutPoolBudgets"), [(3, "k_bits_budget"), (4, "access_credit_budget")]);
        assert_eq!(
            optional("SetHoldoutPoolBudgetsRequest"),
            [(3, "new_k_bits_budget"), (4, "new_access_credit_budget")]
        );
        // No other message has presence-tracked scalars.
        let others = declared
            .iter()
            .filter(|(name, _)| {
                !["CreateClaimV2Request", "HoldoutPoolBudgets", "SetHoldoutPoolBudgetsRequest"].contains(&name.as_str())
            })
            .flat_map(|(_, m)| &m.field)
            .filter(|f| f.proto3_optional())
            .count();
        assert_eq!(others, 0);

        // And the Rust side sees them as Option<f64>.
        let req = evidenceos_grpc::v2::CreateClaimV2Request {
            dp_epsilon_budget: Some(1.0),
            dp_delta_budget: None,
            ..Default::default()
        };
        assert_eq!(req.dp_epsilon_budget, Some(1.0));
    }

    #[test]
    fn enum_values() {
        let fds = descriptor_set();
        for package in [V1, V2] {
            let declared = enums(&file(&fds, package));
            assert_eq!(declared.len(), 2, "{package}: ClaimState and Decision only");
            for (name, expected) in [("ClaimState", &CLAIM_STATE[..]), ("Decision", &DECISION[..])] {
                let values: Vec<(i32, &str)> = declared[name].value.iter().map(|v| (v.number(), v.name())).collect();
                let expected: Vec<(i32, &str)> = (0..).zip(expected.iter().copied()).collect();
                assert_eq!(values, expected, "{package}.{name}");
            }
        }
        assert_eq!(evidenceos_grpc::v2::ClaimState::Frozen.as_str_name(), "CLAIM_STATE_FROZEN");
        assert_eq!(evidenceos_grpc::v2::ClaimState::Frozen as i32, 10);
        assert_eq!(evidenceos_grpc::v2::Decision::Defer as i32, 3);
    }
}

#[cfg(feature = "server")]
mod shared_types {
    use evidenceos_grpc::{v1, v2};
    use tonic::codegen::tokio_stream;
    use tonic::{Code, Request, Response, Status};

    /// One implementation behind both packages.
    #[derive(Clone, Copy)]
    struct Daemon;

    impl Daemon {
        fn health(package: &str) -> v2::HealthResponse {
            v2::HealthResponse { status: format!("SERVING via {package}") }
        }

        fn revocations() -> Vec<Result<v2::WatchRevocationsResponse, Status>> {
            vec![Ok(v2::WatchRevocationsResponse {
                entries: vec![v2::RevocationEntry {
                    claim_id: vec![7],
                    timestamp_unix: 1_700_000_000,
                    reason: "test".into(),
                }],
                ..Default::default()
            })]
        }
    }

    type RevocationStream = tokio_stream::Iter<std::vec::IntoIter<Result<v2::WatchRevocationsResponse, Status>>>;

    /// Implements one package's `EvidenceOs` trait for [`Daemon`]: `health`
    /// and `watch_revocations` answer, the listed unary RPCs return
    /// `Unimplemented`. Every request/response type is a `v2` type.
    macro_rules! impl_evidence_os {
        ($package:literal, $server:path; $($method:ident($req:ident) -> $resp:ident;)*) => {
            #[tonic::async_trait]
            impl $server for Daemon {
                async fn health(
                    &self,
                    _request: Request<v2::HealthRequest>,
                ) -> Result<Response<v2::HealthResponse>, Status> {
                    Ok(Response::new(Daemon::health($package)))
                }

                type WatchRevocationsStream = RevocationStream;

                async fn watch_revocations(
                    &self,
                    _request: Request<v2::WatchRevocationsRequest>,
                ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
                    Ok(Response::new(tokio_stream::iter(Daemon::revocations())))
                }

                $(
                    async fn $method(
                        &self,
                        _request: Request<v2::$req>,
                    ) -> Result<Response<v2::$resp>, Status> {
                        Err(Status::unimplemented("x"))
                    }
                )*
            }
        };
    }

    impl_evidence_os!("v1", v1::evidence_os_server::EvidenceOs;
        get_server_info(GetServerInfoRequest) -> GetServerInfoResponse;
        create_claim(CreateClaimRequest) -> CreateClaimResponse;
        create_claim_v2(CreateClaimV2Request) -> CreateClaimV2Response;
        commit_artifacts(CommitArtifactsRequest) -> CommitArtifactsResponse;
        freeze(FreezeRequest) -> FreezeResponse;
        freeze_gates(FreezeGatesRequest) -> FreezeGatesResponse;
        seal(SealRequest) -> SealResponse;
        seal_claim(SealClaimRequest) -> SealClaimResponse;
        execute_claim(ExecuteClaimRequest) -> ExecuteClaimResponse;
        execute_claim_v2(ExecuteClaimV2Request) -> ExecuteClaimV2Response;
        get_capsule(GetCapsuleRequest) -> GetCapsuleResponse;
        get_public_key(GetPublicKeyRequest) -> GetPublicKeyResponse;
        get_signed_tree_head(GetSignedTreeHeadRequest) -> GetSignedTreeHeadResponse;
        get_inclusion_proof(GetInclusionProofRequest) -> GetInclusionProofResponse;
        get_consistency_proof(GetConsistencyProofRequest) -> GetConsistencyProofResponse;
        get_revocation_feed(GetRevocationFeedRequest) -> GetRevocationFeedResponse;
        fetch_capsule(FetchCapsuleRequest) -> FetchCapsuleResponse;
        revoke_claim(RevokeClaimRequest) -> RevokeClaimResponse;
        grant_credit(GrantCreditRequest) -> GrantCreditResponse;
        set_credit_limit(SetCreditLimitRequest) -> SetCreditLimitResponse;
    );

    impl_evidence_os!("v2", v2::evidence_os_server::EvidenceOs;
        get_server_info(GetServerInfoRequest) -> GetServerInfoResponse;
        create_claim(CreateClaimRequest) -> CreateClaimResponse;
        create_claim_v2(CreateClaimV2Request) -> CreateClaimV2Response;
        commit_artifacts(CommitArtifactsRequest) -> CommitArtifactsResponse;
        freeze(FreezeRequest) -> FreezeResponse;
        freeze_gates(FreezeGatesRequest) -> FreezeGatesResponse;
        seal(SealRequest) -> SealResponse;
        seal_claim(SealClaimRequest) -> SealClaimResponse;
        execute_claim(ExecuteClaimRequest) -> ExecuteClaimResponse;
        execute_claim_v2(ExecuteClaimV2Request) -> ExecuteClaimV2Response;
        get_capsule(GetCapsuleRequest) -> GetCapsuleResponse;
        get_public_key(GetPublicKeyRequest) -> GetPublicKeyResponse;
        get_signed_tree_head(GetSignedTreeHeadRequest) -> GetSignedTreeHeadResponse;
        get_inclusion_proof(GetInclusionProofRequest) -> GetInclusionProofResponse;
        get_consistency_proof(GetConsistencyProofRequest) -> GetConsistencyProofResponse;
        get_revocation_feed(GetRevocationFeedRequest) -> GetRevocationFeedResponse;
        fetch_capsule(FetchCapsuleRequest) -> FetchCapsuleResponse;
        revoke_claim(RevokeClaimRequest) -> RevokeClaimResponse;
        grant_credit(GrantCreditRequest) -> GrantCreditResponse;
        set_credit_limit(SetCreditLimitRequest) -> SetCreditLimitResponse;
        set_holdout_pool_budgets(SetHoldoutPoolBudgetsRequest) -> SetHoldoutPoolBudgetsResponse;
        get_holdout_pool_budgets(GetHoldoutPoolBudgetsRequest) -> GetHoldoutPoolBudgetsResponse;
    );

    #[test]
    fn service_names() {
        use tonic::server::NamedService;
        assert_eq!(v1::evidence_os_server::SERVICE_NAME, "evidenceos.v1.EvidenceOS");
        assert_eq!(v2::evidence_os_server::SERVICE_NAME, "evidenceos.v2.EvidenceOS");
        assert_eq!(
            <v1::evidence_os_server::EvidenceOsServer<Daemon> as NamedService>::NAME,
            "evidenceos.v1.EvidenceOS"
        );
        assert_eq!(
            <v2::evidence_os_server::EvidenceOsServer<Daemon> as NamedService>::NAME,
            "evidenceos.v2.EvidenceOS"
        );
    }

    /// The generated clients talk straight to the generated servers (no
    /// network): the v1 client reaches `/evidenceos.v1.EvidenceOS/*` on the v1
    /// server, with v2 types on both ends.
    #[tokio::test]
    async fn v1_client_and_server_use_v2_types() {
        let server = v1::evidence_os_server::EvidenceOsServer::new(Daemon);
        let mut client = v1::evidence_os_client::EvidenceOsClient::new(server);

        let health: v2::HealthResponse = client.health(v2::HealthRequest {}).await.expect("health").into_inner();
        assert_eq!(health.status, "SERVING via v1");

        let mut stream =
            client.watch_revocations(v2::WatchRevocationsRequest {}).await.expect("watch_revocations").into_inner();
        let first = stream.message().await.expect("stream item").expect("one item");
        assert_eq!(first.entries[0].claim_id, [7]);
        assert!(stream.message().await.expect("clean end").is_none());

        let err = client.grant_credit(v2::GrantCreditRequest::default()).await.expect_err("stubbed");
        assert_eq!(err.code(), Code::Unimplemented);
        assert_eq!(err.message(), "x");
    }

    #[tokio::test]
    async fn v2_client_and_server() {
        let server = v2::evidence_os_server::EvidenceOsServer::new(Daemon);
        let mut client = v2::evidence_os_client::EvidenceOsClient::new(server);
        let health = client.health(v2::HealthRequest {}).await.expect("health");
        assert_eq!(health.into_inner().status, "SERVING via v2");
        let err =
            client.get_holdout_pool_budgets(v2::GetHoldoutPoolBudgetsRequest::default()).await.expect_err("stubbed");
        assert_eq!((err.code(), err.message()), (Code::Unimplemented, "x"));
    }

    /// Paths are per package: a v2 client against a v1-only server gets the
    /// generated router's `Unimplemented` (empty message), not our handler.
    #[tokio::test]
    async fn packages_do_not_share_paths() {
        let v1_server = v1::evidence_os_server::EvidenceOsServer::new(Daemon);
        let mut v2_client = v2::evidence_os_client::EvidenceOsClient::new(v1_server);
        let err = v2_client
            .health(v2::HealthRequest {})
            .await
            .expect_err("no /evidenceos.v2.EvidenceOS/Health on a v1 server");
        assert_eq!((err.code(), err.message()), (Code::Unimplemented, ""));
    }
}

/// The embedded descriptor set is what gRPC server reflection serves.
#[cfg(feature = "server")]
mod reflection {
    use evidenceos_grpc::FILE_DESCRIPTOR_SET;
    use prost::Message as _;
    use tonic::codegen::tokio_stream;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    async fn ask(request: MessageRequest) -> MessageResponse {
        let service = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .include_reflection_service(false)
            .build_v1()
            .expect("reflection accepts the descriptor set");
        let mut client = ServerReflectionClient::new(service);
        let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
        let mut responses =
            client.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection call").into_inner();
        responses
            .message()
            .await
            .expect("reflection response")
            .expect("one response")
            .message_response
            .expect("response body")
    }

    #[tokio::test]
    async fn lists_both_services() {
        let MessageResponse::ListServicesResponse(list) = ask(MessageRequest::ListServices(String::new())).await else {
            panic!("expected a service list");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, ["evidenceos.v1.EvidenceOS", "evidenceos.v2.EvidenceOS"]);
    }

    #[tokio::test]
    async fn resolves_v1_symbols_to_the_v1_file() {
        let MessageResponse::FileDescriptorResponse(files) =
            ask(MessageRequest::FileContainingSymbol("evidenceos.v1.EvidenceOS.Health".into())).await
        else {
            panic!("expected a file descriptor");
        };
        let file = prost_types::FileDescriptorProto::decode(&files.file_descriptor_proto[0][..])
            .expect("file descriptor decodes");
        assert_eq!(file.name(), "evidenceos_v1.proto");
        assert_eq!(file.package(), "evidenceos.v1");
    }
}
