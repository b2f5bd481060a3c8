//! Sign-in with OpenID Connect over real HTTP, on both back ends, against a real provider this
//! file runs on loopback (discovery, keys it rotates, an authorization endpoint that signs a
//! chosen person in, and a token endpoint that checks the client and PKCE), with the notices
//! through real SMTP.

use crate::common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::{Backend, TestApp, TestUser, Tokens, mail, problem};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use poem::{
    EndpointExt, Route, Server, get, handler,
    http::StatusCode as PoemStatus,
    listener::{Acceptor, Listener, TcpListener},
    post,
    web::{Data, Form, Json, Query, Redirect},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

both_backends!(
    web_sign_in_makes_an_account_and_each_step_serves_once,
    accounts_are_linked_only_through_verified_addresses,
    native_id_tokens_are_checked_and_keys_rotate,
    an_unreachable_provider_is_a_503,
);

const CLIENT_ID: &str = "keel-web";
const NATIVE_CLIENT_ID: &str = "keel-ios";
const CLIENT_SECRET: &str = "provider secret: with & and =";
const APP_REDIRECT: &str = "http://app.test/oidc/callback";
/// Short, so the rotation test need not wait long; the unknown-key checks run well within it.
const MIN_REFETCH_SECS: u64 = 5;

struct SigningKey {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    fn rsa(kid: &'static str, der: &[u8]) -> Self {
        Self {
            kid,
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_der(der),
        }
    }

    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.to_string());
        serde_json::to_value(jwk).unwrap()
    }
}

#[derive(Clone, Debug)]
struct Person {
    sub: String,
    email: String,
    email_verified: bool,
}

impl Person {
    fn new() -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Self {
            sub: format!("sub-{tag}"),
            email: format!("oidc-{}@example.com", &tag[..12]),
            email_verified: true,
        }
    }
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    person: Person,
}

/// The provider: what it publishes, signs with and has handed out.
struct ProviderState {
    issuer: String,
    keys: Vec<SigningKey>,
    /// Indexes into `keys` of the published set, and of the key new tokens are signed with.
    published: Mutex<Vec<usize>>,
    signing: Mutex<usize>,
    key_fetches: AtomicUsize,
    grants: Mutex<HashMap<String, Grant>>,
    /// Who signs in at the next authorization request.
    next_person: Mutex<Option<Person>>,
}

struct Provider {
    state: Arc<ProviderState>,
}

const RSA1: usize = 0;
const RSA2: usize = 1;
const UNPUBLISHED: usize = 2;
const EC1: usize = 3;

impl Provider {
    async fn start() -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap();
        let state = Arc::new(ProviderState {
            issuer: format!("http://{addr}"),
            keys: vec![
                SigningKey::rsa("k1", include_bytes!("../fixtures/oidc/rsa1.der")),
                SigningKey::rsa("k2", include_bytes!("../fixtures/oidc/rsa2.der")),
                SigningKey::rsa("k3", include_bytes!("../fixtures/oidc/rsa3.der")),
                SigningKey {
                    kid: "e1",
                    alg: Algorithm::ES256,
                    key: EncodingKey::from_ec_der(include_bytes!("../fixtures/oidc/ec1.der")),
                },
            ],
            published: Mutex::new(vec![RSA1, EC1]),
            signing: Mutex::new(RSA1),
            key_fetches: AtomicUsize::new(0),
            grants: Mutex::new(HashMap::new()),
            next_person: Mutex::new(None),
        });
        let app = Route::new()
            .at("/.well-known/openid-configuration", get(discovery_endpoint))
            .at("/jwks", get(jwks_endpoint))
            .at("/authorize", get(authorize_endpoint))
            .at("/token", post(token_endpoint))
            .data(state.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self { state }
    }

    fn issuer(&self) -> &str {
        &self.state.issuer
    }

    fn key_fetches(&self) -> usize {
        self.state.key_fetches.load(Ordering::SeqCst)
    }

