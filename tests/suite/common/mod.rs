//! Test harness: a real server on a random port over a fresh database (a temporary SQLite file or
//! a new PostgreSQL database), mail delivered through a real SMTP server that captures it.
#![allow(dead_code)]

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use keel::{
    config::Settings,
    http::{BoundServer, state::AppState},
};
use reqwest::{Client, Response, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub mod browser;
pub mod mail;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database for one test.
pub async fn fresh_database_url(backend: Backend) -> String {
    let name = format!("keel_test_{}", uuid::Uuid::new_v4().simple());
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("keel-tests");
            std::fs::create_dir_all(&dir).expect("temp dir");
            format!(
                "sqlite://{}?mode=rwc",
                dir.join(format!("{name}.db")).display()
            )
        }
        Backend::Postgres => {
            let admin = postgres_admin_url();
            let conn = Database::connect(&admin).await.unwrap_or_else(|e| {
                panic!("PostgreSQL is not reachable at {admin}: {e} (run tests/run.sh)")
            });
            conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            let _ = conn.close().await;
            let mut url = url::Url::parse(&admin).expect("TEST_POSTGRES_URL");
            url.set_path(&name);
            url.to_string()
        }
    }
}

/// The settings every test server starts from: real SMTP capture, fast and quiet.
pub fn base_settings(database_url: &str) -> HashMap<String, String> {
    let mut env = HashMap::new();
    env.insert("DATABASE_URL".into(), database_url.into());
    env.insert("SMTP_HOST".into(), mail::smtp_host());
    env.insert("SMTP_PORT".into(), mail::smtp_port().to_string());
    env.insert("SMTP_TLS".into(), "false".into());
    env.insert("FRONTEND_URL".into(), "http://app.test".into());
    env.insert(
        "SECRET_KEY".into(),
        "test-secret-key-that-is-long-enough-000".into(),
    );
    env.insert("DATABASE_MAX_CONNECTIONS".into(), "5".into());
    // Tests sign in and register far faster than people do; the limits have their own tests.
    env.insert("ENABLE_RATE_LIMITING".into(), "false".into());
    env
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: Client,
    pub state: AppState,
    pub backend: Backend,
    /// The settings the server runs with, for worker processes to share.
    pub env: HashMap<String, String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        let db = fresh_database_url(backend).await;
        let mut env = base_settings(&db);
        for (k, v) in overrides {
            env.insert(k.to_string(), v.to_string());
        }
        Self::start_env(backend, env).await
    }

    pub async fn start_env(backend: Backend, env: HashMap<String, String>) -> Self {
        let mut env = env;
        env.entry("LOG_LEVEL".into())
            .or_insert_with(|| std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()));
        let settings = Settings::from_map(&env, &keel::app::kinds()).expect("test settings");
        let saved_env = env.clone();
        drop(keel::telemetry::init(&settings, "keel-test"));
        let state = AppState::build(settings).await.expect("build app state");
        let server = BoundServer::bind(state.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let addr = server.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(
                    async {
                        let _ = rx.await;
                    },
                    Duration::from_secs(5),
                )
                .await;
        });
        let prefix = state.settings.http.api_prefix.clone();
        Self {
            addr,
            base: format!("http://{addr}{prefix}"),
            client: keel::net::http_client()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            state,
            backend,
            env: saved_env,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Waits until `/system/health/ready` answers 200, as a load balancer would before sending
    /// this instance any traffic.
    pub async fn wait_ready(&self) {
        eventually(
            Duration::from_secs(15),
            "the server to be ready",
            || async {
                let resp = self.get("/system/health/ready", None).await;
                (resp.status() == StatusCode::OK).then_some(())
            },
        )
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    pub async fn post_json(&self, path: &str, body: Value, token: Option<&str>) -> Response {
        let mut req = self.client.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    /// The Prometheus text at `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.unwrap()
    }

    pub async fn register(&self, user: &TestUser) -> Response {
        self.post_json(
            "/auth/register",
            json!({"email": user.email, "username": user.username, "password": user.password}),
            None,
        )
        .await
    }

    pub async fn login_raw(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/auth/login"))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .expect("request")
    }

    /// Logs in and returns the token body; panics unless the login succeeds.
    pub async fn login(&self, username: &str, password: &str) -> Tokens {
        let resp = self.login_raw(username, password).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "login failed: {body}");
        Tokens::from_json(&body)
    }

    /// Registers, verifies through the mailed link, and logs in.
    pub async fn signed_in_user(&self) -> (TestUser, Tokens) {
        let user = TestUser::new();
        assert_eq!(self.register(&user).await.status(), StatusCode::CREATED);
        let token = mail::wait_for_token(&user.email, "verify your email", "verify-email").await;
        let resp = self
            .post_json("/auth/verify-email", json!({"token": token}), None)
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let tokens = self.login(&user.email, &user.password).await;
        (user, tokens)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub fn from_json(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub email: String,
    pub username: String,
    pub password: String,
}

impl TestUser {
    /// A user with a unique address, so tests can share one mail catcher.
    pub fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Self {
            email: format!("user-{}@example.com", &tag[..16]),
            username: format!("u{}", &tag[..12]),
            password: "TestPassword123!".into(),
        }
    }
}

/// Reads a problem+json body and checks its shape; returns it for further assertions.
pub async fn problem(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct}"
    );
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("x-request-id header");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(),
        "{body}"
    );
    body
}

