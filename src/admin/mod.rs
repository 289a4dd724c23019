//! The admin listener (127.0.0.1 by default): `/metrics`, `/healthz`,
//! `/readyz`, `/status`. Served by Pingora's HTTP server app, so it needs no
//! HTTP code of its own.

pub mod exporter;

use crate::edge::Edge;
use crate::failover::{Readiness, RelayReason};
use crate::metrics::METRICS;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

pub struct AdminApp {
    edge: Arc<Edge>,
    readiness: Arc<Readiness>,
}

impl AdminApp {
    pub fn new(edge: Arc<Edge>, readiness: Arc<Readiness>) -> Self {
        AdminApp { edge, readiness }
    }

    async fn metrics(&self) -> Vec<u8> {
        // Per-backend gauges are read at scrape time from the live pools, so
        // servers removed by a reload disappear from the output.
        METRICS.backend_inflight.reset();
        METRICS.backend_up.reset();
        for pool in self.edge.state().pools.iter() {
            for m in &pool.members {
                let labels = [pool.tier.as_str(), &m.state.addr.to_string()];
                METRICS
                    .backend_inflight
                    .with_label_values(&labels)
                    .set(m.state.inflight() as i64);
                METRICS
                    .backend_up
                    .with_label_values(&labels)
                    .set(m.state.is_available() as i64);
            }
        }
        let pages = self.edge.data.storefront.pages();
        METRICS
            .cache_entries
            .with_label_values(&["pages"])
            .set(pages.entries() as i64);
        METRICS
            .cache_bytes
            .with_label_values(&["pages"])
            .set(pages.weight() as i64);
        METRICS
            .replica_up
            .set(self.edge.data.storefront.replica_up() as i64);
        for (encoding, bytes) in self.edge.data.storefront.page_bytes() {
            METRICS
                .page_bytes
                .with_label_values(&[encoding])
                .set(bytes as i64);
        }
        METRICS
            .ready
            .set(self.readiness.reasons().is_empty() as i64);
        if let Some(certs) = self.edge.certs.get() {
            METRICS.tls_held.set(certs.held().await as i64);
            let soonest = certs.soonest_not_after();
            METRICS
                .tls_soonest_expiry
                .set(soonest.map_or(f64::INFINITY, |t| t as f64));
        }
        METRICS.render()
    }

    async fn data_status(&self) -> serde_json::Value {
        let data = &self.edge.data;
        let sf = &data.storefront;
        let counts = sf.replica().counts().await.ok();
        let partitions: Vec<_> = data
            .sync_stats
            .snapshot()
            .into_iter()
            .map(|((topic, partition), p)| {
                json!({
                    "topic": topic, "partition": partition, "next_offset": p.next_offset,
                    "high_watermark": p.high_watermark,
                    "behind": p.high_watermark.map(|h| (h - p.next_offset).max(0)),
                })
            })
            .collect();
        json!({
            "replica": {
                "kind": sf.replica().kind(),
                "up": sf.replica_up(),
                "domains": counts.map(|c| c.0),
                "pages": counts.map(|c| c.1),
            },
            "sync": {
                "enabled": data.sync.is_some(),
                "records_behind": data.sync_stats.total_lag(),
                "partitions": partitions,
            },
            "cache": { "pages": sf.pages().entries(), "page_bytes": sf.pages().weight() },
            "certificates": match self.edge.certs.get() {
                Some(c) => {
                    let issuance = |r: &str| METRICS.tls_issuance.with_label_values(&[r]).get();
                    json!({
                        "in_memory": c.held().await,
                        "store": c.store_kind(),
                        "stored": c.stored().await.ok(),
                        "pending": METRICS.tls_pending.get(),
                        "issued": issuance("issued"),
                        "renewed": issuance("renewed"),
                        "failed": issuance("failed") + issuance("renew_failed"),
                        "issuers": c.issuers(),
                    })
                }
                None => serde_json::Value::Null,
            },
        })
    }

