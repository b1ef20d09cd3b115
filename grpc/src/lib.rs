//! The EvidenceOS wire protocol (SPEC §1): generated protobuf types for `evidenceos.v2` and
//! `evidenceos.v1`, the mapping between them and the kernel's types, and (feature `server`) the
//! tonic services that serve both packages plus `grpc.health.v1` and server reflection.
#![forbid(unsafe_code)]

/// Package `evidenceos.v2`: every message and enum, plus the v2 service.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod v2 {
    include!(concat!(env!("OUT_DIR"), "/evidenceos.v2.rs"));
}

/// Package `evidenceos.v1`: the legacy service over the [`v2`] message types (identical on the wire).
/// It holds only the service, so without the `server` feature nothing is generated for it.
#[cfg(feature = "server")]
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/evidenceos.v1.rs"));
}

/// Encoded `FileDescriptorSet` of both proto files, for server reflection and `proto_hash`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/evidenceos_descriptor.bin"));

/// Protocol version this daemon speaks (SPEC §1).
pub const PROTOCOL_SEMVER: &str = "2.1.0";

/// Largest request message accepted by default (SPEC §2.5), on either transport.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

pub mod access_log;
pub mod auth;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod connection_limits;
pub mod mapping;
pub mod rpc;
pub mod tls;

#[cfg(feature = "connect")]
pub mod connect;

#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
