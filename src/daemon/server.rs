//! /healthz and /metrics over HTTP, on the loopback address the config names.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::Shared;

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("The health and metrics server stopped: {e}");
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let verdict = shared
        .health
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(Instant::now());
    match verdict {
        Ok(msg) => (StatusCode::OK, msg + "\n"),
        Err(msg) => (StatusCode::SERVICE_UNAVAILABLE, msg + "\n"),
    }
}

/// OpenMetrics to a client that asks for it (Prometheus does), the Prometheus text
/// format 0.0.4 to any other, as Prometheus's own client libraries answer.
async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            shared.metrics.encode(),
        )
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            shared.metrics.encode_text(),
        )
    }
}
