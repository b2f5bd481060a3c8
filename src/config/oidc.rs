//! `oidc`: the OpenID Connect providers accounts may sign in with, where a finished web
//! sign-in may send the browser, and how often a provider's keys may be fetched again.

use std::time::Duration;

use super::reader::{ConfigError, Reader, SECOND};

/// How long the `login_code` of a finished web sign-in can be exchanged.
pub const OIDC_LOGIN_CODE_TTL: Duration = Duration::from_secs(60);

/// How a provider sends the browser back to the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// `GET …/callback?code&state` (the default of OpenID Connect).
    Query,
    /// `POST …/callback` with a form (Apple, whenever the name or email scope is asked for).
    FormPost,
}

#[derive(Clone)]
pub struct OidcProvider {
    /// Lower case, as in the URL: `/auth/oidc/{name}/…`.
    pub name: String,
    /// Exactly as the provider's ID tokens state it in `iss`.
    pub issuer: String,
    /// The first is the web flow's client; every one is an accepted audience of the ID tokens
    /// native apps send (an iOS app has its own client ID at Google).
    pub client_ids: Vec<String>,
    /// `None`: a public client (PKCE only) at the token endpoint.
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    pub response_mode: ResponseMode,
}

impl OidcProvider {
    pub fn web_client_id(&self) -> &str {
        &self.client_ids[0]
    }
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_ids", &self.client_ids)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Empty: sign-in with providers is off (`/auth/oidc/*` answers 404 `unknown_provider`).
    pub providers: Vec<OidcProvider>,
    /// Where a finished web sign-in may send the browser, compared exactly.
    pub redirect_uris: Vec<String>,
    /// The least time between two fetches of a provider's keys for an unknown `kid`.
    pub jwks_min_refetch: Duration,
    /// For each request to a provider.
    pub http_timeout: Duration,
}

impl OidcSettings {
    pub fn provider(&self, name: &str) -> Option<&OidcProvider> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn read(r: &Reader, frontend_url: &str) -> Result<Self, ConfigError> {
        let mut providers = Vec::new();
        for name in r
            .string("OIDC_PROVIDERS", "")
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
        {
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || name.len() > 32
            {
                return Err(ConfigError::new(
                    "OIDC_PROVIDERS",
                    format!("provider names are up to 32 letters, digits and _, got {name:?}"),
                ));
            }
            if providers.iter().any(|p: &OidcProvider| p.name == name) {
                return Err(ConfigError::new(
                    "OIDC_PROVIDERS",
                    format!("{name} is listed twice"),
                ));
            }
            providers.push(read_provider(r, name)?);
        }
        let default_redirect = format!("{frontend_url}/oidc/callback");
        let mut redirect_uris = Vec::new();
        for uri in r
            .string("OIDC_REDIRECT_URIS", &default_redirect)
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let parsed = url::Url::parse(uri).ok().filter(|u| u.fragment().is_none());
            if parsed.is_none_or(|u| !u.has_host() && u.scheme().starts_with("http")) {
                return Err(ConfigError::new(
                    "OIDC_REDIRECT_URIS",
                    format!("expected absolute URLs without a #fragment, got {uri:?}"),
                ));
            }
            redirect_uris.push(uri.to_string());
        }
        if redirect_uris.is_empty() {
            return Err(ConfigError::new(
                "OIDC_REDIRECT_URIS",
                "needs at least one URI (leave it unset for FRONTEND_URL/oidc/callback)",
            ));
        }
        Ok(Self {
            providers,
            redirect_uris,
            jwks_min_refetch: r.duration("OIDC_JWKS_MIN_REFETCH_SECONDS", SECOND, 30, 1, 3600)?,
            http_timeout: r.duration("OIDC_HTTP_TIMEOUT_SECONDS", SECOND, 10, 1, 120)?,
        })
    }
}

/// Issuers, scopes and callback modes of the providers Keel knows by name.
fn preset(name: &str) -> Option<(&'static str, &'static str, ResponseMode)> {
    match name {
        "google" => Some((
            "https://accounts.google.com",
            "openid email profile",
            ResponseMode::Query,
        )),
        "apple" => Some((
            "https://appleid.apple.com",
            "openid email name",
            ResponseMode::FormPost,
        )),
        _ => None,
    }
}

