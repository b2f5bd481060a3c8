//! The published spec, read back as a routing table, so the HTTP layer holds requests and
//! answers to what the spec says:
//!
//! - a 405 names the methods the path does have (`Allow`, RFC 9110 §15.5.6);
//! - a JSON body whose fields have the wrong JSON type is a 422 naming each field. The
//!   operations' own parsers are lenient (poem-openapi reads `false` or `12` into a `String`),
//!   and a client that sends `{"username": false}` has a bug it should hear about rather than
//!   be renamed to "false";
//! - no string field the spec declares holds a NUL character (the spec says so with a
//!   `pattern`): PostgreSQL cannot store U+0000 in text. Free-form JSON (the records of
//!   `process-data`) is stored as JSON, which can, and is left as sent.
//!
//! Everything comes from `openapi/openapi.json` as generated from the code, so the table cannot
//! drift from the operations.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::http::error::FieldError;

pub const NUL_MESSAGE: &str = "must not contain a NUL character (U+0000)";

/// Bodies nest at most this deep before the check stops descending (a guard against
/// pathological input, far beyond any schema here).
const MAX_DEPTH: usize = 32;

#[derive(Debug)]
struct Route {
    /// `None` for a `{parameter}` segment.
    segments: Vec<Option<String>>,
    /// Upper-case methods, HEAD included wherever GET is.
    methods: BTreeSet<String>,
    /// Per method, the schema of its `application/json` request body.
    bodies: Vec<(String, Value)>,
}

impl Route {
    fn matches(&self, parts: &[&str]) -> bool {
        self.segments.len() == parts.len()
            && self
                .segments
                .iter()
                .zip(parts)
                .all(|(seg, part)| seg.as_deref().is_none_or(|s| s == *part))
    }

    fn literal_segments(&self) -> usize {
        self.segments.iter().filter(|s| s.is_some()).count()
    }
}

/// The operations of the spec, by path template.
#[derive(Debug)]
pub struct Contract {
    prefix: String,
    routes: Vec<Route>,
    /// `components/schemas`, for `$ref`s.
    schemas: Value,
}

impl Contract {
    /// Reads the spec that `api::spec_json` produced; `prefix` is `API_PREFIX`. Routes served
    /// beside the spec (`/metrics`, `/openapi.json`) are `extra` paths answering GET.
    pub fn from_spec(spec: &str, prefix: &str, extra: &[&str]) -> Self {
        let doc: Value = serde_json::from_str(spec).unwrap_or(Value::Null);
        let mut routes = Vec::new();
        for (template, item) in doc["paths"].as_object().into_iter().flatten() {
            let mut methods = BTreeSet::new();
            let mut bodies = Vec::new();
            for (method, op) in item.as_object().into_iter().flatten() {
                let method = method.to_ascii_uppercase();
                if let Some(schema) = op
                    .pointer("/requestBody/content/application~1json/schema")
                    .cloned()
                {
                    bodies.push((method.clone(), schema));
                }
                if method == "GET" {
                    methods.insert("HEAD".to_string());
                }
                methods.insert(method);
            }
            routes.push(Route {
                segments: split(template)
                    .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                    .collect(),
                methods,
                bodies,
            });
        }
        for path in extra {
            routes.push(Route {
                segments: split(path).map(|s| Some(s.to_string())).collect(),
                methods: ["GET", "HEAD"].map(String::from).into(),
                bodies: Vec::new(),
            });
        }
        Self {
            prefix: prefix.to_string(),
            routes,
            schemas: doc["components"]["schemas"].clone(),
        }
    }

    /// The route serving `path` (a literal segment wins over a parameter).
    fn route(&self, path: &str) -> Option<&Route> {
        let path = path.strip_prefix(self.prefix.as_str())?;
        let parts: Vec<&str> = split(path).collect();
        self.routes
            .iter()
            .filter(|r| r.matches(&parts))
            .max_by_key(|r| r.literal_segments())
    }

    /// The `Allow` header's value for `path`, when the spec knows it.
    /// Whether `path` is one of the routes.
    pub fn knows(&self, path: &str) -> bool {
        self.route(path).is_some()
    }

