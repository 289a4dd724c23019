//! Limits on an HTTP/1 request head, below Pingora's parser: at most
//! `max_bytes` (answered 431) and all of it within `timeout` of its first
//! byte (answered 408). Pingora accepts a head of up to 1 MiB and restarts
//! its read timer on every byte, so a slowloris client trickling a header
//! line now and then would hold its connection for ever.
//!
//! The watch sees bytes, not requests: a head starts at the connection's
//! start and after each response the edge writes (an interim `100 Continue`
//! excepted), and ends at the first empty line. Body bytes come after that
//! and are not limited here.

use crate::metrics::METRICS;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The two limits (`proxy.max_head_bytes`, `proxy.head_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// A short answer that ends the connection. Written below HTTP (no request
/// was parsed), so it carries no request id or route.
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

/// Where a connection stands against the head limits: reads pass through
/// it, and it learns of each response from its first bytes.
pub struct HeadWatch {
    limits: HeadLimits,
    state: State,
    /// One timer per connection, reset for each head (no allocation and no
    /// new timer per request on a keep-alive connection).
    deadline: Pin<Box<Sleep>>,
}

impl HeadWatch {
    /// A new connection: the first head's clock runs from the accept (a
    /// connection that sends nothing is a slowloris too).
    pub fn new(limits: HeadLimits) -> Self {
        HeadWatch {
            limits,
            state: State::Head {
                bytes: 0,
                tail: [0; 3],
                armed: true,
            },
            deadline: Box::pin(tokio::time::sleep(limits.timeout)),
        }
    }

    /// A connection between two requests (taken back from the lot): the
    /// clock runs from the next head's first byte.
    pub fn between_requests(limits: HeadLimits) -> Self {
        let mut watch = HeadWatch::new(limits);
        watch.state = Self::next_head();
        watch
    }

    pub fn limits(&self) -> HeadLimits {
        self.limits
    }

    /// No byte of a head has been read since the last response.
    pub fn idle(&self) -> bool {
        matches!(self.state, State::Head { bytes: 0, .. })
    }

    fn next_head() -> State {
        State::Head {
            bytes: 0,
            tail: [0; 3],
            armed: false,
        }
    }

    /// The edge writes a response that starts with `bytes`: after a final
    /// response the next bytes read are a new head; after a 101 they never are.
    pub fn responding(&mut self, bytes: &[u8]) {
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

    /// A read from `io` held to the limits. Past a limit the refusal is
    /// written to `io` and the read fails: Pingora never sees the head.
    pub fn poll_read<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match &mut self.state {
                State::Refusing(response, written) => {
                    while *written < response.len() {
                        let n = ready!(Pin::new(&mut *io).poll_write(cx, &response[*written..]))?;
                        if n == 0 {
                            break;
                        }
                        *written += n;
                    }
                    let _ = Pin::new(&mut *io).poll_flush(cx);
                    return Poll::Ready(Err(std::io::ErrorKind::InvalidData.into()));
                }
                State::Body | State::Tunnel => return Pin::new(&mut *io).poll_read(cx, buf),
                State::Head { bytes, tail, armed } => {
                    let before = buf.filled().len();
                    match Pin::new(&mut *io).poll_read(cx, buf) {
                        Poll::Pending => {
                            if *armed && self.deadline.as_mut().poll(cx).is_ready() {
                                let why = "the request head came too slowly";
                                self.refuse(refusal("408 Request Timeout", why), "head_timeout");
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
                    if !*armed {
                        let at = Instant::now() + self.limits.timeout;
                        self.deadline.as_mut().reset(at);
                        *armed = true;
                    }
                    match head_end(*tail, new) {
                        Some(end) if *bytes + end <= self.limits.max_bytes => {
                            self.state = State::Body;
                        }
                        None if *bytes + new.len() <= self.limits.max_bytes => {
                            *bytes += new.len();
                            *tail = last3(*tail, new);
                        }
                        _ => {
                            // What was read is dropped: Pingora never sees the head.
                            buf.set_filled(before);
                            let status = "431 Request Header Fields Too Large";
                            let why = "the request head is too large";
                            self.refuse(refusal(status, why), "head_too_large");
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
            }
        }
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
