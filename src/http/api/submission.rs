//! The options every task submission takes (Celery's names where it has them): `countdown` or
//! `eta`, `priority`, `unique_key` and `concurrency_key`. A malformed or out-of-range value is a 422 naming the parameter, like any
//! other invalid field, so query parameters are read leniently (`Lenient`) and checked here.

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};
use poem_openapi::{
    param::Query,
    registry::{MetaSchemaRef, Registry},
    types::{ParseFromParameter, ParseResult, Type},
};

pub const MAX_PRIORITY_PARAM: i64 = MAX_PRIORITY as i64;

use crate::{
    http::error::{ApiError, FieldError},
    jobs::NewJob,
    queues::MAX_PRIORITY,
};

/// The longest delay a submission may ask for.
pub const MAX_DELAY_SECONDS: i64 = 365 * 86_400;
pub const MAX_UNIQUE_KEY: usize = 128;

/// A query parameter documented as `T` whose malformed values reach the handler, so that the
/// handler can answer 422 for them instead of poem-openapi's 400.
pub enum Lenient<T> {
    Valid(T),
    Invalid(String),
}

impl<T: Type> Type for Lenient<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        match self {
            Self::Valid(v) => v.as_raw_value(),
            Self::Invalid(_) => None,
        }
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match self {
            Self::Valid(v) => v.raw_element_iter(),
            Self::Invalid(_) => Box::new(std::iter::empty()),
        }
    }
}

impl<T: ParseFromParameter> Lenient<T> {
    fn parse(value: &str) -> Self {
        match T::parse_from_parameter(value) {
            Ok(v) => Self::Valid(v),
            Err(e) => Self::Invalid(e.into_message()),
        }
    }
}

impl<T: ParseFromParameter> ParseFromParameter for Lenient<T> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self::parse(value))
    }
}

/// A lenient parameter documented with its bounds: `LO..=HI` for an integer, `LO..=HI`
/// characters for a string. The spec states what the handler checks, so that clients (and
/// schema-driven fuzzers) know the valid range; the check itself answers 422.
pub struct Bounded<T, const LO: i64, const HI: i64>(pub Lenient<T>);

impl<T: Type, const LO: i64, const HI: i64> Type for Bounded<T, LO, HI> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        match T::schema_ref() {
            MetaSchemaRef::Inline(mut schema) => {
                if schema.ty == "string" {
                    schema.min_length = usize::try_from(LO).ok();
                    schema.max_length = usize::try_from(HI).ok();
                } else {
                    schema.minimum = Some(LO as f64);
                    schema.maximum = Some(HI as f64);
                }
                MetaSchemaRef::Inline(schema)
            }
            other => other,
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_raw_value()
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        self.0.raw_element_iter()
    }
}

impl<T: ParseFromParameter, const LO: i64, const HI: i64> ParseFromParameter
    for Bounded<T, LO, HI>
{
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(Lenient::parse(value)))
    }
}

pub type Countdown = Bounded<i64, 0, MAX_DELAY_SECONDS>;
pub type Priority = Bounded<i64, 0, MAX_PRIORITY_PARAM>;
pub type UniqueKey = Bounded<String, 1, { MAX_UNIQUE_KEY as i64 }>;

/// The submission options as given, before checking.
pub struct Options {
    pub countdown: Option<Countdown>,
    pub eta: Option<Lenient<DateTime<Utc>>>,
    pub priority: Option<Priority>,
    pub unique_key: Option<UniqueKey>,
    pub concurrency_key: Option<UniqueKey>,
}

impl Options {
    /// The options of a submission's query.
    pub fn new(
        countdown: Query<Option<Countdown>>,
        eta: Query<Option<Lenient<DateTime<Utc>>>>,
        priority: Query<Option<Priority>>,
        unique_key: Query<Option<UniqueKey>>,
        concurrency_key: Query<Option<UniqueKey>>,
    ) -> Self {
        Self {
            countdown: countdown.0,
            eta: eta.0,
            priority: priority.0,
            unique_key: unique_key.0,
            concurrency_key: concurrency_key.0,
        }
    }

    /// Applies the options to `job`, or says what is wrong with each bad one.
    pub fn apply(self, mut job: NewJob) -> Result<NewJob, ApiError> {
        let now = Utc::now();
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.into(),
                message,
            })
        };
        let latest = now + Duration::seconds(MAX_DELAY_SECONDS);
        let countdown = self.countdown.map(|c| c.0);
        let run_at = match (countdown, self.eta) {
            (Some(_), Some(_)) => {
                bad(
                    "eta",
                    "give countdown or eta, not both: each says when to start".into(),
                );
                None
            }
            (Some(Lenient::Valid(seconds)), None) if (0..=MAX_DELAY_SECONDS).contains(&seconds) => {
                Some(now + Duration::seconds(seconds))
            }
            (Some(Lenient::Valid(_)), None) => {
                bad(
                    "countdown",
                    format!("must be a whole number of seconds from 0 to {MAX_DELAY_SECONDS}"),
                );
                None
            }
            (Some(Lenient::Invalid(e)), None) => {
                bad(
                    "countdown",
                    format!("must be a whole number of seconds: {e}"),
                );
                None
            }
            (None, Some(Lenient::Valid(at))) if at <= latest => Some(at),
            (None, Some(Lenient::Valid(_))) => {
                bad(
                    "eta",
                    format!("must be within {} days", MAX_DELAY_SECONDS / 86_400),
                );
                None
            }
            (None, Some(Lenient::Invalid(e))) => {
                bad(
                    "eta",
                    format!("must be an RFC 3339 time such as 2027-01-31T09:00:00Z: {e}"),
                );
                None
            }
            (None, None) => None,
        };
        let priority = match self.priority.map(|p| p.0) {
            None => None,
            Some(Lenient::Valid(p)) if (0..=i64::from(MAX_PRIORITY)).contains(&p) => {
                u8::try_from(p).ok()
            }
            Some(_) => {
                bad(
                    "priority",
                    format!(
                        "must be a whole number from 0 to {MAX_PRIORITY} ({MAX_PRIORITY} first)"
                    ),
                );
                None
            }
        };
        let mut key = |name: &str, given: Option<UniqueKey>| {
            let key = match given.map(|k| k.0) {
                Some(Lenient::Valid(key)) => Some(key),
                Some(Lenient::Invalid(_)) | None => None,
            };
            if let Some(key) = &key
                && !(1..=MAX_UNIQUE_KEY).contains(&key.chars().count())
            {
                bad(name, format!("must be 1 to {MAX_UNIQUE_KEY} characters"));
            }
            key
        };
        let unique_key = key("unique_key", self.unique_key);
        let concurrency_key = key("concurrency_key", self.concurrency_key);
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        if let Some(at) = run_at {
            job = job.run_at(at);
        }
        if let Some(p) = priority {
            job = job.priority(p);
        }
        if let Some(key) = unique_key {
            job = job.unique(key);
        }
        if let Some(key) = concurrency_key {
            job = job.concurrency_key(key);
        }
        Ok(job)
    }
}
