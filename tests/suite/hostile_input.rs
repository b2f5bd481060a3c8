//! Hostile input, walked over the whole spec: a NUL character in any string parameter or body
//! field of any operation is a 422 `validation_failed` naming the field (never a 5xx), on both
//! back ends, and nothing is written.

use crate::common;

use crate::entities::{api_key, audit_log, job, one_time_token, refresh_token, session, user};
use common::{Backend, TestApp};
use reqwest::Method;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Map, Value, json};

const ROOT: [(&str, &str); 2] = [
    ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
    ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
];

const NUL: &str = "x\u{0}y";

/// Rows in every table a request could write to.
async fn rows(app: &TestApp) -> [u64; 7] {
    let db = &app.state.db;
    [
        user::Entity::find().count(db).await.unwrap(),
        job::Entity::find().count(db).await.unwrap(),
        session::Entity::find().count(db).await.unwrap(),
        api_key::Entity::find().count(db).await.unwrap(),
        audit_log::Entity::find().count(db).await.unwrap(),
        one_time_token::Entity::find().count(db).await.unwrap(),
        refresh_token::Entity::find().count(db).await.unwrap(),
    ]
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        Some(name) => &spec["components"]["schemas"][name],
        None => schema
            .get("allOf")
            .and_then(|all| all.get(0))
            .map_or(schema, |first| resolve(spec, first)),
    }
}

/// A value that fits `schema`, every property filled in.
fn sample(spec: &Value, schema: &Value) -> Value {
    let schema = resolve(spec, schema);
    if let Some(first) = schema["enum"].get(0) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("string") => match schema["format"].as_str() {
            Some("email") => json!("someone@example.com"),
            Some("uuid") => json!(uuid::Uuid::new_v4()),
            Some("date-time") => json!(chrono::Utc::now()),
            _ => json!("sample"),
        },
        Some("integer") | Some("number") => schema["minimum"]
            .as_f64()
            .map_or(json!(1), |m| json!(m.max(1.0) as i64)),
        Some("boolean") => json!(false),
        Some("array") => json!([sample(spec, &schema["items"])]),
        _ => {
            let mut object = Map::new();
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                object.insert(name.clone(), sample(spec, property));
            }
            Value::Object(object)
        }
    }
}

/// Every string inside `value`, as (field path, JSON pointer).
fn string_leaves(value: &Value, field: &str, pointer: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(_) => out.push((
            if field.is_empty() {
                "body".into()
            } else {
                field.into()
            },
            pointer.into(),
        )),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                string_leaves(
                    item,
                    &format!("{field}[{i}]"),
                    &format!("{pointer}/{i}"),
                    out,
                );
            }
        }
        Value::Object(members) => {
            for (key, item) in members {
                let name = if field.is_empty() {
                    key.clone()
                } else {
                    format!("{field}.{key}")
                };
                string_leaves(item, &name, &format!("{pointer}/{key}"), out);
            }
        }
        _ => {}
    }
}

enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

async fn send(
    app: &TestApp,
    token: &str,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: Body,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .bearer_auth(token)
        .query(query);
    req = match body {
        Body::None => req,
        Body::Json(v) => req.json(&v),
        Body::Form(pairs) => req.form(&pairs),
    };
    req.send().await.expect("request")
}

async fn expect_refused(resp: reqwest::Response, what: &str, field: &str) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 422, "{what}: {body}");
    assert_eq!(body["code"], "validation_failed", "{what}: {body}");
    let named = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["field"] == field);
    assert!(named, "{what}: the answer does not name {field}: {body}");
}

async fn nul_anywhere_is_refused(backend: Backend) {
    let app = TestApp::start_with(backend, &ROOT).await;
    let token = app
        .login("root@example.com", "SuperSecret123!")
        .await
        .access;
    // The spec this server serves, as a client would read it.
    let spec: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let before = rows(&app).await;
    let mut cases = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let params: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
            let fill = |template: &str, nul_in: Option<&str>| {
                let mut path = template.to_string();
                for p in params.iter().filter(|p| p["in"] == "path") {
                    let name = p["name"].as_str().unwrap();
                    let value = if nul_in == Some(name) {
                        "x%00y".to_string()
                    } else {
                        uuid::Uuid::new_v4().to_string()
                    };
                    path = path.replace(&format!("{{{name}}}"), &value);
                }
                path
            };
            let what = |detail: &str| format!("{method} {template} with a NUL in {detail}");
            for p in &params {
                let name = p["name"].as_str().unwrap();
                if resolve(&spec, &p["schema"])["type"] != "string" {
                    continue;
                }
                match p["in"].as_str() {
                    Some("path") => {
                        let resp = send(
                            &app,
                            &token,
                            &method,
                            &fill(template, Some(name)),
                            &[],
                            Body::None,
                        )
                        .await;
                        expect_refused(resp, &what(name), "path").await;
                    }
                    Some("query") => {
                        let query = [(name.to_string(), NUL.to_string())];
                        let resp = send(
                            &app,
                            &token,
                            &method,
                            &fill(template, None),
                            &query,
                            Body::None,
                        )
                        .await;
                        expect_refused(resp, &what(name), name).await;
                    }
                    _ => continue,
                }
                cases += 1;
            }
            let content = &op["requestBody"]["content"];
            for (media, as_form) in [
                ("application/json", false),
                ("application/x-www-form-urlencoded", true),
            ] {
                let Some(schema) = content.get(media).map(|c| &c["schema"]) else {
                    continue;
                };
                let body = sample(&spec, schema);
                let mut leaves = Vec::new();
                string_leaves(&body, "", "", &mut leaves);
                for (field, pointer) in leaves {
                    let mut hostile = body.clone();
                    *hostile.pointer_mut(&pointer).unwrap() = json!(NUL);
                    let body = if as_form {
                        Body::Form(
                            hostile
                                .as_object()
                                .unwrap()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.clone(),
                                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                                    )
                                })
                                .collect(),
                        )
                    } else {
                        Body::Json(hostile)
                    };
                    let resp = send(&app, &token, &method, &fill(template, None), &[], body).await;
                    expect_refused(resp, &what(&field), &field).await;
                    cases += 1;
                }
            }
        }
    }
    assert!(
        cases > 40,
        "only {cases} cases: the walk found too little to try"
    );
    assert_eq!(
        rows(&app).await,
        before,
        "a refused request wrote something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_anywhere_is_refused_on_postgres() {
    nul_anywhere_is_refused(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_anywhere_is_refused_on_sqlite() {
    nul_anywhere_is_refused(Backend::Sqlite).await;
}
