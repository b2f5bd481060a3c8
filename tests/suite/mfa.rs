//! Two-factor sign-in over real HTTP, on both back ends, with the notices through real SMTP.
//! Codes are computed here from the secret the server hands out, by this file's own RFC 6238.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::entities::{audit_log, totp_factor};
use common::{Backend, TestApp, TestUser, Tokens, mail, problem};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

both_backends!(
    totp_sign_in_end_to_end,
    wrong_codes_end_the_challenge_and_throttle_the_account,
    new_recovery_codes_and_turning_it_off,
    operators_reset_a_lost_factor,
);

/// An authenticator app: the secret, and the newest step it has shown a code for (a code
/// serves once, so each sign-in step takes a later one).
pub(crate) struct Authenticator {
    secret: Vec<u8>,
    last_step: i64,
}

impl Authenticator {
    fn new(base32_secret: &str) -> Self {
        Self {
            secret: data_encoding::BASE32_NOPAD
                .decode(base32_secret.as_bytes())
                .expect("a base32 secret"),
            last_step: 0,
        }
    }

    fn code_at(&self, step: i64) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&self.secret).unwrap();
        mac.update(&step.to_be_bytes());
        let d = mac.finalize().into_bytes();
        let o = (d[19] & 0x0f) as usize;
        let n = u32::from_be_bytes([d[o] & 0x7f, d[o + 1], d[o + 2], d[o + 3]]) % 1_000_000;
        format!("{n:06}")
    }

    fn step_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            / 30
    }

    /// A code the server takes now: the current step, or the next one (allowed for clock
    /// drift) when the current one was used; waits for the clock otherwise.
    pub(crate) async fn next_code(&mut self) -> String {
        loop {
            let now = Self::step_now();
            let step = now.max(self.last_step + 1);
            if step <= now + 1 {
                self.last_step = step;
                return self.code_at(step);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A well-formed code that is not valid now.
    fn wrong_code(&self) -> String {
        let now = Self::step_now();
        let valid: Vec<String> = (now - 2..=now + 2).map(|s| self.code_at(s)).collect();
        (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|c| !valid.contains(c))
            .unwrap()
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Value,
    token: &str,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn me(app: &TestApp, token: &str) -> Value {
    ok(app.get("/users/me", Some(token)).await).await
}

/// Sets up and confirms TOTP for a signed-in user; returns the app and the recovery codes.
pub(crate) async fn enable_totp(
    app: &TestApp,
    user: &TestUser,
    tokens: &Tokens,
) -> (Authenticator, Vec<String>) {
    let setup = ok(send(
        app,
        Method::POST,
        "/auth/mfa/totp/setup",
        json!({"password": user.password}),
        &tokens.access,
    )
    .await)
    .await;
    let mut authenticator = Authenticator::new(setup["secret"].as_str().unwrap());
    let confirmed = ok(send(
        app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        json!({"code": authenticator.next_code().await}),
        &tokens.access,
    )
    .await)
    .await;
    let codes: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (authenticator, codes)
}

/// The login answer for an account with a second factor: its `mfa_token`.
async fn password_step(app: &TestApp, user: &TestUser) -> String {
    let body = problem(
        app.login_raw(&user.email, &user.password).await,
        401,
        "mfa_required",
    )
    .await;
    assert!(body.get("access_token").is_none(), "{body}");
    body["mfa_token"].as_str().expect("mfa_token").to_string()
}

async fn verify(app: &TestApp, mfa_token: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "code": code}),
        None,
    )
    .await
}

async fn totp_sign_in_end_to_end(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, tokens) = app.signed_in_user().await;
    let other_session = app.login(&user.email, &user.password).await;
    assert_eq!(me(&app, &tokens.access).await["mfa_enabled"], false);

    // Set-up needs the password, and changes nothing at sign-in until confirmed.
    let wrong = send(
        &app,
        Method::POST,
        "/auth/mfa/totp/setup",
        json!({"password": "Not-The-Password1"}),
        &tokens.access,
    )
    .await;
    problem(wrong, 403, "invalid_current_password").await;
    let setup = ok(send(
        &app,
        Method::POST,
        "/auth/mfa/totp/setup",
        json!({"password": user.password}),
        &tokens.access,
    )
    .await)
    .await;
    let secret = setup["secret"].as_str().unwrap();
    let uri = setup["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Keel:") && uri.contains(&format!("secret={secret}")),
        "{uri}"
    );
    assert!(uri.contains("issuer=Keel") && uri.contains("period=30") && uri.contains("digits=6"));
    app.login(&user.email, &user.password).await;

    // Stored encrypted: the row holds neither the base32 secret nor its bytes.
    let mut authenticator = Authenticator::new(secret);
    let id: uuid::Uuid = me(&app, &tokens.access).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let row = totp_factor::Entity::find_by_id(id)
        .one(&app.state.db)
        .await
        .unwrap()
        .expect("a factor row");
    assert!(!row.secret_ciphertext.contains(secret));
    assert!(
        !row.secret_ciphertext
            .contains(&data_encoding::BASE64.encode(&authenticator.secret))
    );
    assert!(row.confirmed_at.is_none());

    // A wrong first code leaves it off; the right one turns it on and shows ten codes once.
    let wrong = send(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        json!({"code": authenticator.wrong_code()}),
        &tokens.access,
    )
    .await;
    problem(wrong, 403, "invalid_mfa_code").await;
    let confirmed = ok(send(
        &app,
        Method::POST,
        "/auth/mfa/totp/confirm",
        json!({"code": authenticator.next_code().await}),
        &tokens.access,
    )
    .await)
    .await;
    let codes = confirmed["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let unique: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(unique.len(), 10);
    assert_eq!(me(&app, &tokens.access).await["mfa_enabled"], true);
    // The other session ended; this one goes on; the account got a notice.
    problem(
        app.get("/users/me", Some(&other_session.access)).await,
        401,
        "session_revoked",
    )
    .await;
    let notice = mail::wait_for_messages(&user.email, "two-factor sign-in changed", 1).await;
    assert!(notice[0]["text"].as_str().unwrap().contains("turned on"));
    let again = send(
        &app,
        Method::POST,
        "/auth/mfa/totp/setup",
        json!({"password": user.password}),
        &tokens.access,
    )
    .await;
    problem(again, 409, "mfa_already_enabled").await;

    // The password alone no longer signs in: it opens a second step.
    let mfa_token = password_step(&app, &user).await;
    problem(
        verify(&app, &mfa_token, &authenticator.wrong_code()).await,
        401,
        "invalid_mfa_code",
    )
    .await;
    problem(
        verify(&app, "not-a-token", "123456").await,
        401,
        "mfa_token_invalid",
    )
    .await;
    let code = authenticator.next_code().await;
    let signed_in = ok(verify(&app, &mfa_token, &code).await).await;
    let new_access = signed_in["access_token"].as_str().unwrap();
    assert_eq!(me(&app, new_access).await["email"], user.email.as_str());
    // The token serves once; the code serves once, even with a fresh token.
    problem(
        verify(&app, &mfa_token, &authenticator.next_code().await).await,
        401,
        "mfa_token_invalid",
    )
    .await;
    let mfa_token = password_step(&app, &user).await;
    problem(
        verify(&app, &mfa_token, &code).await,
        401,
        "invalid_mfa_code",
    )
    .await;

    // A recovery code stands in for the app once, typed loosely.
    let recovery = codes[3].as_str().unwrap().to_lowercase().replace('-', " ");
    ok(verify(&app, &mfa_token, &recovery).await).await;
    let mfa_token = password_step(&app, &user).await;
    problem(
        verify(&app, &mfa_token, &recovery).await,
        401,
        "invalid_mfa_code",
    )
    .await;

    // What happened is in the audit log.
    let events: Vec<String> = audit_log::Entity::find()
        .filter(audit_log::Column::UserId.eq(id))
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for event in [
        "mfa_setup_started",
        "mfa_enabled",
        "mfa_challenged",
        "mfa_recovery_code_used",
    ] {
        assert!(events.iter().any(|e| e == event), "{event} in {events:?}");
    }
}