    pub fn allow(&self, path: &str) -> Option<String> {
        let route = self.route(path)?;
        Some(
            route
                .methods
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// The fields of a JSON `body` for `method path` whose JSON type the spec does not allow,
    /// or that are declared strings holding a NUL.
    pub fn body_errors(&self, method: &str, path: &str, body: &Value) -> Vec<FieldError> {
        let Some(route) = self.route(path) else {
            return Vec::new();
        };
        let Some((_, schema)) = route.bodies.iter().find(|(m, _)| m == method) else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        self.check(schema, body, "", 0, &mut errors);
        errors
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        {
            Some(name) => &self.schemas[name],
            None => schema,
        }
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        depth: usize,
        errors: &mut Vec<FieldError>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let schema = self.resolve(schema);
        for part in schema["allOf"].as_array().into_iter().flatten() {
            self.check(part, value, at, depth + 1, errors);
        }
        // Absent and null optional members are the operation's to judge.
        if value.is_null() {
            return;
        }
        let field = || if at.is_empty() { "body" } else { at }.to_string();
        let Some(kind) = schema["type"].as_str() else {
            return;
        };
        let fits = match kind {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !fits {
            errors.push(FieldError {
                field: field(),
                message: format!("must be {} ({kind} in the spec)", article(kind)),
            });
            return;
        }
        if value.as_str().is_some_and(|s| s.contains('\0')) {
            errors.push(FieldError {
                field: field(),
                message: NUL_MESSAGE.into(),
            });
        }
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check(
                        &schema["items"],
                        item,
                        &format!("{at}[{i}]"),
                        depth + 1,
                        errors,
                    );
                }
            }
            Value::Object(members) => {
                let properties = &schema["properties"];
                for (key, item) in members {
                    if let Some(property) = properties.get(key) {
                        let path = if at.is_empty() {
                            key.clone()
                        } else {
                            format!("{at}.{key}")
                        };
                        self.check(property, item, &path, depth + 1, errors);
                    }
                }
            }
            _ => {}
        }
    }
}

fn article(kind: &str) -> &'static str {
    match kind {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "array" => "an array",
        "object" => "an object",
        _ => "of another type",
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contract() -> Contract {
        let spec = json!({
            "paths": {
                "/users/me": {
                    "get": {},
                    "patch": {"requestBody": {"content": {"application/json": {"schema":
                        {"$ref": "#/components/schemas/UpdateMe"}}}}}
                },
                "/users/{id}": {"delete": {}},
                "/tasks": {"post": {"requestBody": {"content": {"application/json": {"schema":
                    {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}}}}
            },
            "components": {"schemas": {"UpdateMe": {"type": "object", "properties": {
                "username": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"type": "string", "nullable": true}
            }}}}
        });
        Contract::from_spec(&spec.to_string(), "/api", &["/metrics"])
    }

    #[test]
    fn allow_lists_the_paths_methods() {
        let c = contract();
        assert_eq!(c.allow("/api/users/me").unwrap(), "GET, HEAD, PATCH");
        assert_eq!(c.allow("/api/users/42").unwrap(), "DELETE");
        assert_eq!(c.allow("/api/metrics").unwrap(), "GET, HEAD");
        assert!(c.allow("/api/nowhere").is_none());
        assert!(c.allow("/users/me").is_none(), "outside the prefix");
    }

    #[test]
    fn wrong_json_types_are_named() {
        let c = contract();
        let named = |body: Value| {
            c.body_errors("PATCH", "/api/users/me", &body)
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(named(json!({"username": false})), ["username"]);
        assert_eq!(
            named(json!({"username": 12, "tags": ["a", 3]})),
            ["username", "tags[1]"]
        );
        assert!(named(json!({"username": "ok", "note": null, "other": 1})).is_empty());
        assert_eq!(
            named(json!({"username": "a\u{0}b", "other": "\u{0}"})),
            ["username"]
        );
        assert_eq!(named(json!([1])), ["body"]);
        let tasks = c.body_errors("POST", "/api/tasks", &json!([{"n": 1}, {"n": "x"}]));
        assert_eq!(tasks[0].field, "[1].n");
    }
}
