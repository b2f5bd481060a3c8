//! The mails Keel sends, as template files: for each mail `<name>.txt` (a `Subject:` line, a
//! blank line, the plain-text body) and `<name>.html` (the HTML part, extending `layout.html`),
//! in this folder and compiled into the binary. An operator rebrands or rewords them without a
//! rebuild: any file of the same name in `MAIL_TEMPLATES_DIR` replaces the built-in one.
//!
//! MiniJinja rather than askama because of that override: askama checks templates when Keel is
//! compiled, which rules out replacing them at run time. The check moves to start-up instead:
//! every mail is rendered once with sample values when the templates are loaded, so a broken or
//! misspelt template (an unknown variable is an error) stops the process naming the file.
//! HTML templates are auto-escaped: a value reaches the HTML part escaped unless a template
//! says otherwise (`|safe`).

use std::{path::Path, sync::Arc};

use minijinja::{
    AutoEscape, Environment, ErrorKind, UndefinedBehavior, context, syntax::SyntaxConfig,
};

use super::Email;

mod catalog;
mod link_pages;

pub use catalog::{LinkPage, Mail};
use catalog::{PAGES, SAMPLES};

/// Every built-in template file, by name.
const BUILT_IN: &[(&str, &str)] = &[
    ("layout.html", include_str!("layout.html")),
    ("macros.html", include_str!("macros.html")),
    ("plain_text.html", include_str!("plain_text.html")),
    ("link_page.html", include_str!("link_page.html")),
    (
        "page_verify_email.txt",
        include_str!("page_verify_email.txt"),
    ),
    (
        "page_reset_password.txt",
        include_str!("page_reset_password.txt"),
    ),
    (
        "page_confirm_deletion.txt",
        include_str!("page_confirm_deletion.txt"),
    ),
    (
        "page_cancel_deletion.txt",
        include_str!("page_cancel_deletion.txt"),
    ),
    (
        "page_confirm_email_change.txt",
        include_str!("page_confirm_email_change.txt"),
    ),
    (
        "page_revert_email_change.txt",
        include_str!("page_revert_email_change.txt"),
    ),
    ("verify_email.txt", include_str!("verify_email.txt")),
    ("verify_email.html", include_str!("verify_email.html")),
    ("password_reset.txt", include_str!("password_reset.txt")),
    ("password_reset.html", include_str!("password_reset.html")),
    ("welcome.txt", include_str!("welcome.txt")),
    ("welcome.html", include_str!("welcome.html")),
    ("password_changed.txt", include_str!("password_changed.txt")),
    (
        "password_changed.html",
        include_str!("password_changed.html"),
    ),
    ("confirm_deletion.txt", include_str!("confirm_deletion.txt")),
    (
        "confirm_deletion.html",
        include_str!("confirm_deletion.html"),
    ),
    (
        "deletion_scheduled.txt",
        include_str!("deletion_scheduled.txt"),
    ),
    (
        "deletion_scheduled.html",
        include_str!("deletion_scheduled.html"),
    ),
    (
        "deletion_reminder.txt",
        include_str!("deletion_reminder.txt"),
    ),
    (
        "deletion_reminder.html",
        include_str!("deletion_reminder.html"),
    ),
    (
        "deletion_cancelled.txt",
        include_str!("deletion_cancelled.txt"),
    ),
    (
        "deletion_cancelled.html",
        include_str!("deletion_cancelled.html"),
    ),
    ("account_deleted.txt", include_str!("account_deleted.txt")),
    ("account_deleted.html", include_str!("account_deleted.html")),
    (
        "confirm_email_change.txt",
        include_str!("confirm_email_change.txt"),
    ),
    (
        "confirm_email_change.html",
        include_str!("confirm_email_change.html"),
    ),
    (
        "email_change_address_taken.txt",
        include_str!("email_change_address_taken.txt"),
    ),
    (
        "email_change_address_taken.html",
        include_str!("email_change_address_taken.html"),
    ),
    ("email_changed.txt", include_str!("email_changed.txt")),
    ("email_changed.html", include_str!("email_changed.html")),
    (
        "email_change_reverted.txt",
        include_str!("email_change_reverted.txt"),
    ),
    (
        "email_change_reverted.html",
        include_str!("email_change_reverted.html"),
    ),
    ("mfa_changed.txt", include_str!("mfa_changed.txt")),
    ("mfa_changed.html", include_str!("mfa_changed.html")),
    ("identity_linked.txt", include_str!("identity_linked.txt")),
    ("identity_linked.html", include_str!("identity_linked.html")),
    (
        "identity_unlinked.txt",
        include_str!("identity_unlinked.txt"),
    ),
    (
        "identity_unlinked.html",
        include_str!("identity_unlinked.html"),
    ),
];