async fn wrong_codes_end_the_challenge_and_throttle_the_account(backend: Backend) {
    let app = TestApp::start_with(backend, &[("ENABLE_RATE_LIMITING", "true")]).await;
    let (user, tokens) = app.signed_in_user().await;
    let (mut authenticator, _) = enable_totp(&app, &user, &tokens).await;

    let mfa_token = password_step(&app, &user).await;
    for _ in 0..4 {
        let body = problem(
            verify(&app, &mfa_token, &authenticator.wrong_code()).await,
            401,
            "invalid_mfa_code",
        )
        .await;
        assert!(
            !body["detail"].as_str().unwrap().contains("ended"),
            "{body}"
        );
    }
    let fifth = problem(
        verify(&app, &mfa_token, &authenticator.wrong_code()).await,
        401,
        "invalid_mfa_code",
    )
    .await;
    assert!(
        fifth["detail"].as_str().unwrap().contains("ended"),
        "{fifth}"
    );
    // The token is dead even for the right code.
    problem(
        verify(&app, &mfa_token, &authenticator.next_code().await).await,
        401,
        "mfa_token_invalid",
    )
    .await;
    // The five wrong codes were failed sign-ins of the account: the right password is refused
    // for now, by email and by username alike.
    let resp = app.login_raw(&user.email, &user.password).await;
    assert!(resp.headers().contains_key("retry-after"));
    problem(resp, 429, "rate_limited").await;
    problem(
        app.login_raw(&user.username, &user.password).await,
        429,
        "rate_limited",
    )
    .await;
}

