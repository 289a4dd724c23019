//! A client's HTTP/1 connection as the edge holds it: reads held to the
//! head limits (`head.rs`), small writes gathered so a response head
//! leaves with its body (`gather.rs`), and the connection's place at the
//! door (`places.rs`), kept for its whole life. Between requests a plain
//! TCP one can give its socket up to be parked (`park.rs`) and be taken
//! back.

use super::gather::Gather;
use super::head::{HeadLimits, HeadWatch};
use super::places::Admitted;
use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_core::protocols::{Shutdown, Ssl, ALPN};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

pub struct ClientStream {
    inner: Stream,
    head: HeadWatch,
    /// The response being written: a head leaves with its body.
    gather: Gather,
    /// The connection's place at the door (plain HTTP), kept while parked.
    place: Option<Admitted>,
    /// Reads that returned bytes, in all (the keep-alive loop asks).
    reads: u64,
}

/// What a parked connection keeps besides its socket, to be held again.
pub struct Parked {
    limits: HeadLimits,
    place: Option<Admitted>,
    /// The client's address, so no `getpeername` is asked again.
    peer: Option<std::net::SocketAddr>,
}

impl ClientStream {
    pub fn new(inner: Stream, limits: HeadLimits) -> Self {
        ClientStream::with(inner, HeadWatch::new(limits), None)
    }

    fn with(inner: Stream, head: HeadWatch, place: Option<Admitted>) -> Self {
        ClientStream {
            inner,
            head,
            gather: Gather::default(),
            place,
            reads: 0,
        }
    }

    /// The stream holds the connection's place at the door.
    pub fn holding(mut self, place: Admitted) -> Self {
        self.place = Some(place);
        self
    }

    /// How many reads from the connection returned bytes so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Between requests on a plain TCP connection, with nothing held back
    /// or refused: the connection can be parked as its socket.
    pub fn parkable(&self) -> bool {
        self.head.idle() && self.gather.is_empty() && self.inner.as_any().is::<L4Stream>()
    }

    /// The socket, out of its task's runtime, and what the stream keeps;
    /// or the stream back when the connection cannot be parked.
    pub fn into_socket(self: Box<Self>) -> Result<(std::net::TcpStream, Parked), Box<Self>> {
        if !self.parkable() {
            return Err(self);
        }
        let peer = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(SocketAddr::as_inet).copied());
        // Between requests the rest is empty: no head read, nothing held.
        let ClientStream {
            inner, head, place, ..
        } = *self;
        let limits = head.limits();
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
                let head = HeadWatch::between_requests(limits);
                Err(Box::new(ClientStream::with(Box::new(l4), head, place)))
            }
        }
    }

    /// A parked connection held again, its socket registered with this
    /// thread's runtime: its next head is read from here.
    pub fn resumed(socket: std::net::TcpStream, parked: Parked) -> std::io::Result<Self> {
        let fd = socket.as_raw_fd();
        let mut l4 = L4Stream::from(tokio::net::TcpStream::from_std(socket)?);
        let digest = SocketDigest::from_raw_fd(fd);
        if let Some(peer) = parked.peer {
            let _ = digest.peer_addr.set(Some(SocketAddr::Inet(peer)));
        }
        l4.set_socket_digest(digest);
        let head = HeadWatch::new(parked.limits);
        Ok(ClientStream::with(Box::new(l4), head, parked.place))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = ready!(this.head.poll_read(&mut this.inner, cx, buf));
        this.reads += u64::from(read.is_ok() && buf.filled().len() > before);
        Poll::Ready(read)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.head.responding(buf);
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
            this.head.responding(first);
        }
        this.gather.poll_write_vectored(&mut this.inner, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        // Through the gather: what it holds goes out first.
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl Ssl for ClientStream {
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

io_digests_from_inner!(ClientStream, |s| s.inner);
