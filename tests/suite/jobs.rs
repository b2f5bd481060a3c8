//! Background jobs over real RabbitMQ with `worker` processes, and in-process in embedded mode.

use crate::common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::entities::job;
use common::{
    Backend, KeelProcess, TestApp, Tokens, eventually, mail, problem, rabbit_app,
    submit_task as submit, task_json as status, wait_task_status as wait_status,
};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// The job's row once it is SUCCESS, waiting up to `within`.
async fn row_when_succeeded(
    app: &TestApp,
    id: uuid::Uuid,
    within: Duration,
    what: &str,
) -> job::Model {
    eventually(within, what, || async {
        let j = job::Entity::find_by_id(id)
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
        (j.status.as_str() == "SUCCESS").then_some(j)
    })
    .await
}

async fn superuser(app: &TestApp) -> Tokens {
    app.login("root@example.com", "SuperSecret123!").await
}

const ROOT: [(&str, &str); 2] = [
    ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
    ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_mail_arrives_through_the_worker() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[]).await;

    // Without a worker the broker is fine but the worker is reported missing.
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["rabbitmq"], "healthy", "{health}");
    assert_eq!(health["worker"], "unhealthy", "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(
        app.get("/system/health/ready", None).await.status(),
        StatusCode::OK
    );

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut worker_env = app.env.clone();
    worker_env.insert(
        "WORKER_METRICS_ADDR".into(),
        format!("127.0.0.1:{metrics_port}"),
    );
    let _worker = KeelProcess::spawn(&worker_env);
    let (user, tokens) = app.signed_in_user().await;
    let me: Value = app
        .get("/users/me", Some(&tokens.access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], user.email.as_str());

    let jobs = job::Entity::find()
        .filter(job::Column::Name.eq("send_email"))
        .all(&app.state.db)
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(10), "mail jobs to succeed", || async {
        let jobs = job::Entity::find().all(&app.state.db).await.unwrap();
        jobs.iter()
            .all(|j| j.status.as_str() == "SUCCESS")
            .then_some(jobs)
    })
    .await;
    assert!(jobs.len() >= 2, "verification and welcome mails: {jobs:?}");
    for j in &done {
        assert!(
            j.locked_by.is_none() && j.published_at.is_some() && j.attempts == 1,
            "{j:?}"
        );
        assert!(
            !j.payload.to_string().contains("token="),
            "mailed tokens are scrubbed: {}",
            j.payload
        );
        assert_eq!(j.result.as_ref().unwrap()["transport"], "smtp");
    }

    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["worker"], "healthy", "{health}");
    assert_eq!(health["status"], "healthy");
    let features: Value = app.get("/features", None).await.json().await.unwrap();
    assert_eq!(features["rabbitmq"], true);
    // The worker serves its own metrics.
    let text = worker_metrics(metrics_port).await;
    assert!(
        text.contains("keel_jobs_total{name=\"send_email\",outcome=\"succeeded\"}"),
        "{text}"
    );
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_demonstration_task_runs_to_its_result() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &ROOT).await;
    let _worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;

    let id = submit(
        &app,
        &user.access,
        "/system/background-tasks/long-running?duration=2",
        json!(null),
    )
    .await;
    let started = wait_status(&app, &user.access, &id, "STARTED", Duration::from_secs(10)).await;
    assert!(started["started_at"].is_string());
    let done = wait_status(&app, &user.access, &id, "SUCCESS", Duration::from_secs(15)).await;
    assert_eq!(done["result"], json!({"slept_seconds": 2}));
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["task_name"], "long_running");
    for field in ["created_at", "started_at", "finished_at"] {
        assert!(done[field].is_string(), "{field}: {done}");
    }

    let echo = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "hello"}),
    )
    .await;
    let done = wait_status(
        &app,
        &user.access,
        &echo,
        "SUCCESS",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(done["result"]["message"], "hello");

    let records = json!([{"price": 10, "name": "a"}, {"price": 5.5}, {"name": "c"}]);
    let data = submit(
        &app,
        &user.access,
        "/system/background-tasks/process-data",
        records,
    )
    .await;
    let done = wait_status(
        &app,
        &user.access,
        &data,
        "SUCCESS",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(done["result"]["record_count"], 3);
    assert_eq!(done["result"]["fields"]["price"]["sum"], 15.5);
    assert_eq!(done["result"]["fields"]["name"]["count"], 2);

    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_visible_to_its_owner_and_superusers_only() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &ROOT).await;
    let _worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;
    let (_, other) = app.signed_in_user().await;
    let id = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "mine"}),
    )
    .await;

    // Visible to its owner and superusers only; unknown ids are 404 too.
    let path = format!("/system/background-tasks/task-status/{id}");
    problem(app.get(&path, Some(&other.access)).await, 404, "not_found").await;
    let root = superuser(&app).await;
    assert_eq!(
        app.get(&path, Some(&root.access)).await.status(),
        StatusCode::OK
    );
    let unknown = format!(
        "/system/background-tasks/task-status/{}",
        uuid::Uuid::new_v4()
    );
    problem(
        app.get(&unknown, Some(&user.access)).await,
        404,
        "not_found",
    )
    .await;
    problem(app.get(&path, None).await, 401, "not_authenticated").await;

    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_input_is_a_4xx() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &ROOT).await;
    // Signing up takes the verification mail, which the worker sends.
    let _worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;

    // Bad input is a 4xx, never a 5xx.
    let resp = app
        .client
        .post(app.url("/system/background-tasks/long-running?duration=0"))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    problem(resp, 400, "invalid_parameter").await;
    let resp = app
        .post_json(
            "/system/background-tasks/process-data",
            json!([1, 2]),
            Some(&user.access),
        )
        .await;
    let wrong = problem(resp, 422, "validation_failed").await;
    assert_eq!(wrong["errors"][1]["field"], "[1]", "{wrong}");

    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_and_the_task_list_are_for_superusers() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &ROOT).await;
    let _worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;
    // Three successes of the user's, so that a page of two has a next one.
    for message in ["one", "two", "three"] {
        let id = submit(
            &app,
            &user.access,
            "/system/background-tasks/test-task",
            json!({"message": message}),
        )
        .await;
        wait_status(&app, &user.access, &id, "SUCCESS", Duration::from_secs(10)).await;
    }
    let root = superuser(&app).await;

    // Mail and the task list are for superusers.
    let mail_req = json!({"to": "someone@example.com", "subject": "Hi", "body": "<b>hello</b>"});
    let resp = app
        .post_json(
            "/system/background-tasks/send-email",
            mail_req.clone(),
            Some(&user.access),
        )
        .await;
    problem(resp, 403, "superuser_required").await;
    problem(
        app.get("/system/background-tasks", Some(&user.access))
            .await,
        403,
        "superuser_required",
    )
    .await;
    let sent = submit(
        &app,
        &root.access,
        "/system/background-tasks/send-email",
        mail_req,
    )
    .await;
    wait_status(
        &app,
        &root.access,
        &sent,
        "SUCCESS",
        Duration::from_secs(10),
    )
    .await;
    let message = mail::wait_for_messages("someone@example.com", "Hi", 1)
        .await
        .remove(0);
    assert!(
        message["html"]
            .as_str()
            .unwrap()
            .contains("&lt;b&gt;hello&lt;/b&gt;")
    );

    let list: Value = app
        .get(
            "/system/background-tasks?status=SUCCESS&size=2",
            Some(&root.access),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(list["metadata"]["total"].as_u64().unwrap() >= 4, "{list}");
    assert_eq!(list["metadata"]["has_next"], true);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "SUCCESS")
    );
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_ends_in_failure_and_the_dead_letter_queue() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[("JOB_MAX_ATTEMPTS", "3")]).await;
    let _worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;

    let id = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "doomed", "fail_attempts": 50}),
    )
    .await;
    let failed = wait_status(&app, &user.access, &id, "FAILURE", Duration::from_secs(20)).await;
    assert_eq!(failed["attempts"], 3);
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "{failed}"
    );
    assert!(failed["result"].is_null());

    // A task that fails twice and then succeeds is retried to success.
    let id2 = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "stubborn", "fail_attempts": 2}),
    )
    .await;
    let done = wait_status(&app, &user.access, &id2, "SUCCESS", Duration::from_secs(20)).await;
    assert_eq!(done["attempts"], 3);

    // The failed job's message waits in the dead-letter queue for an operator.
    let conn = lapin::Connection::connect(
        &common::rabbitmq_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let dead = eventually(
        Duration::from_secs(5),
        "the dead-lettered message",
        || async {
            channel
                .basic_get(
                    format!("{queue}.default.dead").as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap()
        },
    )
    .await;
    assert_eq!(String::from_utf8(dead.delivery.data.clone()).unwrap(), id);
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_is_killed_completes_once_on_another() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[]).await;
    let mut first = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;

    let id = submit(
        &app,
        &user.access,
        "/system/background-tasks/long-running?duration=3",
        json!(null),
    )
    .await;
    wait_status(&app, &user.access, &id, "STARTED", Duration::from_secs(10)).await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&app, &user.access, &id).await["status"], "STARTED");

    let _second = KeelProcess::spawn(&app.env);
    let done = wait_status(&app, &user.access, &id, "SUCCESS", Duration::from_secs(20)).await;
    assert_eq!(
        done["attempts"], 2,
        "one interrupted run, one complete run: {done}"
    );
    assert_eq!(done["result"], json!({"slept_seconds": 3}));
    let rows = job::Entity::find()
        .filter(job::Column::Name.eq("long_running"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    // It stays done: no later duplicate delivery runs it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = status(&app, &user.access, &id).await;
    assert_eq!(
        (again["status"].clone(), again["attempts"].clone()),
        (json!("SUCCESS"), json!(2))
    );
    common::delete_queues(&queue).await;
}

/// A TCP relay to the broker that can be cut and restored, to play a broker outage for one
/// server without disturbing anything else using the broker.
pub(crate) struct BrokerProxy {
    port: u16,
    up: Arc<AtomicBool>,
}

impl BrokerProxy {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    if !flag.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    let watch = flag.clone();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                        _ = async move {
                            while watch.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        } => {}
                    }
                });
            }
        });
        Self { port, up }
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    pub(crate) fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_jobs_and_loses_none() {
    let queue = common::unique_queue();
    let proxy = BrokerProxy::start().await;
    let app = rabbit_app(Backend::Postgres, &queue, &[("RABBITMQ_URL", &proxy.url())]).await;
    // Server and worker both reach the broker through the proxy: cutting it is, for them, the
    // broker going away (connections dropped, new ones refused) and coming back.
    let _worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;

    proxy.set_up(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["rabbitmq"], "unhealthy", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    // A broker outage only delays jobs: the instance stays in its load balancer.
    assert_eq!(
        app.get("/system/health/ready", None).await.status(),
        StatusCode::OK
    );
    assert!(
        app.metrics()
            .await
            .contains("keel_dependency_up{dependency=\"rabbitmq\"} 0"),
        "the outage shows in the metrics"
    );

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            submit(
                &app,
                &user.access,
                "/system/background-tasks/test-task",
                json!({"message": format!("m{i}")}),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let s = status(&app, &user.access, id).await;
        assert_eq!(
            s["status"], "PENDING",
            "nothing can run while the broker is unreachable"
        );
    }

    proxy.set_up(true);
    for (i, id) in ids.iter().enumerate() {
        let done = wait_status(&app, &user.access, id, "SUCCESS", Duration::from_secs(30)).await;
        assert_eq!(done["result"]["message"], format!("m{i}"));
    }
    assert_eq!(
        app.get("/system/health/ready", None).await.status(),
        StatusCode::OK
    );
    common::delete_queues(&queue).await;
}

/// A task submitted through the API is written already marked published and handed to the
/// server's relay. A server killed between that commit and the broker's confirm leaves such a
/// row behind; the relay's sweep (of any instance) publishes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_whose_server_died_before_publishing_still_runs() {
    use sea_orm::{ActiveModelTrait, Set};
    let queue = common::unique_queue();
    let app = rabbit_app(
        Backend::Postgres,
        &queue,
        &[("JOB_REPUBLISH_AFTER_SECONDS", "1")],
    )
    .await;
    let _worker = KeelProcess::spawn(&app.env);
    let then = chrono::Utc::now() - chrono::Duration::minutes(1);
    let id = uuid::Uuid::new_v4();
    job::ActiveModel {
        id: Set(id),
        run_at: Set(then),
        created_at: Set(then),
        updated_at: Set(then),
        published_at: Set(Some(then)),
        ..common::job_row(json!({"message": "orphaned", "fail_attempts": 0}))
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let done = row_when_succeeded(
        &app,
        id,
        Duration::from_secs(30),
        "the orphaned submission to run",
    )
    .await;
    assert_eq!(done.attempts, 1);
    assert_eq!(done.result.unwrap()["message"], "orphaned");
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_revokes_it() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[]).await;
    let _worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;
    let (_, other) = app.signed_in_user().await;

    let id = submit(
        &app,
        &user.access,
        "/system/background-tasks/long-running?duration=60",
        json!(null),
    )
    .await;
    wait_status(&app, &user.access, &id, "STARTED", Duration::from_secs(10)).await;
    let path = format!("/system/background-tasks/{id}");
    problem(
        app.delete(&path, Some(&other.access)).await,
        404,
        "not_found",
    )
    .await;
    let resp = app.delete(&path, Some(&user.access)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "REVOKED");

    // The worker stops it and is free for the next task; the task stays revoked.
    let next = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "next"}),
    )
    .await;
    wait_status(
        &app,
        &user.access,
        &next,
        "SUCCESS",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let revoked = status(&app, &user.access, &id).await;
    assert_eq!(revoked["status"], "REVOKED");
    assert!(revoked["finished_at"].is_string());
    assert!(revoked["result"].is_null());

    // A finished task cannot be cancelled.
    problem(
        app.delete(
            &format!("/system/background-tasks/{next}"),
            Some(&user.access),
        )
        .await,
        409,
        "task_finished",
    )
    .await;
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_job_finish() {
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[]).await;
    let mut worker = KeelProcess::spawn(&app.env);
    let (_, user) = app.signed_in_user().await;

    let id = submit(
        &app,
        &user.access,
        "/system/background-tasks/long-running?duration=2",
        json!(null),
    )
    .await;
    wait_status(&app, &user.access, &id, "STARTED", Duration::from_secs(10)).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(15)).await, Some(0));
    let done = status(&app, &user.access, &id).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(done["attempts"], 1);
    common::delete_queues(&queue).await;
}

