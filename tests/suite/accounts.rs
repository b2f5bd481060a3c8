//! The account contract over real HTTP, on SQLite and on PostgreSQL, with mail through real SMTP.

use crate::common;

use crate::entities::{audit_log, one_time_token, session, user};
use common::{Backend, TestApp, TestUser, mail, problem};
use keel::accounts::tokens::{AccessClaims, JwtKeys};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

both_backends!(
    register_verify_login_logout,
    registration_rules,
    duplicates_are_refused,
    login_failures,
    refresh_rotation_and_reuse,
    refresh_cookie,
    access_token_failures,
    verification_token_lifecycle,
    password_reset,
    sessions_list_and_revoke,
    change_password,
    session_limit,
    update_username,
    first_superuser,
    concurrent_logins_all_succeed,
    list_users_pages,
);

async fn register_verify_login_logout(backend: Backend) {
    let app = TestApp::start(backend).await;
    let user = TestUser::new();
    let resp = app
        .post_json(
            "/auth/register",
            json!({"email": user.email.to_uppercase(), "username": user.username, "password": user.password, "is_superuser": true}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["email"],
        user.email.as_str(),
        "email stored lower-cased"
    );
    assert_eq!(
        body["is_superuser"], false,
        "a client cannot make itself superuser"
    );
    assert_eq!(body["is_verified"], false);
    for field in [
        "id",
        "created_at",
        "updated_at",
        "is_deleted",
        "deleted_at",
        "deletion_scheduled_for",
    ] {
        assert!(body.get(field).is_some(), "User lacks {field}: {body}");
    }
    assert!(body.get("password_hash").is_none() && body.get("password").is_none());

    // Unverified accounts cannot log in while verification is required.
    problem(
        app.login_raw(&user.email, &user.password).await,
        403,
        "email_not_verified",
    )
    .await;

    let messages = mail::wait_for_messages(&user.email, "verify your email", 1).await;
    let message = &messages[0];
    assert!(
        message["html"]
            .as_str()
            .unwrap()
            .contains("http://app.test/verify-email?token=")
    );
    let token = mail::token_from(message, "http://app.test/verify-email");
    let resp = app
        .post_json("/auth/verify-email", json!({"token": token}), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"verified": true})
    );
    mail::wait_for_messages(&user.email, "Welcome", 1).await;

    // Login by email is case-insensitive; login by username works too.
    let resp = app
        .login_raw(&user.email.to_uppercase(), &user.password)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    let tokens = common::Tokens::from_json(&body);
    app.login(&user.username.to_uppercase(), &user.password)
        .await;

    let resp = app.get("/users/me", Some(&tokens.access)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["email"], user.email.as_str());
    assert_eq!(me["is_verified"], true);

    let resp = app
        .post_json("/auth/logout", json!({}), Some(&tokens.access))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("refresh_token=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    let body = problem(
        app.get("/users/me", Some(&tokens.access)).await,
        401,
        "session_revoked",
    )
    .await;
    assert!(body["detail"].is_string());
    // The refresh token of a logged-out session is dead too.
    problem(
        app.post_json(
            "/auth/refresh",
            json!({"refresh_token": tokens.refresh}),
            None,
        )
        .await,
        401,
        "session_revoked",
    )
    .await;

    let events: Vec<String> = audit_log::Entity::find()
        .filter(
            audit_log::Column::UserId
                .eq(uuid::Uuid::parse_str(me["id"].as_str().unwrap()).unwrap()),
        )
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for event in [
        "register",
        "email_verified",
        "login_failed",
        "login_success",
        "logout",
    ] {
        assert!(
            events.iter().any(|e| e == event),
            "audit log lacks {event}: {events:?}"
        );
    }
}

