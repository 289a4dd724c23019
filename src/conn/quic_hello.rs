//! The name a QUIC client asks for (its ClientHello's SNI), read from its
//! first Initial packets before any handshake. quinn takes a connection's
//! TLS config when the connection is accepted and its certificate resolver
//! cannot wait, while the certificate for a name may still have to be
//! obtained (on demand, as the TCP listener waits for with rustls's
//! `LazyConfigAcceptor`). Initial packets are protected with keys anyone
//! can derive from the destination connection ID (RFC 9001 §5.2): quinn's
//! own derivation opens them, the CRYPTO frames are put back in order (a
//! large hello spans several packets) and rustls reads the hello.

use bytes::BytesMut;
use quinn::crypto::ServerConfig as QuicCrypto;
use quinn::ConnectionId;
use std::collections::BTreeMap;

/// Bytes of CRYPTO data kept per connection at most: a ClientHello is a
/// few KiB (post-quantum key shares included); more is not a hello worth
/// waiting for.
const MOST: u64 = 16 * 1024;

/// Why no name could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not a QUIC Initial packet")]
    NotInitial,
    #[error("QUIC version {0:#x} not supported")]
    Version(u32),
    #[error("truncated or malformed packet")]
    Malformed,
    #[error("Initial packet does not decrypt")]
    Decrypt,
    #[error("ClientHello larger than {MOST} bytes")]
    TooLarge,
    #[error("not a ClientHello: {0}")]
    NotHello(String),
    #[error("no Initial packet was seen from this client")]
    Unseen,
    #[error("the rest of the ClientHello never came")]
    Incomplete,
}

/// What has been read of one client's Initial packets so far.
#[derive(Default)]
pub struct Hello {
    /// CRYPTO frame data by offset, as it arrived.
    pieces: BTreeMap<u64, Vec<u8>>,
    /// Bytes held in `pieces` (overlapping pieces count each time).
    held: u64,
}

impl Hello {
    /// Whether any of the hello has arrived (a CRYPTO frame was read).
    pub fn started(&self) -> bool {
        !self.pieces.is_empty()
    }

    /// Reads one datagram from the client (every Initial packet in it).
    /// `Ok(Some(sni))` once the whole ClientHello has arrived (`sni` is
    /// None for a hello without one), `Ok(None)` while more is needed.
    pub fn read(
        &mut self,
        crypto: &dyn QuicCrypto,
        datagram: &[u8],
    ) -> Result<Option<Option<String>>, HelloError> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let (frames, len) = match open_initial(crypto, rest) {
                Ok(opened) => opened,
                // Coalesced after an Initial: 0-RTT or padding, no hello.
                Err(HelloError::NotInitial) if rest.len() < datagram.len() => break,
                Err(e) => return Err(e),
            };
            self.take_frames(&frames)?;
            rest = &rest[len..];
        }
        self.client_hello()
    }

    fn take_frames(&mut self, mut p: &[u8]) -> Result<(), HelloError> {
        while !p.is_empty() {
            match varint(&mut p)? {
                0x00 | 0x01 => {} // PADDING, PING
                kind @ (0x02 | 0x03) => {
                    // ACK: largest, delay, range count, first range, ranges.
                    let (_, _) = (varint(&mut p)?, varint(&mut p)?);
                    let ranges = varint(&mut p)?;
                    varint(&mut p)?;
                    for _ in 0..ranges.min(1024) {
                        varint(&mut p)?;
                        varint(&mut p)?;
                    }
                    if kind == 0x03 {
                        for _ in 0..3 {
                            varint(&mut p)?;
                        }
                    }
                }
                0x06 => {
                    let offset = varint(&mut p)?;
                    let len = varint(&mut p)?;
                    self.held = self.held.saturating_add(len);
                    if offset.saturating_add(len) > MOST || self.held > MOST {
                        return Err(HelloError::TooLarge);
                    }
                    let data = take(&mut p, len as usize)?;
                    self.pieces.insert(offset, data.to_vec());
                }
                0x1c => return Err(HelloError::NotHello("connection closed".into())),
                _ => return Err(HelloError::Malformed),
            }
        }
        Ok(())
    }

    /// The hello once its bytes are contiguous from offset 0.
    fn client_hello(&self) -> Result<Option<Option<String>>, HelloError> {
        let mut bytes = Vec::new();
        for (&offset, piece) in &self.pieces {
            let have = bytes.len() as u64;
            if offset > have {
                break; // a gap: more to come
            }
            let skip = (have - offset) as usize;
            if skip < piece.len() {
                bytes.extend_from_slice(&piece[skip..]);
            }
        }
        if bytes.len() < 4 {
            return Ok(None);
        }
        if bytes[0] != 1 {
            return Err(HelloError::NotHello(format!("handshake type {}", bytes[0])));
        }
        let len = u32::from_be_bytes([0, bytes[1], bytes[2], bytes[3]]) as usize;
        if bytes.len() < 4 + len {
            return Ok(None);
        }
        server_name(&bytes[..4 + len]).map(Some)
    }
}

