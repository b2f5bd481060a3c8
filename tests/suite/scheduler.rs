//! The scheduler binary: slots enqueued once across replicas, --once, SIGTERM.

use crate::common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::entities::job;
use common::{Backend, TestApp};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

fn scheduler(app: &TestApp, args: &[&str], every_second: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scheduler"));
    cmd.args(args)
        .env("DATABASE_URL", &app.env["DATABASE_URL"])
        .env("LOG_LEVEL", "warn")
        .current_dir(std::env::temp_dir());
    if every_second {
        cmd.env("SCHEDULE_CLEANUP_EXPIRED_TOKENS", "* * * * * *");
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_enqueue_each_slot_once() {
    let app = TestApp::start(Backend::Postgres).await;
    let mut a = scheduler(&app, &[], true)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut b = scheduler(&app, &[], true)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for child in [&a, &b] {
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
    for child in [&mut a, &mut b] {
        let started = std::time::Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "SIGTERM exits promptly"
        );
    }
    let rows = job::Entity::find()
        .filter(job::Column::DedupeKey.starts_with("schedule:cleanup_expired_tokens:"))
        .order_by_asc(job::Column::DedupeKey)
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(rows.len() >= 3, "{} slots in 4.5 s", rows.len());
    // One job per second-slot, with no slot missing between the first and the last.
    let slots: Vec<chrono::DateTime<chrono::Utc>> = rows
        .iter()
        .map(|r| {
            r.dedupe_key
                .as_ref()
                .unwrap()
                .rsplit_once("tokens:")
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    for pair in slots.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_seconds(), 1, "{slots:?}");
    }
    // The embedded server runs what the scheduler enqueued.
    common::eventually(Duration::from_secs(10), "scheduled jobs to run", || async {
        let done = job::Entity::find()
            .filter(job::Column::Name.eq("cleanup_expired_tokens"))
            .filter(job::Column::Status.eq("SUCCESS"))
            .all(&app.state.db)
            .await
            .unwrap();
        (done.len() == rows.len()).then_some(())
    })
    .await;

    let stats = Command::new(env!("CARGO_BIN_EXE_admin"))
        .args(["stats", "--format", "json"])
        .env("DATABASE_URL", &app.env["DATABASE_URL"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(
        stats["last_scheduled"]["cleanup_expired_tokens"].is_string(),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_enqueues_one_run_and_exits() {
    let app = TestApp::start(Backend::Postgres).await;
    let first = scheduler(&app, &["--once", "cleanup_expired_tokens"], false)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = scheduler(&app, &["--once", "cleanup_expired_tokens"], false)
        .output()
        .unwrap();
    let ids = [first.stdout, second.stdout].map(|o| String::from_utf8(o).unwrap());
    let count = job::Entity::find()
        .filter(job::Column::Name.eq("cleanup_expired_tokens"))
        .all(&app.state.db)
        .await
        .unwrap()
        .len();
    // Two calls in the same minute are one run (unless the minute turned in between).
    assert!(
        count == 1 && ids[0] == ids[1] || count == 2,
        "{ids:?} {count}"
    );

    let unknown = scheduler(&app, &["--once", "format_disk"], false)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let bad = scheduler(&app, &[], false)
        .env("SCHEDULE_CLEANUP_EXPIRED_TOKENS", "every tuesday")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SCHEDULE_CLEANUP_EXPIRED_TOKENS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_firing_of_each_periodic_job_is_its_newest_scheduled_run() {
    use chrono::{Duration as Days, TimeZone, Utc};
    let app = TestApp::start(Backend::Postgres).await;
    let db = &app.state.db;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    // A long history of purges and one cleanup, each stamped with its slot.
    for (name, days) in [
        ("purge_deleted_accounts", 0..40),
        ("cleanup_expired_tokens", 3..4),
    ] {
        for day in days {
            let slot = base + Days::days(day);
            let id = keel::jobs::schedule::fire(db, app.state.jobs.queue(), name, slot)
                .await
                .unwrap();
            job::Entity::update_many()
                .col_expr(
                    job::Column::CreatedAt,
                    sea_orm::sea_query::Expr::value(slot),
                )
                .filter(job::Column::Id.eq(id))
                .exec(db)
                .await
                .unwrap();
        }
    }
    // A purge queued by hand later is no firing of the schedule.
    app.state
        .jobs
        .queue()
        .enqueue(
            db,
            keel::jobs::NewJob::new("purge_deleted_accounts", serde_json::json!({})),
        )
        .await
        .unwrap();
    let mut last = app.state.jobs.last_firings().await.unwrap();
    last.sort();
    assert_eq!(
        last,
        [
            ("cleanup_expired_tokens".to_string(), base + Days::days(3)),
            ("purge_deleted_accounts".to_string(), base + Days::days(39)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_jobs_removes_what_is_past_its_retention() {
    use reqwest::StatusCode;
    use serde_json::{Value, json};
    let app = TestApp::start_with(
        Backend::Postgres,
        &[("JOB_RETENTION_SUCCESS", "1s"), ("JOB_MAX_ATTEMPTS", "1")],
    )
    .await;
    let (_, tokens) = app.signed_in_user().await;
    let mut ids = Vec::new();
    for body in [
        json!({"message": "done"}),
        json!({"message": "broken", "fail_attempts": 1}),
    ] {
        let resp = app
            .post_json(
                "/system/background-tasks/test-task",
                body,
                Some(&tokens.access),
            )
            .await;
        let id = resp.json::<Value>().await.unwrap()["task_id"]
            .as_str()
            .unwrap()
            .to_string();
        ids.push(id);
    }
    let status = |id: String| {
        let (app, token) = (&app, tokens.access.clone());
        async move {
            app.get(
                &format!("/system/background-tasks/task-status/{id}"),
                Some(&token),
            )
            .await
        }
    };
    common::eventually(Duration::from_secs(10), "both tasks to finish", || async {
        let mut finished = Vec::new();
        for id in &ids {
            let s: Value = status(id.clone()).await.json().await.unwrap();
            finished.push(s["status"].clone());
        }
        (finished == [json!("SUCCESS"), json!("FAILURE")]).then_some(())
    })
    .await;
    // Past the success retention, well within the failed one (30 days by default).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The task and the sign-up's mails succeeded.
    let succeeded = job::Entity::find()
        .filter(job::Column::Status.eq(keel::jobs::JobStatus::Success))
        .all(&app.state.db)
        .await
        .unwrap()
        .len();
    assert!(succeeded >= 2, "{succeeded}");
    let out = scheduler(&app, &["--once", "prune_jobs"], false)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    let prune: uuid::Uuid = said.trim().rsplit(' ').next().unwrap().parse().unwrap();
    let run = common::eventually(Duration::from_secs(10), "the prune job to run", || async {
        job::Entity::find_by_id(prune)
            .one(&app.state.db)
            .await
            .unwrap()
            .filter(|j| j.status.as_str() == "SUCCESS")
    })
    .await;
    let result = run.result.unwrap();
    // Everything that had succeeded; the failed task is kept.
    assert_eq!(result["succeeded"], succeeded, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert_eq!(status(ids[0].clone()).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(status(ids[1].clone()).await.status(), StatusCode::OK);
}
