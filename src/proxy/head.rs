//! Limits on an HTTP/1 request head, below Pingora's parser: at most
//! `max_bytes` (answered 431) and all of it within `timeout` of its first
//! byte (answered 408). Pingora accepts a head of up to 1 MiB and restarts
//! its read timer on every byte, so a slowloris client trickling a header
//! line now and then would hold its connection for ever.
//!
//! The guard sees bytes, not requests: a head starts at the connection's
//! start and after each response the edge writes (an interim `100 Continue`
//! excepted), and ends at the first empty line. Body bytes come after that
//! and are not limited here.
//!
//! On the way out the guard holds small response writes back (`gather`),
//! so a head leaves with its body in one write.

use super::gather::Gather;
use super::places::Admitted;
use crate::metrics::METRICS;
use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::protocols::{Shutdown, Ssl, ALPN};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The two limits (`proxy.max_head_bytes`, `proxy.head_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// A short answer that ends the connection.
fn refusal(status: &str, reason: &str) -> Vec<u8> {
    let body = format!("{status}: {reason}\n");
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

enum State {
    /// Reading a head: bytes so far, the last 3 (for an empty line split
    /// over reads), and whether its deadline runs (from its first byte).
    Head {
        bytes: usize,
        tail: [u8; 3],
        armed: bool,
    },
    /// Past the head: body bytes, or a pipelined request Pingora buffers.
    Body,
    /// After `101 Switching Protocols` the bytes are another protocol's
    /// (WebSocket): never read as a head again.
    Tunnel,
    /// Writing the refusal, then the connection ends.
    Refusing(Vec<u8>, usize),
}

pub struct HeadGuard {
    inner: Stream,
    limits: HeadLimits,
    state: State,
    /// One timer per connection, reset for each head (no allocation and no
    /// new timer per request on a keep-alive connection).
    deadline: Pin<Box<Sleep>>,
    /// Reads that returned bytes, in all (the keep-alive loop asks).
    reads: u64,
    /// The response being written: a head leaves with its body.
    gather: Gather,
    /// The connection's place at the door (plain HTTP), kept while parked.
    place: Option<Admitted>,
}

/// What a parked connection keeps besides its socket, to be guarded again.
pub struct Parked {
    limits: HeadLimits,
    place: Option<Admitted>,
    /// The client's address, so no `getpeername` is asked again.
    peer: Option<std::net::SocketAddr>,
}

impl HeadGuard {
    pub fn new(inner: Stream, limits: HeadLimits) -> Self {
        HeadGuard {
            inner,
            limits,
            // The first head's clock runs from the accept: a connection that
            // sends nothing is a slowloris too.
            state: State::Head {
                bytes: 0,
                tail: [0; 3],
                armed: true,
            },
            deadline: Box::pin(tokio::time::sleep(limits.timeout)),
            reads: 0,
            gather: Gather::default(),
            place: None,
        }
    }

    /// The guard holds the connection's place at the door.
    pub fn holding(mut self, place: Admitted) -> Self {
        self.place = Some(place);
        self
    }

    /// Between requests on a plain TCP connection, with nothing held back
    /// or refused: the connection can be parked as its socket.
    pub fn parkable(&self) -> bool {
        let between = matches!(self.state, State::Head { bytes: 0, .. });
        between && self.gather.is_empty() && self.inner.as_any().is::<L4Stream>()
    }

    /// The socket, out of its task's runtime, and what the guard keeps; or
    /// the guard back when the connection cannot be parked.
    pub fn into_socket(self: Box<Self>) -> Result<(std::net::TcpStream, Parked), Box<Self>> {
        if !self.parkable() {
            return Err(self);
        }
        let peer = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(SocketAddr::as_inet).copied());
        // Between requests the rest is empty: no head read, nothing held.
        let HeadGuard {
            inner,
            limits,
            place,
            ..
        } = *self;
        let l4 = inner
            .into_any()
            .downcast::<L4Stream>()
            .expect("parkable() checked the type");
        match l4.into_std_tcp() {
            Ok(socket) => Ok((
                socket,
                Parked {
                    limits,
                    place,
                    peer,
                },
            )),
            Err(l4) => {
                let mut guard = HeadGuard::new(Box::new(l4), limits).with_place(place);
                guard.state = Self::next_head();
                Err(Box::new(guard))
            }
        }
    }

    /// A parked connection guarded again, its socket registered with this
    /// thread's runtime: its next head is read from here.
    pub fn resumed(socket: std::net::TcpStream, parked: Parked) -> std::io::Result<Self> {
        let fd = socket.as_raw_fd();
        let mut l4 = L4Stream::from(tokio::net::TcpStream::from_std(socket)?);
        let digest = SocketDigest::from_raw_fd(fd);
        if let Some(peer) = parked.peer {
            let _ = digest.peer_addr.set(Some(SocketAddr::Inet(peer)));
        }
        l4.set_socket_digest(digest);
        Ok(HeadGuard::new(Box::new(l4), parked.limits).with_place(parked.place))
    }

    fn with_place(mut self, place: Option<Admitted>) -> Self {
        self.place = place;
        self
    }

    /// How many reads from the connection returned bytes so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    fn next_head() -> State {
        State::Head {
            bytes: 0,
            tail: [0; 3],
            armed: false,
        }
    }

    /// The edge writes `bytes` of a response: after a final response the
    /// next bytes read are a new head; after a 101 they never are.
    fn responding(&mut self, bytes: &[u8]) {
        if !matches!(self.state, State::Body) {
            return;
        }
        if bytes.starts_with(b"HTTP/1.1 101") {
            self.state = State::Tunnel;
        } else if !bytes.starts_with(b"HTTP/1.1 100") {
            self.state = Self::next_head();
        }
    }

    fn refuse(&mut self, response: Vec<u8>, what: &str) {
        METRICS.client_limits.with_label_values(&[what]).inc();
        self.state = State::Refusing(response, 0);
    }
}

/// Where the head ends in `new` (the index after its empty line), given
/// the 3 bytes before it.
fn head_end(tail: [u8; 3], new: &[u8]) -> Option<usize> {
    let mut window = u32::from_be_bytes([0, tail[0], tail[1], tail[2]]);
    for (i, b) in new.iter().enumerate() {
        window = (window << 8) | u32::from(*b);
        if window == u32::from_be_bytes(*b"\r\n\r\n") || window & 0xffff == 0x0a0a {
            return Some(i + 1);
        }
    }
    None
}

fn last3(tail: [u8; 3], new: &[u8]) -> [u8; 3] {
    match *new {
        [] => tail,
        [x] => [tail[1], tail[2], x],
        [x, y] => [tail[2], x, y],
        [.., x, y, z] => [x, y, z],
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Refusing(response, written) => {
                    while *written < response.len() {
                        let n = ready!(
                            Pin::new(&mut this.inner).poll_write(cx, &response[*written..])
                        )?;
                        if n == 0 {
                            break;
                        }
                        *written += n;
                    }
                    let _ = Pin::new(&mut this.inner).poll_flush(cx);
                    return Poll::Ready(Err(std::io::ErrorKind::InvalidData.into()));
                }
                State::Body | State::Tunnel => {
                    let before = buf.filled().len();
                    let read = Pin::new(&mut this.inner).poll_read(cx, buf);
                    this.reads += u64::from(buf.filled().len() > before);
                    return read;
                }
                State::Head { bytes, tail, armed } => {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Pending => {
                            if *armed && this.deadline.as_mut().poll(cx).is_ready() {
                                this.refuse(
                                    refusal(
                                        "408 Request Timeout",
                                        "the request head came too slowly",
                                    ),
                                    "head_timeout",
                                );
                                continue;
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let new = &buf.filled()[before..];
                    if new.is_empty() {
                        return Poll::Ready(Ok(())); // EOF
                    }
                    this.reads += 1;
                    if !*armed {
                        let at = Instant::now() + this.limits.timeout;
                        this.deadline.as_mut().reset(at);
                        *armed = true;
                    }
                    match head_end(*tail, new) {
                        Some(end) if *bytes + end <= this.limits.max_bytes => {
                            this.state = State::Body;
                        }
                        None if *bytes + new.len() <= this.limits.max_bytes => {
                            *bytes += new.len();
                            *tail = last3(*tail, new);
                        }
                        _ => {
                            // What was read is dropped: Pingora never sees the head.
                            buf.set_filled(before);
                            this.refuse(
                                refusal(
                                    "431 Request Header Fields Too Large",
                                    "the request head is too large",
                                ),
                                "head_too_large",
                            );
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.responding(buf);
        this.gather.poll_write(&mut this.inner, cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.gather.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.gather.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.responding(first);
        }
        this.gather.poll_write_vectored(&mut this.inner, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

impl std::fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadGuard")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        // Through the gather: what it holds goes out first.
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl Ssl for HeadGuard {
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

io_digests_from_inner!(HeadGuard, |s| s.inner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_line_is_found_across_reads() {
        assert_eq!(
            head_end([0; 3], b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"),
            Some(27)
        );
        assert_eq!(head_end(*b"a\r\n", b"\r\nbody"), Some(2));
        assert_eq!(head_end(*b"\r\n\r", b"\nx"), Some(1));
        assert_eq!(head_end([0; 3], b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end([0; 3], b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(last3(*b"abc", b"de"), *b"cde");
        assert_eq!(last3(*b"abc", b"d"), *b"bcd");
        assert_eq!(last3(*b"abc", b""), *b"abc");
        assert_eq!(last3(*b"abc", b"defg"), *b"efg");
    }
}
