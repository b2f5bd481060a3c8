//! The poem-openapi route groups, one file per tag, and the spec they produce.

pub mod admin;
pub mod auth;
pub mod deletion;
pub mod integrations;
pub mod models;
pub mod payload;
pub mod root;
pub mod system;
pub mod tasks;
pub mod users;

use poem_openapi::{OpenApiService, Tags};

use crate::VERSION;

#[derive(Tags)]
pub enum ApiTags {
    /// Service name, version and enabled features
    Root,
    /// Registration, login, sessions, email verification and password reset
    Auth,
    /// Account deletion with a grace period
    Deletion,
    /// Your profile and the user directory; soft delete and restore for superusers
    Users,
    /// Account management for superusers
    Admin,
    /// Health and readiness
    System,
    /// Background tasks: submit, follow, cancel
    Tasks,
    /// WebSockets: echo, rooms and broadcasts across instances
    Integrations,
}

pub type Apis = (
    root::RootApi,
    auth::AuthApi,
    deletion::DeletionApi,
    users::UsersApi,
    admin::AdminApi,
    system::SystemApi,
    tasks::TasksApi,
    integrations::IntegrationsApi,
);

/// The OpenAPI service for all route groups; `prefix` is `API_PREFIX` (empty by default).
pub fn service(project_name: &str, prefix: &str) -> OpenApiService<Apis, ()> {
    let service = OpenApiService::new(
        (
            root::RootApi,
            auth::AuthApi,
            deletion::DeletionApi,
            users::UsersApi,
            admin::AdminApi,
            system::SystemApi,
            tasks::TasksApi,
            integrations::IntegrationsApi,
        ),
        project_name,
        VERSION,
    )
    .description(
        "Accounts, sessions, email verification, password reset and background tasks. Errors are \
         `application/problem+json` (RFC 9457) with a stable `code`.",
    );
    if prefix.is_empty() {
        service
    } else {
        service.server(prefix)
    }
}

/// The spec as served at `/openapi.json` and committed in `openapi/openapi.json`.
///
/// poem-openapi writes `application/json; charset=utf-8` as the media type; several client
/// generators do not recognise that as JSON, so the parameter is dropped (JSON is UTF-8 by
/// definition, RFC 8259).
pub fn spec_json(project_name: &str, prefix: &str) -> String {
    let spec = service(project_name, prefix).spec();
    let mut spec = spec.replace("; charset=utf-8", "");
    if !spec.ends_with('\n') {
        spec.push('\n');
    }
    spec
}

/// The committed spec: what the code produces with default settings.
pub fn default_spec_json() -> String {
    spec_json("Keel", "")
}
