//! The account mails, each with a plain-text and an HTML part.

use super::Email;

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

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;line-height:1.5;max-width:560px;margin:auto\">\
         <h2>{title}</h2>{body}</body></html>",
        title = escape(title),
    )
}

fn button(url: &str, label: &str) -> String {
    format!(
        "<p><a href=\"{url}\" style=\"display:inline-block;padding:10px 18px;background:#1f4fd6;color:#fff;text-decoration:none;border-radius:4px\">{label}</a></p>\
         <p>Or paste this link into your browser:<br><code>{url}</code></p>",
        url = escape(url),
        label = escape(label),
    )
}

/// A plain-text body as an HTML part, escaped and with its line breaks kept.
pub fn plain_text_html(text: &str) -> String {
    format!(
        "<!doctype html><html><body><pre style=\"font-family:sans-serif;white-space:pre-wrap\">{}</pre></body></html>",
        escape(text)
    )
}

pub fn verify_email(project: &str, to: &str, username: &str, link: &str, hours: u64) -> Email {
    let subject = format!("{project}: verify your email address");
    let text = format!(
        "Hello {username},\n\nPlease confirm your email address by opening this link:\n\n{link}\n\n\
         The link is valid for {hours} hours and works once. If you did not create an account, ignore this mail.\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>Please confirm your email address.</p>{}<p>The link is valid for {hours} hours and works once. \
             If you did not create an account, ignore this mail.</p>",
            escape(username),
            button(link, "Verify email"),
        ),
    );
    Email {
        to: to.to_string(),
        subject,
        text,
        html,
    }
}

pub fn password_reset(project: &str, to: &str, username: &str, link: &str, minutes: u64) -> Email {
    let subject = format!("{project}: reset your password");
    let text = format!(
        "Hello {username},\n\nSomeone asked to reset the password of your account. To choose a new one, open:\n\n{link}\n\n\
         The link is valid for {minutes} minutes and works once. If it was not you, ignore this mail: your password stays as it is.\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>Someone asked to reset the password of your account.</p>{}\
             <p>The link is valid for {minutes} minutes and works once. If it was not you, ignore this mail: your password stays as it is.</p>",
            escape(username),
            button(link, "Choose a new password"),
        ),
    );
    Email {
        to: to.to_string(),
        subject,
        text,
        html,
    }
}

pub fn welcome(project: &str, to: &str, username: &str, frontend_url: &str) -> Email {
    let subject = format!("Welcome to {project}");
    let text = format!(
        "Hello {username},\n\nYour email address is verified and your account is ready: {frontend_url}\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>Your email address is verified and your account is ready.</p>{}",
            escape(username),
            button(frontend_url, "Open the app"),
        ),
    );
    Email {
        to: to.to_string(),
        subject,
        text,
        html,
    }
}

pub fn password_changed(project: &str, to: &str, username: &str, when: &str) -> Email {
    let subject = format!("{project}: your password was changed");
    let text = format!(
        "Hello {username},\n\nThe password of your account was changed at {when}. Your other sessions were signed out.\n\n\
         If this was not you, reset your password at once and contact support.\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>The password of your account was changed at {}. Your other sessions were signed out.</p>\
             <p>If this was not you, reset your password at once and contact support.</p>",
            escape(username),
            escape(when),
        ),
    );
    Email {
        to: to.to_string(),
        subject,
        text,
        html,
    }
}

/// A mail of greeting, paragraphs and an optional call-to-action link, in both parts.
fn compose(
    to: &str,
    subject: String,
    username: &str,
    paragraphs: &[&str],
    action: Option<(&str, &str)>,
    after: &[&str],
) -> Email {
    let mut text = format!("Hello {username},\n\n");
    let mut html = format!("<p>Hello {},</p>", escape(username));
    for p in paragraphs {
        text.push_str(&format!("{p}\n\n"));
        html.push_str(&format!("<p>{}</p>", escape(p)));
    }
    if let Some((label, url)) = action {
        text.push_str(&format!("{label}: {url}\n\n"));
        html.push_str(&button(url, label));
    }
    for p in after {
        text.push_str(&format!("{p}\n\n"));
        html.push_str(&format!("<p>{}</p>", escape(p)));
    }
    Email {
        to: to.to_string(),
        html: html_page(&subject, &html),
        subject,
        text,
    }
}

pub fn confirm_deletion(project: &str, to: &str, username: &str, link: &str, hours: u64) -> Email {
    compose(
        to,
        format!("{project}: confirm the deletion of your account"),
        username,
        &["Someone asked to delete your account. Nothing happens until you confirm it."],
        Some(("Confirm the deletion", link)),
        &[&format!(
            "The link is valid for {hours} hours and works once. If it was not you, ignore this mail: your account stays as it is."
        )],
    )
}

pub fn deletion_scheduled(
    project: &str,
    to: &str,
    username: &str,
    when: &str,
    cancel_link: &str,
) -> Email {
    compose(
        to,
        format!("{project}: your account will be deleted on {when}"),
        username,
        &[&format!(
            "Your account and everything in it will be permanently deleted on {when}. Until then you can still sign in, and change your mind."
        )],
        Some(("Keep my account", cancel_link)),
        &[],
    )
}

