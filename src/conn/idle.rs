//! The keep-alive loop of an HTTP/1 connection, with the wait for each
//! request outside Pingora's request future.
//!
//! Pingora's own loop waits for the next request inside
//! `process_new_http`: an idle connection holds that whole boxed future
//! (the request path, about 8 KiB), the boxed future of the loop around it
//! and a 4 KiB head buffer: about 30 KiB of RSS in all with the socket
//! buffers (docs/BENCHMARKS.md, "Under abuse").
//! Here an idle connection holds only this loop, and no buffer: the first
//! bytes of its next head (at most 4 KiB) are read into one only once they
//! are there; the
//! request future and its buffers exist while a request is being served.
//! The first bytes are handed to Pingora as a pipelined prefix, so the
//! wait costs no extra read.

use super::fast::{hand_over, head_is_hot, Decided, FastPath, Served};
use super::park::{Lot, Resume, PARK_AFTER};
use super::stream::{self, ClientStream};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use std::cell::OnceCell;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tracing::warn;

/// Bytes read while idle: a browser's head with its cookies in one read
/// (so it can take the fast path), on the stack of the poll only.
const FIRST_READ: usize = 4096;

/// An HTTP app served with the idle wait above; HTTP/2 (ALPN h2) goes to
/// Pingora's own connection handling unchanged.
pub struct H1Server<A> {
    pub app: Arc<A>,
    /// The current keep-alive timeout (it follows reloads).
    pub keepalive: KeepAlive,
    /// The upper floor's hot path, offered each request whose head came
    /// whole in one read before `app` sees it.
    pub fast: Option<Arc<dyn FastPath>>,
}

