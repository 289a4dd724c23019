//! One HTTP/3 request stream as a Pingora server session: Pingora's
//! custom-session seam (`pingora_core::protocols::http::custom`), so an
//! HTTP/3 request goes through the same fast path and `ProxyHttp` phases
//! as HTTP/1 and HTTP/2 ones. Modelled on Pingora's own HTTP/2 session:
//! the same hop-by-hop fields dropped, `Date` added, `finish` idempotent,
//! a response that cannot be finished reset so the client does not take
//! a part for the whole.

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use futures::FutureExt;
use h3::error::Code;
use h3::server::RequestStream;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue};
use pingora_core::protocols::http::body_buffer::FixedBuffer;
use pingora_core::protocols::http::custom::server::Session;
use pingora_core::protocols::http::custom::CustomMessageWrite;
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::http::HttpTask;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::Digest;
use pingora_core::{Error, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Mutex;
use std::time::Duration;

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// A request body kept for a retry at most (Pingora's own limit for
/// HTTP/1 and HTTP/2).
const RETRY_BUFFER: usize = 64 * 1024;

/// An HTTP/3 request and its response stream.
pub struct H3Session {
    req: RequestHeader,
    /// quinn's write future is not `Sync`; the session is only ever used
    /// through `&mut`, so the lock is never contended (`get_mut`).
    stream: Mutex<Stream>,
    connection: quinn::Connection,
    client: SocketAddr,
    server: Option<SocketAddr>,
    digest: Digest,
    /// A body chunk read ahead at creation (to learn whether there is a body).
    first: Option<Bytes>,
    body_done: bool,
    body_empty: bool,
    response: Option<ResponseHeader>,
    ended: bool,
    body_read: usize,
    body_sent: usize,
    retry_buffer: Option<FixedBuffer>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
}

impl H3Session {
    /// The session of a request whose head the h3 layer has read.
    pub fn new(
        req: http::Request<()>,
        mut stream: Stream,
        connection: quinn::Connection,
        server: Option<std::net::SocketAddr>,
    ) -> H3Session {
        let (parts, ()) = req.into_parts();
        let mut req = RequestHeader::from(parts);
        // Pingora copies :authority to Host only for HTTP/2 requests; an
        // HTTP/1 origin needs one (the rules read the authority first).
        if !req.headers.contains_key(HOST) {
            let host = req.uri.authority().map(|a| a.as_str().to_string());
            if let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                let _ = req.insert_header(HOST, host);
            }
        }
        // Whether a body follows is known if the client ended the stream
        // with its head (the usual GET), or said Content-Length: 0.
        let said_empty = req
            .headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        let (first, body_done) = match stream.recv_data().now_or_never() {
            Some(Ok(Some(mut chunk))) => (Some(chunk.copy_to_bytes(chunk.remaining())), false),
            Some(Ok(None)) => (None, true),
            Some(Err(_)) | None => (None, false),
        };
        H3Session {
            req,
            stream: Mutex::new(stream),
            client: SocketAddr::Inet(connection.remote_address()),
            server: server.map(SocketAddr::Inet),
            connection,
            digest: Digest::default(),
            body_empty: said_empty || (body_done && first.is_none()),
            first,
            body_done,
            response: None,
            ended: false,
            body_read: 0,
            body_sent: 0,
            retry_buffer: None,
            read_timeout: None,
            write_timeout: None,
            drain_timeout: None,
        }
    }

    fn stream(&mut self) -> &mut Stream {
        unlocked(&mut self.stream)
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        if self.body_done {
            return Ok(None);
        }
        let timeout = self.read_timeout;
        let read = async {
            match self.stream().recv_data().await {
                Ok(Some(mut chunk)) => Ok(Some(chunk.copy_to_bytes(chunk.remaining()))),
                Ok(None) => Ok(None),
                Err(e) => Error::e_explain(ErrorType::ReadError, e.to_string()),
            }
        };
        let chunk = match timeout {
            Some(t) => match tokio::time::timeout(t, read).await {
                Ok(r) => r,
                Err(_) => Error::e_explain(ErrorType::ReadTimedout, "reading HTTP/3 body"),
            },
            None => read.await,
        };
        let chunk = chunk.map_err(|e| e.into_down())?;
        if chunk.is_none() {
            self.body_done = true;
        }
        Ok(chunk)
    }

    /// Stops the response where it is: the client sees the stream reset.
    fn reset(&mut self) {
        if !self.ended {
            self.ended = true;
            self.stream().stop_stream(Code::H3_INTERNAL_ERROR);
        }
    }
}

