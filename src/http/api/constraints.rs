//! The rules the operations enforce, stated in the spec so that generated clients can check a
//! request before they send it, and so that the spec accepts exactly what the server does.
//!
//! The account rules are the domain's (`values`); they are checked there, with a
//! message per violated rule, so they are written into the spec here rather than given to
//! poem-openapi as validators (which would answer a bare 400 before the domain could name
//! every rule). What JSON Schema cannot say goes in the field's description: a password that
//! appears on the list of common passwords is refused, and an API key's `expires_at` must lie
//! in the future.

use serde_json::{Value, json};

use crate::{accounts::api_keys::SCOPES, values as validation};

/// No NUL character (U+0000): PostgreSQL cannot store one in text, so every declared string
/// refuses it (`input::check_input`). Written so that ECMA-262 and Python's `re` read it the
/// same (`$` would also match before a final newline there).
pub const NO_NUL_PATTERN: &str = "^[^\\x00]*(?![\\s\\S])";

/// Records one `process-data` task takes at most.
pub const MAX_RECORDS: usize = 10_000;

fn email() -> Value {
    json!({"format": "email", "maxLength": validation::EMAIL_MAX_LEN})
}

fn username() -> Value {
    json!({
        "minLength": validation::USERNAME_MIN_LEN,
        "maxLength": validation::USERNAME_MAX_LEN,
        "pattern": validation::username_pattern(),
    })
}

fn password() -> Value {
    json!({
        "minLength": validation::PASSWORD_MIN_LEN,
        "maxLength": validation::PASSWORD_MAX_LEN,
        "pattern": validation::PASSWORD_PATTERN,
    })
}

/// (schema, property, constraints) for the request bodies.
fn properties() -> Vec<(&'static str, &'static str, Value)> {
    let mut rules = Vec::new();
    for schema in ["RegisterRequest", "AdminCreateUser", "AdminUpdateUser"] {
        rules.push((schema, "email", email()));
        rules.push((schema, "username", username()));
        rules.push((schema, "password", password()));
    }
    rules.extend([
        ("UpdateMe", "username", username()),
        ("ChangePasswordRequest", "new_password", password()),
        ("ResetPasswordRequest", "new_password", password()),
        ("EmailRequest", "email", email()),
        ("ChangeEmailRequest", "new_email", email()),
        ("DeletionRequest", "email", email()),
        ("SendEmailRequest", "to", email()),
        (
            "ApiKeyRequest",
            "label",
            json!({"minLength": 1, "maxLength": 100, "pattern": NO_NUL_PATTERN}),
        ),
        (
            "ApiKeyRequest",
            "scopes",
            json!({"minItems": 1, "items": {"type": "string", "enum": SCOPES}}),
        ),
    ]);
    rules
}

/// (operation id, parameter, constraints) for query parameters.
fn parameters() -> Vec<(&'static str, &'static str, Value)> {
    ["users_search", "admin_users_list"]
        .into_iter()
        .map(|op| {
            (
                op,
                "q",
                json!({"maxLength": super::models::MAX_SEARCH_TEXT}),
            )
        })
        .collect()
}

fn merge(target: &mut Value, extra: &Value) {
    if let (Some(target), Some(extra)) = (target.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// A plain string schema (no format, enum or pattern of its own) gets `NO_NUL_PATTERN`.
fn refuse_nul(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let plain = map.get("type").and_then(Value::as_str) == Some("string")
        && !["format", "enum", "pattern"]
            .iter()
            .any(|k| map.contains_key(*k));
    if plain {
        map.insert("pattern".into(), json!(NO_NUL_PATTERN));
    }
    if let Some(items) = map.get_mut("items") {
        refuse_nul(items);
    }
}

/// The names of the component schemas that request bodies use.
fn request_schemas(doc: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in item.as_object().into_iter().flat_map(|o| o.values()) {
            for media in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
            {
                if let Some(name) = media["schema"]["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    && !names.iter().any(|n| n == name)
                {
                    names.push(name.to_string());
                }
            }
        }
    }
    names
}

/// Writes the constraints into the spec; returns the rules that found nothing to apply to (a
/// renamed type or field), which a test turns into a failure.
pub fn apply(doc: &mut Value) -> Vec<String> {
    let mut unmatched = Vec::new();
    let schemas = request_schemas(doc);
    for (schema, property, rule) in properties() {
        match doc.pointer_mut(&format!(
            "/components/schemas/{schema}/properties/{property}"
        )) {
            Some(target) => merge(target, &rule),
            None => unmatched.push(format!("{schema}.{property}")),
        }
    }
    for name in &schemas {
        if let Some(props) = doc
            .pointer_mut(&format!("/components/schemas/{name}/properties"))
            .and_then(Value::as_object_mut)
        {
            props.values_mut().for_each(refuse_nul);
        }
    }
    let rules = parameters();
    let mut matched = vec![false; rules.len()];
    for item in doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            if id == "tasks_process_data" {
                merge(
                    &mut op["requestBody"]["content"]["application/json"]["schema"],
                    &json!({"maxItems": MAX_RECORDS}),
                );
            }
            for param in op
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let name = param["name"].as_str().unwrap_or_default().to_string();
                for (i, (op_id, p, rule)) in rules.iter().enumerate() {
                    if *op_id == id && *p == name {
                        merge(&mut param["schema"], rule);
                        matched[i] = true;
                    }
                }
                if param["in"] != "path" {
                    refuse_nul(&mut param["schema"]);
                }
            }
        }
    }
    for ((op, p, _), hit) in rules.iter().zip(matched) {
        if !hit {
            unmatched.push(format!("{op}?{p}"));
        }
    }
    unmatched
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_finds_its_field() {
        let raw = super::super::service("Keel", "")
            .spec()
            .replace("; charset=utf-8", "");
        let mut doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(super::apply(&mut doc), Vec::<String>::new());
    }
}