/// Asked at each wait: the keep-alive timeout of the config in force.
pub type KeepAlive = Arc<dyn Fn() -> Duration + Send + Sync>;

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for H1Server<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        self.serve(stream, None, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> H1Server<A> {
    /// The keep-alive loop, from a new connection (`settings` None) or a
    /// parked one taken back.
    async fn serve(
        self: &Arc<Self>,
        mut stream: Stream,
        mut settings: Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) {
        let mut pipelined = false;
        loop {
            // A pipelined request already read by the last one is parsed
            // from Pingora's buffer: no wait on the socket for it.
            let prefix = if pipelined {
                None
            } else if settings.is_none() {
                match first_bytes(&mut stream, None, shutdown).await {
                    Ok(bytes) => Some(bytes),
                    Err(_) => return,
                }
            } else {
                match self.between_requests(stream, &mut settings, shutdown).await {
                    Between::Request(s, bytes) => {
                        stream = s;
                        Some(bytes)
                    }
                    Between::Parked | Between::Closed => return,
                }
            };
            let one_head = prefix.as_deref().is_some_and(exactly_one_head);
            let reads = socket_reads(&stream);
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    let limit = self
                        .app
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit);
                    session.set_keepalive(Some(self.keepalive().as_secs().max(1)));
                    session.set_keepalive_reuses_remaining(limit);
                }
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let fast = self.fast.as_deref().filter(|f| one_head && f.enabled());
            let fast = fast.filter(|_| prefix.as_deref().is_some_and(head_is_hot));
            let reused = match (fast, prefix) {
                // Boxed: inline, its state (a whole HTTP/1 session) would
                // grow every waiting connection's task by kilobytes.
                (Some(fast), Some(head)) => match Box::pin(offer(fast, session, head)).await {
                    Offered::Answered(reused) => reused,
                    Offered::Declined(session, decided) => {
                        hand_over(&self.app, session, decided, shutdown).await
                    }
                },
                (_, prefix) => {
                    if let Some(prefix) = prefix {
                        session.set_pipelined_prefix(prefix);
                    }
                    self.app.process_new_http(session, shutdown).await
                }
            };
            let Some(reused) = reused else {
                return;
            };
            let kept;
            (stream, kept) = reused.consume();
            settings = kept;
            // Pingora parsed only our bytes, which held one whole head and
            // nothing after it: nothing can be left over. Else ask it.
            let clean = one_head && reads.is_some() && socket_reads(&stream) == reads;
            pipelined = !clean && settings.as_ref().is_some_and(has_pipelined_prefix);
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// The wait for the next request on a keep-alive connection. A plain
    /// HTTP connection still idle after `PARK_AFTER` is parked (its task
    /// ends here; `park.rs` takes it back with a new one).
    async fn between_requests(
        self: &Arc<Self>,
        mut stream: Stream,
        settings: &mut Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) -> Between {
        let keepalive = self.keepalive();
        let idle_since = tokio::time::Instant::now();
        let client = stream.as_any().downcast_ref::<ClientStream>();
        let parkable = keepalive > PARK_AFTER && client.is_some_and(ClientStream::parkable);
        let lot = parkable
            .then(|| LOT.with(|lot| lot.get_or_init(|| Lot::start(shutdown.clone())).clone()))
            .flatten();
        let Some(lot) = lot else {
            return wait_in_task(stream, keepalive, shutdown).await;
        };
        let waited = tokio::select! {
            r = first_bytes(&mut stream, Some(keepalive), shutdown) => Some(r),
            _ = lot.idle_since(idle_since) => None,
        };
        match waited {
            Some(Ok(bytes)) => return Between::Request(stream, bytes),
            Some(Err(_)) => return Between::Closed,
            None if *shutdown.borrow() => return Between::Closed,
            None => {}
        }
        let Some(kept) = settings.take() else {
            return Between::Closed;
        };
        match self.park(&lot, stream, kept, idle_since + keepalive) {
            Ok(()) => Between::Parked,
            Err((back, kept)) => {
                // Not parked after all: the rest of the wait in this task.
                *settings = Some(kept);
                let rest = keepalive.saturating_sub(idle_since.elapsed());
                wait_in_task(back, rest, shutdown).await
            }
        }
    }

    /// Hands the connection to this thread's lot, or gives it back.
    #[allow(clippy::result_large_err)]
    fn park(
        self: &Arc<Self>,
        lot: &Lot<Idle>,
        stream: Stream,
        settings: HttpPersistentSettings,
        deadline: tokio::time::Instant,
    ) -> Result<(), (Stream, HttpPersistentSettings)> {
        if !stream.as_any().is::<ClientStream>() {
            return Err((stream, settings));
        }
        let client = stream
            .into_any()
            .downcast::<ClientStream>()
            .expect("checked just above");
        let (socket, kept) = match client.into_socket() {
            Ok(parts) => parts,
            Err(client) => return Err((client, settings)),
        };
        let kept = Idle {
            server: self.clone(),
            settings,
            kept,
        };
        if let Err(e) = lot.park(socket, deadline, kept) {
            // The socket is closed: an idle keep-alive connection may be.
            warn!("an idle connection could not be parked, closed: {e}");
        }
        Ok(())
    }

    fn keepalive(&self) -> Duration {
        (self.keepalive)()
    }
}

thread_local! {
    /// This worker thread's parked connections (`park.rs`).
    static LOT: OnceCell<Option<Arc<Lot<Idle>>>> = const { OnceCell::new() };
}

/// What a parked connection keeps besides its socket.
struct Idle {
    server: Arc<dyn Resumed>,
    settings: HttpPersistentSettings,
    kept: stream::Parked,
}

impl Resume for Idle {
    fn resume(self, socket: std::net::TcpStream, shutdown: &ShutdownWatch) {
        match ClientStream::resumed(socket, self.kept) {
            Ok(client) => self
                .server
                .serve_again(Box::new(client), self.settings, shutdown),
            Err(e) => warn!("a parked connection could not be taken back, closed: {e}"),
        }
    }
}

/// The keep-alive loop of a connection taken back from the lot, in a new
/// task on this thread.
trait Resumed: Send + Sync + 'static {
    fn serve_again(
        self: Arc<Self>,
        stream: Stream,
        settings: HttpPersistentSettings,
        shutdown: &ShutdownWatch,
    );
}

impl<A: HttpServerApp + Send + Sync + 'static> Resumed for H1Server<A> {
    fn serve_again(
        self: Arc<Self>,
        stream: Stream,
        settings: HttpPersistentSettings,
        shutdown: &ShutdownWatch,
    ) {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { self.serve(stream, Some(settings), &shutdown).await });
    }
}

/// What became of a request offered to the hot path. (Unboxed: it is
/// moved once, and a box would cost every declined request an allocation.)
#[allow(clippy::large_enum_variant)]
enum Offered {
    /// Answered there: the connection to go on with, if it may.
    Answered(Option<ReusedHttpStream>),
    /// For Pingora's proxy: the session, its request kept for the proxy's
    /// read (or, when it could not be read, a new one over the same bytes).
    Declined(ServerSession, Option<Decided>),
}