fn unlocked(stream: &mut Mutex<Stream>) -> &mut Stream {
    stream.get_mut().unwrap_or_else(|p| p.into_inner())
}

/// A write to the client, bounded by the write timeout.
async fn timed<T>(
    timeout: Option<Duration>,
    what: &'static str,
    f: impl std::future::Future<Output = std::result::Result<T, h3::error::StreamError>>,
) -> Result<T> {
    let written = match timeout {
        Some(t) => match tokio::time::timeout(t, f).await {
            Ok(r) => r,
            Err(_) => return Error::e_explain(ErrorType::WriteTimedout, what).map_err(down),
        },
        None => f.await,
    };
    written
        .or_err_with(ErrorType::WriteError, || what)
        .map_err(down)
}

fn down(e: Box<Error>) -> Box<Error> {
    e.into_down()
}

/// Fields that name the HTTP/1 connection, not the message: not sent on
/// HTTP/3 (RFC 9114 §4.2), as Pingora drops them for HTTP/2.
fn strip_connection_fields(head: &mut ResponseHeader) {
    head.remove_header(&TRANSFER_ENCODING);
    head.remove_header(&CONNECTION);
    head.remove_header(&UPGRADE);
    head.remove_header("keep-alive");
    head.remove_header("proxy-connection");
}

