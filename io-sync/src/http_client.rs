//! A small blocking HTTP/1.1 client for the publisher's witnesses and `evidenceosctl log`: one
//! request per connection (`Connection: close`), `http://` or `https://` (trust in
//! [`crate::https_trust`]), every wait bounded by one deadline and every response by a size
//! limit. Blocking on purpose: the sync runtime links no async executor, and each caller already
//! runs on a thread of its own.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::https_trust::HttpsTrust;

/// Bounds of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the start of the request to the last byte of the response.
    pub timeout: Duration,
    /// Status line and headers together.
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
}

impl HttpLimits {
    pub const DEFAULT: HttpLimits =
        HttpLimits { timeout: Duration::from_secs(10), max_head_bytes: 16 * 1024, max_body_bytes: 1 << 20 };
}

/// Most headers a response may carry.
const MAX_HEADERS: usize = 64;
/// Longest `host:port` accepted in a URL.
const MAX_AUTHORITY_BYTES: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Http => "http://",
            Self::Https => "https://",
        }
    }
}

/// An `http[s]://host[:port][/path]` URL, without query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    /// Starts with `/`; no trailing `/` unless it is the root.
    path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let (scheme, rest) = [Scheme::Http, Scheme::Https]
            .into_iter()
            .find_map(|scheme| Some((scheme, url.strip_prefix(scheme.prefix())?)))
            .ok_or(HttpError::BadUrl("not an http:// or https:// URL"))?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !printable(path) || path.contains(['?', '#']) {
            return Err(HttpError::BadUrl("the path has spaces, a query or a fragment"));
        }
        if authority.is_empty() || authority.len() > MAX_AUTHORITY_BYTES || !printable(authority) {
            return Err(HttpError::BadUrl("bad host"));
        }
        if authority.contains('@') {
            return Err(HttpError::BadUrl("credentials in URLs are not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                (host, port.parse::<u16>().map_err(|_| HttpError::BadUrl("bad port"))?)
            }
            _ => (authority, scheme.default_port()),
        };
        if host.is_empty() {
            return Err(HttpError::BadUrl("bad host"));
        }
        let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        Ok(Self { scheme, host: host.to_string(), port, path: path.to_string() })
    }

    /// This URL with `/relative` appended to its path.
    pub fn join(&self, relative: &str) -> HttpUrl {
        let base = self.path.trim_end_matches('/');
        let path = format!("{base}/{}", relative.trim_start_matches('/'));
        Self { scheme: self.scheme, host: self.host.clone(), port: self.port, path }
    }

    fn authority(&self) -> String {
        if self.port == self.scheme.default_port() { self.host.clone() } else { format!("{}:{}", self.host, self.port) }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.scheme.prefix(), self.authority(), self.path)
    }
}

/// Why an exchange failed. The server's status is not an error: callers map it.
#[derive(Debug)]
pub enum HttpError {
    BadUrl(&'static str),
    Connect(io::Error),
    /// The TLS handshake or record layer failed (an untrusted certificate, a wrong name).
    Tls(rustls::Error),
    Io(io::Error),
    TimedOut,
    HeadTooLarge {
        max: usize,
    },
    BodyTooLarge {
        max: usize,
    },
    Malformed(&'static str),
    /// The connection closed before the announced body ended.
    Truncated,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadUrl(why) => write!(f, "bad URL: {why}"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::HeadTooLarge { max } => write!(f, "response headers over {max} bytes"),
            Self::BodyTooLarge { max } => write!(f, "response body over {max} bytes"),
            Self::Malformed(why) => write!(f, "malformed response: {why}"),
            Self::Truncated => f.write_str("the connection closed before the response ended"),
        }
    }
}

impl std::error::Error for HttpError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Limits and TLS trust for a series of exchanges.
#[derive(Debug, Clone)]
pub struct HttpClient {
    limits: HttpLimits,
    trust: HttpsTrust,
}

impl HttpClient {
    pub fn new(limits: HttpLimits, trust: HttpsTrust) -> Self {
        Self { limits, trust }
    }

    pub fn get(&self, url: &HttpUrl) -> Result<HttpResponse, HttpError> {
        self.exchange(url, "GET", None)
    }

    pub fn post(&self, url: &HttpUrl, content_type: &str, body: &[u8]) -> Result<HttpResponse, HttpError> {
        self.exchange(url, "POST", Some((content_type, body)))
    }