async fn registration_rules(backend: Backend) {
    let app = TestApp::start(backend).await;
    // (email, username, password, [(field, fragment of the expected message)])
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (
            "not-an-email",
            "gooduser",
            "TestPassword123!",
            &[("email", "valid email")],
        ),
        (
            "a@example.com",
            "ab",
            "TestPassword123!",
            &[("username", "3 to 30")],
        ),
        (
            "a@example.com",
            "_bad",
            "TestPassword123!",
            &[("username", "start or end")],
        ),
        (
            "a@example.com",
            "ba--d",
            "TestPassword123!",
            &[("username", "__ or --")],
        ),
        (
            "a@example.com",
            "Admin",
            "TestPassword123!",
            &[("username", "reserved")],
        ),
        (
            "a@example.com",
            "gooduser",
            "Sh0rt!",
            &[("password", "at least 8")],
        ),
        (
            "a@example.com",
            "gooduser",
            "lowercase123!",
            &[("password", "uppercase")],
        ),
        (
            "a@example.com",
            "gooduser",
            "UPPERCASE123!",
            &[("password", "lowercase")],
        ),
        (
            "a@example.com",
            "gooduser",
            "NoDigitsHere!",
            &[("password", "digit")],
        ),
        (
            "a@example.com",
            "gooduser",
            "NoSpecial123",
            &[("password", "special")],
        ),
        (
            "a@example.com",
            "gooduser",
            "Password123!",
            &[("password", "too common")],
        ),
        (
            "bad",
            "x",
            "short",
            &[
                ("email", "valid"),
                ("username", "3 to 30"),
                ("password", "at least 8"),
                ("password", "digit"),
            ],
        ),
    ];
    for (email, username, password, expected) in cases {
        let resp = app
            .post_json(
                "/auth/register",
                json!({"email": email, "username": username, "password": password}),
                None,
            )
            .await;
        let body = problem(resp, 422, "validation_failed").await;
        let errors = body["errors"].as_array().expect("errors");
        for (field, fragment) in *expected {
            assert!(
                errors
                    .iter()
                    .any(|e| e["field"] == *field
                        && e["message"].as_str().unwrap().contains(fragment)),
                "{email}/{username}/{password}: no {field} error containing {fragment:?} in {errors:?}"
            );
        }
    }
    // Missing fields are a readable 400, wrong JSON types a 422 naming each field; never a 500.
    problem(
        app.post_json("/auth/register", json!({"email": "a@example.com"}), None)
            .await,
        400,
        "invalid_body",
    )
    .await;
    let wrong = problem(
        app.post_json(
            "/auth/register",
            json!({"email": 1, "username": [], "password": null}),
            None,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = wrong["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "username"], "{wrong}");
    // Nothing was stored by any refused attempt.
    assert_eq!(
        user::Entity::find().all(&app.state.db).await.unwrap().len(),
        0
    );
}

async fn duplicates_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let user = TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);

    let same_email = json!({"email": format!("  {}  ", user.email.to_uppercase()), "username": "another_name", "password": user.password});
    let body = problem(
        app.post_json("/auth/register", same_email, None).await,
        409,
        "email_already_exists",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "email");

    let same_name = json!({"email": "other@example.com", "username": user.username.to_uppercase(), "password": user.password});
    problem(
        app.post_json("/auth/register", same_name, None).await,
        409,
        "username_already_exists",
    )
    .await;
}

