//! Accounts: list, create a superuser, verify, delete, schedule or cancel a deletion, reset
//! two-factor sign-in; and the statistics of users, sessions and jobs.

use std::io::BufRead;

use clap::Subcommand;
use keel::{
    accounts::{
        AccountError, AdminError, DeletionError, MfaError, User,
        admin::Actor,
        directory::{Deleted, Directory, Listed, Position, UserQuery},
    },
    jobs::Jobs,
};
use serde_json::json;

use super::{
    Context, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_REFUSED, Failure, Format, Outcome, confirm,
    print_table, prompt, yes_no,
};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// List users, oldest first
    ListUsers {
        /// Only verified users
        #[arg(long, conflicts_with = "unverified")]
        verified: bool,
        /// Only unverified users
        #[arg(long)]
        unverified: bool,
        /// Only superusers
        #[arg(long)]
        superuser: bool,
        /// Only (soft-)deleted users; without it deleted users are left out
        #[arg(long)]
        deleted: bool,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        page: u64,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        size: u64,
    },
    /// Create a verified superuser: prompts (password hidden), or --email/--username/--password-stdin
    CreateSuperuser {
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        username: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Counts of users, sessions and jobs
    Stats,
    /// Mark a user's email as verified
    VerifyUser {
        /// Email address or user id
        user: String,
    },
    /// Delete a user: soft (revocable, sessions ended) unless --hard
    DeleteUser {
        /// Email address or user id
        user: String,
        /// Delete permanently, with sessions, tokens and API keys
        #[arg(long)]
        hard: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// Why the account is deleted (kept with a soft delete)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Schedule a user's account for permanent deletion after the grace period (mails them a
    /// cancel link), as if they had confirmed a deletion request
    ScheduleDeletion {
        /// Email address or user id
        user: String,
        /// Days until the deletion [default: ACCOUNT_DELETION_GRACE_PERIOD_DAYS]
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=365))]
        days: Option<u32>,
    },
    /// Cancel a user's requested or scheduled account deletion
    CancelDeletion {
        /// Email address or user id
        user: String,
    },
    /// Turn off a user's two-factor sign-in (lost authenticator and recovery codes); ends
    /// every session of the account and mails a notice
    ResetMfa {
        /// Email address or user id
        user: String,
    },
}

