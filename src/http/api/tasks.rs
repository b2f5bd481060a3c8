//! `/system/background-tasks`: submit jobs, follow them, cancel them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use poem::{http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::Value;
use uuid::Uuid;

use super::{ApiTags, models::PageMetadata};
use crate::http::extractors::Auth;
use crate::{
    accounts::{EmailAddress, Principal, api_keys::Scope},
    entities::job,
    http::error::{ApiError, ApiResult},
    http::state::AppState,
    jobs::{Cancelled, JobStatus, NewJob, tasks},
    mail::{Email, templates},
};

use super::constraints::MAX_RECORDS;
const READ: Scope = Scope::TasksRead;
const WRITE: Scope = Scope::TasksWrite;
const MAX_DURATION_SECONDS: u64 = 3600;

/// A task's state, as Celery names them.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "UPPERCASE")]
pub enum TaskState {
    Pending,
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
}

impl From<JobStatus> for TaskState {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Pending => Self::Pending,
            JobStatus::Started => Self::Started,
            JobStatus::Retry => Self::Retry,
            JobStatus::Success => Self::Success,
            JobStatus::Failure => Self::Failure,
            JobStatus::Revoked => Self::Revoked,
        }
    }
}

impl From<TaskState> for JobStatus {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => Self::Pending,
            TaskState::Started => Self::Started,
            TaskState::Retry => Self::Retry,
            TaskState::Success => Self::Success,
            TaskState::Failure => Self::Failure,
            TaskState::Revoked => Self::Revoked,
        }
    }
}

#[derive(Object, Debug)]
pub struct TestTaskRequest {
    /// Echoed back in the task's result.
    #[oai(validator(max_length = 10000))]
    pub message: String,
    /// Make the first N attempts fail, to watch retries (and, past the attempt limit, the
    /// dead-letter queue) at work.
    #[oai(nullable, validator(minimum(value = "0"), maximum(value = "100")))]
    pub fail_attempts: Option<u32>,
}

#[derive(Object, Debug)]
pub struct SendEmailRequest {
    pub to: String,
    #[oai(validator(min_length = 1, max_length = 998))]
    pub subject: String,
    /// Plain text; also sent as the HTML part, escaped.
    #[oai(validator(max_length = 100000))]
    pub body: String,
}

#[derive(Object, Debug)]
pub struct TaskAccepted {
    pub task_id: Uuid,
    pub task_name: String,
    pub status: TaskState,
}

#[derive(Object, Debug)]
pub struct TaskInfo {
    pub task_id: Uuid,
    pub task_name: String,
    pub status: TaskState,
    /// The handler's result, once it succeeded.
    #[oai(nullable)]
    pub result: Option<Value>,
    /// The last failure's message.
    #[oai(nullable)]
    pub error: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<job::Model> for TaskInfo {
    fn from(j: job::Model) -> Self {
        Self {
            task_id: j.id,
            status: j.status.into(),
            task_name: j.name,
            result: j.result,
            error: j.error,
            attempts: j.attempts,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }
}

#[derive(Object, Debug)]
pub struct TaskPage {
    pub items: Vec<TaskInfo>,
    pub metadata: PageMetadata,
}

#[derive(ApiResponse)]
pub enum Submitted {
    /// Accepted; follow it at `/system/background-tasks/task-status/{task_id}`.
    #[oai(status = 202)]
    Accepted(Json<TaskAccepted>),
}

async fn submit(state: &AppState, principal: &Principal, job: NewJob) -> ApiResult<Submitted> {
    let name = job.name.clone();
    let id = state.jobs.submit(job.owner(principal.user.id)).await?;
    Ok(Submitted::Accepted(Json(TaskAccepted {
        task_id: id,
        task_name: name,
        status: TaskState::Pending,
    })))
}

/// Whether the caller may see the job: its owner and superusers may; to others it does not
/// exist.
fn visible(principal: &Principal, job: &job::Model) -> bool {
    principal.user.is_superuser || job.owner_id == Some(principal.user.id)
}

/// The job, if the caller may see it.
async fn visible_job(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<job::Model> {
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
    async fn test_task(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<TestTaskRequest>,
    ) -> ApiResult<Submitted> {
        let task = tasks::TestTask {
            message: body.0.message,
            fail_attempts: body.0.fail_attempts.unwrap_or(0),
        };
        submit(&state, auth.scoped(WRITE)?, NewJob::of(&task)).await
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
    async fn process_data(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<Vec<HashMap<String, Value>>>,
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
        submit(&state, auth.scoped(WRITE)?, NewJob::of(&task)).await
    }

    /// Submit a task that runs for `duration` seconds (cancellable)
    #[oai(
        path = "/long-running",
        method = "post",
        operation_id = "tasks_long_running"
    )]
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
    ) -> ApiResult<Submitted> {
        let duration = duration.0.min(MAX_DURATION_SECONDS);
        let task = tasks::LongRunning { duration };
        submit(&state, auth.scoped(WRITE)?, NewJob::of(&task)).await
    }

    /// Send an email through the job queue (superusers)
    #[oai(
        path = "/send-email",
        method = "post",
        operation_id = "tasks_send_email"
    )]
    async fn send_email(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<SendEmailRequest>,
    ) -> ApiResult<Submitted> {
        let principal = auth.superuser_or_scope(WRITE)?;
        let body = body.0;
        let to = EmailAddress::parse(&body.to)
            .map_err(|p| ApiError::validation(vec![p.into()]))?
            .into_string();
        let email = Email {
            to,
            subject: body.subject,
            html: templates::plain_text_html(&body.body),
            text: body.body,
        };
        submit(&state, principal, email.into_job()).await
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
        match state.jobs.cancel(&job).await? {
            Cancelled::Revoked(job) => Ok(Json(job.into())),
            Cancelled::AlreadyFinished(job) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "task_finished",
                format!("the task already finished with {}", job.status.as_str()),
            )),
            Cancelled::NotFound => Err(no_such_task()),
        }
    }

    /// Recent tasks, newest first (superusers)
    #[oai(path = "/", method = "get", operation_id = "tasks_list")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        /// Only tasks in this state.
        status: Query<Option<TaskState>>,
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
            .page(status.0.map(JobStatus::from), page.0, size.0)
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
