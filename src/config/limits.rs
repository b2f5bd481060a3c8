//! Limits on when jobs start, held across every worker process: per queue a rate (jobs started
//! per second, spaced evenly) and a concurrency (jobs running at once), from `JOB_QUEUE_LIMITS`;
//! per concurrency key (a submission option) `JOB_KEY_CONCURRENCY` jobs at once.

use std::time::Duration;

use crate::queues::Queue;

/// Jobs started per `per`, spaced evenly: one every `per / jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub jobs: u32,
    pub per: Duration,
}

impl Rate {
    /// The time between two starts.
    pub fn interval(&self) -> Duration {
        self.per / self.jobs.max(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.jobs)
    }
}

/// One queue's limits; either may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    pub rate: Option<Rate>,
    pub concurrency: Option<u32>,
}

/// Every limit on starting jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The queues with a limit, each once.
    pub queues: Vec<(Queue, QueueLimits)>,
    /// How many jobs of one `concurrency_key` run at once.
    pub key_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            key_concurrency: 1,
        }
    }
}

impl Limits {
    /// `queue`'s limits (none set: both absent).
    pub fn of(&self, queue: Queue) -> QueueLimits {
        self.queues
            .iter()
            .find(|(q, _)| *q == queue)
            .map(|(_, l)| *l)
            .unwrap_or_default()
    }

    /// Whether `queue` has a limit.
    pub fn limits(&self, queue: Queue) -> bool {
        self.queues.iter().any(|(q, _)| *q == queue)
    }
}

/// Reads `JOB_QUEUE_LIMITS`: `;`-separated `queue=limit,limit`, each limit `rate:N/s` (or `/m`,
/// `/h`) or `concurrency:N`, e.g. `email=rate:50/s;default=concurrency:8,rate:100/s`.
pub fn parse_queue_limits(raw: &str) -> Result<Vec<(Queue, QueueLimits)>, String> {
    let mut queues: Vec<(Queue, QueueLimits)> = Vec::new();
    for part in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, limits) = part
            .split_once('=')
            .ok_or_else(|| format!("expected queue=limit such as email=rate:50/s, got {part:?}"))?;
        let queue = Queue::parse(name.trim()).ok_or_else(|| {
            format!(
                "no queue {:?} (queues: {})",
                name.trim(),
                Queue::ALL.map(|q| q.as_str()).join(", ")
            )
        })?;
        if queues.iter().any(|(q, _)| *q == queue) {
            return Err(format!("queue {queue} is given twice"));
        }
        let mut these = QueueLimits::default();
        for limit in limits.split(',').map(str::trim) {
            let (kind, value) = limit.split_once(':').ok_or_else(|| {
                format!("expected rate:N/s or concurrency:N for queue {queue}, got {limit:?}")
            })?;
            match kind.trim() {
                "rate" if these.rate.is_none() => these.rate = Some(parse_rate(value.trim())?),
                "concurrency" if these.concurrency.is_none() => {
                    let n: u32 = value.trim().parse().ok().filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| format!("concurrency of queue {queue} must be a whole number from 1 to 10000, got {:?}", value.trim()))?;
                    these.concurrency = Some(n);
                }
                "rate" | "concurrency" => {
                    return Err(format!("queue {queue} has two {} limits", kind.trim()));
                }
                other => {
                    return Err(format!(
                        "no limit {other:?} for queue {queue}: rate:N/s or concurrency:N"
                    ));
                }
            }
        }
        queues.push((queue, these));
    }
    Ok(queues)
}

fn parse_rate(value: &str) -> Result<Rate, String> {
    let bad = || format!("expected a rate such as 50/s, 100/m or 1000/h, got {value:?}");
    let (jobs, unit) = value.split_once('/').ok_or_else(bad)?;
    let jobs: u32 = jobs
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(bad)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok(Rate { jobs, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_limits_are_read() {
        let limits =
            parse_queue_limits("email=rate:50/s; default=concurrency:8,rate:120/m").unwrap();
        assert_eq!(
            limits,
            vec![
                (
                    Queue::Email,
                    QueueLimits {
                        rate: Some(Rate {
                            jobs: 50,
                            per: Duration::from_secs(1)
                        }),
                        concurrency: None,
                    }
                ),
                (
                    Queue::Default,
                    QueueLimits {
                        rate: Some(Rate {
                            jobs: 120,
                            per: Duration::from_secs(60)
                        }),
                        concurrency: Some(8),
                    }
                ),
            ]
        );
        assert_eq!(
            limits[0].1.rate.unwrap().interval(),
            Duration::from_millis(20)
        );
        assert_eq!(limits[1].1.rate.unwrap().to_string(), "120/m");
        assert_eq!(parse_queue_limits("").unwrap(), vec![]);
    }

    #[test]
    fn bad_limits_say_what_is_wrong() {
        for (raw, says) in [
            ("mail=rate:5/s", "no queue \"mail\""),
            ("email=rate:5/d", "expected a rate"),
            ("email=rate:0/s", "expected a rate"),
            ("email=speed:5", "no limit \"speed\""),
            ("email=concurrency:0", "from 1 to 10000"),
            ("email=rate:5/s;email=concurrency:2", "given twice"),
            ("email=rate:5/s,rate:6/s", "two rate limits"),
            ("email", "expected queue=limit"),
        ] {
            let e = parse_queue_limits(raw).unwrap_err();
            assert!(e.contains(says), "{raw}: {e}");
        }
    }
}
