//! Limits on starting jobs, held at the claim, whichever worker process claims: a queue's rate
//! (starts spaced evenly, `JOB_QUEUE_LIMITS` `rate:N/s`), a queue's concurrency (jobs running at
//! once, `concurrency:N`) and a concurrency key's (`JOB_KEY_CONCURRENCY` jobs of one key at once).
//!
//! A claim of limited jobs is one transaction that first takes the locks of their queues and
//! keys (PostgreSQL advisory locks, always in the same order; on SQLite a lock of this process,
//! the only one writing), counts the running jobs, reads each rate-limited queue's next start
//! (`job_limits`), and then starts what the limits allow. A job they hold back is not started
//! and uses no attempt: it goes back to the table, unpublished, with why in `waiting_for` and
//! `run_at` its turn: for a rate, the start slot reserved for it (which it then takes without
//! reserving another, unless it comes late for it); for a concurrency limit, a time to look again, brought forward as soon
//! as a job of its queue or key finishes (`hand_on`).

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Value};
use uuid::Uuid;

use crate::{config::limits::Limits, queues::Queue};

/// Why a job waits, as `jobs.waiting_for` stores it and its status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Its queue's rate: it starts at its reserved slot.
    Rate,
    /// Its queue's concurrency: as many of its queue run as may.
    QueueConcurrency,
    /// Its key's concurrency: as many jobs of its `concurrency_key` run as may.
    KeyConcurrency,
}

impl Held {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate_limit",
            Self::QueueConcurrency => "queue_concurrency_limit",
            Self::KeyConcurrency => "key_concurrency_limit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Rate, Self::QueueConcurrency, Self::KeyConcurrency]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
}

/// When a job held by a concurrency limit is looked at again should no finishing job hand its
/// place on first (one that finished in a worker that died before saying so).
const RECHECK: Duration = Duration::from_secs(5);

/// A slot this close is now: the claim is not worth handing back for it.
const NOW_ENOUGH: Duration = Duration::from_millis(2);

/// A job comes for its reserved slot late when it comes more than one interval after it, or
/// this long (a fast rate's interval is shorter than a message's way back).
const LATE_AFTER: Duration = Duration::from_millis(20);

/// A claimable job a limit may apply to.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub id: Uuid,
    pub queue: Queue,
    pub key: Option<String>,
    pub held: Option<Held>,
    pub run_at: DateTime<Utc>,
}

/// On SQLite one process writes: a lock of its own orders its limited claims.
static SQLITE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the locks of `candidates`' limited queues and keys for the rest of the transaction
/// `tx` (PostgreSQL; on SQLite the caller holds `sqlite_lock`).
async fn lock(
    tx: &impl ConnectionTrait,
    limits: &Limits,
    candidates: &[Candidate],
) -> Result<(), DbErr> {
    if tx.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    // Queues before keys, each in order: every claimer takes them in one order, so two never
    // wait for each other.
    let mut names: Vec<String> = candidates
        .iter()
        .filter(|c| limits.limits(c.queue))
        .map(|c| format!("queue:{}", c.queue))
        .collect();
    names.sort();
    names.dedup();
    let mut keys: Vec<String> = candidates
        .iter()
        .filter_map(|c| c.key.as_ref().map(|k| format!("key:{k}")))
        .collect();
    keys.sort();
    keys.dedup();
    names.extend(keys);
    for name in names {
        tx.execute_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7241))",
            [Value::from(name)],
        ))
        .await?;
    }
    Ok(())
}

/// The process lock SQLite's limited claims take (held until the transaction ends).
pub(super) async fn sqlite_lock(
    backend: DbBackend,
) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    (backend == DbBackend::Sqlite).then_some(SQLITE.lock().await)
}

/// What the limits decided for a claim's candidates.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// To start now, in order.
    pub admitted: Vec<Uuid>,
    /// Held for their rate's start slot, each with it: their messages stay with the worker
    /// that holds them until then (they are not published again).
    pub slots: Vec<(Uuid, DateTime<Utc>)>,
    /// Held for a concurrency limit: back in the table, unpublished, for the relay.
    pub unpublished: usize,
}

