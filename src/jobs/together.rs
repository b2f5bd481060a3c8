//! Submissions written together: concurrent `JobQueue::submit` calls wait here for one
//! statement and one commit that write them all.

use std::sync::{Arc, OnceLock};

use sea_orm::{DatabaseConnection, DbErr, EntityTrait};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

use crate::entities::job;
use crate::queues::Queue;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Submissions written by one statement at most.
const SUBMISSIONS_PER_BATCH: usize = 256;
/// Statements writing submissions at once: while they run, the next submissions gather.
const BATCHES_AT_ONCE: usize = 2;

/// A submission waiting to be written with others: its row, its message where it is handed
/// to the relay, and who waits for the answer.
pub(super) struct Together {
    pub row: job::ActiveModel,
    pub publication: Option<Publication>,
    pub reply: oneshot::Sender<Result<Submitted, DbErr>>,
}

/// Writes submissions together for a `JobQueue`; holds what it needs of the queue, not the
/// queue, so that it ends when the queue is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    handoff: Arc<OnceLock<mpsc::UnboundedSender<Publication>>>,
    wake: Arc<Notify>,
}

impl Writer {
    /// Starts the writer of a queue's submissions on `db`; it ends when the sender is dropped.
    pub fn start(
        handoff: Arc<OnceLock<mpsc::UnboundedSender<Publication>>>,
        wake: Arc<Notify>,
        db: DatabaseConnection,
    ) -> mpsc::UnboundedSender<Together> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Self { handoff, wake }.run(db, rx));
        tx
    }

    /// Writes whatever submissions wait, as one statement, up to `BATCHES_AT_ONCE` statements
    /// at a time; ends when the queue is dropped.
    async fn run(self, db: DatabaseConnection, mut rx: mpsc::UnboundedReceiver<Together>) {
        let statements = Arc::new(Semaphore::new(BATCHES_AT_ONCE));
        loop {
            let Ok(statement) = statements.clone().acquire_owned().await else {
                return;
            };
            let mut batch = Vec::with_capacity(SUBMISSIONS_PER_BATCH);
            if rx.recv_many(&mut batch, SUBMISSIONS_PER_BATCH).await == 0 {
                return;
            }
            let (writer, db) = (self.clone(), db.clone());
            tokio::spawn(async move {
                writer.write(&db, batch).await;
                drop(statement);
            });
        }
    }

    /// One statement for the batch. Should it fail, its halves are tried, and theirs, so that
    /// a submission the database refuses fails alone and the others are still written together.
    async fn write(&self, db: &DatabaseConnection, batch: Vec<Together>) {
        let mut answers: Vec<(Together, Result<(), DbErr>)> = Vec::with_capacity(batch.len());
        let mut parts = vec![batch];
        while let Some(mut part) = parts.pop() {
            let written = job::Entity::insert_many(part.iter().map(|t| t.row.clone()))
                .exec_without_returning(db)
                .await;
            match written {
                Ok(_) => answers.extend(part.into_iter().map(|t| (t, Ok(())))),
                Err(e) if part.len() == 1 => {
                    answers.extend(part.into_iter().map(|t| (t, Err(e.clone()))))
                }
                Err(_) => {
                    let half = part.split_off(part.len() / 2);
                    parts.push(half);
                    parts.push(part);
                }
            }
        }
        let mut queued = false;
        for (t, written) in answers {
            let answer = written.map(|()| {
                let id = *t.row.id.as_ref();
                let run_at = *t.row.run_at.as_ref();
                match t.publication {
                    Some(publication) => hand_over(&self.handoff, publication),
                    None => queued = true,
                }
                Submitted::New { id, run_at }
            });
            let _ = t.reply.send(answer);
        }
        if queued {
            self.wake.notify_one();
        }
    }
}

/// Gives a committed job, marked published, to this process's relay.
pub(super) fn hand_over(
    handoff: &OnceLock<mpsc::UnboundedSender<Publication>>,
    publication: Publication,
) {
    let id = publication.id;
    if !matches!(handoff.get().map(|h| h.send(publication)), Some(Ok(()))) {
        // The relay has stopped (shutting down): the sweep publishes it later.
        tracing::warn!(job_id = %id, "no relay to hand the job to; it waits for the next sweep");
    }
}

/// What submitting a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued, to start at `run_at`.
    New { id: Uuid, run_at: DateTime<Utc> },
    /// An unfinished job with the same name and key (unique or dedupe) is this one: nothing
    /// new was queued.
    Duplicate { id: Uuid },
}

impl Submitted {
    pub fn id(&self) -> Uuid {
        match self {
            Self::New { id, .. } | Self::Duplicate { id } => *id,
        }
    }
}

/// What the relay needs to publish a job: where it goes, and the name, priority and origin
/// (the request id and trace context stored with the job) its message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub id: Uuid,
    pub name: String,
    pub queue: Queue,
    pub priority: u8,
    pub request_id: Option<String>,
    pub trace_context: Option<String>,
}
