//! `/system/background-tasks`: submit jobs, follow them, cancel them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use poem::{http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::Value;
use uuid::Uuid;

use super::{
    ApiTags,
    models::PageMetadata,
    submission::{Countdown, Lenient, Options, Priority, UniqueKey},
};
use crate::http::extractors::Auth;
use crate::{
    accounts::{EmailAddress, Principal, api_keys::Scope},
    demo as tasks,
    http::error::{ApiError, ApiResult},
    http::state::AppState,
    jobs::{self, Cancelled, JobStatus, JobView, NewJob, Queue, Retried},
    mail::Email,
};

use super::constraints::MAX_RECORDS;
pub use super::task_schemas::*;
const READ: Scope = Scope::TasksRead;
const WRITE: Scope = Scope::TasksWrite;
const MAX_DURATION_SECONDS: u64 = 3600;

#[derive(ApiResponse)]
pub enum Submitted {
    /// Accepted; follow it at `/system/background-tasks/task-status/{task_id}`.
    #[oai(status = 202)]
    Accepted(Json<TaskAccepted>),
    /// An unfinished task of this kind holds the `unique_key`: that task (`duplicate: true`);
    /// nothing new was queued.
    #[oai(status = 200)]
    Duplicate(Json<TaskAccepted>),
}

async fn submit(
    state: &AppState,
    principal: &Principal,
    job: NewJob,
    options: Options,
) -> ApiResult<Submitted> {
    let job = options.apply(job.owner(principal.user.id))?;
    let name = job.name.clone();
    let (queue, priority) = state.jobs.queue().destination(&job);
    match state.jobs.submit(job).await? {
        jobs::Submitted::New { id, run_at } => Ok(Submitted::Accepted(Json(TaskAccepted {
            task_id: id,
            task_name: name,
            status: TaskState::Pending,
            queue: queue.into(),
            priority: i32::from(priority),
            run_at,
            duplicate: false,
        }))),
        jobs::Submitted::Duplicate { id } => match state.jobs.find(id).await? {
            Some(existing) => Ok(Submitted::Duplicate(Json(TaskAccepted::of(existing)))),
            // It finished and was pruned in between: the key is free again.
            None => Err(ApiError::new(
                StatusCode::CONFLICT,
                "task_finished",
                "the task holding this unique_key finished just now; submit again",
            )),
        },
    }
}

/// Whether the caller may see the job: its owner and superusers may; to others it does not
/// exist.
fn visible(principal: &Principal, job: &JobView) -> bool {
    principal.user.is_superuser || job.owner_id == Some(principal.user.id)
}

