//! The mails Keel sends, each with the values its two templates get, and one sample of each for
//! the start-up check; the pages the mailed links open, with the strings they show.

use minijinja::{Value, context};

/// A mail Keel sends, with the values its templates get (each under its field's name, plus
/// `project`). Adding a mail: a variant here, its arm in `parts`, a sample in `SAMPLES`, and its
/// two files.
#[derive(Debug, Clone, Copy)]
pub enum Mail<'a> {
    VerifyEmail {
        username: &'a str,
        link: &'a str,
        hours: u64,
    },
    PasswordReset {
        username: &'a str,
        link: &'a str,
        minutes: u64,
    },
    /// `link`: the app (`FRONTEND_URL`).
    Welcome {
        username: &'a str,
        link: &'a str,
    },
    PasswordChanged {
        username: &'a str,
        when: &'a str,
    },
    ConfirmDeletion {
        username: &'a str,
        link: &'a str,
        hours: u64,
    },
    /// `link` cancels the deletion.
    DeletionScheduled {
        username: &'a str,
        when: &'a str,
        link: &'a str,
    },
    /// `link` cancels the deletion, due in `days`.
    DeletionReminder {
        username: &'a str,
        when: &'a str,
        days: u32,
        link: &'a str,
    },
    DeletionCancelled {
        username: &'a str,
    },
    AccountDeleted {
        username: &'a str,
    },
    /// To the new address: following the link makes it the account's address.
    ConfirmEmailChange {
        username: &'a str,
        link: &'a str,
        hours: u64,
    },
    /// To an address someone tried to move their account to while another account has it.
    EmailChangeAddressTaken,
    /// To the old address once a change is confirmed, with the link that undoes it.
    EmailChanged {
        username: &'a str,
        new_email: &'a str,
        link: &'a str,
    },
    /// To the restored address after a revert, with a password reset link.
    EmailChangeReverted {
        username: &'a str,
        link: &'a str,
        minutes: u64,
    },
    /// A change to the account's second factor: `what` says which, at `when`.
    MfaChanged {
        username: &'a str,
        what: &'a str,
        when: &'a str,
        sessions_ended: bool,
    },
    /// To an account a provider sign-in was linked to (its first sign-in there).
    IdentityLinked {
        username: &'a str,
        provider: &'a str,
    },
    /// To an account one of whose provider sign-ins was removed.
    IdentityUnlinked {
        username: &'a str,
        provider: &'a str,
    },
}

impl Mail<'_> {
    /// The templates' name (`<name>.txt`, `<name>.html`) and the values they get.
    pub(super) fn parts(&self) -> (&'static str, Value) {
        match *self {
            Self::VerifyEmail {
                username,
                link,
                hours,
            } => ("verify_email", context! { username, link, hours }),
            Self::PasswordReset {
                username,
                link,
                minutes,
            } => ("password_reset", context! { username, link, minutes }),
            Self::Welcome { username, link } => ("welcome", context! { username, link }),
            Self::PasswordChanged { username, when } => {
                ("password_changed", context! { username, when })
            }
            Self::ConfirmDeletion {
                username,
                link,
                hours,
            } => ("confirm_deletion", context! { username, link, hours }),
            Self::DeletionScheduled {
                username,
                when,
                link,
            } => ("deletion_scheduled", context! { username, when, link }),
            Self::DeletionReminder {
                username,
                when,
                days,
                link,
            } => ("deletion_reminder", context! { username, when, days, link }),
            Self::DeletionCancelled { username } => ("deletion_cancelled", context! { username }),
            Self::AccountDeleted { username } => ("account_deleted", context! { username }),
            Self::ConfirmEmailChange {
                username,
                link,
                hours,
            } => ("confirm_email_change", context! { username, link, hours }),
            Self::EmailChangeAddressTaken => ("email_change_address_taken", context! {}),
            Self::EmailChanged {
                username,
                new_email,
                link,
            } => ("email_changed", context! { username, new_email, link }),
            Self::EmailChangeReverted {
                username,
                link,
                minutes,
            } => (
                "email_change_reverted",
                context! { username, link, minutes },
            ),
            Self::MfaChanged {
                username,
                what,
                when,
                sessions_ended,
            } => (
                "mfa_changed",
                context! { username, what, when, sessions_ended },
            ),
            Self::IdentityLinked { username, provider } => {
                ("identity_linked", context! { username, provider })
            }
            Self::IdentityUnlinked { username, provider } => {
                ("identity_unlinked", context! { username, provider })
            }
        }
    }
}

/// One of each mail, for the start-up check (and the tests).
pub(super) const SAMPLES: &[Mail<'static>] = &[
    Mail::VerifyEmail {
        username: "ada",
        link: "https://example.com/verify-email?token=t",
        hours: 24,
    },
    Mail::PasswordReset {
        username: "ada",
        link: "https://example.com/reset-password?token=t",
        minutes: 30,
    },
    Mail::Welcome {
        username: "ada",
        link: "https://example.com",
    },
    Mail::PasswordChanged {
        username: "ada",
        when: "2026-01-01T00:00:00+00:00",
    },
    Mail::ConfirmDeletion {
        username: "ada",
        link: "https://example.com/confirm-deletion?token=t",
        hours: 24,
    },
    Mail::DeletionScheduled {
        username: "ada",
        when: "2026-01-31",
        link: "https://example.com/cancel-deletion?token=t",
    },
    Mail::DeletionReminder {
        username: "ada",
        when: "2026-01-31",
        days: 3,
        link: "https://example.com/cancel-deletion?token=t",
    },
    Mail::DeletionCancelled { username: "ada" },
    Mail::AccountDeleted { username: "ada" },
    Mail::ConfirmEmailChange {
        username: "ada",
        link: "https://example.com/confirm-email-change?token=t",
        hours: 24,
    },
    Mail::EmailChangeAddressTaken,
    Mail::EmailChanged {
        username: "ada",
        new_email: "ada@example.org",
        link: "https://example.com/revert-email-change?token=t",
    },
    Mail::EmailChangeReverted {
        username: "ada",
        link: "https://example.com/reset-password?token=t",
        minutes: 30,
    },
    Mail::MfaChanged {
        username: "ada",
        what: "Two-factor sign-in was turned on",
        when: "2026-01-01T00:00:00+00:00",
        sessions_ended: true,
    },
    Mail::IdentityLinked {
        username: "ada",
        provider: "Example",
    },
    Mail::IdentityUnlinked {
        username: "ada",
        provider: "Example",
    },
];

/// A page for a mailed link: what it says is the template `page_<name>.txt` (`Title:`,
/// `Button:` and `Done:` lines, a blank line, the lead paragraph); the operation its button
/// calls is code.
#[derive(Debug, Clone, Copy)]
pub struct LinkPage<'a> {
    /// The page's template is `page_<name>.txt`.
    pub name: &'a str,
    /// `API_PREFIX`.
    pub prefix: &'a str,
    pub endpoint: &'a str,
    /// The reset page asks for the new password (twice).
    pub password: bool,
    /// The button does something that is hard to take back: it looks it.
    pub danger: bool,
    /// `DELETION_GRACE_PERIOD_DAYS`, which the deletion page names.
    pub grace_days: u32,
}

/// Every link page's name, for the start-up check.
pub const PAGES: [&str; 6] = [
    "verify_email",
    "reset_password",
    "confirm_deletion",
    "cancel_deletion",
    "confirm_email_change",
    "revert_email_change",
];
