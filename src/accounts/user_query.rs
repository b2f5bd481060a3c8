//! A query over the accounts, as the admin listing and search take it: filters, an order and a
//! cursor that resumes just after the last account of a page.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, Select,
    sea_query::{Expr, ExprTrait as _, LikeExpr, Order},
};
use uuid::Uuid;

use crate::entities::user;

/// An account as lists show it: every column but the password hash and the deletion reminder's
/// bookkeeping, read by position (the order of `LISTED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub username_lower: String,
    pub is_superuser: bool,
    pub is_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deletion_scheduled_for: Option<DateTime<Utc>>,
    pub deletion_requested_at: Option<DateTime<Utc>>,
    pub deletion_reason: Option<String>,
    pub deleted_by: Option<Uuid>,
    pub mfa_enabled: bool,
}

pub(super) const LISTED: [user::Column; 15] = [
    user::Column::Id,
    user::Column::Email,
    user::Column::Username,
    user::Column::UsernameLower,
    user::Column::IsSuperuser,
    user::Column::IsVerified,
    user::Column::CreatedAt,
    user::Column::UpdatedAt,
    user::Column::IsDeleted,
    user::Column::DeletedAt,
    user::Column::DeletionScheduledFor,
    user::Column::DeletionRequestedAt,
    user::Column::DeletionReason,
    user::Column::DeletedBy,
    user::Column::MfaEnabled,
];

impl FromQueryResult for Listed {
    fn from_query_result(row: &QueryResult, _prefix: &str) -> Result<Self, DbErr> {
        Ok(Self {
            id: row.try_get_by_index(0)?,
            email: row.try_get_by_index(1)?,
            username: row.try_get_by_index(2)?,
            username_lower: row.try_get_by_index(3)?,
            is_superuser: row.try_get_by_index(4)?,
            is_verified: row.try_get_by_index(5)?,
            created_at: row.try_get_by_index(6)?,
            updated_at: row.try_get_by_index(7)?,
            is_deleted: row.try_get_by_index(8)?,
            deleted_at: row.try_get_by_index(9)?,
            deletion_scheduled_for: row.try_get_by_index(10)?,
            deletion_requested_at: row.try_get_by_index(11)?,
            deletion_reason: row.try_get_by_index(12)?,
            deleted_by: row.try_get_by_index(13)?,
            mfa_enabled: row.try_get_by_index(14)?,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deleted {
    /// Accounts in use only.
    #[default]
    Exclude,
    /// Soft-deleted accounts too.
    Include,
    /// Soft-deleted accounts only.
    Only,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortBy {
    #[default]
    CreatedAt,
    Email,
    Username,
}

/// Which accounts to list, and in which order. Every filter left `None` is not applied.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Part of the email address or username, case-insensitive.
    pub text: Option<String>,
    pub is_verified: Option<bool>,
    pub is_superuser: Option<bool>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub deleted: Deleted,
    pub sort_by: SortBy,
    pub descending: bool,
}

/// `%`, `_` and the escape character itself match literally.
fn contains_pattern(text: &str) -> LikeExpr {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    LikeExpr::new(pattern).escape('\\')
}

impl Deleted {
    fn as_str(self) -> &'static str {
        match self {
            Self::Exclude => "exclude",
            Self::Include => "include",
            Self::Only => "only",
        }
    }
}

impl SortBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::Email => "email",
            Self::Username => "username",
        }
    }
}

/// Where a listing continues: just after the row with this sort value and id, in a listing
/// of this sort and direction; `page` is the number of the page it starts.
///
/// Written for clients as URL-safe base64 of `1.<sort>.<a|d>.<page>.<id>.<value>`: opaque to
/// them, and refused in a listing of another order. A position in an order means the same
/// under any filter, so a cursor does not pin the filters (a client may narrow a search and
/// carry on from where it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    descending: bool,
    pub(super) page: u64,
    id: Uuid,
    value: SortValue,
}

/// The last row's value in the listing's sort column: which one also says which sort.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SortValue {
    CreatedAt(DateTime<Utc>),
    Email(String),
    Username(String),
}

impl SortValue {
    fn sort_by(&self) -> SortBy {
        match self {
            Self::CreatedAt(_) => SortBy::CreatedAt,
            Self::Email(_) => SortBy::Email,
            Self::Username(_) => SortBy::Username,
        }
    }
}

/// Why a cursor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("is not a cursor this API gave out")]
    Malformed,
    #[error("belongs to a listing in another order")]
    OtherOrder,
}

/// Pages a cursor may number at most: the largest page number the API takes.
const MAX_CURSOR_PAGE: u64 = 2_147_483_647;

impl Cursor {
    /// The longest cursor the API hands out: the fixed fields and a 320-character email address
    /// or 64-character username, in base64.
    pub const MAX_LEN: usize = 512;