    fn status(&self) -> serde_json::Value {
        let state = self.edge.state();
        let reasons = self.readiness.reasons();
        let pools: Vec<_> = state
            .pools
            .iter()
            .map(|pool| {
                let servers: Vec<_> = pool
                    .members
                    .iter()
                    .map(|m| {
                        json!({
                            "addr": m.state.addr.to_string(),
                            "weight": m.weight,
                            "healthy": m.state.is_healthy(),
                            "ejected": m.state.is_ejected(),
                            "inflight": m.state.inflight(),
                        })
                    })
                    .collect();
                json!({ "tier": pool.tier.as_str(), "available": pool.available(), "servers": servers })
            })
            .collect();
        let peers: Vec<_> = state
            .peers
            .iter()
            .map(|p| {
                let relayed: serde_json::Map<String, serde_json::Value> = RelayReason::ALL
                    .iter()
                    .map(|r| {
                        let n = METRICS
                            .relays
                            .with_label_values(&[p.pop.as_str(), r.as_str()])
                            .get();
                        (r.as_str().to_string(), n.into())
                    })
                    .collect();
                json!({
                    "pop": p.pop,
                    "addr": p.state.addr.to_string(),
                    "ready": p.state.is_available(),
                    "relays_in_flight": p.state.inflight(),
                    "relayed": relayed,
                })
            })
            .collect();
        let loaded_at = state
            .loaded_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({
            "pop": state.pop,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.edge.started.elapsed().as_secs(),
            "ready": reasons.is_empty(),
            "not_ready_reasons": reasons,
            "draining": self.readiness.is_draining(),
            "active_requests": self.edge.active_requests(),
            "config": { "generation": state.generation, "loaded_at_unix": loaded_at },
            "directory": { "config_sites": state.directory.len_hint(), "replica": true },
            "pools": pools,
            "peers": peers,
        })
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts")
}

/// Whether the admin listener answers a request sent with this Host: IP
/// literals, `localhost` and the configured `admin.hosts`. A page on a
/// DNS name rebound to 127.0.0.1 sends its own name and is refused.
fn host_allowed(host: Option<&str>, names: &[String]) -> bool {
    let Some(host) = host else {
        return true; // HTTP/1.0 without Host: no browser sends that
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6.split_once(']').is_some_and(|(addr, rest)| {
                addr.parse::<std::net::Ipv6Addr>().is_ok()
                    && (rest.is_empty() || rest.starts_with(':'))
            })
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let text = "text/plain; charset=utf-8";
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                text,
                b"the admin listener answers GET and HEAD\n".to_vec(),
            );
            r.headers_mut()
                .insert("allow", http::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if !host_allowed(host, &self.edge.state().config.admin.hosts) {
            let body = b"this Host is not the admin listener's: use its address or a name in admin.hosts\n";
            return reply(StatusCode::FORBIDDEN, text, body.to_vec());
        }
        match session.req_header().uri.path() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics().await,
            ),
            "/healthz" => reply(StatusCode::OK, text, b"ok\n".to_vec()),
            "/readyz" => {
                let reasons = self.readiness.reasons();
                if reasons.is_empty() {
                    reply(StatusCode::OK, text, b"ready\n".to_vec())
                } else {
                    let body = format!("not ready: {}\n", reasons.join("; "));
                    reply(StatusCode::SERVICE_UNAVAILABLE, text, body.into_bytes())
                }
            }
            "/status" => {
                let mut status = self.status();
                if let (Some(obj), serde_json::Value::Object(data)) =
                    (status.as_object_mut(), self.data_status().await)
                {
                    obj.extend(data);
                }
                let body = serde_json::to_vec_pretty(&status).unwrap_or_default();
                reply(StatusCode::OK, "application/json", body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                text,
                b"not found: try /metrics, /healthz, /readyz, /status\n".to_vec(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn only_addresses_localhost_and_named_hosts() {
        let names = ["edge-admin.internal".to_string()];
        for ok in [
            None,
            Some("127.0.0.1:9180"),
            Some("10.1.2.3"),
            Some("[::1]:9180"),
            Some("LOCALHOST:9180"),
            Some("edge-admin.internal:9180"),
        ] {
            assert!(host_allowed(ok, &names), "{ok:?}");
        }
        for refused in [
            Some("evil.example:9180"),
            Some("127.0.0.1.evil.example"),
            Some("[::1"),
            Some(""),
        ] {
            assert!(!host_allowed(refused, &names), "{refused:?}");
        }
    }
}