#[test]
fn the_worker_refuses_to_start_without_rabbitmq() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("ENABLE_RABBITMQ", "false")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ENABLE_RABBITMQ"));
}

// ---- embedded mode: the server runs jobs itself, with the same rules -------------------------

both_backends!(
    embedded_tasks_run_retry_and_cancel,
    embedded_recovers_jobs_of_a_dead_server,
    cleanup_job_removes_spent_tokens,
);

async fn embedded_tasks_run_retry_and_cancel(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        &[
            ("JOB_MAX_ATTEMPTS", "2"),
            ("JOB_RETRY_BASE_MS", "100"),
            ("JOB_RETRY_MAX_MS", "200"),
        ],
    )
    .await;
    let health: Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["worker"], "in-process");
    assert_eq!(health["rabbitmq"], "disabled");
    let (_, user) = app.signed_in_user().await;

    let ok = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "local"}),
    )
    .await;
    let done = wait_status(&app, &user.access, &ok, "SUCCESS", Duration::from_secs(10)).await;
    assert_eq!(done["result"]["message"], "local");

    let bad = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "x", "fail_attempts": 9}),
    )
    .await;
    let failed = wait_status(&app, &user.access, &bad, "FAILURE", Duration::from_secs(10)).await;
    assert_eq!(failed["attempts"], 2);
    // The retried run is counted under an explicit, stable label.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keel_jobs_total{name=\"test_task\",outcome=\"will_retry\"}"),
        "{metrics}"
    );

    let long = submit(
        &app,
        &user.access,
        "/system/background-tasks/long-running?duration=30",
        json!(null),
    )
    .await;
    wait_status(
        &app,
        &user.access,
        &long,
        "STARTED",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        app.delete(
            &format!("/system/background-tasks/{long}"),
            Some(&user.access)
        )
        .await
        .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status(&app, &user.access, &long).await["status"], "REVOKED");
}

