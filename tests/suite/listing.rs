//! Account listings by cursor (`?cursor=`, `metadata.next_cursor`): every account once, in
//! order, whatever is added or removed meanwhile; the offset form beside it.

use crate::common;

use crate::entities::user;
use common::{Backend, TestApp, TestUser, problem};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::Value;

both_backends!(
    cursors_walk_every_account_once_in_order,
    cursors_hold_their_place_while_accounts_come_and_go,
    search_cursors_follow_their_order_and_refuse_another,
    admin_listings_take_cursors,
);

const ROOT: [(&str, &str); 2] = [
    ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
    ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
];

async fn json(app: &TestApp, path: &str, token: &str) -> Value {
    let resp = app.get(path, Some(token)).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

fn field<'a>(body: &'a Value, name: &str) -> Vec<&'a str> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u[name].as_str().unwrap())
        .collect()
}

fn join(path: &str, extra: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{extra}")
}

/// Follows `next_cursor` from the first page of `path` to the end: every page's `field` values
/// in order, and the page numbers the metadata gave.
async fn walk(app: &TestApp, path: &str, token: &str, name: &str) -> (Vec<String>, Vec<u64>) {
    let mut page = json(app, path, token).await;
    let (mut seen, mut numbers) = (Vec::new(), Vec::new());
    loop {
        seen.extend(field(&page, name).into_iter().map(String::from));
        numbers.push(page["metadata"]["page"].as_u64().unwrap());
        let Some(cursor) = page["metadata"]["next_cursor"].as_str() else {
            assert_eq!(page["metadata"]["has_next"], false, "{page}");
            assert!(page["metadata"]["next_page"].is_null(), "{page}");
            break;
        };
        assert_eq!(page["metadata"]["has_next"], true, "{page}");
        assert!(numbers.len() < 50, "the walk ends");
        page = json(app, &join(path, &format!("cursor={cursor}")), token).await;
    }
    (seen, numbers)
}

/// Registers `n` accounts and returns the caller's token (a superuser's).
async fn populated(backend: Backend, n: usize) -> (TestApp, String) {
    let app = TestApp::start_with(backend, &ROOT).await;
    for _ in 0..n {
        assert_eq!(
            app.register(&TestUser::new()).await.status(),
            StatusCode::CREATED
        );
    }
    let token = app
        .login("root@example.com", "SuperSecret123!")
        .await
        .access;
    (app, token)
}

/// Gives these accounts one creation time, so that only their ids order them.
async fn same_created_at(app: &TestApp, emails: &[&str], at: &str) {
    let at: chrono::DateTime<chrono::Utc> = at.parse().unwrap();
    user::Entity::update_many()
        .col_expr(user::Column::CreatedAt, Expr::value(at))
        .filter(user::Column::Email.is_in(emails.iter().copied()))
        .exec(&app.state.db)
        .await
        .unwrap();
}

async fn cursors_walk_every_account_once_in_order(backend: Backend) {
    let (app, t) = populated(backend, 8).await;
    let all = json(&app, "/users?size=100", &t).await;
    let emails: Vec<&str> = field(&all, "email");
    assert_eq!(emails.len(), 9);
    // Four accounts created in the same microsecond: the id orders them, here and in cursors.
    same_created_at(&app, &emails[2..6], "2026-06-01T12:00:00.123456Z").await;
    // (A query of its own: the page cache cannot know of a write behind the API's back.)
    let all = json(&app, "/users?size=99", &t).await;
    let ids: Vec<String> = field(&all, "id").into_iter().map(String::from).collect();

    for size in [1, 2, 4, 9] {
        let (walked, pages) = walk(&app, &format!("/users?size={size}"), &t, "id").await;
        assert_eq!(walked, ids, "size {size}: every account once, in order");
        let expected: Vec<u64> = (1..=9u64.div_ceil(size)).collect();
        assert_eq!(pages, expected, "size {size}: pages are numbered on");
    }
    // Each cursor page says where it is, as the offset form would.
    let first = json(&app, "/users?size=4", &t).await;
    let cursor = first["metadata"]["next_cursor"].as_str().unwrap();
    let by_cursor = json(&app, &format!("/users?size=4&cursor={cursor}"), &t).await;
    let by_page = json(&app, "/users?size=4&page=2", &t).await;
    assert_eq!(by_cursor["items"], by_page["items"]);
    assert_eq!(by_cursor["metadata"], by_page["metadata"]);
    // A cursor outranks `page`.
    let both = json(&app, &format!("/users?size=4&page=7&cursor={cursor}"), &t).await;
    assert_eq!(both["items"], by_page["items"]);
}

