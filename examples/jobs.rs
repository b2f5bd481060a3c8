//! The job examples of `docs/extending.md`: a kind of job and a periodic one, each a module of
//! its own. In a product built on Keel each module lives beside its domain (say
//! `src/documents/word_count.rs`) and adds one line to `JOBS` in `src/app.rs`:
//!
//! ```ignore
//! jobs::job::<documents::WordCount>(),
//! jobs::periodic::<reports::WeeklyReport>(),
//! ```
//!
//! Nothing else changes: the queue routing, the limits, the `SCHEDULE_WEEKLY_REPORT` setting
//! and `scheduler --list` come from the declarations. Here, outside the crate, `jobs()` adds
//! the two lines to Keel's own list instead.
//!
//! `cargo run --example jobs` runs both once on a SQLite database of its own;
//! `cargo test --example jobs` (and the test command) checks them.

use keel::{
    app,
    config::Settings,
    jobs::{self, Deps, Job as _, JobQueue, Registration, Registry, Runner},
};

/// A job: counts the words of a text. Typed arguments, its queue, its limits and a unique key,
/// all on the type; `run` is the handler.
mod word_count {
    use keel::jobs::{Deps, Job, JobContext, JobError, JobResult, Queue};
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct WordCount {
        pub document_id: String,
        pub text: String,
    }

    impl Job for WordCount {
        const NAME: &'static str = "word_count";
        const QUEUE: Queue = Queue::Default;
        const PRIORITY: u8 = 6;
        const MAX_ATTEMPTS: Option<u16> = Some(3);
        const TIMEOUT: Option<std::time::Duration> = Some(std::time::Duration::from_secs(30));

        /// One count per document at a time: submitting again while one waits gives that one.
        fn unique_key(&self) -> Option<String> {
            Some(self.document_id.clone())
        }

        async fn run(self, _ctx: &JobContext, _deps: &Deps) -> JobResult {
            if self.text.trim().is_empty() {
                // Running it again cannot help: fail for good.
                return Err(JobError::fatal("the document is empty"));
            }
            Ok(json!({
                "document_id": self.document_id,
                "words": self.text.split_whitespace().count(),
            }))
        }
    }
}

/// A periodic job: every Monday at 08:00 (or `SCHEDULE_WEEKLY_REPORT`), counts the jobs that
/// succeeded. It takes the database from what the application gives its jobs (`Deps`).
mod weekly_report {
    use chrono::{DateTime, Utc};
    use keel::jobs::{Deps, Job, JobContext, JobError, JobResult, Queue, Scheduled};
    use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct WeeklyReport {
        /// The slot of the schedule this run is for; absent when queued by hand.
        #[serde(default)]
        pub scheduled_for: Option<DateTime<Utc>>,
    }

    impl Job for WeeklyReport {
        const NAME: &'static str = "weekly_report";
        const QUEUE: Queue = Queue::Maintenance;

        async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
            let db = deps.get::<DatabaseConnection>()?;
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT COUNT(*) AS n FROM jobs WHERE status = 'SUCCESS'",
                ))
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
            let succeeded: i64 = row
                .map(|r| r.try_get("", "n"))
                .transpose()
                .map_err(|e| JobError::retry(e.to_string()))?
                .unwrap_or(0);
            Ok(json!({"for": self.scheduled_for, "succeeded_jobs": succeeded}))
        }
    }

    impl Scheduled for WeeklyReport {
        const SETTING: &'static str = "SCHEDULE_WEEKLY_REPORT";
        const SCHEDULE: &'static str = "0 8 * * 1";

        fn at(slot: DateTime<Utc>) -> Self {
            Self {
                scheduled_for: Some(slot),
            }
        }
    }
}

pub use weekly_report::WeeklyReport;
pub use word_count::WordCount;

/// Keel's jobs and the two of this example: in a product, two lines in `app::JOBS`.
fn jobs() -> Vec<Registration> {
    [
        app::JOBS,
        &[jobs::job::<WordCount>(), jobs::periodic::<WeeklyReport>()],
    ]
    .concat()
}

/// What a worker needs, on a database with Keel's tables.
struct Worker {
    db: sea_orm::DatabaseConnection,
    queue: JobQueue,
    runner: Runner,
    /// Looks jobs up as the API and the CLI do.
    jobs: keel::jobs::Jobs,
    file: std::path::PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.file.display()));
        }
    }
}