/// The job, if the caller may see it.
async fn visible_job(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<JobView> {
    match state.jobs.find(id).await? {
        Some(j) if visible(principal, &j) => Ok(j),
        _ => Err(no_such_task()),
    }
}

fn no_such_task() -> ApiError {
    ApiError::not_found("no task with this id")
}

pub struct TasksApi;

#[OpenApi(prefix_path = "/system/background-tasks", tag = "ApiTags::Tasks")]
impl TasksApi {
    /// Submit a test task that echoes its message
    #[oai(path = "/test-task", method = "post", operation_id = "tasks_test_task")]
    // Each query parameter of an operation is an argument; the four submission options are
    // four of them.
    #[allow(clippy::too_many_arguments)]
    async fn test_task(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<TestTaskRequest>,
        /// Seconds before the task may start, 0 to 31536000 (365 days); not with `eta`.
        countdown: Query<Option<Countdown>>,
        /// When the task may start, RFC 3339 (a time past means now); not with `countdown`.
        eta: Query<Option<Lenient<DateTime<Utc>>>>,
        /// 0 to 9 (default 5): within its queue, a higher priority starts first.
        priority: Query<Option<Priority>>,
        /// 1 to 128 characters: while a task of this kind holding this key is unfinished,
        /// submitting again answers that task (200, `duplicate: true`) instead of queuing another.
        unique_key: Query<Option<UniqueKey>>,
        /// 1 to 128 characters, such as a customer id: at most `JOB_KEY_CONCURRENCY` (1) tasks
        /// with this key run at once, across every worker; tasks with other keys are not held.
        concurrency_key: Query<Option<UniqueKey>>,
    ) -> ApiResult<Submitted> {
        let task = tasks::TestTask {
            message: body.0.message,
            fail_attempts: body.0.fail_attempts.unwrap_or(0),
        };
        let options = Options::new(countdown, eta, priority, unique_key, concurrency_key);
        submit(&state, auth.scoped(WRITE)?, NewJob::of(&task), options).await
    }

    /// Submit records for processing
    ///
    /// Takes a JSON array of objects (at most 10,000); the result counts them and summarises
    /// each field.
    #[oai(
        path = "/process-data",
        method = "post",
        operation_id = "tasks_process_data"
    )]
    // Each query parameter of an operation is an argument; the four submission options are
    // four of them.
    #[allow(clippy::too_many_arguments)]
    async fn process_data(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<Vec<HashMap<String, Value>>>,
        /// Seconds before the task may start, 0 to 31536000 (365 days); not with `eta`.
        countdown: Query<Option<Countdown>>,
        /// When the task may start, RFC 3339 (a time past means now); not with `countdown`.
        eta: Query<Option<Lenient<DateTime<Utc>>>>,
        /// 0 to 9 (default 5): within its queue, a higher priority starts first.
        priority: Query<Option<Priority>>,
        /// 1 to 128 characters: while a task of this kind holding this key is unfinished,
        /// submitting again answers that task (200, `duplicate: true`) instead of queuing another.
        unique_key: Query<Option<UniqueKey>>,
        /// 1 to 128 characters, such as a customer id: at most `JOB_KEY_CONCURRENCY` (1) tasks
        /// with this key run at once, across every worker; tasks with other keys are not held.
        concurrency_key: Query<Option<UniqueKey>>,
    ) -> ApiResult<Submitted> {
        if body.0.len() > MAX_RECORDS {
            return Err(ApiError::validation(vec![crate::http::error::FieldError {
                field: "body".into(),
                message: format!("at most {MAX_RECORDS} records per task"),
            }]));
        }
        let task = tasks::ProcessData {
            records: body
                .0
                .into_iter()
                .map(|r| r.into_iter().collect())
                .collect(),
        };
        let options = Options::new(countdown, eta, priority, unique_key, concurrency_key);
        submit(&state, auth.scoped(WRITE)?, NewJob::of(&task), options).await
    }

    /// Submit a task that runs for `duration` seconds (cancellable)
    ///
    /// Reports `{"current": n, "total": duration}` as its `progress` each second.
    #[oai(
        path = "/long-running",
        method = "post",
        operation_id = "tasks_long_running"
    )]
    // Each query parameter of an operation is an argument; the four submission options are
    // four of them.
    #[allow(clippy::too_many_arguments)]
    async fn long_running(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        /// Seconds to run, 1 to 3600.
        #[oai(
            default = "default_duration",
            validator(minimum(value = "1"), maximum(value = "3600"))
        )]
        duration: Query<u64>,
        /// Seconds before the task may start, 0 to 31536000 (365 days); not with `eta`.
        countdown: Query<Option<Countdown>>,
        /// When the task may start, RFC 3339 (a time past means now); not with `countdown`.
        eta: Query<Option<Lenient<DateTime<Utc>>>>,
        /// 0 to 9 (default 5): within its queue, a higher priority starts first.
        priority: Query<Option<Priority>>,
        /// 1 to 128 characters: while a task of this kind holding this key is unfinished,
        /// submitting again answers that task (200, `duplicate: true`) instead of queuing another.
        unique_key: Query<Option<UniqueKey>>,
        /// 1 to 128 characters, such as a customer id: at most `JOB_KEY_CONCURRENCY` (1) tasks
        /// with this key run at once, across every worker; tasks with other keys are not held.
        concurrency_key: Query<Option<UniqueKey>>,
    ) -> ApiResult<Submitted> {
        let duration = duration.0.min(MAX_DURATION_SECONDS);
        let task = tasks::LongRunning { duration };
        let options = Options::new(countdown, eta, priority, unique_key, concurrency_key);
        submit(&state, auth.scoped(WRITE)?, NewJob::of(&task), options).await
    }

    /// Send an email through the job queue (superusers)
    #[oai(
        path = "/send-email",
        method = "post",
        operation_id = "tasks_send_email"
    )]
    // Each query parameter of an operation is an argument; the four submission options are
    // four of them.
    #[allow(clippy::too_many_arguments)]
    async fn send_email(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<SendEmailRequest>,
        /// Seconds before the task may start, 0 to 31536000 (365 days); not with `eta`.
        countdown: Query<Option<Countdown>>,
        /// When the task may start, RFC 3339 (a time past means now); not with `countdown`.
        eta: Query<Option<Lenient<DateTime<Utc>>>>,
        /// 0 to 9 (default 5): within its queue, a higher priority starts first.
        priority: Query<Option<Priority>>,
        /// 1 to 128 characters: while a task of this kind holding this key is unfinished,
        /// submitting again answers that task (200, `duplicate: true`) instead of queuing another.
        unique_key: Query<Option<UniqueKey>>,
        /// 1 to 128 characters, such as a customer id: at most `JOB_KEY_CONCURRENCY` (1) tasks
        /// with this key run at once, across every worker; tasks with other keys are not held.
        concurrency_key: Query<Option<UniqueKey>>,
    ) -> ApiResult<Submitted> {
        let principal = auth.superuser_or_scope(WRITE)?;
        let body = body.0;
        let to = EmailAddress::parse(&body.to)
            .map_err(|p| ApiError::validation(vec![p.into()]))?
            .into_string();
        let email = Email {
            to,
            subject: body.subject,
            html: state.mails.plain_text_html(&body.body),
            text: body.body,
        };
        let options = Options::new(countdown, eta, priority, unique_key, concurrency_key);
        submit(&state, principal, email.into_job(), options).await
    }

    /// A task's status and result
    #[oai(
        path = "/task-status/:task_id",
        method = "get",
        operation_id = "tasks_status"
    )]
    async fn status(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        task_id: Path<Uuid>,
    ) -> ApiResult<Json<TaskInfo>> {
        Ok(Json(
            visible_job(&state, auth.scoped(READ)?, task_id.0)
                .await?
                .into(),
        ))
    }

    /// Cancel a task that has not finished
    ///
    /// A pending task never runs; a running one is interrupted. Either way it ends REVOKED.
    #[oai(path = "/:task_id", method = "delete", operation_id = "tasks_cancel")]
    async fn cancel(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        task_id: Path<Uuid>,
    ) -> ApiResult<Json<TaskInfo>> {
        let principal = auth.scoped(WRITE)?;
        let job = visible_job(&state, principal, task_id.0).await?;
        match state.jobs.cancel(job.id).await? {
            Cancelled::Revoked(job) => Ok(Json(job.into())),
            Cancelled::AlreadyFinished(job) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "task_finished",
                format!("the task already finished with {}", job.status.as_str()),
            )),
            Cancelled::NotFound => Err(no_such_task()),
        }
    }

    /// Run a failed or cancelled task again (superusers)
    ///
    /// Queued again from its first attempt, at its priority, with its payload; answers the
    /// task as it now stands. Only FAILURE and REVOKED tasks: others are a 409
    /// `task_not_retryable`.
    #[oai(
        path = "/:task_id/retry",
        method = "post",
        operation_id = "tasks_retry"
    )]
    async fn retry(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        task_id: Path<Uuid>,
    ) -> ApiResult<Json<TaskInfo>> {
        auth.scoped(WRITE)?;
        auth.require_superuser()?;
        match state.jobs.retry(task_id.0).await? {
            Retried::Queued => state
                .jobs
                .find(task_id.0)
                .await?
                .map(|j| Json(j.into()))
                .ok_or_else(no_such_task),
            Retried::NotRetryable { status } => Err(ApiError::new(
                StatusCode::CONFLICT,
                "task_not_retryable",
                format!(
                    "only FAILURE and REVOKED tasks can be retried; this one is {}",
                    status.as_str()
                ),
            )),
            Retried::NotFound => Err(no_such_task()),
        }
    }

    /// Each queue's waiting, scheduled, running and failed tasks (superusers)
    ///
    /// With the last minute's finished count and the oldest waiting task's age: what
    /// `admin jobs stats` prints.
    #[oai(path = "/queues", method = "get", operation_id = "tasks_queues")]
    async fn queues(&self, state: Data<&AppState>, auth: Auth) -> ApiResult<Json<Vec<QueueInfo>>> {
        auth.scoped(Scope::SystemRead)?;
        auth.require_superuser()?;
        let stats = state.jobs.queue_stats().await?;
        Ok(Json(stats.into_iter().map(QueueInfo::from).collect()))
    }

    /// Recent tasks, newest first (superusers)
    #[oai(path = "/", method = "get", operation_id = "tasks_list")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        /// Only tasks in this state.
        status: Query<Option<TaskState>>,
        /// Only tasks of this queue.
        queue: Query<Option<TaskQueue>>,
        /// Page number, from 1.
        #[oai(
            default = "super::models::default_page",
            validator(minimum(value = "1"), maximum(value = "2147483647"))
        )]
        page: Query<u64>,
        /// Items per page, 1 to 100.
        #[oai(
            default = "super::models::default_size",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        size: Query<u64>,
    ) -> ApiResult<Json<TaskPage>> {
        auth.scoped(Scope::SystemRead)?;
        auth.require_superuser()?;
        let found = state
            .jobs
            .page(
                status.0.map(JobStatus::from),
                queue.0.map(Queue::from),
                page.0,
                size.0,
            )
            .await?;
        Ok(Json(TaskPage {
            metadata: PageMetadata::new(page.0, size.0, found.total),
            items: found.items.into_iter().map(TaskInfo::from).collect(),
        }))
    }
}

fn default_duration() -> u64 {
    10
}
