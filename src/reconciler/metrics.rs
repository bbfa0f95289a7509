//! The reconciler's own Prometheus metrics and its HTTP endpoint
//! (`pg-router operator run --metrics-listen`): `GET /metrics`
//! (OpenMetrics text) and `GET /healthz` (200 while the process runs).
//!
//! - `pgrouter_operator_reconciles_total{kind, result}`: reconciles ended,
//!   `result` = `ok` or `error`;
//! - `pgrouter_operator_reconcile_duration_seconds{kind}`: their duration,
//!   histogram with buckets from 5 ms doubling to about 20 s;
//! - `pgrouter_operator_split_job_failed{namespace, name}`: 1 while a
//!   ShardSplitJob's phase is `Failed`, else 0 (gone with the object).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

/// The reconciler's metrics (cheap to share behind an `Arc`).
pub struct ReconcileMetrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    durations: Family<KindLabels, Histogram>,
    split_failed: Family<ObjectLabels, Gauge>,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let durations = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 13))
        });
        registry.register(
            "pgrouter_operator_reconciles",
            "Reconciles ended, by resource kind and result (ok, error).",
            reconciles.clone(),
        );
        registry.register(
            "pgrouter_operator_reconcile_duration_seconds",
            "Reconcile duration by resource kind, seconds.",
            durations.clone(),
        );
        let split_failed = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "pgrouter_operator_split_job_failed",
            "1 while a ShardSplitJob's phase is Failed, else 0.",
            split_failed.clone(),
        );
        ReconcileMetrics {
            registry,
            reconciles,
            durations,
            split_failed,
        }
    }
}

impl ReconcileMetrics {
    /// Records one reconcile of a `kind` resource that took `elapsed`.
    pub fn observe(&self, kind: &str, ok: bool, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ResultLabels {
                kind: kind.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.durations
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// Records whether ShardSplitJob `namespace/name` has failed; `None`
    /// forgets it (the object is gone).
    pub fn split_job_failed(&self, namespace: &str, name: &str, failed: Option<bool>) {
        let labels = ObjectLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        match failed {
            Some(f) => {
                self.split_failed.get_or_create(&labels).set(i64::from(f));
            }
            None => {
                self.split_failed.remove(&labels);
            }
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<ReconcileMetrics>) {
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("operator metrics endpoint accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, m.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    metrics: Arc<ReconcileMetrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn counts_and_serves_reconciles() {
        let m = Arc::new(ReconcileMetrics::default());
        m.observe("PostgresCluster", true, Duration::from_millis(12));
        m.observe("PostgresCluster", true, Duration::from_millis(30));
        m.observe("PostgresCluster", false, Duration::from_millis(3));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, m));
        let text = get(addr, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        for line in [
            "pgrouter_operator_reconciles_total{kind=\"PostgresCluster\",result=\"ok\"} 2",
            "pgrouter_operator_reconciles_total{kind=\"PostgresCluster\",result=\"error\"} 1",
            "pgrouter_operator_reconcile_duration_seconds_count{kind=\"PostgresCluster\"} 3",
            "pgrouter_operator_reconcile_duration_seconds_bucket{le=\"0.005\",kind=\"PostgresCluster\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
