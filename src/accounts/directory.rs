//! Finding accounts: the filters behind `/users`, `/users/search`, `/users/deleted` and
//! `/admin/users`.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, Select,
    sea_query::{LikeExpr, Order},
};

use crate::entities::user;

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

impl UserQuery {
    pub fn select(&self) -> Select<user::Entity> {
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
