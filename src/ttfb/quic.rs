//! HTTP/3 (`--http3`): one QUIC connection (quinn) with h3 on it. UDP
//! has no connect of its own: the QUIC handshake is the connection's
//! `tls` phase and `connect` stays 0. Each worker thread has its own
//! quinn endpoints (`Endpoints`), driven by that thread's runtime.

use super::sample::{ErrorKind, Laps, Phases};
use bytes::{Buf, Bytes};
use http::{Request, Response};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request's stream, once the response head came: its body is read
/// from it.
pub type Stream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// How long a worker thread waits at its end for its connections'
/// closes to go out.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// A worker thread's quinn endpoints, one per address family (bound to
/// `0.0.0.0:0` or `[::]:0`), made when first needed on the thread's
/// runtime, which then drives them.
#[derive(Default)]
pub struct Endpoints(Mutex<[Option<quinn::Endpoint>; 2]>);

impl Endpoints {
    fn for_addr(&self, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut held[usize::from(addr.is_ipv6())];
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let bind = if addr.is_ipv6() {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        };
        let endpoint = quinn::Endpoint::client(bind)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Closes what is still open and waits (briefly) for the closes to be
    /// sent, so the server is not left waiting for an idle timeout.
    pub async fn close(&self) {
        let held: Vec<quinn::Endpoint> = {
            let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
            held.iter_mut().filter_map(Option::take).collect()
        };
        for endpoint in held {
            endpoint.close(0u32.into(), b"done");
            let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
        }
    }
}

/// The TLS side of `--http3`: the plan's roots (or `--insecure`), ALPN h3.
pub fn client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, String> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| format!("QUIC client config: {e}"))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// An HTTP/3 connection: one request at a time on it.
pub struct H3 {
    quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
}

impl H3 {
    /// A new QUIC connection to `addr` for `host` (SNI), its handshake
    /// timed as `phases.tls` (`connect` left at 0), then h3 on it.
    pub async fn open(
        config: &quinn::ClientConfig,
        endpoints: &Endpoints,
        addr: SocketAddr,
        host: &str,
        phases: &mut Phases,
        laps: &mut Laps,
    ) -> Result<H3, ErrorKind> {
        let endpoint = endpoints.for_addr(addr).map_err(|_| ErrorKind::Connect)?;
        let connecting =
            endpoint
                .connect_with(config.clone(), addr, host)
                .map_err(|e| match e {
                    quinn::ConnectError::InvalidServerName(_) => ErrorKind::Tls,
                    _ => ErrorKind::Connect,
                })?;
        let quic = connecting.await.map_err(handshake_error)?;
        phases.connect = Duration::ZERO;
        phases.tls = laps.split();
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|_| ErrorKind::Http)?;
        // The control stream (SETTINGS, GOAWAY) is read as it comes; the
        // task ends with the connection.
        tokio::spawn(async move { driver.wait_idle().await });
        Ok(H3 { quic, send })
    }

    /// Still open. (A GOAWAY is seen only when a request is refused for
    /// it: `send`.)
    pub fn ready(&self) -> bool {
        self.quic.close_reason().is_none()
    }

    /// Sends `req` (no body) and waits for the response head. `None`: not
    /// sent, the server said GOAWAY before it went out.
    pub async fn send(&mut self, req: Request<()>) -> Result<Option<Response<Stream>>, ErrorKind> {
        let mut stream = match self.send.send_request(req).await {
            Ok(stream) => stream,
            Err(h3::error::StreamError::RemoteClosing { .. }) => return Ok(None),
            Err(_) => return Err(ErrorKind::Http),
        };
        stream.finish().await.map_err(|_| ErrorKind::Http)?;
        let head = stream.recv_response().await.map_err(|_| ErrorKind::Http)?;
        Ok(Some(head.map(|()| stream)))
    }
}

/// The body's length, read to its end (a reset stream: `Body`).
pub async fn read_to_end(mut stream: Stream) -> Result<u64, ErrorKind> {
    let mut bytes = 0u64;
    while let Some(chunk) = stream.recv_data().await.map_err(|_| ErrorKind::Body)? {
        bytes += chunk.remaining() as u64;
    }
    Ok(bytes)
}

/// A failed QUIC handshake: `tls` when TLS refused it (a crypto error,
/// ours or the server's: unknown issuer, no h3 in ALPN...), `connect`
/// otherwise (reset, version mismatch, quinn's idle timeout). A server
/// that never answers is the run's `timeout`, as UDP gets no refusal.
fn handshake_error(e: quinn::ConnectionError) -> ErrorKind {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if crypto(t.code) => ErrorKind::Tls,
        quinn::ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => ErrorKind::Tls,
        _ => ErrorKind::Connect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_errors_are_tls_the_rest_connect() {
        let alert = quinn::TransportErrorCode::crypto(48); // unknown_ca
        let closed = quinn::ConnectionClose {
            error_code: alert,
            frame_type: None,
            reason: Bytes::new(),
        };
        assert_eq!(
            handshake_error(quinn::ConnectionError::ConnectionClosed(closed)),
            ErrorKind::Tls
        );
        let other = quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::PROTOCOL_VIOLATION,
            frame_type: None,
            reason: Bytes::new(),
        };
        assert_eq!(
            handshake_error(quinn::ConnectionError::ConnectionClosed(other)),
            ErrorKind::Connect
        );
        assert_eq!(
            handshake_error(quinn::ConnectionError::Reset),
            ErrorKind::Connect
        );
        assert_eq!(
            handshake_error(quinn::ConnectionError::TimedOut),
            ErrorKind::Connect
        );
    }
}
