//! `--tiles-listen`: the published log (`checkpoint`, `tile/…`; SPEC §10) served over plain
//! HTTP/1.1 from `--publish-dir`, for either runtime. Blocking threads of its own (one accepting,
//! one per connection, at most [`MAX_CONNECTIONS`]): the kernel and its RPCs never wait on it, and
//! it reads only the files the publisher has already written atomically.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use evidenceos_grpc::connect::http::{HttpError, HttpResponse, Limits, read_request, write_response};
use evidenceos_tlog::TilePath;

const TILES: &str = "Transparency-log publishing (C2SP checkpoints and tiles)";

/// Connections served at once; one more is answered 503 and closed.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A request must arrive whole within this of the connection's start or its previous response;
/// otherwise the connection is closed (idle or trickling alike).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take a response within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The accepting thread's bound on answering a refused connection.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Requests are GET/HEAD with no body: small heads, no body at all.
const LIMITS: Limits = Limits {
    max_header_bytes: 8 * 1024,
    max_headers: 32,
    max_body_bytes: 0,
    // GET and HEAD carry no body; a chunked one is held to the same zero bytes.
    max_chunk_line_bytes: 64,
    max_chunks: 1,
    max_trailer_bytes: 0,
};

use evidenceos_io_sync::publish_store::{CHECKPOINT_TYPE, CacheControl, TILE_TYPE};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TilesArgs {
    /// Serve --publish-dir over plain HTTP/1.1 at ADDR: GET and HEAD of /checkpoint and
    /// /tile/… (c2sp.org/tlog-tiles), with immutable cache headers on full tiles. Port 0 picks a
    /// free port (logged as event=tiles_listening). Off when not given.
    #[arg(long, value_name = "ADDR", requires = "publish_dir", help_heading = TILES)]
    pub(crate) tiles_listen: Option<SocketAddr>,
}

/// With --tiles-listen, binds it and starts the accepting thread over `publish_dir`.
pub(crate) fn start(args: &TilesArgs, publish_dir: Option<&Path>) -> Result<(), String> {
    let Some(addr) = args.tiles_listen else { return Ok(()) };
    let root = publish_dir.ok_or("--tiles-listen needs --publish-dir")?.to_path_buf();
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on --tiles-listen {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(event = "tiles_listening", addr = %local, root = %root.display(), "serving /checkpoint and /tile/");
    std::thread::Builder::new()
        .name("tiles-http".into())
        .spawn(move || accept_loop(&listener, &root))
        .map_err(|e| format!("cannot start the tiles thread: {e}"))?;
    Ok(())
}

fn accept_loop(listener: &TcpListener, root: &Path) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE and the like pass; back off so a full table does not spin the thread.
                tracing::warn!(event = "tiles_accept_failed", error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let slot = Slot::take(&open);
        if !slot.admitted {
            // Answered here, so a flood of connections cannot start a flood of threads.
            busy(stream);
            continue;
        }
        let root = root.to_path_buf();
        let spawned =
            std::thread::Builder::new().name("tiles-conn".into()).spawn(move || serve_connection(stream, &root, slot));
        if let Err(e) = spawned {
            tracing::warn!(event = "tiles_accept_failed", error = %e, "cannot start a connection thread");
        }
    }
}

/// One counted connection, `admitted` unless the cap was reached; the count drops with it.
struct Slot {
    open: Arc<AtomicUsize>,
    admitted: bool,
}

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Self {
        let admitted = open.fetch_add(1, Ordering::AcqRel) < MAX_CONNECTIONS;
        Self { open: open.clone(), admitted }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// 503 to a connection over [`MAX_CONNECTIONS`], without waiting on a slow peer.
fn busy(mut stream: TcpStream) {
    if stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT)).is_ok() {
        let _ = write_response(&mut stream, &HttpResponse { keep_alive: false, ..text(503, "too many connections\n") });
    }
}

/// Serves one admitted connection; `_slot` frees its place when the connection ends.
fn serve_connection(mut stream: TcpStream, root: &Path, _slot: Slot) {
    let peer = stream.peer_addr().ok();
    if stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    let mut buffered = Vec::new();
    loop {
        let mut timed = Deadline { stream: &mut stream, at: Instant::now() + REQUEST_TIMEOUT };
        let request = match read_request(&mut timed, &mut buffered, &LIMITS) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => return refuse(&mut stream, &error, peer),
        };
        let head_only = request.method == "HEAD";
        let response = HttpResponse { keep_alive: request.keep_alive, ..respond(root, &request.method, &request.path) };
        tracing::debug!(event = "tiles_http", peer = ?peer, method = %request.method, path = %request.path, status = response.status, bytes = response.body.len(), "tiles request");
        if send(&mut stream, &response, head_only).is_err() || !response.keep_alive {
            return;
        }
    }
}

/// The stream with a deadline for a whole request, not just for each read: a peer trickling
/// bytes would otherwise hold a connection slot forever.
struct Deadline<'a> {
    stream: &'a mut TcpStream,
    at: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Answers a request that could not be read (if anything should be), then the caller closes.
