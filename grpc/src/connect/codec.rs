//! Connect unary bodies and errors: `application/proto` and `application/json` (the proto3 JSON
//! mapping, via the embedded descriptor set) to and from protobuf bytes, and kernel errors to
//! Connect error JSON with the protocol's HTTP status.

use std::sync::OnceLock;

use evidenceos_core::{ErrorCode, KernelError};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::rpc::Method;

/// Content type of every Connect error body.
pub const ERROR_CONTENT_TYPE: &str = "application/json";

/// The packages served, each with service `<package>.EvidenceOS`.
const PACKAGES: [&str; 2] = ["evidenceos.v2", "evidenceos.v1"];

/// A unary body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

impl Codec {
    /// The content type of requests and responses in this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Proto => "application/proto",
            Self::Json => "application/json",
        }
    }
}

/// The codec of a request `Content-Type`: `application/proto` or `application/json` (any case),
/// with optional parameters; a `charset` parameter must be `utf-8` (and is meant for JSON).
/// Anything else, or no content type, is an `InvalidArgument` error listing what is accepted;
/// the server answers it with HTTP 415.
pub fn codec_for(content_type: Option<&str>) -> Result<Codec, KernelError> {
    let unsupported = |what: String| {
        KernelError::invalid_argument(format!(
            "unsupported content type {what}: send application/proto or application/json (charset utf-8)"
        ))
    };
    let Some(content_type) = content_type else { return Err(unsupported("(none given)".to_string())) };
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    let codec = if media_type.eq_ignore_ascii_case("application/proto") {
        Codec::Proto
    } else if media_type.eq_ignore_ascii_case("application/json") {
        Codec::Json
    } else {
        return Err(unsupported(format!("{content_type:?}")));
    };
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !(value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")) {
                return Err(unsupported(format!("{content_type:?}")));
            }
        }
    }
    Ok(codec)
}

/// The request and response message descriptors of one RPC.
#[derive(Debug, Clone)]
struct Rpc {
    package: &'static str,
    method: Method,
    request: MessageDescriptor,
    response: MessageDescriptor,
}

/// Request/response message descriptors per (package, method), from [`crate::FILE_DESCRIPTOR_SET`],
/// built once.
#[derive(Debug)]
pub struct Codecs {
    rpcs: Vec<Rpc>,
    /// WatchRevocationsResponse: the one streamed message (same type in both packages).
    watch_response: MessageDescriptor,
}

impl Default for Codecs {
    fn default() -> Self {
        Self::new()
    }
}

impl Codecs {
    /// Resolves every [`Method`] of both packages (v1 has no pool RPCs). Panics only if the
    /// embedded descriptor set is broken; it is built by build.rs, and a test proves it whole.
    pub fn new() -> Self {
        let pool = DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the embedded FILE_DESCRIPTOR_SET decodes (built by build.rs)");
        let mut rpcs = Vec::new();
        for package in PACKAGES {
            let service = pool
                .get_service_by_name(&format!("{package}.EvidenceOS"))
                .unwrap_or_else(|| panic!("the embedded descriptor set has service {package}.EvidenceOS"));
            for method in Method::ALL {
                if let Some(descriptor) = service.methods().find(|m| m.name() == method.name()) {
                    rpcs.push(Rpc { package, method, request: descriptor.input(), response: descriptor.output() });
                }
            }
        }
        let watch_response = pool
            .get_message_by_name("evidenceos.v2.WatchRevocationsResponse")
            .expect("the embedded descriptor set has evidenceos.v2.WatchRevocationsResponse");
        Self { rpcs, watch_response }
    }

