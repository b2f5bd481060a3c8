//! Domain values and the account input rules from the contract: checked email addresses,
//! usernames and passwords, each violation reported on its own. A leaf: the settings, the
//! accounts domain and the spec constraints all read it, and it reads none of them.

/// One problem with one input field, shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl FieldProblem {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

const RESERVED_USERNAMES: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "system",
    "api",
    "auth",
    "login",
    "logout",
    "register",
    "support",
    "help",
];

/// The passwords that every credential-stuffing list starts with; compared case-insensitively.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "p@ssword1",
    "p@ssw0rd1",
    "p@ssw0rd123",
    "password!",
    "password1!",
    "password123!",
    "12345678",
    "123456789",
    "1234567890",
    "qwerty123",
    "qwertyuiop",
    "qwerty12",
    "qwerty1!",
    "qwerty123!",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "1qaz@wsx",
    "zaq12wsx",
    "zaq1@wsx",
    "iloveyou",
    "iloveyou1",
    "iloveyou1!",
    "sunshine",
    "sunshine1",
    "sunshine1!",
    "princess",
    "princess1",
    "football",
    "football1",
    "football1!",
    "baseball",
    "baseball1",
    "welcome",
    "welcome1",
    "welcome1!",
    "welcome123",
    "welcome123!",
    "letmein",
    "letmein1",
    "letmein1!",
    "letmein123",
    "admin123",
    "admin123!",
    "admin@123",
    "administrator",
    "changeme",
    "changeme1",
    "changeme1!",
    "changeme123",
    "trustno1",
    "trustno1!",
    "dragon123",
    "monkey123",
    "master123",
    "superman",
    "superman1",
    "batman123",
    "starwars",
    "starwars1",
    "whatever",
    "whatever1",
    "abc12345",
    "abcd1234",
    "abcd1234!",
    "aa123456",
    "asdf1234",
    "asdfghjkl",
    "zxcvbnm1",
    "secret123",
    "secret123!",
    "summer2024!",
    "summer2025!",
    "summer2026!",
    "winter2024!",
    "winter2025!",
    "winter2026!",
    "spring2025!",
    "spring2026!",
    "autumn2025!",
    "autumn2026!",
    "january2026!",
    "december2026!",
    "qwerty@123",
    "test1234",
    "test@123",
    "test1234!",
    "testtest1!",
    "pass@123",
    "pass1234",
    "pass1234!",
    "hello123",
    "hello123!",
    "michael1",
    "jennifer1",
    "jordan23",
    "charlie1",
    "shadow123",
    "computer1",
    "internet1",
    "mustang1",
];

/// Validates and normalises an email address: trimmed and lower-cased.
fn normalise_email(raw: &str) -> Result<String, FieldProblem> {
    let email = raw.trim().to_lowercase();
    if email.len() > EMAIL_MAX_LEN {
        return Err(FieldProblem::new("email", "must be at most 254 characters"));
    }
    // The `email_address` crate follows RFC 5322 loosely enough to accept display names and
    // quoted locals; a product sign-up wants a plain `local@domain` with a dotted domain.
    let valid = email_address::EmailAddress::parse_with_options(
        &email,
        email_address::Options::default()
            .with_minimum_sub_domains(2)
            .without_domain_literal()
            .without_display_text(),
    )
    .is_ok()
        && !email.contains(char::is_whitespace)
        && email.rsplit_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !local.starts_with('"')
                && domain.contains('.')
                && !domain.ends_with('.')
        });
    if !valid {
        return Err(FieldProblem::new("email", "must be a valid email address"));
    }
    Ok(email)
}

pub const EMAIL_MAX_LEN: usize = 254;
pub const USERNAME_MIN_LEN: usize = 3;
pub const USERNAME_MAX_LEN: usize = 30;
pub const PASSWORD_MIN_LEN: usize = 8;
pub const PASSWORD_MAX_LEN: usize = 128;

/// The username rules below as one pattern for the spec (with the lengths beside it), so that
/// generated clients check them before sending: ECMA-262 as JSON Schema wants, written so that
/// Python's `re` reads it the same (no `$`, which there also matches before a final newline).
pub fn username_pattern() -> String {
    let reserved: Vec<String> = RESERVED_USERNAMES
        .iter()
        .map(|name| {
            name.chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c))
                .collect()
        })
        .collect();
    format!(
        "^(?!(?:{})(?![\\s\\S]))[A-Za-z0-9](?:[A-Za-z0-9]|_(?!_)|-(?!-))*(?<![_-])(?![\\s\\S])",
        reserved.join("|")
    )
}

/// The password rules below as one pattern, like `username_pattern`.
pub const PASSWORD_PATTERN: &str = "^(?=[\\s\\S]*[A-Z])(?=[\\s\\S]*[a-z])(?=[\\s\\S]*[0-9])(?=[\\s\\S]*[^A-Za-z0-9])[^\\x00]*(?![\\s\\S])";

