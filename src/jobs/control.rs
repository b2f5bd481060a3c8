//! Jobs as operators and clients see them: submit, look up, list, cancel, retry. The HTTP API
//! and the admin CLI both go through `Jobs`, so a rule (which states may be cancelled, what a
//! retry resets, which secrets a cancelled job's payload loses) is written once.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{JobQueue, JobStatus, JobView, NewJob, Queue, Registry, Submitted};
use crate::{
    db::{self, Page},
    entities::{View, job},
};

/// What cancelling a job did.
#[derive(Debug)]
pub enum Cancelled {
    /// It is REVOKED now (or was already): a pending job never runs, a running one is
    /// interrupted.
    Revoked(JobView),
    /// It had finished before; nothing changed.
    AlreadyFinished(JobView),
    NotFound,
}

/// What retrying a job did.
#[derive(Debug)]
pub enum Retried {
    /// PENDING again with its attempts reset, published at once.
    Queued,
    /// Only FAILURE and REVOKED jobs are retried; this one is in `status`.
    NotRetryable {
        status: JobStatus,
    },
    NotFound,
}

#[derive(Clone)]
pub struct Jobs {
    db: DatabaseConnection,
    queue: JobQueue,
    /// For the handlers' payload scrubbers: a cancelled job loses its secrets at once.
    registry: Registry,
}

impl Jobs {
    pub fn new(db: DatabaseConnection, queue: JobQueue, registry: Registry) -> Self {
        Self {
            db,
            queue,
            registry,
        }
    }

    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// Queues `job` on its own (not inside a caller's transaction); with a unique key an
    /// unfinished job of its name holds, answers that job instead.
    pub async fn submit(&self, job: NewJob) -> Result<Submitted, DbErr> {
        self.queue.submit(&self.db, job).await
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<JobView>, DbErr> {
        Ok(self.row(id).await?.map(View::view))
    }

    async fn row(&self, id: Uuid) -> Result<Option<job::Model>, DbErr> {
        job::Entity::find_by_id(id).one(&self.db).await
    }

    /// Revokes the job unless it has finished.
    pub async fn cancel(&self, id: Uuid) -> Result<Cancelled, DbErr> {
        let Some(found) = self.row(id).await? else {
            return Ok(Cancelled::NotFound);
        };
        let now = Utc::now();
        let mut revoke = job::Entity::update_many()
            .col_expr(
                job::Column::Status,
                Expr::value(JobStatus::Revoked.as_str()),
            )
            .col_expr(job::Column::FinishedAt, Expr::value(now))
            .col_expr(job::Column::UpdatedAt, Expr::value(now));
        // A cancelled job never runs again, so the secrets its payload carries go now, as
        // they do when a job finishes.
        if let Some(payload) = self
            .registry
            .get(&found.name)
            .and_then(|h| h.scrubbed(&found.payload))
        {
            revoke = revoke.col_expr(job::Column::Payload, Expr::value(payload));
        }
        let revoked = revoke
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::Status.is_in([
                JobStatus::Pending.as_str(),
                JobStatus::Retry.as_str(),
                JobStatus::Started.as_str(),
            ]))
            .exec(&self.db)
            .await?;
        let Some(now) = self.find(id).await? else {
            return Ok(Cancelled::NotFound);
        };
        Ok(
            if revoked.rows_affected == 0 && now.status != JobStatus::Revoked {
                Cancelled::AlreadyFinished(now)
            } else {
                Cancelled::Revoked(now)
            },
        )
    }

    /// Queues a failed or cancelled job again, from its first attempt.
    pub async fn retry(&self, id: Uuid) -> Result<Retried, DbErr> {
        let updated = requeue()
            .filter(job::Column::Id.eq(id))
            .filter(
                job::Column::Status
                    .is_in([JobStatus::Failure.as_str(), JobStatus::Revoked.as_str()]),
            )
            .exec(&self.db)
            .await?;
        if updated.rows_affected == 1 {
            self.queue.dispatch(&self.db).await?;
            return Ok(Retried::Queued);
        }
        Ok(match self.row(id).await? {
            None => Retried::NotFound,
            Some(j) => Retried::NotRetryable { status: j.status },
        })
    }

    /// Queues every FAILURE job (of one name, when given) again with a fresh set of attempts;
    /// answers how many. One statement; the relay publishes them in its batches.
    pub async fn retry_failed(&self, name: Option<&str>) -> Result<u64, DbErr> {
        let mut update = requeue().filter(job::Column::Status.eq(JobStatus::Failure));
        if let Some(name) = name {
            update = update.filter(job::Column::Name.eq(name));
        }
        let updated = update.exec(&self.db).await?;
        if updated.rows_affected > 0 {
            self.queue.dispatch(&self.db).await?;
        }
        Ok(updated.rows_affected)
    }

