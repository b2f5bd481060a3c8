//! Opaque tokens: 256 random bits handed out once (mailed links, refresh tokens, PKCE
//! verifiers) and stored only as their SHA-256 hash. A leaf: the account domain and the OpenID
//! Connect client both use it.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// 256 random bits, URL-safe base64 without padding (43 characters).
pub fn new_opaque_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The form a token is stored and looked up in. SHA-256 is enough: the input has 256 bits of
/// entropy, so there is nothing for a slow hash to protect.
pub fn hash_token(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}
