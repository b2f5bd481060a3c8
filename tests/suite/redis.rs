//! Redis: the user-page cache and session revocation across instances, and what happens when
//! Redis goes away and comes back.

use crate::common;

use std::time::Duration;

use common::{Backend, PrivateRedis, TestApp, Tokens, eventually, free_port, problem, wait_port};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ROOT: [(&str, &str); 2] = [
    ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
    ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
];

fn with_redis(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = common::redis_overrides();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn start(backend: Backend, env: &[(String, String)]) -> TestApp {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestApp::start_with(backend, &pairs).await
}

/// GETs a user page; returns its `X-Cache` and body.
async fn page(app: &TestApp, path: &str, token: &str) -> (String, Value) {
    let resp = app.get(path, Some(token)).await;
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    let cache = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    (cache, resp.json().await.unwrap())
}

fn usernames(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts the next read of `path` misses (the write made it stale) and the one after hits.
async fn stale_then_cached(app: &TestApp, path: &str, token: &str, what: &str) -> Value {
    let (first, body) = page(app, path, token).await;
    assert_eq!(first, "MISS", "after {what}, the page is read afresh");
    let (second, again) = page(app, path, token).await;
    assert_eq!(second, "HIT", "after {what}");
    assert_eq!(body, again);
    body
}

async fn call(app: &TestApp, method: Method, path: &str, body: Value, token: &str) {
    let resp = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_pages_are_cached_and_every_write_invalidates_them() {
    let app = start(Backend::Postgres, &with_redis(&ROOT)).await;
    let root = app.login("root@example.com", "SuperSecret123!").await;
    let t = root.access.as_str();
    let list = "/users?page=1&size=10";
    // The tutorial's call: a miss, then a hit with the same body.
    stale_then_cached(&app, list, t, "start").await;
    let search = "/users/search?q=example&sort_by=username";
    stale_then_cached(&app, search, t, "start").await;

    // Register: the new account shows at once.
    let (user, tokens) = app.signed_in_user().await;
    let body = stale_then_cached(&app, list, t, "register and verify").await;
    assert!(usernames(&body).contains(&user.username));
    let user_id = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == user.username.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Rename: the old name never shows again once the write has returned.
    let renamed = format!("{}_x", &user.username[..10]);
    call(
        &app,
        Method::PATCH,
        "/users/me",
        json!({"username": renamed}),
        &tokens.access,
    )
    .await;
    let body = stale_then_cached(&app, list, t, "rename").await;
    assert!(usernames(&body).contains(&renamed) && !usernames(&body).contains(&user.username));
    let body = stale_then_cached(&app, search, t, "rename").await;
    assert!(usernames(&body).contains(&renamed));

    // Admin changes, soft delete and restore.
    call(
        &app,
        Method::POST,
        &format!("/admin/users/{user_id}/toggle-superuser"),
        json!({}),
        t,
    )
    .await;
    let body = stale_then_cached(&app, list, t, "toggle-superuser").await;
    let row = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == user_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["is_superuser"], true);
    call(
        &app,
        Method::DELETE,
        &format!("/users/{user_id}/soft"),
        json!({}),
        t,
    )
    .await;
    let body = stale_then_cached(&app, list, t, "soft delete").await;
    assert!(
        !usernames(&body).contains(&renamed),
        "a deleted user is not listed"
    );
    call(
        &app,
        Method::POST,
        &format!("/users/{user_id}/restore"),
        json!({}),
        t,
    )
    .await;
    let body = stale_then_cached(&app, list, t, "restore").await;
    assert!(usernames(&body).contains(&renamed));
    call(
        &app,
        Method::DELETE,
        &format!("/users/{user_id}/permanent"),
        json!({}),
        t,
    )
    .await;
    let body = stale_then_cached(&app, list, t, "permanent delete").await;
    assert!(!usernames(&body).contains(&renamed));

    // Viewers of another role get pages of their own (superusers may see deleted accounts).
    let (_, plain) = app.signed_in_user().await;
    let (_, _) = page(&app, list, &plain.access).await;
    let (second, _) = page(&app, list, &plain.access).await;
    assert_eq!(second, "HIT");
    let (deleted_view, _) = page(&app, "/users?page=1&size=10&include_deleted=true", t).await;
    assert_eq!(deleted_view, "MISS");

    // The cache is on Redis: a second instance sees the same entries and the same writes.
    let b = TestApp::start_env(Backend::Postgres, app.env.clone()).await;
    let (on_b, _) = page(&b, list, &plain.access).await;
    assert_eq!(on_b, "HIT", "instance B reads what A cached");
    let (extra, _) = app.signed_in_user().await;
    let (after, body) = page(&b, list, &plain.access).await;
    assert_eq!(after, "MISS", "a write on A invalidates B's view");
    assert!(usernames(&body).contains(&extra.username));

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keel_cache_requests_total{cache=\"users\",result=\"hit\"}"),
        "{metrics}"
    );
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["redis"], "healthy");
    assert!(health["checks"]["redis"]["latency_ms"].is_number());
    let features: Value = app.get("/features", None).await.json().await.unwrap();
    assert_eq!(features["redis"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_load_once() {
    for env in [with_redis(&[]), vec![]] {
        let app = start(Backend::Postgres, &env).await;
        let (_, tokens) = app.signed_in_user().await;
        let requests = (0..20).map(|_| page(&app, "/users?page=1&size=7", &tokens.access));
        let outcomes: Vec<String> = futures_util::future::join_all(requests)
            .await
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let misses = outcomes.iter().filter(|c| *c == "MISS").count();
        let hits = outcomes.iter().filter(|c| *c == "HIT").count();
        assert_eq!(
            (misses, hits),
            (1, 19),
            "redis: {}: {outcomes:?}",
            !env.is_empty()
        );
    }
}

/// With the page cache off, a listing's total is still remembered per users version (Redis's,
/// which every instance shares): each write on any instance shows in the next total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_list_totals_follow_every_write_on_any_instance() {
    let mut env = with_redis(&ROOT);
    env.push(("CACHE_TTL_SECONDS".into(), "0".into()));
    let a = start(Backend::Postgres, &env).await;
    let b = TestApp::start_env(Backend::Postgres, a.env.clone()).await;
    let root = a.login("root@example.com", "SuperSecret123!").await;
    let t = root.access.as_str();
    async fn total_of(app: &TestApp, path: &str, token: &str) -> u64 {
        let (cache, body) = page(app, path, token).await;
        assert_eq!(cache, "BYPASS", "no page cache");
        body["metadata"]["total"].as_u64().unwrap()
    }
    let total = |app, path| total_of(app, path, t);
    let list = "/users?size=1";
    let search = "/users/search?q=example&is_verified=false&size=1";
    assert_eq!((total(&a, list).await, total(&a, list).await), (1, 1));
    assert_eq!(total(&a, search).await, 0);

    let newcomer = common::TestUser::new();
    assert_eq!(b.register(&newcomer).await.status(), StatusCode::CREATED);
    assert_eq!((total(&a, list).await, total(&a, list).await), (2, 2));
    assert_eq!(total(&a, search).await, 1);
    assert_eq!(total(&b, list).await, 2);

    let body: Value = a
        .get("/admin/users?q=user-&size=1", Some(t))
        .await
        .json()
        .await
        .unwrap();
    let id = body["items"][0]["id"].as_str().unwrap().to_string();
    call(
        &b,
        Method::POST,
        &format!("/admin/users/{id}/toggle-verification"),
        json!({}),
        t,
    )
    .await;
    assert_eq!(total(&a, search).await, 0, "verified on B, counted on A");
    let resp = b.delete(&format!("/users/{id}/soft"), Some(t)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(total(&a, list).await, 1, "deleted on B, counted on A");
    assert_eq!(total(&a, "/users?size=1&include_deleted=true").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_cache_lives_in_memory() {
    let app = TestApp::start(Backend::Sqlite).await;
    let (user, tokens) = app.signed_in_user().await;
    stale_then_cached(&app, "/users", &tokens.access, "start").await;
    call(
        &app,
        Method::PATCH,
        "/users/me",
        json!({"username": "renamed_here"}),
        &tokens.access,
    )
    .await;
    let body = stale_then_cached(&app, "/users", &tokens.access, "rename").await;
    assert_eq!(usernames(&body), ["renamed_here"]);
    assert_ne!(user.username, "renamed_here");
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["redis"], "disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_on_one_instance_fails_on_another_at_once() {
    let a = start(Backend::Postgres, &with_redis(&[])).await;
    let b = TestApp::start_env(Backend::Postgres, a.env.clone()).await;
    let (user, tokens) = a.signed_in_user().await;
    // B knows the session (and remembers the account).
    for _ in 0..2 {
        assert_eq!(
            b.get("/users/me", Some(&tokens.access)).await.status(),
            StatusCode::OK
        );
    }
    let resp = a
        .client
        .post(a.url("/auth/logout"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    problem(
        b.get("/users/me", Some(&tokens.access)).await,
        401,
        "session_revoked",
    )
    .await;

    // Revoking all other sessions, and a password change, reach B too.
    let keep = b.login(&user.email, &user.password).await;
    let other: Tokens = b.login(&user.email, &user.password).await;
    assert_eq!(
        a.get("/users/me", Some(&other.access)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        b.delete("/auth/sessions", Some(&keep.access))
            .await
            .status(),
        StatusCode::OK
    );
    problem(
        a.get("/users/me", Some(&other.access)).await,
        401,
        "session_revoked",
    )
    .await;
    assert_eq!(
        a.get("/users/me", Some(&keep.access)).await.status(),
        StatusCode::OK
    );
}

/// Concurrent requests share Redis commands for their session checks; each must still get the
/// answer for its own session, revoked or not.
#[tokio::test]
async fn concurrent_requests_each_get_their_own_sessions_answer() {
    let app = start(Backend::Sqlite, &with_redis(&[])).await;
    let (user, revoked) = app.signed_in_user().await;
    let live = [
        app.login(&user.email, &user.password).await,
        app.login(&user.email, &user.password).await,
    ];
    let resp = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&revoked.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for round in 0..3 {
        let requests = (0..60).map(|i| {
            let token = match i % 3 {
                0 => &revoked.access,
                n => &live[n - 1].access,
            };
            app.get("/users/me", Some(token))
        });
        let answers = futures_util::future::join_all(requests).await;
        for (i, resp) in answers.into_iter().enumerate() {
            let expected = if i % 3 == 0 {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            assert_eq!(resp.status(), expected, "round {round}, request {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_rides_out_a_redis_restart() {
    let mut redis = PrivateRedis::start(free_port());
    wait_port(redis.port).await;
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let app = start(Backend::Postgres, &with_redis(&[("REDIS_URL", &url)])).await;
    let (user, tokens) = app.signed_in_user().await;
    let list = "/users?page=1&size=5";
    stale_then_cached(&app, list, &tokens.access, "start").await;

    redis.stop();
    // Redis is gone: every answer still comes, from the database.
    let (outcome, body) = page(&app, list, &tokens.access).await;
    assert_eq!(outcome, "BYPASS");
    assert_eq!(usernames(&body), std::slice::from_ref(&user.username));
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(
        (&health["redis"], &health["status"]),
        (&json!("unhealthy"), &json!("degraded"))
    );
    // The service degrades to the database: the instance stays ready.
    assert_eq!(app.get("/system/health/ready", None).await.status(), 200);
    assert!(
        app.metrics()
            .await
            .contains("keel_dependency_up{dependency=\"redis\"} 0"),
        "the outage shows in the metrics"
    );
    // Writes and revocations while it is away are not lost on its return.
    call(
        &app,
        Method::PATCH,
        "/users/me",
        json!({"username": "while_away"}),
        &tokens.access,
    )
    .await;
    let second = app.login(&user.email, &user.password).await;
    let resp = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&second.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    problem(
        app.get("/users/me", Some(&second.access)).await,
        401,
        "session_revoked",
    )
    .await;

    let mut redis = PrivateRedis::start(redis.port);
    wait_port(redis.port).await;
    eventually(
        Duration::from_secs(15),
        "the cache to be used again",
        || async {
            let (outcome, _) = page(&app, list, &tokens.access).await;
            (outcome == "HIT").then_some(())
        },
    )
    .await;
    let (_, body) = page(&app, list, &tokens.access).await;
    assert_eq!(usernames(&body), ["while_away"]);
    problem(
        app.get("/users/me", Some(&second.access)).await,
        401,
        "session_revoked",
    )
    .await;
    assert_eq!(
        app.get("/users/me", Some(&tokens.access)).await.status(),
        StatusCode::OK
    );
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["redis"], "healthy");
    redis.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_redis_was_too_slow_to_take_is_marked_soon_after() {
    let redis = PrivateRedis::start(free_port());
    wait_port(redis.port).await;
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let a = start(Backend::Postgres, &with_redis(&[("REDIS_URL", &url)])).await;
    let b = TestApp::start_env(Backend::Postgres, a.env.clone()).await;
    let (_, tokens) = a.signed_in_user().await;
    // B remembers the session and the account.
    for _ in 0..2 {
        assert_eq!(
            b.get("/users/me", Some(&tokens.access)).await.status(),
            StatusCode::OK
        );
    }
    // Redis stalls (connections stay up) while A logs the session out: A's mark times out.
    let port = redis.port.to_string();
    let stall = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "1"])
            .output()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = a
        .client
        .post(a.url("/auth/logout"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(stall.join().unwrap().status.success());
    // Once Redis answers again, B refuses the token: the mark that timed out for A was still
    // carried out, not dropped.
    eventually(
        Duration::from_secs(5),
        "the revocation to reach B",
        || async {
            (b.get("/users/me", Some(&tokens.access)).await.status() == StatusCode::UNAUTHORIZED)
                .then_some(())
        },
    )
    .await;
    problem(
        b.get("/users/me", Some(&tokens.access)).await,
        401,
        "session_revoked",
    )
    .await;
}
