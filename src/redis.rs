//! The shared Redis connection (fred): reconnects on its own, and never makes a request wait
//! longer than `REDIS_TIMEOUT_MS`. Every user of Redis treats an error as "Redis is away" and
//! carries on without it (cache bypassed, revocations read from the database, ...).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, EventInterface},
    types::{
        Builder,
        config::{Config, ReconnectPolicy},
    },
};

use crate::config::RedisSettings;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis is not connected")]
    Disconnected,
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Command(#[from] fred::error::Error),
}

/// Whether a "working without Redis" warning may be logged now: at most one every 10 seconds
/// per kind, so an outage under load does not flood the log with the same line.
pub fn should_warn(kind: &AtomicU64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = kind.load(Ordering::Relaxed);
    now >= last + 10
        && kind
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[derive(Clone)]
pub struct Redis {
    client: Client,
    prefix: Arc<str>,
    timeout: Duration,
    builder: Arc<Builder>,
}

fn builder(settings: &RedisSettings) -> Result<Builder, fred::error::Error> {
    let config = Config {
        // Start even when Redis is down; the client keeps reconnecting in the background.
        fail_fast: false,
        ..Config::from_url(&settings.url)?
    };
    let mut builder = Builder::from_config(config);
    let timeout = settings.timeout;
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        .set_policy(reconnect_policy());
    Ok(builder)
}

/// Reconnect forever, backing off from 5 ms to 2 s (5, 10, 20, … ms, each with up to 5 ms of
/// jitter). fred waits the policy's first delay before the very first connection too, so the
/// first delay is what every start-up pays: it was 100–150 ms with a 100 ms floor.
fn reconnect_policy() -> ReconnectPolicy {
    let mut policy = ReconnectPolicy::new_exponential(0, 5, 2_000, 2);
    policy.set_jitter(5);
    policy
}

impl Redis {
    /// Starts connecting and, with `wait`, waits briefly for the first connection (else that
    /// happens in the background); a Redis that is down at start is logged, and picked up once
    /// it comes.
    pub async fn connect(settings: &RedisSettings, wait: bool) -> Result<Self, fred::error::Error> {
        let builder = builder(settings)?;
        let client = builder.build()?;
        client.connect();
        let redis = Self {
            client,
            prefix: settings.key_prefix.clone().into(),
            timeout: settings.timeout,
            builder: Arc::new(builder),
        };
        let first = {
            let (client, url) = (
                redis.client.clone(),
                crate::config::redact_url(&settings.url),
            );
            async move {
                match tokio::time::timeout(Duration::from_secs(2), client.wait_for_connect()).await
                {
                    Ok(Ok(())) => tracing::info!("connected to redis"),
                    _ => tracing::warn!(
                        %url,
                        "redis is not reachable yet; working without it until it is"
                    ),
                }
            }
        };
        if wait {
            first.await;
        } else {
            tokio::spawn(first);
        }
        Ok(redis)
    }

    /// A second connection for pub/sub (a subscribed connection can send nothing else); it
    /// re-subscribes after every reconnection.
    pub fn subscriber(&self) -> Result<SubscriberClient, fred::error::Error> {
        let sub = self.builder.build_subscriber_client()?;
        sub.connect();
        sub.manage_subscriptions();
        Ok(sub)
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Runs one command (`operation`, its name: `GET`, `EVALSHA`), failing at once while
    /// disconnected and after `REDIS_TIMEOUT_MS`. Inside a traced request or job, with traces
    /// on, the command is a client span of its own.
    pub async fn run<T, F>(&self, operation: &'static str, command: F) -> Result<T, RedisError>
    where
        F: Future<Output = Result<T, fred::error::Error>>,
    {
        if !self.client.is_connected() {
            return Err(RedisError::Disconnected);
        }
        let timed = async {
            match tokio::time::timeout(self.timeout, command).await {
                Ok(result) => Ok(result?),
                Err(_) => Err(RedisError::Timeout(self.timeout)),
            }
        };
        if !crate::telemetry::otel::installed() || tracing::Span::current().is_none() {
            return timed.await;
        }
        let span = tracing::info_span!(
            "redis",
            otel.name = operation,
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = operation,
            otel.status_code = tracing::field::Empty,
        );
        let result = tracing::Instrument::instrument(timed, span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// The round trip of a PING.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        let started = std::time::Instant::now();
        self.run("PING", self.client.ping::<String>(None)).await?;
        Ok(started.elapsed())
    }

    /// Runs `on_connect` after every (re)connection: whatever was written while Redis was
    /// away has to be made good then.
    pub fn on_reconnect<F, Fut>(&self, on_connect: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.client.on_reconnect(move |_server| {
            let fut = on_connect();
            async move {
                fut.await;
                Ok(())
            }
        });
    }
}
