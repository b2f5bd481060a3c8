//! Mails and the pages their links open come from template files; an operator replaces any of
//! them from `MAIL_TEMPLATES_DIR` without a rebuild, and a broken one stops the process.

use std::{collections::HashMap, process::Command};

use reqwest::StatusCode;

use crate::common::{Backend, TestApp, TestUser, mail};

/// A directory holding `files`, removed by the caller.
fn templates_dir(files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-templates-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rewords_a_mail_and_rebrands_the_link_pages() {
    let dir = templates_dir(&[
        (
            "verify_email.txt",
            "Subject: Welcome to the club, {{ username }}\n\nOpen {{ link }} within {{ hours }} hours.\n",
        ),
        (
            "verify_email.html",
            "{% extends \"layout.html\" %}{% block body %}<p class=\"club\">{{ username }}: {{ link }}</p>{% endblock %}",
        ),
        (
            "link_page.html",
            "<!doctype html><title>Club · {{ title }}</title><main data-api=\"{{ prefix }}\" data-endpoint=\"{{ endpoint }}\" data-done=\"{{ done }}\">{{ lead }}<button>{{ button }}</button></main>",
        ),
        (
            "page_cancel_deletion.txt",
            "Title: Stay in the club\nButton: Stay\nDone: You stay.\n\nYou have {{ grace_days }} days\n& a <choice>.\n",
        ),
    ]);
    let app = TestApp::start_with(
        Backend::Sqlite,
        &[
            ("MAIL_TEMPLATES_DIR", dir.to_str().unwrap()),
            ("ACCOUNT_DELETION_GRACE_PERIOD_DAYS", "12"),
        ],
    )
    .await;
    let user = TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    let subject = format!("Welcome to the club, {}", user.username);
    let message = mail::wait_for_messages(&user.email, &subject, 1)
        .await
        .remove(0);
    let text = message["text"].as_str().unwrap();
    assert!(
        text.starts_with("Open http://app.test/verify-email?token=")
            && text.contains("within 24 hours"),
        "{text}"
    );
    let html = message["html"].as_str().unwrap();
    assert!(
        html.contains(&format!(
            "<p class=\"club\">{}: http://app.test/verify-email?token=",
            user.username
        )),
        "{html}"
    );
    // The link still works: the token is the one the mail carries.
    let token = mail::token_from(&message, "http://app.test/verify-email");
    let resp = app
        .post_json(
            "/auth/verify-email",
            serde_json::json!({"token": token}),
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Other mails stay as built in.
    mail::wait_for_messages(&user.email, "Welcome to Keel", 1).await;

    let page = app.get("/verify-email", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.starts_with("<!doctype html><title>Club · Verify your email address</title>")
            && page.contains("data-endpoint=\"/auth/verify-email\"")
            && page.contains("<button>Verify my email address</button>"),
        "{page}"
    );
    // A page's wording is its own file, its values escaped in the HTML.
    let page = app
        .get("/cancel-deletion", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.starts_with("<!doctype html><title>Club · Stay in the club</title>")
            && page.contains("data-done=\"You stay.\">You have 12 days &amp; a &lt;choice&gt;.")
            && page.contains("<button>Stay</button>"),
        "{page}"
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broken_template_stops_every_process_naming_its_file() {
    let dir = templates_dir(&[(
        "welcome.html",
        "{% extends \"layout.html\" %}{% block body %}{{ username }{% endblock %}",
    )]);
    let file = dir.join("welcome.html").display().to_string();
    let env: HashMap<&str, &str> = [
        ("MAIL_TEMPLATES_DIR", dir.to_str().unwrap()),
        ("DATABASE_URL", "sqlite::memory:"),
    ]
    .into();
    for bin in [
        env!("CARGO_BIN_EXE_server"),
        env!("CARGO_BIN_EXE_worker"),
        env!("CARGO_BIN_EXE_scheduler"),
    ] {
        let out = Command::new(bin)
            .envs(&env)
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin}: {err}");
        assert!(
            err.starts_with(&format!(
                "invalid configuration: MAIL_TEMPLATES_DIR: mail template {file}:"
            )) && err.contains("line 1"),
            "{bin}: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_admin"))
        .args(["config", "check", "--format", "json"])
        .envs(&env)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["invalid"][0]["name"], "MAIL_TEMPLATES_DIR",
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A link page's wording without its `Title:`, `Button:` and `Done:` lines stops the server at
/// start-up, naming the file.
#[test]
fn a_page_without_its_header_lines_stops_the_server() {
    let dir = templates_dir(&[(
        "page_verify_email.txt",
        "Title: Verify\n\nPress the button.\n",
    )]);
    let file = dir.join("page_verify_email.txt").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_server"))
        .env("MAIL_TEMPLATES_DIR", dir.to_str().unwrap())
        .env("DATABASE_URL", "sqlite::memory:")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "invalid configuration: MAIL_TEMPLATES_DIR: mail template {file}:"
        )) && err.contains("`Title:`, `Button:` and `Done:`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
