//! WatchRevocations as a Connect server stream over HTTP/1.1: a 200 answer with
//! `Transfer-Encoding: chunked`, each chunk one Connect envelope (flag byte, be32 length,
//! message), the last an end-of-stream envelope (flag 0x02) and the zero chunk.
//!
//! Sans-IO: [`Watch`] only holds the bytes a subscriber has yet to be sent; the server writes them.

use evidenceos_core::request::RevocationFeed;
use evidenceos_core::{ErrorCode, KernelError};
use prost::Message;

use super::codec::{self, Codec, Codecs};
use crate::mapping;

/// Bytes a subscriber may leave unread before it is told `resource_exhausted` and closed.
pub const MAX_PENDING_BYTES: usize = 1 << 20;

const END_STREAM: u8 = 0x02;

/// The package of `/<package>.EvidenceOS/WatchRevocations`, if `path` is that procedure.
pub fn package_of(path: &str) -> Option<&'static str> {
    ["evidenceos.v2", "evidenceos.v1"].into_iter().find(|package| {
        path.strip_prefix('/')
            .and_then(|rest| rest.strip_prefix(package))
            .is_some_and(|rest| rest == ".EvidenceOS/WatchRevocations")
    })
}

/// The codec of a Connect streaming request `Content-Type` (`application/connect+proto` or
/// `application/connect+json`), else `InvalidArgument`.
pub fn stream_codec_for(content_type: Option<&str>) -> Result<Codec, KernelError> {
    let media_type = content_type.and_then(|c| c.split(';').next()).unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/connect+proto") {
        Ok(Codec::Proto)
    } else if media_type.eq_ignore_ascii_case("application/connect+json") {
        Ok(Codec::Json)
    } else {
        Err(KernelError::invalid_argument(format!(
            "unsupported content type {content_type:?} for a stream: send application/connect+proto or application/connect+json"
        )))
    }
}

/// The request body must be one uncompressed envelope (WatchRevocationsRequest has no fields).
pub fn check_request(body: &[u8]) -> Result<(), KernelError> {
    let malformed = || KernelError::invalid_argument("the stream request is not one uncompressed Connect envelope");
    let (&flags, rest) = body.split_first().ok_or_else(malformed)?;
    let (length, message) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
    if flags != 0 || u32::from_be_bytes(*length) as usize != message.len() {
        return Err(malformed());
    }
    Ok(())
}

