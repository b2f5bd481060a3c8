//! OpenTelemetry, configured the standard way: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are batched and exported over OTLP/HTTP
//! (protobuf) from a thread of their own, never on a request's path; `OTEL_SERVICE_NAME`
//! (default `keel-<process>`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` are the SDK's own, as are `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_TIMEOUT`;
//! spans the collector never gets are counted (`dropped`). Unset, nothing is installed: no
//! layer, no cost.
//! W3C trace context (`traceparent`, `tracestate`) carries a trace into the server and, through
//! the job row, from a request to its jobs.

use std::{
    collections::HashMap,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether this process exports traces: until then, no trace context is read or written.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The tracer of the installed provider, for the spans made after the fact (database queries).
static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracer> = OnceLock::new();

/// Whether this process exports traces.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Whether the environment asks for traces.
pub fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
        && std::env::var("OTEL_SDK_DISABLED").map_or(true, |v| !v.eq_ignore_ascii_case("true"))
}

/// The tracer provider for `service` (the default `service.name`), exporting over OTLP/HTTP;
/// `None` when the environment does not ask for traces or the exporter cannot be built (said
/// on stderr: logging is not set up yet).
pub fn provider(service: &str) -> Option<SdkTracerProvider> {
    if !configured() {
        return None;
    }
    let client = ReqwestClient::new()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client)
        .build();
    let exporter = match exporter {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OpenTelemetry is off: the OTLP exporter cannot be built: {e}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name(service.to_string());
    }
    resource = resource.with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        crate::VERSION,
    ));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(super::dropped::processor(exporter))
        .with_resource(resource.build())
        .build();
    let _ = TRACER.set(provider.tracer("keel"));
    INSTALLED.store(true, Ordering::Release);
    Some(provider)
}

/// Records a database query that just ended as a client span, a child of the current span:
/// for sea-orm's metric callback, which hears of each statement once it has run (its
/// duration, text and failure). Queries outside a traced request or job (the relay's and the
/// workers' polling) make no span.
pub fn record_query(info: &sea_orm::metric::Info<'_>) {
    use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
    let Some(tracer) = TRACER.get() else {
        return;
    };
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_valid() {
        return;
    }
    let end = SystemTime::now();
    let start = end.checked_sub(info.elapsed).unwrap_or(end);
    let sql = info.statement.sql.as_str();
    let operation = sql
        .split_whitespace()
        .next()
        .unwrap_or("query")
        .to_ascii_uppercase();
    let system = match info.statement.db_backend {
        sea_orm::DbBackend::Postgres => "postgresql",
        sea_orm::DbBackend::Sqlite => "sqlite",
        _ => "other_sql",
    };
    // Statements hold placeholders, never values; a very long one (a batch) is cut.
    let mut text = sql;
    if text.len() > 2048 {
        let mut cut = 2048;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text = &text[..cut];
    }
    let mut span = tracer
        .span_builder(operation.clone())
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes([
            opentelemetry::KeyValue::new("db.system.name", system),
            opentelemetry::KeyValue::new("db.operation.name", operation),
            opentelemetry::KeyValue::new("db.query.text", text.to_string()),
        ])
        .start_with_context(tracer, &parent);
    if info.failed {
        span.set_status(Status::error("the statement failed"));
    }
    span.end_with_timestamp(end);
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("keel"))
}

/// Makes the trace context in `headers` (`traceparent`, `tracestate`) the parent of `span`.
pub fn continue_from(span: &tracing::Span, headers: &poem::http::HeaderMap) {
    if !INSTALLED.load(Ordering::Acquire) {
        return;
    }
    struct Headers<'a>(&'a poem::http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

/// The current span's trace context as a `traceparent` value (with `tracestate` after a
/// newline when there is one); `None` outside a sampled trace.
pub fn current_context() -> Option<String> {
    let mut fields = headers_of(&tracing::Span::current()).into_iter();
    let (_, parent) = fields.next()?;
    Some(stored(parent, fields.next().map(|(_, state)| state)))
}

/// A `traceparent` and its `tracestate` as the jobs table stores them: the state, when there is
/// one, after a newline.
pub fn stored(parent: String, state: Option<String>) -> String {
    match state {
        Some(state) => format!("{parent}\n{state}"),
        None => parent,
    }
}

/// `span`'s trace context as W3C headers: `traceparent`, then `tracestate` when there is one;
/// none outside a sampled trace, or while this process exports no traces.
pub fn headers_of(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if !INSTALLED.load(Ordering::Acquire) {
        return Vec::new();
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    struct Fields<'a>(&'a mut HashMap<String, String>);
    impl Injector for Fields<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut Fields(&mut fields));
    let Some(parent) = fields.remove("traceparent") else {
        return Vec::new();
    };
    let mut headers = vec![("traceparent", parent)];
    if let Some(state) = fields.remove("tracestate").filter(|s| !s.is_empty()) {
        headers.push(("tracestate", state));
    }
    headers
}

/// A stored trace context (`current_context`'s) as W3C headers.
pub fn stored_headers(stored: &str) -> Vec<(&'static str, String)> {
    let (parent, state) = stored.split_once('\n').unwrap_or((stored, ""));
    [("traceparent", parent), ("tracestate", state)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// Makes a stored trace context (`current_context`'s) the parent of `span`.
pub fn continue_stored(span: &tracing::Span, stored: &str) {
    let mut headers = poem::http::HeaderMap::new();
    for (name, value) in stored_headers(stored) {
        if let Ok(v) = poem::http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    continue_from(span, &headers);
}

/// How long one export may take (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, then
/// `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds; 10 s), as the exporter reads it.
fn export_timeout() -> std::time::Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
    .map_or(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis,
    )
}

/// OTLP's HTTP client: our reqwest, its requests run on the runtime the process started the
/// exporter from (the batch exporter's own thread has none).
#[derive(Debug)]
struct ReqwestClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ReqwestClient {
    fn new() -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let client = crate::net::http_client()
            .timeout(export_timeout())
            .build()
            .ok()?;
        Some(Self { client, runtime })
    }
}

#[async_trait::async_trait]
impl HttpClient for ReqwestClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let mut req = client
                .request(parts.method, parts.uri.to_string())
                .body(body);
            for (name, value) in &parts.headers {
                req = req.header(name, value);
            }
            let resp = req.send().await?;
            let status = resp.status();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        });
        let (status, bytes) = sent.await??;
        let mut response = Response::new(bytes);
        *response.status_mut() = status;
        Ok(response)
    }
}
