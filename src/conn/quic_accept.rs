//! QUIC connections accepted with the TLS config of the name they ask for,
//! which may have to be awaited (an on-demand certificate), as the TCP
//! listener awaits it. `HelloTap` is the socket under quinn's endpoint: it
//! shows each client's Initial datagrams to `quic_hello::Hello` before quinn
//! reads them, keyed by the client's address and the connection ID it
//! chose; `Hellos::name_of` then gives quinn's `Incoming` its name.

use super::quic_hello::{initial_dcid, Hello, HelloError};
use crate::locked;
use quinn::crypto::ServerConfig as QuicCrypto;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, ConnectionId, Incoming, UdpPoller};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

/// Hellos being read at once, and how long one is kept unclaimed: a flood
/// of spoofed Initials costs at most this many (16 KiB each).
const PENDING_AT_MOST: u64 = 4096;
const PENDING_FOR: Duration = Duration::from_secs(10);

type Key = (SocketAddr, ConnectionId);
type Read = Option<Result<Option<String>, HelloError>>;

/// The hellos of connections quinn has not handed over yet.
pub struct Hellos {
    pending: moka::sync::Cache<Key, Arc<Pending>>,
    /// The connection ID of each client address's latest hello: after a
    /// Retry the client's new hello is under the ID the Retry gave it,
    /// which quinn does not show (its `Incoming` names the first one).
    latest: moka::sync::Cache<SocketAddr, ConnectionId>,
    crypto: Arc<dyn QuicCrypto>,
}

struct Pending {
    hello: Mutex<Hello>,
    read: watch::Sender<Read>,
}

impl Hellos {
    /// `crypto`: any of this listener's QUIC configs (Initial keys depend
    /// on the connection ID only).
    pub fn new(crypto: Arc<dyn QuicCrypto>) -> Arc<Hellos> {
        Arc::new(Hellos {
            pending: moka::sync::Cache::builder()
                .max_capacity(PENDING_AT_MOST)
                .time_to_live(PENDING_FOR)
                .build(),
            latest: moka::sync::Cache::builder()
                .max_capacity(PENDING_AT_MOST)
                .time_to_live(PENDING_FOR)
                .build(),
            crypto,
        })
    }

    /// A datagram from `from`, before quinn reads it. Only a datagram that
    /// starts a hello makes an entry: a client's later Initials (ACKs, and
    /// those to the connection ID the server chose, which do not open with
    /// keys of that ID) would otherwise fill the pending set under a steady
    /// stream of new connections and push real hellos out.
    fn see(&self, from: SocketAddr, datagram: &[u8]) {
        let Some(dcid) = initial_dcid(datagram) else {
            return;
        };
        let key = (from, ConnectionId::new(dcid));
        let read = match self.pending.get(&key) {
            Some(pending) => {
                if pending.read.borrow().is_some() {
                    return; // read already (a retransmission)
                }
                let read = locked(&pending.hello).read(&*self.crypto, datagram);
                (pending, read)
            }
            None => {
                let mut hello = Hello::default();
                let read = hello.read(&*self.crypto, datagram);
                if read.is_err() || !hello.started() {
                    return; // no hello begins here
                }
                let pending = Arc::new(Pending {
                    hello: Mutex::new(hello),
                    read: watch::channel(None).0,
                });
                self.pending.insert(key, pending.clone());
                self.latest.insert(from, key.1);
                (pending, read)
            }
        };
        let (pending, read) = read;
        match read {
            Ok(None) => {}
            Ok(Some(name)) => {
                pending.read.send_replace(Some(Ok(name)));
            }
            Err(e) => {
                pending.read.send_replace(Some(Err(e)));
            }
        }
    }

    /// The name `incoming` asked for (None: no SNI), waiting up to `wait`
    /// for the rest of a hello that spans several datagrams.
    pub async fn name_of(
        &self,
        incoming: &Incoming,
        wait: Duration,
    ) -> Result<Option<String>, HelloError> {
        let from = incoming.remote_address();
        let mut key = (from, incoming.orig_dst_cid());
        if !self.pending.contains_key(&key) && incoming.remote_address_validated() {
            // A retried connection: its address is proven, its hello is
            // the latest from that address.
            key.1 = self.latest.get(&from).ok_or(HelloError::Unseen)?;
        }
        let Some(pending) = self.pending.get(&key) else {
            return Err(HelloError::Unseen);
        };
        let mut read = pending.read.subscribe();
        let result = tokio::time::timeout(wait, read.wait_for(Option::is_some)).await;
        self.pending.invalidate(&key);
        match result {
            Ok(Ok(r)) => r.clone().expect("waited for Some"),
            _ => Err(HelloError::Incomplete),
        }
    }
}