async fn new_recovery_codes_and_turning_it_off(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (user, tokens) = app.signed_in_user().await;
    let (mut authenticator, old_codes) = enable_totp(&app, &user, &tokens).await;

    // New codes need an app code; the old ones die.
    let wrong = send(
        &app,
        Method::POST,
        "/auth/mfa/recovery-codes",
        json!({"code": authenticator.wrong_code()}),
        &tokens.access,
    )
    .await;
    problem(wrong, 403, "invalid_mfa_code").await;
    let fresh = ok(send(
        &app,
        Method::POST,
        "/auth/mfa/recovery-codes",
        json!({"code": authenticator.next_code().await}),
        &tokens.access,
    )
    .await)
    .await;
    let new_codes = fresh["recovery_codes"].as_array().unwrap();
    assert_eq!(new_codes.len(), 10);
    assert!(
        new_codes
            .iter()
            .all(|c| !old_codes.contains(&c.as_str().unwrap().to_string()))
    );
    let mfa_token = password_step(&app, &user).await;
    problem(
        verify(&app, &mfa_token, &old_codes[0]).await,
        401,
        "invalid_mfa_code",
    )
    .await;
    ok(verify(&app, &mfa_token, new_codes[0].as_str().unwrap()).await).await;

    // Turning it off needs the password and a code.
    let wrong_password = send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": "Not-The-Password1", "code": authenticator.next_code().await}),
        &tokens.access,
    )
    .await;
    problem(wrong_password, 403, "invalid_current_password").await;
    let wrong_code = send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": user.password, "code": authenticator.wrong_code()}),
        &tokens.access,
    )
    .await;
    problem(wrong_code, 403, "invalid_mfa_code").await;
    ok(send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": user.password, "code": new_codes[1]}),
        &tokens.access,
    )
    .await)
    .await;
    assert_eq!(me(&app, &tokens.access).await["mfa_enabled"], false);
    let notices = mail::wait_for_messages(&user.email, "two-factor sign-in changed", 3).await;
    assert!(
        notices
            .iter()
            .any(|m| m["text"].as_str().unwrap().contains("turned off"))
    );
    // The password signs in alone again; nothing is left to turn off.
    app.login(&user.email, &user.password).await;
    let again = send(
        &app,
        Method::DELETE,
        "/auth/mfa/totp",
        json!({"password": user.password, "code": "123456"}),
        &tokens.access,
    )
    .await;
    problem(again, 409, "mfa_not_enabled").await;
}

async fn operators_reset_a_lost_factor(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        &[
            ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
            ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
        ],
    )
    .await;
    let root = app.login("root@example.com", "SuperSecret123!").await;
    let root_id = me(&app, &root.access).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (user, tokens) = app.signed_in_user().await;
    let id = me(&app, &tokens.access).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let path = format!("/admin/users/{id}/mfa");
    problem(
        app.delete(&path, Some(&root.access)).await,
        409,
        "mfa_not_enabled",
    )
    .await;
    enable_totp(&app, &user, &tokens).await;
    let seen = ok(app
        .get(&format!("/admin/users/{id}"), Some(&root.access))
        .await)
    .await;
    assert_eq!(seen["mfa_enabled"], true);
    // Not for the user themselves, nor for one's own account.
    problem(
        app.delete(&path, Some(&tokens.access)).await,
        403,
        "superuser_required",
    )
    .await;
    problem(
        app.delete(&format!("/admin/users/{root_id}/mfa"), Some(&root.access))
            .await,
        403,
        "cannot_modify_self",
    )
    .await;

    let reset = ok(app.delete(&path, Some(&root.access)).await).await;
    assert_eq!(reset["mfa_enabled"], false);
    // Every session of the account ended; the password alone signs in; a notice went out.
    problem(
        app.get("/users/me", Some(&tokens.access)).await,
        401,
        "session_revoked",
    )
    .await;
    let notices = mail::wait_for_messages(&user.email, "two-factor sign-in changed", 2).await;
    assert!(
        notices
            .iter()
            .any(|m| m["text"].as_str().unwrap().contains("administrator"))
    );
    let tokens = app.login(&user.email, &user.password).await;

    // The CLI does the same.
    enable_totp(&app, &user, &tokens).await;
    let out = crate::admin_cli::admin(&app, &["reset-mfa", &user.email], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("two-factor sign-in is off"));
    app.login(&user.email, &user.password).await;
    let out = crate::admin_cli::admin(&app, &["reset-mfa", &user.email], None);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
