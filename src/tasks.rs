//! The demonstration tasks of the task API: echo, data processing and a long-running job.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Map, Value, json};

use crate::jobs::{JobContext, JobError, JobResult};

pub const TEST_TASK: &str = "test_task";
pub const PROCESS_DATA: &str = "process_data";
pub const LONG_RUNNING: &str = "long_running";

/// Echoes its message. `fail_attempts: n` makes the first n attempts fail, to watch retries and
/// dead-lettering happen.
pub async fn test_task(ctx: JobContext) -> JobResult {
    let fail_attempts = ctx
        .payload
        .get("fail_attempts")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if i64::from(ctx.attempt) <= fail_attempts {
        return Err(JobError::retry(format!(
            "failing on purpose (attempt {} of the {fail_attempts} requested to fail)",
            ctx.attempt
        )));
    }
    Ok(json!({
        "message": ctx.payload.get("message").cloned().unwrap_or(Value::Null),
        "attempt": ctx.attempt,
    }))
}

/// Counts the records and summarises each field: how often it appears, and for numeric fields
/// the sum, minimum, maximum and mean.
pub async fn process_data(ctx: JobContext) -> JobResult {
    let Some(records) = ctx.payload.get("records").and_then(Value::as_array) else {
        return Err(JobError::fatal("payload has no `records` array"));
    };
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
        let Some(object) = record.as_object() else {
            return Err(JobError::fatal("every record must be a JSON object"));
        };
        for (key, value) in object {
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
    Ok(json!({"record_count": records.len(), "fields": summary}))
}

/// Sleeps `duration` seconds in one-second steps; cancelling the job interrupts it.
pub async fn long_running(ctx: JobContext) -> JobResult {
    let seconds = ctx
        .payload
        .get("duration")
        .and_then(Value::as_u64)
        .unwrap_or(10);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(json!({"slept_seconds": seconds}))
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
        }
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
