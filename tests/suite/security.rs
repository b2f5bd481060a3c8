//! Security headers, request size and content-type validation, security events and CORS.

use crate::common;

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use common::{Backend, TestApp, problem};
use reqwest::{Method, StatusCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SECURITY_HEADERS: [(&str, &str); 9] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("x-xss-protection", "1; mode=block"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("x-download-options", "noopen"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-dns-prefetch-control", "off"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
    ),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; font-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'; media-src 'self'; worker-src 'self'",
    ),
];

/// Log lines written by this test process, to find security events in.
fn captured() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        captured().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter("keel::security=warn")
        .with_writer(|| Capture)
        .try_init();
}

fn security_events() -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&captured().lock().unwrap())
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "security event")
        .collect()
}

fn assert_security_headers(resp: &reqwest::Response, what: &str) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            resp.headers().get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: header {name}"
        );
    }
    assert!(
        resp.headers().get("strict-transport-security").is_none(),
        "{what}: no HSTS by default"
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::start(Backend::Sqlite).await;
    let cases = [
        (Method::GET, "/"),
        (Method::HEAD, "/"),
        (Method::GET, "/system/health"),
        (Method::GET, "/no/such/route"),
        (Method::POST, "/auth/login"),
        (Method::OPTIONS, "/"),
        (Method::DELETE, "/features"),
        (Method::GET, "/users/me"),
    ];
    for (method, path) in cases {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_security_headers(&resp, &format!("{method} {path} ({})", resp.status()));
        let private = path.starts_with("/auth") || path.starts_with("/users");
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .is_some_and(|v| v == "no-store"),
            private,
            "{method} {path}: Cache-Control"
        );
        assert_eq!(
            resp.headers()
                .get("pragma")
                .is_some_and(|v| v == "no-cache"),
            private
        );
    }
    // The docs page gets a policy its inlined UI can run with, still without other origins.
    let docs = app.get("/docs", None).await;
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
    assert!(
        !csp.contains("http") && !csp.contains("*"),
        "no remote origins: {csp}"
    );
    let html = docs.text().await.unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "docs load nothing remote"
    );
}

#[tokio::test]
async fn hsts_only_when_enabled() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[
            ("ENABLE_HSTS", "true"),
            ("HSTS_MAX_AGE", "600"),
            ("HSTS_PRELOAD", "true"),
        ],
    )
    .await;
    let resp = app.get("/", None).await;
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=600; includeSubDomains; preload"
    );
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[
            ("ENABLE_HSTS", "true"),
            ("HSTS_INCLUDE_SUBDOMAINS", "false"),
        ],
    )
    .await;
    assert_eq!(
        app.get("/nowhere", None).await.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let off = TestApp::start_with(Backend::Sqlite, &[("ENABLE_SECURITY_HEADERS", "false")]).await;
    let resp = off.get("/", None).await;
    assert!(resp.headers().get("content-security-policy").is_none());
    assert!(resp.headers().get("x-frame-options").is_none());
}

/// Sends raw bytes and returns the response head and body as text.
async fn raw(app: &TestApp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn size_violations_are_refused_and_logged() {
    capture_logs();
    let app = TestApp::start_with(Backend::Sqlite, &[("MAX_REQUEST_SIZE", "1024")]).await;

    let big = "x".repeat(2000);
    let resp = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .header("user-agent", "size-test/1.0")
        .body(format!("{{\"email\": \"{big}\"}}"))
        .send()
        .await
        .unwrap();
    let body = problem(resp, 413, "payload_too_large").await;
    assert!(body["detail"].as_str().unwrap().contains("1024"));

    // Malformed lengths are refused by the HTTP layer itself (hyper), before any handler runs.
    for bad in ["-5", "12abc", "99999999999999999999999"] {
        let text = raw(
            &app,
            format!("POST /auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {bad}\r\nConnection: close\r\n\r\n{{}}").as_bytes(),
        )
        .await;
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "Content-Length {bad}: {text}"
        );
    }

    // A chunked body that grows past the limit.
    let mut request = b"POST /auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(format!("200\r\n{}\r\n", "a".repeat(0x200)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let text = raw(&app, &request).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("payload_too_large") && text.contains("application/problem+json"),
        "{text}"
    );

    let events = security_events();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(
        kinds.iter().filter(|k| **k == "request_too_large").count() >= 2,
        "{kinds:?}"
    );
    let first = events
        .iter()
        .find(|e| e["user_agent"] == "size-test/1.0")
        .expect("event with UA");
    for field in [
        "event_type",
        "client_ip",
        "user_agent",
        "path",
        "method",
        "content_type",
        "content_length",
    ] {
        assert!(first.get(field).is_some(), "event lacks {field}: {first}");
    }
    assert_eq!(first["path"], "/auth/register");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_50_mb_chunked_upload_is_cut_off_without_buffering() {
    let app = TestApp::start_with(Backend::Sqlite, &[("MAX_REQUEST_SIZE", "1048576")]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("10000\r\n{}\r\n", "b".repeat(0x10000));
    let mut sent = 0usize;
    // 800 chunks of 64 KiB = 50 MiB, unless the server stops reading first.
    for _ in 0..800 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        sent += 0x10000;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{sent} bytes sent: {text}"
    );
    // The server answered and hung up at the limit instead of reading (and holding) the whole
    // body: most of the 50 MiB could never be written. What could is the limit plus the
    // loopback socket buffers.
    assert!(
        sent < 25 * 1024 * 1024,
        "the server read {sent} bytes of a body it refused at 1 MiB"
    );
}

#[tokio::test]
async fn content_types_are_checked_for_everyone() {
    capture_logs();
    let app = TestApp::start(Backend::Sqlite).await;
    for agent in [
        "curl/8.0",
        "Mozilla/5.0",
        "python-requests/2.31",
        "GoogleBot",
    ] {
        let resp = app
            .client
            .post(app.url("/auth/register"))
            .header("content-type", "text/plain")
            .header("user-agent", agent)
            .body("{}")
            .send()
            .await
            .unwrap();
        let body = problem(resp, 415, "unsupported_media_type").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{agent}: {body}"
        );
    }
    let resp = app
        .post_json(
            "/auth/login",
            serde_json::json!({"username": "a", "password": "b"}),
            None,
        )
        .await;
    let body = problem(resp, 415, "unsupported_media_type").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("application/x-www-form-urlencoded"),
        "{body}"
    );
    // A JSON body with a charset, or a +json type, is JSON.
    let resp = app
        .client
        .post(app.url("/auth/forgot-password"))
        .header("content-type", "application/json; charset=utf-8")
        .body("{\"email\": \"x@example.com\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let events = security_events();
    assert!(
        events
            .iter()
            .filter(|e| e["event_type"] == "unsupported_content_type")
            .count()
            >= 5,
        "{events:?}"
    );
}

#[tokio::test]
async fn cors_allows_listed_origins_with_credentials() {
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[("BACKEND_CORS_ORIGINS", "https://app.example.com")],
    )
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/auth/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    assert!(
        ok.headers().get("x-frame-options").is_some(),
        "preflights carry security headers too"
    );
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let any = TestApp::start_with(Backend::Sqlite, &[("BACKEND_CORS_ORIGINS", "*")]).await;
    let resp = any
        .client
        .get(any.url("/"))
        .header("origin", "https://anywhere.example.org")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_some());
    assert!(
        resp.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "never credentials with *"
    );

    let none = TestApp::start(Backend::Sqlite).await;
    let resp = none
        .client
        .get(none.url("/"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}
