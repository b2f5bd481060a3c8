//! Finding accounts: the filters behind `/users`, `/users/search`, `/users/deleted` and
//! `/admin/users`, by page number or by cursor.

use sea_orm::{DatabaseConnection, DbErr, QueryFilter, QuerySelect, sea_query::Expr};
use uuid::Uuid;

use super::{AccountError, User, admin::Statistics};
use crate::cache::Cache;
use crate::entities::View;

/// Reading accounts: the lists, one account, the counts. Writes go through `Accounts`.
#[derive(Clone)]
pub struct Directory {
    db: DatabaseConnection,
    cache: Cache,
}

/// Where a listing starts: a page number (from 1), or just after the row a cursor names.
#[derive(Debug, Clone)]
pub enum Position {
    Page(u64),
    After(Cursor),
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Listing {
    pub items: Vec<Listed>,
    /// Accounts the whole listing holds.
    pub total: u64,
    /// This page's number: asked for, or carried by the cursor.
    pub page: u64,
    /// Whether rows follow this page.
    pub has_next: bool,
    /// Where the next page starts, when one does.
    pub next_cursor: Option<String>,
}

impl Directory {
    pub fn new(db: DatabaseConnection, cache: Cache) -> Self {
        Self { db, cache }
    }

    /// `size` accounts that `query` selects, in its order, from `at`. `version` is the users
    /// version the request saw (from Redis, while authenticating): at a version this process
    /// already counted the filter at, the total is not counted again.
    ///
    /// By page number the database skips every row before the page; by cursor it starts at the
    /// row after the cursor's through the sort column's index, so page 10,000 costs what page 1
    /// does. A page past the end is empty, and not asked for (its offset could overflow).
    pub async fn list(
        &self,
        query: &UserQuery,
        at: &Position,
        size: u64,
        version: Option<u64>,
    ) -> Result<Listing, DbErr> {
        let size = Ord::max(size, 1);
        let filter = query.filter_key();
        let remembered = version.and_then(|v| self.cache.total(&filter, v));
        let total = match remembered {
            Some(total) => total,
            None => {
                let counted = self.count(query).await?;
                if let Some(v) = version {
                    self.cache.remember_total(&filter, v, counted);
                }
                counted
            }
        };
        let (page, mut select) = match at {
            Position::Page(page) => {
                let offset = page.saturating_sub(1).checked_mul(size);
                match offset.filter(|offset| *offset < total) {
                    Some(offset) => (*page, query.select().offset(offset)),
                    None => {
                        return Ok(Listing {
                            items: Vec::new(),
                            total,
                            page: *page,
                            has_next: false,
                            next_cursor: None,
                        });
                    }
                }
            }
            Position::After(cursor) => (cursor.page, query.select().filter(query.after(cursor))),
        };
        // One row more than the page says whether another follows.
        select = select.limit(size + 1);
        let mut items: Vec<Listed> = select.into_model().all(&self.db).await?;
        let has_next = items.len() as u64 > size;
        items.truncate(size as usize);
        let next_cursor = if has_next {
            items.last().map(|last| query.cursor_after(last, page + 1))
        } else {
            None
        };
        Ok(Listing {
            items,
            total,
            page,
            has_next,
            next_cursor,
        })
    }

    async fn count(&self, query: &UserQuery) -> Result<u64, DbErr> {
        let n: Option<i64> = query
            .filtered()
            .select_only()
            .expr(Expr::cust("COUNT(*)"))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
    }

    /// The account, deleted or not; `NotFound` when there is none.
    pub async fn user(&self, id: Uuid) -> Result<User, AccountError> {
        Ok(super::find_user(&self.db, id).await?.view())
    }

    /// The account an operator names: by id, or by email address (any case).
    pub async fn by_ident(&self, ident: &str) -> Result<Option<User>, AccountError> {
        Ok(super::find_user_by_ident(&self.db, ident)
            .await?
            .map(View::view))
    }

    pub async fn statistics(&self) -> Result<Statistics, DbErr> {
        super::admin::statistics(&self.db).await
    }
}

pub use super::user_query::{Cursor, CursorError, Deleted, Listed, SortBy, UserQuery};

impl super::Accounts {
    /// Reads of the accounts: lists, one account, counts.
    pub fn directory(&self) -> Directory {
        Directory::new(self.db.clone(), self.cache.clone())
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
