//! A kind of job is one type: its payload. The type declares the job's name, queue, priority,
//! limits and uniqueness, and runs it (`Job`); a periodic job adds its schedule's setting and
//! default, and the payload of a scheduled run (`Scheduled`). The application lists its kinds
//! once (`keel::app::JOBS`, one line each); the handler registry, the queue routing, the
//! settings and the scheduler's list all come from that list.

use std::{
    any::{Any, TypeId, type_name},
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{Handler, JobContext, JobError, JobResult, RegistryBuilder};
use crate::queues::{DEFAULT_PRIORITY, JobKind, Queue, ScheduleSetting};

/// A kind of job, declared on the type of its payload.
///
/// ```ignore
/// #[derive(Serialize, Deserialize)]
/// pub struct Thumbnail { pub upload_id: Uuid }
///
/// impl Job for Thumbnail {
///     const NAME: &'static str = "thumbnail";
///     const QUEUE: Queue = Queue::Default;
///     fn unique_key(&self) -> Option<String> { Some(self.upload_id.to_string()) }
///     async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
///         let db = deps.get::<DatabaseConnection>()?;
///         /* ... */
///         Ok(json!({"done": true}))
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name jobs of this kind are stored and published under; never rename it while jobs
    /// of the old name may still be waiting.
    const NAME: &'static str;
    /// The queue it goes to (workers serve queues: `WORKER_QUEUES`).
    const QUEUE: Queue = Queue::Default;
    /// 0 to 9, 9 first; a submission may ask for another.
    const PRIORITY: u8 = DEFAULT_PRIORITY;
    /// Runs before it fails for good; `None`: `JOB_MAX_ATTEMPTS`.
    const MAX_ATTEMPTS: Option<u16> = None;
    /// How long one run may take; `None`: `JOB_TIMEOUT_SECONDS`.
    const TIMEOUT: Option<Duration> = None;

    /// While a job of this kind with this key is unfinished, submitting another gives that one.
    fn unique_key(&self) -> Option<String> {
        None
    }

    /// At most `JOB_KEY_CONCURRENCY` jobs (of any kind) with this key run at once, across every
    /// worker: one customer's exports one at a time, customers in parallel.
    fn concurrency_key(&self) -> Option<String> {
        None
    }

    /// What the stored payload becomes once the job has ended, when it carries secrets (a
    /// mailed token); `None`: kept as it is.
    fn scrub(_payload: &Value) -> Option<Value> {
        None
    }

    /// Runs one attempt. A retryable error is tried again (with backoff) until the attempts
    /// run out; a fatal one fails the job at once.
    fn run(self, ctx: &JobContext, deps: &Deps) -> impl Future<Output = JobResult> + Send;
}

/// A job the scheduler enqueues on a cron schedule.
pub trait Scheduled: Job {
    /// The setting that holds its cron expression (`off` switches it off); list it in
    /// `.env.example`.
    const SETTING: &'static str;
    /// The schedule when the setting is absent: five fields, or six with seconds first.
    const SCHEDULE: &'static str;

    /// The payload of the run for `slot`.
    fn at(slot: DateTime<Utc>) -> Self;
}

/// What the job system knows of `J`.
pub const fn kind<J: Job>() -> JobKind {
    JobKind {
        name: J::NAME,
        queue: J::QUEUE,
        priority: J::PRIORITY,
        max_attempts: J::MAX_ATTEMPTS,
        timeout: J::TIMEOUT,
        schedule: None,
    }
}

/// One line of the application's list of jobs: the kind, and how to register its handler.
#[derive(Clone, Copy)]
pub struct Registration {
    pub kind: JobKind,
    handler: fn(Arc<Deps>) -> Handler,
}

/// The registration of a kind of job.
pub const fn job<J: Job>() -> Registration {
    Registration {
        kind: kind::<J>(),
        handler: handler::<J>,
    }
}

/// The registration of a periodic kind of job.
pub const fn periodic<J: Scheduled>() -> Registration {
    let mut kind = kind::<J>();
    kind.schedule = Some(ScheduleSetting {
        setting: J::SETTING,
        default: J::SCHEDULE,
        payload: scheduled_payload::<J>,
    });
    Registration {
        kind,
        handler: handler::<J>,
    }
}

fn scheduled_payload<J: Scheduled>(slot: DateTime<Utc>) -> Value {
    payload_of(&J::at(slot))
}

