//! The poem-openapi route groups, one file per tag, and the spec they produce.

pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod constraints;
pub mod contract;
pub mod credentials;
pub mod deletion;
pub mod integrations;
pub mod mfa;
pub mod models;
pub mod oidc;
pub mod oidc_schemas;
pub mod payload;
pub mod root;
pub mod sessions;
pub mod submission;
pub mod system;
pub mod task_schemas;
pub mod tasks;
pub mod users;

use poem_openapi::{LicenseObject, OpenApi, OpenApiService, Tags};
use serde_json::{Value, json};

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

/// Declares the route groups once: `Apis`, the type of the route tree, and `apis()`, its value
/// (each group is a unit struct, so its name is both).
macro_rules! route_groups {
    ($($group:path),+ $(,)?) => {
        pub type Apis = ($($group,)+);

        fn apis() -> Apis {
            ($($group,)+)
        }
    };
}

// Every route group, in the order of the spec; a new tag's API is one line here.
route_groups!(
    root::RootApi,
    auth::AuthApi,
    sessions::SessionsApi,
    credentials::CredentialsApi,
    mfa::MfaApi,
    oidc::OidcApi,
    credentials::EmailChangeApi,
    api_keys::ApiKeysApi,
    deletion::DeletionApi,
    users::UsersApi,
    admin::AdminApi,
    system::SystemApi,
    tasks::TasksApi,
    integrations::IntegrationsApi,
);

/// The OpenAPI service for all route groups; `prefix` is `API_PREFIX` (empty by default).
/// Keel's route groups.
pub fn service(project_name: &str, prefix: &str) -> OpenApiService<(Apis, ()), ()> {
    service_with((), project_name, prefix)
}

/// Keel's route groups followed by `extra`: route groups kept outside the crate (the endpoint
/// example of docs/extending.md); `()` for none. A fork adds its own to `route_groups!`.
pub fn service_with<T: OpenApi>(
    extra: T,
    project_name: &str,
    prefix: &str,
) -> OpenApiService<(Apis, T), ()> {
    let service = OpenApiService::new(
        (apis(), extra),
        project_name,
        VERSION,
    )
    .description(
        "Accounts, sessions, email verification, password reset and background tasks. Errors are \
         `application/problem+json` (RFC 9457) with a stable `code`.",
    )
    .license(LicenseObject::new("MIT").url("https://opensource.org/license/mit"));
    if prefix.is_empty() {
        service
    } else {
        service.server(prefix)
    }
}

/// The spec as served at `/openapi.json` and committed in `openapi/openapi.json`: poem-openapi's
/// document, finished so that it passes a strict linter (`redocly lint`) and reads right to
/// client generators:
///
/// - every operation states its `security`; the public ones say `[]` (none) rather than
///   leaving it unsaid;
/// - `servers` is never empty: without `API_PREFIX`, paths are relative to where Keel is served;
/// - the rules the operations enforce are stated (`constraints`);
/// - a schema that may be `null` but has no `type` (any JSON value) drops `nullable`, which
///   OpenAPI 3.0 allows only beside a `type`; any value, `null` included, stays valid;
/// - media types lose poem-openapi's `; charset=utf-8`, which several generators do not
///   recognise as JSON (JSON is UTF-8 by definition, RFC 8259).
pub fn spec_json(project_name: &str, prefix: &str) -> String {
    spec_of(&service(project_name, prefix))
}

/// The spec of `service` as `/openapi.json` serves it and `openapi/openapi.json` holds it.
pub fn spec_of<T: OpenApi>(service: &OpenApiService<T, ()>) -> String {
    let raw = service.spec().replace("; charset=utf-8", "");
    let mut spec = match serde_json::from_str::<Value>(&raw) {
        Ok(mut doc) => {
            finish_spec(&mut doc);
            serde_json::to_string_pretty(&doc).unwrap_or(raw)
        }
        Err(_) => raw,
    };
    if !spec.ends_with('\n') {
        spec.push('\n');
    }
    spec
}

fn finish_spec(doc: &mut Value) {
    if doc["servers"].as_array().is_none_or(Vec::is_empty) {
        doc["servers"] = json!([{
            "url": "/",
            "description": "the address Keel is served at (set API_PREFIX to serve under a path)"
        }]);
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                if let Some(op) = op.as_object_mut() {
                    op.entry("security").or_insert_with(|| json!([]));
                }
            }
        }
    }
    drop_untyped_nullable(doc);
    constraints::apply(doc);
}

fn drop_untyped_nullable(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let typed = ["type", "$ref", "allOf", "oneOf", "anyOf"]
                .iter()
                .any(|k| map.contains_key(*k));
            if !typed && map.get("nullable") == Some(&Value::Bool(true)) {
                map.shift_remove("nullable");
            }
            map.values_mut().for_each(drop_untyped_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_untyped_nullable),
        _ => {}
    }
}

/// The committed spec: what the code produces with default settings.
pub fn default_spec_json() -> String {
    spec_json("Keel", "")
}
