//! Traces over OTLP/HTTP: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the server and the worker
//! export their spans, and one trace runs from the caller's `traceparent` through the request,
//! the job (through the jobs table and RabbitMQ) to the mail it sends, its database
//! statements and Redis commands spans of their own. The collector is a
//! receiver written here, decoding the protobuf requests.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as Any,
};
use poem::{Route, Server, listener::TcpListener, post};
use prost::Message as _;
use serde_json::{Value, json};

use crate::common::{self, Backend, KeelProcess};

/// One exported span: the service that sent it, its name, ids (hex) and attributes.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Exported>>>;

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// An OTLP/HTTP receiver on a free port; answers its address and what it received.
async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let port = common::free_port();
    let kept = spans.clone();
    let route = Route::new().at(
        "/v1/traces",
        post(poem::endpoint::make(move |req: poem::Request| {
            let kept = kept.clone();
            async move {
                let bytes = req.into_body().into_bytes().await.unwrap_or_default();
                let export = ExportTraceServiceRequest::decode(bytes.as_ref())
                    .expect("an OTLP protobuf export");
                let mut got = kept.lock().unwrap();
                for resource in export.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| text(a.value.as_ref()))
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        got.push(Exported {
                            service: service.clone(),
                            name: span.name,
                            trace_id: hex::encode(span.trace_id),
                            span_id: hex::encode(span.span_id),
                            parent: hex::encode(span.parent_span_id),
                            attributes: span
                                .attributes
                                .iter()
                                .map(|a| (a.key.clone(), text(a.value.as_ref())))
                                .collect(),
                        });
                    }
                }
                poem::Response::builder()
                    .content_type("application/x-protobuf")
                    .body(Vec::<u8>::new())
            }
        })),
    );
    tokio::spawn(Server::new(TcpListener::bind(format!("127.0.0.1:{port}"))).run(route));
    (format!("http://127.0.0.1:{port}"), spans)
}

