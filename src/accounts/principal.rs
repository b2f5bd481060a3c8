//! Who is asking: where a request came from, how it authenticated (a session or an API key
//! with its scopes), and the account behind it.

use uuid::Uuid;

use super::User;

/// Where a request came from, for the audit log and the session list.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// How a request authenticated.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An access token of this session.
    Session(Uuid),
    /// An API key, acting only within its scopes.
    ApiKey { key_id: Uuid, scopes: Vec<Scope> },
}

/// Who is making an authenticated request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub credential: Credential,
    /// The users version Redis reported while authenticating, when it did: the request's view
    /// of the user cache, fresh as of the request's start.
    pub users_version: Option<u64>,
}

impl Principal {
    pub fn session_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session(id) => Some(id),
            Credential::ApiKey { .. } => None,
        }
    }

    /// Whether the credential allows `scope`: a session allows everything its user may do.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::Session(_) => true,
            Credential::ApiKey { scopes, .. } => scopes.contains(&scope),
        }
    }
}

/// What an API key may do; a signed-in session may do everything its user may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    SystemRead,
    TasksRead,
    TasksWrite,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Self::SystemRead, Self::TasksRead, Self::TasksWrite];

    /// The name in requests, in the spec and in the `scopes` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SystemRead => "system:read",
            Self::TasksRead => "tasks:read",
            Self::TasksWrite => "tasks:write",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Every scope's name, for the spec.
pub const SCOPES: [&str; 3] = [
    Scope::SystemRead.as_str(),
    Scope::TasksRead.as_str(),
    Scope::TasksWrite.as_str(),
];
