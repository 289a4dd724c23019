//! The QUIC listener's counts (HTTP/3), beside the TCP listeners'.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct QuicMetrics {
    pub open: IntGauge,
    pub handshakes: IntCounterVec,
    pub refused: IntCounterVec,
    pub retries: IntCounter,
    pub streams: IntCounterVec,
}

impl QuicMetrics {
    pub(super) fn register(registry: &Registry) -> QuicMetrics {
        let counter = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let open = IntGauge::new(
            "quic_connections_open",
            "QUIC (HTTP/3) connections established and not yet closed",
        )
        .expect("metric");
        registry.register(Box::new(open.clone())).expect("register");
        let retries = IntCounter::new(
            "quic_retries_total",
            "Retry packets sent: a client asked to prove its address while more than tls.quic_retry_above handshakes were under way",
        )
        .expect("metric");
        registry
            .register(Box::new(retries.clone()))
            .expect("register");
        QuicMetrics {
            open,
            retries,
            handshakes: counter(
                "quic_handshakes_total",
                "QUIC handshakes by result: ok, refused (no certificate for the name), failed (timed out, or the client gave up)",
                "result",
            ),
            refused: counter(
                "quic_connections_refused_total",
                "QUIC connections refused before the handshake, by reason: total (server.max_connections), per_client (server.max_connections_per_client), hello (no readable ClientHello)",
                "reason",
            ),
            streams: counter(
                "quic_streams_total",
                "HTTP/3 request streams by outcome: request (its head read, served), head_too_large (431, proxy.max_head_bytes), head_timeout (proxy.head_timeout), malformed",
                "result",
            ),
        }
    }
}