    /// The next authorization request signs `person` in.
    fn will_sign_in(&self, person: &Person) {
        *self.state.next_person.lock().unwrap() = Some(person.clone());
    }

    /// Publishes only `key` from now on, and signs with it.
    fn rotate_to(&self, key: usize) {
        *self.state.published.lock().unwrap() = vec![key];
        *self.state.signing.lock().unwrap() = key;
    }

    fn claims(&self, person: &Person, aud: &str, nonce: &str) -> Value {
        self.state.claims(person, aud, nonce)
    }

    fn sign_as(&self, claims: &Value, key: usize, kid: Option<&str>) -> String {
        self.state.sign_as(claims, key, kid)
    }

    fn sign(&self, claims: &Value) -> String {
        self.state.sign(claims)
    }
}

impl ProviderState {
    /// Claims of an ID token for `person`, valid now.
    fn claims(&self, person: &Person, aud: &str, nonce: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer,
            "sub": person.sub,
            "aud": aud,
            "iat": now,
            "exp": now + 600,
            "nonce": nonce,
            "email": person.email,
            "email_verified": person.email_verified,
            "name": "Oidc Person",
        })
    }

    /// Signs `claims` with `key`, naming `kid` in the header (the key's own unless given).
    fn sign_as(&self, claims: &Value, key: usize, kid: Option<&str>) -> String {
        let key = &self.keys[key];
        let mut header = Header::new(key.alg);
        header.kid = Some(kid.unwrap_or(key.kid).to_string());
        jsonwebtoken::encode(&header, claims, &key.key).unwrap()
    }

    /// Signs with the key in use.
    fn sign(&self, claims: &Value) -> String {
        let key = *self.signing.lock().unwrap();
        self.sign_as(claims, key, None)
    }
}

#[handler]
fn discovery_endpoint(Data(state): Data<&Arc<ProviderState>>) -> Json<Value> {
    let issuer = &state.issuer;
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

#[handler]
fn jwks_endpoint(Data(state): Data<&Arc<ProviderState>>) -> Json<Value> {
    state.key_fetches.fetch_add(1, Ordering::SeqCst);
    let published = state.published.lock().unwrap().clone();
    Json(json!({"keys": published.iter().map(|&i| state.keys[i].jwk()).collect::<Vec<_>>()}))
}

/// Signs the chosen person in at once and sends the browser back with a code.
#[handler]
fn authorize_endpoint(
    Data(state): Data<&Arc<ProviderState>>,
    Query(q): Query<HashMap<String, String>>,
) -> poem::Result<Redirect> {
    let bad = |m: &str| poem::Error::from_string(m.to_string(), PoemStatus::BAD_REQUEST);
    if q.get("response_type").map(String::as_str) != Some("code")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
        || !q
            .get("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "openid"))
    {
        return Err(bad("not an OpenID Connect code request with PKCE"));
    }
    let person = state
        .next_person
        .lock()
        .unwrap()
        .take()
        .ok_or_else(|| bad("nobody to sign in"))?;
    let code = uuid::Uuid::new_v4().to_string();
    let redirect_uri = q["redirect_uri"].clone();
    state.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            client_id: q["client_id"].clone(),
            redirect_uri: redirect_uri.clone(),
            challenge: q["code_challenge"].clone(),
            nonce: q["nonce"].clone(),
            person,
        },
    );
    let mut back = url::Url::parse(&redirect_uri).map_err(|_| bad("redirect_uri"))?;
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    Ok(Redirect::see_other(back.to_string()))
}

