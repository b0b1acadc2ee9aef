//! Who may call the control API: bearer JWTs checked with `jsonwebtoken`,
//! and the role each one carries.
//!
//! Two kinds of key verify tokens, each with a fixed algorithm:
//!
//! - the server's own HS256 secret (`api.jwt_secret`, or generated), which
//!   `bigfoot token` signs with;
//! - the RS256 (RSA) and ES256 (P-256) keys of an identity provider's JWKS
//!   file (`api.jwks_file`), for tokens shaped like AWS Cognito's.
//!
//! A token's `alg` must be the one of the key it names: `none`, an HMAC
//! token that names a JWKS key, and an RSA token without a matching JWKS
//! key are refused. `exp`, `iss` and `sub` are required, `nbf` is honoured,
//! and the audience is `aud` or Cognito's `client_id`. The role comes from
//! a `role` claim, `cognito:groups`, or a `scope` such as `bigfoot/operator`.
//!
//! Tokens are never logged, not even in part.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::ApiSettings;

/// Tolerated clock difference for `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Longest `Authorization` header value looked at.
const MAX_TOKEN_LEN: usize = 8192;
/// Scope prefix that grants a role (`bigfoot/admin`), besides the audience.
const SCOPE_PREFIX: &str = "bigfoot";

/// What a caller may do. Each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read streams and mint playback URLs.
    Viewer,
    /// Also create, change and delete streams, end sessions, manage keys.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// The role with this name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: the key of the per-subject rate limit.
    pub subject: String,
    pub role: Role,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request has no `Authorization: Bearer` token")]
    Missing,
    #[error("the bearer token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not allowed for its key")]
    Algorithm,
    #[error("the token names a key this server does not know")]
    UnknownKey,
    #[error("the token's signature does not match")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(String),
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token's claims are malformed")]
    Claims,
    #[error("the token grants no bigfoot role")]
    NoRole,
}

impl AuthError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "AUTH_MISSING_TOKEN",
            Self::Expired => "AUTH_TOKEN_EXPIRED",
            _ => "AUTH_INVALID_TOKEN",
        }
    }

    /// A short reason in the error's `details`, so clients can tell the
    /// checks apart.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingClaim(_) => "missing_claim",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Claims => "claims",
            Self::NoRole => "no_role",
        }
    }

    /// The RFC 6750 `error` in `WWW-Authenticate`.
    pub fn bearer_error(&self) -> &'static str {
        match self {
            Self::Missing => "invalid_request",
            _ => "invalid_token",
        }
    }
}

