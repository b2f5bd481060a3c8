//! The scheduler's settings: each periodic job's cron schedule (`SCHEDULE_*`, as its job
//! declares) read on the wall clock of `SCHEDULER_TIMEZONE`, daylight saving included.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use cron::Schedule;

use super::reader::{ConfigError, Reader};
use crate::queues::JobKind;

/// One periodic job and when it fires: a cron schedule read on the wall clock of a time zone.
#[derive(Debug, Clone)]
pub struct Periodic {
    pub job: &'static str,
    /// The payload of the run for a slot, as the job declares it.
    pub payload: fn(DateTime<Utc>) -> serde_json::Value,
    /// The expression as written in the setting.
    pub expression: String,
    pub schedule: Schedule,
    pub timezone: Tz,
}

impl Periodic {
    /// The firings after `after`, in order. Across daylight saving changes a firing keeps its
    /// wall-clock time; one the clock skips (02:30 when 02:00 jumps to 03:00) fires when the
    /// gap ends, and one the clock shows twice (02:30 when 03:00 falls back to 02:00) fires
    /// once, the first time: as cron does.
    pub fn upcoming(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // The schedule walks the zone's wall clock, written as if it were UTC.
        let wall = after.with_timezone(&self.timezone).naive_local().and_utc();
        self.schedule
            .after(&wall)
            .map(|local| self.instant(local.naive_utc()))
            .filter(move |at| *at > after)
    }

    /// The next firing after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.upcoming(after).next()
    }

    /// When the wall-clock time `local` happens in the zone.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut probe = local;
        // A time in a daylight saving gap: the first minute after the gap (gaps last an
        // hour, or at most a day where a zone skipped one).
        for _ in 0..=24 * 60 {
            match self.timezone.from_local_datetime(&probe) {
                LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => {
                    return at.with_timezone(&Utc);
                }
                LocalResult::None => probe += chrono::Duration::minutes(1),
            }
        }
        local.and_utc()
    }
}

/// Parses a cron expression: the usual five fields `min hour day-of-month month day-of-week`,
/// or six with seconds first (`sec min hour ...`), or `@hourly`, `@daily` and the like.
pub fn parse_cron(expression: &str) -> Result<Schedule, String> {
    let expression = expression.trim();
    let with_seconds = if expression.split_whitespace().count() == 5 {
        format!("0 {expression}")
    } else {
        expression.to_string()
    };
    // The parser's message draws a caret under the expression on lines of its own: its last
    // line says what is wrong.
    Schedule::from_str(&with_seconds).map_err(|e| {
        let message = e.to_string();
        message
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// Each periodic job's cron expression, read in `SCHEDULER_TIMEZONE`; `off` turns it off.
pub(super) fn schedules(r: &Reader, kinds: &[JobKind]) -> Result<Vec<Periodic>, ConfigError> {
    let timezone: Tz = r.parse(
        "SCHEDULER_TIMEZONE",
        Tz::UTC,
        "an IANA time zone name such as UTC or Europe/Berlin",
    )?;
    let mut schedules = Vec::new();
    for kind in kinds {
        let Some(declared) = kind.schedule else {
            continue;
        };
        let (setting, default) = (declared.setting, declared.default);
        let expression = r.string(setting, default);
        if expression.trim().eq_ignore_ascii_case("off") {
            continue;
        }
        let schedule = parse_cron(&expression).map_err(|e| {
            ConfigError::new(
                setting,
                format!(
                    "expected a cron expression `min hour day month weekday` (or with seconds first, or `off`), got {expression:?}: {e}"
                ),
            )
        })?;
        schedules.push(Periodic {
            job: kind.name,
            payload: declared.payload,
            expression: expression.trim().to_string(),
            schedule,
            timezone,
        });
    }
    Ok(schedules)
}
