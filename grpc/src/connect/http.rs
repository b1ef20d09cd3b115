//! HTTP/1.1 requests and responses for the Connect server, with explicit limits.
//!
//! Only what Connect's unary form needs: a request line, headers, and a body framed by
//! `Content-Length` or by `Transfer-Encoding: chunked` (RFC 9112 §7.1; other codings are refused
//! with 501). A declared length is checked against [`Limits::max_body_bytes`] before a byte of the
//! body is read; a chunked body is checked at each chunk-size line, before that chunk's data is
//! read, and its framing (size lines, chunk count, trailers) has limits of its own. Connections may
//! be persistent and pipelined: bytes read past one request stay in the caller's buffer for the
//! next. After any [`HttpError`] the connection's framing is lost, so the caller answers (when
//! [`HttpError::status`] says so) and closes.

use std::fmt;
use std::io::{self, Read, Write};

use evidenceos_core::KernelError;

use super::codec;

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 16 * 1024;

/// Upper bounds on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus headers plus the blank line that ends them.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// Declared `Content-Length`, or the decoded size of a chunked body.
    pub max_body_bytes: usize,
    /// One chunk-size line of a chunked body, extensions and CRLF included.
    pub max_chunk_line_bytes: usize,
    /// Chunks in one chunked body (the last, empty one not counted): bounds the framing bytes
    /// buffered beyond the body and the work of rescanning them on each read.
    pub max_chunks: usize,
    /// The trailer section after the last chunk, its closing blank line included.
    pub max_trailer_bytes: usize,
}

impl Default for Limits {
    /// 16 KiB of headers, 64 header fields, 4 MiB bodies (the gRPC server's default request limit);
    /// chunked bodies: 256-byte size lines, 1,024 chunks, 4 KiB of trailers.
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 4 * 1024 * 1024,
            max_chunk_line_bytes: 256,
            max_chunks: 1024,
            max_trailer_bytes: 4 * 1024,
        }
    }
}

/// One request as read off the connection.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The method token as sent, e.g. `POST` (methods are case-sensitive).
    pub method: String,
    /// The path only; a query string is split off into `query`, and an absolute-form target
    /// (`http://host/path`) is reduced to its path.
    pub path: String,
    /// What followed `?` in the target, if anything did.
    pub query: Option<String>,
    /// Header fields in order, names lower-cased, values trimmed. A field whose value is not
    /// visible ASCII (spaces and tabs inside allowed) is left out, as [`crate::auth::Headers`] asks.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request after this one's response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
}

impl HttpRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl crate::auth::Headers for HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        HttpRequest::header(self, name)
    }
}

/// Why a request could not be read. [`HttpError::status`] is the HTTP status to answer with
/// before closing (`None` when the peer is gone or timed out and nothing should be written).
#[derive(Debug)]
pub enum HttpError {
    /// The transport failed or timed out (read timeouts surface here as `WouldBlock`/`TimedOut`).
    Io(io::Error),
    /// The peer closed the connection part-way through a request.
    Truncated,
    /// Not a well-formed HTTP/1.x request (400).
    Malformed(String),
    /// Request line plus headers exceed [`Limits::max_header_bytes`] (431).
    HeadersTooLarge { limit: usize },
    /// More header fields than [`Limits::max_headers`] (431).
    TooManyHeaders { limit: usize },
    /// The declared `Content-Length`, or a chunked body's size so far plus the chunk just
    /// announced, exceeds [`Limits::max_body_bytes`]; refused before reading (more of) the body.
    /// Answered as the Connect error `resource_exhausted` (see [`HttpError::kernel_error`]).
    BodyTooLarge { limit: usize, declared: u64 },
    /// A POST with neither `Content-Length` nor a chunked body (411).
    LengthRequired,
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferEncoding(String),
    /// A chunk-size line longer than [`Limits::max_chunk_line_bytes`] (400).
    ChunkLineTooLong { limit: usize },
    /// More chunks than [`Limits::max_chunks`] (413).
    TooManyChunks { limit: usize },
    /// A trailer section longer than [`Limits::max_trailer_bytes`] (431).
    TrailersTooLarge { limit: usize },
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed(String),
    /// A protocol version other than HTTP/1.0 or HTTP/1.1 (505).
    VersionNotSupported,
}

