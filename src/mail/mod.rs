//! Outgoing mail: an SMTP transport (lettre) and a log transport for the embedded default.

pub mod templates;

pub use templates::{LinkPage, Mail, Mails, TemplateError};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{authentication::Credentials, client::Tls, client::TlsParameters},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    config::MailSettings,
    jobs::{Deps, Job, JobContext, JobError, JobResult, NewJob, Queue},
};

/// A message with both a plain-text and an HTML part; as a job (`send_email`), every mail Keel
/// sends goes through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("could not build the message")]
    Build(#[source] lettre::error::Error),
    #[error("could not set up TLS for the SMTP server")]
    Tls(#[source] lettre::transport::smtp::Error),
    #[error("SMTP delivery failed")]
    Smtp(#[source] lettre::transport::smtp::Error),
}

#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    /// Writes every message, links included, to the log: usable with no mail server at all.
    Log { from: Mailbox },
}

impl Mailer {
    pub fn new(settings: &MailSettings) -> Result<Self, MailError> {
        let from = Mailbox::new(
            Some(settings.from_name.clone()),
            settings
                .from_email
                .parse()
                .map_err(|_| MailError::Address(settings.from_email.clone()))?,
        );
        let Some(smtp) = &settings.smtp else {
            return Ok(Mailer::Log { from });
        };
        let tls = || TlsParameters::new(smtp.host.clone()).map_err(MailError::Tls);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .timeout(Some(smtp.timeout));
        builder = if smtp.implicit_tls {
            builder.tls(Tls::Wrapper(tls()?))
        } else if smtp.starttls {
            builder.tls(Tls::Required(tls()?))
        } else {
            builder.tls(Tls::None)
        };
        if let (Some(user), Some(pass)) = (&smtp.username, &smtp.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Mailer::Smtp {
            transport: builder.build(),
            from,
        })
    }

    /// Whether the SMTP server takes a connection (`None` with the log transport): for
    /// `/system/health`. A pooled connection is reused when there is one.
    pub async fn check(&self) -> Option<Result<(), String>> {
        let Mailer::Smtp { transport, .. } = self else {
            return None;
        };
        Some(match transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the SMTP server did not answer".into()),
            Err(e) => Err(crate::telemetry::cause_chain(&e)),
        })
    }

    pub fn transport_name(&self) -> &'static str {
        match self {
            Mailer::Smtp { .. } => "smtp",
            Mailer::Log { .. } => "log",
        }
    }

    /// Sends `email`, in a `mail.send` span (failed when the mail was not accepted).
    pub async fn send(&self, email: &Email) -> Result<(), MailError> {
        let span = tracing::info_span!(
            "mail.send",
            mail.transport = self.transport_name(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
        );
        let sent = tracing::Instrument::instrument(self.deliver(email), span.clone()).await;
        if sent.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        sent
    }

    async fn deliver(&self, email: &Email) -> Result<(), MailError> {
        match self {
            Mailer::Log { from } => {
                tracing::info!(
                    mail.from = %from,
                    mail.to = %email.to,
                    mail.subject = %email.subject,
                    "mail (log transport; set SMTP_HOST to deliver):\n{}",
                    email.text
                );
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let to: Mailbox = email
                    .to
                    .parse()
                    .map_err(|_| MailError::Address(email.to.clone()))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(email.subject.clone())
                    .multipart(MultiPart::alternative_plain_html(
                        email.text.clone(),
                        email.html.clone(),
                    ))
                    .map_err(MailError::Build)?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(MailError::Smtp)
            }
        }
    }
}

impl Email {
    /// The `send_email` job for this message.
    pub fn into_job(self) -> NewJob {
        NewJob::of(&self)
    }
}

/// The `send_email` job: delivers the mail in its payload, on the `email` queue. SMTP
/// failures are retried; a malformed payload or address is not. Once it has ended, only the
/// recipient and subject stay (no body, so no mailed token).
impl Job for Email {
    const NAME: &'static str = "send_email";
    const QUEUE: Queue = Queue::Email;

    fn scrub(payload: &Value) -> Option<Value> {
        Some(
            json!({"to": payload.get("to"), "subject": payload.get("subject"), "body": "(removed after delivery)"}),
        )
    }

    async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
        let mailer = deps.get::<Mailer>()?;
        match mailer.send(&self).await {
            Ok(()) => Ok(json!({"delivered_to": self.to, "transport": mailer.transport_name()})),
            Err(e @ (MailError::Address(_) | MailError::Build(_) | MailError::Tls(_))) => {
                Err(JobError::fatal(crate::telemetry::cause_chain(&e)))
            }
            Err(e) => Err(JobError::retry(crate::telemetry::cause_chain(&e))),
        }
    }
}