/// The destination connection ID of a datagram that starts with an
/// Initial packet, None for any other (short headers, and the Handshake
/// and 0-RTT packets of connections under way).
pub fn initial_dcid(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0xc0 != 0xc0 {
        return None;
    }
    let version = u32::from_be_bytes(datagram.get(1..5)?.try_into().ok()?);
    let initial_type = if version == 0x6b33_43cf { 0x01 } else { 0x00 }; // QUIC v2 renumbers
    if (first >> 4) & 0x03 != initial_type {
        return None;
    }
    let len = *datagram.get(5)? as usize;
    datagram.get(6..6 + len).filter(|_| len <= 20)
}

/// The frames of the Initial packet at the start of `datagram`, and the
/// packet's length (more packets may be coalesced after it).
fn open_initial(crypto: &dyn QuicCrypto, datagram: &[u8]) -> Result<(Vec<u8>, usize), HelloError> {
    let mut p = datagram;
    let first = *p.first().ok_or(HelloError::Malformed)?;
    // Long header, Initial type (0b00 in bits 4-5 for QUIC v1).
    if first & 0xc0 != 0xc0 {
        return Err(HelloError::NotInitial);
    }
    p = &p[1..];
    let version = u32::from_be_bytes(take(&mut p, 4)?.try_into().expect("4 bytes"));
    let initial_type = if version == 0x6b33_43cf { 0x01 } else { 0x00 }; // QUIC v2 renumbers
    if (first >> 4) & 0x03 != initial_type {
        return Err(HelloError::NotInitial);
    }
    let dcid_len = take(&mut p, 1)?[0] as usize;
    let dcid = take(&mut p, dcid_len)?;
    if dcid_len > 20 {
        return Err(HelloError::Malformed);
    }
    let scid_len = take(&mut p, 1)?[0] as usize;
    take(&mut p, scid_len)?;
    let token_len = varint(&mut p)? as usize;
    take(&mut p, token_len)?;
    let length = varint(&mut p)? as usize;
    let pn_offset = datagram.len() - p.len();
    let end = pn_offset.checked_add(length).ok_or(HelloError::Malformed)?;
    if end > datagram.len() || length < 4 + 16 {
        return Err(HelloError::Malformed);
    }
    let keys = crypto
        .initial_keys(version, &ConnectionId::new(dcid))
        .map_err(|_| HelloError::Version(version))?;
    let mut packet = datagram[..end].to_vec();
    keys.header.remote.decrypt(pn_offset, &mut packet);
    let pn_len = (packet[0] & 0x03) as usize + 1;
    // The client's first packets: the truncated number is the number.
    let pn = packet[pn_offset..pn_offset + pn_len]
        .iter()
        .fold(0u64, |n, b| n << 8 | *b as u64);
    let (header, payload) = packet.split_at(pn_offset + pn_len);
    let mut payload = BytesMut::from(payload);
    keys.packet
        .remote
        .decrypt(pn, header, &mut payload)
        .map_err(|_| HelloError::Decrypt)?;
    Ok((payload.to_vec(), end))
}