async fn cursors_hold_their_place_while_accounts_come_and_go(backend: Backend) {
    let (app, t) = populated(backend, 6).await;
    let first = json(&app, "/users?size=3", &t).await;
    let before: Vec<String> = field(&json(&app, "/users?size=100", &t).await, "id")
        .into_iter()
        .map(String::from)
        .collect();
    let cursor = first["metadata"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();

    // Meanwhile two accounts appear before the cursor's place and one on the page before
    // goes.
    let early = [TestUser::new(), TestUser::new()];
    for u in &early {
        assert_eq!(app.register(u).await.status(), StatusCode::CREATED);
    }
    let emails: Vec<&str> = early.iter().map(|u| u.email.as_str()).collect();
    same_created_at(&app, &emails, "2001-01-01T00:00:00Z").await;
    let gone = field(&first, "id")[1];
    let resp = app.delete(&format!("/users/{gone}/soft"), Some(&t)).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // By cursor: exactly the accounts that followed the first page, none twice, none missed.
    let next = json(&app, &format!("/users?size=3&cursor={cursor}"), &t).await;
    assert_eq!(field(&next, "id"), before[3..6].to_vec());
    assert_eq!(next["metadata"]["total"], 8, "the total is today's");
    let cursor = next["metadata"]["next_cursor"].as_str().unwrap();
    let last = json(&app, &format!("/users?size=3&cursor={cursor}"), &t).await;
    assert_eq!(field(&last, "id"), before[6..].to_vec());
    assert!(last["metadata"]["next_cursor"].is_null());
    // By page number the same request now repeats an account of the first page.
    let shifted = json(&app, "/users?size=3&page=2", &t).await;
    assert_ne!(field(&shifted, "id"), before[3..6].to_vec());
}

async fn search_cursors_follow_their_order_and_refuse_another(backend: Backend) {
    let (app, t) = populated(backend, 5).await;
    // Walked by cursor as listed in one page (the database's collation orders the text).
    let by_email = "/users/search?q=example&sort_by=email&sort_order=desc&size=2";
    let all = json(&app, &by_email.replace("size=2", "size=100"), &t).await;
    let emails: Vec<String> = field(&all, "email").into_iter().map(String::from).collect();
    assert_eq!(emails.len(), 6);
    let (walked, _) = walk(&app, by_email, &t, "email").await;
    assert_eq!(walked, emails);
    let by_name = "/users/search?q=example&sort_by=username&size=2";
    let all = json(&app, &by_name.replace("size=2", "size=100"), &t).await;
    let names: Vec<String> = field(&all, "username")
        .into_iter()
        .map(String::from)
        .collect();
    let (walked, _) = walk(&app, by_name, &t, "username").await;
    assert_eq!(walked, names);

    // A cursor belongs to its order; a narrower filter may carry on from it.
    let page = json(&app, by_email, &t).await;
    let cursor = page["metadata"]["next_cursor"].as_str().unwrap();
    for other in ["sort_by=email", "sort_by=username&sort_order=desc", ""] {
        let body = problem(
            app.get(
                &format!("/users/search?q=example&{other}&cursor={cursor}"),
                Some(&t),
            )
            .await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "cursor", "{body}");
    }
    let narrower = json(
        &app,
        &format!("{by_email}&is_superuser=false&cursor={cursor}"),
        &t,
    )
    .await;
    let expected: Vec<&String> = emails[2..]
        .iter()
        .filter(|e| *e != "root@example.com")
        .take(2)
        .collect();
    let got: Vec<String> = field(&narrower, "email")
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got.iter().collect::<Vec<_>>(), expected);

    // Anything but a cursor the API gave out is a 422 naming it; an overlong one a 400.
    for bad in ["abc", "MS5jLmEuMi4", "%2F%2F%2F%2F", "MS56LmEuMi4wMDAwLngK"] {
        let body = problem(
            app.get(&format!("/users?cursor={bad}"), Some(&t)).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "cursor", "{bad}: {body}");
    }
    problem(
        app.get(&format!("/users?cursor={}", "A".repeat(513)), Some(&t))
            .await,
        400,
        "invalid_parameter",
    )
    .await;
    // So is an empty one, as the spec says (minLength 1), on every listing that takes one.
    for listing in [
        "/users",
        "/users/search?q=example&",
        "/users/deleted",
        "/admin/users",
    ] {
        let sep = if listing.ends_with('&') { "" } else { "?" };
        let body = problem(
            app.get(&format!("{listing}{sep}cursor="), Some(&t)).await,
            400,
            "invalid_parameter",
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("cursor"),
            "{body}"
        );
    }
}

async fn admin_listings_take_cursors(backend: Backend) {
    let (app, t) = populated(backend, 5).await;
    let everyone = json(&app, "/admin/users?size=100", &t).await;
    let ids: Vec<String> = field(&everyone, "id")
        .into_iter()
        .map(String::from)
        .collect();
    let (walked, pages) = walk(&app, "/admin/users?size=2", &t, "id").await;
    assert_eq!(walked, ids);
    assert_eq!(pages, [1, 2, 3]);
    // Administrators' pages carry the deletion fields by cursor too.
    let second = json(
        &app,
        &format!(
            "/admin/users?size=2&cursor={}",
            json(&app, "/admin/users?size=2", &t).await["metadata"]["next_cursor"]
                .as_str()
                .unwrap()
        ),
        &t,
    )
    .await;
    assert!(
        second["items"][0]
            .as_object()
            .unwrap()
            .contains_key("deletion_reason")
    );

    // The deleted accounts, most recently deleted first.
    for id in &ids[1..5] {
        let resp = app.delete(&format!("/users/{id}/soft"), Some(&t)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let deleted = json(&app, "/users/deleted?size=100", &t).await;
    let deleted_ids: Vec<String> = field(&deleted, "id")
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(deleted_ids.len(), 4);
    let (walked, _) = walk(&app, "/users/deleted?size=3", &t, "id").await;
    assert_eq!(walked, deleted_ids);
    // A search filter applies to every cursor page.
    let (walked, _) = walk(
        &app,
        "/admin/users?size=1&include_deleted=true&q=example.com",
        &t,
        "id",
    )
    .await;
    assert_eq!(walked.len(), 6);
}
