//! Rate limits: per route and client address, in memory or shared through Redis, proxies
//! believed only when trusted, and failed logins per account.

use crate::common;

use common::{Backend, TestApp, TestUser, problem};
use reqwest::{Response, StatusCode};

fn env(extra: &[(&str, &str)], redis: bool) -> Vec<(String, String)> {
    let mut env = if redis {
        common::redis_overrides()
    } else {
        vec![]
    };
    env.push(("ENABLE_RATE_LIMITING".into(), "true".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn start(env: &[(String, String)]) -> TestApp {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestApp::start_with(Backend::Sqlite, &pairs).await
}

fn header(resp: &Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A failed login for a fresh name (so only the address limit is in play), optionally as
/// forwarded for `ip`.
async fn login_attempt(app: &TestApp, forwarded_for: Option<&str>) -> Response {
    let name = format!("nobody{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut req = app
        .client
        .post(app.url("/auth/login"))
        .form(&[("username", name.as_str()), ("password", "Wrong-Password1")]);
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_login_in_a_minute_is_refused_with_headers() {
    let app = start(&env(&[], false)).await;
    for i in 0..5u64 {
        let resp = login_attempt(&app, None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(header(&resp, "ratelimit-limit"), Some(5));
        assert_eq!(header(&resp, "ratelimit-remaining"), Some(4 - i));
        assert!(header(&resp, "ratelimit-reset").is_some_and(|r| r > 0 && r <= 60));
    }
    let resp = login_attempt(&app, None).await;
    assert_eq!(header(&resp, "ratelimit-remaining"), Some(0));
    let retry = header(&resp, "retry-after").expect("Retry-After");
    assert!((1..=12).contains(&retry), "{retry}");
    let body = problem(resp, 429, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("5 per minute"));
    // Other routes have budgets of their own; probes and scrapes have none.
    let resp = app.get("/", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "ratelimit-limit"), Some(100));
    for _ in 0..120 {
        let resp = app.get("/system/health/live", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("ratelimit-limit").is_none());
    }
    // Registration: 3 a minute.
    for i in 0..4 {
        let resp = app.register(&TestUser::new()).await;
        if i < 3 {
            assert_eq!(resp.status(), StatusCode::CREATED);
        } else {
            problem(resp, 429, "rate_limited").await;
        }
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keel_rate_limit_rejections_total{limit=\"login\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("keel_rate_limit_rejections_total{limit=\"register\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_budget_through_redis() {
    let a = start(&env(&[], true)).await;
    let b = TestApp::start_env(Backend::Sqlite, a.env.clone()).await;
    for app in [&a, &a, &a, &b, &b] {
        assert_eq!(
            login_attempt(app, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    problem(login_attempt(&b, None).await, 429, "rate_limited").await;
    problem(login_attempt(&a, None).await, 429, "rate_limited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    // Not trusted: X-Forwarded-For changes nothing, everyone shares the proxy's budget.
    let open = start(&env(&[], false)).await;
    for i in 0..6 {
        let resp = login_attempt(&open, Some(&format!("203.0.113.{i}"))).await;
        let expected = if i < 5 { 401 } else { 429 };
        assert_eq!(resp.status().as_u16(), expected, "attempt {i}");
    }
    // Trusted: each forwarded client has its own budget.
    let proxied = start(&env(&[("TRUSTED_PROXIES", "127.0.0.1/32")], false)).await;
    for _ in 0..5 {
        assert_eq!(
            login_attempt(&proxied, Some("203.0.113.7")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    problem(
        login_attempt(&proxied, Some("203.0.113.7")).await,
        429,
        "rate_limited",
    )
    .await;
    assert_eq!(
        login_attempt(&proxied, Some("198.51.100.1, 203.0.113.8"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the rightmost untrusted address is the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_for_one_account_slow_down_across_addresses() {
    let app = start(&env(&[("TRUSTED_PROXIES", "127.0.0.1")], true)).await;
    let (user, _) = app.signed_in_user().await;
    let attempt = |ip: String, password: &'static str| {
        let app = &app;
        let email = user.email.clone();
        async move {
            app.client
                .post(app.url("/auth/login"))
                .header("x-forwarded-for", ip)
                .form(&[("username", email.as_str()), ("password", password)])
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..5 {
        let resp = attempt(format!("198.51.100.{i}"), "Wrong-Password1").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // From yet another address, even with the right password: wait first.
    let resp = attempt("198.51.100.77".into(), "TestPassword123!").await;
    assert!(header(&resp, "retry-after").is_some_and(|r| r > 0));
    let body = problem(resp, 429, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("failed sign-ins"));
    // Another account is not affected.
    let (other, _) = app.signed_in_user().await;
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", "198.51.100.78")
        .form(&[
            ("username", other.email.as_str()),
            ("password", other.password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_limits_fail_open_to_memory_or_closed_as_configured() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{closed_port}/0");
    // Open (the default): still limited, per instance, in memory.
    let open = start(&env(&[("REDIS_URL", &url)], true)).await;
    for _ in 0..5 {
        assert_eq!(
            login_attempt(&open, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    problem(login_attempt(&open, None).await, 429, "rate_limited").await;
    // Closed: refused until Redis answers.
    let closed = start(&env(
        &[("REDIS_URL", &url), ("RATE_LIMIT_FAIL_OPEN", "false")],
        true,
    ))
    .await;
    problem(
        login_attempt(&closed, None).await,
        503,
        "rate_limiter_unavailable",
    )
    .await;
    assert_eq!(
        closed.get("/system/health/live", None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failed_login_limit_refuses_when_it_cannot_be_checked_and_fail_open_is_off() {
    // A Redis user that may keep the address limits but not the per-account failure count:
    // only that one limit cannot be checked.
    let prefix = format!("keel:test:{}:", uuid::Uuid::new_v4().simple());
    let port = common::free_port();
    let address_keys = format!("~{prefix}ratelimit:login:*");
    let user_keys = format!("~{prefix}users:*");
    let revoked_keys = format!("~{prefix}revoked:*");
    let _redis = common::PrivateRedis::start_with(
        port,
        &[
            "--user",
            "limited",
            "on",
            ">pw",
            &address_keys,
            &user_keys,
            &revoked_keys,
            "+@all",
        ],
    );
    common::wait_port(port).await;
    let url = format!("redis://limited:pw@127.0.0.1:{port}/0");
    let with = |fail_open: &str| {
        env(
            &[
                ("ENABLE_REDIS", "true"),
                ("REDIS_URL", &url),
                ("REDIS_KEY_PREFIX", &prefix),
                ("RATE_LIMIT_FAIL_OPEN", fail_open),
            ],
            false,
        )
    };
    let closed = start(&with("false")).await;
    let resp = login_attempt(&closed, None).await;
    problem(resp, 503, "rate_limiter_unavailable").await;

    // With fail-open the same failure is counted in memory and the login is answered.
    let open = start(&with("true")).await;
    let resp = login_attempt(&open, None).await;
    problem(resp, 401, "invalid_credentials").await;
}

/// The budgets are settings: RATE_LIMIT_LOGIN=2/minute refuses the third login, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_from_the_settings_is_enforced() {
    let app = start(&env(&[("RATE_LIMIT_LOGIN", "2/minute")], false)).await;
    for _ in 0..2 {
        let resp = login_attempt(&app, None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&resp, "ratelimit-limit"), Some(2));
    }
    let resp = login_attempt(&app, None).await;
    let body = problem(resp, 429, "rate_limited").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 2 per minute"),
        "{body}"
    );
}

/// A limited route answers its own errors as an unlimited one does: a parameter out of range
/// is `invalid_parameter` naming it, a missing token `not_authenticated`, each with the
/// route's `RateLimit-*` headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_route_keeps_its_error_codes() {
    let app = start(&env(&[], false)).await;
    let (_, tokens) = app.signed_in_user().await;
    let resp = app.get("/users?size=101", Some(&tokens.access)).await;
    assert!(header(&resp, "ratelimit-limit").is_some(), "{resp:?}");
    let body = problem(resp, 400, "invalid_parameter").await;
    assert!(body["detail"].as_str().unwrap().contains("size"), "{body}");
    let resp = app.get("/users", None).await;
    assert!(header(&resp, "ratelimit-limit").is_some(), "{resp:?}");
    problem(resp, 401, "not_authenticated").await;
}
