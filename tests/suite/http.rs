//! Framework-level behaviour: problem+json for every error, request ids, docs and the spec.

use crate::common;

use common::{Backend, TestApp, problem};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn framework_errors_are_problems() {
    let app = TestApp::start(Backend::Sqlite).await;
    problem(app.get("/no/such/route", None).await, 404, "not_found").await;
    problem(app.delete("/", None).await, 405, "method_not_allowed").await;

    let malformed = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    let body = problem(malformed, 400, "invalid_body").await;
    assert!(body["detail"].as_str().unwrap().contains("EOF"), "{body}");

    let wrong_type = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    problem(wrong_type, 415, "unsupported_media_type").await;

    let no_type = app
        .client
        .post(app.url("/auth/register"))
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(no_type, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane() {
    let app = TestApp::start(Backend::Sqlite).await;
    let resp = app
        .client
        .get(app.url("/"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");

    let resp = app
        .client
        .get(app.url("/nowhere"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    let body = problem(resp, 404, "not_found").await;
    assert_eq!(body["request_id"], "trace-42");

    let long = "x".repeat(500);
    let resp = app
        .client
        .get(app.url("/"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, long);
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let resp = app
        .client
        .get(app.url("/"))
        .header("x-request-id", "bad id!")
        .send()
        .await
        .unwrap();
    assert!(uuid::Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).is_ok());
}

#[tokio::test]
async fn root_features_health_and_docs() {
    let app = TestApp::start(Backend::Sqlite).await;
    let root: Value = app.get("/", None).await.json().await.unwrap();
    assert_eq!(root["name"], "Keel");
    assert_eq!(root["docs"], "/docs");
    assert_eq!(root["version"], keel::VERSION);
    let head = app.client.head(app.url("/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    let features: Value = app.get("/features", None).await.json().await.unwrap();
    for key in [
        "redis",
        "websockets",
        "rabbitmq",
        "email",
        "rate_limiting",
        "security_headers",
    ] {
        assert!(features[key].is_boolean(), "features.{key}: {features}");
    }
    assert_eq!(features["email"], true, "SMTP is configured in tests");

    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["database"], "healthy");
    assert_eq!(health["redis"], "disabled");
    assert!(
        health["checks"]["database"]["latency_ms"]
            .as_f64()
            .is_some()
    );
    assert_eq!(
        app.get("/system/health/live", None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/system/health/ready", None).await.status(),
        StatusCode::OK
    );

    let docs = app.get("/docs", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger") || html.contains("Swagger"));
    assert!(
        !html.contains("cdn.") && !html.contains("unpkg.com"),
        "docs must not load from a CDN"
    );
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = TestApp::start(Backend::Postgres).await;
    app.state.db.clone().close().await.unwrap();
    let body = problem(
        app.get("/system/health/ready", None).await,
        503,
        "not_ready",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("database"),
        "{body}"
    );
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
}

#[tokio::test]
async fn served_spec_matches_the_committed_file() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json");
    let generated = keel::http::api::default_spec_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run --bin server -- openapi > openapi/openapi.json`"
    );
    let app = TestApp::start(Backend::Sqlite).await;
    let served = app.get("/openapi.json", None).await.text().await.unwrap();
    assert_eq!(served, committed);

    let spec: Value = serde_json::from_str(&committed).unwrap();
    let ops: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    for id in [
        "auth_login",
        "auth_register",
        "users_me",
        "auth_refresh",
        "system_health",
    ] {
        assert!(ops.contains(&id), "operation {id} missing from the spec");
    }
    let flows = &spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"];
    assert_eq!(flows["tokenUrl"], "/auth/login");
    assert!(!committed.contains("charset=utf-8"));
    let login = &spec["paths"]["/auth/login"]["post"];
    assert!(login["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    assert!(login["responses"]["401"]["content"]["application/problem+json"].is_object());
}

#[tokio::test]
async fn api_prefix_nests_every_route() {
    let app = TestApp::start_with(Backend::Sqlite, &[("API_PREFIX", "/api")]).await;
    assert!(app.base.ends_with("/api"));
    assert_eq!(
        app.get("/system/health/live", None).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.get("/docs", None).await.status(), StatusCode::OK);
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert_eq!(spec["servers"][0]["url"], "/api");
    let bare = app
        .client
        .get(format!("http://{}/system/health/live", app.addr))
        .send()
        .await
        .unwrap();
    problem(bare, 404, "not_found").await;
    let root: Value = app.get("/", None).await.json().await.unwrap();
    assert_eq!(root["docs"], "/api/docs");

    let user = common::TestUser::new();
    app.register(&user).await;
    let token =
        common::mail::wait_for_token(&user.email, "verify your email", "verify-email").await;
    app.post_json(
        "/auth/verify-email",
        serde_json::json!({"token": token}),
        None,
    )
    .await;
    let resp = app.login_raw(&user.email, &user.password).await;
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Path=/api/auth")
    );
}

#[tokio::test]
async fn metrics_expose_requests_jobs_queue_and_pool() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (_, tokens) = app.signed_in_user().await;
    app.get("/no/such/thing", None).await;
    let sid = uuid::Uuid::new_v4();
    app.delete(&format!("/auth/sessions/{sid}"), Some(&tokens.access))
        .await;
    // Wait until the mail jobs of the sign-up have run.
    common::eventually(std::time::Duration::from_secs(10), "mail jobs", || async {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        text.contains("keel_jobs_total{name=\"send_email\",outcome=\"succeeded\"}")
            .then_some(())
    })
    .await;
    let resp = app.get("/metrics", None).await;
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for series in [
        "keel_http_requests_total{method=\"POST\",route=\"/auth/register\",status=\"201\"} 1",
        "keel_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "keel_http_requests_total{method=\"DELETE\",route=\"/auth/sessions/{id}\",status=\"404\"} 1",
        "keel_http_request_duration_seconds_bucket{method=\"POST\",route=\"/auth/login\",le=\"+Inf\"} 1",
        "keel_job_duration_seconds_count{name=\"send_email\"}",
        "keel_jobs_queue_depth{queue=\"default\",status=\"PENDING\"} 0",
        "keel_jobs_queue_depth{queue=\"email\",status=\"STARTED\"} 0",
        "keel_build_info{version=",
        "process_resident_memory_bytes ",
        "keel_db_pool_connections{state=\"idle\"}",
        "keel_db_pool_connections{state=\"in_use\"}",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    assert!(
        !text.contains(&sid.to_string()),
        "ids are folded out of route labels"
    );
}

#[tokio::test]
async fn a_405_lists_the_methods_the_path_has() {
    let app = TestApp::start(Backend::Sqlite).await;
    for (method, path, allow) in [
        ("TRACE", "/users/me", "GET, HEAD, PATCH"),
        ("PUT", "/auth/login", "POST"),
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
    ] {
        let resp = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        problem(resp, 405, "method_not_allowed").await;
    }
}

#[tokio::test]
async fn a_json_boolean_or_number_is_not_a_string() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (user, tokens) = app.signed_in_user().await;
    for wrong in [serde_json::json!(false), serde_json::json!(12)] {
        let resp = app
            .client
            .patch(app.url("/users/me"))
            .bearer_auth(&tokens.access)
            .json(&serde_json::json!({ "username": wrong }))
            .send()
            .await
            .unwrap();
        let body = problem(resp, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "username", "{body}");
    }
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], user.username.as_str(), "not renamed");
}