fn refuse(stream: &mut TcpStream, error: &HttpError, peer: Option<SocketAddr>) {
    tracing::debug!(event = "tiles_http", peer = ?peer, error = %error, "unreadable request");
    let response = match error {
        // No request here carries a body: a declared one is too large, not a Connect error.
        HttpError::BodyTooLarge { .. } => Some(text(413, "requests carry no body\n")),
        // The reader asks a POST for its length first; here any POST is the wrong method.
        HttpError::LengthRequired => Some(method_not_allowed()),
        _ => error.response(),
    };
    if let Some(response) = response {
        let _ = write_response(stream, &HttpResponse { keep_alive: false, ..response });
    }
}

/// Writes `response`; for HEAD the same head (with the body's `Content-Length`) and no body.
fn send(stream: &mut TcpStream, response: &HttpResponse, head_only: bool) -> io::Result<()> {
    if !head_only {
        return write_response(stream, response);
    }
    let mut message = Vec::new();
    write_response(&mut message, response)?;
    message.truncate(message.len() - response.body.len());
    stream.write_all(&message)?;
    stream.flush()
}

/// The response to `method path`, from the files under `root`.
fn respond(root: &Path, method: &str, path: &str) -> HttpResponse {
    if method != "GET" && method != "HEAD" {
        return method_not_allowed();
    }
    let Some(object) = Object::parse(path) else {
        return text(404, "no such object (paths are /checkpoint and canonical /tile/…)\n");
    };
    match std::fs::read(root.join(object.relative())) {
        Ok(body) => {
            let mut response = HttpResponse::new(200, object.content_type(), body);
            response.extra_headers.push(("Cache-Control", object.cache_control().into()));
            response
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => text(404, "not published\n"),
        Err(e) => {
            tracing::warn!(event = "tiles_read_failed", path = %path, error = %e, "reading a published object failed");
            text(500, "cannot read the object\n")
        }
    }
}

fn method_not_allowed() -> HttpResponse {
    let mut response = text(405, "only GET and HEAD\n");
    response.extra_headers.push(("Allow", "GET, HEAD".into()));
    response
}

fn text(status: u16, message: &str) -> HttpResponse {
    let mut response = HttpResponse::new(status, CHECKPOINT_TYPE, message.as_bytes().to_vec());
    response.extra_headers.push(("Cache-Control", "no-store".into()));
    response
}

/// What a request path may name: only these, so nothing else under the directory is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Checkpoint,
    Tile(TilePath),
}

impl Object {
    /// `/checkpoint` or a canonical `/tile/…` path (no `..`, no alternative spellings).
    fn parse(path: &str) -> Option<Self> {
        let relative = path.strip_prefix('/')?;
        if relative == "checkpoint" {
            return Some(Object::Checkpoint);
        }
        TilePath::parse(relative).ok().map(Object::Tile)
    }

    fn relative(&self) -> PathBuf {
        match self {
            Object::Checkpoint => PathBuf::from("checkpoint"),
            Object::Tile(tile) => PathBuf::from(tile.path()),
        }
    }

    fn content_type(&self) -> &'static str {
        match self {
            Object::Checkpoint => CHECKPOINT_TYPE,
            Object::Tile(_) => TILE_TYPE,
        }
    }

    fn cache_control(&self) -> &'static str {
        let full = match self {
            Object::Checkpoint => false,
            Object::Tile(TilePath::Hashes(tile)) => tile.is_full(),
            Object::Tile(TilePath::Entries(bundle)) => bundle.is_full(),
        };
        if full { CacheControl::Immutable } else { CacheControl::Revalidate }.header_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_checkpoint_and_canonical_tile_paths_name_objects() {
        assert_eq!(Object::parse("/checkpoint"), Some(Object::Checkpoint));
        let full = Object::parse("/tile/0/x001/234").unwrap();
        assert_eq!(full.relative(), PathBuf::from("tile/0/x001/234"));
        assert_eq!(full.cache_control(), CacheControl::Immutable.header_value());
        assert_eq!(
            Object::parse("/tile/entries/000.p/7").unwrap().cache_control(),
            CacheControl::Revalidate.header_value()
        );
        assert_eq!(Object::Checkpoint.cache_control(), CacheControl::Revalidate.header_value());
        for refused in
            ["checkpoint", "/checkpoint/", "/tile/0/1", "/tile/0/001.p/256", "/tile/../checkpoint", "/etl.log", "/"]
        {
            assert_eq!(Object::parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn methods_other_than_get_and_head_are_405_with_allow() {
        let response = respond(Path::new("/nonexistent"), "POST", "/checkpoint");
        assert_eq!(response.status, 405);
        assert!(response.extra_headers.iter().any(|(n, v)| *n == "Allow" && v == "GET, HEAD"));
        assert_eq!(respond(Path::new("/nonexistent"), "GET", "/checkpoint").status, 404);
    }
}
