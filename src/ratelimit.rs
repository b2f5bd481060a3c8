//! Rate limits (the table in the "Rate limits" section of docs/configuration.md and in each operation's
//! description), as a generic cell rate algorithm
//! (GCRA): each key stores one timestamp, the "theoretical arrival time", so a limit of N per
//! minute allows a burst of N and then one request every 60/N seconds.
//!
//! With Redis the decision is one atomic Lua script using Redis's clock, shared by every server
//! instance; without Redis, or while Redis is away and `RATE_LIMIT_FAIL_OPEN` is on, the same
//! arithmetic runs in this process's memory.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use fred::{interfaces::KeysInterface, types::scripts::Script};
use sha2::Digest;

use crate::{
    config::{Budget, Budgets},
    redis::Redis,
};

/// A named budget: `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub limit: u32,
    pub period_ms: u64,
}

impl Rule {
    fn new(name: &'static str, budget: Budget) -> Self {
        Self {
            name,
            limit: budget.limit,
            period_ms: u64::try_from(budget.period.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The period in words, for messages: `minute`, `15 minutes`.
    pub fn period_words(&self) -> String {
        Budget {
            limit: self.limit,
            period: std::time::Duration::from_millis(self.period_ms),
        }
        .period_words()
    }
}

/// Every limit, from the settings (`RATE_LIMIT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub login: Rule,
    pub register: Rule,
    pub verification: Rule,
    pub password_reset: Rule,
    pub deletion: Rule,
    /// Two-factor set-up, codes and sign-in steps, per client address.
    pub mfa: Rule,
    /// Provider sign-ins (authorize, callback, exchange, native tokens), per client address.
    pub oidc: Rule,
    pub default: Rule,
    /// Failed logins for one account, from whatever addresses.
    pub account_failures: Rule,
}

impl Rules {
    pub fn new(budgets: &Budgets) -> Self {
        Self {
            login: Rule::new("login", budgets.login),
            register: Rule::new("register", budgets.register),
            verification: Rule::new("verification", budgets.verification),
            password_reset: Rule::new("password_reset", budgets.password_reset),
            deletion: Rule::new("deletion", budgets.deletion),
            mfa: Rule::new("mfa", budgets.mfa),
            oidc: Rule::new("oidc", budgets.oidc),
            default: Rule::new("default", budgets.default),
            account_failures: Rule::new("login_failures", budgets.login_failures),
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self::new(&Budgets::default())
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the whole budget is available again.
    pub reset_secs: u64,
    /// Seconds until the next request is allowed (0 when allowed).
    pub retry_after_secs: u64,
}

/// GCRA on millisecond timestamps; `commit` false only asks.
fn gcra(tat: Option<u64>, now: u64, rule: Rule, commit: bool) -> (Decision, Option<u64>) {
    let interval = rule.period_ms / u64::from(rule.limit.max(1));
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    let allow_at = new_tat.saturating_sub(rule.period_ms);
    if now < allow_at {
        return (
            Decision {
                allowed: false,
                limit: rule.limit,
                remaining: 0,
                reset_secs: (tat - now).div_ceil(1000),
                retry_after_secs: (allow_at - now).div_ceil(1000).max(1),
            },
            None,
        );
    }
    let remaining = (rule.period_ms - (new_tat - now)) / interval;
    (
        Decision {
            allowed: true,
            limit: rule.limit,
            remaining: remaining as u32,
            reset_secs: (new_tat - now).div_ceil(1000),
            retry_after_secs: 0,
        },
        commit.then_some(new_tat),
    )
}

/// The same arithmetic as `gcra`, atomically in Redis on Redis's clock.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local commit = ARGV[3] == '1'
local interval = math.floor(period / limit)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
if commit then
  redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
end
return {1, math.floor((period - (new_tat - now)) / interval), new_tat - now, 0}
"#;

#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Option<Redis>,
    fail_open: bool,
    rules: Rules,
    script: Script,
    started: Instant,
    memory: Mutex<HashMap<String, u64>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the rate limiter cannot reach redis")]
pub struct Unavailable;

impl Limiter {
    pub fn new(redis: Option<Redis>, fail_open: bool, rules: Rules) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                fail_open,
                rules,
                script: Script::from_lua(GCRA_LUA),
                started: Instant::now(),
                memory: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The limits this limiter enforces.
    pub fn rules(&self) -> &Rules {
        &self.inner.rules
    }

    fn in_memory(&self, key: &str, rule: Rule, commit: bool) -> Decision {
        let now = self.inner.started.elapsed().as_millis() as u64 + rule.period_ms;
        let mut memory = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner());
        if memory.len() > 100_000 {
            // Drop every key whose budget is whole again.
            memory.retain(|_, tat| *tat > now);
        }
        let (decision, new_tat) = gcra(memory.get(key).copied(), now, rule, commit);
        if let Some(t) = new_tat {
            memory.insert(key.to_string(), t);
        }
        decision
    }

    /// Counts one request against `rule` for `subject` (or only asks, with `commit` false).
    pub async fn check(
        &self,
        rule: Rule,
        subject: &str,
        commit: bool,
    ) -> Result<Decision, Unavailable> {
        let key = format!("ratelimit:{}:{subject}", rule.name);
        let Some(redis) = &self.inner.redis else {
            return Ok(self.in_memory(&key, rule, commit));
        };
        let run = self.inner.script.evalsha_with_reload::<Vec<i64>, _, _>(
            redis.client(),
            vec![redis.key(&key)],
            vec![
                rule.period_ms.to_string(),
                rule.limit.to_string(),
                if commit { "1" } else { "0" }.to_string(),
            ],
        );
        match redis.run("EVALSHA", run).await {
            Ok(v) if v.len() == 4 => Ok(Decision {
                allowed: v[0] == 1,
                limit: rule.limit,
                remaining: v[1].max(0) as u32,
                reset_secs: (v[2].max(0) as u64).div_ceil(1000),
                retry_after_secs: if v[0] == 1 {
                    0
                } else {
                    (v[3].max(0) as u64).div_ceil(1000).max(1)
                },
            }),
            other => {
                let error = match other {
                    Err(e) => e.to_string(),
                    Ok(v) => format!("unexpected script answer {v:?}"),
                };
                static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let warn = crate::redis::should_warn(&WARNED);
                if self.inner.fail_open {
                    if warn {
                        tracing::warn!(%error, "rate limits counted in memory per instance: redis unavailable (RATE_LIMIT_FAIL_OPEN=true)");
                    }
                    Ok(self.in_memory(&key, rule, commit))
                } else {
                    if warn {
                        tracing::error!(%error, "requests refused: rate limiter unavailable (RATE_LIMIT_FAIL_OPEN=false)");
                    }
                    Err(Unavailable)
                }
            }
        }
    }

    /// Forgets a subject's count (after a successful login, its failures no longer matter).
    pub async fn reset(&self, rule: Rule, subject: &str) {
        let key = format!("ratelimit:{}:{subject}", rule.name);
        match &self.inner.redis {
            None => {
                self.inner
                    .memory
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
            Some(redis) => {
                let _ = redis
                    .run("DEL", redis.client().del::<i64, _>(redis.key(&key)))
                    .await;
            }
        }
    }
}

/// The subject for per-account limits: a digest, so no address or name is stored in Redis.
pub fn account_subject(identifier: &str) -> String {
    hex::encode(&sha2::Sha256::digest(identifier.trim().to_lowercase().as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        let rule = Rule::new("t", Budget::per_minute(5));
        let mut tat = None;
        let now = 1_000_000;
        for i in 0..5 {
            let (d, t) = gcra(tat, now, rule, true);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
            tat = t;
        }
        let (d, _) = gcra(tat, now, rule, true);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after_secs, d.reset_secs), (0, 12, 60));
        // 12 s later one more request fits.
        let (d, t) = gcra(tat, now + 12_000, rule, true);
        assert!(d.allowed && d.remaining == 0 && t.is_some());
        // Asking does not count.
        let (d, t) = gcra(None, now, rule, false);
        assert!(d.allowed && t.is_none());
    }
}
