//! Opaque random tokens (stored only as SHA-256 hashes) and signed access JWTs.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::entities::one_time_token::Purpose;

pub use crate::opaque::{hash_token, new_opaque_token};

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
}

/// HS256 keys derived from `SECRET_KEY`.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &str) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes())?,
            decoding: DecodingKey::from_secret(secret.as_bytes())?,
            validation,
        })
    }

    pub fn issue(&self, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, JwtError> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_offset: i64) -> AccessClaims {
        let now = chrono::Utc::now().timestamp();
        AccessClaims {
            sub: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            iat: now,
            exp: now + exp_offset,
            jti: Uuid::new_v4(),
        }
    }

    #[test]
    fn opaque_tokens_are_random_and_hashed() {
        let a = new_opaque_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_opaque_token());
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }

    #[test]
    fn jwt_round_trip_expiry_and_tampering() {
        let keys = JwtKeys::new("a-test-secret-of-sufficient-length").unwrap();
        let c = claims(60);
        let token = keys.issue(&c).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sid, c.sid);

        let expired = keys.issue(&claims(-60)).unwrap();
        assert_eq!(keys.verify(&expired).unwrap_err(), JwtError::Expired);

        let other = JwtKeys::new("another-secret-of-sufficient-length").unwrap();
        assert_eq!(other.verify(&token).unwrap_err(), JwtError::Invalid);

        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(keys.verify(&tampered).unwrap_err(), JwtError::Invalid);
    }
}
