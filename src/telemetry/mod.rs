//! Logging and tracing set-up shared by the four binaries (`otel`: OpenTelemetry), and the
//! request a piece of work belongs to.

mod dropped;
mod joined;
pub mod otel;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, Settings};

tokio::task_local! {
    /// The `X-Request-Id` of the request being served, or of the request a running job comes
    /// from: for error bodies, logs, and the jobs submitted meanwhile (they inherit it).
    pub static REQUEST_ID: String;
}

/// The request the current work belongs to, when it belongs to one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID
        .try_with(Clone::clone)
        .ok()
        .filter(|id| !id.is_empty())
}

/// Installs the global subscriber, writing to stdout: `RUST_LOG` wins over `LOG_LEVEL` when
/// both are set. With the OpenTelemetry settings (`otel`), spans are exported too, as
/// `service` unless `OTEL_SERVICE_NAME` says otherwise; keep the answer until the process
/// ends, so the last spans are sent.
pub fn init(settings: &Settings, service: &str) -> Traces {
    let provider = otel::provider(service);
    init_with(settings, std::io::stdout, provider.as_ref());
    Traces(provider)
}

/// The same, writing to stderr: for the CLI, whose stdout is its output.
pub fn init_stderr(settings: &Settings, service: &str) -> Traces {
    let provider = otel::provider(service);
    init_with(settings, std::io::stderr, provider.as_ref());
    Traces(provider)
}

/// The exporting side of tracing: sends what is left when dropped.
pub struct Traces(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("OpenTelemetry: the last spans were not all sent: {e}");
        }
    }
}

fn init_with<W>(
    settings: &Settings,
    writer: W,
    provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The log level filters the log lines only: Keel's spans reach OpenTelemetry at any
    // `LOG_LEVEL`.
    let traced = provider.map(|p| {
        otel::layer(p).with_filter(
            tracing_subscriber::filter::Targets::new().with_target("keel", tracing::Level::INFO),
        )
    });
    let registry = tracing_subscriber::registry().with(traced);
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .event_format(joined::Joined(
                        fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(true),
                    ))
                    .fmt_fields(fmt::format::JsonFields::new())
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .with_target(false)
                    .with_filter(filter),
            )
            .try_init(),
    };
    // A second init (tests start several servers in one process) keeps the first subscriber.
    let _ = result;
}

/// `error: its source: the source's source …`, for the log line of a 500.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        // Some errors repeat their source in their own message; say each part once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not save the account")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(cause_chain(&e), "could not save the account: disk full");
        let plain = std::io::Error::other("alone");
        assert_eq!(cause_chain(&plain), "alone");
    }
}