    /// A page of jobs, newest first, optionally only those in one state or of one queue.
    pub async fn page(
        &self,
        status: Option<JobStatus>,
        queue: Option<Queue>,
        page: u64,
        size: u64,
    ) -> Result<Page<JobView>, DbErr> {
        let mut query = self.newest(status);
        if let Some(queue) = queue {
            query = query.filter(job::Column::Queue.eq(queue.as_str()));
        }
        let page = db::page(query, &self.db, page, size).await?;
        Ok(page.map(View::view))
    }

    /// The `limit` newest jobs, optionally only those in one state.
    pub async fn recent(
        &self,
        status: Option<JobStatus>,
        limit: u64,
    ) -> Result<Vec<JobView>, DbErr> {
        let rows = self.newest(status).limit(limit).all(&self.db).await?;
        Ok(rows.into_iter().map(View::view).collect())
    }

    fn newest(&self, status: Option<JobStatus>) -> sea_orm::Select<job::Entity> {
        let query = job::Entity::find().order_by_desc(job::Column::CreatedAt);
        match status {
            Some(s) => query.filter(job::Column::Status.eq(s.as_str())),
            None => query,
        }
    }

    /// Deletes finished jobs older than the given ages (succeeded and revoked ones, failed ones);
    /// waiting and running jobs are never touched.
    pub async fn prune(
        &self,
        success: std::time::Duration,
        failed: std::time::Duration,
    ) -> Result<super::retention::Pruned, DbErr> {
        super::retention::prune(&self.db, success, failed).await
    }

    /// Failed jobs (whose messages went to the dead-letter queue), most recent first.
    pub async fn dead_letters(&self, limit: u64) -> Result<Vec<JobView>, DbErr> {
        let rows = job::Entity::find()
            .filter(job::Column::Status.eq(JobStatus::Failure.as_str()))
            .order_by_desc(job::Column::FinishedAt)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(View::view).collect())
    }

    /// How many jobs wait or run, by queue and state (PENDING, RETRY, STARTED): every known
    /// queue in every state, and any other queue a job names.
    pub async fn depth(&self) -> Result<Vec<(String, JobStatus, u64)>, DbErr> {
        use sea_orm::ConnectionTrait as _;
        let backend = self.db.get_database_backend();
        // Literal statuses, as in the partial indexes' predicates.
        let rows = self
            .db
            .query_all_raw(db::numbered_statement(
                backend,
                "SELECT queue, status, COUNT(*) FROM jobs \
                 WHERE status IN ('PENDING', 'RETRY', 'STARTED') GROUP BY queue, status",
                vec![],
            ))
            .await?;
        let statuses = [JobStatus::Pending, JobStatus::Retry, JobStatus::Started];
        // Every known queue and state, at 0 unless counted.
        let mut depth: Vec<(String, JobStatus, u64)> = Queue::ALL
            .iter()
            .flat_map(|q| statuses.map(|s| (q.as_str().to_string(), s, 0)))
            .collect();
        for row in rows {
            let queue: String = row.try_get_by_index(0)?;
            let status: String = row.try_get_by_index(1)?;
            let n: i64 = row.try_get_by_index(2)?;
            let Some(status) = statuses.into_iter().find(|s| s.as_str() == status) else {
                continue;
            };
            let n = u64::try_from(n).unwrap_or(0);
            match depth
                .iter_mut()
                .find(|(q, s, _)| *q == queue && *s == status)
            {
                Some(entry) => entry.2 = n,
                None => depth.push((queue, status, n)),
            }
        }
        Ok(depth)
    }

    /// Each queue's waiting, scheduled, running and failed jobs, its last minute's rate and
    /// its oldest waiting job's age.
    pub async fn queue_stats(&self) -> Result<Vec<super::stats::QueueStats>, DbErr> {
        super::stats::queue_stats(&self.db).await
    }

    /// When each periodic job was last enqueued, for those ever enqueued.
    pub async fn last_firings(&self) -> Result<Vec<(String, DateTime<Utc>)>, DbErr> {
        crate::jobs::schedule::last_firings(&self.db, self.queue.settings()).await
    }

    /// When a worker last reported, if one ever did.
    pub async fn last_heartbeat(&self) -> Result<Option<DateTime<Utc>>, DbErr> {
        super::heartbeat::last_heartbeat(&self.db).await
    }
}

/// Makes the jobs the caller filters due again as new: PENDING now, no attempts used, to be
/// published afresh.
fn requeue() -> sea_orm::UpdateMany<job::Entity> {
    let now = Utc::now();
    job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Pending))
        .col_expr(job::Column::Attempts, Expr::value(0))
        .col_expr(job::Column::RunAt, Expr::value(now))
        .col_expr(
            job::Column::PublishedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            job::Column::FinishedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
}
