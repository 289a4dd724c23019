//! Small response writes held back and sent with the next write, so a
//! response head and its body leave in one `writev`, as nginx's do.
//!
//! Pingora writes a response head without flushing it and the body after
//! it, then flushes. Under a buffered writer the head goes out alone when
//! the body does not fit beside it (two segments, two wake-ups of the
//! reader per response), and the buffer costs memory on every idle
//! connection. Here nothing is allocated between responses: bytes are
//! held only while a response is being written, and a write that does not
//! fit beside them goes out with them in one vectored write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// At most this much is held; a write that would go past it goes out at
/// once, with what is held before it. Pingora's default L4 write buffer:
/// a body that trickles in (content-length bodies are flushed only at
/// their end; chunked ones after every chunk) waits no longer than it did
/// under that buffer.
const HOLD: usize = 1460;

/// The bytes held back, empty (and unallocated) between responses.
#[derive(Debug, Default)]
pub struct Gather {
    held: Vec<u8>,
}

/// At most this many slices in one vectored write (the held bytes first).
const MAX_SLICES: usize = 16;

impl Gather {
    /// Nothing is held back.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(inner, cx, &[IoSlice::new(buf)])
    }

    pub fn poll_write_vectored<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.held.len() + len <= HOLD {
            for b in bufs {
                self.held.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        if self.held.is_empty() {
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
        loop {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&self.held);
            let n = 1 + bufs.len().min(MAX_SLICES - 1);
            slices[1..n].copy_from_slice(&bufs[..n - 1]);
            let written = ready!(Pin::new(&mut *inner).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if written < self.held.len() {
                self.held.drain(..written);
                continue;
            }
            let of_bufs = written - self.held.len();
            self.release();
            if of_bufs > 0 {
                return Poll::Ready(Ok(of_bufs));
            }
            // Only the held bytes went out: the caller's go straight on.
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
    }

    /// Sends what is held; the caller flushes `inner` after.
    pub fn poll_drain<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let written = ready!(Pin::new(&mut *inner).poll_write(cx, &self.held))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.drain(..written);
        }
        self.release();
        Poll::Ready(Ok(()))
    }

    /// Empty, with its memory given back: an idle connection holds none.
    fn release(&mut self) {
        self.held = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records each write call and accepts at most `limit` bytes per call.
    struct Wire {
        calls: Arc<Mutex<Vec<Vec<u8>>>>,
        limit: usize,
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.calls.lock().unwrap().push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.limit);
            self.calls.lock().unwrap().push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes each piece whole (as `write_all`), drains, and returns the
    /// bytes of each call to the wire.
    fn send(pieces: &[&[u8]], limit: usize) -> Vec<Vec<u8>> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut wire = Wire {
            calls: calls.clone(),
            limit,
        };
        let mut gather = Gather::default();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for piece in pieces {
            let mut rest = *piece;
            while !rest.is_empty() {
                match gather.poll_write(&mut wire, &mut cx, rest) {
                    Poll::Ready(Ok(n)) => rest = &rest[n..],
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(gather.poll_drain(&mut wire, &mut cx).is_ready());
        assert_eq!(gather.held.capacity(), 0, "nothing kept after the drain");
        let calls = calls.lock().unwrap().clone();
        calls
    }

    #[test]
    fn a_head_and_a_body_leave_in_one_write() {
        let head = vec![b'h'; 300];
        let body = vec![b'b'; 8192];
        let calls = send(&[&head, &body], usize::MAX);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0], [head, body].concat());
    }

    #[test]
    fn small_writes_wait_for_the_drain() {
        let calls = send(&[b"HTTP/1.1 200 OK\r\n\r\n", b"hello"], usize::MAX);
        assert_eq!(calls, vec![b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec()]);
    }

    #[test]
    fn short_writes_lose_and_repeat_nothing() {
        let head = vec![b'h'; 300];
        let body: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let tail = b"0\r\n\r\n".to_vec();
        let calls = send(&[&head, &body, &tail], 1000);
        assert_eq!(calls.concat(), [head, body, tail].concat());
    }
}
