//! `dirsync check` against loopback listeners that record every connection and every
//! byte: without a declared probe it connects (TCP, TLS for https) and sends no HTTP
//! request; with one it sends exactly that request, without credentials (issue 15,
//! item 7).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::group_members::KEY;
use common::{Env, config_group_members, users_csv};

/// A password in the base URL; it must reach neither the output nor the wire.
const URL_PASSWORD: &str = "hunter2-in-the-url";

/// One accepted connection: whether a TLS handshake completed (for the TLS listener)
/// and the bytes the client sent (decrypted, for TLS).
#[derive(Debug, Clone, Default)]
struct Connection {
    tls: bool,
    bytes: Vec<u8>,
}

impl Connection {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

type Log = Arc<Mutex<Vec<Connection>>>;

/// Reads what the client sends until it closes, stops for 300 ms, or ends a request
/// head; answers a request head with an empty 200.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
        if bytes.windows(4).any(|w| w == b"\r\n\r\n") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = stream.shutdown().await;
            break;
        }
    }
    bytes
}

/// A plain TCP listener on 127.0.0.1 that records every connection.
async fn tcp_listener() -> (u16, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log: Log = Arc::default();
    let record = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let bytes = serve(stream).await;
                record.lock().expect("log").push(Connection { tls: false, bytes });
            });
        }
    });
    (port, log)
}

/// A TLS listener on 127.0.0.1 with a certificate signed by a test CA; returns the
/// port, the CA file and the log.
async fn tls_listener(env: &Env) -> (u16, std::path::PathBuf, Log) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = common::slapd::make_ca(env.dir.path(), "probe", true);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(env.path("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(env.path("server.key")).expect("server.key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log: Log = Arc::default();
    let record = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let connection = match acceptor.accept(stream).await {
                    Ok(tls) => Connection {
                        tls: true,
                        bytes: serve(tls).await,
                    },
                    Err(_) => Connection::default(),
                };
                record.lock().expect("log").push(connection);
            });
        }
    });
    (port, ca, log)
}

/// A CSV setup whose one target (the group-members API preset, its key in the
/// environment) is at `base_url`, with `probe` added to the target's table.
fn setup(base_url: &str, probe: &str) -> Env {
    let env = Env::new();
    env.write("users.csv", &users_csv(3));
    env.write(
        "groups.csv",
        "id,name,members,tid\ng0,eng,u1;u2,00000000-0000-4000-8000-0000000f4240\n",
    );
    let config = config_group_members(base_url, "")
        .replace("concurrency = 4\n", &format!("concurrency = 4\n{probe}\n"));
    env.write("dirsync.toml", &config);
    env
}

async fn check(env: &Env, vars: &[(&str, &str)]) -> common::Run {
    let mut all = vec![("TEST_OFFICE_KEY", KEY)];
    all.extend_from_slice(vars);
    env.run(&["check"], &all).await
}

/// The log once every connection the run made has been recorded.
async fn settled(log: &Log) -> Vec<Connection> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    log.lock().expect("log").clone()
}

fn assert_nothing_secret(run: &common::Run) {
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(KEY), "the target's key leaked:\n{text}");
        assert!(!text.contains(URL_PASSWORD), "the URL's password leaked:\n{text}");
    }
}

