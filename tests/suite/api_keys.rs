//! API keys: created once, stored hashed, scoped, revocable, rotatable, expiring.

use crate::common;

use std::time::Duration;

use crate::entities::{api_key, audit_log};
use common::{Backend, TestApp, problem};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

both_backends!(
    keys_are_scoped,
    keys_are_revoked_rotated_and_expire,
    key_requests_are_validated
);

async fn create(app: &TestApp, token: &str, scopes: &[&str]) -> (String, String) {
    let resp = app
        .post_json(
            "/auth/api-keys",
            json!({"label": "ci", "scopes": scopes}),
            Some(token),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    let raw = body["raw_key"].as_str().unwrap().to_string();
    assert!(raw.starts_with("sk_") && raw.len() > 40, "{raw}");
    assert!(raw.starts_with(body["api_key"]["prefix"].as_str().unwrap()));
    assert_eq!(body["api_key"]["is_active"], true);
    (body["api_key"]["id"].as_str().unwrap().to_string(), raw)
}

async fn keys_are_scoped(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, user) = app.signed_in_user().await;
    let (_, writer) = create(&app, &user.access, &["tasks:write"]).await;
    let (_, reader) = create(&app, &user.access, &["tasks:read", "tasks:write"]).await;

    // The raw key is stored only as a hash; the list never shows it.
    let rows = api_key::Entity::find().all(&app.state.db).await.unwrap();
    assert!(
        rows.iter()
            .all(|k| k.key_hash != writer && k.key_hash.len() == 64)
    );
    let list: Value = app
        .get("/auth/api-keys", Some(&user.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 2);
    assert!(!list.to_string().contains(&writer));

    let resp = app
        .post_json(
            "/system/background-tasks/test-task",
            json!({"message": "by key"}),
            Some(&writer),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/system/background-tasks/task-status/{id}");
    problem(
        app.get(&path, Some(&writer)).await,
        403,
        "insufficient_scope",
    )
    .await;
    let status = common::eventually(Duration::from_secs(10), "the task", || async {
        let s: Value = app.get(&path, Some(&reader)).await.json().await.unwrap();
        (s["status"] == "SUCCESS").then_some(s)
    })
    .await;
    assert_eq!(status["result"]["message"], "by key");

    // Keys act within their scopes only.
    problem(
        app.get("/users/me", Some(&reader)).await,
        403,
        "api_key_not_allowed",
    )
    .await;
    problem(
        app.get("/auth/sessions", Some(&reader)).await,
        403,
        "api_key_not_allowed",
    )
    .await;
    problem(
        app.post_json(
            "/auth/api-keys",
            json!({"label": "x", "scopes": ["tasks:read"]}),
            Some(&reader),
        )
        .await,
        403,
        "api_key_not_allowed",
    )
    .await;
    problem(
        app.get("/system/background-tasks", Some(&reader)).await,
        403,
        "insufficient_scope",
    )
    .await;

    // send-email: superusers, or keys with tasks:write; a plain signed-in user may not.
    let mail = json!({"to": "keyed@example.com", "subject": "Keyed", "body": "hi"});
    problem(
        app.post_json(
            "/system/background-tasks/send-email",
            mail.clone(),
            Some(&user.access),
        )
        .await,
        403,
        "superuser_required",
    )
    .await;
    let resp = app
        .post_json("/system/background-tasks/send-email", mail, Some(&writer))
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    common::mail::wait_for_messages("keyed@example.com", "Keyed", 1).await;

    problem(
        app.get("/users/me", Some("sk_not-a-real-key")).await,
        401,
        "token_invalid",
    )
    .await;
}

async fn keys_are_revoked_rotated_and_expire(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, user) = app.signed_in_user().await;
    let (_, other) = app.signed_in_user().await;
    let (id, key) = create(&app, &user.access, &["tasks:write"]).await;
    let submit = |k: String| {
        let app = &app;
        async move {
            app.post_json(
                "/system/background-tasks/test-task",
                json!({"message": "x"}),
                Some(&k),
            )
            .await
        }
    };
    assert_eq!(submit(key.clone()).await.status(), StatusCode::ACCEPTED);

    // Another user cannot touch the key.
    problem(
        app.delete(&format!("/auth/api-keys/{id}"), Some(&other.access))
            .await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.post_json(
            &format!("/auth/api-keys/{id}/rotate"),
            json!(null),
            Some(&other.access),
        )
        .await,
        404,
        "not_found",
    )
    .await;

    // Rotation: the new key works, the old one stops.
    let resp = app
        .post_json(
            &format!("/auth/api-keys/{id}/rotate"),
            json!(null),
            Some(&user.access),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let rotated: Value = resp.json().await.unwrap();
    let new_key = rotated["raw_key"].as_str().unwrap().to_string();
    let new_id = rotated["api_key"]["id"].as_str().unwrap().to_string();
    assert_eq!(rotated["api_key"]["scopes"], json!(["tasks:write"]));
    assert_eq!(submit(new_key.clone()).await.status(), StatusCode::ACCEPTED);
    problem(submit(key.clone()).await, 401, "api_key_revoked").await;

    // Revocation.
    assert_eq!(
        app.delete(&format!("/auth/api-keys/{new_id}"), Some(&user.access))
            .await
            .status(),
        StatusCode::OK
    );
    problem(submit(new_key).await, 401, "api_key_revoked").await;
    problem(
        app.delete(&format!("/auth/api-keys/{new_id}"), Some(&user.access))
            .await,
        404,
        "not_found",
    )
    .await;

    // Expiry.
    let (expiring_id, expiring) = create(&app, &user.access, &["tasks:write"]).await;
    api_key::Entity::update_many()
        .col_expr(
            api_key::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .filter(api_key::Column::Id.eq(uuid::Uuid::parse_str(&expiring_id).unwrap()))
        .exec(&app.state.db)
        .await
        .unwrap();
    problem(submit(expiring).await, 401, "token_expired").await;
    let list: Value = app
        .get("/auth/api-keys", Some(&user.access))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["is_active"] == false),
        "{list}"
    );

    let events: Vec<String> = audit_log::Entity::find()
        .filter(audit_log::Column::Event.starts_with("api_key_"))
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in ["api_key_created", "api_key_rotated", "api_key_revoked"] {
        assert!(events.iter().any(|x| x == e), "{events:?}");
    }
}

async fn key_requests_are_validated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (_, user) = app.signed_in_user().await;
    for (body, field) in [
        (json!({"label": "x", "scopes": ["admin:all"]}), "scopes"),
        (json!({"label": "x", "scopes": []}), "scopes"),
        (json!({"label": "", "scopes": ["tasks:read"]}), "label"),
        (
            json!({"label": "x", "scopes": ["tasks:read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let resp = app
            .post_json("/auth/api-keys", body.clone(), Some(&user.access))
            .await;
        let p = problem(resp, 422, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], field, "{body}");
    }
    problem(
        app.post_json("/auth/api-keys", json!({"label": "x"}), Some(&user.access))
            .await,
        400,
        "invalid_body",
    )
    .await;
    assert_eq!(
        api_key::Entity::find()
            .all(&app.state.db)
            .await
            .unwrap()
            .len(),
        0
    );
}
