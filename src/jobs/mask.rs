//! How a job's payload is shown, to the API and the CLI alike: with its secrets masked.

use serde_json::Value;

/// Key names whose values are never shown.
const SECRET_KEYS: [&str; 7] = [
    "password",
    "secret",
    "token",
    "api_key",
    "authorization",
    "credential",
    "cookie",
];

/// `value` with its secrets masked: values under keys naming a password, secret, token, key
/// or credential become `***`, and so does the token of any `token=` link in a text.
pub fn masked(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        (k, Value::String("***".into()))
                    } else {
                        (k, masked(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(masked).collect()),
        Value::String(text) => Value::String(mask_link_tokens(&text)),
        other => other,
    }
}

/// `token=<value>` in a text (the links in mails) with the value masked.
fn mask_link_tokens(text: &str) -> String {
    const MARK: &str = "token=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let (before, after) = rest.split_at(at + MARK.len());
        out.push_str(before);
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(after.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::masked;
    use serde_json::json;

    #[test]
    fn payloads_lose_their_secrets_only() {
        let shown = masked(json!({
            "to": "a@example.com",
            "text": "Open http://x/verify-email?token=abc-DEF_1 now, or ?token= alone",
            "smtp_password": "hunter2",
            "nested": [{"Api_Key": "k"}, {"message": "token-free"}],
            "count": 3,
        }));
        assert_eq!(
            shown,
            json!({
                "to": "a@example.com",
                "text": "Open http://x/verify-email?token=*** now, or ?token= alone",
                "smtp_password": "***",
                "nested": [{"Api_Key": "***"}, {"message": "token-free"}],
                "count": 3,
            })
        );
    }
}
