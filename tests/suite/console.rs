//! The operator console at /console, in a real browser (headless Chromium): on the embedded
//! default, and on PostgreSQL with the jobs going through RabbitMQ to a worker process.

use crate::common;

use common::{Backend, KeelProcess, TestApp, browser::Browser};
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::json;

both_backends!(
    a_superuser_retries_a_failed_job_and_watches_it_succeed,
    a_second_factor_then_cancelling_a_job_and_deleting_an_account,
    the_console_refuses_everyone_but_superusers,
);

const ROOT_EMAIL: &str = "root@example.com";
const ROOT_PASSWORD: &str = "RootPassword123!";

async fn start(
    backend: Backend,
    extra: &[(&str, &str)],
) -> (TestApp, Option<(KeelProcess, String)>) {
    let db = common::fresh_database_url(backend).await;
    let mut env = common::base_settings(&db);
    env.insert("FIRST_SUPERUSER_EMAIL".into(), ROOT_EMAIL.into());
    env.insert("FIRST_SUPERUSER_PASSWORD".into(), ROOT_PASSWORD.into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    common::start_with_worker_on_postgres(backend, env).await
}

async fn sign_in(browser: &Browser, app: &TestApp, who: &str, password: &str) {
    browser.goto(&app.url("/console")).await;
    browser.type_into("#identifier", who).await;
    browser.type_into("#password", password).await;
    browser.click("#password-step button[type=submit]").await;
}

async fn a_superuser_retries_a_failed_job_and_watches_it_succeed(backend: Backend) {
    let (app, worker) = start(backend, &[]).await;
    let tag = format!("{backend:?}").to_lowercase();
    // A job that failed for good (its handler would succeed now: retrying is worth it).
    let mut row = common::job_row(json!({"message": "from the console", "fail_attempts": 0}));
    let id = *row.id.as_ref();
    row.status = sea_orm::Set(crate::entities::job::JobStatus::Failure);
    row.attempts = sea_orm::Set(5);
    row.error = sea_orm::Set(Some("SMTP server went away".into()));
    row.finished_at = sea_orm::Set(Some(chrono::Utc::now()));
    crate::entities::job::Entity::insert(row)
        .exec_without_returning(app.state.accounts.db())
        .await
        .unwrap();

    // An operator's screen.
    let browser = Browser::sized(1280, 1000).await;
    sign_in(&browser, &app, ROOT_EMAIL, ROOT_PASSWORD).await;
    browser.wait_for_text("#jobs h1", "Jobs").await;
    browser.wait_for_text("#status-counts", "FAILURE").await;
    // The dead letters: the failed job is listed; its detail says why it failed.
    browser.select("#filter-status", "FAILURE").await;
    browser
        .wait_for_text("#job-list", &id.to_string()[..8])
        .await;
    browser.screenshot(&format!("console-jobs-{tag}")).await;
    browser
        .click(&format!("#job-list tr[data-id='{id}'] button"))
        .await;
    browser
        .wait_for_text("#job-detail", "SMTP server went away")
        .await;
    browser
        .wait_for_text("#job-detail", "from the console")
        .await;
    browser
        .screenshot(&format!("console-job-failed-{tag}"))
        .await;

    // Retry: queued again, run by the (in-process or separate) worker, and the open console
    // shows it succeed without being reloaded.
    browser.click("#job-retry").await;
    browser.wait_for_text("#job-result", "Queued again").await;
    browser.wait_for_text("#job-title", "SUCCESS").await;
    browser
        .screenshot(&format!("console-job-success-{tag}"))
        .await;
    let job = crate::entities::job::Entity::find_by_id(id)
        .one(app.state.accounts.db())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.status, crate::entities::job::JobStatus::Success);
    // Only failed or cancelled tasks are retried; and only by superusers.
    let root = app.login(ROOT_EMAIL, ROOT_PASSWORD).await;
    let again = app
        .post_json(
            &format!("/system/background-tasks/{id}/retry"),
            json!({}),
            Some(&root.access),
        )
        .await;
    common::problem(again, 409, "task_not_retryable").await;
    let (_, plain) = app.signed_in_user().await;
    let refused = app
        .post_json(
            &format!("/system/background-tasks/{id}/retry"),
            json!({}),
            Some(&plain.access),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Accounts: the statistics, a search, and verifying an account from its row.
    let user = common::TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    browser.click("nav button[data-view=accounts]").await;
    browser.wait_for_text("#user-stats", "unverified").await;
    browser.type_into("#user-query", &user.username).await;
    browser.click("#user-search button[type=submit]").await;
    browser.wait_for_text("#user-list", &user.email).await;
    let uid = common::user_id(&app, &user.email).await;
    browser
        .click(&format!("#user-list tr[data-id='{uid}'] button"))
        .await;
    browser.wait_for_text("#user-result", "Verified").await;
    browser.screenshot(&format!("console-accounts-{tag}")).await;
    app.login(&user.email, &user.password).await;

    // Signing out ends the session: the page shows the sign-in again.
    browser.click("#sign-out").await;
    browser.wait_for_text("#sign-in h1", "Sign in").await;
    browser.close().await;
    common::stop_with_worker(app, worker).await;
}

async fn the_console_refuses_everyone_but_superusers(backend: Backend) {
    let (app, worker) = start(backend, &[]).await;
    let (user, _) = app.signed_in_user().await;
    let browser = Browser::start().await;
    sign_in(&browser, &app, &user.email, &user.password).await;
    browser
        .wait_for_text("#sign-in-result", "for superusers")
        .await;
    browser
        .screenshot(&format!(
            "console-refused-{}",
            format!("{backend:?}").to_lowercase()
        ))
        .await;
    browser.close().await;
    common::stop_with_worker(app, worker).await;

    // Switched off, it is not there at all.
    let (app, worker) = start(backend, &[("ENABLE_CONSOLE", "false")]).await;
    let resp = app.get("/console", None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    common::stop_with_worker(app, worker).await;
}

async fn a_second_factor_then_cancelling_a_job_and_deleting_an_account(backend: Backend) {
    let (app, worker) = start(backend, &[]).await;
    let tag = format!("{backend:?}").to_lowercase();
    let root_user = common::TestUser {
        email: ROOT_EMAIL.into(),
        username: "superuser".into(),
        password: ROOT_PASSWORD.into(),
    };
    let root = app.login(ROOT_EMAIL, ROOT_PASSWORD).await;
    let (mut authenticator, _) = crate::mfa::enable_totp(&app, &root_user, &root).await;
    // A task due in an hour, to cancel; an account, to delete and restore.
    let root = app.login_raw(ROOT_EMAIL, ROOT_PASSWORD).await;
    assert_eq!(root.status(), StatusCode::UNAUTHORIZED, "the factor is on");
    let (user, plain) = app.signed_in_user().await;
    let task = common::submit_task(
        &app,
        &plain.access,
        "/system/background-tasks/test-task?countdown=3600",
        json!({"message": "later"}),
    )
    .await;

    // The password, then the code.
    let browser = Browser::sized(1280, 1000).await;
    sign_in(&browser, &app, ROOT_EMAIL, ROOT_PASSWORD).await;
    browser
        .wait_for_text("#code-step", "authenticator app")
        .await;
    browser
        .type_into("#code", &authenticator.next_code().await)
        .await;
    browser
        .screenshot(&format!("console-code-step-{tag}"))
        .await;
    browser.click("#code-step button[type=submit]").await;
    browser.wait_for_text("#jobs h1", "Jobs").await;

    // Cancel the waiting task from its detail.
    browser.wait_for_text("#job-list", &task[..8]).await;
    browser
        .click(&format!("#job-list tr[data-id='{task}'] button"))
        .await;
    browser.wait_for_text("#job-title", "PENDING").await;
    browser.click("#job-cancel").await;
    browser.wait_for_text("#job-result", "Cancelled").await;
    browser.wait_for_text("#job-title", "REVOKED").await;
    assert_eq!(
        common::task_json(&app, &plain.access, &task).await["status"],
        "REVOKED"
    );

    // Soft delete the account from its row, then restore it.
    browser.click("nav button[data-view=accounts]").await;
    browser.type_into("#user-query", &user.username).await;
    browser.click("#user-search button[type=submit]").await;
    browser.wait_for_text("#user-list", &user.email).await;
    let uid = common::user_id(&app, &user.email).await;
    let row = format!("#user-list tr[data-id='{uid}']");
    browser.click(&format!("{row} button.danger")).await;
    browser.wait_for_text("#user-result", "Soft-deleted").await;
    common::problem(
        app.login_raw(&user.email, &user.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    browser.click("#include-deleted").await;
    browser.wait_for_text(&row, "deleted").await;
    browser.screenshot(&format!("console-deleted-{tag}")).await;
    browser.click(&format!("{row} button:last-child")).await;
    browser.wait_for_text("#user-result", "Restored").await;
    app.login(&user.email, &user.password).await;
    browser.close().await;
    common::stop_with_worker(app, worker).await;
}