    /// One process-wide instance, built on first use.
    pub fn shared() -> &'static Codecs {
        static SHARED: OnceLock<Codecs> = OnceLock::new();
        SHARED.get_or_init(Codecs::new)
    }

    fn rpc(&self, package: &str, method: Method) -> Result<&Rpc, KernelError> {
        self.rpcs
            .iter()
            .find(|rpc| rpc.package == package && rpc.method == method)
            .ok_or_else(|| KernelError::not_found(format!("no procedure /{package}.EvidenceOS/{}", method.name())))
    }

    /// The request message descriptor of `/<package>.EvidenceOS/<method>`, if that RPC exists.
    pub fn request_descriptor(&self, package: &str, method: Method) -> Option<&MessageDescriptor> {
        self.rpc(package, method).ok().map(|rpc| &rpc.request)
    }

    /// The response message descriptor of `/<package>.EvidenceOS/<method>`, if that RPC exists.
    pub fn response_descriptor(&self, package: &str, method: Method) -> Option<&MessageDescriptor> {
        self.rpc(package, method).ok().map(|rpc| &rpc.response)
    }

    /// Protobuf bytes of the request.
    ///
    /// * Proto: checked to decode as the method's request type and returned unchanged (unknown
    ///   fields included; the prost decode that follows ignores them, as gRPC does).
    /// * Json: the proto3 JSON mapping into the method's request type, then encoded: unknown
    ///   fields refused, lowerCamelCase JSON names and original field names both accepted, bytes
    ///   as base64, 64-bit integers as strings or numbers, `null` as the default. An empty body
    ///   is not JSON (send `{}`).
    ///
    /// Errors are `InvalidArgument` saying what was wrong (`NotFound` for an RPC that does not
    /// exist in `package`, which [`Method::from_path`] already rules out).
    pub fn request_to_proto(
        &self,
        package: &str,
        method: Method,
        codec: Codec,
        body: &[u8],
    ) -> Result<Vec<u8>, KernelError> {
        let descriptor = &self.rpc(package, method)?.request;
        match codec {
            Codec::Proto => {
                DynamicMessage::decode(descriptor.clone(), body).map_err(|e| {
                    KernelError::invalid_argument(format!(
                        "request body is not a protobuf {}: {e}",
                        descriptor.full_name()
                    ))
                })?;
                Ok(body.to_vec())
            }
            Codec::Json => {
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Err(KernelError::invalid_argument(format!(
                        "empty JSON request body: send {{}} for an empty {}",
                        descriptor.full_name()
                    )));
                }
                let invalid = |e: serde_json::Error| {
                    KernelError::invalid_argument(format!("invalid JSON for {}: {e}", descriptor.full_name()))
                };
                let mut deserializer = serde_json::Deserializer::from_slice(body);
                let message = DynamicMessage::deserialize_with_options(
                    descriptor.clone(),
                    &mut deserializer,
                    &DeserializeOptions::new(),
                )
                .map_err(invalid)?;
                deserializer.end().map_err(invalid)?;
                Ok(message.encode_to_vec())
            }
        }
    }

    /// The response body in `codec`. Proto: the bytes as they are (the server encoded them).
    /// Json: the proto3 JSON of the method's response type with the mapping's default options:
    /// fields with default values omitted, lowerCamelCase names, bytes as base64, 64-bit integers
    /// as strings, enums by name. Bytes that do not decode as the response type are `Internal`.
    pub fn response_from_proto(
        &self,
        package: &str,
        method: Method,
        codec: Codec,
        proto: &[u8],
    ) -> Result<Vec<u8>, KernelError> {
        encode_response(&self.rpc(package, method)?.response, codec, proto)
    }

    /// One streamed WatchRevocationsResponse in `codec`, as [`Self::response_from_proto`] does.
    pub fn watch_response_from_proto(&self, codec: Codec, proto: &[u8]) -> Result<Vec<u8>, KernelError> {
        encode_response(&self.watch_response, codec, proto)
    }
}

fn encode_response(descriptor: &MessageDescriptor, codec: Codec, proto: &[u8]) -> Result<Vec<u8>, KernelError> {
    match codec {
        Codec::Proto => Ok(proto.to_vec()),
        Codec::Json => {
            let internal = |what: String| {
                KernelError::new(
                    ErrorCode::Internal,
                    format!("response {} could not be written as JSON: {what}", descriptor.full_name()),
                )
            };
            let message = DynamicMessage::decode(descriptor.clone(), proto).map_err(|e| internal(e.to_string()))?;
            let mut serializer = serde_json::Serializer::new(Vec::new());
            message
                .serialize_with_options(&mut serializer, &SerializeOptions::new())
                .map_err(|e| internal(e.to_string()))?;
            Ok(serializer.into_inner())
        }
    }
}

