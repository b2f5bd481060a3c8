//! Limits on starting jobs, held across worker processes: a queue's rate and concurrency
//! (`JOB_QUEUE_LIMITS`) and a concurrency key's (`concurrency_key`, `JOB_KEY_CONCURRENCY`). The
//! jobs' own rows record when each started and finished, which is what the limits govern.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use serde_json::{Value, json};

use crate::common::{self, Backend, KeelProcess, TestApp, eventually};
use crate::entities::job;

async fn rabbit_app(queue: &str, extra: &[(&str, &str)]) -> TestApp {
    common::rabbit_app(Backend::Postgres, queue, extra).await
}

/// The rows of the jobs called `name`, once every one of them succeeded.
async fn all_succeeded(
    app: &TestApp,
    name: &str,
    count: usize,
    within: Duration,
) -> Vec<job::Model> {
    eventually(
        within,
        &format!("{count} {name} jobs to succeed"),
        || async {
            let rows = job::Entity::find()
                .filter(job::Column::Name.eq(name))
                .all(&app.state.db)
                .await
                .unwrap();
            (rows.len() == count && rows.iter().all(|j| j.status.as_str() == "SUCCESS"))
                .then_some(rows)
        },
    )
    .await
}

/// Each job's run, from its start to its finish.
fn runs(rows: &[job::Model]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    rows.iter()
        .map(|j| (j.started_at.unwrap(), j.finished_at.unwrap()))
        .collect()
}