    fn encode(&self) -> String {
        let (sort, value) = match &self.value {
            SortValue::CreatedAt(t) => {
                ("c", t.timestamp_nanos_opt().unwrap_or_default().to_string())
            }
            SortValue::Email(v) => ("e", v.clone()),
            SortValue::Username(v) => ("u", v.clone()),
        };
        let text = format!(
            "1.{sort}.{}.{}.{}.{value}",
            if self.descending { "d" } else { "a" },
            self.page,
            self.id.simple()
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// Reads a cursor handed out for `query`.
    pub fn parse(text: &str, query: &UserQuery) -> Result<Self, CursorError> {
        if text.len() > Self::MAX_LEN {
            return Err(CursorError::Malformed);
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorError::Malformed)?;
        let raw = String::from_utf8(raw).map_err(|_| CursorError::Malformed)?;
        let mut parts = raw.splitn(6, '.');
        let mut next = || parts.next().ok_or(CursorError::Malformed);
        if next()? != "1" {
            return Err(CursorError::Malformed);
        }
        let sort = next()?;
        let descending = match next()? {
            "a" => false,
            "d" => true,
            _ => return Err(CursorError::Malformed),
        };
        let page: u64 = next()?.parse().map_err(|_| CursorError::Malformed)?;
        if !(2..=MAX_CURSOR_PAGE).contains(&page) {
            return Err(CursorError::Malformed);
        }
        let id = Uuid::try_parse(next()?).map_err(|_| CursorError::Malformed)?;
        let value = next()?;
        let value = match sort {
            "c" => SortValue::CreatedAt(DateTime::from_timestamp_nanos(
                value.parse().map_err(|_| CursorError::Malformed)?,
            )),
            "e" => SortValue::Email(value.to_string()),
            "u" => SortValue::Username(value.to_string()),
            _ => return Err(CursorError::Malformed),
        };
        if value.sort_by() != query.sort_by || descending != query.descending {
            return Err(CursorError::OtherOrder);
        }
        Ok(Self {
            descending,
            page,
            id,
            value,
        })
    }
}

impl UserQuery {
    /// A stable text naming exactly this query, for cache keys: every field spelled out
    /// explicitly (never `Debug`, whose format may change between compiler releases), the
    /// free text length-prefixed so that no text can imitate the fields after it.
    pub fn cache_key(&self) -> String {
        format!(
            "{};sort={};desc={}",
            self.filter_key(),
            self.sort_by.as_str(),
            u8::from(self.descending),
        )
    }

    /// The part of `cache_key` that selects rows (not their order): one total per filter.
    pub(super) fn filter_key(&self) -> String {
        fn flag(v: Option<bool>) -> &'static str {
            match v {
                None => "-",
                Some(true) => "1",
                Some(false) => "0",
            }
        }
        fn time(v: Option<DateTime<Utc>>) -> String {
            v.map_or_else(
                || "-".into(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            )
        }
        let text = self.text.as_deref().unwrap_or("");
        format!(
            "text={}:{text};verified={};superuser={};after={};before={};deleted={}",
            text.len(),
            flag(self.is_verified),
            flag(self.is_superuser),
            time(self.created_after),
            time(self.created_before),
            self.deleted.as_str(),
        )
    }

    /// The cursor of the page after `last`, numbered `page`.
    pub(super) fn cursor_after(&self, last: &Listed, page: u64) -> String {
        let value = match self.sort_by {
            SortBy::CreatedAt => SortValue::CreatedAt(last.created_at),
            SortBy::Email => SortValue::Email(last.email.clone()),
            SortBy::Username => SortValue::Username(last.username_lower.clone()),
        };
        Cursor {
            descending: self.descending,
            page: Ord::min(page, MAX_CURSOR_PAGE),
            id: last.id,
            value,
        }
        .encode()
    }

    /// The rows after the cursor's, in this query's order. Emails and lower-cased usernames
    /// are unique, so the sort column alone places a row; creation times can tie, and the id
    /// decides between them, as it does in the order: a row-value comparison, which both back
    /// ends answer from the index on `(created_at, id)` as one range.
    pub(super) fn after(&self, cursor: &Cursor) -> Condition {
        let (left, right) = match &cursor.value {
            SortValue::CreatedAt(at) => (
                Expr::tuple([
                    Expr::col(user::Column::CreatedAt),
                    Expr::col(user::Column::Id),
                ]),
                Expr::tuple([Expr::val(*at), Expr::val(cursor.id)]),
            ),
            SortValue::Email(email) => (Expr::col(user::Column::Email), Expr::val(email.clone())),
            SortValue::Username(name) => (
                Expr::col(user::Column::UsernameLower),
                Expr::val(name.clone()),
            ),
        };
        Condition::all().add(if self.descending {
            left.lt(right)
        } else {
            left.gt(right)
        })
    }

    /// The accounts this query selects, unordered.
    pub(super) fn filtered(&self) -> Select<user::Entity> {
        let mut query = user::Entity::find();
        if let Some(text) = self
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            // Emails and `username_lower` are stored lower-cased: a lower-cased needle makes
            // the match case-insensitive on both back ends.
            let needle = text.to_lowercase();
            query = query.filter(
                Condition::any()
                    .add(user::Column::Email.like(contains_pattern(&needle)))
                    .add(user::Column::UsernameLower.like(contains_pattern(&needle))),
            );
        }
        if let Some(v) = self.is_verified {
            query = query.filter(user::Column::IsVerified.eq(v));
        }
        if let Some(v) = self.is_superuser {
            query = query.filter(user::Column::IsSuperuser.eq(v));
        }
        if let Some(at) = self.created_after {
            query = query.filter(user::Column::CreatedAt.gte(at));
        }
        if let Some(at) = self.created_before {
            query = query.filter(user::Column::CreatedAt.lt(at));
        }
        match self.deleted {
            Deleted::Exclude => query.filter(user::Column::IsDeleted.eq(false)),
            Deleted::Include => query,
            Deleted::Only => query.filter(user::Column::IsDeleted.eq(true)),
        }
    }

    /// The listed columns of the accounts this query selects, in its order.
    pub(super) fn select(&self) -> Select<user::Entity> {
        let order = if self.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        let query = self.filtered().select_only().columns(LISTED);
        match self.sort_by {
            // The id breaks ties, so pages never overlap or skip rows.
            SortBy::CreatedAt => query
                .order_by(user::Column::CreatedAt, order.clone())
                .order_by(user::Column::Id, order),
            // Unique: nothing to break.
            SortBy::Email => query.order_by(user::Column::Email, order),
            SortBy::Username => query.order_by(user::Column::UsernameLower, order),
        }
    }
}