/// Why the verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot read the JWKS file {file}: {source}")]
    ReadJwks {
        file: String,
        source: std::io::Error,
    },
    #[error("the JWKS file {file} is not valid: {message}")]
    BadJwks { file: String, message: String },
    #[error("the API's HS256 secret is unusable: {0}")]
    Secret(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// One key that verifies tokens, with the only algorithm it accepts.
struct VerifyingKey {
    /// `kid` of a JWKS key; `None` for the server's own secret.
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Checks bearer tokens.
pub struct Verifier {
    local: VerifyingKey,
    jwks: Vec<VerifyingKey>,
    issuer: String,
    audience: String,
}

/// The claims bigfoot reads. Anything else in the token is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default, rename = "cognito:groups")]
    groups: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Verifier {
    /// From the `[api]` settings, the HS256 secret and the JWKS file (if
    /// configured), read once.
    pub fn new(
        settings: &ApiSettings,
        secret: &[u8],
        jwks_file: Option<&Path>,
    ) -> Result<Self, AuthSetupError> {
        let key =
            DecodingKey::from_secret(secret).map_err(|e| AuthSetupError::Secret(e.to_string()))?;
        let jwks = match jwks_file {
            Some(file) => read_jwks(file)?,
            None => Vec::new(),
        };
        Ok(Self {
            local: VerifyingKey {
                kid: None,
                alg: Algorithm::HS256,
                key,
            },
            jwks,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        })
    }

    /// How many identity-provider keys are loaded.
    pub fn jwks_len(&self) -> usize {
        self.jwks.len()
    }

    /// Checks the `Authorization` header's bearer token.
    pub fn verify(
        &self,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<Principal, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthError::Missing)?
            .trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = self.key_for(&header)?;

        let mut validation = Validation::new(key.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.set_issuer(&[self.issuer.as_str()]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| refusal(e.kind()))?;
        let claims = data.claims;
        // An empty subject would pool every such token into one rate-limit
        // bucket and name nobody in the log: as good as no `sub`.
        if claims.sub.trim().is_empty() {
            return Err(AuthError::MissingClaim("sub".into()));
        }
        if !self.audience.is_empty() && !self.audience_matches(&claims) {
            return Err(AuthError::Audience);
        }
        let role = self.role_of(&claims).ok_or(AuthError::NoRole)?;
        Ok(Principal {
            subject: claims.sub,
            role,
        })
    }

    /// The one key a token may be checked with, by `kid` and `alg`.
    fn key_for(&self, header: &Header) -> Result<&VerifyingKey, AuthError> {
        if let Some(kid) = &header.kid
            && let Some(key) = self.jwks.iter().find(|k| k.kid.as_deref() == Some(kid))
        {
            return if key.alg == header.alg {
                Ok(key)
            } else {
                Err(AuthError::Algorithm)
            };
        }
        if header.alg == self.local.alg {
            return Ok(&self.local);
        }
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Algorithm);
        }
        if header.kid.is_some() {
            return Err(AuthError::UnknownKey);
        }
        let mut candidates = self.jwks.iter().filter(|k| k.alg == header.alg);
        match (candidates.next(), candidates.next()) {
            (Some(key), None) => Ok(key),
            _ => Err(AuthError::UnknownKey),
        }
    }

    fn audience_matches(&self, claims: &Claims) -> bool {
        let in_aud = match &claims.aud {
            Some(Audience::One(aud)) => *aud == self.audience,
            Some(Audience::Many(auds)) => auds.contains(&self.audience),
            None => false,
        };
        in_aud || claims.client_id.as_deref() == Some(self.audience.as_str())
    }

    /// The highest role the claims grant.
    fn role_of(&self, claims: &Claims) -> Option<Role> {
        let from_scope = claims
            .scope
            .iter()
            .flat_map(|s| s.split_whitespace())
            .filter_map(|scope| {
                let (prefix, name) = scope.rsplit_once('/')?;
                (prefix == SCOPE_PREFIX || prefix == self.audience).then_some(name)
            });
        claims
            .role
            .iter()
            .map(String::as_str)
            .chain(claims.groups.iter().map(String::as_str))
            .chain(from_scope)
            .filter_map(Role::from_name)
            .max()
    }
}

fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthError::Signature,
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::Issuer,
        K::InvalidAudience => AuthError::Audience,
        K::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthError::Algorithm
        }
        K::InvalidClaimFormat(_) | K::Json(_) | K::Utf8(_) => AuthError::Claims,
        _ => AuthError::Malformed,
    }
}

/// The RS256 and ES256 signing keys of a JWKS file; other keys (encryption
/// keys, other curves and algorithms) are skipped with a warning.
fn read_jwks(file: &Path) -> Result<Vec<VerifyingKey>, AuthSetupError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| AuthSetupError::ReadJwks {
        file: name.clone(),
        source,
    })?;
    let bad = |message: String| AuthSetupError::BadJwks {
        file: name.clone(),
        message,
    };
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawSet = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut keys = Vec::new();
    let mut kids = HashSet::new();
    for (i, raw) in set.keys.into_iter().enumerate() {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            tracing::warn!(file = %name, index = i, "skipping a JWKS key bigfoot cannot read");
            continue;
        };
        let Some(alg) = signing_algorithm(&jwk) else {
            tracing::warn!(
                file = %name,
                index = i,
                "skipping a JWKS key that is not an RS256 or ES256 signing key"
            );
            continue;
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(format!("key {i}: {e}")))?;
        let kid = jwk.common.key_id.clone();
        if let Some(kid) = &kid
            && !kids.insert(kid.clone())
        {
            return Err(bad(format!("key id `{kid}` is used twice")));
        }
        keys.push(VerifyingKey { kid, alg, key });
    }
    if keys.is_empty() {
        return Err(bad("no RS256 or ES256 signing key in it".into()));
    }
    Ok(keys)
}