/// Which of `candidates` (in the order to start them) start now, decided inside the transaction
/// `tx`, which holds the others back (they are to be claimed in it too).
pub(super) async fn admit(
    tx: &impl ConnectionTrait,
    limits: &Limits,
    candidates: Vec<Candidate>,
) -> Result<Admission, DbErr> {
    lock(tx, limits, &candidates).await?;
    // After the locks: whatever started or finished before is counted.
    let now = Utc::now();
    let backend = tx.get_database_backend();
    let query = |sql: &str, values: Vec<Value>| {
        tx.query_all_raw(crate::db::numbered_statement(backend, sql, values))
    };

    let mut queue_running: BTreeMap<Queue, i64> = BTreeMap::new();
    let limited: Vec<Queue> = Queue::ALL
        .into_iter()
        .filter(|q| limits.of(*q).concurrency.is_some() && candidates.iter().any(|c| c.queue == *q))
        .collect();
    for queue in &limited {
        queue_running.insert(*queue, running(tx, "queue", queue.as_str()).await?);
    }
    let mut key_running: BTreeMap<String, i64> = BTreeMap::new();
    let mut keys: Vec<String> = candidates.iter().filter_map(|c| c.key.clone()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let n = running(tx, "concurrency_key", &key).await?;
        key_running.insert(key, n);
    }
    // Each rate-limited queue's next free start.
    let mut next_start: BTreeMap<Queue, DateTime<Utc>> = BTreeMap::new();
    for queue in Queue::ALL {
        if limits.of(queue).rate.is_none() || !candidates.iter().any(|c| c.queue == queue) {
            continue;
        }
        let name = format!("rate:{queue}");
        query(
            "INSERT INTO job_limits (name, next_start) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            vec![name.clone().into(), now.into()],
        )
        .await?;
        let rows = query(
            "SELECT next_start FROM job_limits WHERE name = $1",
            vec![name.into()],
        )
        .await?;
        let at: DateTime<Utc> = rows
            .first()
            .map(|r| r.try_get_by_index(0))
            .transpose()?
            .unwrap_or(now);
        next_start.insert(queue, at);
    }

    let key_limit = i64::from(limits.key_concurrency);
    let mut admitted = Vec::new();
    let mut held: Vec<(Uuid, Held, DateTime<Utc>)> = Vec::new();
    let recheck = now + chrono::Duration::from_std(RECHECK).unwrap_or_default();
    let near = now + chrono::Duration::from_std(NOW_ENOUGH).unwrap_or_default();
    for c in candidates {
        let these = limits.of(c.queue);
        if let Some(key) = &c.key
            && key_running.get(key).copied().unwrap_or(0) >= key_limit
        {
            held.push((c.id, Held::KeyConcurrency, recheck));
            continue;
        }
        if let Some(limit) = these.concurrency
            && queue_running.get(&c.queue).copied().unwrap_or(0) >= i64::from(limit)
        {
            held.push((c.id, Held::QueueConcurrency, recheck));
            continue;
        }
        if let (Some(rate), Some(next)) = (these.rate, next_start.get_mut(&c.queue)) {
            // A job held for its slot takes it once due, unless it comes late (behind a flood
            // of new messages, say): slots missed are not made up in a burst. Any other job
            // reserves the next free slot.
            let late =
                chrono::Duration::from_std(rate.interval().max(LATE_AFTER)).unwrap_or_default();
            let reserved = c.held == Some(Held::Rate) && c.run_at <= near && c.run_at + late >= now;
            if !reserved {
                let slot = (*next).max(now);
                *next = slot + chrono::Duration::from_std(rate.interval()).unwrap_or_default();
                if slot > near {
                    held.push((c.id, Held::Rate, slot));
                    continue;
                }
            }
        }
        if let Some(key) = &c.key {
            *key_running.entry(key.clone()).or_default() += 1;
        }
        if let Some(n) = queue_running.get_mut(&c.queue) {
            *n += 1;
        }
        admitted.push(c.id);
    }

    for (queue, at) in next_start {
        query(
            "UPDATE job_limits SET next_start = $2 WHERE name = $1",
            vec![format!("rate:{queue}").into(), at.into()],
        )
        .await?;
    }
    let slots: Vec<(Uuid, DateTime<Utc>)> = held
        .iter()
        .filter(|(_, why, _)| *why == Held::Rate)
        .map(|(id, _, at)| (*id, *at))
        .collect();
    let unpublished = held.len() - slots.len();
    if !held.is_empty() {
        let mut values: Vec<Value> = vec![now.into()];
        let mut rows = Vec::with_capacity(held.len());
        for (id, why, at) in held {
            let n = values.len();
            rows.push(format!("(${}, ${}, ${})", n + 1, n + 2, n + 3));
            values.push(id.into());
            values.push(why.as_str().into());
            values.push(at.into());
        }
        // A job held for a concurrency limit is unpublished, so that the relay publishes it
        // again when `run_at` comes (or a finishing job brings it forward). One held for its
        // rate slot keeps its message, which the claiming worker holds until the slot: it
        // counts as published now, so that the relay's sweep leaves it alone meanwhile.
        let sql = format!(
            "UPDATE jobs SET waiting_for = v.column2, run_at = v.column3, \
             published_at = CASE WHEN v.column2 = '{rate}' THEN $1 ELSE NULL END, \
             updated_at = $1 FROM (VALUES {}) AS v \
             WHERE jobs.id = v.column1 AND jobs.status IN ('PENDING', 'RETRY')",
            rows.join(", "),
            rate = Held::Rate.as_str()
        );
        query(&sql, values).await?;
    }
    Ok(Admission {
        admitted,
        slots,
        unpublished,
    })
}

