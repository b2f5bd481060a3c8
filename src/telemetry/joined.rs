//! JSON log lines that join: each line written inside a request or a job carries, at its top
//! level, the `request_id` and `job_id` of the spans around it and, when OpenTelemetry is on,
//! the `trace_id` and `span_id` of the current span, so a line finds its trace and the other
//! process's lines about the same request.

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// The span fields copied to the top of a line, innermost span first.
const JOINED: [&str; 2] = ["request_id", "job_id"];

/// Wraps tracing-subscriber's JSON format (with the span list on): the line it writes, with
/// the joining fields added at its top.
pub struct Joined<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Joined<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(line.trim_end()) else {
            return writer.write_str(&line);
        };
        join(&mut fields);
        let Ok(joined) = serde_json::to_string(&fields) else {
            return writer.write_str(&line);
        };
        writeln!(writer, "{joined}")
    }
}

/// Adds the joining fields to one line's fields.
fn join(fields: &mut Map<String, Value>) {
    let spans = fields.remove("spans");
    for name in JOINED {
        if fields.contains_key(name) {
            continue;
        }
        let found = spans
            .iter()
            .filter_map(Value::as_array)
            .flat_map(|list| list.iter().rev())
            .find_map(|span| span.get(name).filter(|v| !v.is_null() && *v != ""));
        if let Some(value) = found {
            fields.insert(name.to_string(), value.clone());
        }
    }
    // A line inside a request whose span is off (traces off, logs above INFO).
    if !fields.contains_key("request_id")
        && let Some(request) = super::current_request_id()
    {
        fields.insert("request_id".into(), request.into());
    }
    if !super::otel::installed() {
        return;
    }
    let context = tracing::Span::current().context();
    let span = opentelemetry::trace::TraceContextExt::span(&context);
    let ids = span.span_context();
    if ids.is_valid() {
        fields.insert("trace_id".into(), ids.trace_id().to_string().into());
        fields.insert("span_id".into(), ids.span_id().to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_span_wins_and_empty_values_are_skipped() {
        let mut fields = serde_json::json!({
            "message": "job finished",
            "spans": [
                {"name": "http.request", "request_id": "outer"},
                {"name": "job", "job_id": "j-1", "request_id": ""},
            ],
        })
        .as_object()
        .unwrap()
        .clone();
        join(&mut fields);
        assert_eq!(fields["request_id"], "outer");
        assert_eq!(fields["job_id"], "j-1");
        assert!(!fields.contains_key("spans") && !fields.contains_key("trace_id"));
    }
}
