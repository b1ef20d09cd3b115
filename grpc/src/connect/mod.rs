//! The Connect protocol's unary form over HTTP/1.1, for the blocking runtime
//! (`evidenceosd --runtime sync`): `POST /<package>.EvidenceOS/<Method>` with an
//! `application/proto` or `application/json` body, errors as Connect error JSON; and
//! WatchRevocations as a Connect server stream (`watch`).
//!
//! `http` reads and writes HTTP/1.1 messages with explicit limits; `codec` turns bodies into
//! protobuf bytes and back (proto3 JSON mapping) and errors into Connect error JSON.

pub mod codec;
pub mod http;
pub mod server;
pub mod tls;
pub mod watch;
