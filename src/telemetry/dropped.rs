//! The spans that never reach the collector, counted in `keel_trace_spans_dropped_total`: the
//! SDK's batch processor keeps its drop count to itself, so its queue is bounded here, in front
//! of it, and its exports are watched.
//!
//! `Bounded` counts the spans handed on and not yet taken for export; at `OTEL_BSP_MAX_QUEUE_SIZE`
//! (default 2048) a finished span is dropped (`queue_full`) instead of waiting: ending a span
//! never blocks a request. Because that count is never below what the processor's own queue
//! holds, the processor never drops one itself, and every drop is counted. `Counted` takes a
//! batch off the count as its export starts, and counts its spans `export_failed` when the
//! collector does not take them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor},
};

/// The SDK's default queue size, when `OTEL_BSP_MAX_QUEUE_SIZE` says nothing.
const DEFAULT_QUEUE: usize = 2048;

/// A batch processor exporting through `exporter`, its drops counted.
pub(super) fn processor<E: SpanExporter + 'static>(exporter: E) -> Bounded {
    let capacity = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let exporter = Counted {
        inner: exporter,
        queued: queued.clone(),
    };
    // The rest of the batch settings (delay, batch size, timeout) from the environment.
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(capacity)
        .build();
    Bounded {
        inner: BatchSpanProcessor::builder(exporter)
            .with_batch_config(config)
            .build(),
        queued,
        capacity,
    }
}

fn dropped(reason: &str, spans: usize) {
    crate::metrics::metrics()
        .spans_dropped
        .with_label_values(&[reason])
        .inc_by(spans as u64);
}

#[derive(Debug)]
pub(super) struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet taken for export.
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            dropped("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        // Out of the queue: room for as many more.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(spans))
            });
        let exported = self.inner.export(batch).await;
        if exported.is_err() {
            dropped("export_failed", spans);
        }
        exported
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
