//! Prometheus metrics: one process-wide registry, filled by the HTTP middleware and the job
//! runner, and rendered at `GET /metrics` (the worker serves its own on `WORKER_METRICS_ADDR`),
//! with the process's own figures (`process_*`) and `keel_build_info`.

mod process;

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Readings taken at scrape time from outside this module (the jobs table, the pool).
#[derive(Debug, Default)]
pub struct Gauges {
    /// Jobs waiting or running, by queue and state name, every series there is (one left out
    /// is gone); `None` (the database did not answer) keeps the last values.
    pub queue_depth: Option<Vec<(String, &'static str, u64)>>,
    pub pool_size: u32,
    pub pool_idle: usize,
}

pub struct Metrics {
    registry: Registry,
    /// The process's own figures, under their usual unprefixed names (`process_*`).
    process: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub jobs: IntCounterVec,
    pub job_duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub db_pool: IntGaugeVec,
    /// Cache lookups by result: hit, miss, bypass (cache unavailable).
    pub cache: IntCounterVec,
    pub rate_limited: IntCounterVec,
    /// Key sets fetched from each OpenID Connect provider.
    pub oidc_key_fetches: IntCounterVec,
    pub ws_connections: prometheus::IntGauge,
    pub ws_messages: IntCounterVec,
    /// 1 while a dependency answers, 0 while it does not; absent while it is switched off.
    pub dependency_up: IntGaugeVec,
    /// Finished spans that never reached the trace collector, by reason.
    pub spans_dropped: IntCounterVec,
    /// Deliveries a worker settled with the broker, by how (ack, dead_letter, requeue).
    pub job_settlements: IntCounterVec,
    /// The frames those settlements took: a multiple acknowledgement settles many.
    pub job_settlement_frames: prometheus::IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("keel".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method, route and status",
            ),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let jobs = IntCounterVec::new(
            Opts::new("jobs_total", "Jobs run by name and outcome"),
            &["name", "outcome"],
        )?;
        let job_duration = HistogramVec::new(
            HistogramOpts::new("job_duration_seconds", "Job run time")
                .buckets(JOB_BUCKETS.to_vec()),
            &["name"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "jobs_queue_depth",
                "Jobs waiting or running, by queue and status",
            ),
            &["queue", "status"],
        )?;
        let db_pool = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state"),
            &["state"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new("cache_requests_total", "Cache lookups by cache and result"),
            &["cache", "result"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "rate_limit_rejections_total",
                "Requests refused with 429, by limit",
            ),
            &["limit"],
        )?;
        let oidc_key_fetches = IntCounterVec::new(
            Opts::new(
                "oidc_key_set_fetches_total",
                "Signing key sets fetched from OpenID Connect providers, by provider",
            ),
            &["provider"],
        )?;
        let ws_connections = prometheus::IntGauge::new(
            "websocket_connections",
            "Open WebSocket connections on this instance",
        )?;
        let ws_messages = IntCounterVec::new(
            Opts::new(
                "websocket_messages_total",
                "WebSocket messages by direction (in, out, dropped)",
            ),
            &["direction"],
        )?;
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "dependency_up",
                "1 while a dependency (database, redis, rabbitmq, smtp, worker, websockets) is healthy, 0 while it is not",
            ),
            &["dependency"],
        )?;
        let spans_dropped = IntCounterVec::new(
            Opts::new(
                "trace_spans_dropped_total",
                "Finished spans never exported, by reason (queue_full: the export queue was full; export_failed: the collector did not take them)",
            ),
            &["reason"],
        )?;
        let job_settlements = IntCounterVec::new(
            Opts::new(
                "job_settlements_total",
                "Job messages a worker settled with the broker, by how (ack, dead_letter, requeue)",
            ),
            &["settlement"],
        )?;
        let job_settlement_frames = prometheus::IntCounter::new(
            "job_settlement_frames_total",
            "Frames that settled job messages: one multiple acknowledgement settles many",
        )?;
        registry.register(Box::new(job_settlements.clone()))?;
        registry.register(Box::new(job_settlement_frames.clone()))?;
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new("build_info", "Always 1, labelled with the running version"),
            &["version"],
        )?;
        build_info.with_label_values(&[crate::VERSION]).set(1);
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(spans_dropped.clone()))?;
        registry.register(Box::new(dependency_up.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(oidc_key_fetches.clone()))?;
        registry.register(Box::new(ws_connections.clone()))?;
        registry.register(Box::new(ws_messages.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(job_duration.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(db_pool.clone()))?;
        let process = Registry::new();
        process.register(Box::new(process::ProcessCollector::new()))?;
        Ok(Self {
            registry,
            process,
            http_requests,
            http_duration,
            jobs,
            job_duration,
            queue_depth,
            db_pool,
            cache,
            rate_limited,
            oidc_key_fetches,
            ws_connections,
            ws_messages,
            dependency_up,
            spans_dropped,
            job_settlements,
            job_settlement_frames,
        })
    }

    /// Records one finished HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// Records one finished job run.
    pub fn observe_job(&self, name: &str, outcome: &str, seconds: f64) {
        self.jobs.with_label_values(&[name, outcome]).inc();
        self.job_duration
            .with_label_values(&[name])
            .observe(seconds);
    }

    /// Records a dependency's health check: `healthy` is up, `unhealthy` down, anything else
    /// (`disabled`, `in-process`) is not a dependency of this process.
    pub fn set_dependency(&self, name: &str, status: &str) {
        match status {
            "healthy" => self.dependency_up.with_label_values(&[name]).set(1),
            "unhealthy" => self.dependency_up.with_label_values(&[name]).set(0),
            _ => {
                let _ = self.dependency_up.remove_label_values(&[name]);
            }
        }
    }

    /// Sets the gauges read at scrape time, then renders the text format.
    pub fn render(&self, gauges: Gauges) -> String {
        if let Some(depth) = gauges.queue_depth {
            self.queue_depth.reset();
            for (queue, status, n) in depth {
                self.queue_depth
                    .with_label_values(&[queue.as_str(), status])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let idle = i64::try_from(gauges.pool_idle).unwrap_or(0);
        self.db_pool.with_label_values(&["idle"]).set(idle);
        self.db_pool
            .with_label_values(&["in_use"])
            .set(i64::from(gauges.pool_size) - idle);
        let mut out = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new().expect("metric names are valid"))
}

/// The route label for a request path: ids folded into `{id}`, and every unknown path into one
/// label, so that scanners cannot grow the series without bound.
pub fn route_label(path: &str, prefix: &str, unmatched: bool) -> String {
    if unmatched {
        return "unmatched".into();
    }
    let path = path.strip_prefix(prefix).unwrap_or(path);
    let folded: Vec<&str> = path
        .split('/')
        .map(|seg| {
            let id_like = uuid::Uuid::parse_str(seg).is_ok()
                || (!seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()));
            if id_like { "{id}" } else { seg }
        })
        .collect();
    let route = folded.join("/");
    if route.is_empty() { "/".into() } else { route }
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn routes_fold_ids_and_unknown_paths() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            route_label(&format!("/auth/sessions/{id}"), "", false),
            "/auth/sessions/{id}"
        );
        assert_eq!(route_label("/api/users/me", "/api", false), "/users/me");
        assert_eq!(route_label("/wp-admin/x.php", "", true), "unmatched");
        assert_eq!(route_label("/", "", false), "/");
    }
}
