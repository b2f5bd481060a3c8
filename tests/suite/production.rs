//! Running as operators deploy Keel: readiness that means "this instance can serve", a drain
//! window on SIGTERM, health endpoints for the worker and the scheduler, the `healthcheck`
//! subcommands the images use instead of curl, migrations many processes can start at once,
//! and processes that wait for the schema instead of exiting.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{self, Backend, KeelProcess as Process, eventually, free_port};

const SERVER: &str = env!("CARGO_BIN_EXE_server");
const WORKER: &str = env!("CARGO_BIN_EXE_worker");
const SCHEDULER: &str = env!("CARGO_BIN_EXE_scheduler");
const ADMIN: &str = env!("CARGO_BIN_EXE_admin");

/// The status code of `GET url`, or 0 when nothing answers.
async fn status_of(client: &reqwest::Client, url: &str) -> u16 {
    match client.get(url).send().await {
        Ok(resp) => resp.status().as_u16(),
        Err(_) => 0,
    }
}

fn client() -> reqwest::Client {
    keel::net::http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Runs one of the binaries to completion: exit code and stdout.
fn run(bin: &str, args: &[&str], env: &HashMap<String, String>) -> (Option<i32>, String, String) {
    let out = Command::new(bin)
        .args(args)
        .envs(env)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGTERM: readiness fails at once, while the server keeps serving through the drain window
/// (a request in flight finishes, a new connection is still answered); then it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_at_once_and_serves_through_the_drain() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = common::fresh_database_url(Backend::Sqlite).await;
    let port = free_port();
    let mut env = common::base_settings(&db);
    env.insert("PORT".into(), port.to_string());
    env.insert("API_PREFIX".into(), "/api".into());
    env.insert("SHUTDOWN_DRAIN_SECONDS".into(), "3".into());
    env.insert("SHUTDOWN_TIMEOUT".into(), "20".into());
    let mut server = Process::spawn_binary(SERVER, &[], &env);
    let client = client();
    let url = |path: &str| format!("http://127.0.0.1:{port}/api{path}");
    eventually(
        Duration::from_secs(20),
        "the server to be ready",
        || async { (status_of(&client, &url("/system/health/ready")).await == 200).then_some(()) },
    )
    .await;
    // The image's healthcheck agrees, through the prefix.
    assert_eq!(run(SERVER, &["healthcheck"], &env).0, Some(0));

    // A request whose body trickles in: in flight when SIGTERM arrives.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(b"POST /api/auth/forgot-password HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{\"ema\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal("TERM");
    let signalled = Instant::now();
    let mut not_ready_after = None;
    while signalled.elapsed() < Duration::from_secs(2) {
        if status_of(&client, &url("/system/health/ready")).await == 503 {
            not_ready_after = Some(signalled.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let not_ready_after = not_ready_after.expect("readiness never failed after SIGTERM");
    assert!(
        not_ready_after < Duration::from_millis(100),
        "readiness failed only {not_ready_after:?} after SIGTERM"
    );
    let body: serde_json::Value = client
        .get(url("/system/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["detail"].as_str().unwrap().starts_with("draining"),
        "{body}"
    );
    assert_eq!(run(SERVER, &["healthcheck"], &env).0, Some(1));
    // Still serving: new connections during the drain get answers.
    assert_eq!(status_of(&client, &url("/system/health/live")).await, 200);
    assert_eq!(status_of(&client, &url("/")).await, 200);

    let rest = "il\": \"slow@example.com\"}";
    slow.write_all(format!("{:x}\r\n{rest}\r\n0\r\n\r\n", rest.len()).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    assert_eq!(server.wait_exit(Duration::from_secs(20)).await, Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "the server stopped before its drain window ended"
    );
    assert_eq!(status_of(&client, &url("/system/health/live")).await, 0);
}

/// With `METRICS_ADDR`, `/metrics` is served there and not beside the API (so it need not be
/// public), with the process's figures and the build; the listener closes with the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_apart_from_the_api() {
    let db = common::fresh_database_url(Backend::Sqlite).await;
    let (port, metrics_port) = (free_port(), free_port());
    let mut env = common::base_settings(&db);
    env.insert("PORT".into(), port.to_string());
    env.insert("METRICS_ADDR".into(), format!("127.0.0.1:{metrics_port}"));
    env.insert("SHUTDOWN_DRAIN_SECONDS".into(), "0".into());
    let mut server = Process::spawn_binary(SERVER, &[], &env);
    let client = client();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    eventually(
        Duration::from_secs(20),
        "the server to be ready",
        || async { (status_of(&client, &url("/system/health/ready")).await == 200).then_some(()) },
    )
    .await;
    let public = client.get(url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    assert!(
        public.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    let resp = client.get(&metrics_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for series in [
        format!(
            "keel_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "keel_jobs_queue_depth{queue=\"email\",status=\"PENDING\"}".into(),
        "keel_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1".into(),
        "process_cpu_seconds_total ".into(),
        "process_resident_memory_bytes ".into(),
        "process_open_fds ".into(),
        "process_max_fds ".into(),
        "process_start_time_seconds ".into(),
    ] {
        assert!(text.contains(&series), "missing {series} in\n{text}");
    }
    // The figures are this process's: some memory, some descriptors (the listeners at least).
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_open_fds") >= 2.0);

    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(20)).await, Some(0));
    assert_eq!(status_of(&client, &metrics_url).await, 0);
}

/// A worker and a scheduler started on a database no migration has touched (Kubernetes starts
/// Deployments in no order) wait for the schema: alive, not ready, until `admin migrate`
/// runs; then the worker consumes and both are ready, and their healthchecks say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_scheduler_wait_for_the_migrations_then_become_ready() {
    let queue = common::unique_queue();
    let db = common::fresh_database_url(Backend::Postgres).await;
    let mut env = common::base_settings(&db);
    env.extend(common::rabbit_overrides(&queue));
    let (worker_port, scheduler_port) = (free_port(), free_port());
    env.insert(
        "WORKER_METRICS_ADDR".into(),
        format!("0.0.0.0:{worker_port}"),
    );
    env.insert(
        "SCHEDULER_HEALTH_ADDR".into(),
        format!("127.0.0.1:{scheduler_port}"),
    );
    let mut worker = Process::spawn_binary(WORKER, &[], &env);
    let mut scheduler = Process::spawn_binary(SCHEDULER, &[], &env);
    let client = client();
    let worker_url = |path: &str| format!("http://127.0.0.1:{worker_port}{path}");
    let scheduler_url = |path: &str| format!("http://127.0.0.1:{scheduler_port}{path}");
    eventually(Duration::from_secs(20), "the worker to be live", || async {
        (status_of(&client, &worker_url("/health/live")).await == 200).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the scheduler to be live",
        || async {
            (status_of(&client, &scheduler_url("/health/live")).await == 200).then_some(())
        },
    )
    .await;
    // Waiting: both still running, the worker not ready, nothing consumed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(worker.exited().is_none(), "the worker exited");
    assert!(scheduler.exited().is_none(), "the scheduler exited");
    let resp = client
        .get(worker_url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("consuming 0 of 3"),
        "{body}"
    );
    assert_eq!(run(WORKER, &["healthcheck"], &env).0, Some(1));
    assert_eq!(run(SCHEDULER, &["healthcheck"], &env).0, Some(0));

    let (code, out, err) = run(ADMIN, &["migrate"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("applied m20261129_000001_accounts"), "{out}");

    eventually(
        Duration::from_secs(30),
        "the worker to be ready",
        || async { (status_of(&client, &worker_url("/health/ready")).await == 200).then_some(()) },
    )
    .await;
    assert_eq!(run(WORKER, &["healthcheck"], &env).0, Some(0));
    assert_eq!(
        status_of(&client, &scheduler_url("/health/ready")).await,
        200
    );
    // The worker's scrape reports its queue depth as before.
    let metrics = client
        .get(worker_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("keel_jobs_queue_depth"), "{metrics}");

    // On SIGTERM both stop cleanly.
    worker.signal("TERM");
    scheduler.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(40)).await, Some(0));
    assert_eq!(scheduler.wait_exit(Duration::from_secs(10)).await, Some(0));
    common::delete_queues(&queue).await;
}

/// A worker whose schema never arrives gives up after SCHEMA_WAIT_SECONDS, saying what is
/// pending.
#[tokio::test]
async fn a_worker_gives_up_on_the_schema_after_its_wait() {
    let queue = common::unique_queue();
    let db = common::fresh_database_url(Backend::Postgres).await;
    let mut env = common::base_settings(&db);
    env.extend(common::rabbit_overrides(&queue));
    env.insert("SCHEMA_WAIT_SECONDS".into(), "1".into());
    let started = Instant::now();
    let (code, _, err) = run(WORKER, &[], &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(err.contains("migration(s) pending"), "{err}");
}

/// Three servers with AUTO_MIGRATE start together on one empty PostgreSQL database: the
/// migration lock lets one apply the migrations while the others wait; all become ready, and
/// each migration is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_migrate_one_empty_database_at_once() {
    let db = common::fresh_database_url(Backend::Postgres).await;
    let client = client();
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let mut env = common::base_settings(&db);
        env.insert("PORT".into(), port.to_string());
        env.insert("AUTO_MIGRATE".into(), "true".into());
        ports.push(port);
        servers.push(Process::spawn_binary(SERVER, &[], &env));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for port in &ports {
        let url = format!("http://127.0.0.1:{port}/system/health/ready");
        while status_of(&client, &url).await != 200 {
            for server in &mut servers {
                let exited = server.exited();
                assert!(exited.is_none(), "a server exited: {exited:?}");
            }
            assert!(Instant::now() < deadline, "a server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let conn = sea_orm::Database::connect(&db).await.unwrap();
    let applied = keel::db::applied_migrations(&conn).await.unwrap();
    let names: Vec<&str> = applied.iter().map(|m| m.name.as_str()).collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "a migration recorded twice");
    assert!(
        keel::db::pending_migrations(&conn)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        names.first().copied(),
        Some("m20261129_000001_accounts"),
        "{names:?}"
    );
    let _ = conn.close().await;
}

/// `admin migrate status` lists what is applied and pending; `admin migrate down` reverts the
/// newest migration only when confirmed, and `admin migrate` applies it again, reporting each.
#[test]
fn admin_migrate_status_down_and_up() {
    let dir = std::env::temp_dir().join(format!("keel-migrate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let env: HashMap<String, String> = [(
        "DATABASE_URL".to_string(),
        format!("sqlite://{}?mode=rwc", dir.join("m.db").display()),
    )]
    .into();
    let (code, out, _) = run(ADMIN, &["migrate", "status"], &env);
    assert_eq!(code, Some(0));
    assert!(out.contains("0 applied, 15 pending"), "{out}");
    let (code, out, _) = run(ADMIN, &["migrate", "up"], &env);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("applied ")).count(),
        15,
        "{out}"
    );

    let (code, out, _) = run(ADMIN, &["migrate", "status", "--format", "json"], &env);
    assert_eq!(code, Some(0));
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["applied"].as_array().unwrap().len(), 15);
    assert_eq!(status["pending"], serde_json::json!([]));
    assert!(status["applied"][0]["applied_at"].is_string(), "{status}");

    // Not on a terminal and without --yes: refused, nothing reverted.
    let (code, _, err) = run(ADMIN, &["migrate", "down"], &env);
    assert_eq!(code, Some(4), "{err}");
    let (_, out, _) = run(ADMIN, &["migrate", "status"], &env);
    assert!(out.contains("15 applied, 0 pending"), "{out}");

    let (code, out, err) = run(ADMIN, &["migrate", "down", "2", "--yes"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "reverted m20261207_000015_job_limits",
            "reverted m20261207_000014_job_origin"
        ]
    );
    let (_, out, _) = run(ADMIN, &["migrate", "status"], &env);
    assert!(out.contains("13 applied, 2 pending"), "{out}");
    let (code, out, _) = run(ADMIN, &["migrate"], &env);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "applied m20261207_000014_job_origin",
            "applied m20261207_000015_job_limits"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `server healthcheck` fails (exit 1, one line saying why) when nothing listens.
#[test]
fn a_healthcheck_with_no_server_fails() {
    let env: HashMap<String, String> = [
        ("PORT".to_string(), free_port().to_string()),
        ("DATABASE_URL".to_string(), "sqlite::memory:".to_string()),
    ]
    .into();
    let (code, _, err) = run(SERVER, &["healthcheck"], &env);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("healthcheck: cannot connect"), "{err}");
    // Without its address the worker cannot be asked at all: a configuration error.
    let (code, _, err) = run(WORKER, &["healthcheck"], &env);
    assert_eq!(code, Some(2));
    assert!(err.contains("WORKER_METRICS_ADDR"), "{err}");
}

/// Secrets kept in files (Docker and Kubernetes secrets): every setting can come from the
/// file its `_FILE` variable names. A production server reads its key, its database URL and
/// its first superuser's password from files, and the superuser can sign in with it; setting
/// both `NAME` and `NAME_FILE` stops start-up naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_files() {
    let dir = std::env::temp_dir().join(format!("keel-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        // As `docker secret` and `kubectl create secret` write them: with a final newline.
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let db = common::fresh_database_url(Backend::Postgres).await;
    let port = free_port();
    let mut env = common::base_settings("");
    env.remove("DATABASE_URL");
    env.remove("SECRET_KEY");
    env.insert("DATABASE_URL_FILE".into(), secret("database_url", &db));
    env.insert(
        "SECRET_KEY_FILE".into(),
        secret("secret_key", "a-production-secret-key-of-at-least-32-bytes"),
    );
    env.insert("ENVIRONMENT".into(), "production".into());
    env.insert("PORT".into(), port.to_string());
    env.insert("FIRST_SUPERUSER_EMAIL".into(), "root@example.com".into());
    env.insert(
        "FIRST_SUPERUSER_PASSWORD_FILE".into(),
        secret("root_password", "Secret-From-A-File-42"),
    );
    let _server = Process::spawn_binary(SERVER, &[], &env);
    let client = client();
    let base = format!("http://127.0.0.1:{port}");
    eventually(
        Duration::from_secs(20),
        "the server to be ready",
        || async {
            (status_of(&client, &format!("{base}/system/health/ready")).await == 200).then_some(())
        },
    )
    .await;
    let login = client
        .post(format!("{base}/auth/login"))
        .form(&[
            ("username", "root@example.com"),
            ("password", "Secret-From-A-File-42"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "{}", login.text().await.unwrap());

    // Both the value and its file: refused, naming the setting, before anything starts.
    let mut both = env.clone();
    both.insert("SECRET_KEY".into(), "x".repeat(40));
    both.insert("PORT".into(), free_port().to_string());
    let (code, _, err) = run(SERVER, &[], &both);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err.trim(),
        "invalid configuration: SECRET_KEY: set either SECRET_KEY or SECRET_KEY_FILE, not both"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `admin config check` prints the settings a process would run with, secrets masked and
/// the source of each; on a bad environment it lists every invalid setting and exits 2.
#[test]
fn admin_config_check_lists_settings_and_every_problem() {
    let dir = std::env::temp_dir().join(format!("keel-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("secret_key");
    std::fs::write(&key, "a-secret-key-nobody-may-read-in-a-log\n").unwrap();
    let good: HashMap<String, String> = [
        ("SECRET_KEY_FILE", key.display().to_string()),
        (
            "DATABASE_URL",
            "postgres://keel:hunter2@db.internal:5432/keel".into(),
        ),
        ("PORT", "9000".into()),
        ("OIDC_PROVIDERS", "corp".into()),
        ("OIDC_CORP_ISSUER", "https://idp.example.com".into()),
        ("OIDC_CORP_CLIENT_ID", "keel".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (code, out, err) = run(ADMIN, &["config", "check"], &good);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("the configuration is valid"), "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("SECRET_KEY"),
        format!("SECRET_KEY ******** file {}", key.display())
    );
    assert_eq!(
        row("DATABASE_URL"),
        "DATABASE_URL postgres://keel:***@db.internal:5432/keel environment"
    );
    assert_eq!(row("PORT"), "PORT 9000 environment");
    assert_eq!(row("HOST"), "HOST 127.0.0.1 default");
    assert_eq!(
        row("OIDC_CORP_ISSUER"),
        "OIDC_CORP_ISSUER https://idp.example.com environment"
    );
    assert!(!out.contains("hunter2") && !out.contains("nobody-may-read"));

    let bad: HashMap<String, String> = [
        ("PORT", "eighty"),
        ("ENABLE_HSTS", "maybe"),
        ("SECRET_KEY_FILE", "/nonexistent/keel/secret"),
        ("DATABASE_MIN_CONNECTIONS", "50"),
        ("SCHEDULE_PRUNE_JOBS", "every hour"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (code, out, err) = run(ADMIN, &["config", "check", "--format", "json"], &bad);
    assert_eq!(code, Some(2), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["valid"], false);
    let mut invalid: Vec<&str> = report["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    invalid.sort_unstable();
    assert_eq!(
        invalid,
        [
            "DATABASE_MIN_CONNECTIONS",
            "ENABLE_HSTS",
            "PORT",
            "SCHEDULE_PRUNE_JOBS",
            "SECRET_KEY_FILE"
        ]
    );
    assert_eq!(err.lines().count(), 5, "{err}");
    assert!(
        err.lines()
            .all(|l| l.starts_with("invalid configuration: ")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `scheduler --list`: each periodic job's schedule, written as a usual five-field cron line
/// and read in SCHEDULER_TIMEZONE, with its next three runs; a job switched off says so.
#[test]
fn the_scheduler_lists_five_field_schedules_in_their_time_zone() {
    let env: HashMap<String, String> = [
        ("SCHEDULE_PRUNE_JOBS", "0 3 * * *"),
        ("SCHEDULE_DELETION_REMINDERS", "off"),
        ("SCHEDULER_TIMEZONE", "America/New_York"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (code, out, err) = run(SCHEDULER, &["--list"], &env);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let prune = lines
        .iter()
        .position(|l| *l == "prune_jobs: 0 3 * * * (America/New_York)")
        .unwrap_or_else(|| panic!("{out}"));
    for run in &lines[prune + 1..prune + 4] {
        // 03:00 in New York is 07:00 or 08:00 UTC, with summer time or without.
        let (local, utc) = run.trim().split_once("  (").unwrap();
        assert!(local.contains(" 03:00:00 E"), "{run}");
        assert!(
            utc.contains(" 07:00:00 UTC") || utc.contains(" 08:00:00 UTC"),
            "{run}"
        );
    }
    assert!(lines.contains(&"send_deletion_reminders: off"), "{out}");
    // A schedule that is not cron stops it with the setting's name.
    let mut bad = env.clone();
    bad.insert("SCHEDULE_PRUNE_JOBS".into(), "0 3 * *".into());
    let (code, _, err) = run(SCHEDULER, &["--list"], &bad);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("invalid configuration: SCHEDULE_PRUNE_JOBS:"),
        "{err}"
    );
}

/// `admin` logs to stderr, so what it prints on stdout stays machine-readable.
#[test]
fn admin_logs_go_to_stderr() {
    let dir = std::env::temp_dir().join(format!("keel-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let env: HashMap<String, String> = [
        (
            "DATABASE_URL".to_string(),
            format!("sqlite://{}?mode=rwc", dir.join("l.db").display()),
        ),
        ("LOG_LEVEL".to_string(), "info".to_string()),
        ("LOG_FORMAT".to_string(), "json".to_string()),
    ]
    .into();
    let (code, out, err) = run(ADMIN, &["migrate"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.lines().all(|l| l.starts_with("applied ")),
        "stdout holds the report alone: {out}"
    );
    // sea-orm-migration logs each migration it applies, as a JSON line on stderr.
    let logged: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logged.iter().any(|l| l["message"]
            .as_str()
            .unwrap_or("")
            .contains("m20261129_000001_accounts")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An SMTP server that does not answer shows in the health report and the metrics, and the
/// instance stays ready: mails wait in their jobs, retried, while everything else is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_degrades_health_but_not_readiness() {
    let app = common::TestApp::start(Backend::Sqlite).await;
    let health: serde_json::Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["checks"]["smtp"]["status"], "healthy", "{health}");

    let closed = free_port().to_string();
    let app = common::TestApp::start_with(Backend::Sqlite, &[("SMTP_PORT", &closed)]).await;
    app.wait_ready().await;
    let health: serde_json::Value = app.get("/system/health", None).await.json().await.unwrap();
    assert_eq!(health["checks"]["smtp"]["status"], "unhealthy", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(app.get("/system/health/ready", None).await.status(), 200);
    assert!(
        app.metrics()
            .await
            .contains("keel_dependency_up{dependency=\"smtp\"} 0"),
        "the outage shows in the metrics"
    );
}