/// Waits until `found` picks what it needs out of the received spans.
async fn until<T>(spans: &Spans, what: &str, found: impl Fn(&[Exported]) -> Option<T>) -> T {
    for _ in 0..150 {
        if let Some(t) = found(&spans.lock().unwrap()) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {:#?}", spans.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_request_through_the_job_to_the_mail() {
    let (endpoint, spans) = receiver().await;
    let queue = common::unique_queue();
    let mut env = common::base_settings(&common::fresh_database_url(Backend::Postgres).await);
    env.extend(common::rabbit_overrides(&queue));
    // Redis for the sign-in's rate limit, whose command is a span of the request.
    env.extend(common::redis_overrides());
    env.insert("ENABLE_RATE_LIMITING".into(), "true".into());
    let port = common::free_port();
    for (k, v) in [
        ("PORT", port.to_string()),
        ("FIRST_SUPERUSER_EMAIL", "root@example.com".into()),
        ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        // Export every 100 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ] {
        env.insert(k.to_string(), v);
    }
    // JSON logs to files, to find the lines about the traced request.
    let logs = std::env::temp_dir().join(format!("keel-traces-{queue}"));
    std::fs::create_dir_all(&logs).unwrap();
    let spawn = |bin: &str, log: &str| {
        std::process::Command::new(bin)
            .envs(&env)
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "info")
            .current_dir(std::env::temp_dir())
            .stdout(std::fs::File::create(logs.join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let _server = KeelProcess {
        child: spawn(env!("CARGO_BIN_EXE_server"), "server.log"),
    };
    let _worker = KeelProcess {
        child: spawn(env!("CARGO_BIN_EXE_worker"), "worker.log"),
    };
    let client = keel::net::http_client().build().unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client.get(url("/system/health/ready")).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the server did not start");
    let login: Value = client
        .post(url("/auth/login"))
        .form(&[
            ("username", "root@example.com"),
            ("password", "SuperSecret123!"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_string();

    let trace = hex::encode(uuid::Uuid::new_v4().as_bytes());
    let caller_span = &hex::encode(uuid::Uuid::new_v4().as_bytes())[..16];
    let to = format!("traced-{}@example.com", uuid::Uuid::new_v4().simple());
    let resp = client
        .post(url("/system/background-tasks/send-email"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .json(&json!({"to": to, "subject": "Traced", "body": "from one trace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let task = resp.json::<Value>().await.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    common::mail::wait_for_messages(&to, "Traced", 1).await;
    // The task's status names its trace.
    let status: Value = client
        .get(url(&format!("/system/background-tasks/task-status/{task}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["trace_id"], trace.as_str(), "{status}");

    // The server's span for the request is the caller's child.
    let request = until(&spans, "the request span", |all| {
        all.iter()
            .find(|s| s.service == "keel-server" && s.trace_id == trace && s.parent == caller_span)
            .cloned()
    })
    .await;
    assert_eq!(
        request.name, "POST /system/background-tasks/send-email",
        "{request:?}"
    );
    assert_eq!(request.attributes["http.response.status_code"], "202");
    assert_eq!(
        request.attributes["http.route"],
        "/system/background-tasks/send-email"
    );
    // The request's statements are spans of their own, inside it: the job's row among them.
    let system = |s: &Exported| {
        s.attributes
            .get("db.system.name")
            .cloned()
            .unwrap_or_default()
    };
    let insert = until(&spans, "the job row's INSERT span", |all| {
        all.iter()
            .find(|s| {
                s.parent == request.span_id
                    && system(s) == "postgresql"
                    && s.name == "INSERT"
                    && s.attributes["db.query.text"].contains("\"jobs\"")
            })
            .cloned()
    })
    .await;
    assert_eq!(insert.trace_id, trace);
    assert_eq!(insert.attributes["db.operation.name"], "INSERT");
    // The sign-in's rate limit asked Redis, within the sign-in's span.
    let login = until(&spans, "the sign-in's span", |all| {
        all.iter()
            .find(|s| s.service == "keel-server" && s.name == "POST /auth/login")
            .cloned()
    })
    .await;
    let command = until(&spans, "the rate limit's Redis span", |all| {
        all.iter()
            .find(|s| s.parent == login.span_id && system(s) == "redis")
            .cloned()
    })
    .await;
    assert_eq!(command.name, "EVALSHA", "{command:?}");
    assert_eq!(command.trace_id, login.trace_id);

    // The worker's job span and its mail span are in the same trace, the job's parent chain
    // reaching the request span.
    let (job, mail, all) = until(&spans, "the job, its parent and the mail spans", |all| {
        let job = all
            .iter()
            .find(|s| s.service == "keel-worker" && s.name == "job" && s.trace_id == trace)?;
        let mail = all
            .iter()
            .find(|s| s.service == "keel-worker" && s.name == "mail.send" && s.trace_id == trace)?;
        // And the job's parent, exported by the server.
        all.iter().find(|s| s.span_id == job.parent)?;
        Some((job.clone(), mail.clone(), all.to_vec()))
    })
    .await;
    assert_eq!(job.attributes["job"], "send_email", "{job:?}");
    assert_eq!(job.attributes["queue"], "email", "{job:?}");
    let by_id: HashMap<&str, &Exported> = all.iter().map(|s| (s.span_id.as_str(), s)).collect();
    // The job's parent is the server's span for publishing its message: the worker continued
    // the trace from the message's `traceparent` header.
    let published = by_id[job.parent.as_str()];
    assert_eq!(published.name, "job.publish", "{published:?}");
    assert_eq!(published.service, "keel-server", "{published:?}");
    assert_eq!(
        published.attributes["messaging.destination.name"],
        format!("{queue}.email"),
        "{published:?}"
    );
    let mut ancestor = job.parent.as_str();
    let mut chain = Vec::new();
    while let Some(span) = by_id.get(ancestor) {
        chain.push(span.name.clone());
        if span.span_id == request.span_id {
            break;
        }
        ancestor = span.parent.as_str();
    }
    assert!(
        chain.contains(&request.name),
        "the job's ancestors {chain:?} do not reach the request span"
    );
    // The mail span is inside the job's attempt.
    let mut ancestor = mail.parent.as_str();
    let mut inside_job = false;
    while let Some(span) = by_id.get(ancestor) {
        if span.span_id == job.span_id {
            inside_job = true;
            break;
        }
        ancestor = span.parent.as_str();
    }
    assert!(inside_job, "{mail:?} is not inside {job:?}");

    // The server's line for the request and the worker's for the job carry the same trace and
    // request ids.
    let lines = |log: &str| -> Vec<Value> {
        std::fs::read_to_string(logs.join(log))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let served = lines("server.log")
        .into_iter()
        .find(|l| l["message"] == "request" && l["trace_id"] == trace.as_str())
        .unwrap_or_else(|| panic!("no server line in trace {trace}: {:?}", lines("server.log")));
    assert_eq!(served["span_id"], request.span_id.as_str(), "{served}");
    assert_eq!(served["path"], "/system/background-tasks/send-email");
    let mut ran = None;
    for _ in 0..50 {
        ran = lines("worker.log")
            .into_iter()
            .find(|l| l["message"] == "job finished" && l["trace_id"] == trace.as_str());
        if ran.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ran =
        ran.unwrap_or_else(|| panic!("no worker line in trace {trace}: {:?}", lines("worker.log")));
    assert_eq!(ran["request_id"], served["request_id"], "{ran} / {served}");
    assert_eq!(ran["span_id"], job.span_id.as_str(), "{ran}");
    assert_eq!(ran["job"], "send_email");
    let _ = std::fs::remove_dir_all(&logs);
    common::delete_queues(&queue).await;
}

/// A collector that takes connections and never answers: every export hangs until its
/// timeout. Meanwhile requests are answered as ever, the spans beyond the export queue are
/// dropped, and both kinds of loss are counted at `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_the_collector_does_not_take_are_dropped_and_counted() {
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", hanging.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            held.push(socket);
        }
    });
    let db = common::fresh_database_url(Backend::Sqlite).await;
    let port = common::free_port();
    let mut env = common::base_settings(&db);
    for (k, v) in [
        ("PORT", port.to_string()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4".into()),
    ] {
        env.insert(k.to_string(), v);
    }
    let _server = KeelProcess::spawn_binary(env!("CARGO_BIN_EXE_server"), &[], &env);
    let client = keel::net::http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    common::eventually(
        Duration::from_secs(20),
        "the server to be ready",
        || async {
            let ready = client.get(url("/system/health/ready")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        },
    )
    .await;
    // More spans than the queue holds while an export hangs: every request is still answered.
    for _ in 0..20 {
        let resp = client.get(url("/system/health/live")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let counted = |text: &str, reason: &str| -> u64 {
        let series = format!("keel_trace_spans_dropped_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let text = common::eventually(
        Duration::from_secs(15),
        "both kinds of drop counted",
        || async {
            let text = client
                .get(url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (counted(&text, "queue_full") > 0 && counted(&text, "export_failed") > 0)
                .then_some(text)
        },
    )
    .await;
    // At most the queue (4) and the hanging export's batch got past the bound: the rest of the
    // twenty were dropped on arrival.
    assert!(counted(&text, "queue_full") >= 10, "{text}");
}

/// An admin command is a trace of its own (`keel-admin`), which the jobs it queues continue:
/// scheduling a deletion queues the notice mail, whose row names the command's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_starts_the_trace_its_jobs_continue() {
    let (endpoint, spans) = receiver().await;
    let app = common::TestApp::start(Backend::Postgres).await;
    let (user, _) = app.signed_in_user().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_admin"))
        .args(["--format", "json", "schedule-deletion", &user.email])
        .envs(&app.env)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The command flushes its spans as it exits.
    let command = until(&spans, "the command's span", |all| {
        all.iter()
            .find(|s| s.service == "keel-admin" && s.name == "admin schedule-deletion")
            .cloned()
    })
    .await;
    assert_eq!(command.parent, "", "a command starts its own trace");
    let notice = app
        .state
        .jobs
        .recent(None, 20)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.name == "send_email" && j.payload["to"] == user.email.as_str())
        .expect("the deletion notice's job");
    assert_eq!(notice.trace_id.as_deref(), Some(command.trace_id.as_str()));
}