/// How many jobs run whose `column` (`queue`, `concurrency_key`) is `value`.
async fn running(tx: &impl ConnectionTrait, column: &str, value: &str) -> Result<i64, DbErr> {
    let sql = format!("SELECT COUNT(*) FROM jobs WHERE status = 'STARTED' AND {column} = $1");
    let row = tx
        .query_one_raw(crate::db::numbered_statement(
            tx.get_database_backend(),
            &sql,
            vec![value.into()],
        ))
        .await?;
    Ok(row.map(|r| r.try_get_by_index(0)).transpose()?.unwrap_or(0))
}

/// Brings forward the jobs waiting for a concurrency limit that the finished jobs (`queues`
/// with a concurrency limit, and `keys`) held: as many per queue or key as finished there.
/// Whether any was brought forward (the caller wakes its relay or in-process worker).
pub(super) async fn hand_on(
    db: &impl ConnectionTrait,
    limits: &Limits,
    finished: &[(Queue, Option<String>)],
) -> Result<bool, DbErr> {
    let mut per_queue: BTreeMap<Queue, u64> = BTreeMap::new();
    let mut per_key: BTreeMap<&str, u64> = BTreeMap::new();
    for (queue, key) in finished {
        if limits.of(*queue).concurrency.is_some() {
            *per_queue.entry(*queue).or_default() += 1;
        }
        if let Some(key) = key {
            *per_key.entry(key.as_str()).or_default() += 1;
        }
    }
    if per_queue.is_empty() && per_key.is_empty() {
        return Ok(false);
    }
    let backend = db.get_database_backend();
    let now = Utc::now();
    let mut moved = 0;
    let select = |column: &str, why: Held| {
        format!(
            "UPDATE jobs SET run_at = $1 WHERE id IN (SELECT id FROM jobs \
             WHERE status IN ('PENDING', 'RETRY') AND waiting_for = '{}' AND {column} = $2 \
             AND run_at > $1 ORDER BY priority DESC, run_at LIMIT $3)",
            why.as_str()
        )
    };
    for (queue, n) in per_queue {
        moved += db
            .execute_raw(crate::db::numbered_statement(
                backend,
                &select("queue", Held::QueueConcurrency),
                vec![now.into(), queue.as_str().into(), (n as i64).into()],
            ))
            .await?
            .rows_affected();
    }
    for (key, n) in per_key {
        moved += db
            .execute_raw(crate::db::numbered_statement(
                backend,
                &select("concurrency_key", Held::KeyConcurrency),
                vec![now.into(), key.into(), (n as i64).into()],
            ))
            .await?
            .rows_affected();
    }
    Ok(moved > 0)
}

#[cfg(test)]
mod tests {
    use super::Held;

    #[test]
    fn reasons_are_stored_by_name() {
        for held in [Held::Rate, Held::QueueConcurrency, Held::KeyConcurrency] {
            assert_eq!(Held::parse(held.as_str()), Some(held));
        }
        assert_eq!(Held::parse("other"), None);
    }
}
