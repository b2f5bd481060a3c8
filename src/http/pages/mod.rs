//! Keel's own pages: the operator console at `/console` (`ENABLE_CONSOLE`; superusers, on
//! the public API only), and the pages for the links in its mails (`/verify-email`, `/reset-password`,
//! `/confirm-deletion`, `/cancel-deletion`, `/confirm-email-change`, `/revert-email-change`),
//! used when `FRONTEND_URL` is unset. Opening one changes nothing (mail scanners fetch links):
//! the page says what its button will do, and the button calls the public API with the link's
//! token. Plain HTML, one style sheet and one script, all compiled into the binary and served
//! from this origin, so the API's strict CSP holds for them unchanged.

use std::sync::Arc;

use poem::{Endpoint, Response, Route, get, http::header};

use crate::config::Settings;
use crate::mail::{LinkPage, Mails, templates::escape};

/// One page: where it is, its template (`page_<name>.txt` says what it shows; its HTML is
/// `link_page.html`, both replaceable from `MAIL_TEMPLATES_DIR`) and which operation its
/// button calls.
struct Page {
    path: &'static str,
    name: &'static str,
    endpoint: &'static str,
    /// The reset page asks for the new password (twice).
    password: bool,
    /// The button does something that is hard to take back: it looks it.
    danger: bool,
}

const PAGES: [Page; 6] = [
    Page {
        path: "/verify-email",
        name: "verify_email",
        endpoint: "/auth/verify-email",
        password: false,
        danger: false,
    },
    Page {
        path: "/reset-password",
        name: "reset_password",
        endpoint: "/auth/reset-password",
        password: true,
        danger: false,
    },
    Page {
        path: "/confirm-deletion",
        name: "confirm_deletion",
        endpoint: "/auth/confirm-deletion",
        password: false,
        danger: true,
    },
    Page {
        path: "/cancel-deletion",
        name: "cancel_deletion",
        endpoint: "/auth/cancel-deletion",
        password: false,
        danger: false,
    },
    Page {
        path: "/confirm-email-change",
        name: "confirm_email_change",
        endpoint: "/auth/confirm-email-change",
        password: false,
        danger: false,
    },
    Page {
        path: "/revert-email-change",
        name: "revert_email_change",
        endpoint: "/auth/revert-email-change",
        password: false,
        danger: false,
    },
];

/// The paths `mount` serves (without `API_PREFIX`): the pages, their files, and the console
/// when it is on.
pub fn paths(settings: &Settings) -> Vec<&'static str> {
    let mut paths: Vec<&'static str> = PAGES.iter().map(|p| p.path).collect();
    paths.extend(ASSETS.iter().map(|a| a.0));
    if settings.http.console {
        paths.push("/console");
    }
    paths
}

const ASSETS: [(&str, &str, &str); 4] = [
    (
        "/assets/keel.css",
        "text/css; charset=utf-8",
        include_str!("keel.css"),
    ),
    (
        "/assets/account.js",
        "text/javascript; charset=utf-8",
        include_str!("account.js"),
    ),
    (
        "/assets/console.css",
        "text/css; charset=utf-8",
        include_str!("console.css"),
    ),
    (
        "/assets/console.js",
        "text/javascript; charset=utf-8",
        include_str!("console.js"),
    ),
];

/// The console's one page; the script does the rest.
fn console_page(settings: &Settings) -> String {
    include_str!("console.html")
        .replace("{prefix}", &escape(&settings.http.api_prefix))
        .replace("{project}", &escape(&settings.project_name))
}

fn render(page: &Page, settings: &Settings, mails: &Mails) -> String {
    mails.link_page(LinkPage {
        name: page.name,
        prefix: &settings.http.api_prefix,
        endpoint: page.endpoint,
        password: page.password,
        danger: page.danger,
        grace_days: settings.auth.deletion_grace_period_days,
    })
}

fn respond(content_type: &'static str, body: Arc<str>, cache: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, cache)
        .body(body.to_string())
}

/// Adds the pages and their files to `route`, rendered once at start-up.
pub fn mount(mut route: Route, settings: &Settings, mails: &Mails) -> Route {
    for page in &PAGES {
        let html: Arc<str> = render(page, settings, mails).into();
        route = route.at(
            page.path,
            get(endpoint(move || {
                // The URL holds a token: no cache keeps the page.
                respond("text/html; charset=utf-8", html.clone(), "no-store")
            })),
        );
    }
    if settings.http.console {
        let html: Arc<str> = console_page(settings).into();
        route = route.at(
            "/console",
            get(endpoint(move || {
                respond("text/html; charset=utf-8", html.clone(), "no-store")
            })),
        );
    }
    for (path, content_type, body) in ASSETS {
        let body: Arc<str> = body.into();
        route = route.at(
            path,
            get(endpoint(move || {
                respond(content_type, body.clone(), "public, max-age=300")
            })),
        );
    }
    route
}

fn endpoint(f: impl Fn() -> Response + Send + Sync + 'static) -> impl Endpoint<Output = Response> {
    poem::endpoint::make_sync(move |_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_is_listed_and_escapes_what_it_shows() {
        let settings = Settings::from_map(&Default::default(), &crate::app::kinds()).unwrap();
        let listed = paths(&settings);
        for page in &PAGES {
            assert!(listed.contains(&page.path), "{}", page.path);
            let html = render(page, &settings, &Mails::built_in("Keel"));
            assert!(
                html.contains(page.endpoint) && !html.contains("<script>"),
                "{html}"
            );
        }
        let mut settings = settings;
        settings.project_name = "<b>Keel</b>".into();
        let html = render(
            &PAGES[0],
            &settings,
            &Mails::built_in(&settings.project_name),
        );
        assert!(html.contains("&lt;b&gt;Keel") && !html.contains("<b>Keel"));
    }
}
