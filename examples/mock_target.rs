//! A minimal HTTP/1.1 target for benchmarks: answers every request but `GET /count`
//! and `GET /bytes` with 200 `{}` after a fixed latency, and counts them (`GET
//! /count`) and their body bytes (`GET /bytes`: the total, then the largest body).
//! Loopback only.
//!
//! One thread per connection, blocking I/O: the latency runs from the moment a
//! request has been read whole to the moment its answer is written, on the thread
//! that writes it. It sleeps to just short of that deadline and spins the rest.
//! The async version this replaces (axum, the latency held on a blocking-pool
//! thread) answered a 20 ms latency in 20.4–20.6 ms: hand-offs between threads and
//! the kernel's timer slack made "concurrency ÷ latency" a rate no client could
//! reach. Requests are read by `Content-Length` (what reqwest and curl send for a
//! body); chunked bodies are refused with 501.
//!
//! cargo run --release --example mock_target -- --port 18080 --latency-ms 20

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much of each latency is spun rather than slept: more than a sleep overshoots.
const SPIN: Duration = Duration::from_micros(250);

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let latency = Duration::from_millis(latency_ms);
    let count = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)));
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let count = Arc::clone(&count);
        std::thread::spawn(move || {
            // A connection's error only ends that connection.
            let _ = serve(stream, latency, &count);
        });
    }
    Ok(())
}

/// Answers requests on one kept-alive connection until the client closes it.
/// `count` is (requests, body bytes, largest body).
fn serve(
    stream: TcpStream,
    latency: Duration,
    count: &(AtomicU64, AtomicU64, AtomicU64),
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The request line and headers; only the length and the path matter.
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let is_count = line.starts_with("GET /count ");
        let is_bytes = line.starts_with("GET /bytes ");
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = !value.eq_ignore_ascii_case("identity");
                }
            }
        }
        if chunked {
            writer.write_all(
                b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        let body = if is_count {
            format!("{}\n", count.0.load(Ordering::Relaxed))
        } else if is_bytes {
            let (total, largest) = (count.1.load(Ordering::Relaxed), count.2.load(Ordering::Relaxed));
            format!("{total} {largest}\n")
        } else {
            count.0.fetch_add(1, Ordering::Relaxed);
            count.1.fetch_add(length as u64, Ordering::Relaxed);
            count.2.fetch_max(length as u64, Ordering::Relaxed);
            hold(Instant::now() + latency);
            "{}".to_owned()
        };
        // One write: a response in pieces is a packet each, and a read each for the client.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(response.as_bytes())?;
    }
}

/// Returns at `deadline`: asleep until just before it, then spinning.
fn hold(deadline: Instant) {
    let early = deadline.checked_sub(SPIN).unwrap_or(deadline);
    if let Some(rest) = early.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}
