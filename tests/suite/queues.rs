//! Job queues, priorities, delays, unique keys and progress, over RabbitMQ with `worker`
//! processes and in the embedded mode.

use crate::common;

use std::{collections::HashSet, time::Duration};

use crate::entities::job;
use chrono::{DateTime, Utc};
use common::{
    Backend, KeelProcess, TestApp, TestUser, eventually, mail, task_json as status,
    wait_task_status as wait_status,
};
use futures_util::StreamExt;
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{Value, json};

const ROOT: [(&str, &str); 2] = [
    ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
    ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
];

/// A server with the first superuser, on RabbitMQ (with a queue prefix of its own) or embedded.
async fn app_with(backend: Backend, rabbit: Option<&str>, extra: &[(&str, &str)]) -> TestApp {
    let mut overrides: Vec<(String, String)> =
        rabbit.map(common::rabbit_overrides).unwrap_or_default();
    overrides.extend(
        ROOT.iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    TestApp::start_with(backend, &pairs).await
}

async fn root(app: &TestApp) -> String {
    app.login("root@example.com", "SuperSecret123!")
        .await
        .access
}

/// Submits to `path` (with its query) and answers the status and body.
async fn submit_raw(app: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = app.post_json(path, body, Some(token)).await;
    let code = resp.status();
    (code, resp.json().await.unwrap())
}

/// Submits and expects a new task (202); answers its acceptance.
async fn accepted(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (code, body) = submit_raw(app, token, path, body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{path}: {body}");
    assert_eq!(body["duplicate"], false, "{body}");
    body
}

async fn row(app: &TestApp, id: &str) -> job::Model {
    job::Entity::find_by_id(uuid::Uuid::parse_str(id).unwrap())
        .one(&app.state.db)
        .await
        .unwrap()
        .expect("the job's row")
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .with_timezone(&Utc)
}

/// Queues `n` data-processing tasks, 16 submissions at a time.
async fn data_backlog(app: &TestApp, token: &str, n: usize) {
    futures_util::stream::iter(0..n)
        .map(|i| async move {
            let path = "/system/background-tasks/process-data";
            accepted(app, token, path, json!([{"n": i}])).await;
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

async fn waiting_data_jobs(app: &TestApp) -> usize {
    job::Entity::find()
        .filter(job::Column::Name.eq("process_data"))
        .filter(job::Column::Status.is_in(["PENDING", "RETRY", "STARTED"]))
        .all(&app.state.db)
        .await
        .unwrap()
        .len()
}

/// Registers someone and answers how long their verification mail took to arrive, waiting
/// at most `within`.
async fn verification_mail_within(app: &TestApp, within: Duration) -> Duration {
    let user = TestUser::new();
    let started = std::time::Instant::now();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    eventually(within, "the verification mail", || async {
        mail::messages_to(&user.email)
            .await
            .iter()
            .any(|m| m["subject"].as_str().is_some_and(|s| s.contains("verify")))
            .then_some(())
    })
    .await;
    started.elapsed()
}

/// The per-queue figures, from the API and from `admin jobs stats`, which must agree on what
/// waits.
async fn queue_figures(app: &TestApp, token: &str, queue: &str) -> Value {
    let resp = app
        .get("/system/background-tasks/queues", Some(token))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let all: Vec<Value> = resp.json().await.unwrap();
    let names: Vec<&str> = all.iter().filter_map(|q| q["queue"].as_str()).collect();
    assert_eq!(names, ["email", "default", "maintenance"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_admin"))
        .args(["jobs", "stats", "--format", "json"])
        .env("DATABASE_URL", &app.env["DATABASE_URL"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let api = all.into_iter().find(|q| q["queue"] == queue).unwrap();
    let cli = cli.into_iter().find(|q| q["queue"] == queue).unwrap();
    for key in ["waiting", "scheduled", "failed"] {
        assert_eq!(api[key], cli[key], "{key}: {api} vs {cli}");
    }
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_backlog_never_delays_a_verification_mail() {
    let queue = common::unique_queue();
    let app = app_with(
        Backend::Postgres,
        Some(&queue),
        &[("WORKER_CONCURRENCY", "1")],
    )
    .await;
    let token = root(&app).await;
    data_backlog(&app, &token, 2000).await;
    let default = queue_figures(&app, &token, "default").await;
    assert_eq!(default["waiting"], 2000, "{default}");
    assert!(
        default["oldest_waiting_seconds"].as_f64().unwrap() > 0.0,
        "{default}"
    );
    let _worker = KeelProcess::spawn(&app.env);
    let took = verification_mail_within(&app, Duration::from_secs(2)).await;
    let left = waiting_data_jobs(&app).await;
    assert!(
        left > 0,
        "the backlog was still there when the mail came ({took:?})"
    );
    let mail_job = job::Entity::find()
        .filter(job::Column::Name.eq("send_email"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mail_job.queue, "email");
    common::delete_queues(&queue).await;
}

async fn embedded_backlog_never_delays_a_mail(backend: Backend) {
    let app = app_with(backend, None, &[("WORKER_CONCURRENCY_DEFAULT", "1")]).await;
    let token = root(&app).await;
    data_backlog(&app, &token, 1000).await;
    let took = verification_mail_within(&app, Duration::from_secs(2)).await;
    assert!(
        waiting_data_jobs(&app).await > 0,
        "the backlog was still there when the mail came ({took:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_only_its_queues() {
    let queue = common::unique_queue();
    let app = app_with(Backend::Postgres, Some(&queue), &[]).await;
    let token = root(&app).await;
    let mut env = app.env.clone();
    env.insert("WORKER_QUEUES".into(), "default".into());
    let _general = KeelProcess::spawn(&env);
    let task = accepted(
        &app,
        &token,
        "/system/background-tasks/test-task",
        json!({"message": "served"}),
    )
    .await;
    assert_eq!(task["queue"], "default");
    let id = task["task_id"].as_str().unwrap();
    wait_status(&app, &token, id, "SUCCESS", Duration::from_secs(15)).await;

    // A mail waits: no worker serves its queue.
    let user = TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = job::Entity::find()
        .filter(job::Column::Name.eq("send_email"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(!mails.is_empty());
    for m in &mails {
        assert_eq!((m.status.as_str(), m.attempts), ("PENDING", 0), "{m:?}");
        assert_eq!(m.queue, "email");
    }
    assert!(mail::messages_to(&user.email).await.is_empty());

    // A queue that does not exist is a usage error, before anything starts.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["--queues", "mail"])
        .envs(&app.env)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown queue \"mail\""));

    // A mail worker takes it.
    let _mail = KeelProcess::spawn_args(&app.env, &["--queues", "email"]);
    mail::wait_for_messages(&user.email, "verify", 1).await;
    common::delete_queues(&queue).await;
}

/// With one slot busy and priority-0 tasks waiting, a priority-9 task submitted last starts
/// before all of them; a retry keeps its priority.
async fn priority_nine_goes_first(app: &TestApp) {
    let token = root(app).await;
    let blocker = accepted(
        app,
        &token,
        "/system/background-tasks/long-running?duration=2",
        json!(null),
    )
    .await;
    let blocker = blocker["task_id"].as_str().unwrap();
    wait_status(app, &token, blocker, "STARTED", Duration::from_secs(15)).await;
    let mut low = Vec::new();
    for i in 0..10 {
        let t = accepted(
            app,
            &token,
            "/system/background-tasks/test-task?priority=0",
            json!({"message": format!("low {i}")}),
        )
        .await;
        assert_eq!(t["priority"], 0);
        low.push(t["task_id"].as_str().unwrap().to_string());
    }
    // Let the low ones reach the worker (and fill what it holds) before the high one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let high = accepted(
        app,
        &token,
        "/system/background-tasks/test-task?priority=9",
        json!({"message": "high"}),
    )
    .await;
    let high = high["task_id"].as_str().unwrap().to_string();
    wait_status(app, &token, &high, "SUCCESS", Duration::from_secs(30)).await;
    let mut low_starts = Vec::new();
    for id in &low {
        let done = wait_status(app, &token, id, "SUCCESS", Duration::from_secs(30)).await;
        assert_eq!(done["priority"], 0);
        low_starts.push(row(app, id).await.started_at.unwrap());
    }
    let high_start = row(app, &high).await.started_at.unwrap();
    let first_low = *low_starts.iter().min().unwrap();
    assert!(
        high_start < first_low,
        "the priority-9 task started at {high_start}, after a waiting priority-0 one ({first_low})"
    );

    // A retry keeps its priority.
    let retried = accepted(
        app,
        &token,
        "/system/background-tasks/test-task?priority=8",
        json!({"message": "again", "fail_attempts": 1}),
    )
    .await;
    let retried = retried["task_id"].as_str().unwrap();
    let done = wait_status(app, &token, retried, "SUCCESS", Duration::from_secs(30)).await;
    assert_eq!(
        (done["attempts"].clone(), done["priority"].clone()),
        (json!(2), json!(8))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_order_a_classic_queue_backlog() {
    let queue = common::unique_queue();
    let app = app_with(
        Backend::Postgres,
        Some(&queue),
        &[
            ("WORKER_CONCURRENCY_DEFAULT", "1"),
            ("RABBITMQ_QUEUE_TYPE", "classic"),
        ],
    )
    .await;
    let _worker = KeelProcess::spawn(&app.env);
    priority_nine_goes_first(&app).await;
    common::delete_queues(&queue).await;
}

async fn embedded_priorities(backend: Backend) {
    let app = app_with(
        backend,
        None,
        &[
            ("WORKER_CONCURRENCY_DEFAULT", "1"),
            ("JOB_RETRY_BASE_MS", "100"),
        ],
    )
    .await;
    priority_nine_goes_first(&app).await;
}

/// Bad submission options are 422 problems naming the parameter.
async fn bad_options_are_422(app: &TestApp, token: &str) {
    let long = "k".repeat(129);
    for (query, field) in [
        ("countdown=5&eta=2030-01-01T00:00:00Z", "eta"),
        ("countdown=soon", "countdown"),
        ("countdown=-1", "countdown"),
        ("countdown=31536001", "countdown"),
        ("eta=tomorrow", "eta"),
        ("eta=2999-01-01T00:00:00Z", "eta"),
        ("priority=10", "priority"),
        ("priority=-1", "priority"),
        ("priority=high", "priority"),
        ("unique_key=", "unique_key"),
        (&format!("unique_key={long}"), "unique_key"),
    ] {
        let resp = app
            .post_json(
                &format!("/system/background-tasks/test-task?{query}"),
                json!({"message": "x"}),
                Some(token),
            )
            .await;
        let problem = common::problem(resp, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let tasks = job::Entity::find()
        .filter(job::Column::Name.eq("test_task"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(tasks.is_empty(), "a refused submission queued nothing");
}

/// `countdown` and `eta` hold a task back to the second; one in the past runs now; a month's
/// delay waits in the table.
async fn delays_hold_tasks_back(app: &TestApp, token: &str, restart: impl AsyncFnOnce()) {
    bad_options_are_422(app, token).await;
    let before = Utc::now();
    let delayed = accepted(
        app,
        token,
        "/system/background-tasks/test-task?countdown=5",
        json!({"message": "later"}),
    )
    .await;
    let run_at = time(&delayed["run_at"]);
    let wanted = before + chrono::Duration::seconds(5);
    assert!(
        (run_at - wanted).num_milliseconds().abs() < 1500,
        "run_at {run_at}, wanted about {wanted}"
    );
    let id = delayed["task_id"].as_str().unwrap().to_string();
    let past = accepted(
        app,
        token,
        "/system/background-tasks/test-task?eta=2020-01-01T00:00:00Z",
        json!({"message": "overdue"}),
    )
    .await;
    let month = accepted(
        app,
        token,
        "/system/background-tasks/test-task?countdown=2592000",
        json!({"message": "next month"}),
    )
    .await;
    let past = past["task_id"].as_str().unwrap();
    wait_status(app, token, past, "SUCCESS", Duration::from_secs(15)).await;
    restart().await;
    assert_eq!(status(app, token, &id).await["status"], "PENDING");
    let done = wait_status(app, token, &id, "SUCCESS", Duration::from_secs(15)).await;
    let started = time(&done["started_at"]);
    assert!(
        started >= run_at,
        "started {started}, before its time {run_at}"
    );
    let month_id = month["task_id"].as_str().unwrap();
    let waiting = status(app, token, month_id).await;
    assert_eq!(waiting["status"], "PENDING");
    assert!(time(&waiting["run_at"]) > Utc::now() + chrono::Duration::days(29));
    assert!(row(app, month_id).await.published_at.is_none());
    let default = queue_figures(app, token, "default").await;
    assert_eq!(default["scheduled"], 1, "{default}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_survive_a_broker_outage_and_a_killed_worker() {
    let queue = common::unique_queue();
    let proxy = crate::jobs::BrokerProxy::start().await;
    let app = app_with(
        Backend::Postgres,
        Some(&queue),
        &[("RABBITMQ_URL", &proxy.url())],
    )
    .await;
    let token = root(&app).await;
    let worker = std::sync::Mutex::new(Some(KeelProcess::spawn(&app.env)));
    delays_hold_tasks_back(&app, &token, async || {
        // While the task waits, the broker goes away and the worker dies; then the broker
        // comes back and another worker starts.
        proxy.set_up(false);
        drop(worker.lock().unwrap().take());
        tokio::time::sleep(Duration::from_millis(800)).await;
        proxy.set_up(true);
        *worker.lock().unwrap() = Some(KeelProcess::spawn(&app.env));
    })
    .await;
    common::delete_queues(&queue).await;
}

async fn embedded_delays(backend: Backend) {
    let app = app_with(backend, None, &[]).await;
    let token = root(&app).await;
    delays_hold_tasks_back(&app, &token, async || {}).await;
}

/// Twenty concurrent submissions with one key make one task; the key is free once it finished.
async fn unique_keys_make_one_task(app: &TestApp) {
    let token = root(app).await;
    let path = "/system/background-tasks/long-running?duration=1&unique_key=report-42";
    let answers: Vec<(StatusCode, Value)> =
        futures_util::future::join_all((0..20).map(|_| submit_raw(app, &token, path, json!(null))))
            .await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(code, _)| *code == StatusCode::ACCEPTED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let id = created[0]["task_id"].clone();
    for (code, body) in &answers {
        if *code == StatusCode::OK {
            assert_eq!(
                (body["task_id"].clone(), body["duplicate"].clone()),
                (id.clone(), json!(true)),
                "{body}"
            );
        } else {
            assert_eq!(*code, StatusCode::ACCEPTED, "{body}");
        }
    }
    // Another key, or another kind of task with the same key, is another task.
    let other = accepted(
        app,
        &token,
        "/system/background-tasks/long-running?duration=1&unique_key=report-43",
        json!(null),
    )
    .await;
    let same_key_other_kind = accepted(
        app,
        &token,
        "/system/background-tasks/test-task?unique_key=report-42",
        json!({"message": "x"}),
    )
    .await;
    assert_ne!(other["task_id"], id);
    assert_ne!(same_key_other_kind["task_id"], id);
    let rows = job::Entity::find()
        .filter(job::Column::UniqueKey.eq("report-42"))
        .filter(job::Column::Name.eq("long_running"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let id = id.as_str().unwrap().to_string();
    wait_status(app, &token, &id, "SUCCESS", Duration::from_secs(20)).await;
    let again = accepted(app, &token, path, json!(null)).await;
    assert_ne!(again["task_id"].as_str().unwrap(), id);
}

async fn embedded_unique_keys(backend: Backend) {
    let app = app_with(backend, None, &[]).await;
    unique_keys_make_one_task(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_keys_hold_through_rabbitmq() {
    let queue = common::unique_queue();
    let app = app_with(Backend::Postgres, Some(&queue), &[]).await;
    let _worker = KeelProcess::spawn(&app.env);
    unique_keys_make_one_task(&app).await;
    common::delete_queues(&queue).await;
}

/// `long_running` reports how far it has come while it runs.
async fn long_running_reports_progress(backend: Backend) {
    let app = app_with(backend, None, &[]).await;
    let token = root(&app).await;
    let task = accepted(
        &app,
        &token,
        "/system/background-tasks/long-running?duration=3",
        json!(null),
    )
    .await;
    let id = task["task_id"].as_str().unwrap();
    let running = eventually(
        Duration::from_secs(10),
        "progress while it runs",
        || async {
            let s = status(&app, &token, id).await;
            (s["status"] == "STARTED" && s["progress"]["current"].as_u64() >= Some(1)).then_some(s)
        },
    )
    .await;
    assert_eq!(running["progress"]["total"], 3, "{running}");
    wait_status(&app, &token, id, "SUCCESS", Duration::from_secs(10)).await;
}

both_backends!(
    embedded_backlog_never_delays_a_mail,
    embedded_priorities,
    embedded_delays,
    embedded_unique_keys,
    long_running_reports_progress,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_database_at_most_once_a_second() {
    let app = app_with(Backend::Postgres, None, &[]).await;
    let registry = keel::jobs::Registry::builder()
        .register("chatty", |ctx: keel::jobs::JobContext| async move {
            // A report every 2 ms for 2.5 s: over a thousand.
            let started = std::time::Instant::now();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_millis(2500) {
                n += 1;
                ctx.progress.report(json!({"current": n}));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(json!({"reports": n}))
        })
        .build();
    let runner = std::sync::Arc::new(keel::jobs::Runner::new(
        app.state.db.clone(),
        registry,
        keel::config::Settings::from_map(&app.env, &keel::app::kinds())
            .unwrap()
            .jobs,
        "test-chatty".into(),
    ));
    let id = uuid::Uuid::new_v4();
    job::ActiveModel {
        id: Set(id),
        name: Set("chatty".into()),
        // A queue the server's own worker does not poll: this test's runner runs it.
        queue: Set("manual".into()),
        ..common::job_row(json!({}))
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let run = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run(id).await.unwrap() }
    });
    let mut seen = HashSet::new();
    while !run.is_finished() {
        let j = job::Entity::find_by_id(id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        if let Some(p) = j.progress {
            seen.insert(p.to_string());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(run.await.unwrap(), keel::jobs::Outcome::Succeeded);
    let done = job::Entity::find_by_id(id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert!(done.result.unwrap()["reports"].as_u64().unwrap() > 500);
    // 2.5 s of reports: two or three writes, each a later report than the one before.
    assert!(
        (1..=3).contains(&seen.len()),
        "progress values written: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_every_worker_ends_in_failure() {
    let queue = common::unique_queue();
    let app = app_with(
        Backend::Postgres,
        Some(&queue),
        &[("JOB_MAX_ATTEMPTS", "2")],
    )
    .await;
    let token = root(&app).await;
    let task = accepted(
        &app,
        &token,
        "/system/background-tasks/long-running?duration=600",
        json!(null),
    )
    .await;
    let id = task["task_id"].as_str().unwrap().to_string();
    for attempt in 1..=2 {
        let worker = KeelProcess::spawn(&app.env);
        eventually(
            Duration::from_secs(20),
            &format!("attempt {attempt} to start"),
            || async {
                let j = row(&app, &id).await;
                (j.status.as_str() == "STARTED" && j.attempts == attempt).then_some(())
            },
        )
        .await;
        // SIGKILL: the worker dies mid-job, and the broker hands the message to the next.
        drop(worker);
    }
    let _last = KeelProcess::spawn(&app.env);
    let failed = wait_status(&app, &token, &id, "FAILURE", Duration::from_secs(20)).await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no attempts left"),
        "{failed}"
    );
    // It stays failed: nothing runs it a third time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(row(&app, &id).await.attempts, 2);
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_left_in_the_single_queue_run_after_the_upgrade() {
    let queue = common::unique_queue();
    // Publications are not repeated within the test: only the old queue's message can run it.
    let app = app_with(
        Backend::Postgres,
        Some(&queue),
        &[("JOB_REPUBLISH_AFTER_SECONDS", "3600")],
    )
    .await;
    // The queue of the version before job queues, with a job an old server published to it.
    let conn = lapin::Connection::connect(
        &common::rabbitmq_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4();
    job::ActiveModel {
        id: Set(id),
        published_at: Set(Some(Utc::now())),
        ..common::job_row(json!({"message": "from before"}))
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            id.to_string().as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _worker = KeelProcess::spawn(&app.env);
    let done = eventually(
        Duration::from_secs(20),
        "the old queue's job to run",
        || async {
            let j = row(&app, &id.to_string()).await;
            (j.status.as_str() == "SUCCESS").then_some(j)
        },
    )
    .await;
    assert_eq!(done.result.unwrap()["message"], "from before");
    assert_eq!(
        common::message_count(&channel, &queue).await,
        0,
        "the old queue is drained"
    );
    let _ = conn.close(200, "done".into()).await;
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_migration_routes_waiting_jobs_again() {
    use migration::MigratorTrait;
    use sea_orm::ConnectionTrait;
    let url = common::fresh_database_url(Backend::Sqlite).await;
    let db = sea_orm::Database::connect(&url).await.unwrap();
    migration::Migrator::up(&db, Some(8)).await.unwrap();
    let now = Utc::now();
    for (name, status) in [
        ("send_email", "PENDING"),
        ("prune_jobs", "SUCCESS"),
        ("process_data", "RETRY"),
    ] {
        // The columns of the schema before migration 9.
        let insert = sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO jobs (id, name, payload, status, attempts, max_attempts, run_at, \
             created_at, updated_at, published_at) VALUES (?, ?, '{}', ?, 0, 5, ?, ?, ?, ?)",
            [
                uuid::Uuid::new_v4().into(),
                name.into(),
                status.into(),
                now.into(),
                now.into(),
                now.into(),
                now.into(),
            ],
        );
        db.execute_raw(insert).await.unwrap();
    }
    migration::Migrator::up(&db, None).await.unwrap();
    let rows = job::Entity::find().all(&db).await.unwrap();
    let by_name = |name: &str| rows.iter().find(|r| r.name == name).unwrap().clone();
    let mail = by_name("send_email");
    assert_eq!((mail.queue.as_str(), mail.priority), ("email", 5));
    assert!(
        mail.published_at.is_none(),
        "waiting jobs are published again"
    );
    let data = by_name("process_data");
    assert_eq!(data.queue, "default");
    assert!(data.published_at.is_none());
    let pruned = by_name("prune_jobs");
    assert_eq!(pruned.queue, "maintenance");
    assert!(
        pruned.published_at.is_some(),
        "finished jobs are left alone"
    );
}