async fn embedded_recovers_jobs_of_a_dead_server(backend: Backend) {
    use sea_orm::{ActiveModelTrait, Set};
    let app = TestApp::start(backend).await;
    // A job a crashed server left STARTED a minute ago (its worker never beats again), and one a
    // live server (fresh heartbeat) is running right now: only the first is taken back.
    let now = chrono::Utc::now();
    // The live worker's heartbeat is there before its job: the server's recovery pass may run
    // at any moment from its start.
    keel::jobs::heartbeat::heartbeat(&app.state.db, "inprocess-alive-1", now)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (locked_by, started) in [
        ("inprocess-dead-1", now - chrono::Duration::minutes(1)),
        ("inprocess-alive-1", now - chrono::Duration::minutes(1)),
    ] {
        let id = uuid::Uuid::new_v4();
        job::ActiveModel {
            id: Set(id),
            status: Set(job::JobStatus::Started),
            attempts: Set(1),
            run_at: Set(started),
            locked_by: Set(Some(locked_by.into())),
            created_at: Set(started),
            updated_at: Set(started),
            started_at: Set(Some(started)),
            ..common::job_row(json!({"message": locked_by}))
        }
        .insert(&app.state.db)
        .await
        .unwrap();
        ids.push(id);
    }

    let recovered = row_when_succeeded(
        &app,
        ids[0],
        Duration::from_secs(15),
        "the orphaned job to be rerun",
    )
    .await;
    assert_eq!(recovered.attempts, 2);
    assert_eq!(recovered.result.unwrap()["message"], "inprocess-dead-1");
    let alive = job::Entity::find_by_id(ids[1])
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (alive.status.as_str(), alive.attempts),
        ("STARTED", 1),
        "a live server's job is left alone"
    );
}

