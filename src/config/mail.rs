//! `mail`: the SMTP server (absent: mails go to the log) and the sender.

use std::{fmt, time::Duration};

use super::reader::{ConfigError, Reader, SECOND};

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// Unset (`SMTP_HOST` empty): mails are written to the log instead.
    pub smtp: Option<SmtpSettings>,
    pub from_email: String,
    pub from_name: String,
    /// `MAIL_TEMPLATES_DIR`: template files that replace the built-in ones of the same name.
    pub templates_dir: Option<std::path::PathBuf>,
}

#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// STARTTLS on a plain connection.
    pub starttls: bool,
    /// Implicit TLS from the first byte (port 465 style).
    pub implicit_tls: bool,
    pub timeout: Duration,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("starttls", &self.starttls)
            .field("implicit_tls", &self.implicit_tls)
            .finish()
    }
}

impl MailSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        let smtp = match r.raw("SMTP_HOST") {
            None => None,
            Some(host) => {
                let implicit_tls = r.bool("SMTP_SSL", false)?;
                let starttls = r.bool("SMTP_TLS", !implicit_tls)?;
                if implicit_tls && starttls {
                    return Err(ConfigError::new(
                        "SMTP_TLS",
                        "SMTP_TLS (STARTTLS) and SMTP_SSL (implicit TLS) exclude each other; set one",
                    ));
                }
                let default_port = if implicit_tls { 465 } else { 587 };
                Some(SmtpSettings {
                    host,
                    port: r.ranged("SMTP_PORT", default_port, 1, 65535)? as u16,
                    username: r.raw("SMTP_USERNAME"),
                    password: r.raw("SMTP_PASSWORD"),
                    starttls,
                    implicit_tls,
                    timeout: r.duration("SMTP_TIMEOUT_SECONDS", SECOND, 10, 1, 300)?,
                })
            }
        };
        let from_email = r.string("FROM_EMAIL", "noreply@example.com");
        if from_email.parse::<lettre::Address>().is_err() {
            return Err(ConfigError::new(
                "FROM_EMAIL",
                format!("expected an email address, got {from_email:?}"),
            ));
        }
        let templates_dir = match r.raw("MAIL_TEMPLATES_DIR") {
            None => None,
            Some(dir) if std::path::Path::new(&dir).is_dir() => Some(dir.into()),
            Some(dir) => {
                return Err(ConfigError::new(
                    "MAIL_TEMPLATES_DIR",
                    format!("expected a directory of mail templates, got {dir:?}"),
                ));
            }
        };
        Ok(Self {
            smtp,
            from_email,
            from_name: r.string("FROM_NAME", "Keel"),
            templates_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<MailSettings, ConfigError> {
        MailSettings::read(&Reader::from_pairs(pairs))
    }

    #[test]
    fn without_a_host_mail_goes_to_the_log() {
        assert!(read(&[]).unwrap().smtp.is_none());
    }

    #[test]
    fn templates_come_from_a_directory_that_exists() {
        assert!(read(&[]).unwrap().templates_dir.is_none());
        let dir = std::env::temp_dir();
        let set = read(&[("MAIL_TEMPLATES_DIR", dir.to_str().unwrap())]).unwrap();
        assert_eq!(set.templates_dir, Some(dir));
        assert_eq!(
            read(&[("MAIL_TEMPLATES_DIR", "/nonexistent/keel-mails")])
                .unwrap_err()
                .var,
            "MAIL_TEMPLATES_DIR"
        );
    }

    #[test]
    fn tls_modes_exclude_each_other_and_pick_the_port() {
        let ssl = read(&[("SMTP_HOST", "mx"), ("SMTP_SSL", "true")]).unwrap();
        let smtp = ssl.smtp.unwrap();
        assert_eq!(
            (smtp.port, smtp.implicit_tls, smtp.starttls),
            (465, true, false)
        );
        assert_eq!(
            read(&[("SMTP_HOST", "mx")]).unwrap().smtp.unwrap().port,
            587
        );
        assert_eq!(
            read(&[
                ("SMTP_HOST", "mx"),
                ("SMTP_SSL", "true"),
                ("SMTP_TLS", "true")
            ])
            .unwrap_err()
            .var,
            "SMTP_TLS"
        );
        assert_eq!(
            read(&[("FROM_EMAIL", "nobody")]).unwrap_err().var,
            "FROM_EMAIL"
        );
    }

    #[test]
    fn the_password_never_prints() {
        let s = read(&[("SMTP_HOST", "mx"), ("SMTP_PASSWORD", "hunter2")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