/// A template that cannot be used: which file, and what is wrong (with its line).
#[derive(Debug, thiserror::Error)]
#[error("mail template {file}: {message}")]
pub struct TemplateError {
    pub file: String,
    pub message: String,
}

/// The mails, rendered from the templates (the built-in ones, or an operator's).
#[derive(Clone)]
pub struct Mails {
    project: String,
    templates: Arc<Environment<'static>>,
}

impl std::fmt::Debug for Mails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mails")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A misspelt variable is an error, found when the templates are loaded.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Block tags on lines of their own leave no blank lines behind; a file's last line break
    // stays.
    if let Ok(syntax) = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    // HTML escaping of the five characters that matter: links keep their slashes, as mail
    // clients and people reading the source expect.
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Html) && !value.is_safe() && !value.is_none() {
            let text = value.to_string();
            out.write_str(&escape(&text))
                .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "mail"))
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env
}

/// `s` with `&`, `<`, `>`, `"` and `'` written as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

impl Mails {
    /// The built-in templates, for mails from `project` (`PROJECT_NAME`).
    pub fn built_in(project: &str) -> Self {
        Self::load(project, None).expect("the built-in mail templates render")
    }

    /// The templates, each file in `dir` (`MAIL_TEMPLATES_DIR`) replacing the built-in one of
    /// its name; every mail is rendered once with sample values to find what is broken.
    pub fn load(project: &str, dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = environment();
        for (name, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => std::fs::read_to_string(&path).map_err(|e| TemplateError {
                    file: path.display().to_string(),
                    message: e.to_string(),
                })?,
                None => built_in.to_string(),
            };
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| failure(name, dir, &e))?;
        }
        let mails = Self {
            project: project.to_string(),
            templates: Arc::new(env),
        };
        mails.check(dir)?;
        Ok(mails)
    }

    /// Renders every mail once with sample values.
    fn check(&self, dir: Option<&Path>) -> Result<(), TemplateError> {
        for mail in SAMPLES {
            self.render("a@example.com", mail)
                .map_err(|(file, e)| failure(&file, dir, &e))?;
        }
        self.templates
            .get_template("plain_text.html")
            .and_then(|t| t.render(context! {text => "x"}))
            .map_err(|e| failure("plain_text.html", dir, &e))?;
        for name in PAGES {
            self.render_link_page(LinkPage {
                name,
                prefix: "/api",
                endpoint: "/auth/verify-email",
                password: true,
                danger: true,
                grace_days: 30,
            })
            .map_err(|(file, e)| failure(&file, dir, &e))?;
        }
        Ok(())
    }

    /// `mail` to `to`: the subject and text from `<name>.txt`, the HTML from `<name>.html`.
    /// The file that failed, on error.
    fn render(&self, to: &str, mail: &Mail<'_>) -> Result<Email, (String, minijinja::Error)> {
        let (name, values) = mail.parts();
        let values = context! { project => self.project.as_str(), ..values };
        let txt = format!("{name}.txt");
        let text = self
            .templates
            .get_template(&txt)
            .and_then(|t| t.render(&values))
            .map_err(|e| (txt.clone(), e))?;
        let (subject, body) = split_subject(&text).ok_or_else(|| {
            let e = minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "must start with a `Subject:` line and a blank line",
            );
            (txt.clone(), e)
        })?;
        let html_name = format!("{name}.html");
        let html = self
            .templates
            .get_template(&html_name)
            .and_then(|t| t.render(context! { subject => subject.as_str(), ..values }))
            .map_err(|e| (html_name, e))?;
        Ok(Email {
            to: to.to_string(),
            subject,
            text: body,
            html,
        })
    }

    /// `mail` to `to`. A template that fails on these values (the start-up check passed, so
    /// only an operator's template can) is logged and the mail goes out as the built-in one.
    pub fn compose(&self, to: &str, mail: Mail<'_>) -> Email {
        match self.render(to, &mail) {
            Ok(email) => email,
            Err((file, e)) => {
                tracing::error!(template = %file, error = %e, "mail template failed; sending the built-in one");
                Self::built_in(&self.project)
                    .render(to, &mail)
                    .unwrap_or_else(|(file, e)| panic!("built-in mail template {file}: {e}"))
            }
        }
    }

    /// A plain-text body as an HTML part, escaped, its line breaks kept (`plain_text.html`).
    pub fn plain_text_html(&self, text: &str) -> String {
        self.templates
            .get_template("plain_text.html")
            .and_then(|t| t.render(context! { text }))
            .unwrap_or_else(|_| {
                Self::built_in(&self.project)
                    .templates
                    .get_template("plain_text.html")
                    .and_then(|t| t.render(context! { text }))
                    .unwrap_or_default()
            })
    }
}

