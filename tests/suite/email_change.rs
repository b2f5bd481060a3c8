//! Changing the email address over real HTTP, on both back ends, with every mail through real
//! SMTP: confirmed from the new address, undone from the old one.

use crate::common;

use common::{Backend, TestApp, TestUser, mail, problem};
use reqwest::StatusCode;
use serde_json::{Value, json};

both_backends!(
    confirm_then_revert_from_the_old_address,
    a_taken_address_gets_a_notice_and_the_same_answer,
);

async fn ok(resp: reqwest::Response, status: StatusCode) -> Value {
    let got = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(got, status, "{body}");
    body
}

fn new_address() -> String {
    TestUser::new().email.replace("user-", "moved-")
}

async fn confirm_then_revert_from_the_old_address(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, tokens) = app.signed_in_user().await;
    let other = app.login(&user.email, &user.password).await;
    let new_email = new_address();
    let ask = |body: Value| app.post_json("/users/me/email", body, Some(&tokens.access));

    // The password is needed, and the address must be one and a different one.
    problem(
        ask(json!({"new_email": new_email, "password": "Not-The-Password1"})).await,
        403,
        "invalid_current_password",
    )
    .await;
    let bad = problem(
        ask(json!({"new_email": "not-an-address", "password": user.password})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "new_email", "{bad}");
    problem(
        ask(json!({"new_email": user.email.to_uppercase(), "password": user.password})).await,
        422,
        "validation_failed",
    )
    .await;

    // Asked for: nothing changes until the link mailed to the new address is followed.
    let listed = ok(
        app.get(
            &format!("/users/search?q={}", &new_email[..20]),
            Some(&tokens.access),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["metadata"]["total"], 0);
    ok(
        ask(json!({"new_email": new_email.to_uppercase(), "password": user.password})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let me = ok(
        app.get("/users/me", Some(&tokens.access)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["email"], user.email.as_str());
    let confirm = mail::wait_for_token(
        &new_email,
        "confirm your new email address",
        "confirm-email-change",
    )
    .await;
    ok(
        app.post_json(
            "/auth/confirm-email-change",
            json!({"token": confirm}),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    problem(
        app.post_json(
            "/auth/confirm-email-change",
            json!({"token": confirm}),
            None,
        )
        .await,
        400,
        "token_invalid",
    )
    .await;

    // Changed everywhere at once: the session's own view, the cached directory, sign-in.
    let me = ok(
        app.get("/users/me", Some(&tokens.access)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (me["email"].as_str(), me["is_verified"].as_bool()),
        (Some(new_email.as_str()), Some(true))
    );
    let listed = ok(
        app.get(
            &format!("/users/search?q={}", &new_email[..20]),
            Some(&tokens.access),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"][0]["email"], new_email.as_str(), "{listed}");
    problem(
        app.login_raw(&user.email, &user.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    app.login(&new_email, &user.password).await;

    // The old address was told, with a link that undoes it.
    let revert = mail::wait_for_token(
        &user.email,
        "your email address was changed",
        "revert-email-change",
    )
    .await;
    ok(
        app.post_json("/auth/revert-email-change", json!({"token": revert}), None)
            .await,
        StatusCode::OK,
    )
    .await;
    problem(
        app.post_json("/auth/revert-email-change", json!({"token": revert}), None)
            .await,
        400,
        "token_invalid",
    )
    .await;
    // The old address is back, every session ended, and a reset link went to it.
    for session in [&tokens.access, &other.access] {
        problem(
            app.get("/users/me", Some(session)).await,
            401,
            "session_revoked",
        )
        .await;
    }
    problem(
        app.login_raw(&new_email, &user.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    let reset =
        mail::wait_for_token(&user.email, "your email address is back", "reset-password").await;
    ok(
        app.post_json(
            "/auth/reset-password",
            json!({"token": reset, "new_password": "Another-Password9"}),
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let back = app.login(&user.email, "Another-Password9").await;
    let me = ok(
        app.get("/users/me", Some(&back.access)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["email"], user.email.as_str());
}

async fn a_taken_address_gets_a_notice_and_the_same_answer(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, tokens) = app.signed_in_user().await;
    let (owner, _) = app.signed_in_user().await;
    let free = new_address();

    let to_taken = ok(
        app.post_json(
            "/users/me/email",
            json!({"new_email": owner.email, "password": user.password}),
            Some(&tokens.access),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let to_free = ok(
        app.post_json(
            "/users/me/email",
            json!({"new_email": free, "password": user.password}),
            Some(&tokens.access),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(to_taken, to_free, "the same answer either way");

    // The owner of the taken address hears of it, with no link; nothing changed.
    let notice = mail::wait_for_messages(&owner.email, "confirm your new email address", 1).await;
    let text = notice[0]["text"].as_str().unwrap();
    assert!(
        text.contains("already exists") && !text.contains("token="),
        "{text}"
    );
    mail::wait_for_messages(&free, "confirm your new email address", 1).await;
    let me = ok(
        app.get("/users/me", Some(&tokens.access)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["email"], user.email.as_str());
    app.login(&owner.email, &owner.password).await;
}
