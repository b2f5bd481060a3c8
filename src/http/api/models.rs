//! Request and response bodies shared by several route groups.

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, payload::Json};
use uuid::Uuid;

use crate::{
    accounts::{
        User,
        directory::{Cursor, Listed, Listing, Position, UserQuery},
    },
    http::error::{ApiError, ApiResult},
};

/// A user account as clients see it; the password hash never leaves the server.
#[derive(Object, Debug, Clone)]
#[oai(rename = "User")]
pub struct UserOut {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub is_superuser: bool,
    pub is_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_deleted: bool,
    #[oai(nullable)]
    pub deleted_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub deletion_scheduled_for: Option<DateTime<Utc>>,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            username: u.username,
            is_superuser: u.is_superuser,
            is_verified: u.is_verified,
            created_at: u.created_at,
            updated_at: u.updated_at,
            is_deleted: u.is_deleted,
            deleted_at: u.deleted_at,
            deletion_scheduled_for: u.deletion_scheduled_for,
        }
    }
}

impl From<Listed> for UserOut {
    fn from(u: Listed) -> Self {
        Self {
            id: u.id,
            email: u.email,
            username: u.username,
            is_superuser: u.is_superuser,
            is_verified: u.is_verified,
            created_at: u.created_at,
            updated_at: u.updated_at,
            is_deleted: u.is_deleted,
            deleted_at: u.deleted_at,
            deletion_scheduled_for: u.deletion_scheduled_for,
        }
    }
}

/// Your own account: the public fields and your sign-in settings.
#[derive(Object, Debug, Clone)]
pub struct Me {
    #[oai(flatten)]
    pub user: UserOut,
    /// A password sign-in needs a second factor (`/auth/mfa`).
    pub mfa_enabled: bool,
    /// False for an account a sign-in provider made, until it sets one at
    /// `/auth/set-password`.
    pub has_password: bool,
}

impl From<User> for Me {
    fn from(u: User) -> Self {
        Self {
            mfa_enabled: u.mfa_enabled,
            has_password: u.has_password,
            user: u.into(),
        }
    }
}

/// A user account as administrators see it: the public fields and how its deletion stands.
#[derive(Object, Debug, Clone)]
pub struct AdminUser {
    #[oai(flatten)]
    pub user: UserOut,
    /// When the user asked to delete the account.
    #[oai(nullable)]
    pub deletion_requested_at: Option<DateTime<Utc>>,
    /// Why an administrator deleted the account.
    #[oai(nullable)]
    pub deletion_reason: Option<String>,
    /// The administrator who deleted it (absent when deleted from the CLI).
    #[oai(nullable)]
    pub deleted_by: Option<Uuid>,
    /// A password sign-in needs a second factor.
    pub mfa_enabled: bool,
}

impl From<User> for AdminUser {
    fn from(mut u: User) -> Self {
        Self {
            deletion_requested_at: u.deletion_requested_at,
            deletion_reason: u.deletion_reason.take(),
            deleted_by: u.deleted_by,
            mfa_enabled: u.mfa_enabled,
            user: u.into(),
        }
    }
}

impl From<Listed> for AdminUser {
    fn from(mut u: Listed) -> Self {
        Self {
            deletion_requested_at: u.deletion_requested_at,
            deletion_reason: u.deletion_reason.take(),
            deleted_by: u.deleted_by,
            mfa_enabled: u.mfa_enabled,
            user: u.into(),
        }
    }
}

/// One page of users, as administrators see them.
#[derive(Object, Debug)]
pub struct AdminUserPage {
    pub items: Vec<AdminUser>,
    pub metadata: ListingMetadata,
}

impl AdminUserPage {
    pub fn new(listing: Listing, size: u64) -> Self {
        Self {
            metadata: ListingMetadata::new(&listing, size),
            items: listing.items.into_iter().map(AdminUser::from).collect(),
        }
    }
}

/// Where a page of accounts sits in the whole list, and where the next one starts.
#[derive(Object, Debug, Clone)]
pub struct ListingMetadata {
    #[oai(flatten)]
    pub page: PageMetadata,
    /// Pass as `cursor` for the next page: it starts just after this page's last account,
    /// however many accounts were added or removed before it meanwhile, and costs the same
    /// however deep into the list it is. `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

impl ListingMetadata {
    pub fn new(listing: &Listing, size: u64) -> Self {
        let mut page = PageMetadata::new(listing.page, size, listing.total);
        // Whether a page follows is what the database said, not what the total implies: with a
        // cursor, the page number is where the cursor's listing stood when it was handed out.
        page.has_next = listing.has_next;
        page.next_page = listing.has_next.then_some(listing.page + 1);
        Self {
            page,
            next_cursor: listing.next_cursor.clone(),
        }
    }
}

/// A plain acknowledgement.
#[derive(Object, Debug, Clone)]
pub struct Message {
    pub message: String,
}

impl Message {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Where a page sits in the whole list.
#[derive(Object, Debug, Clone)]
pub struct PageMetadata {
    pub page: u64,
    pub size: u64,
    pub total: u64,
    pub pages: u64,
    pub has_next: bool,
    pub has_prev: bool,
    #[oai(nullable)]
    pub next_page: Option<u64>,
    #[oai(nullable)]
    pub prev_page: Option<u64>,
}

impl PageMetadata {
    pub fn new(page: u64, size: u64, total: u64) -> Self {
        let pages = total.div_ceil(size.max(1));
        let has_next = page < pages;
        let has_prev = page > 1;
        Self {
            page,
            size,
            total,
            pages,
            has_next,
            has_prev,
            next_page: has_next.then_some(page + 1),
            prev_page: has_prev.then(|| (page - 1).min(pages.max(1))),
        }
    }
}

/// Characters a search text (`q`) holds at most.
pub const MAX_SEARCH_TEXT: usize = 100;

/// A search text within `MAX_SEARCH_TEXT`, or a 422 naming `q`.
pub fn search_text(q: Option<String>) -> ApiResult<Option<String>> {
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > MAX_SEARCH_TEXT)
    {
        return Err(ApiError::validation(vec![crate::http::error::FieldError {
            field: "q".into(),
            message: format!("must be at most {MAX_SEARCH_TEXT} characters"),
        }]));
    }
    Ok(q)
}

/// Where a listing of `query` starts: at the cursor when one is given (the page number is then
/// the cursor's), else at page `page`; a 422 naming `cursor` when it cannot be used.
pub fn position(page: u64, cursor: Option<&str>, query: &UserQuery) -> ApiResult<Position> {
    let Some(cursor) = cursor else {
        return Ok(Position::Page(page));
    };
    Cursor::parse(cursor, query)
        .map(Position::After)
        .map_err(|e| {
            ApiError::validation(vec![crate::http::error::FieldError {
                field: "cursor".into(),
                message: e.to_string(),
            }])
        })
}

/// Pages are numbered from 1; past the last one they are empty. Each page parameter's
/// `maximum` is 2³¹ − 1: every client's integer type holds it, and so does a double exactly,
/// which is how some tools read the spec's numbers.
pub fn default_page() -> u64 {
    1
}

pub fn default_size() -> u64 {
    20
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// Accepted; the same answer whether or not an account exists for the address.
    #[oai(status = 202)]
    Accepted(Json<Message>),
}
