//! The admin and user-management API: superusers only, every operation, and the rule that an
//! administrator cannot demote, unverify or delete themselves.

use crate::common;

use crate::entities::audit_log;
use common::{Backend, TestApp, TestUser, Tokens, problem};
use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

both_backends!(
    admins_create_accounts_under_the_registration_rules,
    admins_read_and_list_accounts,
    admin_updates_change_fields_and_a_new_password_ends_sessions,
    toggles_flip_superuser_rights_and_verification,
    admins_cannot_demote_unverify_or_delete_themselves,
    soft_delete_ends_sessions_and_lists_the_account_as_deleted,
    statistics_count_what_is_there,
    a_restored_account_signs_in_again,
    permanent_deletion_keeps_the_audit_trail_by_id_only,
    admin_delete_is_a_soft_delete,
    bulk_operations_apply_each_one,
    search_applies_every_filter,
);

const ROOT: [(&str, &str); 2] = [
    ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
    ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
];

async fn root(app: &TestApp) -> (Tokens, String) {
    let tokens = app.login("root@example.com", "SuperSecret123!").await;
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    (tokens, me["id"].as_str().unwrap().to_string())
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn ok(resp: reqwest::Response, status: StatusCode) -> Value {
    let got = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

/// Every superuser route, with a body where it takes one.
fn admin_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/admin/users".into(), None),
        (
            Method::POST,
            "/admin/users".into(),
            Some(
                json!({"email": "x@example.com", "username": "xavier", "password": "Xx-Password1!"}),
            ),
        ),
        (Method::GET, format!("/admin/users/{id}"), None),
        (
            Method::PUT,
            format!("/admin/users/{id}"),
            Some(json!({"username": "renamed"})),
        ),
        (Method::DELETE, format!("/admin/users/{id}"), None),
        (
            Method::POST,
            format!("/admin/users/{id}/toggle-superuser"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/users/{id}/toggle-verification"),
            None,
        ),
        (Method::GET, "/admin/statistics".into(), None),
        (
            Method::POST,
            "/admin/bulk-operations".into(),
            Some(json!({"user_ids": [id], "operation": "verify"})),
        ),
        (Method::DELETE, format!("/users/{id}/soft"), None),
        (Method::POST, format!("/users/{id}/restore"), None),
        (Method::GET, "/users/deleted".into(), None),
        (Method::DELETE, format!("/users/{id}/permanent"), None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regular_users_and_api_keys_get_403_everywhere() {
    let app = TestApp::start_with(Backend::Postgres, &ROOT).await;
    let (_, tokens) = app.signed_in_user().await;
    let (root_tokens, root_id) = root(&app).await;
    let before: Value = ok(
        app.get(
            &format!("/admin/users/{root_id}"),
            Some(&root_tokens.access),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for (method, path, body) in admin_routes(&root_id) {
        let resp = call(&app, method.clone(), &path, body, &tokens.access).await;
        let p = problem(resp, 403, "superuser_required").await;
        assert!(p["detail"].is_string(), "{method} {path}");
    }
    // A superuser's API key acts only within its scopes, and no scope covers administration.
    let key: Value = ok(
        app.post_json(
            "/auth/api-keys",
            json!({"label": "ops", "scopes": ["system:read", "tasks:read", "tasks:write"]}),
            Some(&root_tokens.access),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let raw = key["raw_key"].as_str().unwrap();
    for (method, path, body) in admin_routes(&root_id) {
        let resp = call(&app, method, &path, body, raw).await;
        problem(resp, 403, "api_key_not_allowed").await;
    }
    // Without credentials: 401.
    let resp = app
        .client
        .get(app.url("/admin/statistics"))
        .send()
        .await
        .unwrap();
    problem(resp, 401, "not_authenticated").await;
    // Nothing changed.
    let after: Value = ok(
        app.get(
            &format!("/admin/users/{root_id}"),
            Some(&root_tokens.access),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(before, after);
    assert_eq!(
        ok(
            app.get("/admin/users?q=xavier", Some(&root_tokens.access))
                .await,
            StatusCode::OK
        )
        .await["metadata"]["total"],
        0
    );
}

/// An admin-created account, `carol` / `Carol-Password1`, signed in: its id and tokens.
async fn carol(app: &TestApp, t: &str) -> (String, Tokens) {
    let created = ok(
        app.post_json(
            "/admin/users",
            json!({"email": "carol@example.com", "username": "carol", "password": "Carol-Password1"}),
            Some(t),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    (id, app.login("carol", "Carol-Password1").await)
}

/// Soft-deletes the account with a reason; answers the account as it is now.
async fn soft_delete(app: &TestApp, t: &str, id: &str) -> Value {
    ok(
        app.delete(&format!("/users/{id}/soft?reason=spam%20account"), Some(t))
            .await,
        StatusCode::OK,
    )
    .await
}

/// Create: every registration rule applies; created accounts are verified and can sign in.
async fn admins_create_accounts_under_the_registration_rules(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let created = ok(
        app.post_json(
            "/admin/users",
            json!({"email": "Carol@Example.com", "username": "carol", "password": "Carol-Password1", "is_superuser": false}),
            Some(t),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (
            &created["email"],
            &created["is_verified"],
            &created["is_superuser"]
        ),
        (&json!("carol@example.com"), &json!(true), &json!(false))
    );
    app.login("carol", "Carol-Password1").await;
    problem(
        app.post_json(
            "/admin/users",
            json!({"email": "carol@example.com", "username": "carol2", "password": "Carol-Password1"}),
            Some(t),
        )
        .await,
        409,
        "email_already_exists",
    )
    .await;
    let weak = problem(
        app.post_json(
            "/admin/users",
            json!({"email": "dave@example.com", "username": "dave", "password": "short"}),
            Some(t),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert!(weak["errors"].as_array().unwrap().len() >= 2, "{weak}");
}

async fn admins_read_and_list_accounts(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let (carol_id, _) = carol(&app, t).await;
    let one = ok(
        app.get(&format!("/admin/users/{carol_id}"), Some(t)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(one["username"], "carol");
    problem(
        app.get(&format!("/admin/users/{}", uuid::Uuid::new_v4()), Some(t))
            .await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.get("/admin/users/not-a-uuid", Some(t)).await,
        400,
        "invalid_parameter",
    )
    .await;
    let list = ok(
        app.get("/admin/users?size=1&page=2", Some(t)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["metadata"]["total"], 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// Update: fields change, a new password ends the user's sessions.
async fn admin_updates_change_fields_and_a_new_password_ends_sessions(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let (carol_id, carol) = carol(&app, t).await;
    let path = format!("/admin/users/{carol_id}");
    let updated = ok(
        call(
            &app,
            Method::PUT,
            &path,
            Some(json!({"username": "carol_b", "email": "carol.b@example.com", "password": "Carol-Password2"})),
            t,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (&updated["username"], &updated["email"]),
        (&json!("carol_b"), &json!("carol.b@example.com"))
    );
    problem(
        app.get("/users/me", Some(&carol.access)).await,
        401,
        "session_revoked",
    )
    .await;
    app.login("carol.b@example.com", "Carol-Password2").await;
    problem(
        call(
            &app,
            Method::PUT,
            &path,
            Some(json!({"email": "root@example.com"})),
            t,
        )
        .await,
        409,
        "email_already_exists",
    )
    .await;
    problem(
        call(&app, Method::PUT, &path, Some(json!({"username": "a"})), t).await,
        422,
        "validation_failed",
    )
    .await;
}

/// Toggles flip and answer the new state; a new superuser can use the admin API at once.
async fn toggles_flip_superuser_rights_and_verification(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let (carol_id, carol) = carol(&app, t).await;
    let path = format!("/admin/users/{carol_id}");
    let su = ok(
        app.post_json(&format!("{path}/toggle-superuser"), json!({}), Some(t))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(su["is_superuser"], true);
    ok(
        app.get("/admin/statistics", Some(&carol.access)).await,
        StatusCode::OK,
    )
    .await;
    let su = ok(
        app.post_json(&format!("{path}/toggle-superuser"), json!({}), Some(t))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(su["is_superuser"], false);
    let v = ok(
        app.post_json(&format!("{path}/toggle-verification"), json!({}), Some(t))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["is_verified"], false);
    problem(
        app.login_raw("carol", "Carol-Password1").await,
        403,
        "email_not_verified",
    )
    .await;
}

/// Self-protection: no demoting, unverifying or deleting yourself, by any route; changing your
/// own name is fine.
async fn admins_cannot_demote_unverify_or_delete_themselves(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, admin_id) = root(&app).await;
    let t = admin.access.as_str();
    let me = format!("/admin/users/{admin_id}");
    for (method, route, body) in [
        (Method::POST, format!("{me}/toggle-superuser"), None),
        (Method::POST, format!("{me}/toggle-verification"), None),
        (
            Method::PUT,
            me.clone(),
            Some(json!({"is_superuser": false})),
        ),
        (Method::PUT, me.clone(), Some(json!({"is_verified": false}))),
        (Method::DELETE, me.clone(), None),
        (Method::DELETE, format!("/users/{admin_id}/soft"), None),
        (Method::DELETE, format!("/users/{admin_id}/permanent"), None),
    ] {
        problem(
            call(&app, method, &route, body, t).await,
            403,
            "cannot_modify_self",
        )
        .await;
    }
    let still = ok(app.get("/users/me", Some(t)).await, StatusCode::OK).await;
    assert_eq!(
        (&still["is_superuser"], &still["is_deleted"]),
        (&json!(true), &json!(false))
    );
    ok(
        call(
            &app,
            Method::PUT,
            &me,
            Some(json!({"username": "rooty"})),
            t,
        )
        .await,
        StatusCode::OK,
    )
    .await;
}

/// Soft delete with a reason: sessions end, sign-in refused, listed as deleted with who/why.
async fn soft_delete_ends_sessions_and_lists_the_account_as_deleted(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, admin_id) = root(&app).await;
    let t = admin.access.as_str();
    let (carol_id, carol) = carol(&app, t).await;
    let soft = soft_delete(&app, t, &carol_id).await;
    assert_eq!(
        (
            &soft["is_deleted"],
            &soft["deletion_reason"],
            &soft["deleted_by"]
        ),
        (&json!(true), &json!("spam account"), &json!(admin_id))
    );
    assert!(soft["deleted_at"].is_string());
    problem(
        app.get("/users/me", Some(&carol.access)).await,
        401,
        "session_revoked",
    )
    .await;
    problem(
        app.login_raw("carol", "Carol-Password1").await,
        401,
        "invalid_credentials",
    )
    .await;
    problem(
        app.delete(&format!("/users/{carol_id}/soft"), Some(t))
            .await,
        409,
        "already_deleted",
    )
    .await;
    let deleted = ok(app.get("/users/deleted", Some(t)).await, StatusCode::OK).await;
    assert_eq!(deleted["metadata"]["total"], 1);
    assert_eq!(deleted["items"][0]["id"], carol_id.as_str());
    assert_eq!(deleted["items"][0]["deletion_reason"], "spam account");
    let visible = ok(app.get("/users", Some(t)).await, StatusCode::OK).await;
    assert_eq!(visible["metadata"]["total"], 1);
    let all = ok(
        app.get("/users?include_deleted=true", Some(t)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["metadata"]["total"], 2);
}

/// Statistics count what is there: the superuser, and one soft-deleted account.
async fn statistics_count_what_is_there(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let (carol_id, _) = carol(&app, t).await;
    soft_delete(&app, t, &carol_id).await;
    let stats = ok(app.get("/admin/statistics", Some(t)).await, StatusCode::OK).await;
    assert_eq!(
        (
            &stats["total_users"],
            &stats["superusers"],
            &stats["verified_users"],
            &stats["unverified_users"],
            &stats["deleted_users"],
            &stats["pending_deletion"],
        ),
        (
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(0),
            &json!(1),
            &json!(0)
        )
    );
    assert!(stats["active_sessions"].as_u64().unwrap() >= 1);
    for s in [
        "PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED",
    ] {
        assert!(stats["jobs_by_status"][s].is_u64(), "{stats}");
    }
}

/// Restore: signs in again; restoring what is not deleted is refused.
async fn a_restored_account_signs_in_again(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let (carol_id, _) = carol(&app, t).await;
    soft_delete(&app, t, &carol_id).await;
    let restored = ok(
        app.post_json(&format!("/users/{carol_id}/restore"), json!({}), Some(t))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (&restored["is_deleted"], &restored["deletion_reason"]),
        (&json!(false), &Value::Null)
    );
    app.login("carol", "Carol-Password1").await;
    problem(
        app.post_json(&format!("/users/{carol_id}/restore"), json!({}), Some(t))
            .await,
        409,
        "not_deleted",
    )
    .await;
}

/// Permanent: gone; the audit trail keeps the events by id only.
async fn permanent_deletion_keeps_the_audit_trail_by_id_only(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let (carol_id, _) = carol(&app, t).await;
    ok(
        app.delete(&format!("/users/{carol_id}/permanent"), Some(t))
            .await,
        StatusCode::OK,
    )
    .await;
    problem(
        app.get(&format!("/admin/users/{carol_id}"), Some(t)).await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.delete(&format!("/users/{carol_id}/permanent"), Some(t))
            .await,
        404,
        "not_found",
    )
    .await;
    let carol_uuid: uuid::Uuid = carol_id.parse().unwrap();
    let trail = audit_log::Entity::find()
        .filter(audit_log::Column::UserId.eq(carol_uuid))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(trail.iter().any(|e| e.event == "account_deleted"));
    assert!(
        trail
            .iter()
            .all(|e| e.ip_address.is_none() && e.user_agent.is_none())
    );
}

/// DELETE /admin/users/{id} is a soft delete.
async fn admin_delete_is_a_soft_delete(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let (other, _) = app.signed_in_user().await;
    let other_id = ok(
        app.get(&format!("/admin/users?q={}", other.username), Some(t))
            .await,
        StatusCode::OK,
    )
    .await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let gone = ok(
        app.delete(&format!("/admin/users/{other_id}?reason=asked"), Some(t))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (&gone["is_deleted"], &gone["deletion_reason"]),
        (&json!(true), &json!("asked"))
    );
}

async fn bulk_operations_apply_each_one(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, admin_id) = root(&app).await;
    let t = admin.access.as_str();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let u = TestUser::new();
        assert_eq!(app.register(&u).await.status(), StatusCode::CREATED);
        let list = ok(
            app.get(&format!("/admin/users?q={}", u.username), Some(t))
                .await,
            StatusCode::OK,
        )
        .await;
        ids.push(list["items"][0]["id"].as_str().unwrap().to_string());
    }
    let missing = uuid::Uuid::new_v4().to_string();
    let bulk = |operation: &'static str, user_ids: Vec<String>| {
        let app = &app;
        async move {
            ok(
                app.post_json(
                    "/admin/bulk-operations",
                    json!({"user_ids": user_ids, "operation": operation}),
                    Some(t),
                )
                .await,
                StatusCode::OK,
            )
            .await
        }
    };
    let field = |name: &'static str| {
        let app = &app;
        let ids = ids.clone();
        async move {
            let mut values = Vec::new();
            for id in &ids {
                let u = ok(
                    app.get(&format!("/admin/users/{id}"), Some(t)).await,
                    StatusCode::OK,
                )
                .await;
                values.push(u[name].as_bool().unwrap());
            }
            values
        }
    };

    let mut with_missing = ids.clone();
    with_missing.push(missing.clone());
    with_missing.push(ids[0].clone());
    let r = bulk("verify", with_missing).await;
    assert_eq!(r["operation"], "verify");
    assert_eq!(
        r["succeeded"].as_array().unwrap().len(),
        3,
        "duplicates count once: {r}"
    );
    assert_eq!(
        r["failed"],
        json!([{"user_id": missing, "code": "not_found", "detail": "no such resource"}])
    );
    assert_eq!(field("is_verified").await, [true, true, true]);

    bulk("unverify", vec![ids[0].clone()]).await;
    assert_eq!(field("is_verified").await, [false, true, true]);

    bulk("make_superuser", ids[..2].to_vec()).await;
    assert_eq!(field("is_superuser").await, [true, true, false]);
    let mut demote = ids[..1].to_vec();
    demote.push(admin_id.clone());
    let r = bulk("remove_superuser", demote).await;
    assert_eq!(r["succeeded"], json!([ids[0]]));
    assert_eq!(r["failed"][0]["code"], "cannot_modify_self");
    assert_eq!(field("is_superuser").await, [false, true, false]);

    let r = bulk(
        "soft_delete",
        vec![ids[1].clone(), ids[2].clone(), admin_id.clone()],
    )
    .await;
    assert_eq!(r["succeeded"].as_array().unwrap().len(), 2);
    assert_eq!(r["failed"][0]["user_id"], admin_id.as_str());
    assert_eq!(field("is_deleted").await, [false, true, true]);

    let r = bulk("restore", vec![ids[0].clone(), ids[1].clone()]).await;
    assert_eq!(r["succeeded"], json!([ids[1]]));
    assert_eq!(r["failed"][0]["code"], "not_deleted");
    assert_eq!(field("is_deleted").await, [false, false, true]);

    // Bad requests are refused whole.
    for body in [
        json!({"user_ids": [], "operation": "verify"}),
        json!({"user_ids": [ids[0]], "operation": "explode"}),
        json!({"user_ids": ["not-a-uuid"], "operation": "verify"}),
    ] {
        let resp = app
            .post_json("/admin/bulk-operations", body.clone(), Some(t))
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let too_many: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let resp = app
        .post_json(
            "/admin/bulk-operations",
            json!({"user_ids": too_many, "operation": "verify"}),
            Some(t),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

async fn search_applies_every_filter(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let (admin, _) = root(&app).await;
    let t = admin.access.as_str();
    let mut made = Vec::new();
    for (name, verified, superuser) in [
        ("alice_search", true, false),
        ("Bob_Search", false, false),
        ("carl_100", true, true),
    ] {
        let u = ok(
            app.post_json(
                "/admin/users",
                json!({"email": format!("{}@Example.org", name.to_lowercase()), "username": name,
                       "password": "Search-Password1", "is_verified": verified, "is_superuser": superuser}),
                Some(t),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        made.push(u);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect()
    };
    let search = |query: String| {
        let app = &app;
        async move {
            ok(
                app.get(&format!("/users/search?{query}"), Some(t)).await,
                StatusCode::OK,
            )
            .await
        }
    };
    assert_eq!(
        names(&search("q=SEARCH".into()).await),
        ["alice_search", "Bob_Search"]
    );
    assert_eq!(
        names(&search("q=example.org&is_verified=false".into()).await),
        ["Bob_Search"]
    );
    assert_eq!(
        names(&search("q=example.org&is_superuser=true".into()).await),
        ["carl_100"]
    );
    // `_` and `%` match literally.
    assert_eq!(names(&search("q=l_1".into()).await), ["carl_100"]);
    assert_eq!(names(&search("q=%25".into()).await), Vec::<String>::new());
    assert_eq!(
        names(&search("q=example.org&sort_by=username&sort_order=desc".into()).await),
        ["carl_100", "Bob_Search", "alice_search"]
    );
    let second: String = made[1]["created_at"].as_str().unwrap().into();
    let encoded = second.replace('+', "%2B");
    assert_eq!(
        names(&search(format!("q=example.org&created_after={encoded}")).await),
        ["Bob_Search", "carl_100"]
    );
    assert_eq!(
        names(&search(format!("q=example.org&created_before={encoded}")).await),
        ["alice_search"]
    );
    let page = search("q=example.org&size=2&page=2".into()).await;
    assert_eq!(names(&page), ["carl_100"]);
    assert_eq!(page["metadata"]["total"], 3);
    // A page far past the end is empty, up to the largest page number the spec allows (2^31 - 1,
    // which every client's integers hold); beyond it, a 400.
    let far = search("q=example.org&size=100&page=2147483647".into()).await;
    assert_eq!(
        (
            far["items"].as_array().unwrap().len(),
            &far["metadata"]["total"],
            &far["metadata"]["has_next"]
        ),
        (0, &json!(3), &json!(false))
    );
    // Deleted accounts are not found; bad values are a 400.
    let alice_id = made[0]["id"].as_str().unwrap();
    ok(
        app.delete(&format!("/users/{alice_id}/soft"), Some(t))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&search("q=search".into()).await), ["Bob_Search"]);
    for bad in [
        "sort_by=password_hash",
        "is_verified=maybe",
        "created_after=yesterday",
        "size=0",
        "page=2147483648",
    ] {
        let resp = app.get(&format!("/users/search?{bad}"), Some(t)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}