/// Reads the request whose whole head is `head` with `session` (no read
/// from the socket) and offers it to the hot path.
async fn offer(fast: &dyn FastPath, mut session: ServerSession, head: BytesMut) -> Offered {
    let keepalive = session.get_keepalive();
    let reuses = session.get_keepalive_reuses_remaining();
    session.set_pipelined_prefix(head.clone());
    if let Ok(true) = session.read_request().await {
        match fast.serve(&mut session).await {
            Served::Answered => {
                let kept = HttpPersistentSettings::for_session(&session);
                let reusable = session.finish().await.ok().flatten();
                let reused = reusable.map(|r| ReusedHttpStream::from_reusable_stream(r, kept));
                return Offered::Answered(reused);
            }
            // Dropped unfinished: the connection closes.
            Served::Broken => return Offered::Answered(None),
            Served::Declined(decided) => {
                // The same session goes on, its request read once (the
                // pingora-core patch `keep_request`).
                session.keep_request();
                return Offered::Declined(session, decided);
            }
        }
    }
    // A head Pingora's session could not read: its proxy reads it again,
    // on a new session over the same bytes, and answers as it does.
    let ServerSession::H1(read) = session else {
        return Offered::Answered(None); // HTTP/1 only: never reached
    };
    let mut again = ServerSession::new_http1(read.into_inner());
    again.set_keepalive(keepalive);
    again.set_keepalive_reuses_remaining(reuses);
    again.set_pipelined_prefix(head);
    Offered::Declined(again, None)
}

/// How the wait between two requests ended.
enum Between {
    Request(Stream, BytesMut),
    Parked,
    Closed,
}

/// The wait for the next request in this task, at most `limit`.
async fn wait_in_task(mut stream: Stream, limit: Duration, shutdown: &ShutdownWatch) -> Between {
    match first_bytes(&mut stream, Some(limit), shutdown).await {
        Ok(bytes) => Between::Request(stream, bytes),
        Err(_) => Between::Closed,
    }
}

/// Why no bytes came.
enum Waited {
    /// The client left, or the node shuts down.
    Closed,
    TimedOut,
}

/// Waits for the first bytes of the next request head (`idle`: at most
/// this long; None for a new connection, whose head deadline runs in the
/// client stream).
async fn first_bytes(
    stream: &mut Stream,
    idle: Option<Duration>,
    shutdown: &ShutdownWatch,
) -> Result<BytesMut, Waited> {
    let mut shutdown = shutdown.clone();
    let read = async {
        match idle {
            Some(limit) => tokio::time::timeout(limit, read_some(stream)).await,
            None => Ok(read_some(stream).await),
        }
    };
    tokio::select! {
        r = read => match r {
            Ok(Ok(head)) if !head.is_empty() => Ok(head),
            Ok(_) => Err(Waited::Closed),
            Err(_) => Err(Waited::TimedOut),
        },
        _ = shutdown.changed() => Err(Waited::Closed),
    }
}

/// One read of up to `FIRST_READ` bytes, into Pingora's head buffer as it
/// would have made it. The read buffer lives on the stack of each poll,
/// not in the waiting future: a read that is pending has taken no bytes,
/// so an idle connection holds no buffer at all.
async fn read_some(stream: &mut Stream) -> std::io::Result<BytesMut> {
    std::future::poll_fn(|cx| {
        // Not zeroed: a read fills what it returns (zeroing 4 KiB cost
        // 4k instructions on every poll).
        let mut buf = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut read = ReadBuf::uninit(&mut buf);
        std::task::ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        let mut head = BytesMut::with_capacity(4096.max(n));
        head.extend_from_slice(read.filled());
        Poll::Ready(Ok(head))
    })
    .await
}

/// The bytes are one request head, ending where they end.
fn exactly_one_head(bytes: &[u8]) -> bool {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    end.is_some_and(|at| at + 4 == bytes.len())
}

/// Reads that returned bytes on this connection, where the client stream
/// counts them (HTTP/1 on both listeners).
fn socket_reads(stream: &Stream) -> Option<u64> {
    stream
        .as_any()
        .downcast_ref::<ClientStream>()
        .map(ClientStream::reads)
}

/// Whether Pingora read bytes of a pipelined request past the last one.
/// Pingora 0.9 has no accessor; its `Debug` names the field. Slow (asked
/// after every request it cost 6-10% of a cached page), so asked only
/// when the cheap test above cannot rule a prefix out.
fn has_pipelined_prefix(settings: &HttpPersistentSettings) -> bool {
    format!("{settings:?}").contains("pipelined_prefix: Some")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn session() -> ServerSession {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (_, accepted) = tokio::join!(client, listener.accept());
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            accepted.unwrap().0,
        ));
        ServerSession::new_http1(stream)
    }

    #[test]
    fn one_head_is_told_from_a_head_and_more() {
        assert!(exactly_one_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!exactly_one_head(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
        ));
        assert!(!exactly_one_head(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
        ));
        assert!(!exactly_one_head(b"GET / HTTP/1.1\r\nHost: a\r\n"));
    }

    #[tokio::test]
    async fn a_pipelined_prefix_is_seen_in_the_settings() {
        let session = session().await;
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(!has_pipelined_prefix(&settings));
        settings.set_pipelined_prefix(BytesMut::from(&b"GET /next HTTP/1.1\r\n"[..]));
        assert!(has_pipelined_prefix(&settings));
    }
}