fn read_provider(r: &Reader, name: String) -> Result<OidcProvider, ConfigError> {
    let upper = name.to_ascii_uppercase();
    // Each provider's own variables: OIDC_<NAME>_ISSUER, _CLIENT_ID, _CLIENT_SECRET, _SCOPES
    // and _RESPONSE_MODE (documented in .env.example with a provider's name in them).
    let var = |suffix: &str| format!("OIDC_{upper}_{}", suffix.to_ascii_uppercase());
    let preset = preset(&name);
    let issuer_var = var("issuer");
    let issuer = match (r.raw(&issuer_var), preset) {
        (Some(issuer), _) => issuer,
        (None, Some((issuer, _, _))) => issuer.to_string(),
        (None, None) => {
            return Err(ConfigError::new(
                &issuer_var,
                format!("{name} is not a provider Keel knows: set its issuer URL"),
            ));
        }
    };
    check_issuer(&issuer).map_err(|m| ConfigError::new(&issuer_var, m))?;
    let client_var = var("client_id");
    let client_ids: Vec<String> = r
        .string(&client_var, "")
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if client_ids.is_empty() {
        return Err(ConfigError::new(
            &client_var,
            format!("{name} needs the client ID the provider issued to this application"),
        ));
    }
    let scopes_var = var("scopes");
    let default_scopes = preset.map_or("openid email profile", |p| p.1);
    let scopes: Vec<String> = r
        .string(&scopes_var, default_scopes)
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ConfigError::new(
            &scopes_var,
            "must include openid (and email, for an account to be made or found)",
        ));
    }
    let mode_var = var("response_mode");
    let response_mode = match r.raw(&mode_var).as_deref() {
        None => preset.map_or(ResponseMode::Query, |p| p.2),
        Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(other) => {
            return Err(ConfigError::new(
                &mode_var,
                format!("expected query or form_post, got {other:?}"),
            ));
        }
    };
    let client_secret = r.raw(&var("client_secret"));
    Ok(OidcProvider {
        name,
        issuer,
        client_ids,
        client_secret,
        scopes,
        response_mode,
    })
}

/// An issuer is an https URL without query or fragment; plain http only on loopback (a
/// provider run for development or tests).
fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("{issuer:?} is not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{issuer:?} must not have a query or a fragment"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{issuer:?} must be an https URL (http only on loopback)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<OidcSettings, ConfigError> {
        OidcSettings::read(&Reader::from_pairs(pairs), "https://app.example.com")
    }

    #[test]
    fn off_by_default_with_the_frontend_callback_allowed() {
        let s = read(&[]).unwrap();
        assert!(s.providers.is_empty());
        assert_eq!(s.redirect_uris, ["https://app.example.com/oidc/callback"]);
    }

    #[test]
    fn presets_and_named_providers() {
        let s = read(&[
            ("OIDC_PROVIDERS", "google, apple,corp"),
            ("OIDC_GOOGLE_CLIENT_ID", "web.apps, ios.apps"),
            ("OIDC_GOOGLE_CLIENT_SECRET", "s"),
            ("OIDC_APPLE_CLIENT_ID", "com.example"),
            ("OIDC_CORP_ISSUER", "http://127.0.0.1:9000/realm"),
            ("OIDC_CORP_CLIENT_ID", "keel"),
            ("OIDC_CORP_SCOPES", "openid email"),
        ])
        .unwrap();
        let google = s.provider("google").unwrap();
        assert_eq!(google.issuer, "https://accounts.google.com");
        assert_eq!(google.client_ids, ["web.apps", "ios.apps"]);
        assert_eq!(google.web_client_id(), "web.apps");
        assert_eq!(google.response_mode, ResponseMode::Query);
        let apple = s.provider("apple").unwrap();
        assert_eq!(apple.response_mode, ResponseMode::FormPost);
        assert!(apple.client_secret.is_none());
        assert_eq!(s.provider("corp").unwrap().scopes, ["openid", "email"]);
    }

    #[test]
    fn bad_providers_name_their_variable() {
        let e = read(&[("OIDC_PROVIDERS", "corp")]).unwrap_err();
        assert_eq!(e.var, "OIDC_CORP_ISSUER");
        let e = read(&[("OIDC_PROVIDERS", "google")]).unwrap_err();
        assert_eq!(e.var, "OIDC_GOOGLE_CLIENT_ID");
        let e = read(&[
            ("OIDC_PROVIDERS", "corp"),
            ("OIDC_CORP_ISSUER", "http://idp.example.com"),
            ("OIDC_CORP_CLIENT_ID", "x"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "OIDC_CORP_ISSUER", "plain http off loopback");
        let e = read(&[
            ("OIDC_PROVIDERS", "google"),
            ("OIDC_GOOGLE_CLIENT_ID", "x"),
            ("OIDC_GOOGLE_SCOPES", "email"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "OIDC_GOOGLE_SCOPES");
        assert_eq!(
            read(&[("OIDC_PROVIDERS", "a-b")]).unwrap_err().var,
            "OIDC_PROVIDERS"
        );
        assert_eq!(
            read(&[("OIDC_REDIRECT_URIS", "/relative")])
                .unwrap_err()
                .var,
            "OIDC_REDIRECT_URIS"
        );
    }
}
