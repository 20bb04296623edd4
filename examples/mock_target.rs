//! A minimal HTTP target for benchmarks: accepts every POST/PUT after a fixed
//! latency, answers 200 `{}`, and counts requests (`GET /count`). Loopback only.
//!
//! The latency is held on a blocking thread (`std::thread::sleep`, accurate to tens of
//! microseconds) rather than with `tokio::time::sleep`, whose millisecond timer wheel
//! rounds every sleep up: 20 ms became 21.6 ms per request, and the benchmark's
//! "allowed rate" (concurrency ÷ latency) would have been one no client can reach.
//!
//! cargo run --release --example mock_target -- --port 18080 --latency-ms 20

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{any, get};

#[derive(Clone)]
struct Shared {
    latency: Duration,
    count: Arc<AtomicU64>,
}

async fn accept(State(s): State<Shared>) -> &'static str {
    s.count.fetch_add(1, Ordering::Relaxed);
    if !s.latency.is_zero() {
        let latency = s.latency;
        // Cannot fail: the closure does not panic.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(latency)).await;
    }
    "{}"
}

async fn count(State(s): State<Shared>) -> String {
    format!("{}\n", s.count.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 18080u16;
    let mut latency_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value.parse()?,
            "--latency-ms" => latency_ms = value.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let shared = Shared {
        latency: Duration::from_millis(latency_ms),
        count: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/count", get(count))
        .fallback(any(accept))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
