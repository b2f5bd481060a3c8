//! Finding accounts: the filters behind `/users`, `/users/search`, `/users/deleted` and
//! `/admin/users`.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Select,
    sea_query::{LikeExpr, Order},
};
use uuid::Uuid;

use super::{AccountError, admin::Statistics};
use crate::{
    db::{self, Page},
    entities::user,
};

/// Reading accounts: the lists, one account, the counts. Writes go through `Accounts`.
#[derive(Clone)]
pub struct Directory {
    db: DatabaseConnection,
}

impl Directory {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Page `page` (from 1) of `size` accounts that `query` selects, in its order.
    pub async fn page(
        &self,
        query: &UserQuery,
        page: u64,
        size: u64,
    ) -> Result<Page<user::Model>, DbErr> {
        db::page(query.select(), &self.db, page, size).await
    }

    /// The account, deleted or not; `NotFound` when there is none.
    pub async fn user(&self, id: Uuid) -> Result<user::Model, AccountError> {
        super::find_user(&self.db, id).await
    }

    /// The account an operator names: by id, or by email address (any case).
    pub async fn by_ident(&self, ident: &str) -> Result<Option<user::Model>, AccountError> {
        super::find_user_by_ident(&self.db, ident).await
    }

    pub async fn statistics(&self) -> Result<Statistics, DbErr> {
        super::admin::statistics(&self.db).await
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

impl UserQuery {
    /// A stable text naming exactly this query, for cache keys: every field spelled out
    /// explicitly (never `Debug`, whose format may change between compiler releases), the
    /// free text length-prefixed so that no text can imitate the fields after it.
    pub fn cache_key(&self) -> String {
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
            "text={}:{text};verified={};superuser={};after={};before={};deleted={};sort={};desc={}",
            text.len(),
            flag(self.is_verified),
            flag(self.is_superuser),
            time(self.created_after),
            time(self.created_before),
            self.deleted.as_str(),
            self.sort_by.as_str(),
            u8::from(self.descending),
        )
    }

    fn select(&self) -> Select<user::Entity> {
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
        query = match self.deleted {
            Deleted::Exclude => query.filter(user::Column::IsDeleted.eq(false)),
            Deleted::Include => query,
            Deleted::Only => query.filter(user::Column::IsDeleted.eq(true)),
        };
        let order = if self.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        let column = match self.sort_by {
            SortBy::CreatedAt => user::Column::CreatedAt,
            SortBy::Email => user::Column::Email,
            SortBy::Username => user::Column::UsernameLower,
        };
        // The id breaks ties, so pages never overlap or skip rows.
        query
            .order_by(column, order.clone())
            .order_by(user::Column::Id, order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_spell_out_every_field() {
        assert_eq!(
            UserQuery::default().cache_key(),
            "text=0:;verified=-;superuser=-;after=-;before=-;deleted=exclude;sort=created_at;desc=0"
        );
        let q = UserQuery {
            text: Some("a;b".into()),
            is_verified: Some(true),
            is_superuser: Some(false),
            created_after: Some("2026-01-02T03:04:05Z".parse().unwrap()),
            created_before: None,
            deleted: Deleted::Only,
            sort_by: SortBy::Username,
            descending: true,
        };
        assert_eq!(
            q.cache_key(),
            "text=3:a;b;verified=1;superuser=0;after=2026-01-02T03:04:05.000000000Z;before=-;deleted=only;sort=username;desc=1"
        );
    }
}