/// A worker over a new SQLite database in the temporary directory, with settings `env`.
async fn worker(env: &[(&str, &str)]) -> Worker {
    let file = std::env::temp_dir().join(format!("keel-example-{}.db", uuid::Uuid::new_v4()));
    let mut env: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert(
        "DATABASE_URL".into(),
        format!("sqlite://{}?mode=rwc", file.display()),
    );
    let kinds: Vec<_> = jobs().iter().map(|r| r.kind).collect();
    let settings = Settings::from_map(&env, &kinds).expect("settings");
    let db = keel::db::connect(&settings.database)
        .await
        .expect("database");
    keel::db::migrate(&db).await.expect("migrations");
    let queue = JobQueue::new(settings.jobs.clone());
    let registry = Registry::builder()
        .jobs(&jobs(), Deps::default().with(db.clone()))
        .build();
    let jobs = keel::jobs::Jobs::new(db.clone(), queue.clone(), registry.clone());
    let runner = Runner::new(db.clone(), registry, settings.jobs, "example".into());
    Worker {
        db,
        queue,
        runner,
        jobs,
        file,
    }
}

#[tokio::main]
async fn main() {
    let w = worker(&[]).await;
    let job = jobs::NewJob::of(&WordCount {
        document_id: "doc-1".into(),
        text: "the quick brown fox".into(),
    });
    let id = w.queue.submit(&w.db, job).await.expect("submit").id();
    println!("word_count: {:?}", w.runner.run(id).await.expect("run"));
    let done = w.jobs.find(id).await.expect("find").expect("the job");
    println!("word_count result: {}", done.result.unwrap_or_default());
    let slot = chrono::Utc::now();
    let id = jobs::schedule::fire(&w.db, &w.queue, WeeklyReport::NAME, slot)
        .await
        .expect("fire");
    println!("weekly_report: {:?}", w.runner.run(id).await.expect("run"));
}

#[cfg(test)]
mod tests {
    use keel::jobs::{JobStatus, JobView, NewJob, Outcome, Queue, Submitted};
    use serde_json::json;

    use super::*;

    async fn row(w: &Worker, id: uuid::Uuid) -> JobView {
        w.jobs.find(id).await.unwrap().unwrap()
    }

    /// The job is routed, limited and run as its type declares, with its unique key.
    #[tokio::test]
    async fn the_word_count_job_runs_as_declared() {
        let w = worker(&[]).await;
        let doc = WordCount {
            document_id: "doc-7".into(),
            text: "one two  three\nfour".into(),
        };
        let Submitted::New { id, .. } = w.queue.submit(&w.db, NewJob::of(&doc)).await.unwrap()
        else {
            panic!("a first submission is new");
        };
        let again = w.queue.submit(&w.db, NewJob::of(&doc)).await.unwrap();
        assert_eq!(again, Submitted::Duplicate { id });
        let queued = row(&w, id).await;
        assert_eq!(
            (queued.queue.as_str(), queued.priority, queued.max_attempts),
            ("default", 6, 3)
        );

        assert_eq!(w.runner.run(id).await.unwrap(), Outcome::Succeeded);
        let done = row(&w, id).await;
        assert_eq!(done.status, JobStatus::Success);
        assert_eq!(
            done.result,
            Some(json!({"document_id": "doc-7", "words": 4}))
        );

        let empty = NewJob::of(&WordCount {
            document_id: "doc-8".into(),
            text: " ".into(),
        });
        let id = w.queue.submit(&w.db, empty).await.unwrap().id();
        assert_eq!(w.runner.run(id).await.unwrap(), Outcome::Failed);
        assert_eq!(
            row(&w, id).await.error.as_deref(),
            Some("the document is empty")
        );
    }

    /// The periodic job's setting is read (and checked) with the others, and a firing of the
    /// scheduler runs it with the payload of its slot.
    #[tokio::test]
    async fn the_weekly_report_is_scheduled_by_its_setting() {
        let w = worker(&[("SCHEDULE_WEEKLY_REPORT", "0 9 * * 5")]).await;
        let settings = w.queue.settings();
        let schedule = settings
            .schedules
            .iter()
            .find(|p| p.job == "weekly_report")
            .expect("scheduled");
        assert_eq!(schedule.expression, "0 9 * * 5");
        assert_eq!(settings.queue_of("weekly_report"), Queue::Maintenance);
        let kinds: Vec<_> = jobs().iter().map(|r| r.kind).collect();
        let bad = [("SCHEDULE_WEEKLY_REPORT".to_string(), "weekly".to_string())].into();
        assert_eq!(
            Settings::from_map(&bad, &kinds).unwrap_err().var,
            "SCHEDULE_WEEKLY_REPORT"
        );

        let slot = "2026-12-11T09:00:00Z".parse().unwrap();
        let id = jobs::schedule::fire(&w.db, &w.queue, "weekly_report", slot)
            .await
            .unwrap();
        // The slot's run is enqueued once, however often it fires.
        let twice = jobs::schedule::fire(&w.db, &w.queue, "weekly_report", slot)
            .await
            .unwrap();
        assert_eq!(id, twice);
        assert_eq!(w.runner.run(id).await.unwrap(), Outcome::Succeeded);
        assert_eq!(
            row(&w, id).await.result,
            Some(json!({"for": "2026-12-11T09:00:00Z", "succeeded_jobs": 0}))
        );
    }
}
