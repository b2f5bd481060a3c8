//! Keel's own pages for the links in its mails, in a real browser (headless Chromium through
//! ChromeDriver): on the embedded default (SQLite, jobs in process) and on PostgreSQL with the
//! mail going through RabbitMQ and a worker process. Screenshots go to target/screenshots/.

use crate::common;

use common::{Backend, KeelProcess, TestApp, TestUser, browser::Browser, mail, problem};
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    mailed_links_open_pages_that_act_only_when_asked,
    a_password_is_reset_through_its_page,
    a_deletion_is_confirmed_and_cancelled_through_the_pages,
);

const PUBLIC_URL: &str = "http://keel.test";

/// A server whose mail links point at its own pages (no FRONTEND_URL), and with PostgreSQL a
/// worker process that sends the mail it takes from RabbitMQ.
async fn start(backend: Backend) -> (TestApp, Option<(KeelProcess, String)>) {
    let db = common::fresh_database_url(backend).await;
    let mut env = common::base_settings(&db);
    env.remove("FRONTEND_URL");
    env.insert("PUBLIC_URL".into(), PUBLIC_URL.into());
    common::start_with_worker_on_postgres(backend, env).await
}

/// The newest mailed link to `path` for `to`, as the server's own address (the mail names
/// PUBLIC_URL, which the test's browser reaches at the server's real port).
async fn mailed_link(app: &TestApp, to: &str, subject: &str, path: &str) -> String {
    let messages = mail::wait_for_messages(to, subject, 1).await;
    let text = messages.last().unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    let start = text
        .find(&format!("{PUBLIC_URL}{path}?token="))
        .unwrap_or_else(|| panic!("no {PUBLIC_URL}{path} link in {text}"));
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    app.url(link.strip_prefix(PUBLIC_URL).unwrap())
}

async fn is_verified(app: &TestApp, user: &TestUser) -> bool {
    let tokens = app.login_raw(&user.email, &user.password).await;
    match tokens.status() {
        StatusCode::OK => true,
        _ => {
            problem(tokens, 403, "email_not_verified").await;
            false
        }
    }
}

async fn mailed_links_open_pages_that_act_only_when_asked(backend: Backend) {
    let (app, worker) = start(backend).await;
    let user = TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    let link = mailed_link(&app, &user.email, "verify your email", "/verify-email").await;
    let browser = Browser::start().await;
    let tag = format!("{backend:?}").to_lowercase();

    // Opening the link (as a mail scanner would, twice) changes nothing.
    browser.goto(&link).await;
    browser.goto(&link).await;
    assert_eq!(browser.title().await, "Verify your email address · Keel");
    assert!(
        browser
            .text("main")
            .await
            .contains("Press the button to confirm")
    );
    browser.screenshot(&format!("verify-email-{tag}")).await;
    assert!(!is_verified(&app, &user).await, "opening the page verified");

    // The button does it, and says so.
    browser.click("button[type=submit]").await;
    browser
        .wait_for_text("#result", "Your email address is verified")
        .await;
    browser
        .screenshot(&format!("verify-email-done-{tag}"))
        .await;
    assert!(is_verified(&app, &user).await);

    // The same link again: already used, in plain words.
    browser.goto(&link).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("#result", "already used").await;
    let page = browser.text("main").await;
    assert!(
        !page.contains("Press the button"),
        "only the outcome stays: {page}"
    );
    browser
        .screenshot(&format!("verify-email-used-{tag}"))
        .await;

    // A link cut short says so before anything is pressed.
    browser.goto(&app.url("/verify-email")).await;
    browser.wait_for_text("#result", "incomplete").await;
    browser.close().await;
    common::stop_with_worker(app, worker).await;
}

async fn a_password_is_reset_through_its_page(backend: Backend) {
    let (app, worker) = start(backend).await;
    let user = TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    let resp = app
        .post_json("/auth/forgot-password", json!({"email": user.email}), None)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let link = mailed_link(&app, &user.email, "reset", "/reset-password").await;
    let browser = Browser::start().await;
    let tag = format!("{backend:?}").to_lowercase();
    browser.goto(&link).await;
    browser.screenshot(&format!("reset-password-{tag}")).await;

    // Two different passwords are caught on the page; a weak one by the API, in words.
    browser.type_into("#new_password", "NewPassword456!").await;
    browser
        .type_into("#repeat_password", "NewPassword457!")
        .await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("#result", "differ").await;
    let weak = "password";
    browser.goto(&link).await;
    browser.type_into("#new_password", weak).await;
    browser.type_into("#repeat_password", weak).await;
    browser.click("button[type=submit]").await;
    let said = browser
        .wait_for_text("#result", "Please correct the following")
        .await;
    assert!(said.contains("Password"), "{said}");
    browser
        .screenshot(&format!("reset-password-weak-{tag}"))
        .await;

    // The real thing: done, and the new password signs in.
    browser.goto(&link).await;
    browser.type_into("#new_password", "NewPassword456!").await;
    browser
        .type_into("#repeat_password", "NewPassword456!")
        .await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for_text("#result", "Your password is changed")
        .await;
    browser
        .screenshot(&format!("reset-password-done-{tag}"))
        .await;
    app.login(&user.email, "NewPassword456!").await;
    problem(
        app.login_raw(&user.email, &user.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    browser.close().await;
    common::stop_with_worker(app, worker).await;
}

async fn a_deletion_is_confirmed_and_cancelled_through_the_pages(backend: Backend) {
    let (app, worker) = start(backend).await;
    let user = TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    let resp = app
        .post_json("/auth/request-deletion", json!({"email": user.email}), None)
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let confirm = mailed_link(
        &app,
        &user.email,
        "confirm the deletion",
        "/confirm-deletion",
    )
    .await;
    let browser = Browser::start().await;
    let tag = format!("{backend:?}").to_lowercase();
    browser.goto(&confirm).await;
    assert!(browser.text("main").await.contains("in 7 days"));
    browser.screenshot(&format!("confirm-deletion-{tag}")).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for_text("#result", "scheduled for deletion")
        .await;

    let cancel = mailed_link(&app, &user.email, "will be deleted on", "/cancel-deletion").await;
    // Without a mouse: the button takes Enter.
    browser.goto(&cancel).await;
    browser.press_enter("button[type=submit]").await;
    browser
        .wait_for_text("#result", "The deletion is cancelled")
        .await;
    browser
        .screenshot(&format!("cancel-deletion-done-{tag}"))
        .await;
    let user_row = common::user_row(&app, &user.email).await;
    assert!(user_row.deletion_scheduled_for.is_none());
    browser.close().await;
    common::stop_with_worker(app, worker).await;
}
