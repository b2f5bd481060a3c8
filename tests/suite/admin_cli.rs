//! The operator CLI against PostgreSQL, as an operator runs it.

use crate::common;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

use crate::entities::{audit_log, user};
use common::{Backend, TestApp, TestUser, problem};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

pub(crate) fn admin(app: &TestApp, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_admin"))
        .args(args)
        .env("DATABASE_URL", &app.env["DATABASE_URL"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_listed_verified_and_deleted() {
    let app = TestApp::start(Backend::Postgres).await;

    let out = admin(
        &app,
        &[
            "create-superuser",
            "--email",
            "Ops@Example.com",
            "--username",
            "ops_lead",
            "--password-stdin",
        ],
        Some("OpsPassword123!\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens = app.login("ops@example.com", "OpsPassword123!").await;
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["is_superuser"].clone(), me["is_verified"].clone()),
        (json!(true), json!(true))
    );

    let weak = admin(
        &app,
        &[
            "create-superuser",
            "--email",
            "x@example.com",
            "--username",
            "xuser",
            "--password-stdin",
        ],
        Some("weak\n"),
    );
    assert_eq!(weak.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("password"),
        "{weak:?}"
    );
    let dup = admin(
        &app,
        &[
            "create-superuser",
            "--email",
            "ops@example.com",
            "--username",
            "other1",
            "--password-stdin",
        ],
        Some("OpsPassword123!\n"),
    );
    assert_eq!(dup.status.code(), Some(4));
    let no_tty = admin(&app, &["create-superuser"], None);
    assert_eq!(no_tty.status.code(), Some(2), "prompts need a terminal");

    // An unverified user, verified by the operator.
    let pending = TestUser::new();
    app.register(&pending).await;
    problem(
        app.login_raw(&pending.email, &pending.password).await,
        403,
        "email_not_verified",
    )
    .await;
    let list = json_out(&admin(
        &app,
        &["list-users", "--unverified", "--format", "json"],
        None,
    ));
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["email"], pending.email.as_str());
    assert!(
        admin(&app, &["verify-user", &pending.email.to_uppercase()], None)
            .status
            .success()
    );
    let session = app.login(&pending.email, &pending.password).await;
    assert_eq!(
        admin(&app, &["verify-user", "nobody@example.com"], None)
            .status
            .code(),
        Some(3)
    );

    let all = json_out(&admin(&app, &["list-users", "--format", "json"], None));
    assert_eq!(all["total"], 2);
    let supers = json_out(&admin(
        &app,
        &["list-users", "--superuser", "--format", "json"],
        None,
    ));
    assert_eq!(supers["total"], 1);
    let table = admin(&app, &["list-users"], None);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("ID") && text.contains("ops_lead") && text.contains("2 of 2 user(s)"),
        "{text}"
    );

    let stats = json_out(&admin(&app, &["stats", "--format", "json"], None));
    assert_eq!(stats["total_users"], 2);
    assert_eq!(stats["superusers"], 1);
    assert_eq!(stats["verified_users"], 2);
    assert!(stats["active_sessions"].as_u64().unwrap() >= 2);
    assert!(stats["jobs_by_status"]["SUCCESS"].is_number());

    // Deleting asks first; without a terminal and --yes nothing happens.
    let refused = admin(&app, &["delete-user", &pending.email], None);
    assert_eq!(refused.status.code(), Some(4));
    assert_eq!(
        app.get("/users/me", Some(&session.access)).await.status(),
        StatusCode::OK
    );
    assert!(
        admin(&app, &["delete-user", &pending.email, "--yes"], None)
            .status
            .success()
    );
    problem(
        app.get("/users/me", Some(&session.access)).await,
        401,
        "session_revoked",
    )
    .await;
    problem(
        app.login_raw(&pending.email, &pending.password).await,
        401,
        "invalid_credentials",
    )
    .await;
    let deleted = json_out(&admin(
        &app,
        &["list-users", "--deleted", "--format", "json"],
        None,
    ));
    assert_eq!(deleted["total"], 1);

    let id = deleted["items"][0]["id"].as_str().unwrap().to_string();
    assert!(
        admin(&app, &["delete-user", &id, "--hard", "--yes"], None)
            .status
            .success()
    );
    let gone = user::Entity::find_by_id(uuid::Uuid::parse_str(&id).unwrap())
        .one(&app.state.db)
        .await
        .unwrap();
    assert!(gone.is_none());
    let trail = audit_log::Entity::find()
        .filter(audit_log::Column::Event.eq("account_deleted"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].user_id.unwrap().to_string(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_are_listed_shown_and_retried() {
    let app = TestApp::start_with(Backend::Postgres, &[("JOB_MAX_ATTEMPTS", "1")]).await;
    let (_, tokens) = app.signed_in_user().await;
    let resp = app
        .post_json(
            "/system/background-tasks/test-task",
            json!({"message": "m", "fail_attempts": 1}),
            Some(&tokens.access),
        )
        .await;
    let id = resp.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    common::eventually(Duration::from_secs(10), "the job to fail", || async {
        let s: Value = app
            .get(
                &format!("/system/background-tasks/task-status/{id}"),
                Some(&tokens.access),
            )
            .await
            .json()
            .await
            .unwrap();
        (s["status"] == "FAILURE").then_some(())
    })
    .await;

    let dead = json_out(&admin(
        &app,
        &["jobs", "dead-letters", "--format", "json"],
        None,
    ));
    assert_eq!(dead.as_array().unwrap().len(), 1);
    assert_eq!(dead[0]["id"], id.as_str());
    let shown = json_out(&admin(&app, &["jobs", "show", &id], None));
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .contains("failing on purpose")
    );
    let listed = json_out(&admin(
        &app,
        &["jobs", "list", "--status", "failure", "--format", "json"],
        None,
    ));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(
        admin(&app, &["jobs", "list", "--status", "nope"], None)
            .status
            .code(),
        Some(2)
    );

    // A retry queues the job again with a fresh set of attempts, and it runs again.
    let first_start = shown["started_at"].as_str().unwrap().to_string();
    assert!(admin(&app, &["jobs", "retry", &id], None).status.success());
    let rerun = common::eventually(
        Duration::from_secs(10),
        "the retried job to run again",
        || async {
            let s = json_out(&admin(&app, &["jobs", "show", &id], None));
            (s["status"] == "FAILURE" && s["started_at"].as_str() != Some(first_start.as_str()))
                .then_some(s)
        },
    )
    .await;
    assert_eq!(rerun["attempts"], 1);
    // A job that succeeded is not retried.
    let succeeded = json_out(&admin(
        &app,
        &["jobs", "list", "--status", "SUCCESS", "--format", "json"],
        None,
    ));
    let mail_job = succeeded[0]["id"].as_str().unwrap().to_string();
    let done = admin(&app, &["jobs", "retry", &mail_job], None);
    assert_eq!(done.status.code(), Some(4), "{done:?}");
    let not_failed = admin(
        &app,
        &["jobs", "retry", &uuid::Uuid::new_v4().to_string()],
        None,
    );
    assert_eq!(not_failed.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_schedules_and_cancels_deletions() {
    let app = TestApp::start(Backend::Postgres).await;
    let (user, tokens) = app.signed_in_user().await;

    let out = admin(
        &app,
        &["schedule-deletion", &user.email, "--days", "3"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = app
        .get("/auth/deletion-status", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["deletion_confirmed"], true);
    let at: chrono::DateTime<chrono::Utc> = status["deletion_scheduled_for"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = chrono::Utc::now() + chrono::Duration::days(3);
    assert!((at - expected).num_seconds().abs() < 60, "{at}");
    // The user is told, with a link to keep the account.
    let mails = common::mail::wait_for_messages(&user.email, "will be deleted on", 1).await;
    common::mail::token_from(&mails[0], "cancel-deletion");
    let stats = json_out(&admin(&app, &["stats", "--format", "json"], None));
    assert_eq!(stats["pending_deletion"], 1);

    let again = admin(&app, &["cancel-deletion", &user.email], None);
    assert!(again.status.success(), "{again:?}");
    let status: Value = app
        .get("/auth/deletion-status", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["deletion_requested"], false);
    common::mail::wait_for_messages(&user.email, "will not be deleted", 1).await;
    // Nothing left to cancel, or nobody to act on: refused / not found.
    assert_eq!(
        admin(&app, &["cancel-deletion", &user.email], None)
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        admin(&app, &["schedule-deletion", "nobody@example.com"], None)
            .status
            .code(),
        Some(3)
    );

    // A soft delete from the CLI keeps the reason.
    let out = admin(
        &app,
        &[
            "delete-user",
            &user.email,
            "--yes",
            "--reason",
            "asked by phone",
        ],
        None,
    );
    assert!(out.status.success());
    let row = user::Entity::find()
        .filter(user::Column::Email.eq(&user.email))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            row.is_deleted,
            row.deletion_reason.as_deref(),
            row.deleted_by
        ),
        (true, Some("asked by phone"), None)
    );
    assert_eq!(
        admin(&app, &["schedule-deletion", &user.email], None)
            .status
            .code(),
        Some(4),
        "a deleted account is not scheduled"
    );
}

/// The task's status code and status, as its owner sees them.
async fn task_status(app: &TestApp, token: &str, id: &str) -> (StatusCode, Value) {
    let resp = app
        .get(
            &format!("/system/background-tasks/task-status/{id}"),
            Some(token),
        )
        .await;
    let code = resp.status();
    (code, resp.json::<Value>().await.unwrap()["status"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_finished_jobs_and_never_waiting_or_running_ones() {
    use sea_orm::{ActiveModelTrait, Set};
    let app = TestApp::start_with(Backend::Postgres, &[("JOB_MAX_ATTEMPTS", "1")]).await;
    let (_, tokens) = app.signed_in_user().await;
    let t = tokens.access.as_str();
    let ok = common::submit_task(
        &app,
        t,
        "/system/background-tasks/test-task",
        json!({"message": "m"}),
    )
    .await;
    let failed = common::submit_task(
        &app,
        t,
        "/system/background-tasks/test-task",
        json!({"message": "m", "fail_attempts": 1}),
    )
    .await;
    let running = common::submit_task(
        &app,
        t,
        "/system/background-tasks/long-running?duration=60",
        json!(null),
    )
    .await;
    common::wait_task_status(&app, t, &ok, "SUCCESS", Duration::from_secs(15)).await;
    common::wait_task_status(&app, t, &failed, "FAILURE", Duration::from_secs(15)).await;
    common::wait_task_status(&app, t, &running, "STARTED", Duration::from_secs(15)).await;
    // A job that may only start tomorrow waits the whole time.
    let waiting = uuid::Uuid::new_v4();
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    crate::entities::job::ActiveModel {
        id: Set(waiting),
        max_attempts: Set(1),
        run_at: Set(tomorrow),
        ..common::job_row(json!({"message": "later"}))
    }
    .insert(&app.state.db)
    .await
    .unwrap();

    // The default retention (a week, a month) keeps jobs that just finished.
    let kept = admin(&app, &["jobs", "prune"], None);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    assert!(
        String::from_utf8_lossy(&kept.stdout).starts_with("pruned 0 finished jobs"),
        "{}",
        String::from_utf8_lossy(&kept.stdout)
    );
    assert_eq!(task_status(&app, t, &ok).await.0, StatusCode::OK);

    // Every finished job: the two tasks and the sign-up's mails.
    use keel::jobs::JobStatus;
    let finished = crate::entities::job::Entity::find()
        .filter(crate::entities::job::Column::Status.is_in([
            JobStatus::Success,
            JobStatus::Failure,
            JobStatus::Revoked,
        ]))
        .all(&app.state.db)
        .await
        .unwrap()
        .len();
    assert!(finished >= 3, "{finished}");
    let out = admin(&app, &["jobs", "prune", "--older-than", "0s"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.starts_with(&format!("pruned {finished} finished jobs")),
        "{said}"
    );
    assert_eq!(task_status(&app, t, &ok).await.0, StatusCode::NOT_FOUND);
    assert_eq!(task_status(&app, t, &failed).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        task_status(&app, t, &running).await,
        (StatusCode::OK, json!("STARTED"))
    );
    let still = crate::entities::job::Entity::find_by_id(waiting)
        .one(&app.state.db)
        .await
        .unwrap()
        .expect("the waiting job is kept");
    assert_eq!(still.status.as_str(), "PENDING");

    let bad = admin(&app, &["jobs", "prune", "--older-than", "7"], None);
    assert_eq!(bad.status.code(), Some(2), "a span needs its unit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_job_of_a_name_is_queued_again_at_once() {
    let app = TestApp::start_with(Backend::Postgres, &[("JOB_MAX_ATTEMPTS", "1")]).await;
    let (_, tokens) = app.signed_in_user().await;
    let t = tokens.access.as_str();
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            common::submit_task(
                &app,
                t,
                "/system/background-tasks/test-task",
                json!({"message": "m", "fail_attempts": 1}),
            )
            .await,
        );
    }
    for id in &ids {
        common::wait_task_status(&app, t, id, "FAILURE", Duration::from_secs(15)).await;
    }
    let started =
        |id: &str| json_out(&admin(&app, &["jobs", "show", id], None))["started_at"].clone();
    let first: Vec<Value> = ids.iter().map(|id| started(id)).collect();

    let none = admin(
        &app,
        &[
            "jobs",
            "retry",
            "--all",
            "--failed",
            "--name",
            "long_running",
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&none.stdout).starts_with("0 failed jobs queued again"),
        "{none:?}"
    );
    let out = admin(
        &app,
        &["jobs", "retry", "--all", "--failed", "--name", "test_task"],
        None,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("2 failed jobs queued again"),
        "{out:?}"
    );
    // Both run again, with a fresh set of attempts (and fail again, as asked).
    common::eventually(
        Duration::from_secs(15),
        "both jobs to run again",
        || async {
            let again: Vec<Value> = ids.iter().map(|id| started(id)).collect();
            let shown: Vec<Value> = ids
                .iter()
                .map(|id| json_out(&admin(&app, &["jobs", "show", id], None)))
                .collect();
            (again.iter().zip(&first).all(|(a, f)| a != f)
                && shown
                    .iter()
                    .all(|s| s["status"] == "FAILURE" && s["attempts"] == 1))
            .then_some(())
        },
    )
    .await;

    // The flags go together: --all needs --failed, and one of an id or --all is needed.
    for args in [
        &["jobs", "retry", "--all"][..],
        &["jobs", "retry", "--failed"][..],
        &["jobs", "retry"][..],
    ] {
        assert_eq!(admin(&app, args, None).status.code(), Some(2), "{args:?}");
    }
}

/// `admin jobs show` (and `jobs list`) mask a job's secrets exactly as the API does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_show_masks_what_the_api_masks() {
    use sea_orm::{ActiveModelTrait, Set};
    let app = TestApp::start(Backend::Postgres).await;
    let (user, tokens) = app.signed_in_user().await;
    let owner = common::user_id(&app, &user.email).await;
    let id = uuid::Uuid::new_v4();
    crate::entities::job::ActiveModel {
        id: Set(id),
        owner_id: Set(Some(owner)),
        // Tomorrow: it waits, with its payload as it was submitted.
        run_at: Set(chrono::Utc::now() + chrono::Duration::days(1)),
        ..common::job_row(json!({
            "message": "later",
            "smtp_password": "hunter2",
            "link": "https://app.test/reset-password?token=s3cret-token",
        }))
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let shown = json_out(&admin(&app, &["jobs", "show", &id.to_string()], None));
    let resp = app
        .get(
            &format!("/system/background-tasks/task-status/{id}"),
            Some(&tokens.access),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let api: Value = resp.json().await.unwrap();
    assert_eq!(shown["payload"], api["payload"]);
    assert_eq!(
        shown["payload"],
        json!({
            "message": "later",
            "smtp_password": "***",
            "link": "https://app.test/reset-password?token=***",
        })
    );
    let listed = admin(
        &app,
        &["jobs", "list", "--status", "pending", "--format", "json"],
        None,
    );
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains(&id.to_string()), "{listed}");
    assert!(!listed.contains("hunter2") && !listed.contains("s3cret-token"));
}

/// Every command answers in JSON with `--format json`, mutating ones included, before or
/// after the command's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_commands_answer_in_json() {
    let app = TestApp::start(Backend::Postgres).await;
    let someone = TestUser::new();
    assert_eq!(app.register(&someone).await.status(), StatusCode::CREATED);
    let verified = json_out(&admin(
        &app,
        &["verify-user", &someone.email, "--format", "json"],
        None,
    ));
    assert_eq!(verified["changed"], true);
    assert_eq!(verified["verified"]["email"], someone.email.as_str());
    assert_eq!(verified["verified"]["is_verified"], true);
    let again = json_out(&admin(
        &app,
        &["--format", "json", "verify-user", &someone.email],
        None,
    ));
    assert_eq!(again["changed"], false);
    let deleted = json_out(&admin(
        &app,
        &["delete-user", &someone.email, "--yes", "--format", "json"],
        None,
    ));
    assert_eq!(deleted["deleted"]["email"], someone.email.as_str());
    assert_eq!(deleted["permanently"], false);
    let retried = json_out(&admin(
        &app,
        &["jobs", "retry", "--all", "--failed", "--format", "json"],
        None,
    ));
    assert_eq!(retried["queued_again"], 0);
    let pruned = json_out(&admin(&app, &["jobs", "prune", "--format", "json"], None));
    assert_eq!(pruned["pruned"], 0);
    let migrated = json_out(&admin(&app, &["migrate", "--format", "json"], None));
    assert_eq!(migrated, json!({"applied": []}));
}