/// The Connect protocol's name of a kernel error code.
pub fn connect_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidArgument => "invalid_argument",
        ErrorCode::NotFound => "not_found",
        ErrorCode::FailedPrecondition => "failed_precondition",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::PermissionDenied => "permission_denied",
        ErrorCode::ResourceExhausted => "resource_exhausted",
        ErrorCode::Aborted => "aborted",
        ErrorCode::AlreadyExists => "already_exists",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
    }
}

/// The HTTP status the Connect protocol gives a kernel error code.
pub fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition => 400,
        ErrorCode::Unauthenticated => 401,
        ErrorCode::PermissionDenied => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::Aborted | ErrorCode::AlreadyExists => 409,
        ErrorCode::ResourceExhausted => 429,
        ErrorCode::Internal => 500,
        ErrorCode::Unavailable => 503,
    }
}

/// The Connect error body `{"code":"...","message":"..."}`, JSON-escaped by serde_json.
fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "code": code, "message": message }))
        .expect("a JSON object of two strings serializes")
}

/// A Connect streaming end-of-stream message carrying `error`: `{"error":{"code":..,"message":..}}`.
pub fn end_stream_error(error: &KernelError) -> Vec<u8> {
    let body = serde_json::json!({ "error": { "code": connect_code_name(error.code), "message": error.message } });
    serde_json::to_vec(&body).expect("a JSON object of strings serializes")
}

/// The Connect error of a kernel error: its HTTP status and JSON body (content type
/// [`ERROR_CONTENT_TYPE`]).
pub fn error_response(error: &KernelError) -> (u16, Vec<u8>) {
    (http_status(error.code), error_body(connect_code_name(error.code), &error.message))
}

/// The Connect error for a call whose `Connect-Timeout-Ms` ran out before it reached the kernel:
/// HTTP 504, code `deadline_exceeded` (a code of the transport, not of the kernel, which never
/// sees such a call).
pub fn deadline_exceeded(timeout_ms: u64) -> (u16, Vec<u8>) {
    let message = format!("the call's deadline of {timeout_ms} ms passed before it was executed");
    (504, error_body("deadline_exceeded", &message))
}