/// `Subject: <line>`, a blank line, the body.
fn split_subject(rendered: &str) -> Option<(String, String)> {
    let rest = rendered.strip_prefix("Subject:")?;
    let (subject, body) = rest.split_once('\n')?;
    let body = body
        .strip_prefix('\n')
        .or_else(|| body.strip_prefix("\r\n"))?;
    Some((subject.trim().to_string(), body.to_string()))
}

fn failure(file: &str, dir: Option<&Path>, e: &minijinja::Error) -> TemplateError {
    let overridden = dir.map(|d| d.join(file)).filter(|p| p.is_file());
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message}: {detail}");
    }
    if let Some(line) = e.line() {
        message = format!("{message} (line {line})");
    }
    TemplateError {
        file: overridden.map_or_else(|| file.to_string(), |p| p.display().to_string()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_names_are_in_both_parts_and_escaped() {
        let m = Mails::built_in("Keel").compose(
            "a@example.com",
            Mail::VerifyEmail {
                username: "<bob>",
                link: "http://x/verify-email?token=abc&x=1",
                hours: 24,
            },
        );
        assert_eq!(m.subject, "Keel: verify your email address");
        assert!(m.text.contains("http://x/verify-email?token=abc&x=1"));
        assert!(m.text.starts_with("Hello <bob>,\n\n"), "{}", m.text);
        assert!(m.html.contains("http://x/verify-email?token=abc&amp;x=1"));
        assert!(m.html.contains("&lt;bob&gt;"));
        assert!(!m.html.contains("<bob>"));
        assert!(
            m.html
                .contains("<title>Keel: verify your email address</title>")
        );
    }

    #[test]
    fn every_mail_renders_both_parts() {
        let mails = Mails::built_in("Keel");
        for sample in SAMPLES {
            let m = mails.compose("a@x.io", *sample);
            assert!(m.subject.contains("Keel"), "{sample:?}");
            assert!(!m.subject.contains('\n') && !m.text.is_empty());
            assert!(m.html.starts_with("<!doctype html>"), "{}", m.subject);
            assert!(!m.text.contains("{{") && !m.html.contains("{{"));
            assert!(m.text.starts_with("Hello "), "{}", m.text);
        }
        let reminder = |days| {
            mails
                .compose(
                    "a@x.io",
                    Mail::DeletionReminder {
                        username: "ada",
                        when: "d",
                        days,
                        link: "https://l",
                    },
                )
                .subject
        };
        assert_eq!(reminder(3), "Keel: your account will be deleted in 3 days");
        assert_eq!(reminder(1), "Keel: your account will be deleted in 1 day");
        let mfa = |sessions_ended| {
            mails
                .compose(
                    "a@x.io",
                    Mail::MfaChanged {
                        username: "ada",
                        what: "Turned on",
                        when: "now",
                        sessions_ended,
                    },
                )
                .text
        };
        assert!(!mfa(false).contains("signed out"));
        assert!(
            mfa(true)
                .contains("Turned on at now.\n\nYour other sessions were signed out.\n\nIf this"),
            "{}",
            mfa(true)
        );
        assert!(mails.plain_text_html("<b>\nx").contains("&lt;b&gt;\nx"));
    }

    fn dir_with(files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-mails-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn an_operator_replaces_a_template_and_values_stay_escaped() {
        let dir = dir_with(&[
            (
                "welcome.txt",
                "Subject: Welcome aboard {{ project }}\n\nHi {{ username }}! {{ link }}\n",
            ),
            (
                "welcome.html",
                "{% extends \"layout.html\" %}{% block body %}<p>Hi {{ username }}</p>{% endblock %}",
            ),
        ]);
        let mails = Mails::load("Acme", Some(&dir)).unwrap();
        let m = mails.compose(
            "a@x.io",
            Mail::Welcome {
                username: "<i>ada</i>",
                link: "https://app",
            },
        );
        assert_eq!(m.subject, "Welcome aboard Acme");
        assert_eq!(m.text, "Hi <i>ada</i>! https://app\n");
        assert!(
            m.html.contains("<p>Hi &lt;i&gt;ada&lt;/i&gt;</p>"),
            "{}",
            m.html
        );
        // The others stay built in.
        assert_eq!(
            mails
                .compose("a@x.io", Mail::AccountDeleted { username: "ada" })
                .subject,
            "Acme: your account was deleted"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broken_template_is_refused_naming_its_file() {
        for (file, text) in [
            ("welcome.txt", "Subject: Hi\n\n{{ usernme }}\n"),
            ("welcome.html", "{% block body %}{{ username }"),
            ("welcome.txt", "Hi {{ username }}\n"),
            // A value the welcome mail does not have.
            (
                "welcome.html",
                "{% extends \"layout.html\" %}{% block body %}{{ hours }}{% endblock %}",
            ),
        ] {
            let dir = dir_with(&[(file, text)]);
            let err = Mails::load("Keel", Some(&dir)).unwrap_err();
            assert_eq!(err.file, dir.join(file).display().to_string(), "{err}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