/// The token endpoint: client_secret_basic, a code once, for its redirect URI and PKCE
/// verifier.
#[handler]
fn token_endpoint(
    Data(state): Data<&Arc<ProviderState>>,
    req: &poem::Request,
    Form(form): Form<HashMap<String, String>>,
) -> poem::Response {
    let refuse = |error: &str| {
        poem::Response::builder()
            .status(PoemStatus::BAD_REQUEST)
            .content_type("application/json")
            .body(json!({"error": error}).to_string())
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            CLIENT_ID,
            url::form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect::<String>()
        ))
    );
    if req.header("authorization") != Some(expected.as_str()) {
        return poem::Response::builder()
            .status(PoemStatus::UNAUTHORIZED)
            .content_type("application/json")
            .body(json!({"error": "invalid_client"}).to_string());
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return refuse("unsupported_grant_type");
    }
    let Some(grant) = form
        .get("code")
        .and_then(|c| state.grants.lock().unwrap().remove(c))
    else {
        return refuse("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    if grant.client_id != CLIENT_ID
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
        || challenge != grant.challenge
    {
        return refuse("invalid_grant");
    }
    let id_token = state.sign(&state.claims(&grant.person, CLIENT_ID, &grant.nonce));
    poem::Response::builder()
        .content_type("application/json")
        .body(
            json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": 600, "id_token": id_token})
                .to_string(),
        )
}

async fn start_app(backend: Backend, provider: &Provider) -> TestApp {
    let refetch = MIN_REFETCH_SECS.to_string();
    TestApp::start_with(
        backend,
        &[
            ("OIDC_PROVIDERS", "test"),
            ("OIDC_TEST_ISSUER", provider.issuer()),
            (
                "OIDC_TEST_CLIENT_ID",
                &format!("{CLIENT_ID},{NATIVE_CLIENT_ID}"),
            ),
            ("OIDC_TEST_CLIENT_SECRET", CLIENT_SECRET),
            (
                "OIDC_REDIRECT_URIS",
                &format!("{APP_REDIRECT},http://app.test/other"),
            ),
            ("PUBLIC_URL", "http://keel.test"),
            ("OIDC_JWKS_MIN_REFETCH_SECONDS", &refetch),
        ],
    )
    .await
}

/// A browser that does not follow redirects by itself, so each hop can be looked at.
fn browser() -> reqwest::Client {
    keel::net::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn location(resp: &reqwest::Response) -> url::Url {
    assert!(
        resp.status().is_redirection(),
        "expected a redirect from {}, got {}",
        resp.url(),
        resp.status()
    );
    let raw = resp.headers()[header::LOCATION].to_str().unwrap();
    url::Url::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// The binding cookie `authorize` set, as a `Cookie` header value.
fn binding_cookie(resp: &reqwest::Response) -> String {
    let set = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

/// The provider's answer for a web sign-in: the callback URL (on Keel) with code and state,
/// and the browser's cookie.
async fn to_provider_and_back(
    app: &TestApp,
    provider: &Provider,
    person: &Person,
) -> (HashMap<String, String>, String) {
    let browser = browser();
    let start = browser
        .get(app.url("/auth/oidc/test/authorize"))
        .query(&[("redirect_uri", APP_REDIRECT)])
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    assert_eq!(start.headers()[header::CACHE_CONTROL], "no-store");
    let cookie = binding_cookie(&start);
    let at_provider = location(&start);
    assert!(
        at_provider
            .as_str()
            .starts_with(&format!("{}/authorize", provider.issuer()))
    );
    let q = query(&at_provider);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(
        q["redirect_uri"],
        "http://keel.test/auth/oidc/test/callback"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["code_challenge"].len() == 43 && q["state"].len() >= 32 && q["nonce"].len() >= 32);
    provider.will_sign_in(person);
    let back = browser.get(at_provider).send().await.unwrap();
    let callback = location(&back);
    assert_eq!(callback.path(), "/auth/oidc/test/callback");
    (query(&callback), cookie)
}

/// Calls Keel's callback as the browser would (by GET), with or without the binding cookie.
async fn callback(
    app: &TestApp,
    answer: &HashMap<String, String>,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut req = browser()
        .get(app.url("/auth/oidc/test/callback"))
        .query(answer);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.send().await.unwrap()
}

async fn exchange(app: &TestApp, login_code: &str) -> reqwest::Response {
    app.post_json(
        "/auth/oidc/exchange",
        json!({"login_code": login_code}),
        None,
    )
    .await
}

async fn ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn web_sign_in_makes_an_account_and_each_step_serves_once(backend: Backend) {
    let provider = Provider::start().await;
    let app = start_app(backend, &provider).await;

    // Only configured providers, and only allow-listed places to come back to.
    let browser = browser();
    let unknown = browser
        .get(app.url("/auth/oidc/nope/authorize"))
        .send()
        .await
        .unwrap();
    problem(unknown, 404, "unknown_provider").await;
    let elsewhere = browser
        .get(app.url("/auth/oidc/test/authorize"))
        .query(&[("redirect_uri", "https://evil.test/oidc/callback")])
        .send()
        .await
        .unwrap();
    let body = problem(elsewhere, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "redirect_uri", "{body}");

    // The whole flow: to the provider and back, a login code to the app, tokens for it.
    let person = Person::new();
    let (answer, cookie) = to_provider_and_back(&app, &provider, &person).await;
    let done = callback(&app, &answer, Some(&cookie)).await;
    let to_app = location(&done);
    assert!(to_app.as_str().starts_with(APP_REDIRECT), "{to_app}");
    let back = query(&to_app);
    assert!(
        !back.contains_key("access_token") && !back.contains_key("refresh_token"),
        "no token in a URL: {to_app}"
    );
    let login_code = back.get("login_code").expect("login_code").clone();
    // A state serves once.
    let replay = callback(&app, &answer, Some(&cookie)).await;
    problem(replay, 400, "oidc_state_invalid").await;
    let tokens = Tokens::from_json(&ok(exchange(&app, &login_code).await).await);
    problem(exchange(&app, &login_code).await, 400, "token_invalid").await;
    let me = ok(app.get("/users/me", Some(&tokens.access)).await).await;
    assert_eq!(me["email"], person.email.as_str());
    assert_eq!(me["is_verified"], true);
    assert_eq!(me["has_password"], false);
    let username = me["username"].as_str().unwrap();
    assert!(username.starts_with("oidc-"), "{username}");

    // The answer counts only in the browser that started the sign-in.
    let (answer, _cookie) = to_provider_and_back(&app, &provider, &person).await;
    problem(
        callback(&app, &answer, None).await,
        400,
        "oidc_state_invalid",
    )
    .await;
    problem(
        callback(&app, &answer, Some("keel_oidc_binding=somebody-elses")).await,
        400,
        "oidc_state_invalid",
    )
    .await;

    // A second sign-in, posted back (form_post), finds the same account.
    let (answer, cookie) = to_provider_and_back(&app, &provider, &person).await;
    let posted = browser
        .post(app.url("/auth/oidc/test/callback"))
        .header(header::COOKIE, &cookie)
        .form(&answer)
        .send()
        .await
        .unwrap();
    let code = query(&location(&posted))["login_code"].clone();
    let again = Tokens::from_json(&ok(exchange(&app, &code).await).await);
    let me_again = ok(app.get("/users/me", Some(&again.access)).await).await;
    assert_eq!(me_again["id"], me["id"]);

    // The person declines at the provider: the app hears the provider's error, no code.
    let start = browser
        .get(app.url("/auth/oidc/test/authorize"))
        .send()
        .await
        .unwrap();
    let cookie = binding_cookie(&start);
    let state = query(&location(&start))["state"].clone();
    let declined: HashMap<String, String> = [
        ("state".to_string(), state),
        ("error".to_string(), "access_denied".to_string()),
    ]
    .into();
    let to_app = query(&location(&callback(&app, &declined, Some(&cookie)).await));
    assert_eq!(to_app["error"], "access_denied");
    assert!(!to_app.contains_key("login_code"));

    // The identity is listed; it cannot go while it is the only way in.
    let list = ok(app.get("/auth/identities", Some(&tokens.access)).await).await;
    let identities = list["identities"].as_array().unwrap();
    assert_eq!(identities.len(), 1, "{list}");
    assert_eq!(identities[0]["provider"], "test");
    assert_eq!(identities[0]["email"], person.email.as_str());
    let id = identities[0]["id"].as_str().unwrap().to_string();
    let path = format!("/auth/identities/{id}");
    problem(
        app.delete(&path, Some(&tokens.access)).await,
        409,
        "last_sign_in_method",
    )
    .await;
    // No password yet: a password sign-in fails like any wrong one, and a change that needs
    // the password says what to do.
    problem(
        app.login_raw(&person.email, "TestPassword123!").await,
        401,
        "invalid_credentials",
    )
    .await;
    let setup = app
        .post_json(
            "/auth/mfa/totp/setup",
            json!({"password": "anything"}),
            Some(&tokens.access),
        )
        .await;
    problem(setup, 409, "password_not_set").await;

    // A first password; from then on the identity may go.
    let set = app
        .post_json(
            "/auth/set-password",
            json!({"new_password": "TestPassword123!"}),
            Some(&tokens.access),
        )
        .await;
    ok(set).await;
    mail::wait_for_messages(&person.email, "password", 1).await;
    let again = app
        .post_json(
            "/auth/set-password",
            json!({"new_password": "OtherPassword123!"}),
            Some(&tokens.access),
        )
        .await;
    problem(again, 409, "password_already_set").await;
    app.login(&person.email, "TestPassword123!").await;
    let me = ok(app.get("/users/me", Some(&tokens.access)).await).await;
    assert_eq!(me["has_password"], true);
    ok(app.delete(&path, Some(&tokens.access)).await).await;
    mail::wait_for_messages(&person.email, "sign-in with test was removed", 1).await;
    let list = ok(app.get("/auth/identities", Some(&tokens.access)).await).await;
    assert_eq!(list["identities"], json!([]));
    problem(
        app.delete(&path, Some(&tokens.access)).await,
        404,
        "not_found",
    )
    .await;
}

/// Signs in through the native endpoint with a token of `person` for the web client.
async fn native(app: &TestApp, provider: &Provider, person: &Person) -> reqwest::Response {
    let nonce = uuid::Uuid::new_v4().to_string();
    let token = provider.sign(&provider.claims(person, CLIENT_ID, &nonce));
    native_with(app, &token, &nonce).await
}

async fn native_with(app: &TestApp, id_token: &str, nonce: &str) -> reqwest::Response {
    app.post_json(
        "/auth/oidc/test/token",
        json!({"id_token": id_token, "nonce": nonce}),
        None,
    )
    .await
}

async fn accounts_are_linked_only_through_verified_addresses(backend: Backend) {
    let provider = Provider::start().await;
    let app = start_app(backend, &provider).await;

    // An account that never verified its address is not taken over through it.
    let user = TestUser::new();
    assert_eq!(app.register(&user).await.status(), StatusCode::CREATED);
    let person = Person {
        email: user.email.clone(),
        ..Person::new()
    };
    problem(
        native(&app, &provider, &person).await,
        409,
        "account_exists_unverified",
    )
    .await;
    let token = mail::wait_for_token(&user.email, "verify your email", "verify-email").await;
    ok(app
        .post_json("/auth/verify-email", json!({"token": token}), None)
        .await)
    .await;

    // Once it has, the provider's verified address links it, and the account hears of it.
    let tokens = Tokens::from_json(&ok(native(&app, &provider, &person).await).await);
    let me = ok(app.get("/users/me", Some(&tokens.access)).await).await;
    assert_eq!(me["username"], user.username.as_str());
    assert_eq!(me["has_password"], true);
    mail::wait_for_messages(&user.email, "sign-in with test was added", 1).await;
    let list = ok(app.get("/auth/identities", Some(&tokens.access)).await).await;
    assert_eq!(list["identities"].as_array().unwrap().len(), 1, "{list}");

    // A second factor holds for provider sign-ins too.
    let (mut authenticator, _) = crate::mfa::enable_totp(&app, &user, &tokens).await;
    let body = problem(native(&app, &provider, &person).await, 401, "mfa_required").await;
    let mfa_token = body["mfa_token"].as_str().unwrap();
    let verified = app
        .post_json(
            "/auth/mfa/verify",
            json!({"mfa_token": mfa_token, "code": authenticator.next_code().await}),
            None,
        )
        .await;
    let tokens = Tokens::from_json(&ok(verified).await);

    // With a password, the identity may go; the password still signs in.
    let id = list["identities"][0]["id"].as_str().unwrap();
    ok(app
        .delete(&format!("/auth/identities/{id}"), Some(&tokens.access))
        .await)
    .await;
    problem(
        app.login_raw(&user.email, &user.password).await,
        401,
        "mfa_required",
    )
    .await;

    // An address the provider does not vouch for makes or finds no account.
    let unverified = Person {
        email_verified: false,
        ..Person::new()
    };
    problem(
        native(&app, &provider, &unverified).await,
        403,
        "provider_email_unverified",
    )
    .await;
    problem(
        app.login_raw(&unverified.email, "TestPassword123!").await,
        401,
        "invalid_credentials",
    )
    .await;

    // An identity already linked signs in to its account even after the address changed at
    // the provider.
    let person = Person::new();
    let first = Tokens::from_json(&ok(native(&app, &provider, &person).await).await);
    let moved = Person {
        email: format!("moved-{}", person.email),
        ..person.clone()
    };
    let second = Tokens::from_json(&ok(native(&app, &provider, &moved).await).await);
    let a = ok(app.get("/users/me", Some(&first.access)).await).await;
    let b = ok(app.get("/users/me", Some(&second.access)).await).await;
    assert_eq!(a["id"], b["id"]);
    assert_eq!(
        b["email"],
        person.email.as_str(),
        "the account keeps its own address"
    );
}

fn detail_says(body: &Value, words: &str) {
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(words), "{words:?} not in {detail:?}");
}

async fn refused(app: &TestApp, token: &str, nonce: &str, why: &str) {
    let body = problem(
        native_with(app, token, nonce).await,
        401,
        "id_token_invalid",
    )
    .await;
    detail_says(&body, why);
}

async fn native_id_tokens_are_checked_and_keys_rotate(backend: Backend) {
    let provider = Provider::start().await;
    let app = start_app(backend, &provider).await;
    let person = Person::new();
    let nonce = || uuid::Uuid::new_v4().to_string();

    // A good token: the keys are fetched once; the same token (its nonce) serves once.
    let n = nonce();
    let good = provider.sign(&provider.claims(&person, CLIENT_ID, &n));
    ok(native_with(&app, &good, &n).await).await;
    let fetched_at = Instant::now();
    assert_eq!(provider.key_fetches(), 1);
    problem(native_with(&app, &good, &n).await, 401, "nonce_reused").await;

    // A kid the provider does not publish, right after a fetch: refused without fetching the
    // keys again (made-up key ids cannot make Keel hammer the provider).
    let n = nonce();
    let stranger = provider.sign_as(&provider.claims(&person, CLIENT_ID, &n), UNPUBLISHED, None);
    refused(&app, &stranger, &n, "does not publish").await;
    assert!(fetched_at.elapsed() < Duration::from_secs(MIN_REFETCH_SECS));
    assert_eq!(provider.key_fetches(), 1);

    // Each check, one at a time.
    let n = nonce();
    let claims = provider.claims(&person, CLIENT_ID, &n);
    let forged = provider.sign_as(&claims, UNPUBLISHED, Some("k1"));
    refused(&app, &forged, &n, "signature").await;
    let mut tampered = good.split('.').map(str::to_string).collect::<Vec<_>>();
    tampered[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    refused(&app, &tampered.join("."), &n, "signature").await;
    let for_another = provider.sign(&provider.claims(&person, "someone-else", &n));
    refused(&app, &for_another, &n, "another client").await;
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = json!("https://accounts.example.com");
    refused(&app, &provider.sign(&other_issuer), &n, "another issuer").await;
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 900);
    expired["exp"] = json!(now - 120);
    refused(&app, &provider.sign(&expired), &n, "expired").await;
    let mut future = claims.clone();
    future["iat"] = json!(now + 300);
    refused(&app, &provider.sign(&future), &n, "future").await;
    refused(&app, &provider.sign(&claims), &nonce(), "nonce").await;
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(CLIENT_SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    refused(&app, &hs, &n, "RS256 or ES256").await;
    refused(&app, "not.a.jwt", &n, "well-formed").await;

    // What passes: ES256, the nonce as its SHA-256 (Apple's way), the native client ID, and
    // a token just past its expiry within the skew.
    let n = nonce();
    let es = provider.sign_as(&provider.claims(&person, CLIENT_ID, &n), EC1, None);
    ok(native_with(&app, &es, &n).await).await;
    let n = nonce();
    let hashed = hex::encode(Sha256::digest(n.as_bytes()));
    let apple_style = provider.sign(&provider.claims(&person, NATIVE_CLIENT_ID, &hashed));
    ok(native_with(&app, &apple_style, &n).await).await;
    problem(
        native_with(&app, &apple_style, &n).await,
        401,
        "nonce_reused",
    )
    .await;
    let n = nonce();
    let mut late = provider.claims(&person, CLIENT_ID, &n);
    late["exp"] = json!(chrono::Utc::now().timestamp() - 20);
    ok(native_with(&app, &provider.sign(&late), &n).await).await;
    assert_eq!(
        provider.key_fetches(),
        1,
        "known keys are not fetched again"
    );

    // The provider rotates its keys. Once the pause since the last fetch has passed, a
    // token with the new kid fetches them again and is taken.
    provider.rotate_to(RSA2);
    let wait = Duration::from_secs(MIN_REFETCH_SECS).saturating_sub(fetched_at.elapsed());
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let n = nonce();
    let rotated = provider.sign(&provider.claims(&person, CLIENT_ID, &n));
    ok(native_with(&app, &rotated, &n).await).await;
    assert_eq!(provider.key_fetches(), 2);
    // The retired key is gone from the set Keel now holds.
    let n = nonce();
    let retired = provider.sign_as(&provider.claims(&person, CLIENT_ID, &n), RSA1, None);
    refused(&app, &retired, &n, "does not publish").await;
    assert_eq!(provider.key_fetches(), 2);
    assert!(
        app.metrics()
            .await
            .contains("oidc_key_set_fetches_total{provider=\"test\"} 2"),
        "the fetches are counted in /metrics"
    );
}

async fn an_unreachable_provider_is_a_503(backend: Backend) {
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let app = TestApp::start_with(
        backend,
        &[
            ("OIDC_PROVIDERS", "test"),
            ("OIDC_TEST_ISSUER", &closed),
            ("OIDC_TEST_CLIENT_ID", CLIENT_ID),
            ("OIDC_HTTP_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await;
    let start = browser()
        .get(app.url("/auth/oidc/test/authorize"))
        .send()
        .await
        .unwrap();
    problem(start, 503, "oidc_provider_unavailable").await;
    let n = uuid::Uuid::new_v4().to_string();
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "RS256", "kid": "k1"})),
        b64(json!({"sub": "x"}))
    );
    let body = problem(
        native_with(&app, &token, &n).await,
        503,
        "oidc_provider_unavailable",
    )
    .await;
    detail_says(&body, "cannot be used right now");
}