/// quinn's socket, with each datagram shown to `Hellos` first.
#[derive(Debug)]
pub struct HelloTap {
    inner: Arc<dyn AsyncUdpSocket>,
    hellos: Arc<Hellos>,
}

impl std::fmt::Debug for Hellos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hellos")
            .field("pending", &self.pending.entry_count())
            .finish()
    }
}

impl HelloTap {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, hellos: Arc<Hellos>) -> Arc<HelloTap> {
        Arc::new(HelloTap { inner, hellos })
    }
}

impl AsyncUdpSocket for HelloTap {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &polled {
            for (buf, m) in bufs.iter().zip(meta.iter()).take(*n) {
                // With GRO one buffer holds datagrams of `stride` bytes.
                for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                    self.hellos.see(m.addr, datagram);
                }
            }
        }
        polled
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;

    /// A CA and, for each name, a QUIC server config with a leaf it signed.
    fn certificates(
        names: &[&str],
    ) -> (
        CertificateDer<'static>,
        Vec<(String, quinn::ServerConfig, CertificateDer<'static>)>,
    ) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let configs = names
            .iter()
            .map(|name| {
                let key = rcgen::KeyPair::generate().unwrap();
                let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
                    .unwrap()
                    .signed_by(&key, &issuer)
                    .unwrap();
                let der = leaf.der().clone();
                let key = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut tls = rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(vec![der.clone()], key.into())
                    .unwrap();
                tls.alpn_protocols = vec![b"h3".to_vec()]; // QUIC requires ALPN
                let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
                (
                    name.to_string(),
                    quinn::ServerConfig::with_crypto(Arc::new(quic)),
                    der,
                )
            })
            .collect();
        (ca_cert.der().clone(), configs)
    }

    #[tokio::test]
    async fn each_connection_gets_the_config_of_the_name_it_asked_for() {
        let (root, configs) = certificates(&["a.test", "b.test"]);
        let crypto = configs[0].1.crypto.clone();
        let hellos = Hellos::new(crypto);
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let runtime = quinn::default_runtime().unwrap();
        let socket = runtime.wrap_udp_socket(std_socket).unwrap();
        let server = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(configs[0].1.clone()),
            HelloTap::new(socket, hellos.clone()),
            runtime,
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let by_name = configs.clone();
        let accepting = tokio::spawn(async move {
            let mut names = Vec::new();
            while let Some(incoming) = server.accept().await {
                // Awaited as an on-demand certificate would be.
                let name = hellos
                    .name_of(&incoming, Duration::from_secs(5))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                let config = by_name
                    .iter()
                    .find(|c| Some(&c.0) == name.as_ref())
                    .unwrap();
                let connection = incoming
                    .accept_with(Arc::new(config.1.clone()))
                    .unwrap()
                    .await;
                names.push(name);
                if let Ok(c) = connection {
                    c.closed().await;
                }
                if names.len() == 3 {
                    return names;
                }
            }
            names
        });

        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let client_with = |alpn: Vec<Vec<u8>>| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            tls.alpn_protocols = alpn;
            let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
            quinn::ClientConfig::new(Arc::new(quic))
        };
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        // A large hello (about 5 KB) spans several Initial packets.
        let h3 = || vec![b"h3".to_vec()];
        let mut big: Vec<Vec<u8>> = (0..20).map(|i| vec![b'a' + i; 250]).collect();
        big.push(b"h3".to_vec());
        for (name, alpn) in [("b.test", h3()), ("a.test", h3()), ("b.test", big)] {
            let connection = client
                .connect_with(client_with(alpn), addr, name)
                .unwrap()
                .await
                .expect("handshake verified against the name's certificate");
            let leaf = connection
                .peer_identity()
                .unwrap()
                .downcast::<Vec<CertificateDer<'static>>>()
                .unwrap()[0]
                .clone();
            let wanted = &configs.iter().find(|c| c.0 == name).unwrap().2;
            assert_eq!(&leaf, wanted, "{name} got its own certificate");
            connection.close(0u32.into(), b"done");
        }
        let names = accepting.await.unwrap();
        let expected = ["b.test", "a.test", "b.test"].map(|n| Some(n.to_string()));
        assert_eq!(names, expected);
    }
}
