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
fn server_prints_the_spec() {
    let out = Command::new(BINARIES[0]).arg("openapi").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        keel::api::default_spec_json()
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