/// `payload` as JSON. A payload type that cannot be written as JSON is a programming error
/// that each job's tests catch; its job fails at once, as `null`.
pub(super) fn payload_of<J: Serialize>(payload: &J) -> Value {
    serde_json::to_value(payload).unwrap_or(Value::Null)
}

fn handler<J: Job>(deps: Arc<Deps>) -> Handler {
    Handler::new(
        move |ctx: JobContext| {
            let deps = deps.clone();
            async move {
                let job: J = ctx.payload()?;
                job.run(&ctx, &deps).await
            }
        },
        J::scrub,
    )
}

impl RegistryBuilder {
    /// Registers the handler of every job in `jobs`, giving them `deps`.
    pub fn jobs(mut self, jobs: &[Registration], deps: Deps) -> Self {
        let deps = Arc::new(deps);
        for registration in jobs {
            self = self.handler(registration.kind.name, (registration.handler)(deps.clone()));
        }
        self
    }
}

/// What the application gives its jobs to work with: one value of each type (the database,
/// the mailer, the settings, a domain service...), provided when the registry is built and
/// taken by type in `Job::run`.
#[derive(Default)]
pub struct Deps {
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Deps {
    /// Provides `value` to every job (replacing an earlier value of its type).
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.values.insert(TypeId::of::<T>(), Box::new(value));
        self
    }

    /// The value of type `T`; one that was never provided fails the job (no retry can help).
    pub fn get<T: Any + Send + Sync>(&self) -> Result<&T, JobError> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .ok_or_else(|| {
                JobError::fatal(format!(
                    "jobs were given no {} (provide it where the application builds its jobs)",
                    type_name::<T>()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Tick {
        #[serde(default)]
        scheduled_for: Option<DateTime<Utc>>,
    }

    impl Job for Tick {
        const NAME: &'static str = "tick";
        const QUEUE: Queue = Queue::Maintenance;
        const MAX_ATTEMPTS: Option<u16> = Some(2);

        async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
            let label = deps.get::<&'static str>()?;
            Ok(json!({"label": label, "slot": self.scheduled_for}))
        }
    }

    impl Scheduled for Tick {
        const SETTING: &'static str = "SCHEDULE_TICK";
        const SCHEDULE: &'static str = "*/5 * * * *";
        fn at(slot: DateTime<Utc>) -> Self {
            Self {
                scheduled_for: Some(slot),
            }
        }
    }

    fn ctx(payload: Value) -> JobContext {
        JobContext {
            job_id: uuid::Uuid::new_v4(),
            name: "tick".into(),
            payload,
            attempt: 1,
            max_attempts: 2,
            progress: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_registration_carries_the_declaration_and_runs_the_typed_handler() {
        const REGISTRATION: Registration = periodic::<Tick>();
        let kind = REGISTRATION.kind;
        assert_eq!(
            (kind.name, kind.queue, kind.max_attempts),
            ("tick", Queue::Maintenance, Some(2))
        );
        let schedule = kind.schedule.unwrap();
        assert_eq!(
            (schedule.setting, schedule.default),
            ("SCHEDULE_TICK", "*/5 * * * *")
        );
        let slot = "2026-12-07T10:05:00Z".parse().unwrap();
        let payload = (schedule.payload)(slot);
        assert_eq!(payload, json!({"scheduled_for": "2026-12-07T10:05:00Z"}));

        let registry = RegistryBuilder::default()
            .jobs(&[REGISTRATION], Deps::default().with("nightly"))
            .build();
        let handler = registry.get("tick").unwrap();
        let out = (handler.run)(ctx(payload)).await.unwrap();
        assert_eq!(
            out,
            json!({"label": "nightly", "slot": "2026-12-07T10:05:00Z"})
        );
        // A payload of the wrong shape fails for good.
        let bad = (handler.run)(ctx(json!({"scheduled_for": 3}))).await;
        assert!(!bad.unwrap_err().retryable);

        // Without what it needs, the job fails for good, naming it.
        let bare = RegistryBuilder::default()
            .jobs(&[REGISTRATION], Deps::default())
            .build();
        let err = (bare.get("tick").unwrap().run)(ctx(json!({})))
            .await
            .unwrap_err();
        assert!(!err.retryable && err.message.contains("&str"), "{err:?}");
    }
}
