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

/// One page: where it is, what it says and which operation its button calls; its HTML is the
/// `link_page.html` template of the mails (replaceable from `MAIL_TEMPLATES_DIR`).
struct Page {
    path: &'static str,
    title: &'static str,
    lead: String,
    button: &'static str,
    endpoint: &'static str,
    done: &'static str,
    /// The reset page asks for the new password (twice).
    password: bool,
    /// The button does something that is hard to take back: it looks it.
    danger: bool,
}

fn pages(settings: &Settings) -> Vec<Page> {
    let grace = settings.auth.deletion_grace_period_days;
    vec![
        Page {
            path: "/verify-email",
            title: "Verify your email address",
            lead: "Press the button to confirm that this address belongs to your account.".into(),
            button: "Verify my email address",
            endpoint: "/auth/verify-email",
            done: "Your email address is verified. You can close this page and sign in.",
            password: false,
            danger: false,
        },
        Page {
            path: "/reset-password",
            title: "Choose a new password",
            lead: "Type a new password for your account. Every device signed in with the old one \
                   is signed out."
                .into(),
            button: "Set the new password",
            endpoint: "/auth/reset-password",
            done: "Your password is changed. Sign in with the new one.",
            password: true,
            danger: false,
        },
        Page {
            path: "/confirm-deletion",
            title: "Delete your account",
            lead: format!(
                "Pressing the button schedules your account for permanent deletion in {grace} \
                 days. Until then it works as before, and the link in the mail we send next \
                 cancels the deletion."
            ),
            button: "Delete my account",
            endpoint: "/auth/confirm-deletion",
            done: "Your account is scheduled for deletion. A mail with a link to cancel it is on \
                   its way.",
            password: false,
            danger: true,
        },
        Page {
            path: "/cancel-deletion",
            title: "Keep your account",
            lead: "Press the button to cancel the scheduled deletion of your account.".into(),
            button: "Cancel the deletion",
            endpoint: "/auth/cancel-deletion",
            done: "The deletion is cancelled: your account stays as it is.",
            password: false,
            danger: false,
        },
        Page {
            path: "/confirm-email-change",
            title: "Confirm your new email address",
            lead: "Press the button to make this address the email address of your account. The \
                   old address is told, and can undo the change for 7 days."
                .into(),
            button: "Confirm the new address",
            endpoint: "/auth/confirm-email-change",
            done: "Your account's email address is changed.",
            password: false,
            danger: false,
        },
        Page {
            path: "/revert-email-change",
            title: "Undo the email change",
            lead: "Press the button to put this address back on your account. Every device is \
                   signed out, and a password reset is mailed here, in case someone else made \
                   the change."
                .into(),
            button: "Put my address back",
            endpoint: "/auth/revert-email-change",
            done: "Your address is back and every device is signed out. Check this mailbox for \
                   the password reset.",
            password: false,
            danger: false,
        },
    ]
}

/// The paths `mount` serves (without `API_PREFIX`): the pages, their files, and the console
/// when it is on.
pub fn paths(settings: &Settings) -> Vec<&'static str> {
    let mut paths: Vec<&'static str> = pages(settings).iter().map(|p| p.path).collect();
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
        prefix: &settings.http.api_prefix,
        title: page.title,
        lead: &page.lead,
        button: page.button,
        endpoint: page.endpoint,
        done: page.done,
        password: page.password,
        danger: page.danger,
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
    for page in pages(settings) {
        let html: Arc<str> = render(&page, settings, mails).into();
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
        for page in pages(&settings) {
            assert!(listed.contains(&page.path), "{}", page.path);
            let html = render(&page, &settings, &Mails::built_in("Keel"));
            assert!(
                html.contains(page.endpoint) && !html.contains("<script>"),
                "{html}"
            );
        }
        let mut settings = settings;
        settings.project_name = "<b>Keel</b>".into();
        let html = render(
            &pages(&settings)[0],
            &settings,
            &Mails::built_in(&settings.project_name),
        );
        assert!(html.contains("&lt;b&gt;Keel") && !html.contains("<b>Keel"));
    }
}