    fn exchange(&self, url: &HttpUrl, method: &str, body: Option<(&str, &[u8])>) -> Result<HttpResponse, HttpError> {
        let deadline = Instant::now() + self.limits.timeout;
        let tcp = connect(url, deadline)?;
        let stream = match url.scheme {
            Scheme::Http => Connection::Plain(tcp),
            Scheme::Https => {
                let name = ServerName::try_from(url.host.trim_start_matches('[').trim_end_matches(']').to_string())
                    .map_err(|_| HttpError::BadUrl("the host is not a valid TLS server name"))?;
                let tls = rustls::ClientConnection::new(self.trust.config(), name).map_err(HttpError::Tls)?;
                Connection::Tls(Box::new(rustls::StreamOwned::new(tls, tcp)))
            }
        };
        send(stream, url, method, body, deadline, self.limits)
    }
}

/// One exchange trusting Mozilla's public roots for `https://`.
pub fn get(url: &HttpUrl, limits: HttpLimits) -> Result<HttpResponse, HttpError> {
    HttpClient::new(limits, HttpsTrust::public_roots()).get(url)
}

/// One exchange trusting Mozilla's public roots for `https://`.
pub fn post(url: &HttpUrl, content_type: &str, body: &[u8], limits: HttpLimits) -> Result<HttpResponse, HttpError> {
    HttpClient::new(limits, HttpsTrust::public_roots()).post(url, content_type, body)
}

/// The connection of one exchange; timeouts are set on the TCP socket under either.
enum Connection {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Connection {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

fn send(
    mut stream: Connection,
    url: &HttpUrl,
    method: &str,
    body: Option<(&str, &[u8])>,
    deadline: Instant,
    limits: HttpLimits,
) -> Result<HttpResponse, HttpError> {
    let mut request = format!("{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", url.path, url.authority());
    if let Some((content_type, body)) = body {
        request.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.map_or(&[][..], |(_, body)| body));
    // The TLS handshake runs inside this write and its reads: bound both.
    stream.tcp().set_write_timeout(Some(remaining(deadline)?)).map_err(HttpError::Io)?;
    stream.tcp().set_read_timeout(Some(remaining(deadline)?)).map_err(HttpError::Io)?;
    stream.write_all(&bytes).and_then(|()| stream.flush()).map_err(|e| io_error(e, deadline))?;
    read_response(&mut Deadlined { stream, deadline }, limits)
}

fn connect(url: &HttpUrl, deadline: Instant) -> Result<TcpStream, HttpError> {
    let addrs = (url.host.trim_start_matches('[').trim_end_matches(']'), url.port)
        .to_socket_addrs()
        .map_err(HttpError::Connect)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(HttpError::Connect(last))
}

fn remaining(deadline: Instant) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(HttpError::TimedOut) } else { Ok(left) }
}

fn io_error(e: io::Error, deadline: Instant) -> HttpError {
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return HttpError::Tls(tls.clone());
    }
    let timed_out = matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock);
    if timed_out || Instant::now() >= deadline { HttpError::TimedOut } else { HttpError::Io(e) }
}

/// A reader whose every read waits at most until the exchange's deadline.
struct Deadlined<R> {
    stream: R,
    deadline: Instant,
}