/// Declares one async test per database back end.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

pub fn rabbitmq_url() -> String {
    std::env::var("TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Settings for a server whose jobs go through RabbitMQ, on a queue of its own.
pub fn rabbit_overrides(queue: &str) -> Vec<(String, String)> {
    vec![
        ("ENABLE_RABBITMQ".into(), "true".into()),
        ("RABBITMQ_URL".into(), rabbitmq_url()),
        ("RABBITMQ_QUEUE".into(), queue.into()),
        ("JOB_RETRY_BASE_MS".into(), "100".into()),
        ("JOB_RETRY_MAX_MS".into(), "400".into()),
    ]
}

/// A server whose jobs go through RabbitMQ on `queue`, with `extra` settings.
pub async fn rabbit_app(backend: Backend, queue: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut overrides = rabbit_overrides(queue);
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    TestApp::start_with(backend, &pairs).await
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Settings for a server on the shared test Redis, under a key prefix of its own.
pub fn redis_overrides() -> Vec<(String, String)> {
    vec![
        ("ENABLE_REDIS".into(), "true".into()),
        ("REDIS_URL".into(), redis_url()),
        (
            "REDIS_KEY_PREFIX".into(),
            format!("keel:test:{}:", uuid::Uuid::new_v4().simple()),
        ),
    ]
}

pub fn unique_queue() -> String {
    format!("keel.test.{}", uuid::Uuid::new_v4().simple())
}

/// A server on `env`; on PostgreSQL its jobs go through RabbitMQ, on a queue of its own, to a
/// worker process (SQLite keeps the embedded default: jobs in process). `stop_with_worker`
/// ends both.
pub async fn start_with_worker_on_postgres(
    backend: Backend,
    mut env: HashMap<String, String>,
) -> (TestApp, Option<(KeelProcess, String)>) {
    let queue = (backend == Backend::Postgres).then(unique_queue);
    if let Some(queue) = &queue {
        env.extend(rabbit_overrides(queue));
    }
    let app = TestApp::start_env(backend, env).await;
    let worker = queue.map(|q| (KeelProcess::spawn(&app.env), q));
    (app, worker)
}

pub async fn stop_with_worker(app: TestApp, worker: Option<(KeelProcess, String)>) {
    app.stop().await;
    if let Some((worker, queue)) = worker {
        drop(worker);
        delete_queues(&queue).await;
    }
}

/// The account row of `email`.
pub async fn user_row(app: &TestApp, email: &str) -> crate::entities::user::Model {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    crate::entities::user::Entity::find()
        .filter(crate::entities::user::Column::Email.eq(email))
        .one(&app.state.db)
        .await
        .unwrap()
        .expect("the account")
}

pub async fn user_id(app: &TestApp, email: &str) -> uuid::Uuid {
    user_row(app, email).await.id
}

/// A process of one of Keel's binaries (a `worker` sharing the test server's settings, most
/// often), killed when the test ends, whatever its outcome.
pub struct KeelProcess {
    pub child: std::process::Child,
}

impl KeelProcess {
    pub fn spawn(env: &HashMap<String, String>) -> Self {
        Self::spawn_args(env, &[])
    }

    /// A worker with command-line arguments, such as `--queues email`.
    pub fn spawn_args(env: &HashMap<String, String>, args: &[&str]) -> Self {
        Self::spawn_binary(env!("CARGO_BIN_EXE_worker"), args, env)
    }

    /// Any of the binaries (`env!("CARGO_BIN_EXE_server")`, ...), with `env`.
    pub fn spawn_binary(bin: &str, args: &[&str], env: &HashMap<String, String>) -> Self {
        let child = std::process::Command::new(bin)
            .args(args)
            .envs(env)
            .env(
                "LOG_LEVEL",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .current_dir(std::env::temp_dir())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        Self { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Whether the process has exited (with its code), without waiting.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().expect("try_wait").map(|s| s.code())
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(code) = self.exited() {
                return code;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for KeelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deletes a test's queues from the broker.
pub async fn delete_queues(queue: &str) {
    if let Ok(conn) =
        lapin::Connection::connect(&rabbitmq_url(), lapin::ConnectionProperties::default()).await
        && let Ok(channel) = conn.create_channel().await
    {
        let mut names = vec![queue.to_string(), format!("{queue}.dead")];
        for job_queue in keel::jobs::Queue::ALL {
            for suffix in ["", ".high", ".low", ".dead"] {
                names.push(format!("{queue}.{job_queue}{suffix}"));
            }
        }
        for q in names {
            let _ = channel
                .queue_delete(
                    q.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
}

/// How many messages wait in the broker's queue `name` (which must exist).
pub async fn message_count(channel: &lapin::Channel, name: &str) -> u32 {
    channel
        .queue_declare(
            name.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// Polls `check` every 100 ms until it returns Some, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Redis of this test's own, to stop and start.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// With more configuration directives, e.g. `["--user", "name", "on", ...]`.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by tests/run.sh)");
        Self {
            port,
            child: Some(child),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn wait_port(port: u16) {
    eventually(Duration::from_secs(10), "redis to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// Submits a task as `token` (202, PENDING); answers its id.
pub async fn submit_task(app: &TestApp, token: &str, path: &str, body: Value) -> String {
    let resp = app.post_json(path, body, Some(token)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{path}");
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(accepted["status"], "PENDING");
    accepted["task_id"].as_str().unwrap().to_string()
}

/// The task as its owner (or a superuser) sees it at `task-status`.
pub async fn task_json(app: &TestApp, token: &str, id: &str) -> Value {
    let resp = app
        .get(
            &format!("/system/background-tasks/task-status/{id}"),
            Some(token),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// The task once it reaches `wanted`, waiting up to `within`.
pub async fn wait_task_status(
    app: &TestApp,
    token: &str,
    id: &str,
    wanted: &str,
    within: Duration,
) -> Value {
    eventually(within, &format!("task {id} to reach {wanted}"), || async {
        let s = task_json(app, token, id).await;
        (s["status"] == wanted).then_some(s)
    })
    .await
}

/// A job row as written straight into the table (for states the API cannot make): a PENDING
/// `test_task` due now with `payload`, in its queue at the default priority; tests change the
/// fields they need.
pub fn job_row(payload: Value) -> crate::entities::job::ActiveModel {
    use sea_orm::Set;
    let now = chrono::Utc::now();
    crate::entities::job::ActiveModel {
        id: Set(uuid::Uuid::new_v4()),
        name: Set("test_task".into()),
        payload: Set(payload),
        status: Set(crate::entities::job::JobStatus::Pending),
        attempts: Set(0),
        max_attempts: Set(5),
        run_at: Set(now),
        result: Set(None),
        error: Set(None),
        owner_id: Set(None),
        dedupe_key: Set(None),
        locked_by: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        published_at: Set(None),
        queue: Set("default".into()),
        priority: Set(5),
        unique_key: Set(None),
        progress: Set(None),
        request_id: Set(None),
        trace_context: Set(None),
        concurrency_key: Set(None),
        waiting_for: Set(None),
    }
}