async fn cleanup_job_removes_spent_tokens(backend: Backend) {
    use crate::entities::one_time_token;
    use sea_orm::sea_query::Expr;
    let app = TestApp::start(backend).await;
    let (user, _) = app.signed_in_user().await;
    // One used verification token now exists; add an expired reset token.
    app.post_json("/auth/forgot-password", json!({"email": user.email}), None)
        .await;
    mail::wait_for_messages(&user.email, "reset your password", 1).await;
    one_time_token::Entity::update_many()
        .col_expr(
            one_time_token::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::hours(2)),
        )
        .filter(one_time_token::Column::Purpose.eq("reset_password"))
        .exec(&app.state.db)
        .await
        .unwrap();
    let id = app
        .state
        .jobs
        .queue()
        .enqueue(
            &app.state.db,
            keel::jobs::NewJob::new("cleanup_expired_tokens", json!({})),
        )
        .await
        .unwrap();
    app.state.jobs.queue().wake();
    let done = row_when_succeeded(&app, id, Duration::from_secs(10), "the cleanup job").await;
    assert_eq!(done.result.unwrap()["one_time_tokens_deleted"], 2);
    assert_eq!(
        one_time_token::Entity::find()
            .all(&app.state.db)
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_mail_job_keeps_no_mailed_secret() {
    // No worker runs: the mail job waits in the queue until it is cancelled.
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &ROOT).await;
    let root = superuser(&app).await;
    let id = submit(
        &app,
        &root.access,
        "/system/background-tasks/send-email",
        json!({"to": "someone@example.com", "subject": "Your code", "body": "secret-code-93141"}),
    )
    .await;
    let resp = app
        .delete(
            &format!("/system/background-tasks/{id}"),
            Some(&root.access),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let row = job::Entity::find_by_id(uuid::Uuid::parse_str(&id).unwrap())
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status.as_str(), "REVOKED");
    let stored = row.payload.to_string();
    assert!(!stored.contains("secret-code-93141"), "{stored}");
    assert_eq!(row.payload["to"], "someone@example.com");
    common::delete_queues(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_status_keel_does_not_know_is_an_internal_error() {
    let app = TestApp::start_with(Backend::Postgres, &ROOT).await;
    let root = superuser(&app).await;
    let (_, user) = app.signed_in_user().await;
    let id = submit(
        &app,
        &user.access,
        "/system/background-tasks/test-task",
        json!({"message": "m"}),
    )
    .await;
    wait_status(&app, &user.access, &id, "SUCCESS", Duration::from_secs(10)).await;
    job::Entity::update_many()
        .col_expr(
            job::Column::Status,
            sea_orm::sea_query::Expr::value("BOGUS"),
        )
        .filter(job::Column::Id.eq(uuid::Uuid::parse_str(&id).unwrap()))
        .exec(&app.state.db)
        .await
        .unwrap();
    let path = format!("/system/background-tasks/task-status/{id}");
    problem(
        app.get(&path, Some(&user.access)).await,
        500,
        "internal_error",
    )
    .await;
    problem(
        app.get("/system/background-tasks", Some(&root.access))
            .await,
        500,
        "internal_error",
    )
    .await;
}

async fn succeeded(app: &TestApp) -> u64 {
    use sea_orm::PaginatorTrait;
    job::Entity::find()
        .filter(job::Column::Status.eq("SUCCESS"))
        .count(&app.state.db)
        .await
        .unwrap()
}

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl (installed by tests/run.sh)");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

/// Restarts the machine's RabbitMQ, which every other test shares, so tests/run.sh runs it on
/// its own after the others (`--run-ignored only`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ: tests/run.sh runs it alone, after the rest"]
async fn ten_thousand_jobs_survive_a_killed_worker_and_a_broker_restart() {
    const JOBS: usize = 10_000;
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[("WORKER_CONCURRENCY", "32")]).await;
    for chunk in 0..JOBS / 1_000 {
        let txn = sea_orm::TransactionTrait::begin(&app.state.db)
            .await
            .unwrap();
        for i in 0..1_000 {
            let message = format!("job {}", chunk * 1_000 + i);
            app.state
                .jobs
                .queue()
                .enqueue(
                    &txn,
                    keel::jobs::NewJob::new("test_task", json!({"message": message})),
                )
                .await
                .unwrap();
        }
        txn.commit().await.unwrap();
        app.state.jobs.queue().wake();
    }

    // A worker dies in the middle of the backlog, with deliveries in hand.
    let mut first = KeelProcess::spawn(&app.env);
    eventually(Duration::from_secs(120), "2,000 jobs done", || async {
        (succeeded(&app).await >= 2_000).then_some(())
    })
    .await;
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(10)).await;

    // Another takes over, and the broker restarts under it and under the relay.
    let _second = KeelProcess::spawn(&app.env);
    eventually(Duration::from_secs(120), "5,000 jobs done", || async {
        (succeeded(&app).await >= 5_000).then_some(())
    })
    .await;
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    eventually(Duration::from_secs(300), "every job done", || async {
        (succeeded(&app).await >= JOBS as u64).then_some(())
    })
    .await;
    let rows = job::Entity::find().all(&app.state.db).await.unwrap();
    assert_eq!(rows.len(), JOBS, "no job was lost or made twice");
    let mut messages = std::collections::HashSet::new();
    for row in &rows {
        assert_eq!(row.status.as_str(), "SUCCESS", "{row:?}");
        assert!((1..=2).contains(&row.attempts), "{row:?}");
        let result = row.result.as_ref().expect("a result");
        assert_eq!(result["message"], row.payload["message"], "{row:?}");
        assert!(messages.insert(result["message"].to_string()), "{row:?}");
    }
    // Nothing is left behind: every delivery, duplicates included, was acknowledged, and
    // nothing was dead-lettered.
    let conn = lapin::Connection::connect(
        &common::rabbitmq_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    for q in [format!("{queue}.default"), format!("{queue}.default.dead")] {
        eventually(
            Duration::from_secs(30),
            &format!("{q} to be empty"),
            || async { (common::message_count(&channel, &q).await == 0).then_some(()) },
        )
        .await;
    }
    common::delete_queues(&queue).await;
}

/// A worker's Prometheus text, from its `WORKER_METRICS_ADDR`.
async fn worker_metrics(port: u16) -> String {
    keel::net::http_client()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `line` starts with (name and labels), 0 when absent.
fn sample(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// A burst's messages are settled with the broker in far fewer frames than messages (multiple
/// acknowledgements), every one of them once, and none before its job's outcome is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_acknowledged_in_few_frames_and_every_message_once() {
    const JOBS: usize = 400;
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[("WORKER_CONCURRENCY", "8")]).await;
    // One statement queues them all (`enqueue_all`), committed with its transaction.
    let txn = sea_orm::TransactionTrait::begin(&app.state.db)
        .await
        .unwrap();
    let jobs = (0..JOBS)
        .map(|i| keel::jobs::NewJob::new("test_task", json!({"message": i.to_string()})))
        .collect();
    let ids = app
        .state
        .jobs
        .queue()
        .enqueue_all(&txn, jobs)
        .await
        .unwrap();
    assert_eq!(ids.len(), JOBS);
    txn.commit().await.unwrap();
    app.state.jobs.queue().wake();

    let port = common::free_port();
    let mut env = app.env.clone();
    env.insert("WORKER_METRICS_ADDR".into(), format!("127.0.0.1:{port}"));
    let _worker = KeelProcess::spawn(&env);
    eventually(Duration::from_secs(60), "every job done", || async {
        (succeeded(&app).await == JOBS as u64).then_some(())
    })
    .await;
    // Every message acknowledged once: the worker counts them, and the broker holds none.
    let text = eventually(Duration::from_secs(10), "every message settled", || async {
        let text = worker_metrics(port).await;
        (sample(&text, "keel_job_settlements_total{settlement=\"ack\"}") == JOBS as u64)
            .then_some(text)
    })
    .await;
    let frames = sample(&text, "keel_job_settlement_frames_total");
    assert!(
        frames > 0 && frames * 2 <= JOBS as u64,
        "{frames} frames settled {JOBS} messages"
    );
    let rows = job::Entity::find()
        .filter(job::Column::Id.is_in(ids))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(rows.iter().all(|j| j.attempts == 1), "none ran twice");
    common::delete_queues(&queue).await;
}

/// Submissions made at the same moment are written together (one transaction for many: their
/// rows share the inserting transaction id), and one that the database refuses fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_are_written_together_and_fail_alone() {
    use sea_orm::{ConnectionTrait, Statement};
    let queue = common::unique_queue();
    let app = rabbit_app(Backend::Postgres, &queue, &[]).await;
    let submissions: Vec<_> = (0..60)
        .map(|i| {
            let jobs = app.state.jobs.clone();
            // PostgreSQL refuses a NUL character in text: that submission's row cannot be
            // written.
            let name = if i == 30 { "test\0task" } else { "test_task" };
            let job = keel::jobs::NewJob::new(name, json!({"message": i.to_string()}));
            tokio::spawn(async move { jobs.submit(job).await })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for s in submissions {
        match s.await.unwrap() {
            Ok(submitted) => accepted.push(submitted.id()),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((accepted.len(), refused), (59, 1));
    // Before any worker takes them, the rows are as their inserts left them.
    let transactions = app
        .state
        .db
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(DISTINCT xmin::text) FROM jobs WHERE name = 'test_task'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert!(
        transactions < 30,
        "59 submissions were written by {transactions} transactions"
    );
    // Every accepted one runs.
    let _worker = KeelProcess::spawn(&app.env);
    for id in accepted {
        row_when_succeeded(&app, id, Duration::from_secs(30), "a submitted job").await;
    }
    common::delete_queues(&queue).await;
}