/// The SNI of a whole ClientHello handshake message, read by rustls.
fn server_name(hello: &[u8]) -> Result<Option<String>, HelloError> {
    // rustls reads TLS records: wrap the message in handshake records.
    let mut records = Vec::with_capacity(hello.len() + 16);
    for chunk in hello.chunks(16 * 1024) {
        records.extend_from_slice(&[22, 3, 3]);
        records.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        records.extend_from_slice(chunk);
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = &records[..];
    while !rd.is_empty() {
        acceptor
            .read_tls(&mut rd)
            .map_err(|e| HelloError::NotHello(e.to_string()))?;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Ok(accepted.client_hello().server_name().map(str::to_owned)),
        Ok(None) => Err(HelloError::Incomplete),
        Err((e, _)) => Err(HelloError::NotHello(e.to_string())),
    }
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], HelloError> {
    if p.len() < n {
        return Err(HelloError::Malformed);
    }
    let (head, rest) = p.split_at(n);
    *p = rest;
    Ok(head)
}

/// A QUIC variable-length integer (RFC 9000 §16).
fn varint(p: &mut &[u8]) -> Result<u64, HelloError> {
    let first = *p.first().ok_or(HelloError::Malformed)?;
    let len = 1usize << (first >> 6);
    let bytes = take(p, len)?;
    Ok(bytes[1..]
        .iter()
        .fold((first & 0x3f) as u64, |n, b| n << 8 | *b as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::quic_hello::tests_support;

    #[test]
    fn varints_of_each_length() {
        for (bytes, value) in [
            (&[0x25][..], 37),
            (&[0x7b, 0xbd][..], 15_293),
            (&[0x9d, 0x7f, 0x3e, 0x7d][..], 494_878_333),
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..],
                151_288_809_941_952_652,
            ),
        ] {
            let mut p = bytes;
            assert_eq!(varint(&mut p), Ok(value));
            assert!(p.is_empty());
        }
        assert_eq!(varint(&mut &[0x40][..]), Err(HelloError::Malformed));
    }

    /// What a real QUIC client (quinn) sends when it connects to `name`
    /// offering `alpn`: the name read, and how many datagrams it took.
    async fn read_from_quinn(name: &str, alpn: Vec<Vec<u8>>) -> (Option<String>, usize) {
        use std::sync::Arc;
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        tls.alpn_protocols = alpn;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let connecting = client.connect(server.local_addr().unwrap(), name).unwrap();
        let pending = tokio::spawn(connecting); // never answered: it retransmits
        let crypto = tests_support::server_crypto();
        let (mut hello, mut buf, mut datagrams) = (Hello::default(), vec![0u8; 65_535], 0);
        let sni = loop {
            let (n, _) = server.recv_from(&mut buf).await.unwrap();
            datagrams += 1;
            if let Some(sni) = hello.read(&*crypto, &buf[..n]).unwrap() {
                break sni;
            }
        };
        pending.abort();
        (sni, datagrams)
    }

    #[tokio::test]
    async fn the_name_a_real_client_asks_for() {
        let (sni, datagrams) = read_from_quinn("shop.example.com", vec![b"h3".to_vec()]).await;
        assert_eq!(sni.as_deref(), Some("shop.example.com"));
        assert_eq!(datagrams, 1);
    }

    #[tokio::test]
    async fn a_hello_over_several_packets_is_put_back_together() {
        // Long ALPN lists make a hello of about 5 KB (as post-quantum key
        // shares do): it spans several Initial packets.
        let alpn = (0..20).map(|i| vec![b'a' + i; 250]).collect();
        let (sni, datagrams) = read_from_quinn("big.example.com", alpn).await;
        assert_eq!(sni.as_deref(), Some("big.example.com"));
        assert!(datagrams > 1, "{datagrams} datagram(s)");
    }

    #[tokio::test]
    async fn an_address_is_no_name() {
        let (sni, _) = read_from_quinn("127.0.0.1", vec![b"h3".to_vec()]).await;
        assert_eq!(sni, None);
    }

    #[test]
    fn crypto_data_held_is_bounded() {
        let mut hello = Hello::default();
        // CRYPTO frames at ever new offsets, never a whole hello.
        let mut refused = false;
        for offset in 0..200u64 {
            let mut frame = vec![0x06, 0x80, 0, (offset >> 8) as u8, offset as u8, 0x44, 0xb0];
            frame.extend(std::iter::repeat_n(1u8, 0x4b0));
            if hello.take_frames(&frame) == Err(HelloError::TooLarge) {
                refused = true;
                break;
            }
        }
        assert!(refused, "held {} bytes", hello.held);
        assert!(hello.held <= MOST + 0x4b0);
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        let crypto = tests_support::server_crypto();
        let mut hello = Hello::default();
        for junk in [
            &[][..],
            &[0xc0][..],
            &[0xc0, 0, 0, 0, 1, 21][..],
            &[0x40; 1200][..],
        ] {
            let r = hello.read(&*crypto, junk);
            assert!(!matches!(r, Ok(Some(_))), "{junk:?}: {r:?}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Arc;

    /// A QUIC server crypto config of a throwaway certificate: Initial
    /// keys depend on the connection ID alone, not on the certificate.
    pub fn server_crypto() -> Arc<dyn quinn::crypto::ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(config).unwrap())
    }
}