#[tokio::test]
async fn without_a_probe_check_connects_and_sends_no_request() {
    let (port, log) = tcp_listener().await;
    let env = setup(&format!("http://reader:{URL_PASSWORD}@127.0.0.1:{port}/api"), "");

    let run = check(&env, &[]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "target office: 1 mapped group(s), 2 mapped user(s), 0 unmapped; \
             http://127.0.0.1:{port} accepts a TCP connection"
        )),
        "{}",
        run.stdout
    );
    assert_nothing_secret(&run);
    let connections = settled(&log).await;
    assert_eq!(connections.len(), 1, "one connection: {connections:?}");
    assert!(
        connections.iter().all(|c| c.bytes.is_empty()),
        "no byte sent: {connections:?}"
    );

    // Nobody listens: said so, still nothing sent anywhere.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let env = setup(&format!("http://127.0.0.1:{closed}"), "");
    let run = check(&env, &[]).await;
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("http://127.0.0.1:{closed} cannot be reached: ")),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_declared_probe_is_the_only_request_and_carries_no_credentials() {
    let (port, log) = tcp_listener().await;
    let env = setup(
        &format!("http://reader:{URL_PASSWORD}@127.0.0.1:{port}/api"),
        r#"probe = { method = "GET", path = "/health?deep=1" }"#,
    );

    let run = check(&env, &[]).await;
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("target office: 1 mapped group(s), 2 mapped user(s), 0 unmapped; probe GET /health?deep=1 answers HTTP 200"),
        "{}",
        run.stdout
    );
    assert_nothing_secret(&run);
    let connections = settled(&log).await;
    let requests: Vec<String> = connections.iter().map(Connection::text).collect();
    assert_eq!(requests.len(), 1, "exactly one request: {requests:?}");
    let request = &requests[0];
    assert!(
        request.starts_with("GET /api/health?deep=1 HTTP/1.1\r\n"),
        "the probe below the base URL's path: {request}"
    );
    let lower = request.to_ascii_lowercase();
    for forbidden in [
        "authorization:",
        "cookie:",
        &KEY.to_ascii_lowercase(),
        URL_PASSWORD,
    ] {
        assert!(
            !lower.contains(forbidden),
            "`{forbidden}` in the probe:\n{request}"
        );
    }

    // HEAD, written in lower case in the config.
    let env = setup(
        &format!("http://127.0.0.1:{port}"),
        r#"probe = { method = "head", path = "/ping" }"#,
    );
    let run = check(&env, &[]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains("probe HEAD /ping answers HTTP 200"),
        "{}",
        run.stdout
    );
    let connections = settled(&log).await;
    assert_eq!(connections.len(), 2, "{connections:?}");
    assert!(
        connections[1].text().starts_with("HEAD /ping HTTP/1.1\r\n"),
        "{connections:?}"
    );
}

#[tokio::test]
async fn a_probe_that_could_change_something_or_is_no_path_is_a_config_error() {
    let (port, log) = tcp_listener().await;
    let base = format!("http://127.0.0.1:{port}");
    let cases = [
        (
            r#"probe = { method = "POST", path = "/health" }"#,
            "`targets.office.probe.method`: expected `GET` or `HEAD`",
        ),
        (
            r#"probe = { path = "health" }"#,
            "`targets.office.probe.path`: a path below the base URL",
        ),
        (
            r#"probe = { path = "/a b" }"#,
            "`targets.office.probe.path`: a path below the base URL",
        ),
        (
            r#"probe = { url = "/health", path = "/" }"#,
            "unknown field `url`",
        ),
    ];
    for (probe, message) in cases {
        let env = setup(&base, probe);
        let run = check(&env, &[]).await;
        assert_eq!(run.code, 5, "{probe}: exit code\n{}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{probe}: expected `{message}` in\n{}",
            run.stderr
        );
    }
    assert!(settled(&log).await.is_empty(), "a config error connects nowhere");
}

#[tokio::test]
async fn over_https_check_completes_a_tls_handshake_and_sends_nothing_inside() {
    let env0 = Env::new();
    let (port, ca, log) = tls_listener(&env0).await;
    let env = setup(&format!("https://127.0.0.1:{port}"), "");

    // The test CA is trusted through the usual variable: the handshake completes.
    let ca = ca.to_str().expect("a UTF-8 path");
    let run = check(&env, &[("SSL_CERT_FILE", ca)]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "https://127.0.0.1:{port} accepts a TLS connection (certificate verified)"
        )),
        "{}",
        run.stdout
    );
    let connections = settled(&log).await;
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert!(connections[0].tls, "the handshake completed: {connections:?}");
    assert!(
        connections[0].bytes.is_empty(),
        "no request inside: {connections:?}"
    );

    // Another CA: the certificate is not trusted, and check says so.
    let other = common::slapd::make_ca(env.dir.path(), "other", false);
    let other = other.to_str().expect("a UTF-8 path");
    let run = check(&env, &[("SSL_CERT_FILE", other)]).await;
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!(
            "https://127.0.0.1:{port} cannot be reached: TLS handshake failed: invalid peer certificate"
        )),
        "{}",
        run.stdout
    );
    let connections = settled(&log).await;
    assert_eq!(connections.len(), 2, "{connections:?}");
    assert!(
        !connections[1].tls && connections[1].bytes.is_empty(),
        "{connections:?}"
    );
}