/// The Connect error for a path that names no procedure: HTTP 404 with code `unimplemented`.
/// The path is echoed (cut to 200 characters).
pub fn unknown_procedure(path: &str) -> (u16, Vec<u8>) {
    let shown: String = path.chars().take(200).collect();
    let ellipsis = if shown.len() < path.len() { "…" } else { "" };
    (404, error_body("unimplemented", &format!("unknown procedure {shown}{ellipsis}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2;

    fn codecs() -> &'static Codecs {
        Codecs::shared()
    }

    fn json_request(method: Method, json: &str) -> Result<Vec<u8>, KernelError> {
        codecs().request_to_proto("evidenceos.v2", method, Codec::Json, json.as_bytes())
    }

    #[test]
    fn every_method_has_descriptors() {
        let codecs = Codecs::new();
        for method in Method::ALL {
            let request = codecs.request_descriptor("evidenceos.v2", method).expect("v2 request");
            let response = codecs.response_descriptor("evidenceos.v2", method).expect("v2 response");
            assert_eq!(request.package_name(), "evidenceos.v2");
            assert_eq!(response.package_name(), "evidenceos.v2");
            let pool_rpc = matches!(method, Method::SetHoldoutPoolBudgets | Method::GetHoldoutPoolBudgets);
            let v1 = codecs.request_descriptor("evidenceos.v1", method);
            assert_eq!(v1.is_none(), pool_rpc, "{method:?} in evidenceos.v1");
            assert_eq!(codecs.response_descriptor("evidenceos.v1", method).is_none(), pool_rpc);
            // The path resolution agrees with the descriptor set.
            for package in PACKAGES {
                let path = format!("/{package}.EvidenceOS/{}", method.name());
                assert_eq!(
                    Method::from_path(&path).is_some(),
                    codecs.request_descriptor(package, method).is_some(),
                    "{path}"
                );
            }
        }
        assert!(codecs.request_descriptor("evidenceos.v3", Method::Health).is_none());
        let error = codecs.request_to_proto("evidenceos.v1", Method::GetHoldoutPoolBudgets, Codec::Proto, b"");
        assert_eq!(error.unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn json_create_claim_v2_encodes_like_prost() {
        let expected = v2::CreateClaimV2Request {
            claim_name: "claim \"one\"".to_string(),
            metadata: Some(v2::ClaimMetadataV2 {
                lane: "fast".to_string(),
                alpha_micros: 50_000,
                epoch_config_ref: "epoch/1".to_string(),
                output_schema_id: "schema/v1".to_string(),
            }),
            signals: Some(v2::TopicSignalsV2 {
                semantic_hash: vec![1; 32],
                phys_hir_signature_hash: vec![2; 32],
                dependency_merkle_root: vec![0xff, 0xfe, 0x00],
            }),
            holdout_ref: "holdout-a".to_string(),
            epoch_size: 5,
            oracle_num_symbols: 4,
            access_credit: 1_000_000_000_000,
            oracle_id: "oracle".to_string(),
            nullspec_id: "nullspec".to_string(),
            dp_epsilon_budget: Some(0.5),
            dp_delta_budget: Some(0.0),
        }
        .encode_to_vec();
        let b64_1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let b64_2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
        // lowerCamelCase names, 64-bit integers as strings.
        let camel = format!(
            r#"{{"claimName":"claim \"one\"","metadata":{{"lane":"fast","alphaMicros":50000,
            "epochConfigRef":"epoch/1","outputSchemaId":"schema/v1"}},"signals":{{"semanticHash":"{b64_1}",
            "physHirSignatureHash":"{b64_2}","dependencyMerkleRoot":"//4A"}},"holdoutRef":"holdout-a",
            "epochSize":"5","oracleNumSymbols":4,"accessCredit":"1000000000000","oracleId":"oracle",
            "nullspecId":"nullspec","dpEpsilonBudget":0.5,"dpDeltaBudget":0}}"#
        );
        assert_eq!(json_request(Method::CreateClaimV2, &camel).unwrap(), expected);
        // Original field names, 64-bit integers as numbers, URL-safe base64 accepted too.
        let snake = format!(
            r#"{{"claim_name":"claim \"one\"","metadata":{{"lane":"fast","alpha_micros":50000,
            "epoch_config_ref":"epoch/1","output_schema_id":"schema/v1"}},"signals":{{"semantic_hash":"{b64_1}",
            "phys_hir_signature_hash":"{b64_2}","dependency_merkle_root":"__4A"}},"holdout_ref":"holdout-a",
            "epoch_size":5,"oracle_num_symbols":4,"access_credit":1000000000000,"oracle_id":"oracle",
            "nullspec_id":"nullspec","dp_epsilon_budget":0.5,"dp_delta_budget":0.0}}"#
        );
        assert_eq!(json_request(Method::CreateClaimV2, &snake).unwrap(), expected);
    }

    #[test]
    fn json_execute_claim_v2_and_inclusion_proof_encode_like_prost() {
        let expected = v2::ExecuteClaimV2Request { claim_id: vec![0xde, 0xad, 0xbe, 0xef] }.encode_to_vec();
        assert_eq!(json_request(Method::ExecuteClaimV2, r#"{"claimId":"3q2+7w=="}"#).unwrap(), expected);
        assert_eq!(json_request(Method::ExecuteClaimV2, r#"{"claim_id":"3q2+7w=="}"#).unwrap(), expected);

        let expected = v2::GetInclusionProofRequest { leaf_index: 5 }.encode_to_vec();
        assert_eq!(json_request(Method::GetInclusionProof, r#"{"leafIndex":"5"}"#).unwrap(), expected);
        assert_eq!(json_request(Method::GetInclusionProof, r#"{"leafIndex":5}"#).unwrap(), expected);
        assert_eq!(json_request(Method::GetInclusionProof, r#" {"leaf_index": 5} "#).unwrap(), expected);
        let max = v2::GetInclusionProofRequest { leaf_index: u64::MAX }.encode_to_vec();
        assert_eq!(json_request(Method::GetInclusionProof, r#"{"leafIndex":"18446744073709551615"}"#).unwrap(), max);

        // Defaults and nulls encode to nothing, as prost does.
        for empty in ["{}", r#"{"leafIndex":"0"}"#, r#"{"leafIndex":null}"#] {
            assert_eq!(json_request(Method::GetInclusionProof, empty).unwrap(), Vec::<u8>::new(), "{empty}");
        }
        // v1 uses the same messages.
        let v1 =
            codecs().request_to_proto("evidenceos.v1", Method::GetInclusionProof, Codec::Json, br#"{"leafIndex":5}"#);
        assert_eq!(v1.unwrap(), expected);
    }

    #[test]
    fn proto_requests_are_checked_and_passed_through() {
        let body = v2::GetInclusionProofRequest { leaf_index: 7 }.encode_to_vec();
        let out = codecs().request_to_proto("evidenceos.v2", Method::GetInclusionProof, Codec::Proto, &body).unwrap();
        assert_eq!(out, body);
        // Field 1 with a length-delimited wire type where a varint is declared.
        let error = codecs()
            .request_to_proto("evidenceos.v2", Method::GetInclusionProof, Codec::Proto, &[0x0a, 0x05, 1])
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(error.message.contains("evidenceos.v2.GetInclusionProofRequest"), "{}", error.message);
    }

    #[test]
    fn bad_json_is_invalid_argument() {
        let cases = [
            (Method::GetInclusionProof, r#"{"leafIndex":5,"extra":1}"#, "extra"),
            (Method::GetInclusionProof, r#"{"leafIndex":5"#, "EOF"),
            (Method::GetInclusionProof, r#"{"leafIndex":5} trailing"#, "trailing"),
            (Method::GetInclusionProof, r#"{"leafIndex":"five"}"#, "five"),
            (Method::GetInclusionProof, r#"{"leafIndex":-1}"#, "-1"),
            (Method::GetInclusionProof, "[]", "sequence"),
            (Method::GetInclusionProof, "", "empty"),
            (Method::ExecuteClaimV2, r#"{"claimId":"not base64!"}"#, "claimId"),
            (Method::CreateClaimV2, r#"{"metadata":{"alphaMicros":"x"}}"#, "x"),
        ];
        for (method, json, _) in cases {
            let error = json_request(method, json).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{json}");
            assert!(!error.message.is_empty());
        }
        let error = json_request(Method::GetInclusionProof, r#"{"leafIndex":5,"bogusField":1}"#).unwrap_err();
        assert!(error.message.contains("bogusField"), "{}", error.message);
        assert!(error.message.contains("evidenceos.v2.GetInclusionProofRequest"), "{}", error.message);
    }

    /// JSON of a response parsed back through the response descriptor, as a client would.
    fn json_back_to_proto(method: Method, json: &[u8]) -> Vec<u8> {
        let descriptor = codecs().response_descriptor("evidenceos.v2", method).unwrap().clone();
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let message =
            DynamicMessage::deserialize_with_options(descriptor, &mut deserializer, &DeserializeOptions::new())
                .unwrap();
        deserializer.end().unwrap();
        message.encode_to_vec()
    }

    #[test]
    fn json_responses_round_trip() {
        let response = v2::GetInclusionProofResponse {
            leaf_hash: vec![7; 32],
            sibling_hashes: vec![vec![1; 32], vec![2; 32]],
            root_hash: vec![0xfb, 0xff],
            tree_size: 5,
        };
        let proto = response.encode_to_vec();
        let json =
            codecs().response_from_proto("evidenceos.v2", Method::GetInclusionProof, Codec::Json, &proto).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["treeSize"], "5", "int64 as a string: {value}");
        assert_eq!(value["rootHash"], "+/8=", "bytes as standard base64: {value}");
        assert_eq!(value["siblingHashes"].as_array().unwrap().len(), 2);
        let back =
            v2::GetInclusionProofResponse::decode(json_back_to_proto(Method::GetInclusionProof, &json).as_slice());
        assert_eq!(back.unwrap(), response);

        let response = v2::ExecuteClaimV2Response {
            state: 3,
            decision: 1,
            reason_codes: vec![4, 9],
            canonical_output: b"{\"ok\":true}".to_vec(),
            e_value: 12.5,
            certified: true,
            capsule_hash: vec![9; 32],
            etl_index: 0,
        };
        let proto = response.encode_to_vec();
        let json = codecs().response_from_proto("evidenceos.v2", Method::ExecuteClaimV2, Codec::Json, &proto).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(value.get("etlIndex").is_none(), "default fields omitted: {value}");
        assert_eq!(value["eValue"], 12.5);
        assert!(value["state"].is_string(), "enums by name: {value}");
        let back = v2::ExecuteClaimV2Response::decode(json_back_to_proto(Method::ExecuteClaimV2, &json).as_slice());
        assert_eq!(back.unwrap(), response);

        // An empty message is `{}`; proto passes through untouched.
        let empty = codecs().response_from_proto("evidenceos.v2", Method::GetRevocationFeed, Codec::Json, &[]).unwrap();
        assert_eq!(empty, b"{}");
        let out = codecs().response_from_proto("evidenceos.v2", Method::Health, Codec::Proto, &[1, 2, 3]).unwrap();
        assert_eq!(out, [1, 2, 3]);
        let error = codecs().response_from_proto("evidenceos.v2", Method::Health, Codec::Json, &[0x0a, 0x05]);
        assert_eq!(error.unwrap_err().code, ErrorCode::Internal);
    }

    #[test]
    fn content_types() {
        let accepted = [
            ("application/proto", Codec::Proto),
            ("Application/Proto", Codec::Proto),
            ("application/json", Codec::Json),
            ("application/json; charset=utf-8", Codec::Json),
            ("application/json;charset=\"UTF-8\"", Codec::Json),
            (" application/json ", Codec::Json),
        ];
        for (content_type, codec) in accepted {
            assert_eq!(codec_for(Some(content_type)).unwrap(), codec, "{content_type}");
        }
        for refused in [
            None,
            Some(""),
            Some("text/plain"),
            Some("application/grpc"),
            Some("application/connect+proto"),
            Some("application/json; charset=latin1"),
            Some("application/protobuf"),
        ] {
            let error = codec_for(refused).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{refused:?}");
            assert!(error.message.contains("application/proto"), "{}", error.message);
            assert!(error.message.contains("application/json"), "{}", error.message);
        }
        assert_eq!(Codec::Proto.content_type(), "application/proto");
        assert_eq!(Codec::Json.content_type(), "application/json");
    }

    #[test]
    fn error_json_is_escaped() {
        let error = KernelError::invalid_argument("bad \"field\"\nline two \\ \u{1}");
        let (status, body) = error_response(&error);
        assert_eq!(status, 400);
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains(r#"\"field\"\nline two \\ \u0001"#), "{text}");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value, serde_json::json!({ "code": "invalid_argument", "message": error.message }));

        let (status, body) = unknown_procedure("/evidenceos.v2.EvidenceOS/\"Nope\"");
        assert_eq!(status, 404);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["code"], "unimplemented");
        assert_eq!(value["message"], "unknown procedure /evidenceos.v2.EvidenceOS/\"Nope\"");
        let (_, body) = unknown_procedure(&"/x".repeat(1000));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(value["message"].as_str().unwrap().chars().count() < 250);
    }

    #[test]
    fn status_mapping() {
        let codes = [
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::FailedPrecondition,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::ResourceExhausted,
            ErrorCode::Aborted,
            ErrorCode::AlreadyExists,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        let table: String = codes
            .iter()
            .map(|&code| {
                let (status, body) = error_response(&KernelError::new(code, "m"));
                assert_eq!(status, http_status(code));
                format!("{code:?} -> {} {status} {}\n", connect_code_name(code), String::from_utf8(body).unwrap())
            })
            .collect();
        insta::assert_snapshot!(table);
    }
}