#[async_trait]
impl Session for H3Session {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        let chunk = self.next_chunk().await?;
        if let Some(c) = &chunk {
            self.body_read += c.len();
            if let Some(buffer) = self.retry_buffer.as_mut() {
                buffer.write_to_buffer(c);
            }
        }
        Ok(chunk)
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        let timeout = self.drain_timeout;
        let drain = async {
            while self.read_body_bytes().await?.is_some() {}
            Ok(())
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, drain)
                .await
                .unwrap_or_else(|_| Error::e_explain(ErrorType::ReadTimedout, "draining body")),
            None => drain.await,
        }
    }

    async fn write_response_header(
        &mut self,
        mut resp: Box<ResponseHeader>,
        end: bool,
    ) -> Result<()> {
        // Informational heads are not sent (as Pingora's HTTP/2), nor a
        // second final one.
        if self.ended || resp.status.is_informational() || self.response.is_some() {
            return Ok(());
        }
        let _ = resp.insert_header(http::header::DATE, get_cached_date());
        strip_connection_fields(&mut resp);
        let head = http::Response::from_parts(resp.as_owned_parts(), ());
        timed(
            self.write_timeout,
            "writing HTTP/3 response head",
            unlocked(&mut self.stream).send_response(head),
        )
        .await?;
        self.response = Some(*resp);
        if end {
            self.finish().await?;
        }
        Ok(())
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        self.write_response_header(Box::new(resp.clone()), end)
            .await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if self.response.is_none() {
            return Error::e_explain(ErrorType::InternalError, "HTTP/3 body before its head");
        }
        let len = data.len();
        if len > 0 {
            timed(
                self.write_timeout,
                "writing HTTP/3 body",
                unlocked(&mut self.stream).send_data(data),
            )
            .await?;
            self.body_sent += len;
        }
        if end {
            self.finish().await?;
        }
        Ok(())
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        if self.ended || self.response.is_none() {
            return Ok(());
        }
        timed(
            self.write_timeout,
            "writing HTTP/3 trailers",
            unlocked(&mut self.stream).send_trailers(trailers),
        )
        .await?;
        self.finish().await
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let mut end_stream = false;
        for task in tasks {
            let end = match task {
                HttpTask::Header(head, end) => {
                    self.write_response_header(head, end).await?;
                    end
                }
                HttpTask::Body(data, end) => {
                    self.write_body(data.unwrap_or_default(), end).await?;
                    end
                }
                HttpTask::UpgradedBody(..) => {
                    return Error::e_explain(ErrorType::InternalError, "upgraded body on HTTP/3");
                }
                HttpTask::Trailer(Some(trailers)) => {
                    self.write_trailers(*trailers).await?;
                    true
                }
                HttpTask::Trailer(None) | HttpTask::Done => true,
                HttpTask::Failed(e) => return Err(e),
            };
            end_stream = end_stream || end;
        }
        if end_stream {
            self.finish().await?;
        }
        Ok(end_stream)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.drain_timeout = timeout;
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout
    }

    fn request_summary(&self) -> String {
        let path = self.req.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = self.req.uri.authority().map_or("", |a| a.as_str());
        format!("{} {path}, Host: {host}", self.req.method)
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_ref()
    }

    async fn shutdown(&mut self, _code: u32, _ctx: &str) {
        self.reset();
    }

    fn is_body_done(&mut self) -> bool {
        self.body_empty || (self.body_done && self.first.is_none())
    }

    /// Ends the response: the stream's FIN after a complete response; a
    /// reset when no head was written (the client must not wait). Called
    /// more than once by the proxy: only the first counts.
    async fn finish(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if self.response.is_none() {
            self.reset();
            return Ok(());
        }
        self.ended = true;
        let done = unlocked(&mut self.stream).finish();
        timed(self.write_timeout, "finishing HTTP/3 response", done).await
    }

    fn is_body_empty(&mut self) -> bool {
        self.body_empty
    }

    /// The body, or (none expected, or all read) a wait that ends only
    /// when the client's connection does: Pingora races it against the
    /// upstream to notice a client that went away.
    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        if no_body_expected || self.is_body_done() {
            let why = self.connection.closed().await;
            return Error::e_explain(ErrorType::ConnectionClosed, why.to_string()).map_err(down);
        }
        self.read_body_bytes().await
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    fn digest(&self) -> Option<&Digest> {
        Some(&self.digest)
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        Some(&mut self.digest)
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        Some(&self.client)
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        self.server.as_ref()
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        let path = self.req.uri.path_and_query().map_or("/", |p| p.as_str());
        Bytes::from(format!("{} {path} HTTP/1.1\r\n\r\n", self.req.method))
    }

    fn enable_retry_buffering(&mut self) {
        if self.retry_buffer.is_none() {
            self.retry_buffer = Some(FixedBuffer::new(RETRY_BUFFER));
        }
    }

    fn retry_buffer_truncated(&self) -> bool {
        self.retry_buffer.as_ref().is_some_and(|b| b.is_truncated())
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        let buffer = self.retry_buffer.as_ref()?;
        (!buffer.is_truncated())
            .then(|| buffer.get_buffer())
            .flatten()
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(
        &mut self,
    ) -> Option<Box<dyn futures::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>>
    {
        None
    }

    fn restore_custom_message_reader(
        &mut self,
        _reader: Box<dyn futures::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>,
    ) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(
        &mut self,
        _writer: Box<dyn CustomMessageWrite>,
    ) -> Result<()> {
        Ok(())
    }
}

impl Drop for H3Session {
    /// A session dropped before its response was finished (the task
    /// ended, the proxy gave up): the client sees a reset, never a
    /// response cut short that looks whole.
    fn drop(&mut self) {
        self.reset();
    }
}
