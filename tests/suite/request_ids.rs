//! The request a job comes from: the `X-Request-Id` of the request that submitted it is stored
//! with the job, shown by its status, and carried by the worker's log lines about it, so a
//! worker's line ties back to the server's line of that request; the job's message carries it
//! in its headers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{self, Backend, TestApp};

/// The JSON log lines of a file a process wrote, parsed.
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_request_id_reaches_its_status_and_the_workers_logs() {
    let queue = common::unique_queue();
    let mut overrides = common::rabbit_overrides(&queue);
    overrides.push(("FIRST_SUPERUSER_EMAIL".into(), "root@example.com".into()));
    overrides.push(("FIRST_SUPERUSER_PASSWORD".into(), "SuperSecret123!".into()));
    let pairs: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = TestApp::start_with(Backend::Postgres, &pairs).await;
    let token = app
        .login("root@example.com", "SuperSecret123!")
        .await
        .access;

    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());
    let resp = app
        .client
        .post(app.url("/system/background-tasks/test-task"))
        .bearer_auth(&token)
        .header("x-request-id", &request_id)
        .json(&json!({"message": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-request-id"], request_id.as_str());
    let id = resp.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The message waiting in the broker names the request in its headers (and is put back).
    let conn = lapin::Connection::connect(
        &common::rabbitmq_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    // Until the server's relay has declared the queue, asking for it closes the channel.
    let (_channel, message) =
        common::eventually(Duration::from_secs(10), "the published message", || async {
            let channel = conn.create_channel().await.ok()?;
            let message = channel
                .basic_get(
                    format!("{queue}.default").as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: false },
                )
                .await
                .ok()??;
            Some((channel, message))
        })
        .await;
    assert_eq!(
        String::from_utf8(message.delivery.data.clone()).unwrap(),
        id
    );
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .expect("the message has headers");
    assert_eq!(
        headers.inner().get("x-request-id"),
        Some(&lapin::types::AMQPValue::LongString(
            request_id.as_str().into()
        )),
        "{headers:?}"
    );
    // No traces are exported here, and the request carried none: no trace context is made up.
    assert!(headers.inner().get("traceparent").is_none(), "{headers:?}");
    message
        .delivery
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    conn.close(200, "done".into()).await.unwrap();

    let log = std::env::temp_dir().join(format!("keel-worker-{id}.log"));
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .envs(&app.env)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .current_dir(std::env::temp_dir())
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let path = format!("/system/background-tasks/task-status/{id}");
    let mut status = Value::Null;
    for _ in 0..300 {
        status = app.get(&path, Some(&token)).await.json().await.unwrap();
        if status["status"] == "SUCCESS" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["status"], "SUCCESS", "{status}");
    assert_eq!(status["request_id"], request_id.as_str(), "{status}");

    // The worker's line about the finished job carries the job and the request, at the top
    // level (its own fields) and in its span.
    let mut finished = None;
    for _ in 0..50 {
        finished = json_lines(&log)
            .into_iter()
            .find(|l| l["message"] == "job finished" && l["job_id"] == id.as_str());
        if finished.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let finished = finished.unwrap_or_else(|| {
        panic!(
            "no `job finished` line for {id}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(
        finished["span"]["request_id"],
        request_id.as_str(),
        "{finished}"
    );
    assert_eq!(finished["span"]["job_id"], id.as_str(), "{finished}");
    assert_eq!(finished["span"]["queue"], "default", "{finished}");
    // And at the top of the line, to search for.
    assert_eq!(finished["request_id"], request_id.as_str(), "{finished}");
    let _ = std::fs::remove_file(&log);

    // A request without an `X-Request-Id` of its own gets one from the server, and the jobs it
    // queues (here the reset mail) carry that one.
    let resp = app
        .client
        .post(app.url("/auth/forgot-password"))
        .json(&json!({"email": "root@example.com"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let request = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let rows = app
        .state
        .jobs
        .recent(None, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.name == "send_email")
        .expect("the reset mail's job");
    assert_eq!(rows.request_id.as_deref(), Some(request.as_str()));
    app.stop().await;
    common::delete_queues(&queue).await;
}