pub fn deletion_reminder(
    project: &str,
    to: &str,
    username: &str,
    when: &str,
    days: u32,
    cancel_link: &str,
) -> Email {
    let in_days = if days == 1 {
        "1 day".to_string()
    } else {
        format!("{days} days")
    };
    compose(
        to,
        format!("{project}: your account will be deleted in {in_days}"),
        username,
        &[&format!(
            "This is a reminder: your account will be permanently deleted on {when}. After that it cannot be restored."
        )],
        Some(("Keep my account", cancel_link)),
        &[],
    )
}

pub fn deletion_cancelled(project: &str, to: &str, username: &str) -> Email {
    compose(
        to,
        format!("{project}: your account will not be deleted"),
        username,
        &["The deletion of your account was cancelled. Everything stays as it was."],
        None,
        &["If you did not cancel it, contact support."],
    )
}

pub fn account_deleted(project: &str, to: &str, username: &str) -> Email {
    compose(
        to,
        format!("{project}: your account was deleted"),
        username,
        &[
            "Your account and its data were permanently deleted, as you asked. Goodbye, and thank you.",
        ],
        None,
        &[],
    )
}

/// To the new address: following the link makes it the account's address.
pub fn confirm_email_change(
    project: &str,
    to: &str,
    username: &str,
    link: &str,
    hours: u64,
) -> Email {
    compose(
        to,
        format!("{project}: confirm your new email address"),
        username,
        &[
            "Someone asked to make this the email address of your account. Nothing changes until you confirm it.",
        ],
        Some(("Confirm the new address", link)),
        &[&format!(
            "The link is valid for {hours} hours and works once. If you did not ask for this, ignore this mail."
        )],
    )
}

/// To an address someone tried to move their account to while another account has it.
pub fn email_change_address_taken(project: &str, to: &str) -> Email {
    compose(
        to,
        format!("{project}: confirm your new email address"),
        "there",
        &[
            "Someone asked to move an account to this email address, but an account with this address already exists, so nothing changed.",
        ],
        None,
        &[
            "If it was you, sign in with this address instead, or use the forgotten-password link. Otherwise ignore this mail.",
        ],
    )
}

/// To the old address once a change is confirmed, with the link that undoes it.
pub fn email_changed(
    project: &str,
    to: &str,
    username: &str,
    new_email: &str,
    link: &str,
) -> Email {
    compose(
        to,
        format!("{project}: your email address was changed"),
        username,
        &[&format!(
            "The email address of your account was changed to {new_email}. Mail about the account goes there from now on."
        )],
        Some(("Undo this change", link)),
        &[
            "If you did not make this change, the link puts this address back, signs every session out and sends you a password reset. It is valid for 7 days.",
        ],
    )
}

/// To the restored address after a revert: the password may be known to whoever changed it.
pub fn email_change_reverted(
    project: &str,
    to: &str,
    username: &str,
    link: &str,
    minutes: u64,
) -> Email {
    compose(
        to,
        format!("{project}: your email address is back"),
        username,
        &[
            "The change of your email address was undone: this is the account's address again, and every session was signed out.",
            "Whoever changed the address may know your password. Choose a new one now:",
        ],
        Some(("Choose a new password", link)),
        &[&format!(
            "The link is valid for {minutes} minutes and works once."
        )],
    )
}

/// A change to the account's second factor: `what` says which, at `when`.
pub fn mfa_changed(
    project: &str,
    to: &str,
    username: &str,
    what: &str,
    when: &str,
    sessions_ended: bool,
) -> Email {
    let first = format!("{what} at {when}.");
    let mut paragraphs = vec![first.as_str()];
    if sessions_ended {
        paragraphs.push("Your other sessions were signed out.");
    }
    compose(
        to,
        format!("{project}: two-factor sign-in changed"),
        username,
        &paragraphs,
        None,
        &["If this was not you, reset your password at once and contact support."],
    )
}

/// To an account a provider sign-in was linked to (its first sign-in there).
pub fn identity_linked(project: &str, to: &str, username: &str, provider: &str) -> Email {
    compose(
        to,
        format!("{project}: sign-in with {provider} was added"),
        username,
        &[&format!(
            "Your account can now be signed in to with {provider}: a sign-in there with this address was linked to it."
        )],
        None,
        &[
            "If this was not you, sign in, remove it under your account's sign-in methods and change your password.",
        ],
    )
}

/// To an account one of whose provider sign-ins was removed.
pub fn identity_unlinked(project: &str, to: &str, username: &str, provider: &str) -> Email {
    compose(
        to,
        format!("{project}: sign-in with {provider} was removed"),
        username,
        &[&format!(
            "Your account can no longer be signed in to with {provider}."
        )],
        None,
        &["If this was not you, sign in and change your password."],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_names_are_in_both_parts_and_escaped() {
        let m = verify_email(
            "Keel",
            "a@example.com",
            "<bob>",
            "http://x/verify-email?token=abc",
            24,
        );
        assert!(m.text.contains("http://x/verify-email?token=abc"));
        assert!(m.html.contains("http://x/verify-email?token=abc"));
        assert!(m.html.contains("&lt;bob&gt;"));
        assert!(!m.html.contains("<bob>"));
    }
}
