//! Input checks every operation gets before its handler runs, each answered with a 422
//! `validation_failed` naming the fields, so that nothing of such a request is written:
//!
//! - Text that could reach the database carries no NUL character. PostgreSQL cannot store
//!   U+0000 in text (it answers `invalid byte sequence`), and no field of Keel's has a use for
//!   it, so it is refused for every route on both back ends alike: in the path, a query
//!   parameter, a form field, or a string field of a JSON body (`api::contract`).
//! - A JSON body's fields have the JSON types the spec gives them (`api::contract`).
//!
//! Form bodies are decoded only when their raw bytes could hold a NUL (`%00` or a zero byte).

use std::sync::Arc;

use poem::{Body, Endpoint, IntoResponse, Request, Response, http::header};
use serde_json::Value;

use crate::{
    http::api::contract::{Contract, NUL_MESSAGE},
    http::error::{ApiError, FieldError},
};

fn nul_errors(fields: Vec<String>) -> Vec<FieldError> {
    fields
        .into_iter()
        .map(|field| FieldError {
            field,
            message: NUL_MESSAGE.into(),
        })
        .collect()
}

fn refuse(errors: Vec<FieldError>) -> poem::Error {
    ApiError::validation(errors).into()
}

/// The names of the form-encoded pairs (a query string or a form body) whose name or value
/// decodes to text with a NUL.
fn form_fields_with_nul(encoded: &[u8]) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(encoded) {
        if name.contains('\0') || value.contains('\0') {
            let name = name.replace('\0', "\u{FFFD}");
            if !fields.contains(&name) {
                fields.push(name);
            }
        }
    }
    fields
}

fn might_hold_nul_form(bytes: &[u8]) -> bool {
    bytes.contains(&0) || bytes.windows(3).any(|w| w == b"%00")
}

#[derive(Clone, Copy)]
enum BodyKind {
    Json,
    Form,
}

fn body_kind(req: &Request) -> Option<BodyKind> {
    let content_type = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    if crate::http::api::payload::is_json(content_type) {
        return Some(BodyKind::Json);
    }
    let essence = content_type.split(';').next()?.trim();
    essence
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        .then_some(BodyKind::Form)
}

/// The middleware: refuses a request with a NUL in its path, query or body text, or with JSON
/// fields of the wrong type.
pub async fn check_input<E: Endpoint>(
    next: E,
    mut req: Request,
    contract: Arc<Contract>,
) -> poem::Result<Response> {
    if might_hold_nul_form(req.uri().path().as_bytes()) {
        return Err(refuse(nul_errors(vec!["path".into()])));
    }
    if let Some(query) = req.uri().query()
        && might_hold_nul_form(query.as_bytes())
    {
        let fields = form_fields_with_nul(query.as_bytes());
        if !fields.is_empty() {
            return Err(refuse(nul_errors(fields)));
        }
    }
    if let Some(kind) = body_kind(&req) {
        // Bounded by MAX_REQUEST_SIZE: the size check around this one counts what is read.
        let bytes = req.take_body().into_bytes().await.map_err(|e| {
            poem::Error::from_string(
                format!("the request body could not be read: {e}"),
                poem::http::StatusCode::BAD_REQUEST,
            )
        })?;
        let errors = match kind {
            BodyKind::Json if !bytes.is_empty() => {
                // A body that is not JSON at all gets the operation's own parse error.
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(value) => {
                        contract.body_errors(req.method().as_str(), req.uri().path(), &value)
                    }
                    Err(_) => Vec::new(),
                }
            }
            BodyKind::Form if might_hold_nul_form(&bytes) => {
                nul_errors(form_fields_with_nul(&bytes))
            }
            _ => Vec::new(),
        };
        if !errors.is_empty() {
            return Err(refuse(errors));
        }
        req.set_body(Body::from_bytes(bytes));
    }
    next.call(req).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_form_fields_and_ignores_clean_ones() {
        assert_eq!(
            form_fields_with_nul(b"username=a%00b&password=x&q=%00"),
            ["username", "q"]
        );
        assert!(form_fields_with_nul(b"q=100%2500").is_empty());
    }
}