/// The most runs that were going on at one time.
fn most_at_once(runs: &[(DateTime<Utc>, DateTime<Utc>)]) -> usize {
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for (start, end) in runs {
        edges.push((*start, 1));
        edges.push((*end, -1));
    }
    // An end and a start at the same instant do not overlap.
    edges.sort_by_key(|(at, step)| (*at, *step));
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

fn overlap(a: &(DateTime<Utc>, DateTime<Utc>), b: &(DateTime<Utc>, DateTime<Utc>)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_rate_limit_holds_across_two_workers() {
    let queue = common::unique_queue();
    let app = rabbit_app(&queue, &[("JOB_QUEUE_LIMITS", "default=rate:20/s")]).await;
    let _workers = [KeelProcess::spawn(&app.env), KeelProcess::spawn(&app.env)];
    // Far more than 20 a second, all at once: one transaction, then one publication.
    let jobs = 260;
    let tx = app.state.db.begin().await.unwrap();
    for i in 0..jobs {
        app.state
            .jobs
            .queue()
            .enqueue(
                &tx,
                keel::jobs::NewJob::new("test_task", json!({"message": i.to_string()})),
            )
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    app.state.jobs.queue().wake();
    let rows = all_succeeded(&app, "test_task", jobs, Duration::from_secs(60)).await;
    let mut starts: Vec<DateTime<Utc>> = rows.iter().map(|j| j.started_at.unwrap()).collect();
    starts.sort();
    // Over ten seconds (after the first), 200 started, within 10 %.
    let from = starts[0] + chrono::Duration::seconds(1);
    let to = from + chrono::Duration::seconds(10);
    let in_ten = starts.iter().filter(|at| **at >= from && **at < to).count();
    assert!(
        (180..=220).contains(&in_ten),
        "{in_ten} jobs started in 10 s at a limit of 20/s"
    );
    // Smooth rather than bursty: no second anywhere saw more than 22 start.
    for (i, first) in starts.iter().enumerate() {
        let within_second = starts[i..]
            .iter()
            .take_while(|at| **at < *first + chrono::Duration::seconds(1))
            .count();
        assert!(
            within_second <= 22,
            "{within_second} started in the second from {first}: {:?}",
            starts
                .iter()
                .map(|at| (*at - starts[0]).num_milliseconds())
                .collect::<Vec<_>>()
        );
    }
    // Waiting for the limit used no attempt.
    assert!(rows.iter().all(|j| j.attempts == 1));
    assert!(rows.iter().all(|j| j.waiting_for.is_none()));
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_concurrency_limit_is_never_exceeded() {
    let queue = common::unique_queue();
    let app = rabbit_app(
        &queue,
        &[
            ("JOB_QUEUE_LIMITS", "default=concurrency:3"),
            ("WORKER_CONCURRENCY", "8"),
        ],
    )
    .await;
    let _workers = [KeelProcess::spawn(&app.env), KeelProcess::spawn(&app.env)];
    let jobs = 12;
    for _ in 0..jobs {
        app.state
            .jobs
            .submit(keel::jobs::NewJob::new(
                "long_running",
                json!({"duration": 1}),
            ))
            .await
            .unwrap();
    }
    let rows = all_succeeded(&app, "long_running", jobs, Duration::from_secs(60)).await;
    let most = most_at_once(&runs(&rows));
    assert!(
        most <= 3,
        "{most} jobs of the queue ran at once; the limit is 3"
    );
    assert!(most >= 2, "the jobs ran one at a time: {:?}", runs(&rows));
    assert!(rows.iter().all(|j| j.attempts == 1));
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_one_key_never_overlap_while_other_keys_run() {
    let queue = common::unique_queue();
    let app = rabbit_app(&queue, &[("WORKER_CONCURRENCY", "8")]).await;
    let _workers = [KeelProcess::spawn(&app.env), KeelProcess::spawn(&app.env)];
    let (_, tokens) = app.signed_in_user().await;
    let mut keyed: Vec<(String, String)> = Vec::new();
    for key in ["customer-a", "customer-b"] {
        for _ in 0..3 {
            let resp = app
                .client
                .post(app.url(&format!(
                    "/system/background-tasks/long-running?duration=1&concurrency_key={key}"
                )))
                .bearer_auth(&tokens.access)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            let id = resp.json::<Value>().await.unwrap()["task_id"]
                .as_str()
                .unwrap()
                .to_string();
            keyed.push((key.to_string(), id));
        }
    }
    let rows = all_succeeded(&app, "long_running", 6, Duration::from_secs(60)).await;
    let run_of = |id: &str| {
        let row = rows.iter().find(|j| j.id.to_string() == id).unwrap();
        assert_eq!(row.attempts, 1);
        (row.started_at.unwrap(), row.finished_at.unwrap())
    };
    let of_key = |key: &str| -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        keyed
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, id)| run_of(id))
            .collect()
    };
    let (a, b) = (of_key("customer-a"), of_key("customer-b"));
    assert_eq!(most_at_once(&a), 1, "jobs of one key overlapped: {a:?}");
    assert_eq!(most_at_once(&b), 1, "jobs of one key overlapped: {b:?}");
    assert!(
        a.iter().any(|x| b.iter().any(|y| overlap(x, y))),
        "the other key's jobs did not run meanwhile: {a:?} {b:?}"
    );
    // The key is shown with the task.
    let status: Value = app
        .get(
            &format!("/system/background-tasks/task-status/{}", keyed[0].1),
            Some(&tokens.access),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["concurrency_key"], "customer-a", "{status}");
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_job_says_what_it_waits_for() {
    let queue = common::unique_queue();
    let app = rabbit_app(&queue, &[("JOB_QUEUE_LIMITS", "default=rate:1/m")]).await;
    let _worker = KeelProcess::spawn(&app.env);
    let (_, tokens) = app.signed_in_user().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = app
            .client
            .post(app.url("/system/background-tasks/test-task"))
            .bearer_auth(&tokens.access)
            .json(&json!({"message": "limited"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        ids.push(
            resp.json::<Value>().await.unwrap()["task_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let status = |id: String| {
        let (app, token) = (&app, tokens.access.clone());
        async move {
            app.get(
                &format!("/system/background-tasks/task-status/{id}"),
                Some(&token),
            )
            .await
            .json::<Value>()
            .await
            .unwrap()
        }
    };
    // One starts; the other waits for its slot, a minute later, and says so.
    let waiting = eventually(
        Duration::from_secs(20),
        "one task held by the rate",
        || async {
            for id in &ids {
                let s = status(id.clone()).await;
                if s["waiting_for"] == "rate_limit" {
                    return Some(s);
                }
            }
            None
        },
    )
    .await;
    assert_eq!(waiting["status"], "PENDING", "{waiting}");
    let other = ids
        .iter()
        .find(|id| waiting["task_id"] != id.as_str())
        .unwrap()
        .clone();
    let ran = eventually(
        Duration::from_secs(20),
        "the other task to succeed",
        || async {
            let s = status(other.clone()).await;
            (s["status"] == "SUCCESS").then_some(s)
        },
    )
    .await;
    assert!(ran["waiting_for"].is_null(), "{ran}");
    // Still waiting, and its start is its reserved slot, about a minute after the first's.
    let still = status(waiting["task_id"].as_str().unwrap().to_string()).await;
    assert_eq!(still["status"], "PENDING", "{still}");
    assert_eq!(still["waiting_for"], "rate_limit", "{still}");
    common::delete_queues(&queue).await;
}

/// Embedded (SQLite, the server's own worker): the limits hold within the one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_jobs_of_one_key_run_one_at_a_time() {
    let app = TestApp::start_with(Backend::Sqlite, &[("WORKER_CONCURRENCY", "8")]).await;
    for key in ["k1", "k1", "k1", "k2"] {
        app.state
            .jobs
            .submit(
                keel::jobs::NewJob::new("long_running", json!({"duration": 1}))
                    .concurrency_key(key),
            )
            .await
            .unwrap();
    }
    let rows = all_succeeded(&app, "long_running", 4, Duration::from_secs(30)).await;
    let of_key = |key: &str| -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        runs(
            &rows
                .iter()
                .filter(|j| j.concurrency_key.as_deref() == Some(key))
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let (k1, k2) = (of_key("k1"), of_key("k2"));
    assert_eq!(k1.len(), 3);
    assert_eq!(most_at_once(&k1), 1, "jobs of one key overlapped: {k1:?}");
    assert!(k1.iter().any(|x| overlap(x, &k2[0])), "{k1:?} {k2:?}");
    assert!(rows.iter().all(|j| j.attempts == 1));
}