/// Checks the username rules; the stored form keeps the user's case. Nothing is trimmed: a
/// name with spaces around it breaks the character rule like any other.
fn validate_username(name: &str) -> Result<String, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let len = name.chars().count();
    if !(USERNAME_MIN_LEN..=USERNAME_MAX_LEN).contains(&len) {
        problems.push(FieldProblem::new(
            "username",
            "must be 3 to 30 characters long",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push(FieldProblem::new(
            "username",
            "may contain only letters, digits, underscores and hyphens",
        ));
    }
    if name.starts_with(['_', '-']) || name.ends_with(['_', '-']) {
        problems.push(FieldProblem::new(
            "username",
            "must not start or end with _ or -",
        ));
    }
    if name.contains("__") || name.contains("--") {
        problems.push(FieldProblem::new("username", "must not contain __ or --"));
    }
    if RESERVED_USERNAMES.contains(&name.to_ascii_lowercase().as_str()) {
        problems.push(FieldProblem::new("username", "is reserved"));
    }
    if problems.is_empty() {
        Ok(name.to_string())
    } else {
        Err(problems)
    }
}

/// Checks every password rule and reports each one that fails. Letters and digits are ASCII's,
/// and a special character is any other (a space, `é` and `!` alike), so that one regular
/// expression in the spec states the same rules.
fn validate_password(field: &str, password: &str) -> Result<(), Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let len = password.chars().count();
    if len < PASSWORD_MIN_LEN {
        problems.push(FieldProblem::new(
            field,
            "must be at least 8 characters long",
        ));
    }
    if len > PASSWORD_MAX_LEN {
        problems.push(FieldProblem::new(
            field,
            "must be at most 128 characters long",
        ));
    }
    if !password.chars().any(|c| c.is_ascii_uppercase()) {
        problems.push(FieldProblem::new(
            field,
            "must contain an uppercase letter (A-Z)",
        ));
    }
    if !password.chars().any(|c| c.is_ascii_lowercase()) {
        problems.push(FieldProblem::new(
            field,
            "must contain a lowercase letter (a-z)",
        ));
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        problems.push(FieldProblem::new(field, "must contain a digit"));
    }
    if password.chars().all(|c| c.is_ascii_alphanumeric()) {
        problems.push(FieldProblem::new(
            field,
            "must contain a special character (anything but A-Z, a-z and 0-9)",
        ));
    }
    if COMMON_PASSWORDS.contains(&password.to_lowercase().as_str()) {
        problems.push(FieldProblem::new(field, "is too common"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// An email address that passed the rules, trimmed and lower-cased: `EmailAddress::parse` is
/// the only way to get one, so storage that takes one cannot be handed an unchecked string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, FieldProblem> {
        normalise_email(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A username that passed the rules, in the case its owner chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, Vec<FieldProblem>> {
        validate_username(raw).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new password that passed the rules. It never prints: `{:?}` shows `Password(..)`, and
/// only `expose` hands the text to the hasher.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Checks `raw` as the value of `field` (`password`, `new_password`), reporting every rule
    /// it breaks.
    pub fn parse(field: &str, raw: String) -> Result<Self, Vec<FieldProblem>> {
        validate_password(field, &raw)?;
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalise_email("  Test@Example.COM ").unwrap(),
            "test@example.com"
        );
        for bad in [
            "",
            "plain",
            "a@b",
            "@example.com",
            "a b@example.com",
            "Name <a@example.com>",
            "a@example.",
        ] {
            assert!(normalise_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn usernames() {
        assert!(validate_username("test_user-1").is_ok());
        for bad in [
            "ab",
            "_abc",
            "abc-",
            "a__b",
            "a--b",
            "Admin",
            "root",
            "with space",
            "ünï",
            " padded ",
            &"a".repeat(31),
        ] {
            assert!(validate_username(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_report_each_rule() {
        assert!(validate_password("password", "TestPassword123!").is_ok());
        let problems = validate_password("password", "abc").unwrap_err();
        let messages: Vec<_> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(messages.contains(&"must be at least 8 characters long"));
        assert!(messages.contains(&"must contain an uppercase letter (A-Z)"));
        assert!(messages.contains(&"must contain a digit"));
        assert!(
            messages.contains(&"must contain a special character (anything but A-Z, a-z and 0-9)")
        );
        assert!(!messages.contains(&"must contain a lowercase letter (a-z)"));
        // Letters and digits are ASCII's: anything else counts as special, a space included.
        assert!(validate_password("password", "Äpfel and 1 Z").is_ok());
        assert!(validate_password("password", "ÄPFELSAFT1z").is_ok());
        assert!(validate_password("password", "Apfelsaft12").is_err());
        assert!(validate_password("password", "Password123!").is_err());
        assert_eq!(
            validate_password("password", &format!("Aa1!{}", "x".repeat(130)))
                .unwrap_err()
                .len(),
            1
        );
    }

    #[test]
    fn values_exist_only_once_checked() {
        let email = EmailAddress::parse("  Ada@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ada@example.com");
        assert!(EmailAddress::parse("not an address").is_err());
        assert_eq!(Username::parse("Ada_L").unwrap().as_str(), "Ada_L");
        assert!(Username::parse("admin").is_err());
        let password = Password::parse("password", "Correct-Horse-7".into()).unwrap();
        assert_eq!(password.expose(), "Correct-Horse-7");
        assert_eq!(format!("{password:?}"), "Password(..)");
        let problems = Password::parse("new_password", "short".into()).unwrap_err();
        assert!(problems.iter().all(|p| p.field == "new_password"));
    }
}