async fn login_failures(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, _) = app.signed_in_user().await;

    let wrong = problem(
        app.login_raw(&user.email, "WrongPassword1!").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown = problem(
        app.login_raw("nobody@example.com", "WrongPassword1!").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        wrong["detail"], unknown["detail"],
        "the answer must not reveal which accounts exist"
    );

    // Login takes the OAuth2 form; JSON is refused with 415, an empty form with 400.
    let resp = app
        .post_json(
            "/auth/login",
            json!({"username": user.email, "password": user.password}),
            None,
        )
        .await;
    problem(resp, 415, "unsupported_media_type").await;
    let resp = app
        .client
        .post(app.url("/auth/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    problem(resp, 400, "invalid_body").await;

    let failures = audit_log::Entity::find()
        .filter(audit_log::Column::Event.eq("login_failed"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(failures.len() >= 2, "{failures:?}");
    assert!(
        failures.iter().any(|f| f.user_id.is_none()),
        "unknown-account failure recorded"
    );
    assert!(
        failures
            .iter()
            .all(|f| f.ip_address.as_deref() == Some("127.0.0.1"))
    );
}

async fn refresh_rotation_and_reuse(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, first) = app.signed_in_user().await;

    let resp = app
        .post_json(
            "/auth/refresh",
            json!({"refresh_token": first.refresh}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let second = common::Tokens::from_json(&resp.json().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(
        app.get("/users/me", Some(&second.access)).await.status(),
        StatusCode::OK
    );

    // Presenting the rotated token again is theft: 401 and the whole session ends.
    problem(
        app.post_json(
            "/auth/refresh",
            json!({"refresh_token": first.refresh}),
            None,
        )
        .await,
        401,
        "token_invalid",
    )
    .await;
    problem(
        app.get("/users/me", Some(&second.access)).await,
        401,
        "session_revoked",
    )
    .await;
    problem(
        app.post_json(
            "/auth/refresh",
            json!({"refresh_token": second.refresh}),
            None,
        )
        .await,
        401,
        "session_revoked",
    )
    .await;

    // Unknown and missing tokens.
    problem(
        app.post_json(
            "/auth/refresh",
            json!({"refresh_token": "not-a-token"}),
            None,
        )
        .await,
        401,
        "token_invalid",
    )
    .await;
    let resp = app
        .client
        .post(app.url("/auth/refresh"))
        .send()
        .await
        .unwrap();
    problem(resp, 401, "not_authenticated").await;
}

async fn refresh_cookie(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, _) = app.signed_in_user().await;
    let resp = app.login_raw(&user.email, &user.password).await;
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/auth", "Max-Age=2592000"] {
        assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "no Secure outside production: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();

    let resp = app
        .client
        .post(app.url("/auth/refresh"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let new_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert_ne!(new_cookie.split(';').next().unwrap(), pair);

    // Logging out with the cookie ends that session.
    let new_pair = new_cookie.split(';').next().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    let resp = app
        .client
        .post(app.url("/auth/logout"))
        .header("cookie", &new_pair)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    problem(
        app.get("/users/me", Some(body["access_token"].as_str().unwrap()))
            .await,
        401,
        "session_revoked",
    )
    .await;

    // Production marks the cookie Secure.
    let prod = TestApp::start_with(
        backend,
        &[
            ("ENVIRONMENT", "production"),
            ("SECRET_KEY", "0123456789abcdef0123456789abcdef-prod"),
        ],
    )
    .await;
    let (user, _) = prod.signed_in_user().await;
    let resp = prod.login_raw(&user.email, &user.password).await;
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

async fn access_token_failures(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, tokens) = app.signed_in_user().await;

    let mut tampered = tokens.access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    problem(
        app.get("/users/me", Some(&tampered)).await,
        401,
        "token_invalid",
    )
    .await;
    problem(
        app.get("/users/me", Some("garbage")).await,
        401,
        "token_invalid",
    )
    .await;

    let resp = app.get("/users/me", None).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    problem(resp, 401, "not_authenticated").await;

    // A token signed with the server's key but past its expiry.
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    let sid = session::Entity::find()
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap()
        .id;
    let keys = JwtKeys::new(&app.state.settings.auth.secret_key).unwrap();
    let now = chrono::Utc::now().timestamp();
    let expired = keys
        .issue(&AccessClaims {
            sub: uuid::Uuid::parse_str(me["id"].as_str().unwrap()).unwrap(),
            sid,
            iat: now - 3600,
            exp: now - 600,
            jti: uuid::Uuid::new_v4(),
        })
        .unwrap();
    problem(
        app.get("/users/me", Some(&expired)).await,
        401,
        "token_expired",
    )
    .await;
}

async fn verification_token_lifecycle(backend: Backend) {
    let app = TestApp::start(backend).await;
    let user = TestUser::new();
    app.register(&user).await;
    let first = mail::wait_for_token(&user.email, "verify your email", "verify-email").await;

    // Asking again sends a new link and retires the first one.
    let resp = app
        .post_json(
            "/auth/resend-verification",
            json!({"email": user.email}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let known: Value = resp.json().await.unwrap();
    let resp = app
        .post_json(
            "/auth/resend-verification",
            json!({"email": "nobody@example.com"}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        known,
        "same answer for unknown accounts"
    );
    let messages = mail::wait_for_messages(&user.email, "verify your email", 2).await;
    let second = mail::token_from(messages.last().unwrap(), "verify-email");
    assert_ne!(first, second);
    problem(
        app.post_json("/auth/verify-email", json!({"token": first}), None)
            .await,
        400,
        "token_invalid",
    )
    .await;

    // Only a hash is stored.
    let stored = one_time_token::Entity::find()
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|t| t.token_hash != second && t.token_hash.len() == 64)
    );

    // An expired token is refused with its own code.
    one_time_token::Entity::update_many()
        .col_expr(
            one_time_token::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::hours(1)),
        )
        .exec(&app.state.db)
        .await
        .unwrap();
    problem(
        app.post_json("/auth/verify-email", json!({"token": second}), None)
            .await,
        400,
        "token_expired",
    )
    .await;

    // A fresh one works exactly once.
    app.post_json(
        "/auth/resend-verification",
        json!({"email": user.email}),
        None,
    )
    .await;
    let messages = mail::wait_for_messages(&user.email, "verify your email", 3).await;
    let third = mail::token_from(messages.last().unwrap(), "verify-email");
    assert_eq!(
        app.post_json("/auth/verify-email", json!({"token": third}), None)
            .await
            .status(),
        StatusCode::OK
    );
    problem(
        app.post_json("/auth/verify-email", json!({"token": third}), None)
            .await,
        400,
        "token_invalid",
    )
    .await;
    problem(
        app.post_json("/auth/verify-email", json!({"token": "made-up"}), None)
            .await,
        400,
        "token_invalid",
    )
    .await;
}

async fn password_reset(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, before) = app.signed_in_user().await;

    let resp = app
        .post_json("/auth/forgot-password", json!({"email": user.email}), None)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let known: Value = resp.json().await.unwrap();
    let resp = app
        .post_json(
            "/auth/forgot-password",
            json!({"email": "ghost@example.com"}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.json::<Value>().await.unwrap(), known);

    let message = mail::wait_for_messages(&user.email, "reset your password", 1)
        .await
        .remove(0);
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("http://app.test/reset-password?token=")
    );
    let token = mail::token_from(&message, "reset-password");

    let weak = app
        .post_json(
            "/auth/reset-password",
            json!({"token": token, "new_password": "weak"}),
            None,
        )
        .await;
    let body = problem(weak, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "new_password");

    let new_password = "BrandNewPass456?";
    let resp = app
        .post_json(
            "/auth/reset-password",
            json!({"token": token, "new_password": new_password}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Single use.
    let again = app
        .post_json(
            "/auth/reset-password",
            json!({"token": token, "new_password": "AnotherPass789#"}),
            None,
        )
        .await;
    problem(again, 400, "token_invalid").await;

    // Every session was revoked; the old password is gone, the new one works.
    problem(
        app.get("/users/me", Some(&before.access)).await,
        401,
        "session_revoked",
    )
    .await;
    problem(
        app.login_raw(&user.email, &user.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    app.login(&user.email, new_password).await;
    mail::wait_for_messages(&user.email, "password was changed", 1).await;
}

async fn sessions_list_and_revoke(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, a) = app.signed_in_user().await;
    let b = app.login(&user.email, &user.password).await;
    let c = app.login(&user.email, &user.password).await;

    let resp = app.get("/auth/sessions", Some(&a.access)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["total_sessions"], 3);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(
        sessions.iter().filter(|s| s["is_current"] == true).count(),
        1
    );
    for s in sessions {
        for field in [
            "id",
            "created_at",
            "last_used_at",
            "device_info",
            "ip_address",
            "is_current",
        ] {
            assert!(s.get(field).is_some(), "session lacks {field}");
        }
    }
    let b_id = sessions
        .iter()
        .find(|s| s["is_current"] == false)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .unwrap();

    // Another user cannot touch this user's sessions.
    let (_, other) = app.signed_in_user().await;
    problem(
        app.delete(&format!("/auth/sessions/{b_id}"), Some(&other.access))
            .await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.delete("/auth/sessions/not-a-uuid", Some(&a.access))
            .await,
        400,
        "invalid_parameter",
    )
    .await;

    // Revoke one other session: exactly that session's token stops working.
    assert_eq!(
        app.delete(&format!("/auth/sessions/{b_id}"), Some(&a.access))
            .await
            .status(),
        StatusCode::OK
    );
    let still: Vec<u16> = futures_statuses(&app, &[&b.access, &c.access]).await;
    assert_eq!(still.iter().filter(|s| **s == 401).count(), 1, "{still:?}");

    // Revoke all others: only the current session remains.
    let resp = app.delete("/auth/sessions", Some(&a.access)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["revoked"], 1);
    assert_eq!(
        futures_statuses(&app, &[&b.access, &c.access]).await,
        vec![401, 401]
    );
    let list: Value = app
        .get("/auth/sessions", Some(&a.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total_sessions"], 1);

    let revoked = audit_log::Entity::find()
        .filter(audit_log::Column::Event.is_in(["session_revoked", "sessions_revoked"]))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(revoked.len(), 2);
}

async fn futures_statuses(app: &TestApp, tokens: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for t in tokens {
        out.push(app.get("/users/me", Some(t)).await.status().as_u16());
    }
    out
}

async fn change_password(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, current) = app.signed_in_user().await;
    let other = app.login(&user.email, &user.password).await;

    let wrong = app
        .post_json(
            "/auth/change-password",
            json!({"current_password": "NotMyPass1!", "new_password": "NewPassword456!"}),
            Some(&current.access),
        )
        .await;
    problem(wrong, 403, "invalid_current_password").await;
    let weak = app
        .post_json(
            "/auth/change-password",
            json!({"current_password": user.password, "new_password": "weakling"}),
            Some(&current.access),
        )
        .await;
    problem(weak, 422, "validation_failed").await;

    let resp = app
        .post_json(
            "/auth/change-password",
            json!({"current_password": user.password, "new_password": "NewPassword456!"}),
            Some(&current.access),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.get("/users/me", Some(&current.access)).await.status(),
        StatusCode::OK
    );
    problem(
        app.get("/users/me", Some(&other.access)).await,
        401,
        "session_revoked",
    )
    .await;
    problem(
        app.login_raw(&user.email, &user.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    app.login(&user.email, "NewPassword456!").await;
    mail::wait_for_messages(&user.email, "password was changed", 1).await;
    let changed = audit_log::Entity::find()
        .filter(audit_log::Column::Event.eq("password_changed"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
}

async fn session_limit(backend: Backend) {
    let app = TestApp::start_with(backend, &[("MAX_SESSIONS_PER_USER", "3")]).await;
    let (user, first) = app.signed_in_user().await;
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(app.login(&user.email, &user.password).await);
    }
    // The fourth login pushed the oldest session out.
    problem(
        app.get("/users/me", Some(&first.access)).await,
        401,
        "session_revoked",
    )
    .await;
    for t in &later {
        assert_eq!(
            app.get("/users/me", Some(&t.access)).await.status(),
            StatusCode::OK
        );
    }
    let list: Value = app
        .get("/auth/sessions", Some(&later[0].access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total_sessions"], 3);
}

async fn update_username(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, a) = app.signed_in_user().await;
    let (b_user, _) = app.signed_in_user().await;
    let patch = |name: Value| {
        app.client
            .patch(app.url("/users/me"))
            .bearer_auth(&a.access)
            .json(&json!({"username": name}))
            .send()
    };
    let resp = patch(json!("Renamed_User")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["username"],
        "Renamed_User"
    );
    problem(
        patch(json!(b_user.username.to_uppercase())).await.unwrap(),
        409,
        "username_already_exists",
    )
    .await;
    problem(
        patch(json!("root")).await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    let me: Value = app
        .get("/users/me", Some(&a.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "Renamed_User");
}

async fn first_superuser(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        &[
            ("FIRST_SUPERUSER_EMAIL", "Root@Example.com"),
            ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
        ],
    )
    .await;
    let tokens = app.login("root@example.com", "SuperSecret123!").await;
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["is_superuser"], true);
    assert_eq!(me["is_verified"], true);
    // Starting again over the same database does not create a second one.
    let again = keel::http::state::AppState::build((*app.state.settings).clone())
        .await
        .unwrap();
    let supers = user::Entity::find()
        .filter(user::Column::IsSuperuser.eq(true))
        .all(&again.db)
        .await
        .unwrap();
    assert_eq!(supers.len(), 1);
}

async fn concurrent_logins_all_succeed(backend: Backend) {
    // Many logins of one user at once: each writes a session, a refresh token and an audit row,
    // and none may fail on a lock (SQLite) or a race (session limit).
    let app = TestApp::start(backend).await;
    let (user, _) = app.signed_in_user().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let client = app.client.clone();
        let url = app.url("/auth/login");
        let (email, password) = (user.email.clone(), user.password.clone());
        set.spawn(async move {
            client
                .post(url)
                .form(&[
                    ("username", email.as_str()),
                    ("password", password.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let statuses: Vec<u16> = set.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let live = session::Entity::find()
        .filter(session::Column::RevokedAt.is_null())
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(live.len(), 5, "the session limit holds under concurrency");
}

async fn list_users_pages(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, tokens) = app.signed_in_user().await;
    for _ in 0..4 {
        assert_eq!(
            app.register(&TestUser::new()).await.status(),
            StatusCode::CREATED
        );
    }
    let page: Value = app
        .get("/users?page=2&size=2", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["metadata"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        page["metadata"],
        json!({"page": 2, "size": 2, "total": 5, "pages": 3, "has_next": true, "has_prev": true, "next_page": 3, "prev_page": 1, "next_cursor": cursor})
    );
    let last: Value = app
        .get("/users?page=3&size=2", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert_eq!(last["metadata"]["has_next"], false);
    assert!(last["metadata"]["next_page"].is_null());
    assert!(last["metadata"]["next_cursor"].is_null());
    problem(
        app.get("/users?size=101", Some(&tokens.access)).await,
        400,
        "invalid_parameter",
    )
    .await;
    problem(
        app.get("/users?page=0", Some(&tokens.access)).await,
        400,
        "invalid_parameter",
    )
    .await;
    problem(app.get("/users", None).await, 401, "not_authenticated").await;
}
