//! Choosing the provider key that verifies an ID token: by its `kid`, of the type and use its
//! algorithm needs.

use jsonwebtoken::{
    Algorithm, DecodingKey, Header,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};

use super::{OidcError, TokenProblem};

/// The key of `set` for `header`: by `kid`, or the only key of the right type when the token
/// names none. `None` when the set has no such key; an error when the key it names is not a
/// signing key for the token's algorithm.
pub(super) fn pick_key(set: &JwkSet, header: &Header) -> Result<Option<DecodingKey>, OidcError> {
    let fits = |jwk: &Jwk| {
        let type_fits = match (&jwk.algorithm, header.alg) {
            (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
                ec.curve == EllipticCurve::P256
            }
            _ => false,
        };
        let use_fits = jwk
            .common
            .public_key_use
            .as_ref()
            .is_none_or(|u| *u == PublicKeyUse::Signature);
        let alg_fits = jwk.common.key_algorithm.is_none_or(|a| {
            matches!(
                (a, header.alg),
                (KeyAlgorithm::RS256, Algorithm::RS256) | (KeyAlgorithm::ES256, Algorithm::ES256)
            )
        });
        type_fits && use_fits && alg_fits
    };
    let found = match &header.kid {
        Some(kid) => match set.find(kid) {
            None => return Ok(None),
            Some(jwk) if fits(jwk) => Some(jwk),
            Some(_) => return Err(OidcError::TokenInvalid(TokenProblem::UnsupportedAlgorithm)),
        },
        None => {
            let mut candidates = set.keys.iter().filter(|k| fits(k));
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    };
    found
        .map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .map_err(|_| OidcError::TokenInvalid(TokenProblem::UnknownKey))
        })
        .transpose()
}