/// The algorithm a JWKS key verifies: fixed by its type, and by its `alg`
/// when it has one.
fn signing_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(alg),
        Some(given) if given == declared => Some(alg),
        Some(_) => None,
    }
}

/// The claims of a token `bigfoot token` mints.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
}

/// An HS256 token for `role`, valid from `now` for `ttl_secs`.
pub fn mint(
    settings: &ApiSettings,
    secret: &[u8],
    role: Role,
    subject: &str,
    now: u64,
    ttl_secs: u64,
) -> Result<String, AuthSetupError> {
    let claims = MintedClaims {
        iss: &settings.issuer,
        aud: &settings.audience,
        sub: subject,
        role: role.as_str(),
        iat: now,
        exp: now.saturating_add(ttl_secs),
    };
    let key =
        EncodingKey::from_secret(secret).map_err(|e| AuthSetupError::Secret(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| AuthSetupError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::token::unix_now;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn settings() -> ApiSettings {
        ApiSettings::default()
    }

    fn verifier() -> Verifier {
        Verifier::new(&settings(), SECRET, None).expect("verifier")
    }

    fn bearer(token: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
    }

    fn signed(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET).expect("key");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token")
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "bigfoot", "aud": "bigfoot-api", "sub": "tester",
            "role": "operator", "exp": unix_now() + 600,
        })
    }

    fn check(claims: serde_json::Value) -> Result<Principal, AuthError> {
        verifier().verify(Some(&bearer(&signed(claims))))
    }

    #[test]
    fn minted_tokens_verify_with_their_role() {
        let token = mint(&settings(), SECRET, Role::Viewer, "cli", unix_now(), 60).expect("mint");
        let principal = verifier().verify(Some(&bearer(&token))).expect("valid");
        assert_eq!(principal.role, Role::Viewer);
        assert_eq!(principal.subject, "cli");
    }

    #[test]
    fn the_usual_pitfalls_are_refused() {
        let mut c = claims();
        c["exp"] = (unix_now() - 300).into();
        assert_eq!(check(c), Err(AuthError::Expired));

        let mut c = claims();
        c.as_object_mut().expect("object").remove("exp");
        assert_eq!(check(c), Err(AuthError::MissingClaim("exp".into())));

        for blank in ["", "   "] {
            let mut c = claims();
            c["sub"] = blank.into();
            assert_eq!(check(c), Err(AuthError::MissingClaim("sub".into())));
        }

        let mut c = claims();
        c["nbf"] = (unix_now() + 300).into();
        assert_eq!(check(c), Err(AuthError::NotYetValid));

        let mut c = claims();
        c["iss"] = "someone-else".into();
        assert_eq!(check(c), Err(AuthError::Issuer));

        let mut c = claims();
        c["aud"] = "another-api".into();
        assert_eq!(check(c), Err(AuthError::Audience));

        let mut c = claims();
        c["role"] = "root".into();
        assert_eq!(check(c), Err(AuthError::NoRole));

        assert_eq!(verifier().verify(None), Err(AuthError::Missing));
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.e30.";
        assert_eq!(
            verifier().verify(Some(&bearer(none))),
            Err(AuthError::Malformed)
        );
        let forged = signed(claims()).replace('.', ".x");
        assert!(verifier().verify(Some(&bearer(&forged))).is_err());
    }

    #[test]
    fn cognito_groups_scopes_and_client_id_grant_roles() {
        let mut c = claims();
        let object = c.as_object_mut().expect("object");
        object.remove("role");
        object.remove("aud");
        object.insert("client_id".into(), "bigfoot-api".into());
        object.insert(
            "cognito:groups".into(),
            serde_json::json!(["viewer", "admin"]),
        );
        assert_eq!(check(c.clone()).map(|p| p.role), Ok(Role::Admin));

        let object = c.as_object_mut().expect("object");
        object.remove("cognito:groups");
        object.insert("scope".into(), "openid bigfoot/operator other/admin".into());
        assert_eq!(check(c).map(|p| p.role), Ok(Role::Operator));
    }
}
