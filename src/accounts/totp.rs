//! The second factor's mechanics, without accounts or tables: TOTP codes (RFC 6238), the
//! box that keeps TOTP secrets encrypted at rest, recovery codes and the `otpauth://` URI.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// RFC 6238 with the parameters every authenticator app defaults to.
pub mod rfc6238 {
    use hmac::{Hmac, Mac};

    pub const STEP_SECONDS: u64 = 30;
    pub const DIGITS: u32 = 6;

    /// The 30-second step a Unix time falls in.
    pub fn step_at(unix_seconds: i64) -> i64 {
        unix_seconds.div_euclid(STEP_SECONDS as i64)
    }

    /// The code of one step (RFC 4226 dynamic truncation), as a number below 10^6.
    pub fn code(secret: &[u8], step: i64) -> u32 {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key size");
        mac.update(&(step as u64).to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[19] & 0x0f);
        let bin = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        bin % 10u32.pow(DIGITS)
    }

    /// The step, one before `now_step` to one after (clock drift), whose code `typed` is.
    pub fn matching_step(secret: &[u8], typed: &str, now_step: i64) -> Option<i64> {
        let typed = typed.trim();
        if typed.len() != DIGITS as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let wanted: u32 = typed.parse().ok()?;
        let mut found = None;
        // Every candidate is computed, so the time taken does not tell which one matched.
        for step in [now_step - 1, now_step, now_step + 1] {
            if code(secret, step) == wanted {
                found = found.or(Some(step));
            }
        }
        found
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc_6238_sha1_vectors() {
            // RFC 6238 appendix B, SHA-1, truncated to 6 digits.
            let secret = b"12345678901234567890";
            for (time, expected) in [
                (59, 94_287_082u32),
                (1_111_111_109, 7_081_804),
                (1_111_111_111, 14_050_471),
                (1_234_567_890, 89_005_924),
                (2_000_000_000, 69_279_037),
                (20_000_000_000, 65_353_130),
            ] {
                assert_eq!(code(secret, step_at(time)), expected % 1_000_000, "{time}");
            }
        }

        #[test]
        fn a_code_matches_its_step_and_its_neighbours_only() {
            let secret = b"12345678901234567890";
            let now = step_at(1_234_567_890);
            let at = |s| format!("{:06}", code(secret, s));
            assert_eq!(matching_step(secret, &at(now), now), Some(now));
            assert_eq!(matching_step(secret, &at(now - 1), now), Some(now - 1));
            assert_eq!(matching_step(secret, &at(now + 1), now), Some(now + 1));
            assert_eq!(matching_step(secret, &at(now - 2), now), None);
            assert_eq!(matching_step(secret, "12345", now), None);
            assert_eq!(matching_step(secret, "abcdef", now), None);
        }
    }
}

/// Encrypts TOTP secrets at rest, each bound to its account.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    pub fn new(key_material: &str) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(b"keel-mfa-v1"), key_material.as_bytes())
            .expand(b"totp secret encryption", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    pub fn seal(&self, user_id: Uuid, secret: &[u8]) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: user_id.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any secret of this size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// `None` when the stored value was not sealed for this account under this key.
    pub fn open(&self, user_id: Uuid, stored: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: user_id.as_bytes(),
                },
            )
            .ok()
    }
}

/// What `POST /auth/mfa/totp/setup` hands the user: the secret to type in or the URI to scan.
#[derive(Debug, Clone)]
pub struct TotpSetup {
    pub secret: String,
    pub otpauth_uri: String,
}

pub(super) fn new_recovery_code() -> String {
    let bytes: [u8; 10] = rand::random();
    let raw = data_encoding::BASE32_NOPAD.encode(&bytes);
    raw.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("-")
}

/// A recovery code as stored: case, spaces and dashes do not matter when typed.
pub(super) fn hash_recovery_code(typed: &str) -> String {
    let normal: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hex::encode(Sha256::digest(format!("keel-recovery:{normal}").as_bytes()))
}

pub(super) fn looks_like_totp(code: &str) -> bool {
    let code = code.trim();
    code.len() == rfc6238::DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let issuer = utf8_percent_encode(issuer, NON_ALPHANUMERIC).to_string();
    let account = utf8_percent_encode(account, NON_ALPHANUMERIC);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={}&period={}",
        rfc6238::DIGITS,
        rfc6238::STEP_SECONDS
    )
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_account_and_key() {
        let sealer = SecretBox::new("a key of some length for the test");
        let user = Uuid::new_v4();
        let sealed = sealer.seal(user, b"secret bytes");
        assert_eq!(
            sealer.open(user, &sealed).as_deref(),
            Some(&b"secret bytes"[..])
        );
        assert_eq!(sealer.open(Uuid::new_v4(), &sealed), None);
        assert_eq!(SecretBox::new("another key").open(user, &sealed), None);
        assert_ne!(
            sealed,
            sealer.seal(user, b"secret bytes"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn recovery_codes_are_typed_loosely() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 19);
        assert_eq!(
            hash_recovery_code(&code),
            hash_recovery_code(&code.to_lowercase().replace('-', " "))
        );
        assert_ne!(
            hash_recovery_code(&code),
            hash_recovery_code(&new_recovery_code())
        );
    }

    #[test]
    fn the_otpauth_uri_names_issuer_and_account() {
        let uri = otpauth_uri("My App", "a@b.example", "ABC");
        assert_eq!(
            uri,
            "otpauth://totp/My%20App:a%40b%2Eexample?secret=ABC&issuer=My%20App&algorithm=SHA1&digits=6&period=30"
        );
    }
}
