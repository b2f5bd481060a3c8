//! OpenID Connect as a relying party: a provider's discovery document, its signing keys
//! (cached, and fetched again for an unknown `kid` at most once per
//! `OIDC_JWKS_MIN_REFETCH_SECONDS`), the authorization URL with PKCE (S256), the code exchange
//! and the ID token's checks (signature with RS256 or ES256, `iss`, `aud`, `exp`, `iat`,
//! `nonce`, with a clock skew of 60 seconds). Knows nothing of accounts.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, errors::ErrorKind, jwk::JwkSet};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::{OidcProvider, OidcSettings, ResponseMode};

mod jwks;

use jwks::pick_key;

/// The clock skew tolerated on `exp` and `iat`.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// How long a discovery document or a key set is used before it is fetched again anyway.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// The largest discovery document, key set or token response read from a provider.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("no sign-in provider of this name is configured")]
    UnknownProvider,
    /// The provider could not be reached, or answered with something that is not OpenID
    /// Connect.
    #[error("the sign-in provider cannot be used right now: {0}")]
    Unavailable(String),
    /// The provider refused the authorization code (used, expired, or not its own).
    #[error("the provider refused the authorization code: {0}")]
    CodeRejected(String),
    #[error("the ID token was refused: {}", .0.describe())]
    TokenInvalid(TokenProblem),
}

/// Why an ID token was refused; the problem's detail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Malformed,
    UnsupportedAlgorithm,
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    IssuedInTheFuture,
    NonceMismatch,
}

impl TokenProblem {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Malformed => {
                "it is not a well-formed JWT with the claims OpenID Connect requires"
            }
            Self::UnsupportedAlgorithm => "it is not signed with RS256 or ES256",
            Self::UnknownKey => "it is signed with a key the provider does not publish",
            Self::BadSignature => "its signature does not verify",
            Self::WrongIssuer => "it was issued by another issuer",
            Self::WrongAudience => "it was issued for another client",
            Self::Expired => "it has expired",
            Self::IssuedInTheFuture => "it was issued in the future",
            Self::NonceMismatch => "its nonce is not the one of this sign-in",
        }
    }
}

