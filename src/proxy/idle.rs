//! The keep-alive loop of an HTTP/1 connection, with the wait for each
//! request outside Pingora's request future.
//!
//! Pingora's own loop waits for the next request inside
//! `process_new_http`: an idle connection holds that whole boxed future
//! (the request path, about 8 KiB), the boxed future of the loop around it
//! and a 4 KiB head buffer: about 30 KiB of RSS in all with the socket
//! buffers (docs/BENCHMARKS.md, "Under abuse").
//! Here an idle connection holds only this loop, and no buffer: the first
//! bytes of its next head (at most 1 KiB, nginx's `client_header_buffer_size`)
//! are read into one only once they are there; the
//! request future and its buffers exist while a request is being served.
//! The first bytes are handed to Pingora as a pipelined prefix, so the
//! wait costs no extra read.

use super::head::HeadGuard;
use crate::edge::Edge;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read while idle: enough for most request heads in one read.
const FIRST_READ: usize = 1024;

/// An HTTP app served with the idle wait above; HTTP/2 (ALPN h2) goes to
/// Pingora's own connection handling unchanged.
pub struct H1Server<A> {
    pub app: Arc<A>,
    /// For the current keep-alive timeout (it follows reloads).
    pub edge: Arc<Edge>,
}

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
        let mut stream = stream;
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut pipelined = false;
        loop {
            // A pipelined request already read by the last one is parsed
            // from Pingora's buffer: no wait on the socket for it.
            let prefix = if pipelined {
                None
            } else {
                let idle = settings.as_ref().map(|_| self.keepalive());
                Some(first_bytes(&mut stream, idle, shutdown).await?)
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
            if let Some(prefix) = prefix {
                session.set_pipelined_prefix(prefix);
            }
            let reused = self.app.process_new_http(session, shutdown).await?;
            (stream, settings) = reused.consume();
            // Pingora parsed only our bytes, which held one whole head and
            // nothing after it: nothing can be left over. Else ask it.
            let clean = one_head && reads.is_some() && socket_reads(&stream) == reads;
            pipelined = !clean && settings.as_ref().is_some_and(has_pipelined_prefix);
            if *shutdown.borrow() {
                return None;
            }
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await
    }
}

impl<A> H1Server<A> {
    fn keepalive(&self) -> Duration {
        self.edge.state().config.proxy.keepalive_timeout
    }
}

/// Waits for the first bytes of the next request head (`idle`: at most
/// this long; None for a new connection, whose head deadline runs in the
/// head guard). None: the client left, the wait timed out, or the node
/// shuts down.
async fn first_bytes(
    stream: &mut Stream,
    idle: Option<Duration>,
    shutdown: &ShutdownWatch,
) -> Option<BytesMut> {
    let mut shutdown = shutdown.clone();
    let read = async {
        match idle {
            Some(limit) => tokio::time::timeout(limit, read_some(stream)).await.ok(),
            None => Some(read_some(stream).await),
        }
    };
    tokio::select! {
        r = read => match r {
            Some(Ok(head)) if !head.is_empty() => Some(head),
            _ => None,
        },
        _ = shutdown.changed() => None,
    }
}

/// One read of up to `FIRST_READ` bytes, into Pingora's head buffer as it
/// would have made it. The read buffer lives on the stack of each poll,
/// not in the waiting future: a read that is pending has taken no bytes,
/// so an idle connection holds no buffer at all.
async fn read_some(stream: &mut Stream) -> std::io::Result<BytesMut> {
    std::future::poll_fn(|cx| {
        let mut buf = [0u8; FIRST_READ];
        let mut read = ReadBuf::new(&mut buf);
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

/// Reads that returned bytes on this connection, where the head guard
/// counts them (HTTP/1 on both listeners).
fn socket_reads(stream: &Stream) -> Option<u64> {
    stream
        .as_any()
        .downcast_ref::<HeadGuard>()
        .map(HeadGuard::reads)
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
