//! The demonstration jobs of the task API: echo, data processing and a long-running job.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::jobs::{Deps, Job, JobContext, JobError, JobResult};

/// Echoes `message`; the first `fail_attempts` attempts fail, to watch retries and
/// dead-lettering happen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestTask {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fail_attempts: u32,
}

impl Job for TestTask {
    const NAME: &'static str = "test_task";

    async fn run(self, ctx: &JobContext, _deps: &Deps) -> JobResult {
        let fail_attempts = self.fail_attempts;
        if u32::try_from(ctx.attempt).unwrap_or(0) <= fail_attempts {
            return Err(JobError::retry(format!(
                "failing on purpose (attempt {} of the {fail_attempts} requested to fail)",
                ctx.attempt
            )));
        }
        Ok(json!({"message": self.message, "attempt": ctx.attempt}))
    }
}

/// Records to summarise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessData {
    pub records: Vec<Map<String, Value>>,
}

impl Job for ProcessData {
    const NAME: &'static str = "process_data";

    async fn run(self, _ctx: &JobContext, _deps: &Deps) -> JobResult {
        Ok(summarise(&self.records))
    }
}

/// Seconds to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LongRunning {
    #[serde(default = "default_duration")]
    pub duration: u64,
}

fn default_duration() -> u64 {
    10
}

impl Job for LongRunning {
    const NAME: &'static str = "long_running";

    /// Sleeps `duration` seconds in one-second steps, reporting `{"current": n, "total": m}`
    /// after each; cancelling the job interrupts it.
    async fn run(self, ctx: &JobContext, _deps: &Deps) -> JobResult {
        let seconds = self.duration;
        ctx.progress.report(json!({"current": 0, "total": seconds}));
        for step in 1..=seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            ctx.progress
                .report(json!({"current": step, "total": seconds}));
        }
        Ok(json!({"slept_seconds": seconds}))
    }
}

/// Counts the records and summarises each field: how often it appears, and for numeric fields
/// the sum, minimum, maximum and mean.
fn summarise(records: &[Map<String, Value>]) -> Value {
    #[derive(Default)]
    struct Stats {
        present: u64,
        numeric: u64,
        sum: f64,
        min: Option<f64>,
        max: Option<f64>,
    }
    let mut fields: BTreeMap<String, Stats> = BTreeMap::new();
    for record in records {
        for (key, value) in record {
            let stats = fields.entry(key.clone()).or_default();
            stats.present += 1;
            if let Some(n) = value.as_f64() {
                stats.numeric += 1;
                stats.sum += n;
                stats.min = Some(stats.min.map_or(n, |m| m.min(n)));
                stats.max = Some(stats.max.map_or(n, |m| m.max(n)));
            }
        }
    }
    let summary: Map<String, Value> = fields
        .into_iter()
        .map(|(key, s)| {
            let mut entry = json!({"count": s.present});
            if s.numeric > 0 {
                entry["sum"] = json!(s.sum);
                entry["min"] = json!(s.min);
                entry["max"] = json!(s.max);
                entry["mean"] = json!(s.sum / s.numeric as f64);
            }
            (key, entry)
        })
        .collect();
    json!({"record_count": records.len(), "fields": summary})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(payload: Value, attempt: i32) -> JobContext {
        JobContext {
            job_id: uuid::Uuid::new_v4(),
            name: "t".into(),
            payload,
            attempt,
            max_attempts: 5,
            progress: Default::default(),
        }
    }

    /// Runs the job in `payload` as the worker does: read back as its type, then run.
    async fn run<J: Job>(ctx: JobContext) -> JobResult {
        let job: J = ctx.payload()?;
        job.run(&ctx, &Deps::default()).await
    }

    async fn process_data(ctx: JobContext) -> JobResult {
        run::<ProcessData>(ctx).await
    }

    async fn test_task(ctx: JobContext) -> JobResult {
        run::<TestTask>(ctx).await
    }

    #[tokio::test]
    async fn process_data_summarises_fields() {
        let payload = json!({"records": [{"a": 1, "b": "x"}, {"a": 3}, {"a": "n/a", "c": 2.5}]});
        let out = process_data(ctx(payload, 1)).await.unwrap();
        assert_eq!(out["record_count"], 3);
        assert_eq!(out["fields"]["a"]["count"], 3);
        assert_eq!(out["fields"]["a"]["sum"], 4.0);
        assert_eq!(out["fields"]["a"]["mean"], 2.0);
        assert_eq!(out["fields"]["b"], json!({"count": 1}));
        assert_eq!(out["fields"]["c"]["max"], 2.5);
        assert!(
            !process_data(ctx(json!({"records": [1]}), 1))
                .await
                .unwrap_err()
                .retryable
        );
    }

    #[tokio::test]
    async fn test_task_fails_the_requested_attempts() {
        let payload = json!({"message": "hi", "fail_attempts": 2});
        assert!(
            test_task(ctx(payload.clone(), 2))
                .await
                .unwrap_err()
                .retryable
        );
        assert_eq!(test_task(ctx(payload, 3)).await.unwrap()["message"], "hi");
    }
}
