//! The HTTP endpoint (hyper, HTTP/1.1) for Prometheus and Kubernetes
//! probes: `GET /metrics` (OpenMetrics text), `GET /healthz` (the process
//! is alive: 200), `GET /readyz` (200 when the catalog is loaded, every
//! shard accepts a connection and the router is not draining; 503 with the
//! reason otherwise).

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
use tokio::net::TcpListener;

use crate::backend::BackendConn;
use crate::state::{Phase, RouterState};

/// How long `/readyz` waits for each shard's connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<RouterState>) {
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics endpoint accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let st = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, st.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await
            {
                tracing::debug!("metrics endpoint connection: {e}");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<RouterState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "GET only\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            super::exposition::render(&state),
        ),
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => match readiness(&state).await {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n".into()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    })
}

/// Ready = serving (not draining), a catalog with shards loaded, and every
/// shard accepting a connection (opened and closed for the probe, in
/// parallel). Errors: the reason, naming the shards that failed.
pub async fn readiness(state: &RouterState) -> Result<(), String> {
    if state.phase() != Phase::Running {
        return Err("shutting down".into());
    }
    let routing = state.routing();
    let shards: Vec<String> = routing
        .catalog
        .shard_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if routing.version == 0 || shards.is_empty() {
        return Err("no catalog loaded".into());
    }
    let probes = shards.iter().map(|shard| async move {
        let Some(pool) = state.pool(shard, 0) else {
            return Some(format!("{shard}: no pool"));
        };
        match tokio::time::timeout(PROBE_TIMEOUT, BackendConn::connect(&pool.target)).await {
            Ok(Ok(conn)) => {
                conn.terminate().await;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "shard \"{shard}\" did not answer within {} ms",
                PROBE_TIMEOUT.as_millis()
            )),
        }
    });
    let failed: Vec<String> = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("shards not reachable: {}", failed.join("; ")))
    }
}