pub async fn exec(cx: &Context, command: UsersCommand) -> Outcome {
    let directory = cx.directory();
    let format = cx.format;
    match command {
        UsersCommand::ListUsers {
            verified,
            unverified,
            superuser,
            deleted,
            page,
            size,
        } => {
            let query = UserQuery {
                deleted: if deleted {
                    Deleted::Only
                } else {
                    Deleted::Exclude
                },
                is_verified: (verified || unverified).then_some(verified),
                is_superuser: superuser.then_some(true),
                ..Default::default()
            };
            let found = directory
                .list(&query, &Position::Page(page), size, None)
                .await?;
            list(&found.items, found.total, page, size, format);
            Ok(())
        }
        UsersCommand::CreateSuperuser {
            email,
            username,
            password_stdin,
        } => {
            let email = match email {
                Some(e) => e,
                None => prompt("Email: ")?,
            };
            let username = match username {
                Some(u) => u,
                None => prompt("Username: ")?,
            };
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                let first = rpassword::prompt_password("Password: ")?;
                let again = rpassword::prompt_password("Password (again): ")?;
                if first != again {
                    return Err(Failure(EXIT_REFUSED, "the passwords differ".into()));
                }
                first
            };
            let user = cx
                .accounts()?
                .admin()
                .create_superuser(&email, &username, password)
                .await
                .map_err(|e| refused_or_failed(&e))?;
            format.emit(
                json!({"created": account_json(&user)}),
                format_args!(
                    "created superuser {} ({}), id {}",
                    user.username, user.email, user.id
                ),
            );
            Ok(())
        }
        UsersCommand::Stats => stats(&directory, &cx.jobs()?, format).await,
        UsersCommand::VerifyUser { user } => {
            let found = find(&directory, &user).await?;
            if found.is_verified {
                format.emit(
                    json!({"verified": account_json(&found), "changed": false}),
                    format_args!("{} is already verified", found.email),
                );
                return Ok(());
            }
            let u = cx
                .accounts()?
                .admin()
                .set_verified(found.id, true, Actor::Cli)
                .await
                .map_err(|e| refused_or_failed(&e))?;
            format.emit(
                json!({"verified": account_json(&u), "changed": true}),
                format_args!("verified {} ({})", u.email, u.id),
            );
            Ok(())
        }
        UsersCommand::DeleteUser {
            user,
            hard,
            yes,
            reason,
        } => {
            let found = find(&directory, &user).await?;
            let what = if hard {
                "permanently delete"
            } else {
                "soft-delete"
            };
            if !yes && !confirm(&format!("{what} {} ({})? [y/N] ", found.email, found.id))? {
                return Err(Failure(
                    EXIT_REFUSED,
                    "not confirmed; nothing changed".into(),
                ));
            }
            let accounts = cx.accounts()?;
            if hard {
                accounts
                    .admin()
                    .hard_delete(found.id, Actor::Cli)
                    .await
                    .map_err(|e| refused_or_failed(&e))?;
            } else {
                accounts
                    .admin()
                    .soft_delete(found.id, reason, Actor::Cli)
                    .await
                    .map_err(|e| refused_or_failed(&e))?;
            }
            let (email, id) = (&found.email, found.id);
            format.emit(
                json!({"deleted": {"id": id, "email": email}, "permanently": hard}),
                if hard {
                    format!("permanently deleted {email} ({id})")
                } else {
                    format!("soft-deleted {email} ({id}); its sessions are revoked")
                },
            );
            Ok(())
        }
        UsersCommand::ScheduleDeletion { user, days } => {
            let found = find(&directory, &user).await?;
            let days = days.unwrap_or(cx.app.settings.auth.deletion_grace_period_days);
            let at = chrono::Utc::now() + chrono::Duration::days(i64::from(days));
            let u = cx
                .accounts()?
                .deletion()
                .schedule_deletion(found.id, at, "admin-cli")
                .await
                .map_err(|e| refused_or_failed(&e))?;
            format.emit(
                json!({"scheduled": account_json(&u), "deletion_at": at}),
                format_args!(
                    "{} ({}) will be deleted permanently on {}; a cancel link was mailed",
                    u.email,
                    u.id,
                    at.to_rfc3339()
                ),
            );
            Ok(())
        }
        UsersCommand::CancelDeletion { user } => {
            let found = find(&directory, &user).await?;
            let u = cx
                .accounts()?
                .deletion()
                .cancel_deletion(found.id, &Default::default(), "admin-cli")
                .await
                .map_err(|e| refused_or_failed(&e))?;
            format.emit(
                json!({"cancelled": account_json(&u)}),
                format_args!("the deletion of {} ({}) is cancelled", u.email, u.id),
            );
            Ok(())
        }
        UsersCommand::ResetMfa { user } => {
            let found = find(&directory, &user).await?;
            let u = cx
                .accounts()?
                .mfa()
                .reset_mfa(found.id, Actor::Cli)
                .await
                .map_err(|e| refused_or_failed(&e))?;
            format.emit(
                json!({"mfa_reset": account_json(&u)}),
                format_args!(
                    "two-factor sign-in is off for {} ({}); its sessions are revoked",
                    u.email, u.id
                ),
            );
            Ok(())
        }
    }
}

fn list(users: &[Listed], total: u64, page: u64, size: u64, format: Format) {
    match format {
        Format::Json => {
            let items: Vec<_> = users.iter().map(user_json).collect();
            println!(
                "{}",
                json!({"items": items, "total": total, "page": page, "size": size})
            );
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u.id.to_string(),
                        u.email.clone(),
                        u.username.clone(),
                        yes_no(u.is_verified),
                        yes_no(u.is_superuser),
                        u.created_at.format("%Y-%m-%d %H:%M").to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "EMAIL",
                    "USERNAME",
                    "VERIFIED",
                    "SUPERUSER",
                    "CREATED",
                ],
                &rows,
            );
            println!("{} of {total} user(s), page {page}", users.len());
        }
    }
}