/// How the `nonce` claim is checked.
#[derive(Debug, Clone, Copy)]
pub enum ExpectedNonce<'a> {
    /// The web flow: exactly the nonce sent with the authorization request.
    Exact(&'a str),
    /// A native app: the raw nonce it gave the provider's SDK, or (as Apple and Google's iOS
    /// SDK want it) its SHA-256 in hex.
    RawOrSha256(&'a str),
}

/// What a verified ID token says about the person.
#[derive(Debug, Clone)]
pub struct IdClaims {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    /// The `nonce` claim as the token carries it.
    pub nonce: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    iat: i64,
    exp: i64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// A boolean, or (Apple) the string `"true"`.
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
}

/// The parts of a discovery document Keel uses.
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

struct Fetched<T> {
    value: Arc<T>,
    at: Instant,
}

struct Provider {
    config: OidcProvider,
    metadata: Mutex<Option<Fetched<Metadata>>>,
    keys: Mutex<Option<Fetched<JwkSet>>>,
}

/// The configured providers, with what has been fetched of each.
#[derive(Clone)]
pub struct Oidc {
    http: reqwest::Client,
    providers: Arc<HashMap<String, Provider>>,
    min_refetch: Duration,
}

/// A fresh PKCE pair (RFC 7636): the verifier kept by Keel, the S256 challenge sent along.
pub fn pkce_pair() -> (String, String) {
    let verifier = crate::opaque::new_opaque_token();
    let challenge = s256(&verifier);
    (verifier, challenge)
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Oidc {
    pub fn new(settings: &OidcSettings) -> Result<Self, reqwest::Error> {
        let http = crate::net::http_client()
            .timeout(settings.http_timeout)
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let providers = settings
            .providers
            .iter()
            .map(|config| {
                (
                    config.name.clone(),
                    Provider {
                        config: config.clone(),
                        metadata: Mutex::new(None),
                        keys: Mutex::new(None),
                    },
                )
            })
            .collect();
        Ok(Self {
            http,
            providers: Arc::new(providers),
            min_refetch: settings.jwks_min_refetch,
        })
    }

    fn provider(&self, name: &str) -> Result<&Provider, OidcError> {
        self.providers.get(name).ok_or(OidcError::UnknownProvider)
    }

    pub fn config(&self, name: &str) -> Result<&OidcProvider, OidcError> {
        self.provider(name).map(|p| &p.config)
    }

    /// Where to send the browser: the provider's authorization endpoint with the request.
    pub async fn authorization_url(
        &self,
        name: &str,
        callback: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, OidcError> {
        let provider = self.provider(name)?;
        let metadata = self.metadata(provider).await?;
        let mut url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|_| OidcError::Unavailable("its authorization_endpoint is no URL".into()))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", provider.config.web_client_id())
                .append_pair("redirect_uri", callback)
                .append_pair("scope", &provider.config.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256");
            if provider.config.response_mode == ResponseMode::FormPost {
                query.append_pair("response_mode", "form_post");
            }
        }
        Ok(url.into())
    }

    /// Trades an authorization code for the ID token (the access token is not kept).
    pub async fn exchange_code(
        &self,
        name: &str,
        code: &str,
        code_verifier: &str,
        callback: &str,
    ) -> Result<String, OidcError> {
        let provider = self.provider(name)?;
        let metadata = self.metadata(provider).await?;
        let config = &provider.config;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", callback),
            ("code_verifier", code_verifier),
        ];
        let mut request = self.http.post(&metadata.token_endpoint);
        // client_secret_basic unless the provider says it only takes the secret in the form.
        let basic = metadata
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_none_or(|m| m.iter().any(|m| m == "client_secret_basic"));
        match &config.client_secret {
            Some(secret) if basic => {
                // RFC 6749 §2.3.1: both parts form-encoded before they are joined.
                let encode = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let credentials = format!("{}:{}", encode(config.web_client_id()), encode(secret));
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(credentials)
                    ),
                );
            }
            Some(secret) => {
                form.push(("client_id", config.web_client_id()));
                form.push(("client_secret", secret));
            }
            None => form.push(("client_id", config.web_client_id())),
        }
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("its token endpoint: {e}")))?;
        let status = response.status();
        let body = read_capped(response).await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
            error: Option<String>,
        }
        let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
        if status.is_client_error() {
            let error = parsed
                .and_then(|p| p.error)
                .unwrap_or_else(|| status.to_string());
            return Err(OidcError::CodeRejected(error));
        }
        if !status.is_success() {
            return Err(OidcError::Unavailable(format!(
                "its token endpoint answered {status}"
            )));
        }
        parsed.and_then(|p| p.id_token).ok_or_else(|| {
            OidcError::Unavailable("its token endpoint answered without an id_token".into())
        })
    }

    /// Checks an ID token of `name` for one of `audiences`: signature, issuer, audience,
    /// lifetime and nonce.
    pub async fn verify_id_token(
        &self,
        name: &str,
        token: &str,
        audiences: &[String],
        nonce: ExpectedNonce<'_>,
    ) -> Result<IdClaims, OidcError> {
        let provider = self.provider(name)?;
        let invalid = OidcError::TokenInvalid;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid(TokenProblem::Malformed))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(TokenProblem::UnsupportedAlgorithm));
        }
        let key = self.signing_key(provider, &header).await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.set_issuer(&[&provider.config.issuer]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<RawClaims>(token, &key, &validation)
            .map_err(|e| {
                invalid(match e.kind() {
                    ErrorKind::InvalidSignature => TokenProblem::BadSignature,
                    ErrorKind::ExpiredSignature => TokenProblem::Expired,
                    ErrorKind::InvalidIssuer => TokenProblem::WrongIssuer,
                    ErrorKind::InvalidAudience => TokenProblem::WrongAudience,
                    ErrorKind::ImmatureSignature => TokenProblem::IssuedInTheFuture,
                    _ => TokenProblem::Malformed,
                })
            })?
            .claims;
        if claims.iat > chrono::Utc::now().timestamp() + CLOCK_SKEW_SECS as i64 {
            return Err(invalid(TokenProblem::IssuedInTheFuture));
        }
        let carried = claims.nonce.unwrap_or_default();
        let matches = match nonce {
            ExpectedNonce::Exact(expected) => !expected.is_empty() && carried == expected,
            ExpectedNonce::RawOrSha256(raw) => {
                !raw.is_empty()
                    && (carried == raw || carried == hex::encode(Sha256::digest(raw.as_bytes())))
            }
        };
        if !matches {
            return Err(invalid(TokenProblem::NonceMismatch));
        }
        let email_verified = match claims.email_verified {
            Some(serde_json::Value::Bool(b)) => b,
            Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        Ok(IdClaims {
            subject: claims.sub,
            email: claims.email,
            email_verified,
            name: claims.name,
            preferred_username: claims.preferred_username,
            nonce: carried,
            expires_at: claims.exp,
        })
    }

    async fn metadata(&self, provider: &Provider) -> Result<Arc<Metadata>, OidcError> {
        let mut cached = provider.metadata.lock().await;
        if let Some(f) = cached.as_ref().filter(|f| f.at.elapsed() < MAX_AGE) {
            return Ok(f.value.clone());
        }
        let issuer = &provider.config.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let metadata: Metadata = self.get_json(&url, "its discovery document").await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if metadata.issuer != *issuer {
            return Err(OidcError::Unavailable(format!(
                "its discovery document names the issuer {:?}, not {issuer:?}",
                metadata.issuer
            )));
        }
        let value = Arc::new(metadata);
        *cached = Some(Fetched {
            value: value.clone(),
            at: Instant::now(),
        });
        Ok(value)
    }

    async fn fetch_keys(&self, provider: &Provider) -> Result<Fetched<JwkSet>, OidcError> {
        let metadata = self.metadata(provider).await?;
        let set: JwkSet = self.get_json(&metadata.jwks_uri, "its key set").await?;
        crate::metrics::metrics()
            .oidc_key_fetches
            .with_label_values(&[&provider.config.name])
            .inc();
        Ok(Fetched {
            value: Arc::new(set),
            at: Instant::now(),
        })
    }

    /// The key `header` names. A `kid` the cached set lacks fetches the set again, unless it
    /// was fetched less than `min_refetch` ago: tokens with made-up key ids cannot make Keel
    /// hammer the provider.
    async fn signing_key(
        &self,
        provider: &Provider,
        header: &Header,
    ) -> Result<DecodingKey, OidcError> {
        let mut keys = provider.keys.lock().await;
        if keys.as_ref().is_none_or(|k| k.at.elapsed() >= MAX_AGE) {
            *keys = Some(self.fetch_keys(provider).await?);
        }
        if let Some(set) = keys.as_ref() {
            if let Some(key) = pick_key(&set.value, header)? {
                return Ok(key);
            }
            if set.at.elapsed() < self.min_refetch {
                return Err(OidcError::TokenInvalid(TokenProblem::UnknownKey));
            }
        }
        let fresh = self.fetch_keys(provider).await?;
        let key = pick_key(&fresh.value, header)?;
        *keys = Some(fresh);
        key.ok_or(OidcError::TokenInvalid(TokenProblem::UnknownKey))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unavailable(format!("{what}: {e}")))?;
        if !response.status().is_success() {
            return Err(OidcError::Unavailable(format!(
                "{what} answered {}",
                response.status()
            )));
        }
        let body = read_capped(response).await?;
        serde_json::from_slice(&body).map_err(|e| {
            OidcError::Unavailable(format!("{what} is not what OpenID Connect says: {e}"))
        })
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OidcError::Unavailable(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OidcError::Unavailable("it answered with over 1 MiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_the_s256_of_the_verifier() {
        // RFC 7636 appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (verifier, challenge) = pkce_pair();
        assert!((43..=128).contains(&verifier.len()));
        assert_eq!(challenge, s256(&verifier));
    }
}