impl Deadlined<Connection> {
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        self.stream.tcp().set_read_timeout(Some(remaining(self.deadline)?)).map_err(HttpError::Io)?;
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(|e| io_error(e, self.deadline)),
            }
        }
    }
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn read_response(reader: &mut Deadlined<Connection>, limits: HttpLimits) -> Result<HttpResponse, HttpError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (status, framing, head_len) = loop {
        if let Some(head) = parse_head(&buf, limits)? {
            break head;
        }
        if buf.len() > limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge { max: limits.max_head_bytes });
        }
        let n = reader.read_some(&mut chunk)?;
        if n == 0 {
            return Err(HttpError::Truncated);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    buf.drain(..head_len);
    loop {
        if let Some(body) = body_if_complete(&buf, framing, limits)? {
            return Ok(HttpResponse { status, body });
        }
        let n = reader.read_some(&mut chunk)?;
        if n == 0 {
            return match framing {
                Framing::UntilClose => Ok(HttpResponse { status, body: buf }),
                _ => Err(HttpError::Truncated),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        // Chunked framing adds a few bytes per chunk: allow them on top of the body limit.
        if buf.len() > limits.max_body_bytes + limits.max_head_bytes {
            return Err(HttpError::BodyTooLarge { max: limits.max_body_bytes });
        }
    }
}

/// The status, framing and head length once the whole head is in `buf`.
fn parse_head(buf: &[u8], limits: HttpLimits) -> Result<Option<(u16, Framing, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::Malformed("too many headers")),
        Err(_) => return Err(HttpError::Malformed("bad status line or header")),
    };
    if head_len > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge { max: limits.max_head_bytes });
    }
    let status = response.code.ok_or(HttpError::Malformed("no status"))?;
    if (100..200).contains(&status) {
        return Err(HttpError::Malformed("interim 1xx responses are not supported"));
    }
    let mut framing = Framing::UntilClose;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !header.value.eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::Malformed("unsupported transfer-encoding"));
            }
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let len = std::str::from_utf8(header.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(HttpError::Malformed("bad content-length"))?;
            if matches!(framing, Framing::Length(other) if other != len) {
                return Err(HttpError::Malformed("conflicting content-length"));
            }
            framing = Framing::Length(len);
        }
    }
    if matches!(framing, Framing::Length(len) if len > limits.max_body_bytes) {
        return Err(HttpError::BodyTooLarge { max: limits.max_body_bytes });
    }
    Ok(Some((status, framing, head_len)))
}

fn body_if_complete(buf: &[u8], framing: Framing, limits: HttpLimits) -> Result<Option<Vec<u8>>, HttpError> {
    match framing {
        Framing::Length(len) if buf.len() >= len => Ok(Some(buf[..len].to_vec())),
        Framing::Length(_) => Ok(None),
        Framing::UntilClose if buf.len() > limits.max_body_bytes => {
            Err(HttpError::BodyTooLarge { max: limits.max_body_bytes })
        }
        Framing::UntilClose => Ok(None),
        Framing::Chunked => dechunk(buf, limits),
    }
}