impl HttpError {
    /// The HTTP status to answer with, or `None` when nothing should be written. `BodyTooLarge`
    /// gives 429, the status of Connect's `resource_exhausted`, so answering it with
    /// [`HttpError::response`] or with [`codec::error_response`] of [`HttpError::kernel_error`]
    /// agree.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Io(_) | Self::Truncated => None,
            Self::Malformed(_) | Self::ChunkLineTooLong { .. } => Some(400),
            Self::HeadersTooLarge { .. } | Self::TooManyHeaders { .. } | Self::TrailersTooLarge { .. } => Some(431),
            Self::TooManyChunks { .. } => Some(413),
            Self::BodyTooLarge { .. } => Some(codec::http_status(evidenceos_core::ErrorCode::ResourceExhausted)),
            Self::LengthRequired => Some(411),
            Self::UnsupportedTransferEncoding(_) => Some(501),
            Self::ExpectationFailed(_) => Some(417),
            Self::VersionNotSupported => Some(505),
        }
    }

    /// A short message for the response body and the log.
    pub fn message(&self) -> String {
        match self {
            Self::Io(e) => format!("transport error: {e}"),
            Self::Truncated => "connection closed in the middle of a request".to_string(),
            Self::Malformed(why) => format!("malformed HTTP request: {why}"),
            Self::HeadersTooLarge { limit } => format!("request line and headers exceed {limit} bytes"),
            Self::TooManyHeaders { limit } => format!("more than {limit} header fields"),
            Self::BodyTooLarge { limit, declared } => {
                format!("request body of {declared} bytes exceeds the limit of {limit} bytes")
            }
            Self::LengthRequired => "a POST request needs a Content-Length header or a chunked body".to_string(),
            Self::UnsupportedTransferEncoding(codings) => {
                format!("Transfer-Encoding {codings:?} is not supported; only chunked is")
            }
            Self::ChunkLineTooLong { limit } => format!("a chunk-size line exceeds {limit} bytes"),
            Self::TooManyChunks { limit } => format!("a chunked body of more than {limit} chunks"),
            Self::TrailersTooLarge { limit } => format!("the trailer section exceeds {limit} bytes"),
            Self::ExpectationFailed(expect) => format!("unsupported expectation {expect:?}; only 100-continue is"),
            Self::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported".to_string(),
        }
    }

    /// The Connect error this is answered with, for errors the client should see as one:
    /// `BodyTooLarge` → `resource_exhausted`. Other errors are plain HTTP errors (`None`).
    pub fn kernel_error(&self) -> Option<KernelError> {
        match self {
            Self::BodyTooLarge { .. } => Some(KernelError::resource_exhausted(self.message())),
            _ => None,
        }
    }

    /// The complete response to write before closing, or `None` when nothing should be written:
    /// the Connect error JSON for [`HttpError::kernel_error`], otherwise a `text/plain` message.
    /// Always `Connection: close`.
    pub fn response(&self) -> Option<HttpResponse> {
        let status = self.status()?;
        let response = match self.kernel_error() {
            Some(error) => {
                let (status, body) = codec::error_response(&error);
                HttpResponse::new(status, codec::ERROR_CONTENT_TYPE, body)
            }
            None => HttpResponse::new(status, "text/plain; charset=utf-8", format!("{}\n", self.message()).into()),
        };
        Some(HttpResponse { keep_alive: false, ..response })
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Request line and header fields, owned, before the body.
struct Head {
    method: String,
    target: String,
    http11: bool,
    headers: Vec<(String, String)>,
    content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` (the only coding accepted).
    chunked: bool,
    keep_alive: bool,
    expect_continue: bool,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
}

/// Reads one request. `buffered` holds bytes already read past the previous request on this
/// connection (pipelining) and keeps any bytes read past this one. Returns `Ok(None)` on a clean
/// close before the first byte of a request. Answers `Expect: 100-continue` by writing
/// `HTTP/1.1 100 Continue\r\n\r\n` to the stream before reading the body (unless the body has
/// already begun to arrive). A declared `Content-Length` above `limits.max_body_bytes` fails with
/// [`HttpError::BodyTooLarge`] before any of the body is read.
///
/// Resumable: every byte read stays in `buffered` until the whole request is there, so on a
/// non-blocking stream `HttpError::Io` of kind `WouldBlock` means "call again when readable",
/// with nothing lost.
pub fn read_request<S: Read + Write>(
    stream: &mut S,
    buffered: &mut Vec<u8>,
    limits: &Limits,
) -> Result<Option<HttpRequest>, HttpError> {
    let mut chunk = vec![0u8; READ_CHUNK];
    // A head already complete on entry was answered (100 Continue) by the call that completed it.
    let mut head_complete_on_entry = None;
    let mut framed: Option<(Head, usize, Framing)> = None;
    let mut attempt_parse = !buffered.is_empty();
    loop {
        if framed.is_none()
            && attempt_parse
            && let Some((head, head_len)) = parse_head(buffered, limits)?
        {
            let framing = body_framing(&head, limits)?;
            let on_entry = *head_complete_on_entry.get_or_insert(true);
            let nothing_of_the_body = buffered.len() == head_len;
            let has_body = !matches!(framing, Framing::Length(0));
            if !on_entry && head.expect_continue && head.http11 && nothing_of_the_body && has_body {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                stream.flush()?;
            }
            framed = Some((head, head_len, framing));
        }
        // Everything buffered is (incomplete) head while nothing is framed.
        if framed.is_none() && buffered.len() > limits.max_header_bytes {
            return Err(HttpError::HeadersTooLarge { limit: limits.max_header_bytes });
        }
        head_complete_on_entry.get_or_insert(false);
        if let Some((_, head_len, framing)) = &framed
            && let Some((body, wire_len)) = complete_body(&buffered[*head_len..], *framing, limits)?
        {
            let (head, head_len, _) = framed.take().expect("checked");
            buffered.drain(..head_len + wire_len);
            let (path, query) = split_target(&head.target);
            return Ok(Some(HttpRequest {
                method: head.method,
                path,
                query,
                headers: head.headers,
                body,
                keep_alive: head.keep_alive,
            }));
        }
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            // Blank lines before a request line are allowed (and skipped): still a clean close.
            return if framed.is_none() && buffered.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                buffered.clear();
                Ok(None)
            } else {
                Err(HttpError::Truncated)
            };
        }
        buffered.extend_from_slice(&chunk[..n]);
        // The head can only have become complete if a line ended.
        attempt_parse = chunk[..n].contains(&b'\n');
    }
}

/// The body's framing, a declared length checked before any of the body is read.
fn body_framing(head: &Head, limits: &Limits) -> Result<Framing, HttpError> {
    match head.content_length {
        _ if head.chunked => Ok(Framing::Chunked),
        Some(declared) if declared > limits.max_body_bytes as u64 => {
            Err(HttpError::BodyTooLarge { limit: limits.max_body_bytes, declared })
        }
        Some(declared) => usize::try_from(declared)
            .map(Framing::Length)
            .map_err(|_| HttpError::BodyTooLarge { limit: limits.max_body_bytes, declared }),
        None if head.method == "POST" => Err(HttpError::LengthRequired),
        None => Ok(Framing::Length(0)),
    }
}

/// The body, and how many bytes of `wire` (everything buffered after the head) it took, once
/// `wire` holds all of it; `None` while more must be read.
fn complete_body(wire: &[u8], framing: Framing, limits: &Limits) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    match framing {
        Framing::Length(len) => Ok((wire.len() >= len).then(|| (wire[..len].to_vec(), len))),
        Framing::Chunked => decode_chunked(wire, limits),
    }
}

/// Decodes a chunked body (RFC 9112 §7.1) from the start of `wire`: `None` while incomplete.
/// Rescans from the start on each call, which [`Limits::max_chunks`] keeps cheap; the decoded
/// size is checked at each chunk-size line, before that chunk's data needs to arrive.
fn decode_chunked(wire: &[u8], limits: &Limits) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut pos = 0;
    let mut chunks: Vec<std::ops::Range<usize>> = Vec::new();
    let mut decoded: u64 = 0;
    loop {
        let Some((size, line_len)) = chunk_size_line(&wire[pos..], limits)? else { return Ok(None) };
        pos += line_len;
        if size == 0 {
            break;
        }
        if chunks.len() == limits.max_chunks {
            return Err(HttpError::TooManyChunks { limit: limits.max_chunks });
        }
        decoded = decoded.saturating_add(size);
        if decoded > limits.max_body_bytes as u64 {
            return Err(HttpError::BodyTooLarge { limit: limits.max_body_bytes, declared: decoded });
        }
        // At most max_body_bytes, so it fits.
        let size = usize::try_from(size).expect("checked against max_body_bytes");
        let Some(after) = wire.get(pos + size..pos + size + 2) else { return Ok(None) };
        if after != b"\r\n" {
            return Err(HttpError::Malformed("chunk data not followed by CRLF".to_string()));
        }
        chunks.push(pos..pos + size);
        pos += size + 2;
    }
    let Some(trailer_len) = trailer_section(&wire[pos..], limits)? else { return Ok(None) };
    let mut body = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
    for chunk in chunks {
        body.extend_from_slice(&wire[chunk]);
    }
    Ok(Some((body, pos + trailer_len)))
}

/// `chunk-size [ chunk-ext ] CRLF` at the start of `wire`: the size and the line's length, or
/// `None` while the line is incomplete. Extensions are checked for stray control bytes and ignored.
fn chunk_size_line(wire: &[u8], limits: &Limits) -> Result<Option<(u64, usize)>, HttpError> {
    let window = &wire[..wire.len().min(limits.max_chunk_line_bytes)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if wire.len() >= limits.max_chunk_line_bytes {
            Err(HttpError::ChunkLineTooLong { limit: limits.max_chunk_line_bytes })
        } else {
            Ok(None)
        };
    };
    let line = &window[..end];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let extensions = &line[digits..];
    let extensions_ok = extensions.is_empty()
        || (extensions.trim_ascii_start().starts_with(b";")
            && extensions.iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic()));
    if digits == 0 || !extensions_ok {
        return Err(HttpError::Malformed(format!("bad chunk-size line {:?}", String::from_utf8_lossy(line))));
    }
    // Overflow is "too large", like an overlong Content-Length.
    let size = line[..digits].iter().try_fold(0u64, |size, &b| {
        let digit = u64::from(char::from(b).to_digit(16).expect("a hex digit"));
        size.checked_mul(16)?.checked_add(digit)
    });
    Ok(Some((size.unwrap_or(u64::MAX), end + 2)))
}

/// The trailer section after the last chunk: its length up to and including the blank line that
/// ends it, or `None` while incomplete. Trailer fields are checked for shape and discarded.
fn trailer_section(wire: &[u8], limits: &Limits) -> Result<Option<usize>, HttpError> {
    let too_large = HttpError::TrailersTooLarge { limit: limits.max_trailer_bytes };
    let window = &wire[..wire.len().min(limits.max_trailer_bytes)];
    let mut pos = 0;
    loop {
        let Some(end) = window[pos..].windows(2).position(|w| w == b"\r\n") else {
            return if wire.len() >= limits.max_trailer_bytes { Err(too_large) } else { Ok(None) };
        };
        if end == 0 {
            return Ok(Some(pos + 2));
        }
        let field = &window[pos..pos + end];
        let name_len = field.iter().position(|&b| b == b':').unwrap_or(0);
        let visible = field.iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
        if name_len == 0 || !visible || field[..name_len].iter().any(|&b| b == b' ' || b == b'\t') {
            return Err(HttpError::Malformed("bad trailer field".to_string()));
        }
        pos += end + 2;
    }
}

/// One read, retried on `Interrupted`.
fn read_some<R: Read>(stream: &mut R, chunk: &mut [u8]) -> Result<usize, HttpError> {
    loop {
        match stream.read(chunk) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HttpError::Io(e)),
        }
    }
}

/// Parses the head at the start of `buffered`: `None` while it is incomplete, otherwise the head
/// and its length in bytes.
fn parse_head(buffered: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, HttpError> {
    let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(buffered) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders { limit: limits.max_headers }),
        Err(httparse::Error::Version) => return Err(HttpError::VersionNotSupported),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    if head_len > limits.max_header_bytes {
        return Err(HttpError::HeadersTooLarge { limit: limits.max_header_bytes });
    }
    // A complete parse always fills these three.
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Err(HttpError::Malformed("incomplete request line".to_string()));
    };
    let http11 = version == 1;

    let mut headers = Vec::with_capacity(request.headers.len());
    let mut content_length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    for field in request.headers.iter() {
        let name = field.name.to_ascii_lowercase();
        let value = std::str::from_utf8(field.value).ok().map(str::trim).filter(|v| is_visible_ascii(v));
        match name.as_str() {
            "transfer-encoding" => {
                let listed = value.ok_or_else(|| HttpError::Malformed("Transfer-Encoding is not ASCII".to_string()))?;
                codings.extend(listed.split(',').map(|c| c.trim().to_ascii_lowercase()).filter(|c| !c.is_empty()));
            }
            "content-length" => {
                let declared = value.and_then(parse_content_length).ok_or_else(|| {
                    HttpError::Malformed(format!(
                        "Content-Length {:?} is not a decimal number",
                        String::from_utf8_lossy(field.value)
                    ))
                })?;
                if content_length.is_some() {
                    return Err(HttpError::Malformed("more than one Content-Length header".to_string()));
                }
                content_length = Some(declared);
            }
            "connection" => {
                for token in value.unwrap_or_default().split(',').map(str::trim) {
                    connection_close |= token.eq_ignore_ascii_case("close");
                    connection_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            "expect" => match value {
                Some(v) if v.eq_ignore_ascii_case("100-continue") => expect_continue = true,
                other => {
                    let shown =
                        other.map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(field.value).into());
                    return Err(HttpError::ExpectationFailed(shown));
                }
            },
            _ => {}
        }
        if let Some(value) = value {
            headers.push((name, value.to_string()));
        }
    }
    let chunked = transfer_codings(&codings, content_length.is_some(), http11)?;
    let keep_alive = !connection_close && (http11 || connection_keep_alive);
    let head = Head {
        method: method.to_string(),
        target: target.to_string(),
        http11,
        headers,
        content_length,
        chunked,
        keep_alive,
        expect_continue,
    };
    Ok(Some((head, head_len)))
}

/// Whether the body is chunked, from the transfer codings listed (RFC 9112 §6.1, §6.3): both a
/// length and codings is a smuggling attempt (400), so is chunked not last or under HTTP/1.0;
/// any coding but a lone `chunked` is unsupported (501).
fn transfer_codings(codings: &[String], has_content_length: bool, http11: bool) -> Result<bool, HttpError> {
    if codings.is_empty() {
        return Ok(false);
    }
    let refuse = |why: &str| Err(HttpError::Malformed(why.to_string()));
    if has_content_length {
        return refuse("both Content-Length and Transfer-Encoding");
    }
    if !http11 {
        return refuse("Transfer-Encoding in an HTTP/1.0 request");
    }
    if codings.last().map(String::as_str) != Some("chunked") {
        return refuse("Transfer-Encoding whose last coding is not chunked");
    }
    if codings.len() > 1 {
        return Err(HttpError::UnsupportedTransferEncoding(codings.join(", ")));
    }
    Ok(true)
}

/// Visible ASCII, with spaces and tabs allowed between visible characters.
fn is_visible_ascii(value: &str) -> bool {
    value.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
}

/// Digits only: no sign, no list (`5, 5`), no whitespace inside. `u64` overflow is "too large",
/// reported as `u64::MAX`.
fn parse_content_length(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().unwrap_or(u64::MAX))
}

/// `/path?query` → (`/path`, `Some("query")`); an absolute-form target loses scheme and authority.
fn split_target(target: &str) -> (String, Option<String>) {
    let origin_form = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            let rest = target
                .get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &target[scheme.len()..])?;
            Some(rest.find(['/', '?']).map_or("/", |i| &rest[i..]))
        })
        .unwrap_or(target);
    match origin_form.split_once('?') {
        Some((path, query)) => (if path.is_empty() { "/" } else { path }.to_string(), Some(query.to_string())),
        None => (origin_form.to_string(), None),
    }
}

/// One response. [`write_response`] adds `Content-Length`, `Content-Type` and `Connection`.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `Connection: keep-alive` when true, else `Connection: close` (the caller then closes).
    pub keep_alive: bool,
    /// Further header fields; values must not contain CR or LF.
    pub extra_headers: Vec<(&'static str, String)>,
}

impl HttpResponse {
    /// A keep-alive response without extra headers.
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self { status, content_type, body, keep_alive: true, extra_headers: Vec::new() }
    }
}

/// Writes one response with `Content-Type`, `Content-Length`, `Connection: keep-alive|close`,
/// plus the extra headers, in one `write_all`, then flushes. A header name or value holding CR or
/// LF fails with `InvalidInput` before anything is written.
pub fn write_response<W: Write>(w: &mut W, response: &HttpResponse) -> io::Result<()> {
    let unsafe_text = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
    if unsafe_text(response.content_type)
        || response.extra_headers.iter().any(|(name, value)| unsafe_text(name) || unsafe_text(value))
    {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "CR or LF in a response header"));
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
        if response.keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &response.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = Vec::with_capacity(head.len() + response.body.len());
    message.extend_from_slice(head.as_bytes());
    message.extend_from_slice(&response.body);
    w.write_all(&message)?;
    w.flush()
}

/// The reason phrase of a status this server sends (and of the other common ones).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A stream that yields scripted reads (each at most `max_read` bytes) and records writes.
    struct Scripted {
        reads: VecDeque<Vec<u8>>,
        max_read: usize,
        written: Vec<u8>,
        reads_done: usize,
    }

    impl Scripted {
        fn new(reads: &[&[u8]]) -> Self {
            Self {
                reads: reads.iter().map(|r| r.to_vec()).collect(),
                max_read: usize::MAX,
                written: Vec::new(),
                reads_done: 0,
            }
        }

        fn one_byte_at_a_time(bytes: &[u8]) -> Self {
            Self { max_read: 1, ..Self::new(&[bytes]) }
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(front) = self.reads.front_mut() else { return Ok(0) };
            // An empty scripted read stands for a non-blocking socket with nothing to read yet.
            if front.is_empty() {
                self.reads.pop_front();
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = front.len().min(buf.len()).min(self.max_read);
            buf[..n].copy_from_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                self.reads.pop_front();
            }
            self.reads_done += 1;
            Ok(n)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn read(stream: &mut Scripted, buffered: &mut Vec<u8>) -> Result<Option<HttpRequest>, HttpError> {
        read_request(stream, buffered, &Limits::default())
    }

    const TWO: &[u8] =
        b"POST /evidenceos.v2.EvidenceOS/Health HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Content-Length: 2\r\n\r\n{}POST /evidenceos.v2.EvidenceOS/GetServerInfo?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\
Connection: close\r\n\r\nabc";

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let mut stream = Scripted::new(&[TWO]);
        let mut buffered = Vec::new();
        let first = read(&mut stream, &mut buffered).unwrap().unwrap();
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/evidenceos.v2.EvidenceOS/Health");
        assert_eq!(first.query, None);
        assert_eq!(first.body, b"{}");
        assert!(first.keep_alive);
        assert!(!buffered.is_empty(), "the second request stays buffered");

        let second = read(&mut stream, &mut buffered).unwrap().unwrap();
        assert_eq!(second.path, "/evidenceos.v2.EvidenceOS/GetServerInfo");
        assert_eq!(second.query.as_deref(), Some("x=1"));
        assert_eq!(second.body, b"abc");
        assert!(!second.keep_alive);
        assert!(buffered.is_empty());
        assert!(read(&mut stream, &mut buffered).unwrap().is_none());
    }

    #[test]
    fn pipelined_requests_already_buffered() {
        let mut stream = Scripted::new(&[]);
        let mut buffered = TWO.to_vec();
        assert_eq!(read(&mut stream, &mut buffered).unwrap().unwrap().body, b"{}");
        assert_eq!(read(&mut stream, &mut buffered).unwrap().unwrap().body, b"abc");
        assert!(read(&mut stream, &mut buffered).unwrap().is_none());
        assert_eq!(stream.reads_done, 0, "buffered requests need no read (and the clean close one, a zero read)");
    }

    #[test]
    fn split_reads_one_byte_at_a_time() {
        let mut stream = Scripted::one_byte_at_a_time(TWO);
        let mut buffered = Vec::new();
        let first = read(&mut stream, &mut buffered).unwrap().unwrap();
        assert_eq!(first.body, b"{}");
        assert_eq!(first.header("content-type"), Some("application/json"));
        let second = read(&mut stream, &mut buffered).unwrap().unwrap();
        assert_eq!(second.body, b"abc");
        assert!(read(&mut stream, &mut buffered).unwrap().is_none());
    }

    #[test]
    fn a_request_arriving_across_would_block_resumes_and_continues_once() {
        let head: &[u8] = b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        let mut stream = Scripted::new(&[b"POST /p HT", b"", &head[10..], b"", b"hel", b"", b"lo"]);
        let mut buffered = Vec::new();
        let mut would_block = 0;
        let request = loop {
            match read(&mut stream, &mut buffered) {
                Ok(request) => break request.unwrap(),
                Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => panic!("{e:?}"),
            }
        };
        assert_eq!(would_block, 3);
        assert_eq!(request.body, b"hello");
        assert!(buffered.is_empty());
        assert_eq!(stream.written, b"HTTP/1.1 100 Continue\r\n\r\n", "exactly one interim answer");
    }

    #[test]
    fn answers_100_continue_before_reading_the_body() {
        let head: &[u8] = b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        let mut stream = Scripted::new(&[head, b"hello"]);
        let mut buffered = Vec::new();
        let request = read(&mut stream, &mut buffered).unwrap().unwrap();
        assert_eq!(request.body, b"hello");
        assert_eq!(stream.written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn no_100_continue_when_the_body_already_arrived_or_for_http10() {
        let whole: &[u8] = b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
        let mut stream = Scripted::new(&[whole]);
        assert_eq!(read(&mut stream, &mut Vec::new()).unwrap().unwrap().body, b"hello");
        assert!(stream.written.is_empty());

        let head: &[u8] = b"POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
        let mut stream = Scripted::new(&[head, b"hello"]);
        assert_eq!(read(&mut stream, &mut Vec::new()).unwrap().unwrap().body, b"hello");
        assert!(stream.written.is_empty());
    }

    #[test]
    fn unknown_expectation_is_417() {
        let mut stream = Scripted::new(&[b"POST /p HTTP/1.1\r\nExpect: magic\r\nContent-Length: 0\r\n\r\n"]);
        let error = read(&mut stream, &mut Vec::new()).unwrap_err();
        assert!(matches!(error, HttpError::ExpectationFailed(_)), "{error:?}");
        assert_eq!(error.status(), Some(417));
    }

    #[test]
    fn oversized_body_refused_without_reading_it() {
        let limits = Limits { max_body_bytes: 10, ..Limits::default() };
        let head: &[u8] = b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n";
        let mut stream = Scripted::new(&[head, b"01234567890"]);
        let error = read_request(&mut stream, &mut Vec::new(), &limits).unwrap_err();
        assert!(matches!(error, HttpError::BodyTooLarge { limit: 10, declared: 11 }), "{error:?}");
        assert_eq!(stream.reads.len(), 1, "the body was not read");
        assert!(stream.written.is_empty(), "no 100 Continue for a refused body");
        assert_eq!(error.status(), Some(429));
        let kernel = error.kernel_error().unwrap();
        assert_eq!(kernel.code, evidenceos_core::ErrorCode::ResourceExhausted);
        let response = error.response().unwrap();
        assert_eq!(response.status, 429);
        assert!(!response.keep_alive);
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(json["code"], "resource_exhausted");
    }

    #[test]
    fn huge_declared_length_is_body_too_large_not_an_allocation() {
        let mut stream = Scripted::new(&[b"POST /p HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"]);
        let error = read(&mut stream, &mut Vec::new()).unwrap_err();
        assert!(matches!(error, HttpError::BodyTooLarge { declared: u64::MAX, .. }), "{error:?}");
    }

    #[test]
    fn clean_close_returns_none() {
        let mut stream = Scripted::new(&[]);
        assert!(read(&mut stream, &mut Vec::new()).unwrap().is_none());
        let mut stream = Scripted::new(&[b"\r\n"]);
        assert!(read(&mut stream, &mut Vec::new()).unwrap().is_none());
        // Blank lines before a request line are skipped.
        let mut stream = Scripted::new(&[b"\r\nPOST /p HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"]);
        assert_eq!(read(&mut stream, &mut Vec::new()).unwrap().unwrap().body, b"x");
    }

    #[test]
    fn eof_mid_request_is_an_error() {
        let mut stream = Scripted::new(&[b"POST /p HTTP/1.1\r\nContent-Le"]);
        let error = read(&mut stream, &mut Vec::new()).unwrap_err();
        assert!(matches!(error, HttpError::Truncated), "{error:?}");
        assert_eq!(error.status(), None);
        assert!(error.response().is_none());

        let mut stream = Scripted::new(&[b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"]);
        assert!(matches!(read(&mut stream, &mut Vec::new()), Err(HttpError::Truncated)));
    }

    #[test]
    fn io_errors_are_not_answered() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::WouldBlock, "timed out"))
            }
        }
        impl Write for Failing {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let error = read_request(&mut Failing, &mut Vec::new(), &Limits::default()).unwrap_err();
        assert!(matches!(error, HttpError::Io(ref e) if e.kind() == io::ErrorKind::WouldBlock), "{error:?}");
        assert_eq!(error.status(), None);
    }

    #[test]
    fn header_names_lowercased_values_trimmed_in_order() {
        let mut stream = Scripted::new(&[
            b"POST /p HTTP/1.1\r\nX-Request-ID:   abc  \r\nAUTHORIZATION: Bearer t\r\nx-request-id: second\r\n\
X-Bin: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
        ]);
        let request = read(&mut stream, &mut Vec::new()).unwrap().unwrap();
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-request-id", "authorization", "x-request-id", "content-length"]);
        assert_eq!(request.header("X-Request-Id"), Some("abc"), "first value, any case");
        assert_eq!(crate::auth::Headers::header(&request, "authorization"), Some("Bearer t"));
        assert_eq!(request.header("x-bin"), None, "non-ASCII values are absent");
    }

    #[test]
    fn http10_keep_alive_semantics() {
        let cases: [(&[u8], bool); 6] = [
            (b"POST /p HTTP/1.0\r\nContent-Length: 0\r\n\r\n", false),
            (b"POST /p HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", true),
            (b"POST /p HTTP/1.0\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n", false),
            (b"POST /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n", true),
            (b"POST /p HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false),
            (b"POST /p HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\nContent-Length: 0\r\n\r\n", false),
        ];
        for (raw, keep_alive) in cases {
            let request = read(&mut Scripted::new(&[raw]), &mut Vec::new()).unwrap().unwrap();
            assert_eq!(request.keep_alive, keep_alive, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn content_length_rules() {
        let cases: [&[u8]; 5] = [
            b"POST /p HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            b"POST /p HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"POST /p HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab",
            b"POST /p HTTP/1.1\r\nContent-Length: +2\r\n\r\nab",
            b"POST /p HTTP/1.1\r\nContent-Length: two\r\n\r\nab",
        ];
        for raw in cases {
            let error = read(&mut Scripted::new(&[raw]), &mut Vec::new()).unwrap_err();
            assert!(matches!(error, HttpError::Malformed(_)), "{error:?}");
            assert_eq!(error.status(), Some(400));
        }
        let error = read(&mut Scripted::new(&[b"POST /p HTTP/1.1\r\n\r\n"]), &mut Vec::new()).unwrap_err();
        assert!(matches!(error, HttpError::LengthRequired), "{error:?}");
        assert_eq!(error.status(), Some(411));
        let get = read(&mut Scripted::new(&[b"GET /p HTTP/1.1\r\n\r\n"]), &mut Vec::new()).unwrap().unwrap();
        assert!(get.body.is_empty());
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_then_a_pipelined_request() {
        let raw: &[u8] = b"POST /p HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n\
2;name=value\r\nab\r\n0000A ; x ; y=\"q\"\r\n0123456789\r\n0\r\nX-Checksum: 1\r\nX-Other:2\r\n\r\n\
POST /q HTTP/1.1\r\nContent-Length: 1\r\n\r\nz";
        for mut stream in [Scripted::new(&[raw]), Scripted::one_byte_at_a_time(raw)] {
            let mut buffered = Vec::new();
            let first = read(&mut stream, &mut buffered).unwrap().unwrap();
            assert_eq!(first.body, b"ab0123456789");
            assert!(first.keep_alive);
            let second = read(&mut stream, &mut buffered).unwrap().unwrap();
            assert_eq!((second.path.as_str(), second.body.as_slice()), ("/q", b"z".as_slice()));
            assert!(read(&mut stream, &mut buffered).unwrap().is_none());
        }
        let empty: &[u8] = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(read(&mut Scripted::new(&[empty]), &mut Vec::new()).unwrap().unwrap().body.is_empty());
    }

    #[test]
    fn chunked_body_over_the_limit_is_refused_at_the_chunk_size_line() {
        let limits = Limits { max_body_bytes: 10, ..Limits::default() };
        let head: &[u8] = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n";
        let mut stream = Scripted::new(&[head, b"01234\r\n0\r\n\r\n"]);
        let error = read_request(&mut stream, &mut Vec::new(), &limits).unwrap_err();
        assert!(matches!(error, HttpError::BodyTooLarge { limit: 10, declared: 11 }), "{error:?}");
        assert_eq!(stream.reads.len(), 1, "the over-limit chunk's data was not read");
        let response = error.response().unwrap();
        assert_eq!(response.status, 429);
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(json["code"], "resource_exhausted");

        // Exactly at the limit is fine.
        let at: &[u8] = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n4\r\n0123\r\n0\r\n\r\n";
        assert_eq!(read_request(&mut Scripted::new(&[at]), &mut Vec::new(), &limits).unwrap().unwrap().body.len(), 10);

        let huge: &[u8] = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffffffff\r\n";
        let error = read(&mut Scripted::new(&[huge]), &mut Vec::new()).unwrap_err();
        assert!(matches!(error, HttpError::BodyTooLarge { declared: u64::MAX, .. }), "{error:?}");
    }

    #[test]
    fn chunked_framing_has_limits() {
        let limits = Limits { max_chunk_line_bytes: 16, max_chunks: 2, max_trailer_bytes: 32, ..Limits::default() };
        let head = "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let read_with = |body: String| {
            let raw = format!("{head}{body}");
            read_request(&mut Scripted::new(&[raw.as_bytes()]), &mut Vec::new(), &limits)
        };
        // A size line of 16 bytes with its CRLF passes, one more does not, even before its CRLF.
        assert!(read_with("1;aaaaaaaaaaaa\r\nx\r\n0\r\n\r\n".into()).unwrap().is_some());
        let error = read_with("1;aaaaaaaaaaaaa\r\nx\r\n0\r\n\r\n".into()).unwrap_err();
        assert!(matches!(error, HttpError::ChunkLineTooLong { limit: 16 }), "{error:?}");
        assert_eq!(error.status(), Some(400));
        assert!(matches!(read_with("1".repeat(40)), Err(HttpError::ChunkLineTooLong { .. })));

        let error = read_with("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n".into()).unwrap_err();
        assert!(matches!(error, HttpError::TooManyChunks { limit: 2 }), "{error:?}");
        assert_eq!(error.status(), Some(413));

        let trailers = format!("0\r\nX-A: {}\r\n\r\n", "a".repeat(24));
        let error = read_with(trailers).unwrap_err();
        assert!(matches!(error, HttpError::TrailersTooLarge { limit: 32 }), "{error:?}");
        assert_eq!(error.status(), Some(431));
        assert!(matches!(read_with(format!("0\r\nX: {}", "a".repeat(40))), Err(HttpError::TrailersTooLarge { .. })));
        assert_eq!(read_with("0\r\nX-A: 1\r\n\r\n".into()).unwrap().unwrap().body, b"");
    }

    #[test]
    fn malformed_chunks_are_400() {
        let head = "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "zz\r\n",
            "\r\n",
            "-1\r\n",
            " 1\r\nx\r\n0\r\n\r\n",
            "1 x\r\nx\r\n0\r\n\r\n",
            "1;\x01\r\nx\r\n0\r\n\r\n",
            "2\r\nabc\r\n0\r\n\r\n",
            "1\r\nx\r\n0\r\nno colon\r\n\r\n",
            "1\r\nx\r\n0\r\n: empty name\r\n\r\n",
        ] {
            let raw = format!("{head}{body}");
            let error = read(&mut Scripted::new(&[raw.as_bytes()]), &mut Vec::new()).unwrap_err();
            assert!(matches!(error, HttpError::Malformed(_)), "{body:?}: {error:?}");
            assert_eq!(error.status(), Some(400));
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        let cases: [(&[u8], u16); 6] = [
            (b"POST /p HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
            (b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
            (b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
            (b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ];
        for (raw, status) in cases {
            let error = read(&mut Scripted::new(&[raw]), &mut Vec::new()).unwrap_err();
            assert_eq!(error.status(), Some(status), "{}: {error:?}", String::from_utf8_lossy(raw));
            assert!(!error.response().unwrap().keep_alive);
        }
    }

    #[test]
    fn chunked_body_gets_100_continue() {
        let head: &[u8] = b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = Scripted::new(&[head, b"1\r\nx\r\n0\r\n\r\n"]);
        assert_eq!(read(&mut stream, &mut Vec::new()).unwrap().unwrap().body, b"x");
        assert_eq!(stream.written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn header_limits_are_431() {
        let limits = Limits { max_header_bytes: 64, ..Limits::default() };
        let long = format!("POST /p HTTP/1.1\r\nX-Long: {}\r\nContent-Length: 0\r\n\r\n", "a".repeat(100));
        let error = read_request(&mut Scripted::new(&[long.as_bytes()]), &mut Vec::new(), &limits).unwrap_err();
        assert!(matches!(error, HttpError::HeadersTooLarge { limit: 64 }), "{error:?}");
        assert_eq!(error.status(), Some(431));

        // An endless header section is cut off at the limit, not buffered without bound.
        let endless = vec![b'a'; 100_000];
        let mut stream = Scripted::new(&[b"POST /p HTTP/1.1\r\nX: ", &endless]);
        let mut buffered = Vec::new();
        let error = read_request(&mut stream, &mut buffered, &limits).unwrap_err();
        assert!(matches!(error, HttpError::HeadersTooLarge { .. }), "{error:?}");
        assert!(buffered.len() <= limits.max_header_bytes + READ_CHUNK);

        let limits = Limits { max_headers: 2, ..Limits::default() };
        let raw: &[u8] = b"POST /p HTTP/1.1\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n";
        let error = read_request(&mut Scripted::new(&[raw]), &mut Vec::new(), &limits).unwrap_err();
        assert!(matches!(error, HttpError::TooManyHeaders { limit: 2 }), "{error:?}");
        assert_eq!(error.status(), Some(431));
    }

    #[test]
    fn malformed_and_wrong_version() {
        let error = read(&mut Scripted::new(&[b"POST\r\n\r\n"]), &mut Vec::new()).unwrap_err();
        assert_eq!(error.status(), Some(400), "{error:?}");
        let error = read(&mut Scripted::new(&[b"POST /p HTTP/2.0\r\n\r\n"]), &mut Vec::new()).unwrap_err();
        assert!(matches!(error, HttpError::VersionNotSupported | HttpError::Malformed(_)), "{error:?}");
        let response = error.response().unwrap();
        assert!(!response.keep_alive);
        assert_eq!(response.content_type, "text/plain; charset=utf-8");
    }

    #[test]
    fn absolute_form_and_query() {
        assert_eq!(split_target("http://h:8080/a/b?c=d"), ("/a/b".to_string(), Some("c=d".to_string())));
        assert_eq!(split_target("HTTPS://h"), ("/".to_string(), None));
        assert_eq!(split_target("/x?"), ("/x".to_string(), Some(String::new())));
        assert_eq!(split_target("/x"), ("/x".to_string(), None));
    }

    #[test]
    fn writes_a_response() {
        let mut out = Vec::new();
        let mut response = HttpResponse::new(200, "application/json", b"{}".to_vec());
        response.extra_headers.push(("X-Request-Id", "abc".to_string()));
        write_response(&mut out, &response).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\
X-Request-Id: abc\r\n\r\n{}"
        );

        let mut out = Vec::new();
        let response = HttpResponse { keep_alive: false, ..HttpResponse::new(404, "text/plain", Vec::new()) };
        write_response(&mut out, &response).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("HTTP/1.1 404 Not Found\r\n"));

        let mut out = Vec::new();
        let response =
            HttpResponse { extra_headers: vec![("X-Bad", "a\r\nSet-Cookie: x".to_string())], ..response.clone() };
        assert_eq!(write_response(&mut out, &response).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(out.is_empty());
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(415), "Unsupported Media Type");
        assert_eq!(reason_phrase(599), "Server Error");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A request as the tests send it: method path, body, whether it asks for 100-continue,
        /// and, for a chunked body, the sizes its chunks are cut to (cycled; an extension on
        /// odd-sized ones, a trailer when the first is odd).
        fn request_bytes(path: &str, body: &[u8], expect: bool, chunks: Option<&[usize]>) -> Vec<u8> {
            let expect = if expect { "Expect: 100-continue\r\n" } else { "" };
            let Some(sizes) = chunks else {
                let mut bytes =
                    format!("POST /{path} HTTP/1.1\r\nHost: x\r\n{expect}Content-Length: {}\r\n\r\n", body.len())
                        .into_bytes();
                bytes.extend_from_slice(body);
                return bytes;
            };
            let mut bytes =
                format!("POST /{path} HTTP/1.1\r\nHost: x\r\n{expect}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
            let mut rest = body;
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, after) = rest.split_at((*size).min(rest.len()));
                let extension = if chunk.len() % 2 == 1 { ";e=1" } else { "" };
                bytes.extend(format!("{:x}{extension}\r\n", chunk.len()).into_bytes());
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(b"\r\n");
                rest = after;
            }
            let trailer = if sizes[0] % 2 == 1 { "X-Trailer: t\r\n" } else { "" };
            bytes.extend(format!("0\r\n{trailer}\r\n").into_bytes());
            bytes
        }

        proptest! {
            /// However the bytes of pipelined requests are cut into reads, and wherever a
            /// non-blocking stream says WouldBlock, the same requests come out, in order, and
            /// every byte is accounted for.
            #[test]
            fn any_split_and_any_would_block_give_the_same_requests(
                requests in proptest::collection::vec((
                    "[a-z]{1,12}",
                    proptest::collection::vec(any::<u8>(), 0..300),
                    any::<bool>(),
                    proptest::option::of(proptest::collection::vec(1usize..100, 1..6)),
                ), 1..5),
                cuts in proptest::collection::vec(1usize..64, 1..40),
                stalls in proptest::collection::vec(any::<bool>(), 1..40),
            ) {
                let mut wire = Vec::new();
                for (path, body, expect, chunks) in &requests {
                    wire.extend(request_bytes(path, body, *expect, chunks.as_deref()));
                }
                let mut reads: Vec<&[u8]> = Vec::new();
                let mut rest = wire.as_slice();
                let mut i = 0;
                while !rest.is_empty() {
                    let n = cuts[i % cuts.len()].min(rest.len());
                    reads.push(&rest[..n]);
                    if stalls[i % stalls.len()] {
                        reads.push(b"");
                    }
                    rest = &rest[n..];
                    i += 1;
                }
                let mut stream = Scripted::new(&reads);
                let mut buffered = Vec::new();
                let mut got = Vec::new();
                loop {
                    match read_request(&mut stream, &mut buffered, &Limits::default()) {
                        Ok(Some(request)) => got.push(request),
                        Ok(None) => break,
                        Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => prop_assert!(false, "{e:?}"),
                    }
                }
                prop_assert_eq!(got.len(), requests.len());
                for (request, (path, body, _, _)) in got.iter().zip(&requests) {
                    prop_assert_eq!(&request.path, &format!("/{path}"));
                    prop_assert_eq!(&request.body, body);
                }
                prop_assert!(buffered.is_empty());
                let continues = stream.written.windows(12).filter(|w| w == b"100 Continue").count();
                prop_assert!(continues <= requests.iter().filter(|(_, _, e, _)| *e).count());
            }

            /// Arbitrary bytes, alone or after a chunked head, never panic and never buffer past
            /// the limits plus one read.
            #[test]
            fn garbage_is_refused_or_waited_for_never_a_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                chunked_head in any::<bool>(),
            ) {
                let limits = Limits {
                    max_header_bytes: 1024,
                    max_headers: 8,
                    max_body_bytes: 512,
                    max_chunk_line_bytes: 32,
                    max_chunks: 8,
                    max_trailer_bytes: 64,
                };
                let head: &[u8] = if chunked_head { b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" } else { b"" };
                let mut stream = Scripted::new(&[head, &bytes]);
                let mut buffered = Vec::new();
                for _ in 0..8 {
                    match read_request(&mut stream, &mut buffered, &limits) {
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => break,
                    }
                }
                let framing = (limits.max_chunks + 1) * (limits.max_chunk_line_bytes + 2) + limits.max_trailer_bytes;
                prop_assert!(buffered.len() <= limits.max_header_bytes + limits.max_body_bytes + framing + READ_CHUNK);
            }
        }
    }
}
