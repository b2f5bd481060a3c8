//! Reads mail captured by the test SMTP server (maildev) through its JSON API.

use std::time::{Duration, Instant};

use serde_json::Value;

pub fn smtp_host() -> String {
    std::env::var("TEST_SMTP_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

pub fn smtp_port() -> u16 {
    std::env::var("TEST_SMTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1025)
}

pub fn api_url() -> String {
    std::env::var("TEST_MAILDEV_URL").unwrap_or_else(|_| "http://127.0.0.1:1080".into())
}

/// Every captured message sent to `to`, oldest first.
pub async fn messages_to(to: &str) -> Vec<Value> {
    let resp = keel::net::http_client()
        .build()
        .unwrap()
        .get(format!("{}/api/email", api_url()))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the mail catcher is not reachable at {}: {e} (run tests/run.sh)",
                api_url()
            )
        });
    let all: Vec<Value> = resp.json().await.expect("maildev JSON");
    all.into_iter()
        .filter(|m| {
            m["to"]
                .as_array()
                .is_some_and(|to_list| to_list.iter().any(|a| a["address"].as_str() == Some(to)))
        })
        .collect()
}

/// Waits until `count` messages to `to` whose subject contains `subject` have arrived.
pub async fn wait_for_messages(to: &str, subject: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found: Vec<Value> = messages_to(to)
            .await
            .into_iter()
            .filter(|m| m["subject"].as_str().is_some_and(|s| s.contains(subject)))
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no mail {subject:?} to {to} arrived (found {})",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The token in the link `<path>?token=...` of a message's text part.
pub fn token_from(message: &Value, path: &str) -> String {
    let text = message["text"].as_str().expect("text part");
    let marker = format!("{path}?token=");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} link in {text}"))
        + marker.len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// Waits for the newest mail with `subject` to `to` and returns the token of its `path` link.
pub async fn wait_for_token(to: &str, subject: &str, path: &str) -> String {
    let messages = wait_for_messages(to, subject, 1).await;
    token_from(messages.last().expect("a message"), path)
}
