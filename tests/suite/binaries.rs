//! The four binaries: --help, configuration errors, and the spec printer.

use std::process::Command;

const BINARIES: [&str; 4] = [
    env!("CARGO_BIN_EXE_server"),
    env!("CARGO_BIN_EXE_worker"),
    env!("CARGO_BIN_EXE_scheduler"),
    env!("CARGO_BIN_EXE_admin"),
];

#[test]
fn every_binary_has_help() {
    for bin in BINARIES {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success(), "{bin} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage"), "{bin}: {text}");
        assert!(
            text.contains("Exit codes"),
            "{bin} documents its exit codes: {text}"
        );
    }
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line() {
    for bin in BINARIES {
        let mut cmd = Command::new(bin);
        if bin.ends_with("admin") {
            cmd.arg("migrate");
        }
        let out = cmd
            .env("PORT", "eighty")
            .env("DATABASE_URL", "sqlite::memory:")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{bin}: {stderr}");
        assert!(stderr.contains("PORT"), "{bin}: {stderr}");
    }
}

#[test]
fn production_refuses_the_default_secret() {
    let out = Command::new(BINARIES[0])
        .env("ENVIRONMENT", "production")
        .env_remove("SECRET_KEY")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SECRET_KEY"));
}

#[test]
fn a_first_superuser_that_breaks_the_account_rules_stops_start_up() {
    for (var, value, expect) in [
        (
            "FIRST_SUPERUSER_USERNAME",
            "admin",
            "FIRST_SUPERUSER_USERNAME",
        ),
        (
            "FIRST_SUPERUSER_PASSWORD",
            "password",
            "FIRST_SUPERUSER_PASSWORD",
        ),
        (
            "FIRST_SUPERUSER_EMAIL",
            "not-an-address",
            "FIRST_SUPERUSER_EMAIL",
        ),
    ] {
        let out = Command::new(BINARIES[0])
            .env("DATABASE_URL", "sqlite::memory:")
            .env("FIRST_SUPERUSER_EMAIL", "root@example.com")
            .env("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!")
            .env(var, value)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{var}={value}: {stderr}");
        assert!(
            stderr.starts_with(&format!("invalid configuration: {expect}:")),
            "{var}={value}: {stderr}"
        );
    }
}

#[test]
fn server_prints_the_spec() {
    let out = Command::new(BINARIES[0]).arg("openapi").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        keel::http::api::default_spec_json()
    );
}

#[test]
fn admin_migrate_applies_migrations() {
    let dir = std::env::temp_dir().join(format!("keel-admin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("m.db").display());
    let out = Command::new(BINARIES[3])
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied"));
    // Running it again finds nothing to do.
    let out = Command::new(BINARIES[3])
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}

#[test]
fn admin_names_an_unreachable_database_without_its_password() {
    let out = Command::new(BINARIES[3])
        .arg("migrate")
        .env("DATABASE_URL", "postgres://keel:hunter2@127.0.0.1:1/keel")
        .env("DATABASE_CONNECT_TIMEOUT_SECONDS", "2")
        .env("DATABASE_ACQUIRE_TIMEOUT_SECONDS", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_and_exits_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = std::env::temp_dir().join(format!("keel-shutdown-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(BINARIES[0])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("s.db").display()),
        )
        .env("PORT", port.to_string())
        .env("SHUTDOWN_TIMEOUT", "20")
        .env("LOG_LEVEL", "warn")
        .current_dir(&dir)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut stream = stream.expect("server did not start");
    // A request whose body trickles in: it is in flight when SIGTERM arrives.
    stream
        .write_all(b"POST /auth/forgot-password HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{\"ema\r\n")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let rest = "il\": \"slow@example.com\"}";
    stream
        .write_all(format!("{:x}\r\n{rest}\r\n0\r\n\r\n", rest.len()).as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    // No new connections once stopping; the process then exits cleanly.
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

/// The server answers liveness probes as soon as it listens, while its database checks run:
/// readiness says it is starting, other requests wait for the checks, and a database that never
/// answers stops the server (exit 1) with where it was, never the password.
#[tokio::test]
async fn the_server_is_live_at_once_and_ready_only_once_its_database_is_checked() {
    // A database that takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let db_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let port = crate::common::free_port();
    let started = std::time::Instant::now();
    let server = Command::new(BINARIES[0])
        .env(
            "DATABASE_URL",
            format!("postgres://keel:hunter2@127.0.0.1:{db_port}/keel"),
        )
        .env("DATABASE_CONNECT_TIMEOUT_SECONDS", "4")
        .env("PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = keel::net::http_client().build().unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let live = loop {
        if let Ok(resp) = client.get(url("/system/health/live")).send().await {
            break resp;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "no answer"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(live.status(), 200);
    let ready = client
        .get(url("/system/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["code"], "not_ready");
    assert!(
        body["detail"].as_str().unwrap().starts_with("starting"),
        "{body}"
    );
    // An API request waits for the checks, and learns that they failed.
    let waiting = client.get(url("/users/me")).send().await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    assert_eq!(waiting.status(), 503);
    let body: serde_json::Value = waiting.json().await.unwrap();
    assert_eq!(body["code"], "not_ready", "{body}");
    let out = tokio::task::spawn_blocking(move || server.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot connect to the database at 127.0.0.1:{db_port}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    held.abort();
}

/// A database behind this build's schema: the server refuses it and exits 1 (with
/// `AUTO_MIGRATE=false`; `admin migrate` would bring it up to date).
#[test]
fn the_server_refuses_a_database_with_pending_migrations() {
    let dir = std::env::temp_dir().join(format!("keel-pending-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(BINARIES[0])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("p.db").display()),
        )
        .env("AUTO_MIGRATE", "false")
        // It waits this long for someone else to apply them, then gives up.
        .env("SCHEMA_WAIT_SECONDS", "1")
        .env("PORT", crate::common::free_port().to_string())
        .env("LOG_LEVEL", "warn")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("migration(s) pending"), "{stderr}");
    assert!(stderr.contains("admin migrate"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