/// The body once every chunk and the final empty one are in `buf` (trailers are refused).
fn dechunk(buf: &[u8], limits: HttpLimits) -> Result<Option<Vec<u8>>, HttpError> {
    let (mut body, mut at) = (Vec::new(), 0usize);
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HttpError::Malformed("bad chunk size")),
        };
        let size = usize::try_from(size).map_err(|_| HttpError::BodyTooLarge { max: limits.max_body_bytes })?;
        if size > limits.max_body_bytes - body.len().min(limits.max_body_bytes) {
            return Err(HttpError::BodyTooLarge { max: limits.max_body_bytes });
        }
        at += size_len;
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF"));
        }
        if size == 0 {
            return Ok(Some(body));
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers one connection with `answer` after reading the request head.
    fn serve_once(answer: Vec<u8>) -> (HttpUrl, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}/base", listener.local_addr().unwrap())).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let _ = stream.write_all(&answer);
            request
        });
        (url, handle)
    }

    fn limits() -> HttpLimits {
        HttpLimits { timeout: Duration::from_secs(5), max_head_bytes: 1024, max_body_bytes: 64 }
    }

    #[test]
    fn parses_urls_and_refuses_what_it_cannot_send() {
        let url = HttpUrl::parse("http://127.0.0.1:8080/witness/").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("127.0.0.1", 8080, "/witness"));
        assert_eq!(url.join("add-checkpoint").to_string(), "http://127.0.0.1:8080/witness/add-checkpoint");
        assert_eq!(HttpUrl::parse("http://w.example").unwrap().join("/x").to_string(), "http://w.example/x");
        assert_eq!(HttpUrl::parse("http://[::1]:9/").unwrap().port, 9);
        let https = HttpUrl::parse("https://w.example/log").unwrap();
        assert_eq!((https.scheme, https.port), (Scheme::Https, 443));
        assert_eq!(https.join("checkpoint").to_string(), "https://w.example/log/checkpoint");
        assert_eq!(HttpUrl::parse("https://w.example:8443").unwrap().to_string(), "https://w.example:8443/");
        for bad in ["ftp://x", "http://", "http://x:99999", "http://x/a b", "http://x/?q", "http://u@x/", "http://:80"]
        {
            assert!(matches!(HttpUrl::parse(bad), Err(HttpError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn posts_and_reads_length_chunked_and_close_delimited_bodies() {
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello trailing".to_vec());
        let response = post(&url.join("add"), "text/plain", b"body", limits()).unwrap();
        assert_eq!(response, HttpResponse { status: 200, body: b"hello".to_vec() });
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(request.starts_with("POST /base/add HTTP/1.1\r\nHost: 127.0.0.1:"), "{request}");
        assert!(request.contains("Content-Length: 4\r\n"), "{request}");
        let (url, _) =
            serve_once(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n12\n\r\n0\r\n\r\n".to_vec());
        assert_eq!(get(&url, limits()).unwrap(), HttpResponse { status: 409, body: b"12\n".to_vec() });
        let (url, _) = serve_once(b"HTTP/1.0 404 Not Found\r\n\r\ngone".to_vec());
        assert_eq!(get(&url, limits()).unwrap(), HttpResponse { status: 404, body: b"gone".to_vec() });
    }

    #[test]
    fn limits_and_malformed_responses_are_typed_errors() {
        type Expect = fn(&HttpError) -> bool;
        let cases: [(&[u8], Expect); 6] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n", |e| matches!(e, HttpError::BodyTooLarge { max: 64 })),
            (&[b'a'; 100], |e| matches!(e, HttpError::Malformed(_))),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", |e| matches!(e, HttpError::Truncated)),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", |e| matches!(e, HttpError::Malformed(_))),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", |e| matches!(e, HttpError::Malformed(_))),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n", |e| {
                matches!(e, HttpError::BodyTooLarge { .. })
            }),
        ];
        for (answer, want) in &cases {
            let (url, _) = serve_once(answer.to_vec());
            let error = get(&url, limits()).unwrap_err();
            assert!(want(&error), "{:?} gave {error:?}", String::from_utf8_lossy(answer));
        }
        let mut long_head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long_head.extend_from_slice(&[b'a'; 2000]);
        let (url, _) = serve_once(long_head);
        assert!(matches!(get(&url, limits()), Err(HttpError::HeadTooLarge { max: 1024 })));
        let mut long_body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        long_body.extend_from_slice(&[b'a'; 65]);
        let (url, _) = serve_once(long_body);
        assert!(matches!(get(&url, limits()), Err(HttpError::BodyTooLarge { max: 64 })));
    }

    /// A TLS server for `127.0.0.1` and `localhost` that answers one connection with `answer`;
    /// returns the PEM of its self-signed certificate.
    fn serve_once_over_tls(answer: &'static [u8]) -> (std::net::SocketAddr, String) {
        use std::sync::Arc;
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let connection = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, tcp);
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && matches!(tls.read(&mut byte), Ok(1)) {
                request.push(byte[0]);
            }
            let _ = tls.write_all(answer);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
        (addr, cert.pem())
    }

    #[test]
    fn https_trusts_the_named_ca_and_refuses_an_unknown_issuer() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (addr, ca_pem) = serve_once_over_tls(answer);
        let trusted = HttpClient::new(limits(), HttpsTrust::from_ca_pem(ca_pem.as_bytes()).unwrap());
        let url = HttpUrl::parse(&format!("https://localhost:{}/checkpoint", addr.port())).unwrap();
        assert_eq!(trusted.get(&url).unwrap(), HttpResponse { status: 200, body: b"ok".to_vec() });
        let (addr, _) = serve_once_over_tls(answer);
        let url = HttpUrl::parse(&format!("https://localhost:{}/checkpoint", addr.port())).unwrap();
        let error = get(&url, limits()).unwrap_err();
        assert!(matches!(error, HttpError::Tls(rustls::Error::InvalidCertificate(_))), "{error:?}");
        assert!(matches!(HttpsTrust::from_ca_pem(b"no pem here"), Err(crate::https_trust::TrustError::NoCertificate)));
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_port_fails_to_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let quick = HttpLimits { timeout: Duration::from_millis(200), ..limits() };
        let started = Instant::now();
        assert!(matches!(get(&url, quick), Err(HttpError::TimedOut)));
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
        assert!(matches!(get(&url, quick), Err(HttpError::Connect(_))));
    }
}
