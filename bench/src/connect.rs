//! Connect unary over HTTP/1.1 (what `evidenceosd --runtime sync` serves): protobuf bodies, one
//! keep-alive connection per client, one request in flight on it at a time.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use evidenceos_grpc::client::{HmacSigner, fresh_request_id, unix_now};

use crate::transport::{ID_PREFIX, RpcError};

/// Largest response head accepted (status line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest response body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ConnectConnection {
    /// `host:port`
    authority: String,
    /// Bearer token and `--header`s, sent with every request.
    headers: Vec<(String, String)>,
    /// Signs every request when an HMAC key is configured (SPEC §2.3).
    signer: Option<Arc<HmacSigner>>,
    timeout: Duration,
    stream: Arc<Mutex<BufReader<TcpStream>>>,
}

impl ConnectConnection {
    pub async fn connect(
        authority: &str,
        headers: &[(String, String)],
        signer: Option<Arc<HmacSigner>>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(authority))
            .await
            .map_err(|_| format!("cannot connect to {authority}: timed out"))?
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("{authority}: {e}"))?;
        Ok(Self {
            authority: authority.to_string(),
            headers: headers.to_vec(),
            signer,
            timeout,
            stream: Arc::new(Mutex::new(BufReader::new(tcp))),
        })
    }

    /// POST `/evidenceos.v2.EvidenceOS/<method>` with an `application/proto` body.
    pub async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        message: &Req,
        request_id: Option<&str>,
    ) -> Result<Resp, RpcError> {
        let body = message.encode_to_vec();
        let path = format!("/evidenceos.v2.EvidenceOS/{method}");
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/proto\r\nConnect-Protocol-Version: 1\r\nContent-Length: {}\r\n",
            self.authority,
            body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        // A signed request needs an id even where the method does not (SPEC §2.3).
        let request_id = match (request_id, &self.signer) {
            (Some(id), _) => Some(id.to_string()),
            (None, Some(_)) => Some(fresh_request_id(ID_PREFIX)),
            (None, None) => None,
        };
        if let Some(id) = &request_id {
            head.push_str(&format!("x-request-id: {id}\r\n"));
            if let Some(signer) = &self.signer {
                for (name, value) in signer.headers(id, &path, unix_now()) {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
            }
        }
        head.push_str("\r\n");
        let mut stream = self.stream.lock().await;
        let exchange = async {
            let tcp = stream.get_mut();
            tcp.write_all(head.as_bytes()).await?;
            tcp.write_all(&body).await?;
            read_response(&mut stream).await
        };
        let (status, content_type, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| RpcError { code: "DEADLINE_EXCEEDED", message: format!("{method}: no answer in time") })?
            .map_err(|e| RpcError { code: "UNAVAILABLE", message: format!("{method}: {e}") })?;
        if status == 200 {
            return Resp::decode(bytes.as_slice())
                .map_err(|e| RpcError { code: "INTERNAL", message: format!("{method}: undecodable response: {e}") });
        }
        Err(connect_error(status, &content_type, &bytes))
    }
}

/// Reads one response: (status, content type, body). Needs Content-Length (the server always sends it).
async fn read_response(stream: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String, Vec<u8>)> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    let mut head_bytes = 0;
    let mut status = None;
    let mut length = None;
    let mut content_type = String::new();
    loop {
        line.clear();
        let n = stream.read_line(&mut line).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        head_bytes += n;
        if head_bytes > MAX_HEAD_BYTES {
            return Err(invalid("response head too large"));
        }
        let text = line.trim_end();
        if status.is_none() {
            let code = text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
            status = Some(code.ok_or_else(|| invalid("bad status line"))?);
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| invalid("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = value.to_string();
            }
        }
    }
    let length = length.ok_or_else(|| invalid("response without content-length"))?;
    if length > MAX_BODY_BYTES {
        return Err(invalid("response body too large"));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok((status.unwrap_or_default(), content_type, body))
}

/// A Connect error body (`{"code":"not_found","message":"..."}`) as the bench's status names.
fn connect_error(status: u16, content_type: &str, body: &[u8]) -> RpcError {
    let parsed: Option<serde_json::Value> =
        content_type.starts_with("application/json").then(|| serde_json::from_slice(body).ok()).flatten();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(|v| v.as_str()).map(str::to_string);
    let code = match field("code").as_deref() {
        Some("canceled") => "CANCELLED",
        Some("invalid_argument") => "INVALID_ARGUMENT",
        Some("deadline_exceeded") => "DEADLINE_EXCEEDED",
        Some("not_found") => "NOT_FOUND",
        Some("already_exists") => "ALREADY_EXISTS",
        Some("permission_denied") => "PERMISSION_DENIED",
        Some("resource_exhausted") => "RESOURCE_EXHAUSTED",
        Some("failed_precondition") => "FAILED_PRECONDITION",
        Some("aborted") => "ABORTED",
        Some("out_of_range") => "OUT_OF_RANGE",
        Some("unimplemented") => "UNIMPLEMENTED",
        Some("internal") => "INTERNAL",
        Some("unavailable") => "UNAVAILABLE",
        Some("data_loss") => "DATA_LOSS",
        Some("unauthenticated") => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    };
    let message = field("message").unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    RpcError { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_bodies_become_status_names() {
        let body = br#"{"code":"failed_precondition","message":"pool exhausted"}"#;
        let error = connect_error(400, "application/json", body);
        assert_eq!((error.code, error.message.as_str()), ("FAILED_PRECONDITION", "pool exhausted"));
        let error = connect_error(502, "text/html", b"bad gateway");
        assert_eq!((error.code, error.message.as_str()), ("UNKNOWN", "HTTP 502: bad gateway"));
    }
}