/// The response head: the stream's content type, chunked, and no keep-alive after it.
pub fn response_head(codec: Codec) -> Vec<u8> {
    let content_type = match codec {
        Codec::Proto => "application/connect+proto",
        Codec::Json => "application/connect+json",
    };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// One open subscription: what is still to be written to it.
#[derive(Debug)]
pub struct Watch {
    codec: Codec,
    pending: Vec<u8>,
    ended: bool,
}

impl Watch {
    /// A subscription whose response head is the first thing to send.
    pub fn new(codec: Codec) -> Self {
        Self { codec, pending: response_head(codec), ended: false }
    }

    /// Queues one revocation, mapped as the gRPC runtime maps it; past [`MAX_PENDING_BYTES`]
    /// the stream ends with `resource_exhausted` instead (never skipped silently, SPEC §3).
    pub fn push(&mut self, codecs: &Codecs, feed: &RevocationFeed) {
        if self.ended {
            return;
        }
        let proto = mapping::watch_message(feed).encode_to_vec();
        let message = match codecs.watch_response_from_proto(self.codec, &proto) {
            Ok(message) => message,
            Err(error) => return self.end(&error),
        };
        if self.pending.len() + message.len() > MAX_PENDING_BYTES {
            let message = "subscriber fell behind; reconnect and read GetRevocationFeed";
            return self.end(&KernelError::new(ErrorCode::ResourceExhausted, message));
        }
        self.push_envelope(0, &message);
    }

    /// Queues the end-of-stream envelope carrying `error` and the last chunk.
    pub fn end(&mut self, error: &KernelError) {
        if self.ended {
            return;
        }
        self.push_envelope(END_STREAM, &codec::end_stream_error(error));
        self.pending.extend_from_slice(b"0\r\n\r\n");
        self.ended = true;
    }

    fn push_envelope(&mut self, flags: u8, message: &[u8]) {
        let length = u32::try_from(message.len()).expect("a message under MAX_PENDING_BYTES");
        self.pending.extend_from_slice(format!("{:x}\r\n", 5 + message.len()).as_bytes());
        self.pending.push(flags);
        self.pending.extend_from_slice(&length.to_be_bytes());
        self.pending.extend_from_slice(message);
        self.pending.extend_from_slice(b"\r\n");
    }

    /// The bytes not yet written.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// `written` bytes of [`Self::pending`] reached the socket.
    pub fn written(&mut self, written: usize) {
        self.pending.drain(..written);
    }

    /// Ended and everything written: the connection can close.
    pub fn finished(&self) -> bool {
        self.ended && self.pending.is_empty()
    }

    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evidenceos_core::SignedTreeHead;
    use evidenceos_core::keys::KeyId;
    use evidenceos_core::request::RevocationEntry;

    fn feed() -> RevocationFeed {
        let entry = RevocationEntry { capsule_hash: [7; 32], timestamp_unix: 1, reason: "test".into() };
        let sth = SignedTreeHead { tree_size: 2, root_hash: [1; 32], key_id: KeyId([2; 32]), signature: [3; 64] };
        RevocationFeed { entries: vec![entry], sth, signature: [4; 64] }
    }

    #[test]
    fn a_revocation_is_one_chunk_holding_one_envelope_of_the_grpc_message() {
        let mut watch = Watch::new(Codec::Proto);
        assert!(watch.pending().starts_with(b"HTTP/1.1 200 OK\r\n"));
        let head = watch.pending().len();
        watch.written(head);
        watch.push(Codecs::shared(), &feed());
        let message = mapping::watch_message(&feed()).encode_to_vec();
        let mut expected = format!("{:x}\r\n", message.len() + 5).into_bytes();
        expected.push(0);
        expected.extend_from_slice(&(message.len() as u32).to_be_bytes());
        expected.extend_from_slice(&message);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(watch.pending(), &expected[..]);
        assert!(!watch.ended());
    }

    #[test]
    fn paths_content_types_and_request_envelopes() {
        assert_eq!(package_of("/evidenceos.v2.EvidenceOS/WatchRevocations"), Some("evidenceos.v2"));
        assert_eq!(package_of("/evidenceos.v1.EvidenceOS/WatchRevocations"), Some("evidenceos.v1"));
        assert_eq!(package_of("/evidenceos.v2.EvidenceOS/Health"), None);
        assert_eq!(stream_codec_for(Some("application/connect+json")).unwrap(), Codec::Json);
        assert_eq!(stream_codec_for(Some("Application/Connect+Proto")).unwrap(), Codec::Proto);
        assert!(stream_codec_for(Some("application/json")).is_err());
        assert!(check_request(&[0, 0, 0, 0, 0]).is_ok());
        assert!(check_request(&[0, 0, 0, 0, 2, b'{', b'}']).is_ok());
        for bad in [&[][..], &[0, 0, 0][..], &[1, 0, 0, 0, 0][..], &[0, 0, 0, 0, 3, 1][..]] {
            assert!(check_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_subscriber_past_the_cap_gets_resource_exhausted_and_nothing_after() {
        let mut watch = Watch::new(Codec::Json);
        let head = watch.pending().len();
        watch.written(head);
        // The connection is never written to: its pending bytes only grow.
        let error = KernelError::invalid_argument("x".repeat(MAX_PENDING_BYTES / 4));
        let feed_bytes = codec::end_stream_error(&error);
        for _ in 0..4 {
            assert!(!watch.ended());
            watch.push_envelope(0, &feed_bytes);
        }
        watch.push(Codecs::shared(), &feed());
        assert!(watch.ended(), "past the cap the stream ends");
        let pending = watch.pending().to_vec();
        let tail = String::from_utf8_lossy(&pending[pending.len() - 200..]);
        assert!(tail.contains(r#"{"error":{"code":"resource_exhausted""#), "{tail}");
        assert!(pending.ends_with(b"}\r\n0\r\n\r\n"), "the end-of-stream envelope, then the last chunk");
        watch.push(Codecs::shared(), &feed());
        assert_eq!(watch.pending(), &pending[..], "nothing after the end");
        watch.written(pending.len());
        assert!(watch.finished());
    }
}
