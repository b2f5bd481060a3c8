//! Account deletion with a grace period: request, confirm, cancel, reminders and the purge, with
//! time moved by writing the scheduled date (never by sleeping days).

use crate::common;

use std::{process::Command, time::Duration};

use crate::entities::{api_key, audit_log, job, session, user};
use chrono::{DateTime, Utc};
use common::{Backend, TestApp, TestUser, Tokens, eventually, mail, problem};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};
use uuid::Uuid;

both_backends!(
    deletion_is_requested_confirmed_and_cancelled,
    reminders_go_out_once_and_the_purge_takes_only_what_is_due,
);

async fn status(app: &TestApp, tokens: &Tokens) -> Value {
    let resp = app.get("/auth/deletion-status", Some(&tokens.access)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// Requests and confirms the deletion through the mails; returns the scheduled date.
async fn schedule(app: &TestApp, user: &TestUser, tokens: &Tokens) -> DateTime<Utc> {
    let count = |subject: &'static str| async move {
        mail::messages_to(&user.email)
            .await
            .iter()
            .filter(|m| m["subject"].as_str().is_some_and(|s| s.contains(subject)))
            .count()
    };
    let (confirms, scheduled) = (
        count("confirm the deletion").await,
        count("will be deleted on").await,
    );
    let resp = app
        .post_json("/auth/request-deletion", json!({}), Some(&tokens.access))
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let confirm = mail::wait_for_messages(&user.email, "confirm the deletion", confirms + 1).await;
    let token = mail::token_from(confirm.last().unwrap(), "confirm-deletion");
    let resp = app
        .post_json("/auth/confirm-deletion", json!({"token": token}), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    mail::wait_for_messages(&user.email, "will be deleted on", scheduled + 1).await;
    body["deletion_scheduled_for"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn deletion_is_requested_confirmed_and_cancelled(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, tokens) = app.signed_in_user().await;

    let s = status(&app, &tokens).await;
    assert_eq!(
        s,
        json!({"deletion_requested": false, "deletion_confirmed": false,
               "deletion_scheduled_for": null, "can_cancel": false, "grace_period_days": 7})
    );
    // Nothing to cancel yet.
    problem(
        app.post_json("/auth/cancel-deletion", json!({}), Some(&tokens.access))
            .await,
        409,
        "deletion_not_requested",
    )
    .await;

    // Request while signed in: a confirmation link arrives; nothing is scheduled yet.
    let resp = app
        .post_json("/auth/request-deletion", json!({}), Some(&tokens.access))
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mails = mail::wait_for_messages(&user.email, "confirm the deletion", 1).await;
    let confirm_token = mail::token_from(&mails[0], "confirm-deletion");
    let s = status(&app, &tokens).await;
    assert_eq!(
        (
            &s["deletion_requested"],
            &s["deletion_confirmed"],
            &s["can_cancel"]
        ),
        (&json!(true), &json!(false), &json!(true))
    );

    // Confirm: scheduled a grace period from now.
    let before = Utc::now();
    let resp = app
        .post_json(
            "/auth/confirm-deletion",
            json!({"token": confirm_token}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let at: DateTime<Utc> = body["deletion_scheduled_for"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = before + chrono::Duration::days(7);
    assert!(
        (at - expected).num_seconds().abs() < 60,
        "{at} vs {expected}"
    );
    // The token worked once.
    problem(
        app.post_json(
            "/auth/confirm-deletion",
            json!({"token": confirm_token}),
            None,
        )
        .await,
        400,
        "token_invalid",
    )
    .await;

    // During the grace period the account works: sign in, see the status and the date.
    let tokens = app.login(&user.email, &user.password).await;
    let s = status(&app, &tokens).await;
    assert_eq!(
        (&s["deletion_confirmed"], &s["can_cancel"]),
        (&json!(true), &json!(true))
    );
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["deletion_scheduled_for"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at
    );
    problem(
        app.post_json("/auth/request-deletion", json!({}), Some(&tokens.access))
            .await,
        409,
        "deletion_already_scheduled",
    )
    .await;

    // Cancel with the link from the mail, without signing in.
    let scheduled = mail::wait_for_messages(&user.email, "will be deleted on", 1).await;
    let cancel_token = mail::token_from(&scheduled[0], "cancel-deletion");
    let resp = app
        .post_json(
            "/auth/cancel-deletion",
            json!({"token": cancel_token}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"deletion_cancelled": true})
    );
    mail::wait_for_messages(&user.email, "will not be deleted", 1).await;
    let s = status(&app, &tokens).await;
    assert_eq!(
        (&s["deletion_requested"], &s["deletion_scheduled_for"]),
        (&json!(false), &Value::Null)
    );
    problem(
        app.post_json(
            "/auth/cancel-deletion",
            json!({"token": cancel_token}),
            None,
        )
        .await,
        400,
        "token_invalid",
    )
    .await;

    // Schedule again and cancel while signed in.
    schedule(&app, &user, &tokens).await;
    let resp = app
        .post_json("/auth/cancel-deletion", json!({}), Some(&tokens.access))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(status(&app, &tokens).await["deletion_confirmed"], false);

    // By email, without signing in: the same answer for an unknown address, and no mail.
    let stranger = TestUser::new();
    for email in [&user.email, &stranger.email] {
        let resp = app
            .post_json("/auth/request-deletion", json!({"email": email}), None)
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    mail::wait_for_messages(&user.email, "confirm the deletion", 3).await;
    assert!(mail::messages_to(&stranger.email).await.is_empty());
    // Neither a token nor an email: the missing field is named; a bad token is a 401.
    let body = problem(
        app.post_json("/auth/request-deletion", json!({}), None)
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "email");
    problem(
        app.post_json("/auth/request-deletion", json!({}), Some("not-a-token"))
            .await,
        401,
        "token_invalid",
    )
    .await;
    problem(
        app.get("/auth/deletion-status", None).await,
        401,
        "not_authenticated",
    )
    .await;
}

/// Moves a user's scheduled deletion to `at`.
async fn reschedule(app: &TestApp, email: &str, at: DateTime<Utc>) {
    let changed = user::Entity::update_many()
        .col_expr(user::Column::DeletionScheduledFor, Expr::value(at))
        .filter(user::Column::Email.eq(email))
        .exec(&app.state.db)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected, 1);
}

/// Runs a periodic job the way the scheduler enqueues it and returns its result.
async fn run_job(app: &TestApp, name: &str) -> Value {
    let id = app
        .state
        .jobs
        .queue()
        .enqueue(&app.state.db, keel::jobs::NewJob::new(name, json!({})))
        .await
        .unwrap();
    app.state.jobs.queue().wake();
    finished(app, id).await
}

async fn finished(app: &TestApp, id: Uuid) -> Value {
    eventually(Duration::from_secs(20), "the job to succeed", || async {
        let j = job::Entity::find_by_id(id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(j.status.as_str(), "FAILURE", "{:?}", j.error);
        (j.status.as_str() == "SUCCESS").then(|| j.result.unwrap())
    })
    .await
}

async fn reminders(email: &str) -> Vec<Value> {
    mail::messages_to(email)
        .await
        .into_iter()
        .filter(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.contains("will be deleted in"))
        })
        .collect()
}

async fn reminders_go_out_once_and_the_purge_takes_only_what_is_due(backend: Backend) {
    let app = TestApp::start(backend).await;
    // soon: reminded; due: purged; later: untouched, not yet reminded; keeper: never asked.
    let (soon, soon_tokens) = app.signed_in_user().await;
    let (due, due_tokens) = app.signed_in_user().await;
    let (later, later_tokens) = app.signed_in_user().await;
    let (keeper, keeper_tokens) = app.signed_in_user().await;
    for (u, t) in [
        (&soon, &soon_tokens),
        (&due, &due_tokens),
        (&later, &later_tokens),
    ] {
        schedule(&app, u, t).await;
    }
    // The account to be purged has an API key and an audit trail with its address.
    let resp = app
        .post_json(
            "/auth/api-keys",
            json!({"label": "ci", "scopes": ["tasks:read"]}),
            Some(&due_tokens.access),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let due_id = common::user_id(&app, &due.email).await;

    let now = Utc::now();
    reschedule(&app, &soon.email, now + chrono::Duration::hours(60)).await;
    reschedule(&app, &due.email, now - chrono::Duration::minutes(1)).await;

    // The scheduler's one-off run, executed by the server's embedded worker.
    let out = Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .args(["--once", "purge_deleted_accounts"])
        .env("DATABASE_URL", &app.env["DATABASE_URL"])
        .env("LOG_LEVEL", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let id: Uuid = printed.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        finished(&app, id).await,
        json!({"accounts_deleted": 1, "reminders_sent": 1})
    );

    // The due account is gone with everything hanging off it; its audit events stay, bare.
    assert!(
        user::Entity::find_by_id(due_id)
            .one(&app.state.db)
            .await
            .unwrap()
            .is_none()
    );
    for count in [
        session::Entity::find()
            .filter(session::Column::UserId.eq(due_id))
            .all(&app.state.db)
            .await
            .unwrap()
            .len(),
        api_key::Entity::find()
            .filter(api_key::Column::UserId.eq(due_id))
            .all(&app.state.db)
            .await
            .unwrap()
            .len(),
    ] {
        assert_eq!(count, 0);
    }
    let trail = audit_log::Entity::find()
        .filter(audit_log::Column::UserId.eq(due_id))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(trail.iter().any(|e| e.event == "login_success"));
    assert!(trail.iter().any(|e| e.event == "account_purged"));
    assert!(
        trail
            .iter()
            .all(|e| e.ip_address.is_none() && e.user_agent.is_none()),
        "no personal data stays in the audit log"
    );
    problem(
        app.login_raw(&due.email, &due.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    problem(
        app.get("/users/me", Some(&due_tokens.access)).await,
        401,
        "token_invalid",
    )
    .await;
    mail::wait_for_messages(&due.email, "your account was deleted", 1).await;

    // The others are untouched: `later` (6+ days left) has no reminder, keeper nothing at all.
    for (u, t, scheduled) in [
        (&later, &later_tokens, true),
        (&keeper, &keeper_tokens, false),
    ] {
        let s = status(&app, t).await;
        assert_eq!(s["deletion_confirmed"], scheduled, "{}", u.email);
        assert!(reminders(&u.email).await.is_empty());
    }

    // The 3-day reminder went out once, however often the jobs run.
    let first = mail::wait_for_messages(&soon.email, "will be deleted in 3 days", 1).await;
    for job in ["send_deletion_reminders", "purge_deleted_accounts"] {
        let result = run_job(&app, job).await;
        assert_eq!(result["reminders_sent"], 0, "{job}: {result}");
    }
    assert_eq!(reminders(&soon.email).await.len(), 1);

    // Half a day left: the 1-day reminder, once.
    reschedule(&app, &soon.email, Utc::now() + chrono::Duration::hours(12)).await;
    assert_eq!(
        run_job(&app, "send_deletion_reminders").await,
        json!({"reminders_sent": 1})
    );
    assert_eq!(
        run_job(&app, "send_deletion_reminders").await,
        json!({"reminders_sent": 0})
    );
    mail::wait_for_messages(&soon.email, "will be deleted in 1 day", 1).await;
    assert_eq!(reminders(&soon.email).await.len(), 2);

    // The link in the first reminder still cancels.
    let token = mail::token_from(&first[0], "cancel-deletion");
    let resp = app
        .post_json("/auth/cancel-deletion", json!({"token": token}), None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Past the old date, a cancelled account is not purged.
    reschedule_none_then_purge(&app, &soon).await;
    app.login(&soon.email, &soon.password).await;
}

/// With the deletion cancelled, a purge run deletes nothing.
async fn reschedule_none_then_purge(app: &TestApp, soon: &TestUser) {
    let row = user::Entity::find()
        .filter(user::Column::Email.eq(&soon.email))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.deletion_scheduled_for.is_none() && row.deletion_requested_at.is_none());
    assert_eq!(
        run_job(app, "purge_deleted_accounts").await,
        json!({"accounts_deleted": 0, "reminders_sent": 0})
    );
}

/// With RabbitMQ: the scheduler enqueues, a worker process purges (in batches of one here) and
/// mails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_purges_what_the_scheduler_enqueues() {
    let queue = common::unique_queue();
    let mut overrides = common::rabbit_overrides(&queue);
    overrides.push(("ACCOUNT_PURGE_BATCH_SIZE".into(), "1".into()));
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = TestApp::start_with(Backend::Postgres, &pairs).await;
    let _worker = common::KeelProcess::spawn(&app.env);
    let (user, tokens) = app.signed_in_user().await;
    let (second, second_tokens) = app.signed_in_user().await;
    for (u, t) in [(&user, &tokens), (&second, &second_tokens)] {
        schedule(&app, u, t).await;
        reschedule(&app, &u.email, Utc::now() - chrono::Duration::seconds(1)).await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .args(["--once", "purge_deleted_accounts"])
        .envs(&app.env)
        .env("LOG_LEVEL", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let id: Uuid = printed.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        finished(&app, id).await,
        json!({"accounts_deleted": 2, "reminders_sent": 0})
    );
    for u in [&user, &second] {
        mail::wait_for_messages(&u.email, "your account was deleted", 1).await;
        assert!(user_id_gone(&app, &u.email).await);
    }
    common::delete_queues(&queue).await;
}

async fn user_id_gone(app: &TestApp, email: &str) -> bool {
    user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(&app.state.db)
        .await
        .unwrap()
        .is_none()
}