/// How an account service's error ends a command: refused (a rule said no), not found, or
/// failed.
fn refused_or_failed(e: &impl Refusal) -> Failure {
    e.failure()
}

trait Refusal {
    fn failure(&self) -> Failure;
}

impl Refusal for AccountError {
    fn failure(&self) -> Failure {
        use AccountError as E;
        match self {
            E::Validation(problems) => Failure(
                EXIT_REFUSED,
                problems
                    .iter()
                    .map(|p| format!("{} {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            E::EmailTaken | E::UsernameTaken | E::AccountDeleted => {
                Failure(EXIT_REFUSED, self.to_string())
            }
            E::NotFound => Failure(EXIT_NOT_FOUND, self.to_string()),
            other => Failure(EXIT_FAILURE, keel::telemetry::cause_chain(other)),
        }
    }
}

impl Refusal for AdminError {
    fn failure(&self) -> Failure {
        match self {
            AdminError::Account(e) => e.failure(),
            refused => Failure(EXIT_REFUSED, refused.to_string()),
        }
    }
}

impl Refusal for DeletionError {
    fn failure(&self) -> Failure {
        match self {
            DeletionError::Account(e) => e.failure(),
            refused => Failure(EXIT_REFUSED, refused.to_string()),
        }
    }
}

impl Refusal for MfaError {
    fn failure(&self) -> Failure {
        match self {
            MfaError::Account(e) => e.failure(),
            MfaError::Admin(e) => e.failure(),
            refused => Failure(EXIT_REFUSED, refused.to_string()),
        }
    }
}

async fn find(directory: &Directory, ident: &str) -> Result<User, Failure> {
    directory
        .by_ident(ident)
        .await?
        .ok_or_else(|| Failure(EXIT_NOT_FOUND, format!("no user {ident:?}")))
}

async fn stats(directory: &Directory, jobs: &Jobs, format: Format) -> Outcome {
    let s = directory.statistics().await?;
    let by_status: serde_json::Map<String, serde_json::Value> = s
        .jobs_by_status
        .iter()
        .map(|(status, n)| (status.to_string(), (*n).into()))
        .collect();
    let last_scheduled: serde_json::Map<String, serde_json::Value> = jobs
        .last_firings()
        .await?
        .into_iter()
        .map(|(job, at)| (job, json!(at)))
        .collect();
    let report = json!({
        "total_users": s.total_users,
        "superusers": s.superusers,
        "verified_users": s.verified_users,
        "unverified_users": s.unverified_users,
        "deleted_users": s.deleted_users,
        "pending_deletion": s.pending_deletion,
        "active_sessions": s.active_sessions,
        "jobs_by_status": by_status,
        "last_scheduled": last_scheduled,
    });
    match format {
        Format::Json => println!("{report}"),
        Format::Table => {
            for key in [
                "total_users",
                "superusers",
                "verified_users",
                "unverified_users",
                "deleted_users",
                "pending_deletion",
                "active_sessions",
            ] {
                println!("{key:<18} {}", report[key]);
            }
            for (status, n) in report["jobs_by_status"].as_object().into_iter().flatten() {
                println!("{:<18} {n}", format!("jobs {status}"));
            }
            for (job, at) in report["last_scheduled"].as_object().into_iter().flatten() {
                println!("last scheduled {job}: {}", at.as_str().unwrap_or("-"));
            }
        }
    }
    Ok(())
}

fn user_json(u: &Listed) -> serde_json::Value {
    json!({
        "id": u.id, "email": u.email, "username": u.username, "is_superuser": u.is_superuser,
        "is_verified": u.is_verified, "is_deleted": u.is_deleted, "created_at": u.created_at,
        "deleted_at": u.deleted_at,
    })
}

/// An account a command acted on.
fn account_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id, "email": u.email, "username": u.username, "is_superuser": u.is_superuser,
        "is_verified": u.is_verified, "created_at": u.created_at,
    })
}
